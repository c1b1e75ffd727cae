/**
 * The node's caps, through real sockets: total connections, connections per client IP, connections in the
 * handshake phase, streams per backend, and the handshake deadlines. Each refusal happens exactly at its limit,
 * is counted by kind, and floods are logged as a few lines per window plus a count.
 */

import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import type { Node } from "../../src/node.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";
import { testCertificates } from "../helpers/certs.ts";
import { startTestAgent, startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { makeConfigDir, nodeYaml, spawnNode } from "../helpers/processes.ts";
import { writeAll } from "../helpers/services.ts";
import { openTrafficStream, startTrafficService, type TrafficRoute } from "../helpers/traffic.ts";

/** A connection that sends nothing (it never gets past the handshake phase). */
function silent(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/** Resolves when the node has closed `conn` (end of stream or reset); fails after `timeoutMs`. */
async function closedByNode(conn: Deno.Conn, timeoutMs = 20_000): Promise<Uint8Array> {
  const received: number[] = [];
  const buffer = new Uint8Array(1024);
  const deadline = setTimeout(() => conn.close(), timeoutMs);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return new Uint8Array(received);
      received.push(...buffer.subarray(0, n));
    }
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionReset) return new Uint8Array(received);
    throw new Error(`the node did not close the connection within ${timeoutMs} ms (${error})`);
  } finally {
    clearTimeout(deadline);
  }
}

/** Waits until the node has decided about `expected` connections: admitted or refused. */
async function decided(node: Node, refusalKind: string, expected: number): Promise<void> {
  await waitFor(
    () => node.connections + node.refusals.total(refusalKind) === expected,
    `${expected} connections admitted or refused`,
  );
}

async function echoes(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await writeAll(conn, bytes);
  const back = new Uint8Array(bytes.length);
  let got = 0;
  while (got < bytes.length) {
    const n = await conn.read(back.subarray(got));
    if (n === null) throw new Error(`echo ended after ${got} bytes`);
    got += n;
  }
  assert.equal(new TextDecoder().decode(back), text);
}

Deno.test("maxConnections: the connection one past the limit is refused and counted; a freed slot admits the next", async () => {
  const test = await startTestNode({ limits: { maxConnections: 3 } });
  const { node } = test;
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 3; i++) conns.push(await silent(test.tlsPort));
    await decided(node, "max_connections", 3);
    assert.equal(node.connections, 3);
    assert.equal(node.refusals.total("max_connections"), 0);

    const refused = await silent(test.tlsPort);
    assert.deepEqual(await closedByNode(refused), new Uint8Array(0), "closed without a word");
    refused.close();
    assert.equal(node.refusals.total("max_connections"), 1);
    assert.equal(node.connections, 3);

    conns.shift()!.close();
    await waitFor(() => node.connections === 2, "the freed slot");
    conns.push(await silent(test.tlsPort));
    await decided(node, "max_connections", 4);
    assert.equal(node.connections, 3);
    assert.equal(node.refusals.total("max_connections"), 1);
  } finally {
    for (const conn of conns) conn.close();
    await test.close();
  }
});

/** Connects from a chosen local address (Deno.connect cannot bind one; node:net can). */
function connectFrom(localAddress: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

function destroyed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) return resolve();
    socket.once("close", () => resolve());
    socket.destroy();
  });
}

/** Whether this kernel lets a socket bind 127.0.0.2 (all of 127/8 is loopback on Linux, not everywhere). */
async function canBind127002(): Promise<boolean> {
  try {
    const listener = Deno.listen({ hostname: "127.0.0.2", port: 0 });
    listener.close();
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const socket = await connectFrom("127.0.0.2", (probe.addr as Deno.NetAddr).port);
      const accepted = await probe.accept();
      const from = (accepted.remoteAddr as Deno.NetAddr).hostname;
      accepted.close();
      await destroyed(socket);
      return from === "127.0.0.2";
    } finally {
      probe.close();
    }
  } catch {
    return false;
  }
}

