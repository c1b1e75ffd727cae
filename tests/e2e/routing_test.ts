/**
 * Routing and balancing through a running node: exact names beat single-label wildcards, weights split
 * connections exactly, a backend that leaves mid-stream takes only its own streams down, and one backend
 * registering twice is two pool members.
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, Teardown, type TestNode, waitFor } from "../helpers/cluster.ts";
import { namedEchoService, readLine, UNRECOGNIZED_NAME_ALERT } from "../helpers/raw.ts";
import { concat, patternBytes, type TestService, writeAll } from "../helpers/services.ts";
import type { Agent } from "../../src/agent/agent.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";

const decoder = new TextDecoder();

async function node(teardown: Teardown): Promise<TestNode> {
  return teardown.add(await startTestNode());
}

function service(teardown: Teardown, name: string): TestService {
  return teardown.add(namedEchoService(name));
}

/** An agent with its own name, claiming `hostnames`, all served by one local service. */
async function agent(
  teardown: Teardown,
  at: TestNode,
  options: { name: string; hostnames: string[]; serviceOf: TestService; weight?: number },
): Promise<Agent> {
  return teardown.add(
    await startTestAgent({
      hubUrls: [at.hubUrl],
      name: options.name,
      hostnames: options.hostnames,
      weight: options.weight ?? 1,
      targets: Object.fromEntries(options.hostnames.map((hostname) => [hostname, options.serviceOf.port])),
    }),
  );
}

/**
 * Sends a ClientHello for `servername` and returns what comes back first: the serving service's name line,
 * or the relay's alert when nothing serves the name.
 */
async function firstReply(port: number, servername: string): Promise<string | Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, buildClientHello({ serverName: servername }));
    const received: number[] = [];
    const buffer = new Uint8Array(256);
    while (!received.includes(0x0a)) {
      const n = await conn.read(buffer);
      if (n === null) return Uint8Array.from(received);
      received.push(...buffer.subarray(0, n));
    }
    return decoder.decode(Uint8Array.from(received.slice(0, received.indexOf(0x0a))));
  } finally {
    conn.close();
  }
}

Deno.test("exact names beat single-label wildcards, and the wildcard takes over at once when the exact backend leaves", async () => {
  const teardown = new Teardown();
  try {
    const relay = await node(teardown);
    const port = relay.tlsPort;
    const wildcard = service(teardown, "wildcard");
    const exact = service(teardown, "exact");
    await agent(teardown, relay, { name: "wild", hostnames: ["*.wild.nexus"], serviceOf: wildcard });

    assert.equal(await firstReply(port, "a.wild.nexus"), "wildcard");
    assert.equal(await firstReply(port, "Z.Wild.Nexus."), "wildcard");
    // One label only: neither a deeper name nor the suffix itself.
    assert.deepEqual(await firstReply(port, "a.b.wild.nexus"), UNRECOGNIZED_NAME_ALERT);
    assert.deepEqual(await firstReply(port, "wild.nexus"), UNRECOGNIZED_NAME_ALERT);
    assert.equal(relay.node.refusals.total("no_backend"), 2);

    const exactAgent = await agent(teardown, relay, {
      name: "exact",
      hostnames: ["a.wild.nexus"],
      serviceOf: exact,
    });
    for (let i = 0; i < 3; i++) assert.equal(await firstReply(port, "a.wild.nexus"), "exact");
    assert.equal(await firstReply(port, "b.wild.nexus"), "wildcard");

    await exactAgent.stop(0);
    await waitFor(() => relay.node.hub.backends.size === 1, "the exact backend to leave the hub");
    assert.equal(await firstReply(port, "a.wild.nexus"), "wildcard");
    assert.equal(wildcard.accepted, 4);
    assert.equal(exact.accepted, 3);
  } finally {
    await teardown.run();
  }
});

Deno.test("weights 3:2:1 split 600 sequential connections exactly 300/200/100, 3:2:1 in every cycle of 6", async () => {
  const teardown = new Teardown();
  try {
    const relay = await node(teardown);
    const name = "weighted.test.nexus";
    const services = [service(teardown, "w3"), service(teardown, "w2"), service(teardown, "w1")];
    for (const [i, weight] of [3, 2, 1].entries()) {
      await agent(teardown, relay, {
        name: `weight-${weight}`,
        hostnames: [name],
        serviceOf: services[i],
        weight,
      });
    }
    assert.equal(relay.node.hub.backends.size, 3);
    const hello = buildClientHello({ serverName: name });
    const accepted = () => services.map((s) => s.accepted);
    const picks: number[] = [];
    for (let i = 0; i < 600; i++) {
      const before = accepted();
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.tlsPort });
      try {
        await writeAll(conn, hello);
        // One connection at a time: the next is routed only after this one reached its service.
        // Polled every millisecond: the 600-connection loop cannot afford 10 ms a round.
        await waitFor(
          () => accepted().reduce((a, b) => a + b) === i + 1,
          `connection ${i} to reach a service`,
          5_000,
          {
            pollMs: 1,
          },
        );
      } finally {
        conn.close();
      }
      picks.push(accepted().findIndex((count, s) => count !== before[s]));
    }
    assert.deepEqual(accepted(), [300, 200, 100]);
    for (let cycle = 0; cycle < 100; cycle++) {
      const counts = [0, 0, 0];
      for (const pick of picks.slice(cycle * 6, cycle * 6 + 6)) counts[pick] += 1;
      assert.deepEqual(counts, [3, 2, 1], `cycle ${cycle}`);
    }
  } finally {
    await teardown.run();
  }
});

