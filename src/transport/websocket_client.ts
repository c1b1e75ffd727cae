/**
 * A WebSocket client (RFC 6455) over a TCP or TLS socket this code opens itself, for the links a Nexus process
 * dials (agent to hub). The runtime's `WebSocket` leaves Nagle's algorithm on: a second small message then
 * waits for the peer's delayed ACK, up to 40 ms, which measured as 90 ms p99 on a 64-byte request/response
 * through a node (docs/benchmarks.md). Here the socket has `TCP_NODELAY`, and every frame sent in one turn of
 * the event loop goes out in one write.
 *
 * It has the part of the `WebSocket` interface a {@linkcode MessageSocket} names, with the same behaviour:
 * `open`, `message`, `error` and `close` events, `bufferedAmount`, the closing handshake, and client-side close
 * codes limited to 1000 and 3000–4999. Messages are delivered as `ArrayBuffer` (binary) or `string` (text).
 *
 * @module
 */

import type { MessageSocket } from "./message_socket.ts";

/** Options of a {@linkcode WebSocketClient}. */
export interface WebSocketClientOptions {
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`). */
  readonly protocols?: readonly string[];
  /** PEM certificates to trust for `wss:` beside the built-in roots. */
  readonly caCerts?: readonly string[];
  /** Extra request headers of the opening handshake (names and values must be valid HTTP tokens/values). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Largest message accepted; a bigger one closes the connection with 1009. Default 1 MiB. */
  readonly maxMessageBytes?: number;
}

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

/** The GUID of the opening handshake's accept key (RFC 6455 §1.3). */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;
/**
 * Bare acknowledgements (empty pongs) after reads of a full TLS record or more, as in a bulk transfer, go out
 * at most once per this interval: one per read cost as much as the data itself. A read in between is
 * acknowledged when the interval ends, so a frame the server holds back waits at most this long instead of a
 * delayed ACK's 40 ms. Smaller reads, as in request/response traffic, are acknowledged at once.
 */
const ACK_INTERVAL_MS = 1;
/** Reads this large count as bulk: one TLS record's worth of plaintext (RFC 8446 §5.1). */
const BULK_READ_BYTES = 16 * 1024;
/** How long a close waits for the server's close frame before dropping the connection. */
const CLOSE_TIMEOUT_MS = 5_000;

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

type Listener = (event: Event) => void;

/** A WebSocket client connection; it connects as soon as it is constructed, like `new WebSocket(url)`. */
export class WebSocketClient implements MessageSocket {
  readonly url: string;
  /** Kept for compatibility: binary messages are always delivered as `ArrayBuffer`. */
  binaryType: BinaryType = "arraybuffer";
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  #readyState = CONNECTING;
  #protocol = "";
  #conn: Deno.Conn | null = null;
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #maxMessageBytes: number;
  /** Frames encoded and not yet handed to the socket; written in one go when the current write finishes. */
  #pending = new Uint8Array(64 * 1024);
  #pendingBytes = 0;
  /** The other output buffer: frames queued while one is being written go to the other. */
  #spare = new Uint8Array(64 * 1024);
  /** Bytes of the write in progress not yet accepted by the socket. */
  #writingBytes = 0;
  #flushScheduled = false;
  /** When a frame was last queued: every frame carries our TCP ACK. */
  #lastSentMs = 0;
  /** Data arrived since the last frame we queued, so the server may be waiting for our ACK. */
  #readSinceSend = false;
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  #closeSent = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;
  /** The socket while the opening handshake runs, so a close can drop it; then it is `#conn`. */
  #dialling: Deno.Conn | null = null;
  readonly #connectAbort = new AbortController();
  /** Masking keys, drawn from the CSPRNG in batches (RFC 6455 §5.3 asks for unpredictable keys). */
  readonly #maskKeys = new Uint32Array(1024);
  #maskIndex = 1024;

  constructor(url: string, options: WebSocketClientOptions = {}) {
    this.url = url;
    this.#maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    void this.#run(options);
  }

  get readyState(): number {
    return this.#readyState;
  }

  /** The subprotocol the server chose, or `""`. */
  get protocol(): string {
    return this.#protocol;
  }

