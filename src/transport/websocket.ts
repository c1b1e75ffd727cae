/**
 * A WebSocket connection (RFC 6455) over a socket this code holds itself, after the opening handshake: the
 * links a Nexus process dials (agent to hub, node to peer) and the ones its hub accepts. Owning the socket is
 * what the runtime's `WebSocket` does not allow: `TCP_NODELAY`, one write per turn of the event loop for every
 * frame sent in it, a message-size limit that can start small and grow once the peer has authenticated, and a
 * socket that is really closed when the connection is given up.
 *
 * It has the part of the `WebSocket` interface a {@linkcode MessageSocket} names, with the same behaviour:
 * `open`, `message`, `error` and `close` events, `bufferedAmount`, the closing handshake. Messages are
 * delivered as `Uint8Array` (binary; the receiver's to keep) or `string` (text). The client role masks what it sends and may only
 * close with 1000 or 3000–4999, as the WebSocket API allows; the server role sends unmasked frames, requires
 * masked ones, and may use any close code a server may send.
 *
 * @module
 */

import {
  FrameReader,
  maskInPlace,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  type WebSocketRole,
} from "./frame_reader.ts";
import { MessagePool } from "./message_pool.ts";
import type { MessageSocket } from "./message_socket.ts";

/** Options of a {@linkcode WebSocketConnection}. */
export interface WebSocketConnectionOptions {
  readonly role: WebSocketRole;
  /** Largest message accepted; a bigger one closes the connection with 1009. Default 1 MiB. */
  readonly maxMessageBytes?: number;
  /**
   * Ping after this much silence from the peer, and close when as long again passes without a word (a peer
   * that stopped answering); 0 or absent: never.
   */
  readonly idleTimeoutMs?: number;
}

export const CONNECTING = 0;
export const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/**
 * Bare acknowledgements (empty pongs) after reads of a full TLS record or more, as in a bulk transfer, go out
 * at most once per this interval: one per read cost as much as the data itself. A read in between is
 * acknowledged when the interval ends, so a frame the server holds back waits at most this long instead of a
 * delayed ACK's 40 ms. Smaller reads, as in request/response traffic, are acknowledged at once.
 */
const ACK_INTERVAL_MS = 1;
/** Reads this large count as bulk: one TLS record's worth of plaintext (RFC 8446 §5.1). */
const BULK_READ_BYTES = 16 * 1024;
/** The output buffers of an idle connection. */
const SMALL_OUTPUT_BYTES = 4 * 1024;
/** Output not yet written above which nothing more is read from the peer (see #readFrames). */
const MAX_UNREAD_OUTPUT_BYTES = 4 * 1024 * 1024;
/** Small writes in a row after which grown output buffers are given back. */
const SMALL_WRITES_BEFORE_SHRINK = 64;
/**
 * Grown output buffers are also given back once nothing has been sent for this long: a connection that goes
 * quiet right after a burst writes nothing small either, and kept two 4 MiB buffers (measured at the agent
 * after the benchmark's 64 streams).
 */
const OUTPUT_QUIET_MS = 1_000;
/** How long a close waits for the peer's close frame before dropping the connection. */
const CLOSE_TIMEOUT_MS = 5_000;

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

type Listener = (event: Event) => void;

/**
 * One WebSocket connection. It starts CONNECTING; {@linkcode attach} hands it the socket once the opening
 * handshake is done ({@linkcode acceptWebSocket} on a server, `WebSocketClient` on a client).
 */
