/**
 * A multiplexing session over one WebSocket: many {@linkcode MuxStream}s, the control events of the original
 * protocol (§3) and our credit and half-close extensions. The hub (node ↔ backend), the agent (backend ↔
 * node) and the mesh (node ↔ node) all run the same session; they differ only in the options below.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import {
  type ControlMessage,
  type DecodedFrame,
  decodeFrame,
  type DisconnectReason,
  encodeControlFrame,
  INITIAL_STREAM_CREDITS,
  newStreamId,
  type StreamOpenInfo,
} from "../protocol/frames.ts";
import { AnnouncementAssembler, announcementParts } from "../protocol/announcement.ts";
import { type Dialect, ORIGINAL, ORIGINAL_CREDITS } from "./dialect.ts";
import {
  type BufferBudget,
  MIN_RECEIVE_WINDOW_FRAMES,
  StreamClosedError,
  WindowStallCounter,
} from "./flow_control.ts";
import type { MessageSocket } from "../transport/message_socket.ts";
import { MuxStream, type StreamTransport } from "./stream.ts";

/**
 * WebSocket subprotocol by which our agent and our nodes announce that they speak credits from the first frame,
 * `close_write` and session `ping`/`pong`. The original's client offers no subprotocol and gets the original
 * protocol (§7.2, §7.3: credits only once the peer grants some).
 */
export const MUX_SUBPROTOCOL = "nexus-mux.v1";

/** Options of a {@linkcode MuxSession}. */
export interface MuxSessionOptions {
  /** For logs: `backend app-1 203.0.113.9:4711`, `peer wss://eu.example.com/mesh`. */
  readonly label: string;
  /** How the peer speaks the protocol, as its handshake told (see dialect.ts). */
  readonly dialect: Dialect;
  readonly log: Logger;
  /** Most streams open at once on this session; further opens are refused. */
  readonly maxStreams: number;
  /** Bytes one stream may buffer from a peer that ignores credits before that stream alone is closed. */
  readonly legacyStreamBufferBytes: number;
  /**
   * Frames a stream opened by this side may receive before its reader takes them: the credits its `open`
   * grants, so what one slow reader can make this side hold. Default 64, the protocol's window (§5.2); the
   * peer's own opens always get 64, which the peer assumes.
   */
  readonly receiveWindowFrames?: number;
  /**
   * For peers that count credits: the node-wide budget those windows are reserved from; a stream opened while
   * it runs low gets a smaller window, down to {@linkcode MIN_RECEIVE_WINDOW_FRAMES}.
   */
  readonly receiveBudget?: BufferBudget;
  /**
   * Where the session's streams count their waits for credits: a node or an agent shares one among its
   * sessions, for its metrics. Absent: the session keeps its own.
   */
  readonly windowStalls?: WindowStallCounter;
  /** A peer opened a stream. Absent: peer-opened streams are refused. */
  readonly onStreamOpened?: (stream: MuxStream, info: StreamOpenInfo) => void;
  /** A peer announced the names it serves (mesh). */
  readonly onAnnounce?: (version: number, routes: readonly string[]) => void;
  /** The peer is shutting down: it opens no more streams and accepts none (open ones go on). */
  readonly onDrain?: () => void;
  /** A text message arrived after the handshake (the original's re-authentication challenges). */
  readonly onText?: (text: string) => void;
  /**
   * Sends a session ping this often and closes the session after two intervals of silence, to a peer whose
   * dialect has heartbeats; 0: never.
   */
  readonly heartbeatIntervalMs?: number;
  /** Messages that arrived during the handshake but belong to the session (see `WebSocketInbox.detach`). */
  readonly pendingMessages?: readonly unknown[];
}

/** Why a session ended. */
export interface SessionEnd {
  readonly reason: string;
  /** Whether we closed it (shutdown, policy) rather than the peer or the network. */
  readonly local: boolean;
}

