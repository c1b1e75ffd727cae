/**
 * The life of a {@linkcode MuxStream} as two small state machines, one per direction, with every transition in
 * one function ({@linkcode nextStreamState}): what used to be five booleans checked in different orders.
 *
 * Reading (what the peer sends us):
 * - `open`: data may still arrive.
 * - `ended`: the peer will send no more (its `close_write`, or its `disconnect`); what is queued is still read.
 * - `closed`: we closed the stream; reads fail.
 * - `failed`: the session died; reads fail once what already arrived has been read.
 *
 * Writing (what we send the peer):
 * - `open`: data may be sent.
 * - `ended`: we sent our end (`close_write`, or nothing to a peer that cannot be told).
 * - `peer_gone`: the peer dropped the stream; what we write can no longer arrive (`PeerGoneError`).
 * - `closed`: we closed the stream.
 * - `failed`: the session died.
 *
 * `closed`, `failed` and `peer_gone` are final: whichever came first is what a reader or writer is told.
 *
 * @module
 */

/** The reading direction of a stream. */
export type ReadState = "open" | "ended" | "closed" | "failed";
/** The writing direction of a stream. */
export type WriteState = "open" | "ended" | "peer_gone" | "closed" | "failed";

/** Both directions. */
export interface StreamState {
  readonly read: ReadState;
  readonly write: WriteState;
}

/** What happens to a stream. */
export type StreamEvent =
  /** The peer's `close_write`: it sends no more, still reads ours. */
  | "peer_ended"
  /** The peer's `disconnect`: it sends no more and reads nothing more. */
  | "peer_closed"
  /** We end our direction (`closeWrite`). */
  | "local_ended"
  /** We close the stream. */
  | "local_closed"
  /** The session under the stream died. */
  | "session_failed";

/** A stream as it opens: both directions open. */
export const OPEN_STREAM: StreamState = { read: "open", write: "open" };

/** A direction still open or ended takes the final state `next`; one already final keeps its own. */
function ifLive<S extends ReadState | WriteState>(state: S, next: S): S {
  return state === "open" || state === "ended" ? next : state;
}

/**
 * The state after `event`. Pure and total: every event is allowed in every state (a late one changes nothing
 * that is already final).
 *
 * @example
 * ```ts
 * import { nextStreamState, OPEN_STREAM } from "./stream_state.ts";
 * nextStreamState(OPEN_STREAM, "peer_ended"); // { read: "ended", write: "open" }
 * ```
 */
export function nextStreamState(state: StreamState, event: StreamEvent): StreamState {
  switch (event) {
    case "peer_ended":
      return state.read === "open" ? { read: "ended", write: state.write } : state;
    case "peer_closed":
      return {
        read: state.read === "open" ? "ended" : state.read,
        write: ifLive<WriteState>(state.write, "peer_gone"),
      };
    case "local_ended":
      return state.write === "open" ? { read: state.read, write: "ended" } : state;
    case "local_closed":
      return {
        read: ifLive<ReadState>(state.read, "closed"),
        write: ifLive<WriteState>(state.write, "closed"),
      };
    case "session_failed":
      // A stream we closed stays closed: its reader and writer were told that already.
      if (state.read === "closed") return state;
      return {
        read: ifLive<ReadState>(state.read, "failed"),
        write: ifLive<WriteState>(state.write, "failed"),
      };
  }
}
