/**
 * The frame codec: exact wire bytes for the original's events, round trips for every control message and for
 * data frames of any id and size, and, over arbitrary bytes, a verdict and never a throw.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ControlMessage,
  DATA_HEADER_BYTES,
  decodeFrame,
  type DisconnectReason,
  encodeControlFrame,
  encodeDataFrame,
  FRAME_BATCH,
  FRAME_CONTROL,
  FRAME_DATA,
  MAX_BATCH_BYTES,
  MAX_BATCHED_MESSAGE_BYTES,
  MAX_CREDIT_GRANT,
  MAX_DATA_PAYLOAD_BYTES,
  MAX_MESSAGE_BYTES,
  STREAM_ID_BYTES,
  streamIdBytes,
  streamIdText,
  type StreamOpenInfo,
} from "../../src/protocol/frames.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ID = "3f0c1a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";
const KINDS = new Set(["data", "control", "batch", "ignored", "invalid"]);
const OPEN_INFO: StreamOpenInfo = {
  hostname: "app.example.com",
  port: 443,
  clientAddress: "203.0.113.7:52144",
  isTls: true,
};
/** Bounded runs: each property takes well under a few seconds. */
const RUNS = { numRuns: 300 };

function control(json: unknown): Uint8Array {
  const body = encoder.encode(typeof json === "string" ? json : JSON.stringify(json));
  const frame = new Uint8Array(1 + body.length);
  frame[0] = FRAME_CONTROL;
  frame.set(body, 1);
  return frame;
}

function wireJson(message: ControlMessage): string {
  const frame = encodeControlFrame(message);
  assert.equal(frame[0], FRAME_CONTROL);
  return decoder.decode(frame.subarray(1));
}

// ---------------------------------------------------------------------------------------------------------
// Exact wire form

Deno.test("control frames use the original's event names, field names and field order (§3.1)", () => {
  const info: StreamOpenInfo = {
    hostname: "app.example.com",
    port: 443,
    clientAddress: "203.0.113.7:52144",
    isTls: true,
  };
  assert.equal(
    wireJson({ type: "open", id: ID, info, credits: 64 }),
    `{"event":"connect","client_id":"${ID}","conn_port":443,"client_ip":"203.0.113.7:52144",` +
      `"transport":"tcp","hostname":"app.example.com","is_tls":true,"credits":64}`,
  );
  assert.equal(
    wireJson({ type: "open", id: ID, info: { ...info, isTls: false } }),
    `{"event":"connect","client_id":"${ID}","conn_port":443,"client_ip":"203.0.113.7:52144",` +
      `"transport":"tcp","hostname":"app.example.com"}`,
  );
  // Our extension comes after every field of the original, which stay exactly as the original writes them.
  assert.equal(
    wireJson({ type: "open", id: ID, info: { ...info, relayAddress: "198.51.100.1:443" }, credits: 64 }),
    `{"event":"connect","client_id":"${ID}","conn_port":443,"client_ip":"203.0.113.7:52144",` +
      `"transport":"tcp","hostname":"app.example.com","is_tls":true,"credits":64,` +
      `"relay_addr":"198.51.100.1:443"}`,
  );
  assert.equal(wireJson({ type: "close", id: ID }), `{"event":"disconnect","client_id":"${ID}"}`);
  assert.equal(
    wireJson({ type: "close", id: ID, reason: "buffer_full" }),
    `{"event":"disconnect","client_id":"${ID}","reason":"buffer_full"}`,
  );
  assert.equal(wireJson({ type: "ping_stream", id: ID }), `{"event":"ping_client","client_id":"${ID}"}`);
  assert.equal(wireJson({ type: "pong_stream", id: ID }), `{"event":"pong_client","client_id":"${ID}"}`);
  assert.equal(
    wireJson({ type: "pause", id: ID }),
    `{"event":"pause_stream","client_id":"${ID}","reason":"buffer_full"}`,
  );
  assert.equal(wireJson({ type: "resume", id: ID }), `{"event":"resume_stream","client_id":"${ID}"}`);
  assert.equal(
    wireJson({ type: "resume", id: ID, credits: 8 }),
    `{"event":"resume_stream","client_id":"${ID}","credits":8}`,
  );
  assert.equal(wireJson({ type: "close_write", id: ID }), `{"event":"close_write","client_id":"${ID}"}`);
  assert.equal(wireJson({ type: "ping" }), `{"event":"ping"}`);
  assert.equal(wireJson({ type: "pong" }), `{"event":"pong"}`);
  assert.equal(wireJson({ type: "drain" }), `{"event":"drain"}`);
  assert.equal(
    wireJson({ type: "announce", version: 3, routes: ["a.example.com", "*.b.example.com"] }),
    `{"event":"announce","version":3,"routes":["a.example.com","*.b.example.com"]}`,
  );
  assert.equal(
    wireJson({ type: "announce", version: 3, routes: ["a.example.com"], more: true }),
    `{"event":"announce","version":3,"routes":["a.example.com"],"more":true}`,
  );
});

