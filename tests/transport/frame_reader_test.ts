/**
 * The frame reader alone, fed bytes in arbitrary pieces as a socket might deliver them: every message comes
 * out exactly once and intact, views delivered earlier are never written over, and each protocol violation
 * gets its close code.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  FrameReader,
  maskInPlace,
  OPCODE_BINARY,
  OPCODE_CONTINUATION,
  OPCODE_PING,
  OPCODE_TEXT,
  type ReaderEvent,
  SMALL_READS_BEFORE_SHRINK,
  type WebSocketRole,
} from "../../src/transport/frame_reader.ts";

/** One frame on the wire, masked with `key` when a client sends it (RFC 6455 §5.2). */
function encodeFrame(opcode: number, payload: Uint8Array, options: { fin?: boolean; key?: number } = {}) {
  const length = payload.length;
  const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const masked = options.key !== undefined;
  const out = new Uint8Array(2 + lengthBytes + (masked ? 4 : 0) + length);
  out[0] = (options.fin === false ? 0 : 0x80) | opcode;
  const maskBit = masked ? 0x80 : 0;
  let at = 2;
  if (lengthBytes === 0) out[1] = maskBit | length;
  else if (lengthBytes === 2) {
    out[1] = maskBit | 126;
    new DataView(out.buffer).setUint16(2, length);
    at = 4;
  } else {
    out[1] = maskBit | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(length));
    at = 10;
  }
  if (masked) {
    new DataView(out.buffer).setUint32(at, options.key!);
    at += 4;
  }
  out.set(payload, at);
  if (masked) maskInPlace(out, at, length, options.key!);
  return out;
}

/** Feeds `wire` in pieces of the given sizes (cycled) and collects every event but `more`. */
function readAll(reader: FrameReader, wire: Uint8Array, pieces: readonly number[]): ReaderEvent[] {
  const events: ReaderEvent[] = [];
  const drain = () => {
    for (let event = reader.next(); event.kind !== "more"; event = reader.next()) {
      // Control payloads are only valid until the next call: keep a copy, as the connection does.
      events.push(event.kind === "control" ? { ...event, payload: event.payload.slice() } : event);
      if (event.kind === "error") return;
    }
  };
  drain();
  for (let offset = 0, i = 0; offset < wire.length; i++) {
    const space = reader.space();
    const n = Math.min(space.length, pieces[i % pieces.length], wire.length - offset);
    space.set(wire.subarray(offset, offset + n));
    reader.commit(n);
    offset += n;
    drain();
  }
  return events;
}

const message = fc.record({
  text: fc.boolean(),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.integer({ min: 0, max: 70_000 }).map((n) => new Uint8Array(n).map((_, i) => (i * 13 + n) & 0xff)),
  ),
  // Split into this many fragments, with a ping between the first two.
  fragments: fc.integer({ min: 1, max: 3 }),
});

