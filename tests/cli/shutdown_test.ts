/**
 * Graceful shutdown of the real program (`nexus serve`, `nexus agent` as child processes): on SIGTERM stop
 * taking new work at once, tell the other side, let open streams finish for drainTimeoutSeconds, close the
 * rest, exit 0; a second signal exits at once.
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, waitFor } from "../helpers/cluster.ts";
import {
  agentYaml,
  makeConfigDir,
  nodeYaml,
  openDescriptors,
  spawnAgent,
  spawnNode,
} from "../helpers/processes.ts";
import {
  digestToEnd,
  openTrafficStream,
  patternSha256,
  startTrafficService,
  type TrafficRoute,
  writePattern,
} from "../helpers/traffic.ts";

const MiB = 1024 * 1024;

/** Echoes `bytes` pattern bytes through an open ECHO stream, half-closes, and checks what comes back. */
async function finishEcho(conn: Deno.Conn, bytes: number, seed: number): Promise<void> {
  const [echoed] = await Promise.all([
    digestToEnd(conn),
    writePattern(conn, bytes, seed).then(() => conn.closeWrite()),
  ]);
  assert.deepEqual(echoed, { bytes, sha256: patternSha256(bytes, seed) });
}

/** A round trip of a few bytes, to be sure a stream is established end to end. */
async function ping(conn: Deno.Conn): Promise<void> {
  await conn.write(new Uint8Array([1, 2, 3]));
  const back = new Uint8Array(3);
  let got = 0;
  while (got < 3) {
    const n = await conn.read(back.subarray(got));
    if (n === null) throw new Error("stream ended");
    got += n;
  }
}

/** Resolves when the far side ends the stream (end of stream or reset). */
async function ended(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    while ((await conn.read(buffer)) !== null) {
      // Drain.
    }
  } catch {
    // A reset ends it too.
  }
}

/**
 * A connection to a port whose listener has been closed is refused. The runtime closes a listener's socket
 * a moment after `close()` returns, so a connection can still land in its backlog: then the kernel resets it
 * with the listener, and it never carries a byte. Either way the node serves nobody new.
 */
async function refusedAtOnce(port: number): Promise<void> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (error) {
    // Refused by a closed port, or reset while the listener's backlog is torn down.
    assert.ok(
      error instanceof Deno.errors.ConnectionRefused || error instanceof Deno.errors.ConnectionReset,
      String(error),
    );
    return;
  }
  try {
    const buffer = new Uint8Array(16);
    let n: number | null = null;
    const guard = setTimeout(() => conn.close(), 10_000);
    try {
      n = await conn.read(buffer);
    } catch (error) {
      assert.ok(error instanceof Deno.errors.ConnectionReset, `not reset within 10 s: ${error}`);
    } finally {
      clearTimeout(guard);
    }
    assert.equal(n, null, "a connection after the signal was served");
  } finally {
    conn.close();
  }
}