Deno.test("maxConnectionsPerIp: one IP is refused past its limit while another IP is still admitted", async (t) => {
  if (!(await canBind127002())) {
    await t.step({
      name: "this kernel cannot bind 127.0.0.2 as a source address: skipped",
      ignore: true,
      fn: () => {},
    });
    return;
  }
  const test = await startTestNode({ limits: { maxConnectionsPerIp: 2 } });
  const { node } = test;
  const sockets: net.Socket[] = [];
  try {
    sockets.push(await connectFrom("127.0.0.1", test.tlsPort), await connectFrom("127.0.0.1", test.tlsPort));
    await decided(node, "max_connections_per_ip", 2);
    assert.equal(node.connections, 2);

    const closed = new Promise<void>((resolve) => {
      connectFrom("127.0.0.1", test.tlsPort).then((socket) => {
        sockets.push(socket);
        socket.resume();
        socket.once("close", () => resolve());
        socket.once("end", () => resolve());
      });
    });
    await closed;
    assert.equal(node.refusals.total("max_connections_per_ip"), 1);

    // Another address is admitted up to its own limit.
    sockets.push(await connectFrom("127.0.0.2", test.tlsPort), await connectFrom("127.0.0.2", test.tlsPort));
    await decided(node, "max_connections_per_ip", 5);
    assert.equal(node.connections, 4);
    assert.equal(node.refusals.total("max_connections_per_ip"), 1);
  } finally {
    await Promise.all(sockets.map(destroyed));
    await test.close();
  }
});

Deno.test("maxHandshakes: established streams do not count; the client one past the limit takes the oldest silent client's slot", async () => {
  const service = await startTrafficService();
  const test = await startTestNode({ limits: { maxHandshakes: 2 } });
  const { node } = test;
  const agent = await startTestAgent({
    hubUrls: [test.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  const route: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const established: Deno.Conn[] = [];
  const waiting: Deno.Conn[] = [];
  try {
    // Two established streams, opened one after the other (each is a handshake while it is being routed).
    for (let i = 0; i < 2; i++) {
      const conn = await openTrafficStream(route, "ECHO");
      established.push(conn);
      await echoes(conn, `established ${i}`);
    }
    // Both handshake slots are free again: two silent clients take them; a third (from the same address, so
    // among the heaviest holders) is admitted in place of the oldest, which the node closes without a word.
    for (let i = 0; i < 2; i++) {
      waiting.push(await silent(test.tlsPort));
      await waitFor(() => node.connections === 3 + i, `silent client ${i} admitted`);
    }
    assert.equal(node.refusals.total("handshake_shed"), 0);
    waiting.push(await silent(test.tlsPort));
    assert.deepEqual(await closedByNode(waiting.shift()!), new Uint8Array(0));
    assert.equal(node.refusals.total("handshake_shed"), 1);
    await waitFor(() => node.connections === 4, "two established and two waiting connections");

    // The established streams still work; a silent client's handshake ending frees its slot.
    for (const [i, conn] of established.entries()) await echoes(conn, `still established ${i}`);
    waiting.shift()!.close();
    await waitFor(() => node.connections === 3, "the freed handshake slot");
    waiting.push(await silent(test.tlsPort));
    await waitFor(() => node.connections === 4, "the next client admitted");
    assert.equal(node.refusals.total("handshake_shed"), 1, "a free slot sheds nobody");
  } finally {
    for (const conn of [...established, ...waiting]) conn.close();
    await agent.stop(0);
    await test.close();
    await service.close();
  }
});

/**
 * Slow clients from a few addresses: each keeps `perAddress` connections open, sending one byte of a
 * ClientHello every `dripMs`, and opens a new one (after `reopenMs`, at most `reopens` times in all) whenever
 * the node closes one, as an attacker would.
 */
function trickleFrom(addresses: readonly string[], port: number, options: {
  perAddress: number;
  dripMs: number;
  reopenMs: number;
  reopens: number;
}) {
  const hello = buildClientHello({ serverName: "app.test.nexus", paddingBytes: 500 });
  const sockets = new Set<net.Socket>();
  let reopensLeft = options.reopens;
  let closedByNode = 0;
  let stopped = false;
  const open = (localAddress: string) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    sockets.add(socket);
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < hello.length) socket.write(hello.subarray(sent, ++sent));
    }, options.dripMs);
    socket.on("error", () => {});
    socket.resume();
    socket.once("close", () => {
      clearInterval(drip);
      sockets.delete(socket);
      if (stopped) return;
      closedByNode += 1;
      if (reopensLeft <= 0) return;
      reopensLeft -= 1;
      setTimeout(() => stopped || open(localAddress), options.reopenMs);
    });
  };
  for (const address of addresses) for (let i = 0; i < options.perAddress; i++) open(address);
  return {
    /** Connections the node closed (shed, refused or timed out). */
    get closedByNode(): number {
      return closedByNode;
    },
    stop: async () => {
      stopped = true;
      await Promise.all([...sockets].map(destroyed));
    },
  };
}

