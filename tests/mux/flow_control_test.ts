/**
 * Flow control: the credit primitive's exact arithmetic, then sessions and streams over a real WebSocket on
 * loopback, checked frame by frame with a hand-driven peer where the wire order matters.
 */

import { NEXUS_MUX, ORIGINAL } from "../../src/mux/dialect.ts";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  byteCappedReceiveLimits,
  creditReceiveLimits,
  ReceiveWindow,
  replenishBatchFrames,
  SendWindow,
  StreamClosedError,
  WindowStallCounter,
} from "../../src/mux/flow_control.ts";
import { MuxSession } from "../../src/mux/session.ts";
import type { MuxStream } from "../../src/mux/stream.ts";
import {
  CREDIT_REPLENISH_BATCH,
  INITIAL_STREAM_CREDITS,
  MAX_CREDIT_GRANT,
  MAX_DATA_PAYLOAD_BYTES,
  newStreamId,
} from "../../src/protocol/frames.ts";
import { PeerGoneError } from "../../src/stream/duplex.ts";
import { withTimeout } from "../helpers/cluster.ts";
import { readExactly, readToEnd, writeUntilHeldBack } from "../helpers/duplex_conformance.ts";
import { patternBytes, sha256Hex } from "../helpers/services.ts";
import {
  openSessionPair,
  openWebSocketPair,
  RawPeer,
  sessionOptions,
  TEST_OPEN_INFO,
  whenClosed,
} from "../helpers/ws_pair.ts";