Deno.test("serve: on SIGTERM new connections are refused at once, the agents are told, and an open transfer that ends within the drain arrives whole", async () => {
  const service = await startTrafficService();
  const dir = await makeConfigDir();
  const { process: node, ports } = await spawnNode(
    await dir.write("node.yaml", nodeYaml({ drainTimeoutSeconds: 600 })),
  );
  const agentConfig = await dir.write(
    "agent.yaml",
    agentYaml({
      hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
      hostnames: ["app.test.nexus"],
      targets: { "app.test.nexus": service.port },
    }),
  );
  const agent = await spawnAgent(agentConfig);
  const route: TrafficRoute = { port: ports.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  let conn: Deno.Conn | undefined;
  try {
    conn = await openTrafficStream(route, "ECHO");
    await ping(conn);
    node.kill("SIGTERM");
    await node.waitForLine(/node: shutting down: no longer accepting open_streams=1 /);
    await refusedAtOnce(ports.tlsPort);
    await refusedAtOnce(ports.httpPort);
    // The agent hears it from the hub (and keeps its open stream).
    await agent.waitForLine(/hub is shutting down: it sends no new streams/);

    // The open stream still moves 8 MiB each way, byte-exact; once it ends the node stops without waiting
    // out the 600 s drain.
    await finishEcho(conn, 8 * MiB, 1);
    const status = await node.exited;
    assert.equal(status.code, 0, node.lines.join("\n"));
    assert.deepEqual(node.matching(/drain time over/), []);
    assert.equal(node.matching(/node: stopped/).length, 1);
  } finally {
    conn?.close();
    await agent.stop();
    await node.stop();
    await service.close();
    await dir.remove();
  }
});

Deno.test("serve: at the end of the drain a stream still open is closed, and so is a client still sending its ClientHello", async () => {
  const service = await startTrafficService();
  const dir = await makeConfigDir();
  const { process: node, ports } = await spawnNode(
    await dir.write("node.yaml", nodeYaml({ drainTimeoutSeconds: 1 })),
  );
  const agent = await startTestAgent({
    hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  const route: TrafficRoute = { port: ports.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  let open: Deno.Conn | undefined;
  let silent: Deno.Conn | undefined;
  try {
    open = await openTrafficStream(route, "ECHO");
    await ping(open);
    // The silent client counts once the node has accepted it (a descriptor more), not when our connect returns.
    const before = await openDescriptors(node.pid);
    silent = await Deno.connect({ hostname: "127.0.0.1", port: ports.tlsPort });
    for (let tries = 0; (await openDescriptors(node.pid)) <= before; tries++) {
      if (tries === 500) throw new Error("the node never accepted the silent client");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    node.kill("SIGTERM");
    // Both are closed by the node (the silent one long before its 15 s first-byte deadline would).
    await Promise.all([ended(open), ended(silent)]);
    const status = await node.exited;
    assert.equal(status.code, 0, node.lines.join("\n"));
    assert.equal(node.matching(/drain time over; closing remaining connections connections=2 /).length, 1);
    assert.deepEqual(
      node.matching(/handshake_timeout|client error/),
      [],
      "the silent client is not a refusal",
    );
  } finally {
    open?.close();
    silent?.close();
    await agent.stop(0);
    await node.stop();
    await service.close();
    await dir.remove();
  }
});

Deno.test("agent: on SIGTERM the node sends its new clients to another backend at once, and its open transfer completes whole", async () => {
  const draining = await startTrafficService();
  const remaining = await startTrafficService();
  const test = await startTestNode();
  const dir = await makeConfigDir();
  const child = await spawnAgent(
    await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [test.hubUrl],
        hostnames: ["app.test.nexus"],
        targets: { "app.test.nexus": draining.port },
        drainTimeoutSeconds: 600,
      }),
    ),
  );
  const other = await startTestAgent({
    hubUrls: [test.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": remaining.port },
  });
  const route: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const conns: Deno.Conn[] = [];
  try {
    await waitFor(() => test.node.hub.backends.size === 2, "both backends registered");
    // Round robin over two backends of weight 1: two connections reach one each.
    for (let i = 0; i < 2; i++) {
      conns.push(await openTrafficStream(route, "ECHO"));
      await ping(conns[i]);
    }
    assert.deepEqual([draining.open, remaining.open], [1, 1]);
    child.kill("SIGTERM");
    await child.waitForLine(/draining streams streams=1 /);
    const childBackend = () => [...test.node.hub.backends].find((b) => b.name === "child-agent");
    await waitFor(() => childBackend()?.session.draining === true, "the node to hear of the drain");

    // Every new client goes to the remaining backend.
    const acceptedBefore = draining.accepted;
    for (let i = 0; i < 4; i++) {
      const conn = await openTrafficStream(route, "ECHO");
      conns.push(conn);
      await ping(conn);
    }
    assert.equal(draining.accepted, acceptedBefore);
    assert.equal(remaining.open, 5);

    // The draining agent's open stream (one of the first two) still carries 8 MiB each way, byte-exact;
    // once it has ended the agent exits 0 without waiting out its 600 s drain.
    await Promise.all(conns.slice(0, 2).map((conn, i) => finishEcho(conn, 8 * MiB, 10 + i)));
    const status = await child.exited;
    assert.equal(status.code, 0, child.lines.join("\n"));
    assert.deepEqual(child.matching(/agent shutting down|drain time over/), []);
    await waitFor(() => test.node.hub.backends.size === 1, "the stopped agent to leave");
  } finally {
    for (const conn of conns) conn.close();
    await child.stop();
    await other.stop(0);
    await test.close();
    await draining.close();
    await remaining.close();
    await dir.remove();
  }
});

Deno.test("agent: at the end of the drain a stream still open is closed; a second signal exits at once", async (t) => {
  const service = await startTrafficService();
  const test = await startTestNode();
  const dir = await makeConfigDir();
  const route: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  try {
    for (
      const { name, drainTimeoutSeconds, signals, code } of [
        { name: "drain over", drainTimeoutSeconds: 1, signals: 1, code: 0 },
        { name: "second signal", drainTimeoutSeconds: 600, signals: 2, code: 1 },
      ]
    ) {
      await t.step(name, async () => {
        const child = await spawnAgent(
          await dir.write(
            `agent-${signals}.yaml`,
            agentYaml({
              hubUrls: [test.hubUrl],
              hostnames: ["app.test.nexus"],
              targets: { "app.test.nexus": service.port },
              drainTimeoutSeconds,
            }),
          ),
        );
        let conn: Deno.Conn | undefined;
        try {
          await waitFor(() => test.node.hub.backends.size === 1, "the agent's registration");
          conn = await openTrafficStream(route, "ECHO");
          await ping(conn);
          child.kill("SIGTERM");
          await child.waitForLine(
            new RegExp(`draining streams streams=1 drain_ms=${drainTimeoutSeconds * 1000}`),
          );
          if (signals === 2) child.kill("SIGTERM");
          // Far less than a 600 s drain: only the second signal (or the 1 s drain) can end it.
          await ended(conn);
          const status = await child.exited;
          assert.equal(status.code, code, child.lines.join("\n"));
          if (signals === 2) assert.equal(child.matching(/second signal: exiting now/).length, 1);
          await waitFor(() => test.node.hub.backends.size === 0, "the agent to leave the pool");
        } finally {
          conn?.close();
          await child.stop();
        }
      });
    }
  } finally {
    await test.close();
    await service.close();
    await dir.remove();
  }
});
