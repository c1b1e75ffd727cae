/**
 * Our WebSocket in both roles at once, over TLS on loopback: the client dials, the server side comes from
 * `acceptWebSocket`. What one side sends arrives byte-exact at the other, messages delivered earlier stay intact
 * however much follows, and each role enforces its half of RFC 6455.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseEndpointRequest } from "../../src/http/endpoint_request.ts";
import type { WebSocketConnection } from "../../src/transport/websocket.ts";
import { acceptWebSocket } from "../../src/transport/websocket_accept.ts";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import { testCertificates } from "../helpers/certs.ts";
import { withTimeout } from "../helpers/cluster.ts";

/** An open client and server pair; `maxMessageBytes` and `idleTimeoutMs` are the server's. */
async function ownPair(server: { maxMessageBytes?: number; idleTimeoutMs?: number } = {}) {
  const certs = await testCertificates();
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.hub.certPem,
    key: certs.hub.keyPem,
  });
  const accepted = (async () => {
    const conn = await listener.accept();
    let bytes = new Uint8Array(0);
    for (;;) {
      const result = parseEndpointRequest(bytes);
      if (result.kind === "request") {
        return await acceptWebSocket(conn, result.request, bytes.slice(result.headLength), {
          maxMessageBytes: server.maxMessageBytes ?? 1024 * 1024,
          ...(server.idleTimeoutMs ? { idleTimeoutMs: server.idleTimeoutMs } : {}),
        });
      }
      const chunk = new Uint8Array(4096);
      const n = await conn.read(chunk);
      if (n === null) throw new Error("client left before its request");
      bytes = new Uint8Array([...bytes, ...chunk.subarray(0, n)]);
    }
  })();
  const client = new WebSocketClient(`wss://localhost:${(listener.addr as Deno.NetAddr).port}/`, {
    caCerts: [certs.ca.certPem],
  });
  await new Promise((resolve, reject) => {
    client.addEventListener("open", resolve);
    client.addEventListener("close", (event) => reject(new Error(`closed: ${event.code} ${event.reason}`)));
  });
  const serverSide = await accepted;
  listener.close();
  return {
    client,
    server: serverSide,
    async close() {
      const closed = [client, serverSide].map((ws) =>
        ws.readyState === 3
          ? Promise.resolve()
          : new Promise((resolve) => ws.addEventListener("close", resolve))
      );
      client.close(1000, "test over");
      await Promise.all(closed);
    },
  };
}

/** Sends `messages` from `from` and resolves with what `to` received, every message kept as delivered. */
function transfer(from: WebSocketConnection, to: WebSocketConnection, messages: Uint8Array[]) {
  const received: Uint8Array[] = [];
  const all = Promise.withResolvers<Uint8Array[]>();
  to.onmessage = (event) => {
    received.push(event.data as Uint8Array);
    if (received.length === messages.length) all.resolve(received);
  };
  for (const message of messages) from.send(message);
  return withTimeout(all.promise, `${messages.length} messages`, 30_000);
}

Deno.test("property: bursts of messages of any size arrive byte-exact both ways, and delivered ones stay intact", async () => {
  const pair = await ownPair();
  try {
    await fc.assert(
      fc.asyncProperty(
        // Small control-like messages, frame-sized ones that end reads in the middle, and big ones.
        fc.array(
          fc.oneof(
            fc.integer({ min: 0, max: 300 }),
            fc.integer({ min: 8_000, max: 40_000 }),
            fc.integer({ min: 0, max: 70_000 }),
          ),
          {
            minLength: 1,
            maxLength: 400,
            size: "max",
          },
        ),
        fc.boolean(),
        async (lengths, clientSends) => {
          const messages = lengths.map((n, i) => new Uint8Array(n).map((_, j) => (i * 31 + j) & 0xff));
          const [from, to] = clientSends ? [pair.client, pair.server] : [pair.server, pair.client];
          const received = await transfer(from, to, messages);
          // Checked only now, after every later read: a view reused by a later read would show here.
          received.forEach((bytes, i) =>
            assert.deepEqual(bytes, messages[i], `message ${i} of ${messages.length}`)
          );
        },
      ),
      { numRuns: 40 },
    );
  } finally {
    await pair.close();
  }
});

Deno.test("a server refuses a message over its limit with 1009, and a client may close only with 1000 or 3000-4999", async () => {
  const pair = await ownPair({ maxMessageBytes: 1000 });
  try {
    const closed = new Promise<CloseEvent>((resolve) => pair.client.addEventListener("close", resolve));
    assert.throws(() => pair.client.close(1008, "policy"), /may not be sent by a client/);
    pair.client.send(new Uint8Array(1001));
    assert.equal((await withTimeout(closed, "the close")).code, 1009);
  } finally {
    await pair.close();
  }
  // The server side may close with a policy code, and the client sees it.
  const second = await ownPair();
  const closed = new Promise<CloseEvent>((resolve) => second.client.addEventListener("close", resolve));
  second.server.close(1008, "forbidden: a test");
  const event = await withTimeout(closed, "the policy close");
  assert.deepEqual([event.code, event.reason], [1008, "forbidden: a test"]);
});

Deno.test("a server with an idle timeout pings a silent peer and drops one that stopped answering", async () => {
  // Our client answers pings: the connection stays up across several idle periods.
  const pair = await ownPair({ idleTimeoutMs: 100 });
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(pair.server.readyState, 1);
    assert.equal(pair.client.readyState, 1);
  } finally {
    await pair.close();
  }
  // A raw client that completes the upgrade and then never answers: dropped after twice the idle time.
  const certs = await testCertificates();
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.hub.certPem,
    key: certs.hub.keyPem,
  });
  const serverClosed = (async () => {
    const conn = await listener.accept();
    const chunk = new Uint8Array(4096);
    const n = (await conn.read(chunk)) ?? 0;
    const result = parseEndpointRequest(chunk.subarray(0, n));
    assert.equal(result.kind, "request");
    if (result.kind !== "request") return null;
    const ws = await acceptWebSocket(conn, result.request, new Uint8Array(0), {
      maxMessageBytes: 1000,
      idleTimeoutMs: 100,
    });
    return await new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  })();
  const raw = await Deno.connectTls({
    hostname: "localhost",
    port: (listener.addr as Deno.NetAddr).port,
    caCerts: [certs.ca.certPem],
  });
  await raw.write(
    new TextEncoder().encode(
      "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
  );
  const event = await withTimeout(serverClosed, "the server to drop the silent client", 5_000);
  assert.match(event?.reason ?? "", /no answer from the peer/);
  raw.close();
  listener.close();
});