/** One WebSocket carrying many streams. */
export class MuxSession {
  readonly label: string;
  /** Resolves once the WebSocket has closed and every stream has been failed. */
  readonly closed: Promise<SessionEnd>;
  readonly #ws: MessageSocket;
  readonly #options: MuxSessionOptions;
  readonly #streams = new Map<string, MuxStream>();
  readonly #transport: StreamTransport;
  readonly #windowStalls: WindowStallCounter;
  /** How the peer speaks; an original peer's first credit grant shows it to be of the newer generation. */
  #dialect: Dialect;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #lastReceivedMs = Date.now();
  #end: SessionEnd | null = null;
  #resolveClosed!: (end: SessionEnd) => void;
  /** Resolves when the WebSocket itself has closed (its closing handshake done, or the connection gone). */
  readonly #socketClosed: Promise<void>;
  #resolveSocketClosed!: () => void;
  #unknownStreamFrames = 0;
  /** Either side said it is shutting down: no new streams either way. */
  #draining = false;
  #pausesReceived = 0;
  #refusedOpens = 0;
  /** Resolves when the current pace interval ends (dialects with a write pace only). */
  #paced: Promise<void> | null = null;
  /** Frames each stream opened here reserved from the receive budget, returned when the stream goes. */
  readonly #reservedFrames = new Map<string, number>();
  /** Joins the parts of the peer's announcements (mesh). */
  readonly #announcements = new AnnouncementAssembler();

