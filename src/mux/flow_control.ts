/**
 * The two halves of per-stream flow control, used by every multiplexed stream (hub, agent, mesh).
 *
 * Credits count frames, not bytes, as in the original (§5.2): one credit lets the sender emit one data frame of
 * any size up to 32 KiB. A sender that never got a grant from a peer that does not speak credits is unlimited
 * but still honours `pause_stream` (the standalone client's only brake, §7.2). All credit arithmetic lives here
 * (credit state spread over many call sites produced most of the original's bugs).
 *
 * @module
 */

import { CREDIT_REPLENISH_BATCH, INITIAL_STREAM_CREDITS, MAX_CREDIT_GRANT } from "../protocol/frames.ts";

/** Thrown to a waiting sender when its stream closes. */
export class StreamClosedError extends Error {
  constructor(reason: string) {
    super(`Stream closed: ${reason}`);
    this.name = "StreamClosedError";
  }
}

/**
 * How often senders found their window spent and had to wait for credits: their receiver (a slow client or
 * service) could not keep up. One count per wait, not per frame. A node or an agent keeps one for all its
 * sessions, which its metrics read at scrape time; two in one process count apart.
 */
export class WindowStallCounter {
  #count = 0;

  /** Waits counted so far. */
  get count(): number {
    return this.#count;
  }

  /** A sender waits for credits. */
  record(): void {
    this.#count += 1;
  }
}

/** The smallest window a stream opened under a spent budget gets: enough to keep data moving. */
export const MIN_RECEIVE_WINDOW_FRAMES = 2;

/**
 * The sending side: how many frames the peer allows us to send, and whether it asked us to pause.
 *
 * One writer per stream waits at a time, so a single pending waiter is enough.
 */
export class SendWindow {
  #credits: number;
  /** Frames sent while the peer had granted nothing (unlimited), until its first grant counts them. */
  #sentUncounted = 0;
  #paused = false;
  #closedReason: string | null = null;
  #waiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  readonly #stalls: WindowStallCounter;

  /**
   * @param initialCredits frames the peer granted up front, or `Infinity` for a peer without credits
   * @param stalls where each wait for credits is counted
   */
  constructor(initialCredits: number, stalls: WindowStallCounter) {
    this.#credits = initialCredits;
    this.#stalls = stalls;
  }

  /** Credits left (Infinity when the peer does not speak credits; below 0 while overdrawn). */
  get credits(): number {
    return this.#credits;
  }

