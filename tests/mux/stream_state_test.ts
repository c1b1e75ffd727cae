/**
 * A multiplexed stream's read and write states: the transition table exactly, and a model-based test that
 * drives a real {@linkcode MuxStream} through any sequence of what can happen to it (data, the peer's end or
 * close, our end or close, the session dying, reads and writes, a read waiting while any of it happens) and
 * checks each outcome against a model written the old way, as flags.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { MuxStream, type StreamTransport } from "../../src/mux/stream.ts";
import { WindowStallCounter } from "../../src/mux/flow_control.ts";
import type { ControlMessage } from "../../src/protocol/frames.ts";
import {
  nextStreamState,
  OPEN_STREAM,
  type ReadState,
  type StreamEvent,
  type StreamState,
  type WriteState,
} from "../../src/mux/stream_state.ts";
import { PeerGoneError } from "../../src/stream/duplex.ts";

const EVENTS: readonly StreamEvent[] = [
  "peer_ended",
  "peer_closed",
  "local_ended",
  "local_closed",
  "session_failed",
];

Deno.test("stream states: every transition from the open stream, exactly", () => {
  const after = (...events: StreamEvent[]) => events.reduce(nextStreamState, OPEN_STREAM);
  assert.deepEqual(after("peer_ended"), { read: "ended", write: "open" });
  assert.deepEqual(after("peer_closed"), { read: "ended", write: "peer_gone" });
  assert.deepEqual(after("local_ended"), { read: "open", write: "ended" });
  assert.deepEqual(after("local_closed"), { read: "closed", write: "closed" });
  assert.deepEqual(after("session_failed"), { read: "failed", write: "failed" });
  assert.deepEqual(after("peer_ended", "local_ended"), { read: "ended", write: "ended" });
  assert.deepEqual(after("peer_closed", "session_failed"), { read: "failed", write: "peer_gone" });
  assert.deepEqual(after("peer_closed", "local_closed"), { read: "closed", write: "peer_gone" });
  assert.deepEqual(after("local_closed", "session_failed"), { read: "closed", write: "closed" });
  assert.deepEqual(after("session_failed", "local_closed"), { read: "failed", write: "failed" });
});

Deno.test("property: final states stay final, and a direction never goes back to open", () => {
  const finalRead: ReadonlySet<ReadState> = new Set(["closed", "failed"]);
  const finalWrite: ReadonlySet<WriteState> = new Set(["peer_gone", "closed", "failed"]);
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...EVENTS), { maxLength: 20 }), (events) => {
      let state: StreamState = OPEN_STREAM;
      for (const event of events) {
        const next = nextStreamState(state, event);
        if (finalRead.has(state.read)) assert.equal(next.read, state.read);
        if (finalWrite.has(state.write)) assert.equal(next.write, state.write);
        if (state.read !== "open") assert.notEqual(next.read, "open");
        if (state.write !== "open") assert.notEqual(next.write, "open");
        state = next;
      }
    }),
    { numRuns: 2_000 },
  );
});

/** A transport that records what the stream sends; it never applies backpressure. */
class RecordingTransport implements StreamTransport {
  readonly label = "model session";
  readonly unsignalledEndTimeoutMs: number | null;
  readonly controls: ControlMessage[] = [];
  dataFrames = 0;
  released = 0;

  constructor(signalsEnd: boolean) {
    this.unsignalledEndTimeoutMs = signalsEnd ? null : 5_000;
  }

  sendData(): void {
    this.dataFrames += 1;
  }
  sendControl(message: ControlMessage): void {
    this.controls.push(message);
  }
  whenWritable(): undefined {
    return undefined;
  }
  recycle(): void {}
  release(): void {
    this.released += 1;
  }
  reportOverflow(): void {}
}

/** The stream as it was written before its states had names: five flags. */
interface Model {
  remoteEnded: boolean;
  remoteGone: boolean;
  wroteEnd: boolean;
  closed: boolean;
  failed: boolean;
  readonly queue: number[];
  controls: number;
  dataFrames: number;
  released: number;
  /** Chunks the reader took: each full batch of them returns credits while the peer may still send. */
  consumed: number;
  readonly replenishBatchFrames: number;
  readonly signalsEnd: boolean;
}

