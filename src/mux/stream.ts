/**
 * One multiplexed stream over a {@linkcode MuxSession}: a client's connection as seen across the hub or the
 * mesh. It implements {@linkcode Duplex}, so the pump treats it exactly like a socket.
 *
 * @module
 */

import { type Duplex, PeerGoneError } from "../stream/duplex.ts";
import {
  type ControlMessage,
  type DisconnectReason,
  encodeDataFrameHeader,
  MAX_DATA_PAYLOAD_BYTES,
  streamIdBytes,
} from "../protocol/frames.ts";
import {
  type ReceiveLimits,
  ReceiveWindow,
  SendWindow,
  StreamClosedError,
  type WindowStallCounter,
} from "./flow_control.ts";
import { nextStreamState, OPEN_STREAM, type StreamEvent, type StreamState } from "./stream_state.ts";

/** What a stream needs from its session: sending frames and waiting for the socket to drain. */
export interface StreamTransport {
  readonly label: string;
  /** Null when the peer understands `close_write` (our agent and nodes do); see {@linkcode Duplex}. */
  readonly unsignalledEndTimeoutMs: number | null;
  /** Sends one data frame: this stream's header ({@linkcode encodeDataFrameHeader}) and a payload of at most
   * `MAX_DATA_PAYLOAD_BYTES` (the stream slices its writes to it, so the session does not check again). */
  sendData(dataHeader: Uint8Array, payload: Uint8Array): void;
  sendControl(message: ControlMessage): void;
  /** Undefined when the WebSocket can take more now, else a promise that resolves when it can. */
  whenWritable(): Promise<void> | undefined;
  /**
   * A received chunk is no longer used by anyone: its message's buffer may be reused (see
   * `MessageSocket.recycle`).
   */
  recycle(chunk: Uint8Array): void;
  /** The stream is finished locally: forget its id. */
  release(id: string): void;
  /** The receive side overflowed: the sender ignored credits and pause. */
  reportOverflow(stream: MuxStream): void;
}

/** A multiplexed stream. */
export class MuxStream implements Duplex {
  readonly id: string;
  readonly label: string;
  readonly unsignalledEndTimeoutMs: number | null;
  /** Frames the peer may send on this stream before its reader takes them: the credits this side granted. */
  readonly windowFrames: number;
  /** The header of every data frame this stream sends. */
  readonly #dataHeader: Uint8Array;
  readonly #transport: StreamTransport;
  readonly #send: SendWindow;
  readonly #receive: ReceiveWindow;
  readonly #queue: Uint8Array[] = [];
  /** The chunk the reader has now: given back to the socket's pool at its next read (Duplex.read's rule). */
  #lent: Uint8Array | null = null;
  #reader: { resolve: (chunk: Uint8Array | null) => void; reject: (error: Error) => void } | null = null;
  /** Both directions' states (stream_state.ts); every change goes through {@linkcode #on}. */
  #state: StreamState = OPEN_STREAM;
  /** Why we closed the stream, once its state says `closed`. */
  #closedReason = "";
  /** What the session died of, once its state says `failed`. */
  #failure: Error | null = null;

  constructor(
    id: string,
    transport: StreamTransport,
    flow: {
      sendCredits: number;
      windowFrames: number;
      receiveLimits: ReceiveLimits;
      /** Where this stream's waits for credits are counted. */
      stalls: WindowStallCounter;
    },
  ) {
    this.id = id;
    this.#dataHeader = encodeDataFrameHeader(streamIdBytes(id));
    this.#transport = transport;
    this.label = `stream ${id.slice(0, 8)} via ${transport.label}`;
    this.unsignalledEndTimeoutMs = transport.unsignalledEndTimeoutMs;
    this.#send = new SendWindow(flow.sendCredits, flow.stalls);
    this.windowFrames = flow.windowFrames;
    this.#receive = new ReceiveWindow(flow.receiveLimits);
  }

  /** Frames waiting for the local reader (for tests and status). */
  get bufferedFrames(): number {
    return this.#receive.bufferedFrames;
  }

  /** Bytes waiting for the local reader (for tests and status). */
  get bufferedBytes(): number {
    return this.#receive.bufferedBytes;
  }

  /** Both directions' states, for tests and status. */
  get state(): StreamState {
    return this.#state;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#lent !== null) {
      this.#transport.recycle(this.#lent);
      this.#lent = null;
    }
    const chunk = this.#queue.shift();
    if (chunk !== undefined) return Promise.resolve(this.#handOut(chunk));
    if (this.#state.read === "open") {
      return new Promise((resolve, reject) => {
        this.#reader = { resolve, reject };
      });
    }
    const error = this.#readError();
    return error === null ? Promise.resolve(null) : Promise.reject(error);
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let offset = 0; offset < chunk.length;) {
      try {
        if (!this.#send.tryTake()) await this.#send.take();
        const drained = this.#transport.whenWritable();
        if (drained !== undefined) await drained;
      } catch (error) {
        throw this.#writeError() ?? error;
      }
      const error = this.#writeError();
      if (error !== null) throw error;
      const end = Math.min(offset + MAX_DATA_PAYLOAD_BYTES, chunk.length);
      this.#transport.sendData(this.#dataHeader, chunk.subarray(offset, end));
      offset = end;
    }
  }