/** Whether a promise has settled, checked after the microtasks queued so far have run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => (done = true), () => (done = true));
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

// ---------------------------------------------------------------------------------------------------------
// SendWindow

Deno.test("SendWindow: exactly the granted frames may be sent, then the sender waits", async () => {
  const window = new SendWindow(INITIAL_STREAM_CREDITS, new WindowStallCounter());
  for (let i = 0; i < INITIAL_STREAM_CREDITS; i++) assert.equal(window.tryTake(), true, `credit ${i + 1}`);
  assert.equal(window.credits, 0);
  assert.equal(window.tryTake(), false);
  const waiting = window.take();
  assert.equal(await settled(waiting), false);
  window.grant(CREDIT_REPLENISH_BATCH, INITIAL_STREAM_CREDITS);
  await waiting;
  // The waiter took one of the eight.
  assert.equal(window.credits, CREDIT_REPLENISH_BATCH - 1);
});

Deno.test("SendWindow: grants are floored, negative ones ignored, and the total clamped at 2^20", () => {
  const window = new SendWindow(10, new WindowStallCounter());
  window.grant(3.9, INITIAL_STREAM_CREDITS);
  assert.equal(window.credits, 13);
  window.grant(-5, INITIAL_STREAM_CREDITS);
  assert.equal(window.credits, 13);
  window.grant(2 ** 40, INITIAL_STREAM_CREDITS);
  assert.equal(window.credits, MAX_CREDIT_GRANT);
  window.grant(1, INITIAL_STREAM_CREDITS);
  assert.equal(window.credits, MAX_CREDIT_GRANT);
});

Deno.test("SendWindow: a peer without credits is unlimited until its first grant, then counted with a full window less what was sent", () => {
  const window = new SendWindow(Infinity, new WindowStallCounter());
  for (let i = 0; i < 10; i++) assert.equal(window.tryTake(), true);
  assert.equal(window.credits, Infinity);
  // A first grant smaller than the window still gives the whole initial window (§7.3), and the ten frames
  // sent before it count: the peer granted on the connect, before they reached it.
  window.grant(CREDIT_REPLENISH_BATCH, INITIAL_STREAM_CREDITS);
  assert.equal(window.credits, INITIAL_STREAM_CREDITS - 10);
  const flooded = new SendWindow(Infinity, new WindowStallCounter());
  for (let i = 0; i < 10_000; i++) assert.equal(flooded.tryTake(), true);
  flooded.grant(CREDIT_REPLENISH_BATCH, INITIAL_STREAM_CREDITS);
  assert.equal(flooded.credits, INITIAL_STREAM_CREDITS - 10_000, "overdrawn: grants pay it back first");
  assert.equal(flooded.tryTake(), false);

  const generous = new SendWindow(Infinity, new WindowStallCounter());
  generous.grant(1_000, INITIAL_STREAM_CREDITS);
  assert.equal(generous.credits, 1_000);
  const absurd = new SendWindow(Infinity, new WindowStallCounter());
  absurd.grant(2 ** 53, INITIAL_STREAM_CREDITS);
  assert.equal(absurd.credits, MAX_CREDIT_GRANT);
});

Deno.test("SendWindow: pause holds the sender even with credits; resume lets it go", async () => {
  const window = new SendWindow(Infinity, new WindowStallCounter());
  window.pause();
  assert.equal(window.tryTake(), false);
  const waiting = window.take();
  assert.equal(await settled(waiting), false);
  // A grant while paused does not release the sender: pause wins until resume.
  window.grant(CREDIT_REPLENISH_BATCH, INITIAL_STREAM_CREDITS);
  assert.equal(await settled(waiting), false);
  window.resume();
  await waiting;
  assert.equal(window.credits, INITIAL_STREAM_CREDITS - 1);
});

Deno.test("SendWindow: close wakes the waiting sender with the reason, and every later take fails", async () => {
  const window = new SendWindow(0, new WindowStallCounter());
  const waiting = window.take();
  window.close("peer closed the stream");
  await assert.rejects(waiting, new StreamClosedError("peer closed the stream"));
  await assert.rejects(window.take(), StreamClosedError);
  assert.equal(window.tryTake(), false);
  window.grant(10, INITIAL_STREAM_CREDITS);
  assert.equal(window.tryTake(), false);
  // Idempotent: the first reason stays.
  window.close("second");
  await assert.rejects(window.take(), new StreamClosedError("peer closed the stream"));
});

Deno.test("SendWindow: each wait for credits counts once, in its own counter only", async () => {
  const stallsA = new WindowStallCounter();
  const stallsB = new WindowStallCounter();
  const a = new SendWindow(1, stallsA);
  const b = new SendWindow(0, stallsB);
  await a.take();
  assert.equal(stallsA.count, 0, "a credit at hand is no wait");
  const waitingA = a.take();
  const waitingB = b.take();
  assert.equal(a.tryTake(), false, "a failed tryTake is no wait either");
  assert.deepEqual([stallsA.count, stallsB.count], [1, 1]);
  a.grant(1, INITIAL_STREAM_CREDITS);
  b.grant(1, INITIAL_STREAM_CREDITS);
  await Promise.all([waitingA, waitingB]);
  const again = a.take();
  a.close("done");
  await assert.rejects(again, StreamClosedError);
  assert.deepEqual([stallsA.count, stallsB.count], [2, 1]);
});

// ---------------------------------------------------------------------------------------------------------
// ReceiveWindow

Deno.test("ReceiveWindow: credits go back in batches of 8 consumed frames, never fewer", () => {
  const window = new ReceiveWindow(creditReceiveLimits(INITIAL_STREAM_CREDITS));
  for (let i = 0; i < 20; i++) assert.equal(window.arrive(1_000), true);
  assert.equal(window.bufferedFrames, 20);
  assert.equal(window.bufferedBytes, 20_000);
  const grants = Array.from({ length: 20 }, () => window.consume(1_000));
  assert.deepEqual(grants, [0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]);
  assert.equal(window.bufferedFrames, 0);
  assert.equal(window.bufferedBytes, 0);
});

Deno.test("replenish batches: 8 frames, but never more than half the window and never fewer than one", () => {
  const batches = [1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 64, 2 ** 20].map((window) =>
    replenishBatchFrames(window)
  );
  assert.deepEqual(batches, [1, 1, 1, 2, 2, 3, 3, 4, 7, 8, 8, 8, 8]);
  // Windows the budget hands out once it is spent (2 frames) return every frame at once.
  const small = new ReceiveWindow(creditReceiveLimits(2));
  assert.deepEqual([small.arrive(1), small.arrive(1)], [true, true]);
  assert.deepEqual([small.consume(1), small.consume(1)], [1, 1]);
  assert.equal(byteCappedReceiveLimits(100).replenishBatchFrames, CREDIT_REPLENISH_BATCH);
});

Deno.test("ReceiveWindow: overflows on the first frame past either limit", () => {
  const frames = new ReceiveWindow({ replenishBatchFrames: 1, maxFrames: 3, maxBytes: Infinity });
  assert.deepEqual([1, 2, 3, 4].map(() => frames.arrive(10)), [true, true, true, false]);
  const bytes = new ReceiveWindow(byteCappedReceiveLimits(100));
  assert.deepEqual([bytes.arrive(60), bytes.arrive(40), bytes.arrive(1)], [true, true, false]);
  // Consuming makes room again.
  const again = new ReceiveWindow({ replenishBatchFrames: 1, maxFrames: 1, maxBytes: Infinity });
  assert.equal(again.arrive(5), true);
  again.consume(5);
  assert.equal(again.arrive(5), true);
});

/** A small deterministic PRNG (mulberry32), so that a failing schedule is reproduced from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

Deno.test("property: a sender and a receiver move every frame for any window, batch cap, frame sizes and reader pace", () => {
  fc.assert(
    fc.property(
      fc.record({
        windowFrames: fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 256 })),
        maxBatchFrames: fc.integer({ min: 1, max: 64 }),
        frameBytes: fc.array(fc.integer({ min: 1, max: MAX_DATA_PAYLOAD_BYTES }), { maxLength: 300 }),
        // How eagerly the reader takes what arrived, and how the network interleaves: a seeded schedule.
        readerPace: fc.double({ min: 0.01, max: 1, noNaN: true }),
        seed: fc.integer(),
      }),
      ({ windowFrames, maxBatchFrames, frameBytes, readerPace, seed }) => {
        const random = prng(seed);
        const sender = new SendWindow(windowFrames, new WindowStallCounter());
        const receiver = new ReceiveWindow(creditReceiveLimits(windowFrames, maxBatchFrames));
        const toReceiver: number[] = [];
        const toSender: number[] = [];
        const buffered: number[] = [];
        let sent = 0;
        let read = 0;
        let creditsBack = 0;
        let bytesRead = 0;
        for (let step = 0; read < frameBytes.length; step++) {
          assert.ok(
            step < 100 * (frameBytes.length + 10),
            "the transfer ends within a bounded number of steps",
          );
          const actions: Array<() => void> = [];
          if (sent < frameBytes.length && sender.credits > 0) {
            actions.push(() => {
              assert.equal(sender.tryTake(), true);
              toReceiver.push(frameBytes[sent++]);
            });
          }
          if (toReceiver.length > 0) {
            actions.push(() => {
              const bytes = toReceiver.shift()!;
              assert.equal(receiver.arrive(bytes), true, "a sender that honours credits never overflows");
              buffered.push(bytes);
            });
          }
          if (toSender.length > 0) {
            actions.push(() => {
              const credits = toSender.shift()!;
              creditsBack += credits;
              sender.grant(credits, windowFrames);
            });
          }
          if (buffered.length > 0) {
            const consume = () => {
              const bytes = buffered.shift()!;
              bytesRead += bytes;
              read += 1;
              const grant = receiver.consume(bytes);
              if (grant > 0) toSender.push(grant);
            };
            // A slow reader is often not ready; when nothing else can happen it is the only way on.
            if (random() < readerPace || actions.length === 0) actions.push(consume);
          }
          assert.ok(
            actions.length > 0,
            `deadlock: ${sent} of ${frameBytes.length} sent, ${read} read, sender credits ${sender.credits}`,
          );
          actions[Math.floor(random() * actions.length)]();
          // Never more in flight or buffered than the window granted.
          assert.ok(sent - creditsBack <= windowFrames, "more frames outstanding than granted");
          assert.ok(receiver.bufferedFrames <= windowFrames);
          assert.equal(receiver.bufferedFrames, buffered.length);
        }
        assert.equal(bytesRead, frameBytes.reduce((sum, bytes) => sum + bytes, 0));
      },
    ),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------------------
// Sessions and streams on a real WebSocket

Deno.test("session: connect goes on the wire before the first data, and disconnect after the last", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const session = new MuxSession(sockets.client, sessionOptions());
  try {
    const stream = session.openStream(TEST_OPEN_INFO)!;
    await stream.write(patternBytes(MAX_DATA_PAYLOAD_BYTES * 2 + 5, 1));
    await stream.close("done", { graceful: true });
    await peer.waitFor(() => peer.received.length === 5, "connect, three data frames, disconnect");
    const kinds = peer.received.map((f) => f.kind === "control" ? f.message.type : f.kind);
    assert.deepEqual(kinds, ["open", "data", "data", "data", "close"]);
    assert.deepEqual(peer.received[0], {
      kind: "control",
      message: { type: "open", id: stream.id, info: TEST_OPEN_INFO, credits: INITIAL_STREAM_CREDITS },
    });
    const sizes = peer.received.slice(1, 4).map((f) => f.kind === "data" ? f.payload.length : -1);
    assert.deepEqual(sizes, [MAX_DATA_PAYLOAD_BYTES, MAX_DATA_PAYLOAD_BYTES, 5]);
    assert.deepEqual(peer.received[4], {
      kind: "control",
      message: { type: "close", id: stream.id, reason: "normal" },
    });
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: data that arrives with a peer's connect is delivered in order, then the end at its disconnect", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.client);
  let opened!: (value: { stream: MuxStream; info: unknown }) => void;
  const arrival = new Promise<{ stream: MuxStream; info: unknown }>((resolve) => (opened = resolve));
  const session = new MuxSession(
    sockets.server,
    sessionOptions({ onStreamOpened: (stream, info) => opened({ stream, info }) }),
  );
  try {
    const id = newStreamId();
    const parts = [patternBytes(1000, 1), patternBytes(MAX_DATA_PAYLOAD_BYTES, 2), patternBytes(1, 3)];
    peer.sendControl({ type: "open", id, info: TEST_OPEN_INFO, credits: INITIAL_STREAM_CREDITS });
    for (const part of parts) peer.sendData(id, part);
    peer.sendControl({ type: "close", id, reason: "normal" });
    const { stream, info } = await arrival;
    assert.equal(stream.id, id);
    assert.deepEqual(info, TEST_OPEN_INFO);
    for (const part of parts) assert.deepEqual(await stream.read(), part);
    assert.equal(await stream.read(), null);
    // The peer dropped the stream: writing to it is writing to nobody.
    await assert.rejects(stream.write(new Uint8Array([1])), PeerGoneError);
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: half-close sends close_write on a credits session and nothing on a legacy one", async () => {
  for (const dialect of [NEXUS_MUX, ORIGINAL]) {
    const sockets = await openWebSocketPair(dialect === NEXUS_MUX ? "nexus-mux.v1" : null);
    const peer = new RawPeer(sockets.server);
    const session = new MuxSession(sockets.client, sessionOptions({ dialect }));
    try {
      const stream = session.openStream(TEST_OPEN_INFO)!;
      assert.equal(stream.unsignalledEndTimeoutMs === null, dialect === NEXUS_MUX);
      await stream.write(new Uint8Array([7]));
      await stream.closeWrite();
      await stream.closeWrite();
      await peer.barrier();
      const types = peer.controls().map((m) => m.type).filter((t) => t !== "pong");
      assert.deepEqual(types, dialect === NEXUS_MUX ? ["open", "close_write"] : ["open"], dialect.name);
      // After our half-close the peer's data still reaches us.
      peer.sendData(stream.id, new Uint8Array([1, 2, 3]));
      assert.deepEqual(await stream.read(), new Uint8Array([1, 2, 3]));
    } finally {
      session.close(1000, "test over");
      await session.closed;
      await sockets.close();
    }
  }
});

Deno.test("session: credits go back in batches of 8 as the reader consumes, not as frames arrive", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.client);
  let opened!: (stream: MuxStream) => void;
  const arrival = new Promise<MuxStream>((resolve) => (opened = resolve));
  const session = new MuxSession(sockets.server, sessionOptions({ onStreamOpened: (s) => opened(s) }));
  const grants = () =>
    peer.controls().flatMap((m) => m.type === "resume" && m.id === id ? [m.credits ?? 0] : []);
  const id = newStreamId();
  try {
    peer.sendControl({ type: "open", id, info: TEST_OPEN_INFO, credits: INITIAL_STREAM_CREDITS });
    for (let i = 0; i < 20; i++) peer.sendData(id, new Uint8Array([i]));
    const stream = await arrival;
    await peer.barrier();
    assert.deepEqual(grants(), [], "nothing is granted for frames that only arrived");
    for (let i = 0; i < 7; i++) assert.deepEqual(await stream.read(), new Uint8Array([i]));
    await peer.barrier();
    assert.deepEqual(grants(), [], "seven consumed frames are not a batch");
    assert.deepEqual(await stream.read(), new Uint8Array([7]));
    await peer.barrier();
    assert.deepEqual(grants(), [8]);
    for (let i = 8; i < 20; i++) assert.deepEqual(await stream.read(), new Uint8Array([i]));
    await peer.barrier();
    assert.deepEqual(grants(), [8, 8], "twenty consumed frames are two batches and four owed");
    assert.equal(stream.bufferedFrames, 0);
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: a sender stops at exactly the window and resumes on each batch of credits", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const session = new MuxSession(sockets.client, sessionOptions());
  try {
    const stream = session.openStream(TEST_OPEN_INFO)!;
    const frame = patternBytes(MAX_DATA_PAYLOAD_BYTES, 5);
    const data = new Uint8Array(frame.length * 100);
    for (let i = 0; i < 100; i++) data.set(frame, i * frame.length);
    const { accepted, pending } = await writeUntilHeldBack(stream, data, frame.length);
    assert.equal(accepted, INITIAL_STREAM_CREDITS * frame.length, "one frame per credit, 64 credits");
    assert.notEqual(pending, null);
    await peer.waitFor(
      () => peer.received.filter((f) => f.kind === "data").length === INITIAL_STREAM_CREDITS,
      "64 data frames",
    );
    // Eight credits release the pending write and seven more frames' worth.
    peer.sendControl({ type: "resume", id: stream.id, credits: CREDIT_REPLENISH_BATCH });
    await pending;
    for (let i = 0; i < CREDIT_REPLENISH_BATCH - 1; i++) await stream.write(frame);
    const ninth = stream.write(frame);
    assert.equal(await settled(ninth), false);
    await peer.barrier();
    assert.equal(
      peer.received.filter((f) => f.kind === "data").length,
      INITIAL_STREAM_CREDITS + CREDIT_REPLENISH_BATCH,
    );
    await stream.close("test over");
    await assert.rejects(ninth, StreamClosedError);
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: a sender that ignores credits overflows its stream, and only that stream is closed", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.client);
  const streams: MuxStream[] = [];
  const session = new MuxSession(sockets.server, sessionOptions({ onStreamOpened: (s) => streams.push(s) }));
  const greedy = newStreamId();
  const polite = newStreamId();
  try {
    for (const id of [greedy, polite]) {
      peer.sendControl({ type: "open", id, info: TEST_OPEN_INFO, credits: INITIAL_STREAM_CREDITS });
    }
    // The window plus the tolerated over-send (a kick-start batch and a stall probe, §7.3): still fine.
    const tolerated = INITIAL_STREAM_CREDITS + CREDIT_REPLENISH_BATCH + 1;
    for (let i = 0; i < tolerated; i++) peer.sendData(greedy, new Uint8Array([1]));
    await peer.barrier();
    assert.equal(streams.length, 2);
    assert.equal(streams[0].bufferedFrames, tolerated);
    assert.deepEqual(peer.controls().filter((m) => m.type === "close"), []);
    // One frame more: that stream is closed and the peer is told; the other one carries on.
    peer.sendData(greedy, new Uint8Array([1]));
    await peer.waitFor(() => peer.controls().some((m) => m.type === "close"), "the greedy stream's close");
    assert.deepEqual(peer.controls().filter((m) => m.type === "close"), [{
      type: "close",
      id: greedy,
      reason: "buffer_full",
    }]);
    assert.equal(session.isOpen, true);
    assert.equal(session.streamCount, 1);
    peer.sendData(polite, new Uint8Array([9, 9]));
    assert.deepEqual(await streams[1].read(), new Uint8Array([9, 9]));
    await streams[1].write(new Uint8Array([4]));
    await peer.waitFor(() => peer.received.some((f) => f.kind === "data" && f.id === polite), "polite data");
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: a legacy peer that ignores pause overflows the byte cap of its stream only", async () => {
  const sockets = await openWebSocketPair(null);
  const peer = new RawPeer(sockets.client);
  const streams: MuxStream[] = [];
  const cap = 256 * 1024;
  const session = new MuxSession(
    sockets.server,
    sessionOptions({
      dialect: ORIGINAL,
      legacyStreamBufferBytes: cap,
      onStreamOpened: (s) => streams.push(s),
    }),
  );
  const greedy = newStreamId();
  const polite = newStreamId();
  try {
    for (const id of [greedy, polite]) peer.sendControl({ type: "open", id, info: TEST_OPEN_INFO });
    const chunk = new Uint8Array(16 * 1024);
    for (let sent = 0; sent < cap; sent += chunk.length) peer.sendData(greedy, chunk);
    await peer.barrier();
    assert.equal(streams[0].bufferedFrames, cap / chunk.length, "exactly the cap is still accepted");
    assert.deepEqual(peer.controls().filter((m) => m.type === "close"), []);
    peer.sendData(greedy, new Uint8Array(1));
    await peer.waitFor(() => peer.controls().some((m) => m.type === "close"), "the greedy stream's close");
    assert.deepEqual(peer.controls().filter((m) => m.type === "close"), [{
      type: "close",
      id: greedy,
      reason: "buffer_full",
    }]);
    peer.sendData(polite, new Uint8Array([5]));
    assert.deepEqual(await streams[1].read(), new Uint8Array([5]));
    // A legacy peer learns our receive window only from an explicit grant (§7.2).
    assert.deepEqual(
      peer.controls().filter((m) => m.type === "resume"),
      [greedy, polite].map((id) => ({ type: "resume", id, credits: INITIAL_STREAM_CREDITS })),
    );
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: pause_stream from a legacy peer holds our sender; resume_stream releases it", async () => {
  const sockets = await openWebSocketPair(null);
  const peer = new RawPeer(sockets.server);
  const session = new MuxSession(sockets.client, sessionOptions({ dialect: ORIGINAL }));
  try {
    const stream = session.openStream(TEST_OPEN_INFO)!;
    await stream.write(new Uint8Array([1]));
    peer.sendControl({ type: "pause", id: stream.id });
    // The pause has been handled once the pong of a later ping is back.
    await peer.barrier();
    const held = stream.write(new Uint8Array([2]));
    assert.equal(await settled(held), false);
    peer.sendControl({ type: "resume", id: stream.id });
    await held;
    await peer.waitFor(
      () => peer.received.filter((f) => f.kind === "data").length === 2,
      "both data frames",
    );
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
});

Deno.test("session: a close travels both ways and frees the stream id on both sessions", async () => {
  const pair = await openSessionPair();
  try {
    const first = await pair.openStream();
    await first.local.close("done", { graceful: true });
    assert.equal(await first.remote.read(), null);
    await assert.rejects(first.remote.write(new Uint8Array([1])), PeerGoneError);
    await first.remote.close("done");

    const second = await pair.openStream();
    await second.remote.close("done", { graceful: true });
    assert.equal(await second.local.read(), null);
    await assert.rejects(second.local.write(new Uint8Array([1])), PeerGoneError);
    await second.local.close("done");
    assert.equal(pair.opener.streamCount, 0);
    assert.equal(pair.acceptor.streamCount, 0);
  } finally {
    await pair.close();
  }
});

Deno.test("session: when it ends, every stream fails, after delivering what had already arrived", async () => {
  const pair = await openSessionPair();
  try {
    const one = await pair.openStream();
    const two = await pair.openStream();
    const sent = patternBytes(200_000, 9);
    await one.local.write(sent);
    await two.local.write(new Uint8Array([1, 2, 3]));
    // Both streams' data is at the acceptor before the WebSocket goes.
    assert.deepEqual(await readExactly(two.remote, 3), new Uint8Array([1, 2, 3]));
    await pair.sockets.client.close(1000, "gone");
    // Each side learns of the end from its own socket's close event, in no fixed order.
    await Promise.all([pair.acceptor.closed, pair.opener.closed]);
    // Whatever had arrived is still read in full; then the stream fails rather than looking like an end.
    const partial = await readExactly(one.remote, sent.length);
    assert.equal(await sha256Hex(partial), await sha256Hex(sent));
    await assert.rejects(one.remote.read(), /session ended/);
    await assert.rejects(two.remote.read(), /session ended/);
    await assert.rejects(one.remote.write(new Uint8Array([1])), /session ended/);
    await assert.rejects(one.local.write(new Uint8Array([1])), /session ended/);
    assert.equal(pair.acceptor.streamCount, 0);
    assert.equal(pair.opener.streamCount, 0);
  } finally {
    await pair.close();
    await whenClosed(pair.sockets.server);
  }
});

Deno.test("session: a stream opened beyond maxStreams is refused, and the limit frees up as streams close", async () => {
  const pair = await openSessionPair({ opener: { maxStreams: 2 } });
  try {
    const one = await pair.openStream();
    await pair.openStream();
    assert.equal(pair.opener.acceptsStreams, false);
    assert.equal(pair.opener.openStream(TEST_OPEN_INFO), null);
    await one.local.close("done");
    assert.equal(pair.opener.acceptsStreams, true);
    const third = await pair.openStream();
    await third.local.write(new Uint8Array([3]));
    assert.deepEqual(await third.remote.read(), new Uint8Array([3]));
  } finally {
    await pair.close();
  }
});

Deno.test("session: a stream whose reader stalls does not hold back another stream on the same session", async () => {
  const pair = await openSessionPair();
  try {
    const stalled = await pair.openStream();
    const busy = await pair.openStream();
    const blocked = patternBytes(8 * 1024 * 1024, 3);
    const stalledWrite = stalled.local.write(blocked);
    const payload = patternBytes(8 * 1024 * 1024, 4);
    const [received] = await Promise.all([
      readToEnd(busy.remote),
      busy.local.write(payload).then(() => busy.local.closeWrite()),
    ]);
    assert.equal(await sha256Hex(received), await sha256Hex(payload));
    assert.equal(await settled(stalledWrite), false, "the stalled stream's writer is held back");
    assert.ok(stalled.remote.bufferedFrames <= INITIAL_STREAM_CREDITS);
    const [late] = await Promise.all([
      readToEnd(stalled.remote),
      stalledWrite.then(() => stalled.local.closeWrite()),
    ]);
    assert.equal(await sha256Hex(late), await sha256Hex(blocked));
  } finally {
    await pair.close();
  }
});

Deno.test("session: after a drain neither side opens streams, open ones go on, and a late open is refused with shutdown", async () => {
  const pair = await openSessionPair();
  const drains: string[] = [];
  try {
    const open = await pair.openStream();
    // The acceptor (an agent, say) is shutting down.
    pair.acceptor.drain();
    pair.acceptor.drain();
    assert.equal(pair.acceptor.acceptsStreams, false);
    await waitUntil(() => pair.opener.draining, "the opener to hear of the drain");
    assert.equal(pair.opener.acceptsStreams, false);
    assert.equal(pair.opener.openStream(TEST_OPEN_INFO), null);
    // The open stream still works both ways.
    await open.local.write(new Uint8Array([1]));
    assert.deepEqual(await open.remote.read(), new Uint8Array([1]));
    await open.remote.write(new Uint8Array([2]));
    assert.deepEqual(await open.local.read(), new Uint8Array([2]));
  } finally {
    await pair.close();
  }

  // A peer that opens a stream anyway (it had not heard yet) is refused with the reason `shutdown`.
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.client);
  const session = new MuxSession(
    sockets.server,
    sessionOptions({ onStreamOpened: () => drains.push("opened"), onDrain: () => drains.push("drain") }),
  );
  try {
    session.drain();
    const id = newStreamId();
    peer.sendControl({ type: "open", id, info: TEST_OPEN_INFO, credits: INITIAL_STREAM_CREDITS });
    await peer.barrier();
    assert.deepEqual(peer.controls().filter((m) => m.type !== "pong"), [
      { type: "drain" },
      { type: "close", id, reason: "shutdown" },
    ]);
    assert.equal(drains.length, 0, "our own drain is not the peer's, and no stream was opened");
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }

  // A legacy peer has no word for it and is not told; its opens are refused all the same.
  const legacySockets = await openWebSocketPair(null);
  const legacyPeer = new RawPeer(legacySockets.client);
  const legacy = new MuxSession(
    legacySockets.server,
    sessionOptions({ dialect: ORIGINAL, onStreamOpened: () => drains.push("opened") }),
  );
  try {
    legacy.drain();
    const id = newStreamId();
    legacyPeer.sendControl({ type: "open", id, info: TEST_OPEN_INFO });
    await legacyPeer.barrier();
    assert.deepEqual(legacyPeer.controls().filter((m) => m.type !== "pong"), [
      { type: "close", id, reason: "shutdown" },
    ]);
    assert.equal(drains.length, 0);
  } finally {
    legacy.close(1000, "test over");
    await legacy.closed;
    await legacySockets.close();
  }
});

Deno.test("session: closeGracefully resolves only once the peer has everything sent before the close", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const session = new MuxSession(sockets.client, sessionOptions());
  try {
    const stream = session.openStream(TEST_OPEN_INFO)!;
    for (let i = 0; i < INITIAL_STREAM_CREDITS; i++) {
      await stream.write(patternBytes(MAX_DATA_PAYLOAD_BYTES, i + 1));
    }
    await stream.close("done", { graceful: true });
    // A plain close returns at once, with most of these 2 MiB still on their way; this waits for the answer.
    await session.closeGracefully(1000, "done", 10_000);
    const data = peer.received.filter((f) => f.kind === "data");
    assert.equal(data.length, INITIAL_STREAM_CREDITS);
    assert.deepEqual(peer.received.at(-1), {
      kind: "control",
      message: { type: "close", id: stream.id, reason: "normal" },
    });
  } finally {
    session.close(1000, "test over");
    await sockets.close();
  }
});

async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("session: a smaller receive window is granted in open, the peer's sender stops at it, and it is enforced", async () => {
  const window = 8;
  const pair = await openSessionPair({ opener: { receiveWindowFrames: window } });
  try {
    const { local, remote } = await pair.openStream();
    // The acceptor (an agent) may send exactly the window to the opener (the node) before credits come back.
    const frame = patternBytes(MAX_DATA_PAYLOAD_BYTES, 3);
    const data = new Uint8Array(frame.length * 20);
    for (let i = 0; i < 20; i++) data.set(frame, i * frame.length);
    const { accepted, pending } = await writeUntilHeldBack(remote, data, frame.length);
    assert.equal(accepted, window * frame.length);
    assert.notEqual(pending, null);
    await waitUntil(() => local.bufferedFrames === window, "the window to arrive");
    const [received] = await Promise.all([
      readExactly(local, data.length),
      (async () => {
        await pending;
        await remote.write(data.subarray(accepted + frame.length));
      })(),
    ]);
    assert.equal(await sha256Hex(received), await sha256Hex(data));
  } finally {
    await pair.close();
  }

  // A peer that sends past the window and its tolerated over-send has that stream closed.
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const session = new MuxSession(sockets.client, sessionOptions({ receiveWindowFrames: window }));
  try {
    const stream = session.openStream(TEST_OPEN_INFO)!;
    await peer.waitFor(() => peer.controls().length === 1, "the open");
    assert.deepEqual(peer.controls()[0], {
      type: "open",
      id: stream.id,
      info: TEST_OPEN_INFO,
      credits: window,
    });
    const tolerated = window + CREDIT_REPLENISH_BATCH + 1;
    for (let i = 0; i < tolerated; i++) peer.sendData(stream.id, new Uint8Array([i]));
    await peer.barrier();
    assert.equal(stream.bufferedFrames, tolerated);
    peer.sendData(stream.id, new Uint8Array([0]));
    await peer.waitFor(() => peer.controls().some((m) => m.type === "close"), "the overflow close");
    assert.deepEqual(peer.controls().filter((m) => m.type === "close"), [
      { type: "close", id: stream.id, reason: "buffer_full" },
    ]);
  } finally {
    session.close(1000, "test over");
    await sockets.close();
  }
});

Deno.test("session: every window from 1 to 16 frames moves 1 MiB byte-exact on a real WebSocket", async () => {
  const data = patternBytes(1024 * 1024, 11);
  for (let window = 1; window <= 16; window++) {
    const pair = await openSessionPair({ opener: { receiveWindowFrames: window } });
    try {
      const { local, remote } = await pair.openStream();
      const [received] = await withTimeout(
        Promise.all([readExactly(local, data.length), remote.write(data)]),
        `1 MiB through a window of ${window} frames`,
        10_000,
      );
      assert.equal(await sha256Hex(received), await sha256Hex(data), `window of ${window} frames`);
    } finally {
      await pair.close();
    }
  }
});

Deno.test("property: a peer that grants only after the connect never has more frames outstanding than it granted", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 200 }),
      fc.integer({ min: 1, max: 2 ** 20 }),
      fc.array(fc.integer({ min: 1, max: 16 }), { maxLength: 50 }),
      (sentBeforeGrant, firstGrant, laterGrants) => {
        const window = new SendWindow(Infinity, new WindowStallCounter());
        for (let i = 0; i < sentBeforeGrant; i++) assert.equal(window.tryTake(), true);
        window.grant(firstGrant, INITIAL_STREAM_CREDITS);
        let granted = Math.max(INITIAL_STREAM_CREDITS, Math.min(firstGrant, MAX_CREDIT_GRANT));
        let sent = sentBeforeGrant;
        const drain = () => {
          while (window.tryTake()) sent += 1;
        };
        drain();
        // Whatever was sent before the grant, the total never exceeds what was granted, unless it already
        // did before the first grant (then nothing more goes until grants cover it).
        assert.ok(sent <= Math.max(granted, sentBeforeGrant));
        for (const grant of laterGrants) {
          window.grant(grant, INITIAL_STREAM_CREDITS);
          granted += grant;
          drain();
          assert.ok(sent <= Math.max(granted, sentBeforeGrant), `${sent} sent, ${granted} granted`);
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("session: a write during the socket's closing handshake fails instead of vanishing, on every dialect", async () => {
  for (const dialect of [NEXUS_MUX, ORIGINAL]) {
    const pair = await openSessionPair({ dialect });
    try {
      const { local } = await pair.openStream();
      await local.write(patternBytes(1024, 1));
      // The socket is CLOSING from here; the session ends only when the close handshake does.
      pair.sockets.client.close(1000, "test closes");
      await assert.rejects(local.write(patternBytes(1024, 2)), StreamClosedError, dialect.name);
    } finally {
      await pair.close();
    }
  }
});