/** The reader took a chunk. */
function consume(model: Model): void {
  model.consumed += 1;
  if (
    model.consumed % model.replenishBatchFrames === 0 && !model.remoteEnded && !model.closed && !model.failed
  ) model.controls += 1;
}

interface Real {
  readonly stream: MuxStream;
  readonly transport: RecordingTransport;
}

const payload = (n: number) => new Uint8Array([n & 0xff, n >> 8]);
const tag = (chunk: Uint8Array) => chunk[0] | (chunk[1] << 8);

/** What a read gets, as the model has it; `wait` when it would wait. */
function expectedRead(model: Model): number | "end" | "closed" | "failed" | "wait" {
  if (model.queue.length > 0) return model.queue[0];
  if (model.failed) return "failed";
  if (model.closed) return "closed";
  if (model.remoteEnded) return "end";
  return "wait";
}

async function outcome(read: Promise<Uint8Array | null>): Promise<number | "end" | "closed" | "failed"> {
  try {
    const chunk = await read;
    return chunk === null ? "end" : tag(chunk);
  } catch (error) {
    assert.ok(error instanceof Error);
    return error.message.includes("session died") ? "failed" : "closed";
  }
}

/** The model's flags as the stream's named states. */
function expectedState(model: Model): StreamState {
  const read: ReadState = model.failed
    ? "failed"
    : model.closed
    ? "closed"
    : model.remoteEnded
    ? "ended"
    : "open";
  const write: WriteState = model.remoteGone
    ? "peer_gone"
    : model.failed
    ? "failed"
    : model.closed
    ? "closed"
    : model.wroteEnd
    ? "ended"
    : "open";
  return { read, write };
}

function checkSent(model: Model, real: Real): void {
  assert.equal(real.transport.controls.length, model.controls);
  assert.equal(real.transport.dataFrames, model.dataFrames);
  assert.equal(real.transport.released, model.released);
  assert.deepEqual(real.stream.state, expectedState(model));
}

/** Whether the session would still hand the stream frames from the peer (it forgets it once closed or dead). */
const deliverable = (model: Model) => !model.closed && !model.failed;

// Each event as the model applies it; the session-side ones only while the session still delivers them.
function applyEvent(model: Model, real: Real, event: StreamEvent | "data", n: number): void {
  switch (event) {
    case "data":
      real.stream.receiveData(payload(n));
      if (!model.remoteEnded && !model.closed) model.queue.push(n);
      return;
    case "peer_ended":
      real.stream.receiveCloseWrite();
      model.remoteEnded = true;
      return;
    case "peer_closed":
      real.stream.receiveClose();
      model.remoteEnded = true;
      model.remoteGone = true;
      return;
    case "local_ended":
      void real.stream.closeWrite();
      if (!model.wroteEnd && !model.closed && !model.remoteGone && !model.failed) {
        model.wroteEnd = true;
        if (model.signalsEnd) model.controls += 1;
      }
      return;
    case "local_closed":
      void real.stream.close("test close");
      if (model.closed || model.failed) return;
      model.closed = true;
      // No disconnect to a peer that is gone, nor once both directions ended with close_write (§5.3).
      if (!model.remoteGone && !(model.remoteEnded && model.wroteEnd && model.signalsEnd)) {
        model.controls += 1;
      }
      model.released += 1;
      return;
    case "session_failed":
      real.stream.fail("session died");
      if (!model.closed) model.failed = true;
      return;
  }
}

const eventArbitrary = fc.constantFrom<StreamEvent | "data">("data", "data", ...EVENTS);

class EventCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly event: StreamEvent | "data", readonly n: number) {}
  check(model: Readonly<Model>): boolean {
    const fromPeer = this.event === "data" || this.event === "peer_ended" || this.event === "peer_closed";
    return !fromPeer || deliverable(model as Model);
  }
  run(model: Model, real: Real): Promise<void> {
    applyEvent(model, real, this.event, this.n);
    checkSent(model, real);
    return Promise.resolve();
  }
  toString(): string {
    return `${this.event}(${this.n})`;
  }
}

