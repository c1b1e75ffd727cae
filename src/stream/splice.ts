/**
 * The one pump of the data path: moves bytes both ways between two {@linkcode Duplex}es until both directions
 * have ended, propagating half-closes, backpressure and failures.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import { type Duplex, PeerGoneError } from "./duplex.ts";

/** How a splice ended. */
export interface SpliceResult {
  /** `"completed"` when both directions ended normally, else why it was aborted. */
  readonly reason: string;
  readonly bytesAToB: number;
  readonly bytesBToA: number;
}

/**
 * Moves bytes between `a` and `b`. When one side finishes sending, the other is half-closed (or, if it cannot
 * half-close, left open until its own end or the half-closed timeout). When both directions have ended, both
 * sides close gracefully. Any failure aborts both sides at once with its reason.
 */
export class Splice {
  readonly a: Duplex;
  readonly b: Duplex;
  readonly done: Promise<SpliceResult>;
  #bytesAToB = 0;
  #bytesBToA = 0;
  #endedDirections = 0;
  /** A direction ended whose destination could not be told: the quiet time it may then be left. */
  #unsignalledEndTimeoutMs: number | null = null;
  #abortReason: string | null = null;

  constructor(a: Duplex, b: Duplex) {
    this.a = a;
    this.b = b;
    this.done = this.#run();
  }

  /** Bytes moved so far in both directions; the timeout sweeper watches it for progress. */
  get bytesMoved(): number {
    return this.#bytesAToB + this.#bytesBToA;
  }

  /** Bytes moved so far from `a` to `b` (read at scrape time, for metrics). */
  get bytesAToB(): number {
    return this.#bytesAToB;
  }

  /** Bytes moved so far from `b` to `a`. */
  get bytesBToA(): number {
    return this.#bytesBToA;
  }

  /** Whether one direction has already ended while the other is still open. */
  get halfClosed(): boolean {
    return this.#endedDirections === 1;
  }

  /**
   * When that ended direction's destination could not be told so (a backend of the original protocol, which
   * has no half-close, still thinks the client may send more): how long the splice may then stay quiet.
   * Null: it was told, and only the configured half-closed timeout applies.
   */
  get unsignalledEndTimeoutMs(): number | null {
    return this.halfClosed ? this.#unsignalledEndTimeoutMs : null;
  }

  /** Ends both sides now; the first reason wins. */
  abort(reason: string): void {
    if (this.#abortReason !== null) return;
    this.#abortReason = reason;
    void this.a.close(reason);
    void this.b.close(reason);
  }

  async #run(): Promise<SpliceResult> {
    await Promise.all([this.#copy(this.a, this.b, true), this.#copy(this.b, this.a, false)]);
    if (this.#abortReason === null) {
      await Promise.all([
        this.a.close("completed", { graceful: true }),
        this.b.close("completed", { graceful: true }),
      ]);
    }
    return {
      reason: this.#abortReason ?? "completed",
      bytesAToB: this.#bytesAToB,
      bytesBToA: this.#bytesBToA,
    };
  }

  async #copy(from: Duplex, to: Duplex, aToB: boolean): Promise<void> {
    try {
      for (;;) {
        const chunk = await from.read();
        if (chunk === null) break;
        if (aToB) this.#bytesAToB += chunk.length;
        else this.#bytesBToA += chunk.length;
        await to.write(chunk);
      }
      if (to.unsignalledEndTimeoutMs !== null) this.#unsignalledEndTimeoutMs = to.unsignalledEndTimeoutMs;
      await to.closeWrite();
    } catch (error) {
      // A destination that is gone for good ends this direction only: the other one still delivers what
      // that side sent before it left, then ends by itself.
      if (!(error instanceof PeerGoneError)) this.abort(describeFailure(from, to, error));
    } finally {
      this.#endedDirections += 1;
    }
  }
}

function describeFailure(from: Duplex, to: Duplex, error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return `${from.label} -> ${to.label}: ${message}`;
}

/** Limits enforced by a {@linkcode SpliceSweeper}; 0 disables one. */
export interface SpliceTimeouts {
  /** A splice that moved no byte either way for this long is closed (`idleTimeoutSeconds`). */
  readonly idleTimeoutMs: number;
  /** A splice with one direction ended that moved no byte for this long is closed. */
  readonly halfClosedTimeoutMs: number;
}

/**
 * Enforces idle and half-closed timeouts over many splices with one coarse timer instead of one timer per
 * connection: each sweep compares a splice's byte count with the previous sweep.
 */
export class SpliceSweeper {
  readonly #timeouts: Live<SpliceTimeouts>;
  readonly #watched = new Map<Splice, { bytes: number; quietSinceMs: number }>();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(timeouts: SpliceTimeouts | Live<SpliceTimeouts>, intervalMs = 1_000) {
    this.#timeouts = Live.of(timeouts);
    this.#timer = setInterval(() => this.sweep(Date.now()), intervalMs);
    Deno.unrefTimer(this.#timer);
  }