Deno.test("a data frame is 0x01, the 16 raw id bytes in text order, then the payload (§2.1, §2.2)", () => {
  const frame = encodeDataFrame(streamIdBytes(ID), Uint8Array.of(0xaa, 0xbb));
  assert.deepEqual(
    frame,
    Uint8Array.of(
      FRAME_DATA,
      ...[0x3f, 0x0c, 0x1a, 0x2b, 0x4c, 0x5d, 0x4e, 0x6f, 0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b],
      0xaa,
      0xbb,
    ),
  );
  assert.deepEqual(decodeFrame(frame), { kind: "data", id: ID, payload: Uint8Array.of(0xaa, 0xbb) });
});

Deno.test("what the original's client sends decodes, with its extra fields ignored and upper-case ids folded", () => {
  assert.deepEqual(
    decodeFrame(control({ event: "disconnect", client_id: ID.toUpperCase(), reason: "normal", extra: [1] })),
    { kind: "control", message: { type: "close", id: ID, reason: "normal" } },
  );
  // An unknown reason is not an error: the close still counts, without a reason.
  assert.deepEqual(decodeFrame(control({ event: "disconnect", client_id: ID, reason: "tired" })), {
    kind: "control",
    message: { type: "close", id: ID },
  });
  assert.deepEqual(decodeFrame(control({ event: "pause_stream", client_id: ID, reason: "buffer_full" })), {
    kind: "control",
    message: { type: "pause", id: ID },
  });
  // Credits 0 mean "no credits" (§5.2): a plain resume.
  assert.deepEqual(decodeFrame(control({ event: "resume_stream", client_id: ID, credits: 0 })), {
    kind: "control",
    message: { type: "resume", id: ID },
  });
  // Unknown events are ignored, not refused (§3.1).
  assert.deepEqual(decodeFrame(control({ event: "outbound_connect", client_id: ID })), {
    kind: "ignored",
    reason: 'unsupported event "outbound_connect"',
  });
});

// ---------------------------------------------------------------------------------------------------------
// Bad frames: exact verdicts