class ReadCommand implements fc.AsyncCommand<Model, Real> {
  check(model: Readonly<Model>): boolean {
    return expectedRead(model as Model) !== "wait";
  }
  async run(model: Model, real: Real): Promise<void> {
    const expected = expectedRead(model);
    const got = await outcome(real.stream.read());
    assert.equal(got, expected);
    if (typeof expected === "number") {
      model.queue.shift();
      consume(model);
    }
    checkSent(model, real);
  }
  toString(): string {
    return "read";
  }
}

/** A read that waits, then one event that may settle it. */
class WaitingReadCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly event: StreamEvent | "data", readonly n: number) {}
  check(model: Readonly<Model>): boolean {
    return expectedRead(model as Model) === "wait";
  }
  async run(model: Model, real: Real): Promise<void> {
    let settled = false;
    const read = outcome(real.stream.read()).finally(() => (settled = true));
    applyEvent(model, real, this.event, this.n);
    await Promise.resolve();
    const expected = expectedRead(model);
    if (expected === "wait") {
      // Still waiting (our own end changes nothing for reading): the next data settles it.
      assert.equal(settled, false);
      real.stream.receiveData(payload(this.n));
      assert.equal(await read, this.n);
      consume(model);
    } else {
      assert.equal(await read, expected);
      if (typeof expected === "number") {
        model.queue.shift();
        consume(model);
      }
    }
    checkSent(model, real);
  }
  toString(): string {
    return `waiting read, then ${this.event}(${this.n})`;
  }
}

class WriteCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly bytes: number) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    let error: unknown = null;
    try {
      await real.stream.write(new Uint8Array(this.bytes));
    } catch (caught) {
      error = caught;
    }
    if (model.remoteGone) assert.ok(error instanceof PeerGoneError, `expected PeerGoneError, got ${error}`);
    else if (model.failed) assert.match(String(error), /session died/);
    else if (model.closed) assert.match(String(error), /test close/);
    else if (model.wroteEnd) assert.match(String(error), /after its end/);
    else {
      assert.equal(error, null);
      model.dataFrames += Math.ceil(this.bytes / (32 * 1024));
    }
    checkSent(model, real);
  }
  toString(): string {
    return `write(${this.bytes})`;
  }
}

Deno.test("property (model): a stream's reads, writes and messages follow its states through any sequence", async () => {
  const commands = [
    fc.tuple(eventArbitrary, fc.nat(60_000)).map(([event, n]) => new EventCommand(event, n)),
    fc.constant(new ReadCommand()),
    fc.tuple(eventArbitrary, fc.nat(60_000)).map(([event, n]) => new WaitingReadCommand(event, n)),
    fc.integer({ min: 1, max: 100_000 }).map((bytes) => new WriteCommand(bytes)),
  ];
  await fc.assert(
    fc.asyncProperty(
      fc.boolean(),
      fc.integer({ min: 1, max: 3 }),
      fc.commands(commands, { maxCommands: 40 }),
      async (signalsEnd, replenishBatchFrames, cmds) => {
        const transport = new RecordingTransport(signalsEnd);
        const stream = new MuxStream("3f0c1a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", transport, {
          sendCredits: 1_000_000,
          windowFrames: 64,
          receiveLimits: { replenishBatchFrames, maxFrames: Infinity, maxBytes: Infinity },
          stalls: new WindowStallCounter(),
        });
        const model: Model = {
          remoteEnded: false,
          remoteGone: false,
          wroteEnd: false,
          closed: false,
          failed: false,
          queue: [],
          controls: 0,
          dataFrames: 0,
          released: 0,
          consumed: 0,
          replenishBatchFrames,
          signalsEnd,
        };
        await fc.asyncModelRun(() => ({ model, real: { stream, transport } }), cmds);
      },
    ),
    { numRuns: 500 },
  );
});
