/**
 * The receiving half of RFC 6455 framing, pure: bytes go in as they were read, messages and control frames
 * come out, no socket, timer or log in sight. It owns the read buffer and decides its size: small while idle,
 * bigger while data flows. A delivered message is the receiver's to keep (and, when it came from the
 * connection's {@linkcode MessagePool}, to give back).
 *
 * @module
 */

import { MessagePool } from "./message_pool.ts";

/** Which end of the connection this is (RFC 6455 §5.1: clients mask, servers do not). */
export type WebSocketRole = "client" | "server";

export const OPCODE_CONTINUATION = 0x0;
export const OPCODE_TEXT = 0x1;
export const OPCODE_BINARY = 0x2;
export const OPCODE_CLOSE = 0x8;
export const OPCODE_PING = 0x9;
export const OPCODE_PONG = 0xa;

/** What the bytes read so far yield next. */
export type ReaderEvent =
  /** A whole data message; `payload` is the receiver's to keep. */
  | {
    readonly kind: "message";
    readonly opcode: typeof OPCODE_TEXT | typeof OPCODE_BINARY;
    readonly payload: Uint8Array;
  }
  /** A ping, pong or close; `payload` is valid only until the next call. */
  | { readonly kind: "control"; readonly opcode: number; readonly payload: Uint8Array }
  /** Nothing complete: read more into {@linkcode FrameReader.space}. */
  | { readonly kind: "more" }
  /** The peer broke the protocol; the connection must be failed with `code`. */
  | { readonly kind: "error"; readonly code: 1002 | 1009; readonly why: string };

/** Smallest read buffer: what every idle connection pins while its read is pending. */
export const MIN_READ_BUFFER_BYTES = 4 * 1024;
/** What each fragment of a message counts against the message limit beyond its payload. */
export const FRAGMENT_OVERHEAD_BYTES = 64;
/** The read buffer grows to this while data flows (a read of a whole batch of frames at a time). */
export const BULK_READ_BUFFER_BYTES = 128 * 1024;
/**
 * Small reads in a row into an empty buffer after which a grown one is given back. A TLS connection yields a
 * record or two per read, often under an eighth of the buffer even in a bulk transfer; giving the buffer back at
 * the first such read made it shrink and regrow (4, 16, 64, 128 KiB, and a frame-sized one between) many
 * times a second, and the garbage cost the node 12% of its CPU per GiB of a download (medians of three
 * interleaved runs: 4.81 against 5.47 s/GiB). An idle link still gives it back after its next few messages.
 */
export const SMALL_READS_BEFORE_SHRINK = 16;

/** Parses frames out of the bytes read from one connection. */
export class FrameReader {
  /** Largest message accepted; see `WebSocketConnection.setMaxMessageBytes`. */
  maxMessageBytes: number;
  /**
   * Set once this side has sent its close: data frames are skipped unread (nothing is kept of them, not even
   * for a moment) while the reader waits for the peer's close.
   */
  discarding = false;
  readonly #role: WebSocketRole;
  #buffer: Uint8Array;
  #start = 0;
  #end = 0;
  #fragments: Uint8Array[] = [];
  #fragmentBytes = 0;
  #fragmentOpcode = 0;
  #lastRead = 0;
  #filledLastRead = false;
  /** Small reads in a row into an empty buffer (see {@linkcode SMALL_READS_BEFORE_SHRINK}). */
  #smallReads = 0;

  readonly #pool: MessagePool;

  /**
   * `initial`: bytes that came before the first read (after the opening handshake's head). `pool`: where
   * binary messages are copied to (see message_pool.ts); the connection gives them back to it.
   */
  constructor(
    role: WebSocketRole,
    maxMessageBytes: number,
    initial: Uint8Array = new Uint8Array(0),
    pool: MessagePool = new MessagePool(),
  ) {
    this.#role = role;
    this.#pool = pool;
    this.maxMessageBytes = maxMessageBytes;
    this.#buffer = new Uint8Array(Math.max(MIN_READ_BUFFER_BYTES, initial.length));
    this.#buffer.set(initial);
    this.#end = initial.length;
  }

  /** Bytes read and not yet parsed. */
  get pendingBytes(): number {
    return this.#end - this.#start;
  }