Deno.test("each malformed frame gets its exact verdict", () => {
  const cases: Array<[string, Uint8Array, ReturnType<typeof decodeFrame>]> = [
    ["empty message", new Uint8Array(0), { kind: "ignored", reason: "empty message" }],
    ["unknown type byte", Uint8Array.of(0x11, 1, 2), { kind: "ignored", reason: "unknown frame type 0x11" }],
    ["short data frame", new Uint8Array(DATA_HEADER_BYTES - 1).fill(FRAME_DATA), {
      kind: "invalid",
      reason: "data frame shorter than its header",
    }],
    ["too big", new Uint8Array(MAX_MESSAGE_BYTES + 1).fill(FRAME_DATA), {
      kind: "invalid",
      reason: `message of ${MAX_MESSAGE_BYTES + 1} bytes exceeds ${MAX_MESSAGE_BYTES}`,
    }],
    ["not JSON", control("{nope"), { kind: "invalid", reason: "control frame is not UTF-8 JSON" }],
    ["not UTF-8", Uint8Array.of(FRAME_CONTROL, 0xff, 0xfe), {
      kind: "invalid",
      reason: "control frame is not UTF-8 JSON",
    }],
    ["an array", control([1, 2]), { kind: "invalid", reason: "control frame is not a JSON object" }],
    ["null", control(null), { kind: "invalid", reason: "control frame is not a JSON object" }],
    ["no event", control({ client_id: ID }), { kind: "invalid", reason: "control frame has no event name" }],
    ["numeric event", control({ event: 7 }), { kind: "invalid", reason: "control frame has no event name" }],
    ["bad id", control({ event: "disconnect", client_id: "123" }), {
      kind: "invalid",
      reason: "disconnect: client_id is not a UUID",
    }],
    ["no id", control({ event: "pause_stream" }), {
      kind: "invalid",
      reason: "pause_stream: client_id is not a UUID",
    }],
    ["negative credits", control({ event: "resume_stream", client_id: ID, credits: -1 }), {
      kind: "invalid",
      reason: "resume_stream: credits is not a non-negative integer",
    }],
    ["fractional credits", control({ event: "resume_stream", client_id: ID, credits: 1.5 }), {
      kind: "invalid",
      reason: "resume_stream: credits is not a non-negative integer",
    }],
    ["string credits", control({ event: "connect", client_id: ID, credits: "64" }), {
      kind: "invalid",
      reason: "connect: credits is not a non-negative integer",
    }],
    [
      "udp",
      control({ event: "connect", client_id: ID, transport: "udp", hostname: "udp:53", conn_port: 53 }),
      {
        kind: "invalid",
        reason: 'connect: transport "udp" is not supported',
      },
    ],
    ["no hostname", control({ event: "connect", client_id: ID, conn_port: 443 }), {
      kind: "invalid",
      reason: "connect: hostname missing",
    }],
    [
      "long hostname",
      control({ event: "connect", client_id: ID, conn_port: 443, hostname: "a".repeat(256) }),
      {
        kind: "invalid",
        reason: "connect: hostname missing",
      },
    ],
    ["port 443.5", control({ event: "connect", client_id: ID, conn_port: 443.5, hostname: "a.b" }), {
      kind: "invalid",
      reason: "connect: conn_port is not a port number",
    }],
    ["port 65536", control({ event: "connect", client_id: ID, conn_port: 65536, hostname: "a.b" }), {
      kind: "invalid",
      reason: "connect: conn_port is not a port number",
    }],
    [
      "numeric client_ip",
      control({ event: "connect", client_id: ID, conn_port: 1, hostname: "a.b", client_ip: 1 }),
      {
        kind: "invalid",
        reason: "connect: client_ip is not an address",
      },
    ],
    [
      "numeric relay_addr",
      control({ event: "connect", client_id: ID, conn_port: 1, hostname: "a.b", relay_addr: 443 }),
      {
        kind: "invalid",
        reason: "connect: relay_addr is not an address",
      },
    ],
    [
      "string is_tls",
      control({ event: "connect", client_id: ID, conn_port: 1, hostname: "a.b", is_tls: "yes" }),
      {
        kind: "invalid",
        reason: "connect: is_tls is not a boolean",
      },
    ],
    ["negative version", control({ event: "announce", version: -1, routes: [] }), {
      kind: "invalid",
      reason: "announce: version is not a non-negative integer",
    }],
    ["routes with a number", control({ event: "announce", version: 1, routes: ["a.b", 3] }), {
      kind: "invalid",
      reason: "announce: routes is not a list of names",
    }],
    ["more not a boolean", control({ event: "announce", version: 1, routes: [], more: 1 }), {
      kind: "invalid",
      reason: "announce: more is not a boolean",
    }],
  ];
  for (const [name, bytes, expected] of cases) assert.deepEqual(decodeFrame(bytes), expected, name);
});

Deno.test("a grant above 2^20 is clamped, never trusted (§2.5)", () => {
  assert.deepEqual(decodeFrame(control({ event: "resume_stream", client_id: ID, credits: 2 ** 40 })), {
    kind: "control",
    message: { type: "resume", id: ID, credits: MAX_CREDIT_GRANT },
  });
});