/** One request through the node over TLS from `localAddress`: whether the service's echo came back intact. */
async function tlsEchoFrom(localAddress: string, port: number, text: string): Promise<boolean> {
  const certs = await testCertificates();
  // node:tls takes no source address itself; the TCP socket under it does.
  const socket = tls.connect({
    socket: net.connect({ host: "127.0.0.1", port, localAddress }),
    servername: "app.test.nexus",
    ca: certs.ca.certPem,
  });
  const received: Buffer[] = [];
  const outcome = new Promise<boolean>((resolve) => {
    socket.once("secureConnect", () => socket.end(`ECHO\n${text}`));
    socket.on("data", (chunk: Buffer) => received.push(chunk));
    socket.once("end", () => resolve(Buffer.concat(received).toString() === text));
    socket.once("error", () => resolve(false));
    socket.once("close", () => resolve(false));
  });
  try {
    return await withTimeout(outcome, `the control request from ${localAddress}`, 10_000).catch(() => false);
  } finally {
    socket.destroy();
  }
}

Deno.test("maxHandshakesPerIp: slow handshakes from a few addresses fill the pool, and clients from other addresses are all served", async (t) => {
  if (!(await canBind127002())) {
    await t.step({
      name: "this kernel cannot bind 127.0.0.2 as a source address: skipped",
      ignore: true,
      fn: () => {},
    });
    return;
  }
  const service = await startTrafficService();
  // A pool of 24 handshakes, 8 per address; four slow addresses want 40.
  const test = await startTestNode({ limits: { maxHandshakes: 24, maxHandshakesPerIp: 8 } });
  const { node } = test;
  const agent = await startTestAgent({
    hubUrls: [test.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  const attack = trickleFrom(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"], test.tlsPort, {
    perAddress: 10,
    dripMs: 200,
    reopenMs: 100,
    reopens: 400,
  });
  try {
    // Forty connections for 24 slots: once the node has closed 16 and holds 24, the pool is full.
    await waitFor(
      () => attack.closedByNode >= 16 && node.connections >= 24,
      "the slow clients filling the handshake pool",
      10_000,
    );
    // Thirty requests, ten at a time, from ten other addresses, while the slow clients keep the pool full.
    const requests = 30;
    let served = 0;
    for (let round = 0; round < requests / 10; round++) {
      const results = await Promise.all(
        Array.from(
          { length: 10 },
          (_, i) => tlsEchoFrom(`127.0.1.${i + 1}`, test.tlsPort, `control ${round}.${i}`),
        ),
      );
      served += results.filter(Boolean).length;
    }
    const shed = node.refusals.total("handshake_shed");
    assert.equal(
      served,
      requests,
      `${served} of ${requests} control requests served (${shed} handshakes shed)`,
    );
    assert.ok(shed > 0, "the slow clients' handshakes were shed");
  } finally {
    await attack.stop();
    await agent.stop(0);
    await test.close();
    await service.close();
  }
});

Deno.test("maxStreamsPerBackend: the stream one past the limit is refused and counted as such; a closed stream frees its slot", async () => {
  const service = await startTrafficService();
  const test = await startTestNode({ limits: { maxStreamsPerBackend: 2 } });
  const { node } = test;
  const agent = await startTestAgent({
    hubUrls: [test.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  const route: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const streams: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      streams.push(await openTrafficStream(route, "ECHO"));
      await echoes(streams[i], `stream ${i}`);
    }
    const session = [...node.hub.backends][0].session;
    assert.equal(session.streamCount, 2);
    await assert.rejects(openTrafficStream(route, "ECHO"), "the TLS handshake of the third stream fails");
    assert.equal(node.refusals.total("max_streams_per_backend"), 1);
    assert.equal(node.refusals.total("no_backend"), 0, "the name has a backend: it is full, not missing");

    streams.shift()!.close();
    await waitFor(() => session.streamCount === 1, "the closed stream's slot");
    streams.push(await openTrafficStream(route, "ECHO"));
    await echoes(streams[1], "the next stream");
    assert.equal(node.refusals.total("max_streams_per_backend"), 1);
  } finally {
    for (const conn of streams) conn.close();
    await agent.stop(0);
    await test.close();
    await service.close();
  }
});

Deno.test("handshake deadlines: a silent client goes at firstByteSeconds, a drip-feeding one at totalSeconds", async () => {
  const test = await startTestNode({
    handshakeTimeouts: { firstByteSeconds: 1, extendSeconds: 1, totalSeconds: 4, hubUpgradeSeconds: 10 },
  });
  const { node } = test;
  try {
    const silentStart = Date.now();
    const quiet = await silent(test.tlsPort);
    await closedByNode(quiet);
    const silentMs = Date.now() - silentStart;
    quiet.close();
    assert.ok(silentMs >= 1_000 - 50, `closed after ${silentMs} ms, before the first-byte deadline`);
    assert.ok(silentMs < 4_000, `closed after ${silentMs} ms: by the total deadline, not the first-byte one`);
    assert.equal(node.refusals.total("handshake_timeout"), 1);

    // One byte of a real ClientHello every 300 ms: each read extends the deadline, the total one still ends it.
    const hello = buildClientHello({ serverName: "app.test.nexus", paddingBytes: 200 });
    const dripStart = Date.now();
    const drip = await silent(test.tlsPort);
    let sent = 0;
    const dripping = (async () => {
      try {
        for (; sent < hello.length; sent++) {
          await drip.write(hello.subarray(sent, sent + 1));
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
      } catch {
        // Closed by the node.
      }
    })();
    await closedByNode(drip);
    const dripMs = Date.now() - dripStart;
    drip.close();
    await dripping;
    assert.ok(dripMs >= 4_000 - 50, `closed after ${dripMs} ms, before the total deadline`);
    assert.ok(sent < hello.length, "the hello was still incomplete");
    assert.equal(node.refusals.total("handshake_timeout"), 2);

    // On the HTTP port the timeout is answered with 408 before the close.
    const http = await silent(test.httpPort);
    await writeAll(http, new TextEncoder().encode("GET / HTTP/1.1\r\nHo"));
    const answer = new TextDecoder().decode(await closedByNode(http));
    http.close();
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.equal(node.refusals.total("handshake_timeout"), 3);
  } finally {
    await test.close();
  }
});

Deno.test("a flood of refusals is logged as five lines and one count per window, and each one is counted", async () => {
  const dir = await makeConfigDir();
  const config = await dir.write(
    "node.yaml",
    nodeYaml({ extra: "limits:\n  maxConnections: 1\n", drainTimeoutSeconds: 0 }),
  );
  const { process, ports } = await spawnNode(config);
  const holder = await silent(ports.tlsPort);
  try {
    // The holder takes the only slot; then 50 clients are refused.
    await process.waitForLine(/relay listening.*protocol=http/);
    for (let i = 0; i < 50; i++) {
      const conn = await silent(ports.tlsPort);
      await closedByNode(conn);
      conn.close();
    }
    process.kill("SIGTERM");
    const status = await process.exited;
    assert.equal(status.code, 0);
    const refusedLines = process.matching(/connection refused: limit reached limit=max_connections/);
    assert.equal(refusedLines.length, 5, process.lines.join("\n"));
    // The rest are reported as one count, at the latest when the node stops.
    const counts = process.matching(/45 more max_connections events/);
    assert.equal(counts.length, 1, process.lines.join("\n"));
    assert.match(counts[0], /total=50/);
  } finally {
    holder.close();
    await process.stop();
    await dir.remove();
  }
});
