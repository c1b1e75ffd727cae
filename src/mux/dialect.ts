/**
 * The three ways a peer can speak the multiplexing protocol, each a value, so that the original's quirks live
 * in one place instead of in branches on a mode flag (docs/protocol.md §7):
 *
 * - {@linkcode NEXUS_MUX}: our agent and our nodes (`nexus-mux.v1` subprotocol): credits from the first
 *   frame, batch messages accepted, half-close, drain, session heartbeats.
 * - {@linkcode ORIGINAL}: the original's standalone client v0.2.6 (no subprotocol): it never grants credits
 *   and ignores ours; `pause_stream`/`resume_stream` are its only brake; no half-close (§7.2).
 * - {@linkcode ORIGINAL_CREDITS}: the original's newer generation (the merged v0.3.14 client, §7.3): no
 *   subprotocol either, but it grants credits right after each `connect` and counts the ones we grant. A
 *   session starts as {@linkcode ORIGINAL} and becomes this at the peer's first grant.
 *
 * @module
 */

import { byteCappedReceiveLimits, creditReceiveLimits, type ReceiveLimits } from "./flow_control.ts";
import { INITIAL_STREAM_CREDITS, MAX_BATCHED_MESSAGE_BYTES, MAX_MESSAGE_BYTES } from "../protocol/frames.ts";

/** How one kind of peer speaks the protocol. */
export interface Dialect {
  /** For logs and status: `nexus-mux.v1`, `original`, `original-credits`. */
  readonly name: string;
  /**
   * Frames we may send on a new stream before the peer grants any: the protocol's window, or unlimited for a
   * peer that may never grant (a first grant then switches the stream to counted credits, §7.3).
   */
  readonly initialSendCredits: number;
  /** Whether the peer counts the credits we grant, so that our receive window bounds what it sends. */
  readonly peerCountsCredits: boolean;
  /**
   * Bytes buffered in the WebSocket above which stream writers wait (they resume below half). Towards the
   * standalone client only two frames: it can stop us only with `pause_stream` and closes a stream that gets
   * more than 16 frames after it (§7.2), and what the buffer holds when the pause comes is sent all the same.
   * With 1 MiB (32 frames) it closed a stream to a stalled service every time on loopback.
   */
  readonly writeHighWaterBytes: number;
  /**
   * Least time a writer waits once the buffer is above its mark, drained or not; 0: only the drain. The
   * standalone client counts no credits, so only pace keeps what reaches it after its `pause_stream` within
   * its 16 frames: the kernel's socket buffers take megabytes, and a writer woken at once on every drain sent
   * past them before the pause came back (its stream was closed, "write buffer full", every time on loopback).
   * One millisecond per two frames is what the earlier 1 ms poll of `bufferedAmount` gave it.
   */
  readonly writePaceMs: number;
  /**
   * Batch messages (0x03, frames.ts) may arrive: our earlier versions sent them; the original's parties neither
   * send them nor could read them.
   */
  readonly batches: boolean;
  /** Largest WebSocket message either end sends or accepts. */
  readonly largestMessageBytes: number;
  /** Whether the peer understands `close_write` (half-close) and `drain`. */
  readonly halfClosesAndDrains: boolean;
  /** Whether session `ping`/`pong` keep the link checked (others rely on WebSocket pings). */
  readonly heartbeats: boolean;
  /** A stream the peer opens gets an explicit grant of our window: the original learns it only so (§7.2). */
  readonly grantsOnPeerOpen: boolean;
  /**
   * How long a stream may stay quiet once one direction has ended towards this peer, which cannot be told
   * of the end (no half-close): long enough for a response already on its way, short enough that closed
   * keep-alive clients do not hold backend streams for a minute. Null: the peer is told. The original closes
   * such a stream at once and loses that response.
   */
  readonly unsignalledEndTimeoutMs: number | null;
  /** What one stream may buffer here, given the window granted and the cap for peers that ignore credits. */
  receiveLimits(windowFrames: number, legacyStreamBufferBytes: number): ReceiveLimits;
}

const WRITE_HIGH_WATER_BYTES = 1024 * 1024;

/** Our agent and our nodes. */
export const NEXUS_MUX: Dialect = {
  name: "nexus-mux.v1",
  initialSendCredits: INITIAL_STREAM_CREDITS,
  peerCountsCredits: true,
  writeHighWaterBytes: WRITE_HIGH_WATER_BYTES,
  writePaceMs: 0,
  batches: true,
  largestMessageBytes: MAX_BATCHED_MESSAGE_BYTES,
  halfClosesAndDrains: true,
  heartbeats: true,
  grantsOnPeerOpen: false,
  unsignalledEndTimeoutMs: null,
  receiveLimits: (windowFrames) => creditReceiveLimits(windowFrames),
};

/** The original's standalone client v0.2.6 (and an original Go node, seen from our agent). */
export const ORIGINAL: Dialect = {
  name: "original",
  initialSendCredits: Infinity,
  peerCountsCredits: false,
  writeHighWaterBytes: 2 * MAX_MESSAGE_BYTES,
  writePaceMs: 1,
  batches: false,
  largestMessageBytes: MAX_MESSAGE_BYTES,
  halfClosesAndDrains: false,
  heartbeats: false,
  grantsOnPeerOpen: true,
  unsignalledEndTimeoutMs: 5_000,
  receiveLimits: (_windowFrames, legacyStreamBufferBytes) => byteCappedReceiveLimits(legacyStreamBufferBytes),
};

/**
 * The original's newer generation: as {@linkcode ORIGINAL} on the wire, but it counts credits both ways, so its
 * streams are bounded by windows, not byte caps, and writers need not keep the standalone client's margin.
 */
export const ORIGINAL_CREDITS: Dialect = {
  ...ORIGINAL,
  name: "original-credits",
  peerCountsCredits: true,
  writeHighWaterBytes: WRITE_HIGH_WATER_BYTES,
  writePaceMs: 0,
  receiveLimits: (windowFrames) => creditReceiveLimits(windowFrames),
};
