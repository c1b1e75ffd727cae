import assert from "node:assert/strict";
import fc from "fast-check";
import { maskInPlace } from "../../src/transport/frame_reader.ts";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import { testCertificates } from "../helpers/certs.ts";

/** Resolves with the client's close event. */
function closeEvent(ws: WebSocketClient): Promise<CloseEvent> {
  return new Promise((resolve) => ws.addEventListener("close", resolve));
}

function opened(ws: WebSocketClient): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.addEventListener("open", () => resolve());
    ws.addEventListener("close", (event) => reject(new Error(`closed: ${event.code} ${event.reason}`)));
  });
}

/** A `Deno.serve` over TLS that upgrades every request and hands the server socket to `onSocket`. */
async function tlsWebSocketServer(onSocket: (ws: WebSocket) => void, protocol?: string) {
  const certs = await testCertificates();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.hub.certPem,
    key: certs.hub.keyPem,
    onListen: () => {},
  }, (request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("no\n", { status: 404 });
    const { socket, response } = Deno.upgradeWebSocket(request, protocol ? { protocol } : {});
    onSocket(socket);
    return response;
  });
  return { url: `wss://127.0.0.1:${server.addr.port}/connect`, caCerts: [certs.ca.certPem], server };
}

Deno.test("wss: the offered subprotocol is chosen and messages of every length class arrive byte-exact both ways", async () => {
  const serverClosed = Promise.withResolvers<void>();
  const { url, caCerts, server } = await tlsWebSocketServer((ws) => {
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => ws.send(event.data);
    ws.onclose = () => serverClosed.resolve();
  }, "nexus-mux.v1");
  const client = new WebSocketClient(url, { protocols: ["other", "nexus-mux.v1"], caCerts });
  try {
    await opened(client);
    assert.equal(client.protocol, "nexus-mux.v1");
    // 0, 125 (7-bit length), 126 and 65,535 (16-bit), 65,536 and 300,000 (64-bit).
    const lengths = [0, 1, 125, 126, 65_535, 65_536, 300_000];
    const received: Array<string | Uint8Array> = [];
    const all = Promise.withResolvers<void>();
    client.onmessage = (event) => {
      received.push(event.data);
      if (received.length === lengths.length + 2) all.resolve();
    };
    const sent = lengths.map((n) => new Uint8Array(n).map((_, i) => (i * 7 + n) & 0xff));
    for (const bytes of sent) client.send(bytes);
    client.send("text: ünïcödé");
    // Parts (a header, an empty part, a payload) arrive as one message.
    client.sendParts([new Uint8Array([1, 2, 3]), new Uint8Array(0), sent[5]]);
    await all.promise;
    sent.forEach((bytes, i) => assert.deepEqual(received[i], bytes));
    assert.equal(received[lengths.length], "text: ünïcödé");
    assert.deepEqual(
      received[lengths.length + 1],
      new Uint8Array([1, 2, 3, ...sent[5]]),
    );
  } finally {
    const closed = closeEvent(client);
    client.close(1000, "done");
    const event = await closed;
    assert.equal(event.code, 1000);
    assert.equal(event.wasClean, true);
    await serverClosed.promise;
    await server.shutdown();
  }
});

Deno.test("many messages sent in one turn go out together and arrive in order", async () => {
  const serverClosed = Promise.withResolvers<void>();
  const seen: string[] = [];
  const all = Promise.withResolvers<void>();
  const { url, caCerts, server } = await tlsWebSocketServer((ws) => {
    ws.onmessage = (event) => {
      seen.push(event.data);
      if (seen.length === 2_000) all.resolve();
    };
    ws.onclose = () => serverClosed.resolve();
  });
  const client = new WebSocketClient(url, { caCerts });
  await opened(client);
  for (let i = 0; i < 2_000; i++) client.send(`m${i}`);
  assert.ok(client.bufferedAmount > 0);
  await all.promise;
  assert.deepEqual(seen, Array.from({ length: 2_000 }, (_, i) => `m${i}`));
  const closed = closeEvent(client);
  client.close();
  await closed;
  assert.equal(client.bufferedAmount, 0);
  await serverClosed.promise;
  await server.shutdown();
});