  /** Bytes of sent messages not yet handed to the operating system. */
  get bufferedAmount(): number {
    return this.#pendingBytes + this.#writingBytes;
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
    if (typeof data === "string") this.#queueFrame(OPCODE_TEXT, encoder.encode(data));
    else if (ArrayBuffer.isView(data)) {
      this.#queueFrame(OPCODE_BINARY, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else this.#queueFrame(OPCODE_BINARY, new Uint8Array(data));
  }

  /**
   * Sends `head` followed by `payload` as one binary message, copying each once into the output (no joined
   * copy first): the multiplexer's data frames are a 17-byte header and a payload.
   */
  sendBinaryParts(head: Uint8Array, payload: Uint8Array): void {
    if (this.#readyState === CONNECTING) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#readyState !== OPEN) return;
    this.#queueFrame(OPCODE_BINARY, head, payload);
  }

  /**
   * Starts the closing handshake. Like the WebSocket API, a client may only send 1000 or 3000–4999 and a
   * reason of at most 123 bytes; anything else throws.
   */
  close(code?: number, reason = ""): void {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(`Close code ${code} is not 1000 or 3000-4999`, "InvalidAccessError");
    }
    const reasonBytes = encoder.encode(reason);
    if (reasonBytes.length > 123) throw new DOMException("Close reason longer than 123 bytes", "SyntaxError");
    if (this.#readyState === CLOSING || this.#readyState === CLOSED) return;
    if (this.#readyState === CONNECTING) {
      // Give the attempt up now (a peer that never answers must not keep the socket): #run then reports the
      // failed connection with 1006, as the WebSocket API does. Deno keeps the socket of a TLS handshake that
      // is still waiting for the server's first flight even after the TLS connection is closed (measured with
      // Deno 2.9); a plain connect or an HTTP answer that never comes is given up here.
      this.#readyState = CLOSING;
      this.#connectAbort.abort();
      if (this.#dialling !== null) closeQuietly(this.#dialling);
      return;
    }
    this.#readyState = CLOSING;
    this.#sendClose(code ?? 1000, reasonBytes);
    this.#closeTimer = setTimeout(
      () => this.#finish(1006, "closing handshake timed out", false),
      CLOSE_TIMEOUT_MS,
    );
  }

  async #run(options: WebSocketClientOptions): Promise<void> {
    let leftover: Uint8Array;
    try {
      leftover = await this.#connect(options);
    } catch (error) {
      this.#fail(error instanceof Error ? error.message : String(error));
      return;
    }
    if (this.#readyState === CLOSING) {
      this.#finish(1006, "closed before the connection was open", false);
      return;
    }
    this.#readyState = OPEN;
    this.#emit("open", new Event("open"), this.onopen);
    // Messages that came with the handshake response wait for a later task, as with the runtime's WebSocket:
    // whoever awaited the open sets `onmessage` in a continuation, and would otherwise miss them.
    await new Promise((resolve) => setTimeout(resolve, 0));
    try {
      await this.#readFrames(leftover);
    } catch (error) {
      if (!this.#finished) this.#fail(error instanceof Error ? error.message : String(error));
    }
  }

  /** TCP (and TLS), then the opening handshake; returns bytes that arrived after the response head. */
  async #connect(options: WebSocketClientOptions): Promise<Uint8Array> {
    const url = new URL(this.url);
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new SyntaxError(`${this.url} is not a ws: or wss: URL`);
    }
    const secure = url.protocol === "wss:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
    const tcp = await Deno.connect({ hostname, port, signal: this.#connectAbort.signal });
    this.#dialling = tcp;
    tcp.setNoDelay(true);
    let conn: Deno.Conn = tcp;
    try {
      if (this.#readyState !== CONNECTING) throw new Error("closed before the connection was open");
      if (secure) {
        conn = await Deno.startTls(tcp, {
          hostname,
          ...(options.caCerts ? { caCerts: [...options.caCerts] } : {}),
          alpnProtocols: ["http/1.1"],
        });
        this.#dialling = conn;
      }
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      const offered = options.protocols ?? [];
      await writeAll(
        conn,
        encoder.encode(
          `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
            `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
            (offered.length > 0 ? `Sec-WebSocket-Protocol: ${offered.join(", ")}\r\n` : "") +
            headerLines(options.headers ?? {}) + "\r\n",
        ),
      );
      const { head, rest } = await readResponseHead(conn);
      this.#protocol = await checkResponse(head, key, offered);
      if (this.#readyState !== CONNECTING) throw new Error("closed before the connection was open");
      this.#conn = conn;
      return rest;
    } catch (error) {
      closeQuietly(conn);
      throw error;
    } finally {
      this.#dialling = null;
    }
  }

  async #readFrames(initial: Uint8Array): Promise<void> {
    const conn = this.#conn!;
    let buffer = new Uint8Array(Math.max(2 * READ_CHUNK_BYTES, initial.length));
    buffer.set(initial);
    let start = 0;
    let end = initial.length;
    let fragments: Uint8Array[] = [];
    let fragmentBytes = 0;
    let fragmentOpcode = 0;
    /** Bytes of the last read, until its frames have been handled (0: nothing new). */
    let received = 0;
    for (;;) {
      // Parse every complete frame in the buffer.
      for (;;) {
        const frame = parseFrameHead(buffer, start, end);
        if (frame === null) break;
        if (typeof frame === "string") return this.#protocolError(frame);
        const { fin, opcode, headerBytes, payloadBytes } = frame;
        if (payloadBytes > this.#maxMessageBytes || fragmentBytes + payloadBytes > this.#maxMessageBytes) {
          return this.#failWithClose(1009, "message too big");
        }
        const total = headerBytes + payloadBytes;
        if (end - start < total) {
          if (buffer.length < total) {
            const grown = new Uint8Array(total + READ_CHUNK_BYTES);
            grown.set(buffer.subarray(start, end));
            buffer = grown;
            end -= start;
            start = 0;
          }
          break;
        }
        const payload = buffer.subarray(start + headerBytes, start + total);
        start += total;
        if (opcode >= OPCODE_CLOSE) {
          if (!fin || payloadBytes > 125) return this.#protocolError("fragmented or oversized control frame");
          if (opcode === OPCODE_PING) this.#queueFrame(OPCODE_PONG, payload.slice());
          else if (opcode === OPCODE_CLOSE) return this.#receiveClose(payload);
          else if (opcode !== OPCODE_PONG) return this.#protocolError(`unknown control opcode ${opcode}`);
          continue;
        }
        if (opcode === OPCODE_CONTINUATION) {
          if (fragmentOpcode === 0) return this.#protocolError("continuation without a message");
        } else if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
          if (fragmentOpcode !== 0) return this.#protocolError("new message inside a fragmented one");
          if (fin) {
            this.#deliver(opcode, payload);
            continue;
          }
          fragmentOpcode = opcode;
        } else {
          return this.#protocolError(`unknown opcode ${opcode}`);
        }
        fragments.push(payload.slice());
        fragmentBytes += payloadBytes;
        if (fin) {
          const whole = new Uint8Array(fragmentBytes);
          let offset = 0;
          for (const part of fragments) {
            whole.set(part, offset);
            offset += part.length;
          }
          const kind = fragmentOpcode;
          fragments = [];
          fragmentBytes = 0;
          fragmentOpcode = 0;
          this.#deliver(kind, whole);
        }
        if (this.#finished) return;
      }
      if (this.#finished) return;
      if (received > 0 && this.#pendingBytes === 0 && this.#readyState === OPEN) this.#acknowledge(received);
      received = 0;
      if (start === end) {
        start = 0;
        end = 0;
      } else if (buffer.length - end < READ_CHUNK_BYTES / 4) {
        buffer.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const n = await conn.read(buffer.subarray(end));
      if (n === null) {
        this.#finish(1006, "connection closed without a close frame", false);
        return;
      }
      end += n;
      received = n;
    }
  }

  #deliver(opcode: number, payload: Uint8Array): void {
    if (this.#readyState !== OPEN && this.#readyState !== CLOSING) return;
    let data: string | ArrayBuffer;
    if (opcode === OPCODE_TEXT) {
      try {
        data = strictDecoder.decode(payload);
      } catch {
        this.#failWithClose(1007, "text message is not UTF-8");
        return;
      }
    } else {
      data = payload.slice().buffer;
    }
    this.onmessage?.(new MessageEvent("message", { data }));
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
    if (!this.#closeSent) this.#sendClose(code === 1005 ? 1000 : code, payload.subarray(2, 2));
    this.#readyState = CLOSING;
    void this.#flushed().then(() => this.#finish(code, reason, true));
  }

  #sendClose(code: number, reasonBytes: Uint8Array): void {
    this.#closeSent = true;
    const payload = new Uint8Array(2 + reasonBytes.length);
    payload[0] = code >> 8;
    payload[1] = code & 0xff;
    payload.set(reasonBytes, 2);
    this.#queueFrame(OPCODE_CLOSE, payload);
  }

  #protocolError(why: string): void {
    this.#failWithClose(1002, why);
  }

  /** Fails the connection with a close frame (best effort), as the RFC asks of an endpoint that sees bad input. */
  #failWithClose(code: number, why: string): void {
    if (!this.#closeSent) this.#sendClose(code, encoder.encode(why.slice(0, 100)));
    this.#readyState = CLOSING;
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
    if (this.#conn !== null) closeQuietly(this.#conn);
    this.#pendingBytes = 0;
    this.#emit("close", new CloseEvent("close", { code, reason, wasClean }), this.onclose);
  }

  #emit<E extends Event>(type: string, event: E, handler: ((event: E) => void) | null): void {
    try {
      handler?.(event);
    } catch (error) {
      reportError(error);
    }
    for (const listener of this.#listeners.get(type) ?? []) {
      try {
        listener(event);
      } catch (error) {
        reportError(error);
      }
    }
  }

  /** Encodes a masked frame (RFC 6455 §5.2) at the end of the pending output and schedules a flush. */
  /**
   * Acknowledges what was read with an unsolicited pong (RFC 6455 §5.5.3) when nothing else goes back: a server
   * whose socket lacks TCP_NODELAY (Deno's TLS server, the hub) holds its next small frame until our TCP ACK,
   * which the kernel delays up to 40 ms when it has no data to carry it on. Bulk reads are paced (ACK_INTERVAL_MS).
   */
  #acknowledge(readBytes: number): void {
    this.#readSinceSend = true;
    if (readBytes < BULK_READ_BYTES || performance.now() - this.#lastSentMs >= ACK_INTERVAL_MS) {
      this.#queueFrame(OPCODE_PONG, EMPTY);
      return;
    }
    this.#ackTimer ??= setTimeout(() => {
      this.#ackTimer = undefined;
      if (this.#readSinceSend && this.#readyState === OPEN) this.#queueFrame(OPCODE_PONG, EMPTY);
    }, ACK_INTERVAL_MS);
  }

  #queueFrame(opcode: number, payload: Uint8Array, more: Uint8Array = EMPTY): void {
    if (this.#finished || this.#conn === null) return;
    this.#lastSentMs = performance.now();
    this.#readSinceSend = false;
    const length = payload.length + more.length;
    const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
    const frameBytes = 2 + lengthBytes + 4 + length;
    this.#reserve(frameBytes);
    const out = this.#pending;
    let at = this.#pendingBytes;
    out[at++] = 0x80 | opcode;
    if (lengthBytes === 0) {
      out[at++] = 0x80 | length;
    } else if (lengthBytes === 2) {
      out[at++] = 0x80 | 126;
      out[at++] = length >> 8;
      out[at++] = length & 0xff;
    } else {
      out[at++] = 0x80 | 127;
      new DataView(out.buffer, out.byteOffset + at, 8).setBigUint64(0, BigInt(length));
      at += 8;
    }
    const key = this.#nextMaskKey();
    new DataView(out.buffer, out.byteOffset + at, 4).setUint32(0, key);
    at += 4;
    out.set(payload, at);
    if (more.length > 0) out.set(more, at + payload.length);
    maskInPlace(out, at, length, key);
    this.#pendingBytes = at + length;
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
      // Frames queued during the write go to the other buffer.
      this.#pending = this.#spare;
      this.#pendingBytes = 0;
      this.#writingBytes = batchBytes;
      try {
        for (let written = 0; written < batchBytes;) {
          written += await conn.write(batch.subarray(written, batchBytes));
          this.#writingBytes = batchBytes - written;
        }
      } catch (error) {
        this.#writingBytes = 0;
        this.#fail(error instanceof Error ? error.message : String(error));
        return;
      }
      this.#writingBytes = 0;
      this.#spare = batch;
    }
    for (const wake of this.#flushWaiters.splice(0)) wake();
  }

  readonly #flushWaiters: Array<() => void> = [];

  /** Resolves once everything queued so far has been written (or the connection is gone). */
  #flushed(): Promise<void> {
    if (this.bufferedAmount === 0 || this.#finished) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }
}

/**
 * XORs `length` bytes at `offset` with the 4-byte big-endian `key`, a 32-bit word at a time where aligned:
 * a byte loop over every 32 KiB frame cost more than the TLS encryption of it.
 */
export function maskInPlace(bytes: Uint8Array, offset: number, length: number, key: number): void {
  const keyBytes = [key >>> 24, (key >>> 16) & 0xff, (key >>> 8) & 0xff, key & 0xff];
  let i = 0;
  const absolute = bytes.byteOffset + offset;
  // Bytes until the position is 4-byte aligned in the underlying buffer.
  const head = Math.min(length, (4 - (absolute & 3)) & 3);
  for (; i < head; i++) bytes[offset + i] ^= keyBytes[i & 3];
  const words = (length - i) >>> 2;
  if (words > 0) {
    // The key as it lines up from here, read as a little-endian word (typed arrays use the platform's order,
    // little-endian on every target Deno supports).
    const k0 = keyBytes[i & 3],
      k1 = keyBytes[(i + 1) & 3],
      k2 = keyBytes[(i + 2) & 3],
      k3 = keyBytes[(i + 3) & 3];
    // Signed 32-bit words stay small integers in V8; unrolled, this measured twice as fast as a Uint32Array loop.
    const word = k0 | (k1 << 8) | (k2 << 16) | (k3 << 24);
    const view = new Int32Array(bytes.buffer, absolute + i, words);
    let w = 0;
    for (; w + 4 <= words; w += 4) {
      view[w] ^= word;
      view[w + 1] ^= word;
      view[w + 2] ^= word;
      view[w + 3] ^= word;
    }
    for (; w < words; w++) view[w] ^= word;
    i += words * 4;
  }
  for (; i < length; i++) bytes[offset + i] ^= keyBytes[i & 3];
}

/** A frame's header, `null` when incomplete, or a protocol error. */
function parseFrameHead(
  buffer: Uint8Array,
  start: number,
  end: number,
): { fin: boolean; opcode: number; headerBytes: number; payloadBytes: number } | null | string {
  if (end - start < 2) return null;
  const b0 = buffer[start];
  const b1 = buffer[start + 1];
  if ((b0 & 0x70) !== 0) return "reserved bits set without an extension";
  if ((b1 & 0x80) !== 0) return "the server masked a frame";
  let payloadBytes = b1 & 0x7f;
  let headerBytes = 2;
  if (payloadBytes === 126) {
    if (end - start < 4) return null;
    payloadBytes = (buffer[start + 2] << 8) | buffer[start + 3];
    headerBytes = 4;
  } else if (payloadBytes === 127) {
    if (end - start < 10) return null;
    const view = new DataView(buffer.buffer, buffer.byteOffset + start + 2, 8);
    const high = view.getUint32(0);
    if (high > 0x1fffff) return "frame length out of range";
    payloadBytes = high * 2 ** 32 + view.getUint32(4);
    headerBytes = 10;
  }
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, headerBytes, payloadBytes };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
}

/** Reads up to the blank line that ends the response head; returns the head and what followed it. */
async function readResponseHead(conn: Deno.Conn): Promise<{ head: string; rest: Uint8Array }> {
  const buffer = new Uint8Array(MAX_RESPONSE_HEAD_BYTES);
  let length = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(length));
    if (n === null) throw new Error("the server closed the connection during the opening handshake");
    const from = Math.max(0, length - 3);
    length += n;
    for (let i = from; i + 3 < length; i++) {
      if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
        return {
          head: new TextDecoder().decode(buffer.subarray(0, i)),
          rest: buffer.slice(i + 4, length),
        };
      }
    }
    if (length === buffer.length) throw new Error("the server's handshake response head is too large");
  }
}