  /**
   * Where the next read goes. The buffer follows the traffic, as the relay's do: a read that filled it grows
   * it, a run of small reads into an empty one shrinks it back, so an idle connection pins only a small buffer.
   */
  space(): Uint8Array {
    if (this.#start === this.#end) {
      this.#start = 0;
      this.#end = 0;
    } else if (this.#buffer.length - this.#end < this.#buffer.length / 4) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const length = this.#buffer.length;
    if (this.#lastRead >= length / 8) this.#smallReads = 0;
    if (this.#filledLastRead && length < BULK_READ_BUFFER_BYTES) {
      this.#moveTo(new Uint8Array(Math.min(length * 4, BULK_READ_BUFFER_BYTES)));
    } else if (this.#end === 0 && length > MIN_READ_BUFFER_BYTES && this.#lastRead < length / 8) {
      this.#smallReads += 1;
      if (this.#smallReads >= SMALL_READS_BEFORE_SHRINK) {
        this.#smallReads = 0;
        this.#buffer = new Uint8Array(MIN_READ_BUFFER_BYTES);
      }
    }
    this.#filledLastRead = false;
    return this.#buffer.subarray(this.#end);
  }

  /** `bytes` were read into the last {@linkcode space}. */
  commit(bytes: number): void {
    this.#filledLastRead = bytes === this.#buffer.length - this.#end;
    this.#end += bytes;
    this.#lastRead = bytes;
  }

  /** The next message or control frame, `more` when the bytes so far hold none, or the protocol error. */
  next(): ReaderEvent {
    for (;;) {
      const head = parseFrameHead(this.#buffer, this.#start, this.#end, this.#role);
      if (head === null) return { kind: "more" };
      if (typeof head === "string") return { kind: "error", code: 1002, why: head };
      const { fin, opcode, headerBytes, payloadBytes, maskKey } = head;
      // A fragment costs its bookkeeping too: without that, empty fragments would be free to pile up.
      const fragment = opcode === OPCODE_CONTINUATION || (!fin && opcode < OPCODE_CLOSE);
      const charged = fragment ? payloadBytes + FRAGMENT_OVERHEAD_BYTES : payloadBytes;
      if (payloadBytes > this.maxMessageBytes || this.#fragmentBytes + charged > this.maxMessageBytes) {
        return { kind: "error", code: 1009, why: "message too big" };
      }
      const total = headerBytes + payloadBytes;
      if (this.#end - this.#start < total) {
        // Room for the whole frame and a read's worth after it.
        if (this.#buffer.length < total) this.#moveTo(new Uint8Array(total + BULK_READ_BUFFER_BYTES));
        return { kind: "more" };
      }
      if (this.discarding && opcode < OPCODE_CLOSE) {
        this.#start += total;
        continue;
      }
      const payloadStart = this.#start + headerBytes;
      if (maskKey !== null) maskInPlace(this.#buffer, payloadStart, payloadBytes, maskKey);
      const payload = this.#buffer.subarray(payloadStart, payloadStart + payloadBytes);
      this.#start += total;
      if (opcode >= OPCODE_CLOSE) {
        if (!fin || payloadBytes > 125) {
          return { kind: "error", code: 1002, why: "fragmented or oversized control frame" };
        }
        if (opcode !== OPCODE_PING && opcode !== OPCODE_PONG && opcode !== OPCODE_CLOSE) {
          return { kind: "error", code: 1002, why: `unknown control opcode ${opcode}` };
        }
        return { kind: "control", opcode, payload };
      }
      if (opcode === OPCODE_CONTINUATION) {
        if (this.#fragmentOpcode === 0) {
          return { kind: "error", code: 1002, why: "continuation without a message" };
        }
      } else if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
        if (this.#fragmentOpcode !== 0) {
          return { kind: "error", code: 1002, why: "new message inside a fragmented one" };
        }
        // A copy the receiver may keep: handing the read buffer over instead (a new buffer for every read that
        // delivered something) measured 10-15% more CPU per GiB at the node. Binary ones come from the pool.
        if (fin) {
          return {
            kind: "message",
            opcode,
            payload: opcode === OPCODE_BINARY ? this.#pool.copy(payload) : payload.slice(),
          };
        }
        this.#fragmentOpcode = opcode;
      } else {
        return { kind: "error", code: 1002, why: `unknown opcode ${opcode}` };
      }
      this.#fragments.push(payload.slice());
      this.#fragmentBytes += charged;
      if (fin) return this.#reassembled();
    }
  }

  #reassembled(): ReaderEvent {
    const whole = new Uint8Array(this.#fragments.reduce((bytes, part) => bytes + part.length, 0));
    let offset = 0;
    for (const part of this.#fragments) {
      whole.set(part, offset);
      offset += part.length;
    }
    const opcode = this.#fragmentOpcode as typeof OPCODE_TEXT | typeof OPCODE_BINARY;
    this.#fragments = [];
    this.#fragmentBytes = 0;
    this.#fragmentOpcode = 0;
    return { kind: "message", opcode, payload: whole };
  }

  /** Continues in `buffer`, taking the unparsed bytes along. */
  #moveTo(buffer: Uint8Array): void {
    buffer.set(this.#buffer.subarray(this.#start, this.#end));
    this.#end -= this.#start;
    this.#start = 0;
    this.#buffer = buffer;
  }
}

/**
 * XORs `length` bytes at `offset` with the 4-byte big-endian `key`, a 32-bit word at a time where aligned:
 * a byte loop over every 32 KiB frame cost more than the TLS encryption of it. Masking twice unmasks.
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
  role: WebSocketRole,
):
  | { fin: boolean; opcode: number; headerBytes: number; payloadBytes: number; maskKey: number | null }
  | null
  | string {
  if (end - start < 2) return null;
  const b0 = buffer[start];
  const b1 = buffer[start + 1];
  if ((b0 & 0x70) !== 0) return "reserved bits set without an extension";
  const masked = (b1 & 0x80) !== 0;
  // RFC 6455 §5.1: a client masks every frame, a server none.
  if (role === "client" && masked) return "the server masked a frame";
  if (role === "server" && !masked) return "the client sent an unmasked frame";
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
  let maskKey: number | null = null;
  if (masked) {
    if (end - start < headerBytes + 4) return null;
    maskKey = new DataView(buffer.buffer, buffer.byteOffset + start + headerBytes, 4).getUint32(0);
    headerBytes += 4;
  }
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, headerBytes, payloadBytes, maskKey };
}