Deno.test("a close from the server is echoed and reported with its code and reason", async () => {
  const serverClosed = Promise.withResolvers<CloseEvent>();
  const { url, caCerts, server } = await tlsWebSocketServer((ws) => {
    ws.onopen = () => ws.close(4001, "go away");
    ws.onclose = (event) => serverClosed.resolve(event);
  });
  const client = new WebSocketClient(url, { caCerts });
  const event = await closeEvent(client);
  assert.equal(event.code, 4001);
  assert.equal(event.reason, "go away");
  assert.equal(event.wasClean, true);
  assert.equal(client.readyState, WebSocket.CLOSED);
  assert.equal((await serverClosed.promise).code, 4001);
  await server.shutdown();
});

Deno.test("a refused upgrade fires error then close with 1006", async () => {
  const certs = await testCertificates();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.hub.certPem,
    key: certs.hub.keyPem,
    onListen: () => {},
  }, () => new Response("Not found\n", { status: 404 }));
  const client = new WebSocketClient(`wss://127.0.0.1:${server.addr.port}/`, { caCerts: [certs.ca.certPem] });
  const events: string[] = [];
  client.addEventListener("error", (event) => events.push(`error: ${(event as ErrorEvent).message}`));
  const event = await closeEvent(client);
  assert.equal(event.code, 1006);
  assert.equal(event.wasClean, false);
  assert.deepEqual(events, ["error: the server refused the WebSocket: HTTP/1.1 404 Not Found"]);
  await server.shutdown();
});

Deno.test("a connection refused fires error then close with 1006", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const client = new WebSocketClient(`ws://127.0.0.1:${port}/`);
  let errors = 0;
  client.addEventListener("error", () => errors++);
  const event = await closeEvent(client);
  assert.equal(event.code, 1006);
  assert.equal(errors, 1);
});

Deno.test("misuse throws like the WebSocket API: send while connecting, close codes a client may not send", async () => {
  const { url, caCerts, server } = await tlsWebSocketServer((ws) => {
    ws.onerror = () => {};
  });
  const client = new WebSocketClient(url, { caCerts });
  assert.throws(() => client.send("early"), { name: "InvalidStateError" });
  await opened(client);
  assert.throws(() => client.close(1001, "going"), { name: "InvalidAccessError" });
  assert.throws(() => client.close(1000, "x".repeat(124)), { name: "SyntaxError" });
  const closed = closeEvent(client);
  client.close(3000, "fine");
  assert.equal((await closed).code, 3000);
  await server.shutdown();
});

// --- A raw server, for what a well-behaved server never sends. ---

/** Reads exactly `n` bytes, keeping what came after in `state.rest`. */
async function readN(conn: Deno.Conn, state: { rest: Uint8Array }, n: number): Promise<Uint8Array> {
  while (state.rest.length < n) {
    const buffer = new Uint8Array(64 * 1024);
    const got = await conn.read(buffer);
    if (got === null) throw new Error("connection ended");
    const joined = new Uint8Array(state.rest.length + got);
    joined.set(state.rest);
    joined.set(buffer.subarray(0, got), state.rest.length);
    state.rest = joined;
  }
  const out = state.rest.slice(0, n);
  state.rest = state.rest.slice(n);
  return out;
}

/** One frame from the client, unmasked. */
async function readClientFrame(conn: Deno.Conn, state: { rest: Uint8Array }) {
  const [b0, b1] = await readN(conn, state, 2);
  assert.equal(b1 & 0x80, 0x80, "client frames are masked");
  let length = b1 & 0x7f;
  if (length === 126) length = new DataView((await readN(conn, state, 2)).buffer).getUint16(0);
  else if (length === 127) {
    length = Number(new DataView((await readN(conn, state, 8)).buffer).getBigUint64(0));
  }
  const key = await readN(conn, state, 4);
  const payload = await readN(conn, state, length);
  for (let i = 0; i < length; i++) payload[i] ^= key[i & 3];
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload };
}

function serverFrame(fin: boolean, opcode: number, payload: Uint8Array, masked = false): Uint8Array {
  const head = payload.length < 126 ? [payload.length] : [126, payload.length >> 8, payload.length & 0xff];
  const frame = new Uint8Array(1 + head.length + (masked ? 4 : 0) + payload.length);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  frame.set(head, 1);
  frame[1] |= masked ? 0x80 : 0;
  frame.set(payload, frame.length - payload.length);
  return frame;
}