  /** Takes over an open WebSocket whose handshake is complete; sets its message and close handlers. */
  constructor(ws: MessageSocket, options: MuxSessionOptions) {
    this.#ws = ws;
    this.#options = options;
    this.label = options.label;
    this.#dialect = options.dialect;
    this.#windowStalls = options.windowStalls ?? new WindowStallCounter();
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#socketClosed = new Promise((resolve) => (this.#resolveSocketClosed = resolve));
    ws.binaryType = "arraybuffer";
    this.#transport = {
      label: options.label,
      unsignalledEndTimeoutMs: options.dialect.unsignalledEndTimeoutMs,
      sendData: (dataHeader, payload) => this.#sendData(dataHeader, payload),
      sendControl: (message) => this.#send(encodeControlFrame(message)),
      whenWritable: () => this.#whenWritable(),
      recycle: (chunk) => ws.recycle(chunk),
      release: (id) => this.#forget(id),
      reportOverflow: (stream) => {
        this.#options.log.warn("stream closed: peer sent more than its receive buffer allows", {
          session: this.label,
          stream: stream.id,
          buffered_frames: stream.bufferedFrames,
        });
      },
    };
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => {
      this.#resolveSocketClosed();
      this.#finish(event.reason || `closed with code ${event.code}`, false);
    };
    ws.onerror = () => {
      // The close event follows with the reason; nothing to do here but keep the error from being unhandled.
    };
    const interval = options.dialect.heartbeats ? options.heartbeatIntervalMs ?? 0 : 0;
    if (interval > 0) {
      this.#heartbeatTimer = setInterval(() => this.#heartbeat(interval), interval);
      Deno.unrefTimer(this.#heartbeatTimer);
    }
    for (const data of options.pendingMessages ?? []) this.#onMessage(data);
    if (ws.readyState === WebSocket.CLOSED) {
      this.#resolveSocketClosed();
      this.#finish("closed during the handshake", false);
    }
  }

  /** How the peer speaks the protocol. */
  get dialect(): Dialect {
    return this.#dialect;
  }

  /** Streams currently open. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** `pause_stream`s the peer has sent so far (the original client's only brake, §7.2), shown in `/status`. */
  get pausesReceived(): number {
    return this.#pausesReceived;
  }

  /**
   * Bytes received for open streams that their readers have not taken yet: what this session holds in memory
   * on the receiving side. Summed on demand (for status and tests), so the data path pays nothing for it.
   */
  get bufferedBytes(): number {
    let total = 0;
    for (const stream of this.#streams.values()) total += stream.bufferedBytes;
    return total;
  }

  /** Whether the session is still open. */
  get isOpen(): boolean {
    return this.#end === null;
  }

  /** Whether {@linkcode openStream} would succeed now: open, not draining and below its stream limit. */
  get acceptsStreams(): boolean {
    return this.#end === null && !this.#draining && this.#streams.size < this.#options.maxStreams;
  }

  /** Whether either side has said it is shutting down ({@linkcode drain}). */
  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Tells the peer this side is shutting down: from now on neither side opens a stream on this session, and
   * streams already open go on until they end or the session closes. A peer of the original protocol has no
   * word for it and is not told; streams it still opens are refused with reason `shutdown`. Idempotent.
   */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    if (this.#dialect.halfClosesAndDrains) this.#send(encodeControlFrame({ type: "drain" }));
  }

  /**
   * Opens a stream to the peer (`connect`, §3.2). Returns null when the session is closed or at its stream
   * limit; the caller refuses the client.
   */
  openStream(info: StreamOpenInfo): MuxStream | null {
    if (!this.acceptsStreams) return null;
    const id = newStreamId();
    const wanted = this.#options.receiveWindowFrames ?? INITIAL_STREAM_CREDITS;
    const budget = this.#dialect.peerCountsCredits ? this.#options.receiveBudget : undefined;
    const window = budget === undefined ? wanted : budget.reserve(wanted, MIN_RECEIVE_WINDOW_FRAMES);
    if (budget !== undefined) this.#reservedFrames.set(id, window);
    const stream = this.#createStream(id, this.#dialect.initialSendCredits, window);
    this.#send(encodeControlFrame({ type: "open", id, info, credits: window }));
    return stream;
  }

  /** Tells a peer node which names this node serves (mesh), in as many frames as the names need. */
  announce(version: number, routes: readonly string[]): void {
    for (const part of announcementParts(version, routes)) this.#send(encodeControlFrame(part));
  }

  /** Sends a text message (handshake and re-authentication tokens). */
  sendText(text: string): void {
    if (this.#end === null && this.#ws.readyState === WebSocket.OPEN) this.#ws.send(text);
  }

  /** Closes the WebSocket and fails every stream. `code` 1000 for a normal close. Idempotent. */
  close(code: number, reason: string): void {
    if (this.#end !== null) return;
    try {
      this.#ws.close(code, truncateReason(reason));
    } catch {
      // A client may only use 1000 and 3000–4999: close normally with the same reason instead.
      try {
        this.#ws.close(1000, truncateReason(reason));
      } catch {
        // Already closing.
      }
    }
    this.#finish(reason, true);
  }

  /**
   * Closes like {@linkcode close}, then waits (at most `timeoutMs`) for the WebSocket's closing handshake to
   * finish. The peer answers a close only after reading everything sent before it, so once this resolves the
   * last frames of the streams that finished have arrived, and the process may exit without cutting them off.
   */
  async closeGracefully(code: number, reason: string, timeoutMs: number): Promise<void> {
    this.close(code, reason);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#socketClosed,
      new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  #createStream(id: string, sendCredits: number, windowFrames = INITIAL_STREAM_CREDITS): MuxStream {
    const stream = new MuxStream(id, this.#transport, {
      sendCredits,
      windowFrames,
      receiveLimits: this.#dialect.receiveLimits(windowFrames, this.#options.legacyStreamBufferBytes),
      stalls: this.#windowStalls,
    });
    this.#streams.set(id, stream);
    return stream;
  }

  #send(frame: Uint8Array): void {
    if (this.#end !== null || this.#ws.readyState !== WebSocket.OPEN) return;
    this.#ws.send(frame);
  }

  /**
   * A data frame goes out as its stream's 17-byte header and the payload, copied once, straight into the
   * WebSocket's output: every frame sent in one turn leaves in the socket's one write of that turn.
   */
  #sendData(dataHeader: Uint8Array, payload: Uint8Array): void {
    if (this.#end !== null || this.#ws.readyState !== WebSocket.OPEN) return;
    this.#ws.sendParts([dataHeader, payload]);
  }

  /**
   * Undefined when the WebSocket may take more now; else resolves once it has drained to half its mark (and,
   * for a dialect with a pace, once that time has passed too).
   */
  #whenWritable(): Promise<void> | undefined {
    // In the closing handshake the socket takes nothing more: a write then must fail, not vanish, or a splice
    // would go on reading its client and counting bytes as moved until the session ends (up to seconds).
    if (this.#end === null && this.#ws.readyState !== WebSocket.OPEN) return this.#closing();
    const highWaterBytes = this.#dialect.writeHighWaterBytes;
    if (this.#end !== null || this.#ws.bufferedAmount < highWaterBytes) return undefined;
    const drained = this.#ws.whenDrained(highWaterBytes / 2).then(() =>
      this.#ws.readyState === WebSocket.OPEN ? undefined : this.#closing()
    );
    if (this.#dialect.writePaceMs === 0) return drained;
    // One timer for every writer that waits in the same interval.
    this.#paced ??= new Promise<void>((resolve) =>
      setTimeout(() => {
        this.#paced = null;
        resolve();
      }, this.#dialect.writePaceMs)
    );
    return Promise.all([drained, this.#paced]).then(() => {});
  }

  #closing(): Promise<void> {
    return Promise.reject(new StreamClosedError(`session ${this.label} is closing`));
  }

  #onMessage(data: unknown): void {
    // The WebSocket still delivers what arrives during its closing handshake; an ended session must not act
    // on it (a late announcement would re-add the routes of a link already removed from the router).
    if (this.#end !== null) return;
    this.#lastReceivedMs = Date.now();
    if (typeof data === "string") {
      if (this.#options.onText) this.#options.onText(data);
      else this.#options.log.debug("text message ignored outside a handshake", { session: this.label });
      return;
    }
    // The runtime's WebSocket delivers ArrayBuffers, ours views it no longer reuses (see transport/websocket.ts).
    const bytes = data instanceof Uint8Array
      ? data
      : data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : null;
    if (bytes === null) return;
    if (bytes.byteLength > this.#dialect.largestMessageBytes) {
      this.#options.log.warn("closing session: message larger than the protocol allows", {
        session: this.label,
        bytes: bytes.byteLength,
      });
      this.close(1009, "message too big");
      return;
    }
    const frame = decodeFrame(bytes);
    if (frame.kind !== "batch") return this.#onFrame(frame);
    if (!this.#dialect.batches) {
      this.#options.log.warn("invalid frame ignored", {
        session: this.label,
        why: "batch outside our protocol",
      });
      return;
    }
    for (const inner of frame.frames) {
      // A frame of the batch may have ended the session: the rest has no one to go to.
      if (this.#end !== null) return;
      // Each in a buffer of its own: a stream gives its chunk's buffer back to the pool at its next read, and
      // the frames of one batch share one (only earlier versions send batches, so the copy is rare).
      this.#onFrame(decodeFrame(inner.slice()));
    }
  }

  #onFrame(frame: DecodedFrame): void {
    switch (frame.kind) {
      case "data": {
        const stream = this.#streams.get(frame.id);
        // Data for a stream we already closed is normal at the tail of a close (§3.4): drop it quietly.
        if (stream !== undefined) return stream.receiveData(frame.payload);
        this.#unknownStreamFrames += 1;
        this.#ws.recycle(frame.payload);
        return;
      }
      case "control":
        this.#onControl(frame.message);
        return;
      case "ignored":
        this.#options.log.debug("frame ignored", { session: this.label, why: frame.reason });
        return;
      case "invalid":
      case "batch":
        this.#options.log.warn("invalid frame ignored", {
          session: this.label,
          why: frame.kind === "batch" ? "batch inside a batch" : frame.reason,
        });
        return;
    }
  }

  #onControl(message: ControlMessage): void {
    switch (message.type) {
      case "open":
        this.#onOpen(message.id, message.info, message.credits);
        return;
      case "close":
        this.#streams.get(message.id)?.receiveClose();
        this.#forget(message.id);
        return;
      case "close_write":
        this.#streams.get(message.id)?.receiveCloseWrite();
        return;
      case "pause":
        this.#pausesReceived += 1;
        this.#streams.get(message.id)?.receivePause();
        return;
      case "resume":
        if (message.credits !== undefined && message.credits > 0 && this.#dialect === ORIGINAL) {
          this.#countCredits();
        }
        this.#streams.get(message.id)?.receiveResume(message.credits, INITIAL_STREAM_CREDITS);
        return;
      case "ping_stream":
        // Answer only for live streams, as the original does (§3.4): silence tells the peer it is gone.
        if (this.#streams.has(message.id)) {
          this.#send(encodeControlFrame({ type: "pong_stream", id: message.id }));
        }
        return;
      case "ping":
        this.#send(encodeControlFrame({ type: "pong" }));
        return;
      case "pong_stream":
      case "pong":
        return;
      case "drain":
        if (this.#draining) return;
        this.#draining = true;
        this.#options.onDrain?.();
        return;
      case "announce": {
        const progress = this.#announcements.accept(message);
        if (progress.kind === "complete") this.#options.onAnnounce?.(progress.version, progress.routes);
        else if (progress.kind === "refused") {
          this.#options.log.warn("announcement ignored", { session: this.label, why: progress.reason });
        }
        return;
      }
    }
  }

  #onOpen(id: string, info: StreamOpenInfo, credits: number | undefined): void {
    const refuse = (why: string, reason: DisconnectReason = "local_error") => {
      // Said once per session, then counted: a peer must not be able to write our log one line per frame.
      this.#refusedOpens += 1;
      const log = this.#refusedOpens === 1 ? this.#options.log.warn : this.#options.log.debug;
      log.call(this.#options.log, "stream refused", {
        session: this.label,
        stream: id,
        why,
        refused_so_far: this.#refusedOpens,
      });
      this.#send(encodeControlFrame({ type: "close", id, reason }));
    };
    if (this.#options.onStreamOpened === undefined) {
      // Only one side opens streams here (the node, to its backends): a peer that opens some breaks the protocol.
      this.#options.log.warn("closing session: the peer opened a stream, which only this side may do", {
        session: this.label,
      });
      this.close(1008, "protocol violation: the peer may not open streams");
      return;
    }
    if (this.#draining) return refuse("shutting down", "shutdown");
    if (this.#streams.has(id)) return refuse("stream id already in use");
    if (this.#streams.size >= this.#options.maxStreams) return refuse("too many streams on this session");
    const stream = this.#createStream(id, credits ?? this.#dialect.initialSendCredits);
    // A peer of the original protocol learns our window only from an explicit grant (§7.2).
    if (this.#dialect.grantsOnPeerOpen) {
      this.#send(encodeControlFrame({ type: "resume", id, credits: INITIAL_STREAM_CREDITS }));
    }
    this.#options.onStreamOpened(stream, info);
  }

  /**
   * Only the original's newer generation grants credits (§7.3): from its first grant on, it is taken at its
   * word, and its open streams are bounded by their windows instead of the byte cap.
   */
  #countCredits(): void {
    this.#dialect = ORIGINAL_CREDITS;
    this.#options.log.debug("peer counts credits: the original's newer generation", { session: this.label });
    for (const stream of this.#streams.values()) {
      stream.countCredits(
        ORIGINAL_CREDITS.receiveLimits(stream.windowFrames, this.#options.legacyStreamBufferBytes),
      );
    }
  }

  /** The stream is gone from this session: drop it and return its reservation. */
  #forget(id: string): void {
    this.#streams.delete(id);
    const frames = this.#reservedFrames.get(id);
    if (frames === undefined) return;
    this.#reservedFrames.delete(id);
    this.#options.receiveBudget?.release(frames);
  }

  #heartbeat(intervalMs: number): void {
    if (Date.now() - this.#lastReceivedMs > 2 * intervalMs) {
      this.#options.log.warn("closing session: peer silent", {
        session: this.label,
        silent_ms: 2 * intervalMs,
      });
      this.close(1001, "peer silent");
      return;
    }
    this.#send(encodeControlFrame({ type: "ping" }));
  }

  #finish(reason: string, local: boolean): void {
    if (this.#end !== null) return;
    this.#end = { reason, local };
    clearInterval(this.#heartbeatTimer);
    const streams = [...this.#streams.values()];
    for (const id of this.#streams.keys()) this.#forget(id);
    for (const stream of streams) stream.fail(`session ended: ${reason}`);
    if (this.#unknownStreamFrames > 0) {
      this.#options.log.debug("frames for closed streams were dropped", {
        session: this.label,
        frames: this.#unknownStreamFrames,
      });
    }
    this.#resolveClosed(this.#end);
  }
}

/** WebSocket close reasons are limited to 123 bytes; longer ones make the close itself fail. */
export function truncateReason(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.length <= 123) return reason;
  return new TextDecoder().decode(bytes.subarray(0, 120)).replace(/\uFFFD$/, "") + "...";
}