/** Extra handshake headers as lines; refuses names or values that could split the request. */
function headerLines(headers: Readonly<Record<string, string>>): string {
  let lines = "";
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) {
      throw new TypeError(`Invalid handshake header ${JSON.stringify(name)}`);
    }
    lines += `${name}: ${value}\r\n`;
  }
  return lines;
}

/** Checks the server's answer to the opening handshake (RFC 6455 §4.1); returns the chosen subprotocol. */
async function checkResponse(head: string, key: string, offered: readonly string[]): Promise<string> {
  const [statusLine, ...lines] = head.split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1];
  if (status !== "101") {
    throw new Error(`the server refused the WebSocket: ${statusLine.slice(0, 100) || "no status line"}`);
  }
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  if (headers.get("upgrade")?.toLowerCase() !== "websocket") throw new Error("the server did not upgrade");
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headers.get("connection") ?? "")) {
    throw new Error("the server's Connection header lacks upgrade");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID)));
  if (headers.get("sec-websocket-accept") !== btoa(String.fromCharCode(...digest))) {
    throw new Error("the server's Sec-WebSocket-Accept does not match the key");
  }
  if (headers.has("sec-websocket-extensions")) throw new Error("the server chose an extension not offered");
  const protocol = headers.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !offered.includes(protocol)) {
    throw new Error(`the server chose subprotocol "${protocol.slice(0, 40)}", which was not offered`);
  }
  return protocol;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