/** A client streaming pattern bytes through an echo service, reading the echo, until told to stop. */
class Transfer {
  readonly servedBy: string;
  readonly sent: Uint8Array[] = [];
  readonly #conn: Deno.Conn;
  readonly #received: Uint8Array[] = [];
  #receivedBytes = 0;
  #stopped = false;
  readonly #writing: Promise<void>;
  /** Resolves with how the read side ended: `"eof"` or the error's name. */
  readonly readEnded: Promise<string>;

  private constructor(conn: Deno.Conn, servedBy: string, seed: number) {
    this.#conn = conn;
    this.servedBy = servedBy;
    this.#writing = this.#write(seed);
    this.readEnded = this.#read();
  }

  /** Connects with a ClientHello and waits for the service's name line before streaming. */
  static async start(port: number, servername: string, seed: number): Promise<Transfer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const hello = buildClientHello({ serverName: servername });
    await writeAll(conn, hello);
    const transfer = new Transfer(conn, await readLine(conn), seed);
    transfer.sent.push(hello);
    return transfer;
  }

  /** Echoed bytes received so far (the hello's echo included). */
  get receivedBytes(): number {
    return this.#receivedBytes;
  }

  /** Stops writing, half-closes, and returns everything echoed until the service's end. */
  async finish(): Promise<{ sent: Uint8Array; received: Uint8Array }> {
    this.#stopped = true;
    await this.#writing;
    await this.#conn.closeWrite();
    assert.equal(await this.readEnded, "eof");
    this.#conn.close();
    return { sent: concat(...this.sent), received: concat(...this.#received) };
  }

  /** Closes the socket after the read side has ended (for transfers whose backend went away). */
  async abandon(): Promise<void> {
    this.#stopped = true;
    await this.#writing;
    await this.readEnded;
    this.#conn.close();
  }

  async #write(seed: number): Promise<void> {
    for (let i = 0; !this.#stopped; i++) {
      const chunk = patternBytes(16 * 1024, seed * 1000 + i);
      try {
        await writeAll(this.#conn, chunk);
      } catch {
        return; // The relay closed us: the read side says how.
      }
      this.sent.push(chunk);
      // Let the reader and the other transfers run between chunks.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  async #read(): Promise<string> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buffer);
        if (n === null) return "eof";
        this.#received.push(buffer.slice(0, n));
        this.#receivedBytes += n;
      }
    } catch (error) {
      return error instanceof Error ? error.name : String(error);
    }
  }
}

/** Resolves with `promise`'s value, or fails the test with `what` after `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("a backend that leaves mid-stream closes its own client streams promptly; the other backend's streams and new connections go on", async () => {
  const teardown = new Teardown();
  const transfers: Transfer[] = [];
  try {
    const relay = await node(teardown);
    const name = "flaky.test.nexus";
    const leaving = await agent(teardown, relay, {
      name: "leaving",
      hostnames: [name],
      serviceOf: service(teardown, "leaving"),
    });
    await agent(teardown, relay, {
      name: "staying",
      hostnames: [name],
      serviceOf: service(teardown, "staying"),
    });

    for (let i = 0; i < 4; i++) transfers.push(await Transfer.start(relay.tlsPort, name, i + 1));
    assert.deepEqual(transfers.map((t) => t.servedBy).sort(), ["leaving", "leaving", "staying", "staying"]);
    await waitFor(
      () => transfers.every((t) => t.receivedBytes >= 256 * 1024),
      "every transfer to be under way",
    );

    await leaving.stop(0);
    const gone = transfers.filter((t) => t.servedBy === "leaving");
    const kept = transfers.filter((t) => t.servedBy === "staying");
    const endings = await within(
      Promise.all(gone.map((t) => t.readEnded)),
      5_000,
      "the leaving backend's clients to be closed",
    );
    for (const ending of endings) assert.ok(["eof", "ConnectionReset"].includes(ending), ending);
    await Promise.all(gone.map((t) => t.abandon()));

    // The staying backend's streams still move bytes after the other backend left, and end byte-exact.
    const progress = kept.map((t) => t.receivedBytes);
    await waitFor(
      () => kept.every((t, i) => t.receivedBytes >= progress[i] + 256 * 1024),
      "the staying backend's transfers to go on",
    );
    for (const transfer of kept) {
      const { sent, received } = await transfer.finish();
      assert.equal(received.length, sent.length);
      assert.deepEqual(received, sent);
    }
    transfers.length = 0;

    await waitFor(() => relay.node.hub.backends.size === 1, "the leaving backend to leave the hub");
    for (let i = 0; i < 4; i++) assert.equal(await firstReply(relay.tlsPort, name), "staying");
  } finally {
    await Promise.all(transfers.map((t) => t.abandon().catch(() => {})));
    await teardown.run();
  }
});

Deno.test("a backend registering twice under the same name is two pool members", async () => {
  const teardown = new Teardown();
  try {
    const relay = await node(teardown);
    const name = "twin.test.nexus";
    const first = await agent(teardown, relay, {
      name: "twin",
      hostnames: [name],
      serviceOf: service(teardown, "first"),
    });
    await agent(teardown, relay, { name: "twin", hostnames: [name], serviceOf: service(teardown, "second") });
    assert.equal(relay.node.hub.backends.size, 2);
    assert.deepEqual([...relay.node.hub.backends].map((b) => b.name), ["twin", "twin"]);

    const served: string[] = [];
    for (let i = 0; i < 4; i++) served.push(await firstReply(relay.tlsPort, name) as string);
    assert.deepEqual(served.sort(), ["first", "first", "second", "second"]);

    // One of them leaving leaves the other registered and serving.
    await first.stop(0);
    await waitFor(() => relay.node.hub.backends.size === 1, "one twin to leave the hub");
    for (let i = 0; i < 3; i++) assert.equal(await firstReply(relay.tlsPort, name), "second");
  } finally {
    await teardown.run();
  }
});