export class WebSocketConnection implements MessageSocket {
  /** Kept for compatibility: binary messages are always delivered as `Uint8Array`. */
  binaryType: BinaryType = "arraybuffer";
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  readonly #role: WebSocketRole;
  readonly #idleTimeoutMs: number;
  #readyState = CONNECTING;
  #protocol = "";
  #conn: Deno.Conn | null = null;
  readonly #listeners = new Map<string, Set<Listener>>();
  #maxMessageBytes: number;
  #reader: FrameReader | null = null;
  /** Where received binary messages live until their reader gives them back ({@linkcode recycle}). */
  readonly #pool = new MessagePool();
  /** Frames encoded and not yet handed to the socket; written in one go when the current write finishes. */
  #pending = new Uint8Array(SMALL_OUTPUT_BYTES);
  #pendingBytes = 0;
  /** The other output buffer: frames queued while one is being written go to the other. */
  #spare = new Uint8Array(SMALL_OUTPUT_BYTES);
  /** Bytes of the write in progress not yet accepted by the socket. */
  #writingBytes = 0;
  /** Writes in a row that used less than an eighth of their buffer. */
  #smallWrites = 0;
  #flushScheduled = false;
  /** Waiting for everything queued to be written (the close frame, a peer that does not read). */
  readonly #flushWaiters: Array<() => void> = [];
  /** Writers waiting for the output to drain below their mark ({@linkcode whenDrained}). */
  #drainWaiters: Array<{ readonly bufferedBytes: number; readonly wake: () => void }> = [];
  /** When a frame was last queued: every frame carries our TCP ACK. */
  #lastSentMs = 0;
  /** Data arrived since the last frame we queued, so the peer may be waiting for our ACK. */
  #readSinceSend = false;
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  /** Armed while grown output buffers are held (see OUTPUT_QUIET_MS). */
  #shrinkTimer: ReturnType<typeof setTimeout> | undefined;
  #lastReceivedMs = 0;
  #idleTimer: ReturnType<typeof setInterval> | undefined;
  #closeSent = false;
  /** A pong is queued and not yet written. */
  #pongPending = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;
  /** Masking keys, drawn from the CSPRNG in batches (RFC 6455 §5.3 asks for unpredictable keys). */
  readonly #maskKeys = new Uint32Array(1024);
  #maskIndex = 1024;

  constructor(options: WebSocketConnectionOptions) {
    this.#role = options.role;
    this.#maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 0;
  }

  get readyState(): number {
    return this.#readyState;
  }

  /** The subprotocol agreed in the opening handshake, or `""`. */
  get protocol(): string {
    return this.#protocol;
  }

  /** Bytes of sent messages not yet handed to the operating system. */
  get bufferedAmount(): number {
    return this.#pendingBytes + this.#writingBytes;
  }

  /**
   * Raises (or lowers) the largest message accepted from now on: small until the peer has authenticated, so a
   * stranger cannot make this side buffer and parse megabytes.
   */
  setMaxMessageBytes(bytes: number): void {
    this.#maxMessageBytes = bytes;
    if (this.#reader !== null) this.#reader.maxMessageBytes = bytes;
  }

  /** `open`, `error` and `close` reach listeners; `message` goes to `onmessage` only. */
  addEventListener<K extends keyof WebSocketEventMap>(
    type: K,
    listener: (event: WebSocketEventMap[K]) => void,
  ): void {
    let set = this.#listeners.get(type);
    if (set === undefined) this.#listeners.set(type, set = new Set());
    set.add(listener as Listener);
  }

  removeEventListener<K extends keyof WebSocketEventMap>(
    type: K,
    listener: (event: WebSocketEventMap[K]) => void,
  ): void {
    this.#listeners.get(type)?.delete(listener as Listener);
  }

  /** Queues a message; it goes out with the others sent in the same turn of the event loop. */
  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.#readyState === CONNECTING) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#readyState !== OPEN) return;
    if (typeof data === "string") this.#queueFrame(OPCODE_TEXT, [encoder.encode(data)]);
    else if (ArrayBuffer.isView(data)) {
      this.#queueFrame(OPCODE_BINARY, [new Uint8Array(data.buffer, data.byteOffset, data.byteLength)]);
    } else this.#queueFrame(OPCODE_BINARY, [new Uint8Array(data)]);
  }