  /** Takes one credit if one is available and the stream is not paused. */
  tryTake(): boolean {
    if (this.#closedReason !== null || this.#paused || this.#credits < 1) return false;
    if (this.#credits === Infinity) this.#sentUncounted += 1;
    else this.#credits -= 1;
    return true;
  }

  /** Waits for one credit, then takes it. Rejects with {@linkcode StreamClosedError} if the stream closes. */
  take(): Promise<void> {
    if (this.#closedReason !== null) return Promise.reject(new StreamClosedError(this.#closedReason));
    if (this.tryTake()) return Promise.resolve();
    this.#stalls.record();
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /**
   * Adds a grant from the peer. The first grant from a peer that started without credits switches the stream
   * to counted credits, with at least a full initial window (the original's rule, §7.3).
   */
  grant(frames: number, initialWindow: number): void {
    const clamped = Math.min(Math.max(0, Math.floor(frames)), MAX_CREDIT_GRANT);
    if (this.#credits === Infinity) {
      // The frames already sent are in the peer's count too: it granted after the `connect`, before the data
      // that followed it reached it. They may overdraw the window; later grants pay that back first.
      this.#credits = Math.max(initialWindow, clamped) - this.#sentUncounted;
    } else this.#credits = Math.min(this.#credits + clamped, MAX_CREDIT_GRANT);
    this.#wake();
  }

  /** The peer asked us to stop sending (legacy `pause_stream`). */
  pause(): void {
    this.#paused = true;
  }

  /** The peer asked us to continue (legacy `resume_stream` without credits). */
  resume(): void {
    this.#paused = false;
    this.#wake();
  }

  /** Fails the waiting sender, now and for every later `take`. Idempotent. */
  close(reason: string): void {
    if (this.#closedReason !== null) return;
    this.#closedReason = reason;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(new StreamClosedError(reason));
  }

  #wake(): void {
    if (this.#waiter !== null && this.tryTake()) {
      const waiter = this.#waiter;
      this.#waiter = null;
      waiter.resolve();
    }
  }
}

/** Limits of a {@linkcode ReceiveWindow}. */
export interface ReceiveLimits {
  /** Consumed frames gathered before they go back as credits: never more than the window can fill. */
  readonly replenishBatchFrames: number;
  /** Frames that may wait for the reader before the stream counts as overflowing. */
  readonly maxFrames: number;
  /** Bytes that may wait for the reader before the stream counts as overflowing. */
  readonly maxBytes: number;
}

/**
 * Frames the original's safety valves may send beyond the window: a kick-start batch and a stall probe (§7.3).
 * A receiver that counts credits tolerates that much before it calls the stream overflowing.
 */
const CREDIT_OVERSEND_SLACK_FRAMES = CREDIT_REPLENISH_BATCH + 1;

/**
 * What a receiver that granted `windowFrames` credits holds at most for one stream, and the batches it returns
 * them in (at most `maxBatchFrames`, see {@linkcode replenishBatchFrames}).
 */
export function creditReceiveLimits(
  windowFrames: number,
  maxBatchFrames = CREDIT_REPLENISH_BATCH,
): ReceiveLimits {
  return {
    replenishBatchFrames: replenishBatchFrames(windowFrames, maxBatchFrames),
    maxFrames: windowFrames + CREDIT_OVERSEND_SLACK_FRAMES,
    maxBytes: Infinity,
  };
}

/**
 * What a receiver holds for a sender that ignores credits (the original's standalone client): a byte cap. It
 * still returns credits against the 64 it grants, for the original's newer client, which counts them (§7.3).
 */
export function byteCappedReceiveLimits(maxBytes: number): ReceiveLimits {
  return {
    replenishBatchFrames: replenishBatchFrames(INITIAL_STREAM_CREDITS),
    maxFrames: Infinity,
    maxBytes,
  };
}

/**
 * How many consumed frames a receiver gathers before it returns them as credits: the protocol's batch of 8
 * (§5.2), but never more than half the window, and at least one. A batch larger than the window would never
 * fill: the sender stops with its credits spent while the receiver waits for more frames before granting any.
 *
 * @example
 * ```ts
 * import { replenishBatchFrames } from "./flow_control.ts";
 * replenishBatchFrames(64); // 8
 * replenishBatchFrames(2); // 1
 * ```
 */
export function replenishBatchFrames(windowFrames: number, maxBatchFrames = CREDIT_REPLENISH_BATCH): number {
  return Math.max(1, Math.min(maxBatchFrames, Math.floor(windowFrames / 2)));
}

/**
 * The receiving side: what is buffered for the local reader, and the credits owed back to the sender.
 *
 * Credits go back in batches (`replenishBatchFrames` of its limits) once the reader has consumed that many
 * frames, so a slow reader slows its own sender and nobody else.
 */
export class ReceiveWindow {
  #frames = 0;
  #bytes = 0;
  #owed = 0;
  #limits: ReceiveLimits;

  constructor(limits: ReceiveLimits) {
    this.#limits = limits;
  }

  /** Frames buffered for the reader. */
  get bufferedFrames(): number {
    return this.#frames;
  }

  /** Bytes buffered for the reader. */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  /**
   * From now on the sender counts credits (an original peer turned out to be of the newer generation): the
   * window bounds what may wait here instead of a byte cap.
   */
  countCredits(limits: ReceiveLimits): void {
    this.#limits = limits;
  }

  /** Records an arriving frame; false when it overflows the limits (the sender ignored credits or pause). */
  arrive(bytes: number): boolean {
    this.#frames += 1;
    this.#bytes += bytes;
    return this.#frames <= this.#limits.maxFrames && this.#bytes <= this.#limits.maxBytes;
  }

  /** Records a frame handed to the reader; returns the credits to grant back now (0 or a full batch). */
  consume(bytes: number): number {
    this.#frames -= 1;
    this.#bytes -= bytes;
    this.#owed += 1;
    if (this.#owed < this.#limits.replenishBatchFrames) return 0;
    const grant = this.#owed;
    this.#owed = 0;
    return grant;
  }
}

/**
 * A node-wide cap on what streams may buffer for slow readers. Each stream this side opens reserves its receive
 * window from it; once it runs low, new streams get smaller windows (never below a minimum, so none starves),
 * and a stream's reservation comes back when it closes. Without it, the bound would be the connection limit
 * times the full window.
 */
export class BufferBudget {
  readonly #frameBytes: number;
  #availableFrames: number;

  /** @param totalBytes what all windows together may hold; @param frameBytes the size of one frame's credit */
  constructor(totalBytes: number, frameBytes: number) {
    this.#frameBytes = frameBytes;
    this.#availableFrames = Math.floor(totalBytes / frameBytes);
  }

  /** Bytes not reserved by any window (negative when minimum windows overdraw it). */
  get availableBytes(): number {
    return this.#availableFrames * this.#frameBytes;
  }

  /** Reserves up to `wantedFrames`, at least `minFrames` even when the budget is spent; returns the frames granted. */
  reserve(wantedFrames: number, minFrames: number): number {
    const frames = Math.max(minFrames, Math.min(wantedFrames, this.#availableFrames));
    this.#availableFrames -= frames;
    return frames;
  }

  /** Returns a reservation. */
  release(frames: number): void {
    this.#availableFrames += frames;
  }
}