Deno.test("a payload over 32 KiB is refused by the encoder; exactly 32 KiB is the largest frame either end accepts", () => {
  const id = streamIdBytes(ID);
  assert.throws(
    () => encodeDataFrame(id, new Uint8Array(MAX_DATA_PAYLOAD_BYTES + 1)),
    new RangeError(`Data payload of ${MAX_DATA_PAYLOAD_BYTES + 1} bytes exceeds ${MAX_DATA_PAYLOAD_BYTES}`),
  );
  const largest = encodeDataFrame(id, new Uint8Array(MAX_DATA_PAYLOAD_BYTES));
  assert.equal(largest.length, MAX_MESSAGE_BYTES);
  assert.equal(decodeFrame(largest).kind, "data");
});

// ---------------------------------------------------------------------------------------------------------
// Properties

const streamId = fc.uuid().map((id) => id.toLowerCase());
const credits = fc.integer({ min: 1, max: MAX_CREDIT_GRANT });
const reason = fc.constantFrom<DisconnectReason>(
  "normal",
  "buffer_full",
  "dial_failed",
  "timeout",
  "local_error",
  "shutdown",
  "session_ended",
  "pause_violated",
  "unknown",
);
const openInfo: fc.Arbitrary<StreamOpenInfo> = fc.record({
  hostname: fc.string({ minLength: 1, maxLength: 255 }),
  port: fc.integer({ min: 0, max: 65_535 }),
  clientAddress: fc.string({ maxLength: 64 }),
  isTls: fc.boolean(),
});

/** Every control message the codec knows, with arbitrary field values in their valid ranges. */
const controlMessage: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({ type: fc.constant("open" as const), id: streamId, info: openInfo, credits }),
  fc.record({ type: fc.constant("open" as const), id: streamId, info: openInfo }),
  fc.record({ type: fc.constant("close" as const), id: streamId, reason }),
  fc.record({ type: fc.constant("close" as const), id: streamId }),
  fc.record({ type: fc.constant("close_write" as const), id: streamId }),
  fc.record({ type: fc.constant("ping_stream" as const), id: streamId }),
  fc.record({ type: fc.constant("pong_stream" as const), id: streamId }),
  fc.record({ type: fc.constant("pause" as const), id: streamId }),
  fc.record({ type: fc.constant("resume" as const), id: streamId, credits }),
  fc.record({ type: fc.constant("resume" as const), id: streamId }),
  fc.constant({ type: "ping" as const }),
  fc.constant({ type: "pong" as const }),
  fc.constant({ type: "drain" as const }),
  fc.record({
    type: fc.constant("announce" as const),
    version: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    routes: fc.array(fc.string({ maxLength: 40 }), { maxLength: 50 }),
  }),
  fc.record({
    type: fc.constant("announce" as const),
    version: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    routes: fc.array(fc.string({ maxLength: 40 }), { maxLength: 50 }),
    more: fc.constant(true),
  }),
);

Deno.test("property: every control message round trips through the codec unchanged", () => {
  fc.assert(
    fc.property(controlMessage, (message) => {
      // fast-check builds records without a prototype; the decoder builds plain objects.
      assert.deepEqual(decodeFrame(encodeControlFrame(message)), {
        kind: "control",
        message: structuredClone(message),
      });
    }),
    RUNS,
  );
});

Deno.test("property: data frames with any id and any payload up to 32 KiB round trip", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: STREAM_ID_BYTES, maxLength: STREAM_ID_BYTES }),
      fc.oneof(
        fc.uint8Array({ maxLength: 512 }),
        fc.integer({ min: 0, max: MAX_DATA_PAYLOAD_BYTES }).map((n) => new Uint8Array(n).fill(n & 0xff)),
      ),
      (idBytes, payload) => {
        const frame = encodeDataFrame(idBytes, payload);
        assert.equal(frame.length, DATA_HEADER_BYTES + payload.length);
        const decoded = decodeFrame(frame);
        assert.deepEqual(decoded, { kind: "data", id: streamIdText(idBytes), payload });
        if (decoded.kind === "data") assert.deepEqual(streamIdBytes(decoded.id), idBytes);
      },
    ),
    RUNS,
  );
});