  /** Number of splices being watched. */
  get size(): number {
    return this.#watched.size;
  }

  /** Starts watching a splice until it is done. */
  watch(splice: Splice): void {
    this.#watched.set(splice, { bytes: splice.bytesMoved, quietSinceMs: Date.now() });
    void splice.done.finally(() => this.#watched.delete(splice));
  }

  /** Aborts every watched splice that has been quiet for longer than its limit. */
  sweep(nowMs: number): void {
    const { idleTimeoutMs, halfClosedTimeoutMs } = this.#timeouts.current;
    for (const [splice, state] of this.#watched) {
      const bytes = splice.bytesMoved;
      if (bytes !== state.bytes) {
        state.bytes = bytes;
        state.quietSinceMs = nowMs;
        continue;
      }
      const quietMs = nowMs - state.quietSinceMs;
      const unsignalledMs = splice.unsignalledEndTimeoutMs;
      const halfClosedLimitMs = unsignalledMs === null
        ? halfClosedTimeoutMs
        : Math.min(halfClosedTimeoutMs || Infinity, unsignalledMs);
      if (splice.halfClosed && halfClosedLimitMs > 0 && quietMs >= halfClosedLimitMs) {
        splice.abort("half-closed timeout");
      } else if (idleTimeoutMs > 0 && quietMs >= idleTimeoutMs) {
        splice.abort("idle timeout");
      }
    }
  }

  /** Stops the timer; watched splices are left alone. */
  close(): void {
    clearInterval(this.#timer);
  }
}

/**
 * The splices a component keeps open (the relay's clients, the tunnels from peers, the agent's streams): each
 * watched by the sweeper for its timeouts, drained within a deadline on shutdown, and aborted together. `T` is
 * what the owner remembers of each (the agent keeps what the node said about the stream).
 */
export class SpliceSet<T = undefined> {
  readonly #open = new Map<Splice, T>();
  readonly #sweeper: SpliceSweeper;

  constructor(sweeper: SpliceSweeper) {
    this.#sweeper = sweeper;
  }

  /** Splices open now. */
  get size(): number {
    return this.#open.size;
  }

  /** What was remembered of each open splice. */
  values(): T[] {
    return [...this.#open.values()];
  }

  /** Each open splice with what was remembered of it. */
  entries(): IterableIterator<[Splice, T]> {
    return this.#open.entries();
  }

  /** Keeps `splice` until it is done, watched for its timeouts; resolves with how it ended. */
  add(splice: Splice, value: T): Promise<SpliceResult> {
    this.#open.set(splice, value);
    this.#sweeper.watch(splice);
    return splice.done.finally(() => this.#open.delete(splice));
  }

  /** Resolves once every open splice is done, or after `timeoutMs`; returns how many were still open. */
  async drain(timeoutMs: number): Promise<number> {
    if (this.#open.size === 0) return 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#open.keys()].map((splice) => splice.done)),
      new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
    return this.#open.size;
  }

  /** Aborts every open splice with `reason`. */
  abortAll(reason: string): void {
    for (const splice of this.#open.keys()) splice.abort(reason);
  }
}