  /**
   * Sends `parts`, joined, as one binary message, copying each once straight into the output (masked there by a
   * client) and nothing joined first: a multiplexer's data frame is a 17-byte header and a payload. The parts
   * may be reused as soon as this returns.
   */
  sendParts(parts: readonly Uint8Array[]): void {
    if (this.#readyState === CONNECTING) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#readyState !== OPEN) return;
    this.#queueFrame(OPCODE_BINARY, parts);
  }

  /**
   * Resolves once at most `bufferedBytes` of what was sent is still unwritten ({@linkcode bufferedAmount}), or
   * once the connection is closing or gone, when nothing more can be sent anyway: what a writer waits on instead
   * of polling `bufferedAmount`.
   */
  whenDrained(bufferedBytes: number): Promise<void> {
    if (this.bufferedAmount <= bufferedBytes || this.#readyState !== OPEN) return Promise.resolve();
    return new Promise((wake) => this.#drainWaiters.push({ bufferedBytes, wake }));
  }

  /**
   * Gives back a received binary message's payload (or any view into it) once nothing uses it any more, so a
   * later message reuses its buffer (see message_pool.ts). Anything else is ignored.
   */
  recycle(payload: Uint8Array): void {
    this.#pool.recycle(payload);
  }

  /**
   * Starts the closing handshake. A client may only send 1000 or 3000–4999, like the WebSocket API; a server
   * any code but those reserved for the wire (1005, 1006, 1015). A reason has at most 123 bytes.
   */
  close(code?: number, reason = ""): void {
    if (code !== undefined && !this.#mayCloseWith(code)) {
      throw new DOMException(`Close code ${code} may not be sent by a ${this.#role}`, "InvalidAccessError");
    }
    const reasonBytes = encoder.encode(reason);
    if (reasonBytes.length > 123) throw new DOMException("Close reason longer than 123 bytes", "SyntaxError");
    if (this.#readyState === CLOSING || this.#readyState === CLOSED) return;
    if (this.#readyState === CONNECTING) {
      this.#readyState = CLOSING;
      this.abandonConnecting();
      return;
    }
    this.#readyState = CLOSING;
    this.#sendClose(code ?? 1000, reasonBytes);
    this.#wakeDrained();
    this.#closeTimer = setTimeout(
      () => this.#finish(1006, "closing handshake timed out", false),
      CLOSE_TIMEOUT_MS,
    );
  }

  /**
   * Closes and lets go of the socket as soon as the close frame is written, without waiting for the peer's
   * answer: for refusing a peer that has not proven itself, which must not keep anything of ours meanwhile
   * (RFC 6455 §7.1.1: a server closes the TCP connection first). Same codes as {@linkcode close}.
   */
  closeAndDrop(code: number, reason = ""): void {
    if (this.#readyState === CONNECTING || this.#readyState === CLOSED) return this.close(code, reason);
    if (!this.#closeSent) this.close(code, reason);
    void this.#flushed().then(() => this.#finish(code, reason, false));
  }

  /** Whether a close started while connecting: the opening handshake must then be given up. */
  protected get closedWhileConnecting(): boolean {
    return this.#readyState === CLOSING && this.#conn === null;
  }

  /** Gives a connection attempt up (a client overrides it to drop the socket it is still dialling). */
  protected abandonConnecting(): void {}

  /**
   * Takes over `conn` once the opening handshake is done: `leftover` are bytes read past the handshake, and
   * `protocol` the agreed subprotocol. Fires `open`; messages start a task later, so that whoever awaited the
   * open has set `onmessage` by then.
   */
  attach(conn: Deno.Conn, leftover: Uint8Array, protocol: string): void {
    if (this.#readyState !== CONNECTING) {
      closeQuietly(conn);
      this.#finish(1006, "closed before the connection was open", false);
      return;
    }
    this.#conn = conn;
    this.#protocol = protocol;
    this.#readyState = OPEN;
    this.#lastReceivedMs = Date.now();
    if (this.#idleTimeoutMs > 0) {
      this.#idleTimer = setInterval(() => this.#checkIdle(), Math.max(10, this.#idleTimeoutMs / 4));
      Deno.unrefTimer(this.#idleTimer);
    }
    this.#emit("open", new Event("open"), this.onopen);
    void this.#run(conn, leftover);
  }

  /** The connection could not be opened: fires `error` and `close` with code 1006. */
  failToOpen(why: string): void {
    this.#fail(why);
  }

  async #run(conn: Deno.Conn, leftover: Uint8Array): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.#reader = new FrameReader(this.#role, this.#maxMessageBytes, leftover, this.#pool);
    try {
      await this.#readFrames(conn, this.#reader);
    } catch (error) {
      if (!this.#finished) this.#fail(error instanceof Error ? error.message : String(error));
    }
  }

  #mayCloseWith(code: number): boolean {
    if (code >= 3000 && code <= 4999) return true;
    if (this.#role === "client") return code === 1000;
    return code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
  }

  async #readFrames(conn: Deno.Conn, reader: FrameReader): Promise<void> {
    for (;;) {
      for (let event = reader.next(); event.kind !== "more"; event = reader.next()) {
        switch (event.kind) {
          case "message":
            this.#deliver(event.opcode, event.payload);
            break;
          case "control":
            // While a pong waits to be written, further pings get none of their own (RFC 6455 §5.5.3 allows
            // answering only one): a peer pinging without reading must not grow our output.
            if (event.opcode === OPCODE_PING && !this.#pongPending) {
              this.#pongPending = true;
              this.#queueFrame(OPCODE_PONG, [event.payload.slice()]);
            } else if (event.opcode === OPCODE_CLOSE) return this.#receiveClose(event.payload);
            break;
          case "error":
            return this.#failWithClose(event.code, event.why);
        }
        if (this.#finished) return;
      }
      // A peer that does not read what we send gets nothing more read from it until it does: what it makes
      // us answer (pongs, credits) cannot pile up.
      if (this.bufferedAmount > MAX_UNREAD_OUTPUT_BYTES) await this.#flushed();
      if (this.#finished) return;
      const space = reader.space();
      const n = await conn.read(space);
      if (n === null) {
        this.#finish(1006, "connection closed without a close frame", false);
        return;
      }
      this.#lastReceivedMs = Date.now();
      reader.commit(n);
      if (this.#role === "client" && this.#pendingBytes === 0 && this.#readyState === OPEN) {
        this.#acknowledge(n);
      }
    }
  }

  #deliver(opcode: typeof OPCODE_TEXT | typeof OPCODE_BINARY, payload: Uint8Array): void {
    // Once this side has sent its close, what the peer still sends has no reader: drop it, keep nothing.
    if (this.#readyState !== OPEN || this.#closeSent) return;
    let data: string | Uint8Array;
    if (opcode === OPCODE_TEXT) {
      try {
        data = strictDecoder.decode(payload);
      } catch {
        this.#failWithClose(1007, "text message is not UTF-8");
        return;
      }
    } else {
      data = payload;
    }
    try {
      this.onmessage?.(new MessageEvent("message", { data }));
    } catch (error) {
      // A bug in a handler ends this connection, not the process (`reportError` would end the process).
      this.#failWithClose(1011, `internal error: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  #receiveClose(payload: Uint8Array): void {
    let code = 1005;
    let reason = "";
    if (payload.length >= 2) {
      code = (payload[0] << 8) | payload[1];
      try {
        reason = strictDecoder.decode(payload.subarray(2));
      } catch {
        reason = "";
      }
    }
    // Echo the close (RFC 6455 §5.5.1) unless we started the handshake, then drop the connection.
    if (!this.#closeSent) this.#sendClose(code === 1005 ? 1000 : code, EMPTY);
    this.#readyState = CLOSING;
    this.#wakeDrained();
    void this.#flushed().then(() => this.#finish(code, reason, true));
  }

  #sendClose(code: number, reasonBytes: Uint8Array): void {
    this.#closeSent = true;
    if (this.#reader !== null) this.#reader.discarding = true;
    const payload = new Uint8Array(2 + reasonBytes.length);
    payload[0] = code >> 8;
    payload[1] = code & 0xff;
    payload.set(reasonBytes, 2);
    this.#queueFrame(OPCODE_CLOSE, [payload]);
  }

  /** Fails the connection with a close frame (best effort), as the RFC asks of an endpoint that sees bad input. */
  #failWithClose(code: number, why: string): void {
    if (!this.#closeSent) this.#sendClose(code, encoder.encode(why.slice(0, 100)));
    this.#readyState = CLOSING;
    this.#wakeDrained();
    void this.#flushed().then(() => this.#fail(why, code));
  }

  #fail(why: string, code = 1006): void {
    if (this.#finished) return;
    this.#emit("error", new ErrorEvent("error", { message: why }), this.onerror);
    this.#finish(code, why, false);
  }

  #finish(code: number, reason: string, wasClean: boolean): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#readyState = CLOSED;
    clearTimeout(this.#closeTimer);
    clearTimeout(this.#ackTimer);
    clearTimeout(this.#shrinkTimer);
    clearInterval(this.#idleTimer);
    this.#pool.clear();
    if (this.#conn !== null) closeQuietly(this.#conn);
    this.#pendingBytes = 0;
    for (const wake of this.#flushWaiters.splice(0)) wake();
    this.#wakeDrained();
    this.#emit("close", new CloseEvent("close", { code, reason, wasClean }), this.onclose);
  }

  #emit<E extends Event>(type: string, event: E, handler: ((event: E) => void) | null): void {
    for (const listen of [handler, ...(this.#listeners.get(type) ?? [])]) {
      try {
        listen?.(event);
      } catch (error) {
        // A bug in a handler must not end the process (`reportError` would) nor keep other listeners from
        // hearing of the event; it is said once on stderr.
        console.error(`WebSocket ${type} handler failed:`, error);
      }
    }
  }

  /** A peer silent for the idle time gets a ping; one silent for twice that is gone. */
  #checkIdle(): void {
    if (this.#readyState !== OPEN) return;
    const silentMs = Date.now() - this.#lastReceivedMs;
    if (silentMs >= 2 * this.#idleTimeoutMs) {
      this.#finish(1006, `no answer from the peer for ${Math.round(silentMs / 1000)} s`, false);
    } else if (silentMs >= this.#idleTimeoutMs && this.#pendingBytes === 0) {
      this.#queueFrame(OPCODE_PING, []);
    }
  }

  /**
   * Acknowledges what was read with an unsolicited pong (RFC 6455 §5.5.3) when nothing else goes back: a server
   * whose socket lacks TCP_NODELAY (Deno's TLS server, the hub) holds its next small frame until our TCP ACK,
   * which the kernel delays up to 40 ms when it has no data to carry it on. Bulk reads are paced (ACK_INTERVAL_MS).
   */
  #acknowledge(readBytes: number): void {
    this.#readSinceSend = true;
    if (readBytes < BULK_READ_BYTES || performance.now() - this.#lastSentMs >= ACK_INTERVAL_MS) {
      this.#queueFrame(OPCODE_PONG, []);
      return;
    }
    this.#ackTimer ??= setTimeout(() => {
      this.#ackTimer = undefined;
      if (this.#readSinceSend && this.#readyState === OPEN) this.#queueFrame(OPCODE_PONG, []);
    }, ACK_INTERVAL_MS);
  }

  /**
   * Encodes one frame whose payload is `parts` joined (RFC 6455 §5.2) at the end of the pending output, each
   * part copied once, and masks it there in place (a client); schedules a flush.
   */
  #queueFrame(opcode: number, parts: readonly Uint8Array[]): void {
    if (this.#finished || this.#conn === null) return;
    this.#lastSentMs = performance.now();
    this.#readSinceSend = false;
    const masked = this.#role === "client";
    let length = 0;
    for (const part of parts) length += part.length;
    const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
    this.#reserve(2 + lengthBytes + (masked ? 4 : 0) + length);
    const out = this.#pending;
    let at = this.#pendingBytes;
    const maskBit = masked ? 0x80 : 0;
    out[at++] = 0x80 | opcode;
    if (lengthBytes === 0) {
      out[at++] = maskBit | length;
    } else if (lengthBytes === 2) {
      out[at++] = maskBit | 126;
      out[at++] = length >> 8;
      out[at++] = length & 0xff;
    } else {
      // Lengths stay below 2^53 (a message is bounded far below): the high word is a plain division.
      const high = Math.floor(length / 2 ** 32);
      out[at++] = maskBit | 127;
      out[at++] = high >>> 24;
      out[at++] = (high >>> 16) & 0xff;
      out[at++] = (high >>> 8) & 0xff;
      out[at++] = high & 0xff;
      out[at++] = length >>> 24;
      out[at++] = (length >>> 16) & 0xff;
      out[at++] = (length >>> 8) & 0xff;
      out[at++] = length & 0xff;
    }
    let key = 0;
    if (masked) {
      key = this.#nextMaskKey();
      out[at++] = key >>> 24;
      out[at++] = (key >>> 16) & 0xff;
      out[at++] = (key >>> 8) & 0xff;
      out[at++] = key & 0xff;
    }
    const payloadStart = at;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    if (masked) maskInPlace(out, payloadStart, length, key);
    this.#pendingBytes = at;
    if (!this.#flushScheduled && this.#writingBytes === 0) {
      this.#flushScheduled = true;
      queueMicrotask(() => void this.#flush());
    }
  }

  #reserve(bytes: number): void {
    const needed = this.#pendingBytes + bytes;
    if (needed <= this.#pending.length) return;
    const grown = new Uint8Array(Math.max(needed, this.#pending.length * 2));
    grown.set(this.#pending.subarray(0, this.#pendingBytes));
    this.#pending = grown;
  }

  #nextMaskKey(): number {
    if (this.#maskIndex === this.#maskKeys.length) {
      crypto.getRandomValues(this.#maskKeys);
      this.#maskIndex = 0;
    }
    return this.#maskKeys[this.#maskIndex++];
  }

  /** Writes what is pending, repeatedly, until nothing is; one write per batch of frames. */
  async #flush(): Promise<void> {
    this.#flushScheduled = false;
    const conn = this.#conn;
    if (conn === null) return;
    while (this.#pendingBytes > 0 && !this.#finished) {
      const batch = this.#pending;
      const batchBytes = this.#pendingBytes;
      this.#pongPending = false;
      // Frames queued during the write go to the other buffer.
      this.#pending = this.#spare;
      this.#pendingBytes = 0;
      this.#writingBytes = batchBytes;
      try {
        for (let written = 0; written < batchBytes;) {
          written += await conn.write(batch.subarray(written, batchBytes));
          this.#writingBytes = batchBytes - written;
          if (this.#drainWaiters.length > 0) this.#wakeDrained();
        }
      } catch (error) {
        this.#writingBytes = 0;
        this.#fail(error instanceof Error ? error.message : String(error));
        return;
      }
      this.#writingBytes = 0;
      this.#spare = batch;
      // Output buffers grown by a burst are kept while bursts go on, and given back once writes have stayed
      // small for a while, so an idle connection holds only small ones.
      this.#smallWrites = batchBytes * 8 < batch.length ? this.#smallWrites + 1 : 0;
      if (this.#smallWrites >= SMALL_WRITES_BEFORE_SHRINK && batch.length > SMALL_OUTPUT_BYTES) {
        this.#smallWrites = 0;
        this.#shrinkOutput();
      }
    }
    for (const wake of this.#flushWaiters.splice(0)) wake();
    if (
      this.#shrinkTimer === undefined && this.#pending.length + this.#spare.length > 2 * SMALL_OUTPUT_BYTES
    ) {
      this.#shrinkTimer = setTimeout(() => this.#shrinkWhenQuiet(), OUTPUT_QUIET_MS);
      Deno.unrefTimer(this.#shrinkTimer);
    }
  }

  /** Gives back grown output buffers: the spare one always, the pending one when what it holds fits a small one. */
  #shrinkOutput(): void {
    this.#spare = new Uint8Array(SMALL_OUTPUT_BYTES);
    if (this.#pending.length > SMALL_OUTPUT_BYTES && this.#pendingBytes <= SMALL_OUTPUT_BYTES) {
      const small = new Uint8Array(SMALL_OUTPUT_BYTES);
      small.set(this.#pending.subarray(0, this.#pendingBytes));
      this.#pending = small;
    }
  }

  #shrinkWhenQuiet(): void {
    this.#shrinkTimer = undefined;
    if (this.#finished) return;
    const quietMs = performance.now() - this.#lastSentMs;
    if (quietMs < OUTPUT_QUIET_MS || this.#writingBytes > 0) {
      this.#shrinkTimer = setTimeout(() => this.#shrinkWhenQuiet(), OUTPUT_QUIET_MS);
      Deno.unrefTimer(this.#shrinkTimer);
      return;
    }
    // Nothing is being written, so the spare buffer is free; the pending one holds what was queued since.
    this.#shrinkOutput();
  }

  /** Wakes the writers whose mark the output has drained to, and all of them once it is closing or gone. */
  #wakeDrained(): void {
    if (this.#drainWaiters.length === 0) return;
    const buffered = this.#readyState === OPEN ? this.bufferedAmount : -1;
    const waiting = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const waiter of waiting) {
      if (buffered <= waiter.bufferedBytes) waiter.wake();
      else this.#drainWaiters.push(waiter);
    }
  }

  /** Resolves once everything queued so far has been written (or the connection is gone). */
  #flushed(): Promise<void> {
    if (this.bufferedAmount === 0 || this.#finished) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }
}

/** Closes a socket, ignoring that it may be closed already. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