Deno.test("property: arbitrary bytes never make decodeFrame throw, and give one of its kinds", () => {
  const check = (bytes: Uint8Array) => {
    const frame = decodeFrame(bytes);
    assert.ok(KINDS.has(frame.kind), frame.kind);
    if (frame.kind === "ignored" || frame.kind === "invalid") assert.equal(typeof frame.reason, "string");
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2_000 }), check), { numRuns: 1_000 });
  // Control frames of random bytes, of random JSON, and of JSON objects with real event names and random
  // field values: the parts a hostile peer controls.
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 500 }), (body) => check(Uint8Array.of(FRAME_CONTROL, ...body))),
    { numRuns: 1_000 },
  );
  fc.assert(fc.property(fc.json(), (json) => check(control(json))), { numRuns: 1_000 });
  const event = fc.constantFrom(
    "connect",
    "disconnect",
    "close_write",
    "ping_client",
    "pong_client",
    "pause_stream",
    "resume_stream",
    "ping",
    "pong",
    "drain",
    "announce",
  );
  const anyValue = fc.oneof(fc.jsonValue(), streamId, fc.constant(undefined));
  fc.assert(
    fc.property(
      fc.record(
        {
          event,
          client_id: anyValue,
          conn_port: anyValue,
          client_ip: anyValue,
          transport: anyValue,
          hostname: anyValue,
          is_tls: anyValue,
          relay_addr: anyValue,
          reason: anyValue,
          credits: anyValue,
          version: anyValue,
          routes: anyValue,
        },
        { requiredKeys: ["event"] },
      ),
      (fields) => check(control(fields)),
    ),
    { numRuns: 2_000 },
  );
  // Deep nesting and a whole frame of brackets.
  check(control("[".repeat(MAX_MESSAGE_BYTES - 1)));
  check(control(`{"event":"announce","version":1,"routes":${"[".repeat(30_000)}${"]".repeat(30_000)}}`));
});

Deno.test("property: a decoded control message re-encodes to a frame that decodes to itself", () => {
  // Whatever a peer sends that we accept, we can also say, and it means the same (no lossy fields).
  const event = fc.constantFrom("connect", "disconnect", "resume_stream", "pause_stream", "announce");
  fc.assert(
    fc.property(
      fc.record({
        event,
        client_id: fc.oneof(streamId, streamId.map((id) => id.toUpperCase())),
        conn_port: fc.integer({ min: -1, max: 70_000 }),
        hostname: fc.string({ maxLength: 300 }),
        client_ip: fc.option(fc.string({ maxLength: 70 }), { nil: undefined }),
        is_tls: fc.option(fc.boolean(), { nil: undefined }),
        relay_addr: fc.option(fc.string({ maxLength: 70 }), { nil: undefined }),
        credits: fc.option(fc.integer({ min: -2, max: 2 ** 22 }), { nil: undefined }),
        reason: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
        version: fc.integer({ min: -1, max: 1_000 }),
        routes: fc.array(fc.string({ maxLength: 10 }), { maxLength: 5 }),
      }),
      (fields) => {
        const decoded = decodeFrame(control(fields));
        if (decoded.kind !== "control") return;
        assert.deepEqual(decodeFrame(encodeControlFrame(decoded.message)), decoded);
      },
    ),
    { numRuns: 1_000 },
  );
});

/** A batch as our earlier versions sent it (0x03, then each frame after its 4-byte big-endian length). */
function batchOf(frames: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(1 + frames.reduce((bytes, frame) => bytes + 4 + frame.length, 0));
  const view = new DataView(out.buffer);
  out[0] = FRAME_BATCH;
  let at = 1;
  for (const frame of frames) {
    view.setUint32(at, frame.length);
    out.set(frame, at + 4);
    at += 4 + frame.length;
  }
  return out;
}

Deno.test("a batch from an earlier version splits into its frames, in order, as views", () => {
  const id = streamIdBytes(ID);
  const big = new Uint8Array(MAX_DATA_PAYLOAD_BYTES).fill(7);
  const decoded = decodeFrame(batchOf([
    encodeControlFrame({ type: "open", id: ID, info: OPEN_INFO, credits: 64 }),
    encodeDataFrame(id, big),
    encodeControlFrame({ type: "close", id: ID, reason: "normal" }),
  ]));
  assert.equal(decoded.kind, "batch");
  if (decoded.kind !== "batch") return;
  assert.deepEqual(decoded.frames.map((frame) => decodeFrame(frame)), [
    { kind: "control", message: { type: "open", id: ID, info: OPEN_INFO, credits: 64 } },
    { kind: "data", id: ID, payload: big },
    { kind: "control", message: { type: "close", id: ID, reason: "normal" } },
  ]);
});

