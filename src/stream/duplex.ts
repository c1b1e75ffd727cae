/**
 * The one stream interface of the data path. A client socket, a local service socket, a stream to a backend
 * over the hub and a tunnel to a peer all look like this, so one pump ({@linkcode splice}) moves bytes between
 * any two of them and the relay never knows where a route ends.
 *
 * @module
 */

import type { DisconnectReason } from "../protocol/frames.ts";

/** A bidirectional byte stream with backpressure, half-close and close-with-reason. */
export interface Duplex {
  /** Short description for logs, e.g. `client 203.0.113.7:52144` or `stream 3f0c…`. */
  readonly label: string;
  /**
   * Null when {@linkcode closeWrite} tells the far side "no more data" while the other direction stays open.
   * A stream to a backend of the original protocol cannot tell it (§7.2: it has no half-close); this is then
   * how long the other direction may stay quiet before the stream is closed (see `SpliceSweeper`).
   */
  readonly unsignalledEndTimeoutMs: number | null;
  /**
   * The next chunk from the far side, or `null` once it has finished sending. The chunk may be a view into a
   * reused buffer: it is valid until the next `read` call.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Sends a chunk; resolves when the duplex can take more (this is the backpressure). Rejects with
   * {@linkcode PeerGoneError} when the far side has gone away for good, or another error on failure.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Tells the far side that no more data will follow; a no-op when it cannot be told. */
  closeWrite(): Promise<void>;
  /**
   * Ends both directions. `graceful` lets already written data reach the far side first (a socket lingers for
   * the peer's FIN); otherwise pending reads and writes fail at once. `code` is what the far side is told,
   * where there is a way to tell it (a multiplexed stream's `disconnect`; a socket has none). Idempotent.
   */
  close(reason: string, options?: { graceful?: boolean; code?: DisconnectReason }): Promise<void>;
}

/** The far side of a duplex is gone: what was written can no longer be delivered. Not a local failure. */
export class PeerGoneError extends Error {
  constructor(what: string) {
    super(`${what} is gone`);
    this.name = "PeerGoneError";
  }
}
