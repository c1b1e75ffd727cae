/**
 * The message pool against a model, over whole runs of copies, give-backs (right, twice, foreign) and idle
 * trims, at every message size around its bounds: a buffer lent out is never lent again before it comes back,
 * every copy holds exactly its bytes and keeps them while lent, no more than MAX_FREE_BUFFERS are kept, and an
 * idle pool lets them go. Then end to end: a real WebSocket carrying more messages than the pool keeps, read
 * out of order of their arrival.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  MAX_FREE_BUFFERS,
  MessagePool,
  MIN_POOLED_MESSAGE_BYTES,
  POOL_IDLE_MS,
  POOLED_MESSAGE_BYTES,
} from "../../src/transport/message_pool.ts";
import { WebSocketConnection } from "../../src/transport/websocket.ts";

type Step =
  | { readonly kind: "copy"; readonly length: number; readonly fill: number }
  | { readonly kind: "recycle"; readonly pick: number; readonly twice: boolean }
  | { readonly kind: "foreign"; readonly length: number }
  | { readonly kind: "clear" };

const lengths = fc.oneof(
  fc.integer({ min: 0, max: POOLED_MESSAGE_BYTES + 64 }),
  fc.constantFrom(
    0,
    MIN_POOLED_MESSAGE_BYTES - 1,
    MIN_POOLED_MESSAGE_BYTES,
    POOLED_MESSAGE_BYTES,
    POOLED_MESSAGE_BYTES + 1,
  ),
);

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant("copy" as const), length: lengths, fill: fc.nat(255) }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("recycle" as const), pick: fc.nat(), twice: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("foreign" as const), length: lengths }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("clear" as const) }) },
);

Deno.test("message pool: lent buffers are never shared, copies stay intact, the free list stays bounded", () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 300 }), (steps) => {
      const pool = new MessagePool();
      const lent: Array<{ view: Uint8Array; fill: number }> = [];
      let modelFree = 0;
      try {
        for (const s of steps) {
          switch (s.kind) {
            case "copy": {
              const source = new Uint8Array(s.length).fill(s.fill);
              const view = pool.copy(source);
              assert.equal(view.length, s.length);
              assert.ok(view.every((b) => b === s.fill));
              assert.notEqual(view.buffer, source.buffer);
              const pooled = s.length >= MIN_POOLED_MESSAGE_BYTES && s.length <= POOLED_MESSAGE_BYTES;
              assert.equal(view.buffer.byteLength, pooled ? POOLED_MESSAGE_BYTES : s.length);
              // No buffer lent twice at once.
              for (const other of lent) assert.notEqual(other.view.buffer, view.buffer);
              if (pooled && modelFree > 0) modelFree -= 1;
              lent.push({ view, fill: s.fill });
              break;
            }
            case "recycle": {
              if (lent.length === 0) break;
              const [{ view }] = lent.splice(s.pick % lent.length, 1);
              const pooled = view.buffer.byteLength === POOLED_MESSAGE_BYTES &&
                view.length >= MIN_POOLED_MESSAGE_BYTES;
              // Any view into the buffer gives it back.
              pool.recycle(view.subarray(Math.min(17, view.length)));
              if (pooled && modelFree < MAX_FREE_BUFFERS) modelFree += 1;
              if (s.twice) pool.recycle(view);
              break;
            }
            case "foreign":
              pool.recycle(
                new Uint8Array(
                  new ArrayBuffer(POOLED_MESSAGE_BYTES),
                  0,
                  Math.min(s.length, POOLED_MESSAGE_BYTES),
                ),
              );
              break;
            case "clear":
              pool.clear();
              modelFree = 0;
              break;
          }
          assert.equal(pool.freeBuffers, modelFree);
          assert.ok(pool.freeBuffers <= MAX_FREE_BUFFERS);
          // What is still lent keeps its bytes, whatever was copied since.
          for (const { view, fill } of lent) assert.ok(view.every((b) => b === fill));
        }
      } finally {
        pool.clear();
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("message pool: an idle pool lets its free buffers go, a busy one keeps them", async () => {
  const pool = new MessagePool();
  const size = MIN_POOLED_MESSAGE_BYTES;
  const views = Array.from({ length: MAX_FREE_BUFFERS + 5 }, () => pool.copy(new Uint8Array(size)));
  for (const view of views) pool.recycle(view);
  assert.equal(pool.freeBuffers, MAX_FREE_BUFFERS);
  // Drawn from within every idle period: kept.
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, POOL_IDLE_MS / 2));
    pool.recycle(pool.copy(new Uint8Array(size)));
  }
  assert.equal(pool.freeBuffers, MAX_FREE_BUFFERS);
  await new Promise((resolve) => setTimeout(resolve, POOL_IDLE_MS * 2.5));
  assert.equal(pool.freeBuffers, 0);
  pool.clear();
});

Deno.test("message pool: a real WebSocket delivers more pooled messages than the pool keeps, each intact", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const messages = MAX_FREE_BUFFERS * 3;
  const size = POOLED_MESSAGE_BYTES - 100;
  const serverSide = (async () => {
    const conn = await listener.accept();
    const ws = new WebSocketConnection({ role: "server" });
    ws.attach(conn, new Uint8Array(), "");
    return ws;
  })();
  const clientConn = await Deno.connect({ hostname: "127.0.0.1", port });
  const client = new WebSocketConnection({ role: "client" });
  client.attach(clientConn, new Uint8Array(), "");
  const server = await serverSide;
  const received: Uint8Array[] = [];
  const all = new Promise<void>((resolve) => {
    server.onmessage = (event) => {
      received.push(event.data as Uint8Array);
      // Give back every other message at once, the rest only after all arrived: buffers cycle while others
      // are still held, and the held ones must not be written over.
      if (received.length % 2 === 0) server.recycle(event.data as Uint8Array);
      if (received.length === messages) resolve();
    };
  });
  for (let i = 0; i < messages; i++) client.send(new Uint8Array(size).fill(i));
  await all;
  for (let i = 1; i <= messages; i += 2) {
    const message = received[i - 1];
    assert.equal(message.length, size);
    assert.ok(message.every((b) => b === i - 1), `message ${i - 1} intact`);
  }
  client.close(1000);
  await new Promise((resolve) => (server.onclose = resolve));
  listener.close();
});