Deno.test("hostile batches are invalid: lying lengths, a zero length, a batch inside a batch, oversize", () => {
  const frame = encodeDataFrame(streamIdBytes(ID), new Uint8Array([9]));
  const withLength = (length: number, body: Uint8Array) => {
    const out = new Uint8Array(5 + body.length);
    out[0] = FRAME_BATCH;
    new DataView(out.buffer).setUint32(1, length);
    out.set(body, 5);
    return out;
  };
  const reasons = [
    withLength(frame.length + 1, frame),
    withLength(0, frame),
    Uint8Array.of(FRAME_BATCH, 0, 0),
    withLength(6, Uint8Array.of(FRAME_BATCH, 0, 0, 0, 1, 1)),
    new Uint8Array(MAX_BATCHED_MESSAGE_BYTES + 1).fill(FRAME_BATCH, 0, 1),
  ].map((message) => {
    const decoded = decodeFrame(message);
    assert.equal(decoded.kind, "invalid");
    return decoded.kind === "invalid" ? decoded.reason : "";
  });
  assert.deepEqual(reasons, [
    "batch frame length is zero or runs past the message",
    "batch frame length is zero or runs past the message",
    "batch ends inside a frame length",
    "batch inside a batch",
    `batch of ${MAX_BATCHED_MESSAGE_BYTES + 1} bytes exceeds ${MAX_BATCHED_MESSAGE_BYTES}`,
  ]);
  assert.deepEqual(decodeFrame(Uint8Array.of(FRAME_BATCH)), { kind: "batch", frames: [] });
});

Deno.test("property: any mix of data and control frames, batched, decodes exactly as sent, up to the cap", () => {
  const frameArbitrary = fc.oneof(
    fc.record({
      kind: fc.constant("data" as const),
      id: streamId,
      payload: fc.uint8Array({ maxLength: 4_000 }),
    }),
    fc.record({ kind: fc.constant("control" as const), message: controlMessage }),
  );
  fc.assert(
    fc.property(fc.array(frameArbitrary, { minLength: 1, maxLength: 200 }), (frames) => {
      const decoded = decodeFrame(
        batchOf(
          frames.map((frame) =>
            frame.kind === "data"
              ? encodeDataFrame(streamIdBytes(frame.id), frame.payload)
              : encodeControlFrame(frame.message)
          ),
        ),
      );
      assert.equal(decoded.kind, "batch");
      if (decoded.kind !== "batch") return;
      assert.deepEqual(
        decoded.frames.map((frame) => decodeFrame(frame)),
        frames.map((frame) =>
          frame.kind === "data"
            ? { kind: "data", id: frame.id, payload: frame.payload }
            : { kind: "control", message: decodeControlOf(frame.message) }
        ),
      );
    }),
    { numRuns: 200 },
  );
  // The largest batch those senders built, with the frame that started it, is accepted.
  assert.ok(MAX_BATCHED_MESSAGE_BYTES >= MAX_BATCH_BYTES + MAX_MESSAGE_BYTES);
  const full = batchOf(
    Array.from(
      { length: Math.floor(MAX_BATCH_BYTES / (MAX_MESSAGE_BYTES + 4)) + 1 },
      () => encodeDataFrame(streamIdBytes(ID), new Uint8Array(MAX_DATA_PAYLOAD_BYTES)),
    ),
  );
  assert.ok(full.length <= MAX_BATCHED_MESSAGE_BYTES);
  assert.equal(decodeFrame(full).kind, "batch");
});

/** What a control message decodes to after a round trip (the codec drops absent optional fields the same way). */
function decodeControlOf(message: ControlMessage): ControlMessage {
  const decoded = decodeFrame(encodeControlFrame(message));
  return decoded.kind === "control"
    ? decoded.message
    : assert.fail(`control did not round trip: ${decoded.kind}`);
}