Deno.test("property: any messages, fragmented or not, read in any pieces, come out whole and stay intact", () => {
  fc.assert(
    fc.property(
      fc.array(message, { minLength: 1, maxLength: 60 }),
      fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 1, maxLength: 20 }),
      fc.constantFrom<WebSocketRole>("client", "server"),
      fc.integer({ min: 0, max: 0xffffffff }),
      (messages, pieces, role, key) => {
        // A server reads what clients send: masked frames; a client reads unmasked ones.
        const mask = role === "server" ? key : undefined;
        const frames: Uint8Array[] = [];
        for (const m of messages) {
          const payload = m.text ? new TextEncoder().encode(`text ${m.payload.length}`) : m.payload;
          const opcode = m.text ? OPCODE_TEXT : OPCODE_BINARY;
          const cut = Math.ceil(payload.length / m.fragments);
          for (let f = 0; f < m.fragments; f++) {
            const part = payload.subarray(f * cut, Math.min(payload.length, (f + 1) * cut));
            frames.push(
              encodeFrame(f === 0 ? opcode : OPCODE_CONTINUATION, part, {
                fin: f === m.fragments - 1,
                ...(mask === undefined ? {} : { key: mask }),
              }),
            );
            if (f === 0 && m.fragments > 1) {
              frames.push(
                encodeFrame(OPCODE_PING, new Uint8Array([7]), mask === undefined ? {} : { key: mask }),
              );
            }
          }
        }
        const wire = new Uint8Array(frames.reduce((sum, frame) => sum + frame.length, 0));
        frames.reduce((offset, frame) => (wire.set(frame, offset), offset + frame.length), 0);
        const events = readAll(new FrameReader(role, 1024 * 1024), wire, pieces);
        const delivered = events.filter((event) => event.kind === "message");
        const pings = events.filter((event) => event.kind === "control");
        assert.equal(events.some((event) => event.kind === "error"), false);
        assert.equal(pings.length, messages.filter((m) => m.fragments > 1).length);
        // Checked only now: a view written over by a later read would show here.
        assert.deepEqual(
          delivered.map((event) => event.kind === "message" ? [event.opcode, event.payload] : []),
          messages.map((m) =>
            m.text
              ? [OPCODE_TEXT, new TextEncoder().encode(`text ${m.payload.length}`)]
              : [OPCODE_BINARY, m.payload]
          ),
        );
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("each protocol violation is refused with its close code, at the frame that breaks the rule", () => {
  const cases: Array<[WebSocketRole, Uint8Array, number, RegExp]> = [
    ["server", encodeFrame(OPCODE_BINARY, new Uint8Array(3)), 1002, /unmasked/],
    ["client", encodeFrame(OPCODE_BINARY, new Uint8Array(3), { key: 1 }), 1002, /masked a frame/],
    ["client", encodeFrame(OPCODE_CONTINUATION, new Uint8Array(3)), 1002, /continuation without/],
    ["client", encodeFrame(OPCODE_PING, new Uint8Array(126)), 1002, /oversized control/],
    ["client", encodeFrame(0x3, new Uint8Array(1)), 1002, /unknown opcode 3/],
    ["client", encodeFrame(0xb, new Uint8Array(1)), 1002, /unknown control opcode 11/],
    ["client", encodeFrame(OPCODE_BINARY, new Uint8Array(1001)), 1009, /too big/],
    ["client", Uint8Array.of(0xc2, 0), 1002, /reserved bits/],
  ];
  for (const [role, wire, code, why] of cases) {
    const [event] = readAll(new FrameReader(role, 1000), wire, [wire.length]);
    assert.equal(event?.kind, "error", `${why}`);
    if (event?.kind !== "error") continue;
    assert.equal(event.code, code);
    assert.match(event.why, why);
  }
  // The size limit counts a fragmented message as a whole, and refuses it before its payload is buffered.
  const reader = new FrameReader("client", 1000);
  const wire = new Uint8Array([
    ...encodeFrame(OPCODE_BINARY, new Uint8Array(600), { fin: false }),
    ...encodeFrame(OPCODE_CONTINUATION, new Uint8Array(600)),
  ]);
  assert.deepEqual(readAll(reader, wire, [wire.length]).map((event) => event.kind), ["error"]);
  const header = encodeFrame(OPCODE_BINARY, new Uint8Array(16 * 1024 * 1024)).subarray(0, 10);
  assert.deepEqual(readAll(new FrameReader("client", 1000), header, [10]).map((e) => e.kind), ["error"]);
});

Deno.test("an idle reader holds a small buffer; a burst grows it to 128 KiB, a run of small reads gives it back", () => {
  const reader = new FrameReader("client", 1024 * 1024);
  assert.equal(reader.space().length, 4 * 1024);
  const frame = encodeFrame(OPCODE_BINARY, new Uint8Array(1000));
  const wire = new Uint8Array(frame.length * 1000);
  for (let i = 0; i < 1000; i++) wire.set(frame, i * frame.length);
  // Reads that fill the space they are given, as in a bulk transfer.
  const lengths: number[] = [];
  for (let offset = 0; offset + 200 * 1024 < wire.length;) {
    const space = reader.space();
    lengths.push(space.length + (reader.pendingBytes));
    space.set(wire.subarray(offset, offset + space.length));
    reader.commit(space.length);
    offset += space.length;
    while (reader.next().kind === "message");
  }
  assert.equal(Math.max(...lengths), 128 * 1024, `buffer sizes ${lengths.join(", ")}`);
  // Finish what is pending, then one small read of one whole frame: the buffer goes back to 4 KiB.
  while (reader.pendingBytes > 0) {
    const space = reader.space();
    const n = Math.min(space.length, frame.length - reader.pendingBytes);
    space.set(frame.subarray(frame.length - reader.pendingBytes - n, frame.length - reader.pendingBytes));
    reader.commit(n);
    while (reader.next().kind === "message");
  }
  // Small reads of one whole frame each: the buffer stays while they are fewer than the run, then goes back.
  const sizes: number[] = [];
  for (let i = 0; i < SMALL_READS_BEFORE_SHRINK; i++) {
    const space = reader.space();
    sizes.push(space.length);
    space.set(frame);
    reader.commit(frame.length);
    assert.equal(reader.next().kind, "message");
    assert.equal(reader.next().kind, "more");
  }
  // (The last read that finished the pending frame was small too, so it may count as the first of the run.)
  assert.deepEqual(sizes.slice(0, -1), Array(SMALL_READS_BEFORE_SHRINK - 1).fill(128 * 1024));
  assert.equal(reader.space().length, 4 * 1024);
});

Deno.test("fragments are charged for what they cost to keep: a message of empty fragments is refused, a whole one at the limit is not", () => {
  const limit = 32_785;
  const whole = encodeFrame(OPCODE_BINARY, new Uint8Array(limit));
  assert.deepEqual(readAll(new FrameReader("client", limit), whole, [whole.length]).map((e) => e.kind), [
    "message",
  ]);
  const empties = [encodeFrame(OPCODE_BINARY, new Uint8Array(0), { fin: false })];
  for (let i = 0; i < 1_000; i++) {
    empties.push(encodeFrame(OPCODE_CONTINUATION, new Uint8Array(0), { fin: false }));
  }
  const wire = new Uint8Array(empties.flatMap((frame) => [...frame]));
  const events = readAll(new FrameReader("client", limit), wire, [wire.length]);
  assert.deepEqual(events.map((e) => e.kind), ["error"]);
  assert.equal(events[0].kind === "error" && events[0].code, 1009);
});