/** Accepts one connection, answers the opening handshake (with a wrong accept key if asked), runs `script`. */
function rawServer(
  script: (conn: Deno.Conn, state: { rest: Uint8Array }) => Promise<void>,
  options: { wrongAccept?: boolean } = {},
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      const state = { rest: new Uint8Array(0) };
      let head = "";
      while (!head.includes("\r\n\r\n")) head += new TextDecoder().decode(await readN(conn, state, 1));
      const key = /sec-websocket-key: (\S+)/i.exec(head)![1];
      const digest = await crypto.subtle.digest(
        "SHA-1",
        new TextEncoder().encode(key + (options.wrongAccept ? "x" : "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")),
      );
      const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
      await conn.write(
        new TextEncoder().encode(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
        ),
      );
      await script(conn, state);
    } finally {
      conn.close();
    }
  })();
  return { url: `ws://127.0.0.1:${listener.addr.port}/`, done };
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("a fragmented message is reassembled, and a ping between its fragments is answered with its payload", async () => {
  const pong = Promise.withResolvers<{ opcode: number; payload: string }>();
  const { url, done } = rawServer(async (conn, state) => {
    await conn.write(serverFrame(false, 0x1, text("hel")));
    await conn.write(serverFrame(true, 0x9, text("are you there")));
    await conn.write(serverFrame(false, 0x0, text("lo, ")));
    await conn.write(serverFrame(true, 0x0, text("world")));
    // The client also acknowledges what it read with empty unsolicited pongs: skip those.
    for (;;) {
      const frame = await readClientFrame(conn, state);
      if (frame.opcode === 0xa && frame.payload.length === 0) continue;
      pong.resolve({ opcode: frame.opcode, payload: new TextDecoder().decode(frame.payload) });
      break;
    }
    await conn.write(serverFrame(true, 0x8, new Uint8Array([0x03, 0xe8])));
    for (;;) if ((await readClientFrame(conn, state)).opcode === 0x8) break;
  });
  const client = new WebSocketClient(url);
  const messages: unknown[] = [];
  client.onmessage = (event) => messages.push(event.data);
  const closed = closeEvent(client);
  assert.deepEqual(await pong.promise, { opcode: 0xa, payload: "are you there" });
  const event = await closed;
  await done;
  assert.deepEqual(messages, ["hello, world"]);
  assert.equal(event.code, 1000);
});

Deno.test("a masked frame from the server fails the connection with a 1002 close", async () => {
  const sentClose = Promise.withResolvers<number>();
  const { url, done } = rawServer(async (conn, state) => {
    await conn.write(serverFrame(true, 0x2, new Uint8Array([1, 2, 3]), true));
    for (;;) {
      const frame = await readClientFrame(conn, state);
      if (frame.opcode !== 0x8) continue;
      sentClose.resolve((frame.payload[0] << 8) | frame.payload[1]);
      break;
    }
  });
  const client = new WebSocketClient(url);
  let errors = 0;
  client.addEventListener("error", () => errors++);
  const event = await closeEvent(client);
  await done;
  assert.equal(await sentClose.promise, 1002);
  assert.equal(event.code, 1002);
  assert.equal(event.reason, "the server masked a frame");
  assert.equal(errors, 1);
});

Deno.test("a message above maxMessageBytes fails the connection with 1009 before it is buffered", async () => {
  const { url, done } = rawServer(async (conn, state) => {
    await conn.write(serverFrame(true, 0x2, new Uint8Array(2_000)));
    for (;;) if ((await readClientFrame(conn, state)).opcode === 0x8) break;
  });
  const client = new WebSocketClient(url, { maxMessageBytes: 1_000 });
  let messages = 0;
  client.onmessage = () => messages++;
  const event = await closeEvent(client);
  await done;
  assert.equal(event.code, 1009);
  assert.equal(messages, 0);
});