  closeWrite(): Promise<void> {
    if (this.#state.write !== "open") return Promise.resolve();
    this.#on("local_ended");
    // A peer without half-close cannot be told (Duplex.unsignalledEndTimeoutMs says how long it may then stay).
    if (this.unsignalledEndTimeoutMs === null) {
      this.#transport.sendControl({ type: "close_write", id: this.id });
    }
    return Promise.resolve();
  }

  /** Closes the stream; `code` is the reason the peer is told (default `normal` when graceful, none otherwise). */
  close(reason: string, options?: { graceful?: boolean; code?: DisconnectReason }): Promise<void> {
    if (this.#state.read === "closed" || this.#state.read === "failed") return Promise.resolve();
    // Only a peer that still holds the stream is told; one that dropped it, or a dead session, has no one to tell.
    // Nor one that ended its direction with `close_write` and was sent ours: both ends know the stream is over
    // (§5.3) and each lets go of it, so a `disconnect` each way would be two messages per connection for nothing.
    const bothEnded = this.#state.read === "ended" && this.#state.write === "ended" &&
      this.unsignalledEndTimeoutMs === null;
    const tellPeer = !bothEnded && (this.#state.write === "open" || this.#state.write === "ended");
    this.#closedReason = reason;
    this.#on("local_closed");
    this.#send.close(reason);
    this.#settleReader();
    if (tellPeer) {
      const code = options?.code ?? (options?.graceful ? "normal" : undefined);
      this.#transport.sendControl({ type: "close", id: this.id, ...(code ? { reason: code } : {}) });
    }
    this.#transport.release(this.id);
    return Promise.resolve();
  }

  // --- Called by the session for frames addressed to this stream. ---

  /** A data frame arrived. */
  receiveData(payload: Uint8Array): void {
    if (this.#state.read !== "open") return this.#transport.recycle(payload);
    if (!this.#receive.arrive(payload.length)) {
      this.#transport.reportOverflow(this);
      // `buffer_full` is the original's word for this (§3.3), so either kind of peer knows why.
      void this.close("receive buffer overflow: the sender ignored flow control", { code: "buffer_full" });
      return;
    }
    this.#queue.push(payload);
    if (this.#reader !== null) this.#settleReader();
  }

  /** The peer will send no more data but still reads ours. */
  receiveCloseWrite(): void {
    this.#on("peer_ended");
    if (this.#queue.length === 0) this.#settleReader();
  }

  /** The peer dropped the stream: queued data is still read, then the end; writes fail with PeerGoneError. */
  receiveClose(): void {
    this.#on("peer_closed");
    this.#send.close("peer closed the stream");
    if (this.#queue.length === 0) this.#settleReader();
  }

  /** Credits or a legacy resume arrived. */
  receiveResume(credits: number | undefined, initialWindow: number): void {
    if (credits !== undefined && credits > 0) this.#send.grant(credits, initialWindow);
    else this.#send.resume();
  }

  /** The peer counts credits after all: what waits here is bounded by this stream's window from now on. */
  countCredits(limits: ReceiveLimits): void {
    this.#receive.countCredits(limits);
  }

  /** The peer asked us to stop sending (legacy pause). */
  receivePause(): void {
    this.#send.pause();
  }

  /** The session died: writes fail now, reads fail once what already arrived has been read. */
  fail(reason: string): void {
    if (this.#state.read === "closed" || this.#state.read === "failed") return;
    this.#failure = new StreamClosedError(reason);
    this.#on("session_failed");
    this.#send.close(reason);
    if (this.#queue.length === 0) this.#settleReader();
  }

  #on(event: StreamEvent): void {
    this.#state = nextStreamState(this.#state, event);
  }

  /** What a read past the queue gets once reading is no longer open: the end (null) or why not. */
  #readError(): Error | null {
    switch (this.#state.read) {
      case "failed":
        return this.#failure;
      case "closed":
        return new StreamClosedError(this.#closedReason);
      default:
        return null;
    }
  }

  /** Why a write cannot go out now, or null when it can. */
  #writeError(): Error | null {
    switch (this.#state.write) {
      case "open":
        return null;
      case "ended":
        return new StreamClosedError("written after its end (closeWrite)");
      case "peer_gone":
        return new PeerGoneError(this.label);
      case "failed":
        return this.#failure;
      case "closed":
        return new StreamClosedError(this.#closedReason);
    }
  }

  /** `chunk` goes to the reader: its credits go back, and its buffer is given back at the next read. */
  #handOut(chunk: Uint8Array): Uint8Array {
    this.#lent = chunk;
    const grant = this.#receive.consume(chunk.length);
    if (grant > 0 && this.#state.read === "open") {
      this.#transport.sendControl({ type: "resume", id: this.id, credits: grant });
    }
    return chunk;
  }

  /** Hands the waiting reader its next chunk, the end, or the failure. */
  #settleReader(): void {
    const reader = this.#reader;
    if (reader === null) return;
    this.#reader = null;
    const chunk = this.#queue.shift();
    if (chunk !== undefined) {
      reader.resolve(this.#handOut(chunk));
      return;
    }
    const error = this.#readError();
    if (error === null) reader.resolve(null);
    else reader.reject(error);
  }
}