Deno.test("a wrong Sec-WebSocket-Accept fails the opening handshake", async () => {
  const { url, done } = rawServer(async () => {}, { wrongAccept: true });
  const client = new WebSocketClient(url);
  const errors: string[] = [];
  client.addEventListener("error", (event) => errors.push((event as ErrorEvent).message));
  const event = await closeEvent(client);
  await done;
  assert.equal(event.code, 1006);
  assert.deepEqual(errors, ["the server's Sec-WebSocket-Accept does not match the key"]);
});

Deno.test("property: masking is a byte-wise XOR with the key, at every alignment and length", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 300 }),
      fc.nat(7),
      fc.nat(7),
      fc.integer({ min: 0, max: 0xffffffff }),
      (bytes, before, after, key) => {
        const buffer = new Uint8Array(before + bytes.length + after);
        buffer.set(bytes, before);
        maskInPlace(buffer, before, bytes.length, key);
        const keyBytes = [key >>> 24, (key >>> 16) & 0xff, (key >>> 8) & 0xff, key & 0xff];
        const expected = new Uint8Array(buffer.length);
        expected.set(bytes.map((b, i) => b ^ keyBytes[i & 3]), before);
        assert.deepEqual(buffer, expected);
      },
    ),
  );
});

Deno.test("close() while the server has not answered the handshake gives the socket up at once", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = new WebSocketClient(`ws://127.0.0.1:${listener.addr.port}/`);
  const conn = await listener.accept();
  listener.close();
  try {
    // The request arrives; no answer is ever sent.
    assert.ok(((await conn.read(new Uint8Array(4096))) ?? 0) > 0);
    const closed = closeEvent(client);
    client.close();
    assert.equal((await closed).code, 1006);
    const buffer = new Uint8Array(16);
    assert.equal(await conn.read(buffer), null);
  } finally {
    conn.close();
  }
});

/** Queues `mib` MiB of 32 KiB binary messages in one turn; returns what the client holds unwritten then. */
function queueMiB(client: WebSocketClient, mib: number): number {
  const message = new Uint8Array(32 * 1024).fill(5);
  for (let i = 0; i < mib * 32; i++) client.send(message);
  return client.bufferedAmount;
}

Deno.test("whenDrained waits while the peer does not read, and resolves once the output is at its mark", async () => {
  const MARK = 1024 * 1024;
  const reading = Promise.withResolvers<void>();
  let bytesRead = 0;
  const { url, done } = rawServer(async (conn, state) => {
    await reading.promise;
    for (;;) {
      const frame = await readClientFrame(conn, state);
      if (frame.opcode === 0x8) return void await conn.write(serverFrame(true, 0x8, frame.payload));
      bytesRead += frame.payload.length;
    }
  });
  const client = new WebSocketClient(url);
  await opened(client);
  // Far more than the loopback socket buffers take, so most of it stays queued while nobody reads.
  assert.ok(queueMiB(client, 32) > MARK);
  let drained = false;
  const whenDrained = client.whenDrained(MARK).then(() => (drained = true));
  // Let the client write what the kernel takes; the peer still reads nothing, so the mark is not reached.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(drained, false);
  assert.ok(client.bufferedAmount > MARK);
  reading.resolve();
  await whenDrained;
  assert.ok(client.bufferedAmount <= MARK, `${client.bufferedAmount} bytes still unwritten`);
  await client.whenDrained(0);
  assert.equal(client.bufferedAmount, 0);
  const closed = closeEvent(client);
  client.close(1000, "done");
  assert.equal((await closed).code, 1000);
  await done;
  assert.equal(bytesRead, 32 * 1024 * 1024);
});

Deno.test("whenDrained resolves at close even though the peer never reads what is still queued", async () => {
  const release = Promise.withResolvers<void>();
  const { url, done } = rawServer(() => release.promise);
  const client = new WebSocketClient(url);
  await opened(client);
  assert.ok(queueMiB(client, 32) > 0);
  const whenDrained = client.whenDrained(0);
  const closed = closeEvent(client);
  client.close(1000, "giving up");
  await whenDrained;
  assert.equal(client.readyState, 2, "closing, its close frame still behind the unread output");
  assert.ok(client.bufferedAmount > 0);
  // Nothing more is sent once closing: a new wait resolves at once.
  await client.whenDrained(0);
  release.resolve();
  await done;
  assert.equal((await closed).code, 1006);
});
