/**
 * A pure, incremental TLS ClientHello parser: finds the server name (SNI) a client asks for, without
 * terminating TLS (docs/protocol.md §8.3).
 *
 * The caller feeds every byte received so far, from offset 0, on every call. While the ClientHello is not
 * complete, a call only walks the record headers (O(records), no extension parsing), so a client that sends
 * one byte per TCP write costs one header walk per write, never a re-parse of the extensions. The
 * ClientHello body is parsed exactly once, on the call where its last byte has arrived.
 *
 * @module
 */

import { normalizeHostname } from "../hostnames/hostname.ts";

/** The parser's verdict on the bytes received so far. */
export type ClientHelloResult =
  /** More bytes are needed before anything can be decided. */
  | { kind: "incomplete" }
  /** A valid ClientHello carrying a server name, normalised with `normalizeHostname`. */
  | { kind: "sni"; serverName: string; echOffered: boolean }
  /** A valid ClientHello without a server_name extension. */
  | { kind: "no_sni"; echOffered: boolean }
  /** The first record is not a TLS handshake record. */
  | { kind: "not_tls" }
  /** The bytes look like TLS but are inconsistent or invalid; `reason` names the field. */
  | { kind: "malformed"; reason: string }
  /** The ClientHello (records and record headers included) needs more than `maxBytes` bytes. */
  | { kind: "too_large" }
  /** The stream ended (`atEof`) before the ClientHello was complete. */
  | { kind: "truncated" };

/** Options for {@linkcode parseClientHello}. */
export interface ParseClientHelloOptions {
  /** The peer has closed its side: no more bytes will come, so an incomplete hello is `truncated`. */
  atEof?: boolean;
  /** Most bytes (records and their headers) the ClientHello may need; default {@linkcode MAX_CLIENT_HELLO_BYTES}. */
  maxBytes?: number;
}

/**
 * Default cap on the bytes buffered for one ClientHello, record headers included: the 32 KiB of the
 * original (docs/protocol.md §8.3). A post-quantum hello (about 1.8 KiB) fits many times over.
 *
 * @example
 * ```ts
 * import { MAX_CLIENT_HELLO_BYTES } from "./client_hello.ts";
 * MAX_CLIENT_HELLO_BYTES; // 32768
 * ```
 */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;

// RFC 8446 §5.1: record header = content type (1), legacy_record_version (2), length (2).
const RECORD_HEADER_BYTES = 5;
const CONTENT_TYPE_HANDSHAKE = 22;
const RECORD_VERSION_MAJOR = 3;
// 0x0300 (SSL 3.0) .. 0x0304 (the highest value RFC 8446 mentions for legacy fields).
const RECORD_VERSION_MINOR_MAX = 4;
const MAX_RECORD_PAYLOAD_BYTES = 16384;
// RFC 8446 §4: handshake header = msg_type (1), length (3).
const HANDSHAKE_HEADER_BYTES = 4;
const HANDSHAKE_TYPE_CLIENT_HELLO = 1;
// RFC 8446 §4.1.2.
const RANDOM_BYTES = 32;
const MAX_SESSION_ID_BYTES = 32;
// RFC 6066 §3 (server_name) and draft-ietf-tls-esni (encrypted_client_hello).
const EXTENSION_SERVER_NAME = 0x0000;
const EXTENSION_ENCRYPTED_CLIENT_HELLO = 0xfe0d;
const NAME_TYPE_HOST_NAME = 0;

/**
 * Parses the TLS ClientHello at the start of `bytes`, the whole stream received so far.
 *
 * Bytes after the ClientHello belong to the stream and are ignored. Never throws for any `bytes`, and never
 * reads past `bytes.length`.
 *
 * @throws {RangeError} if `options.maxBytes` is not a positive integer (a programming error, not an input one).
 *
 * @example
 * ```ts
 * import { parseClientHello } from "./client_hello.ts";
 * parseClientHello(new Uint8Array([0x16])); // { kind: "incomplete" }
 * parseClientHello(new TextEncoder().encode("GET / HTTP/1.1\r\n")); // { kind: "not_tls" }
 * parseClientHello(new Uint8Array([0x16, 0x03]), { atEof: true }); // { kind: "truncated" }
 * ```
 */
export function parseClientHello(
  bytes: Uint8Array,
  options: ParseClientHelloOptions = {},
): ClientHelloResult {
  const maxBytes = options.maxBytes ?? MAX_CLIENT_HELLO_BYTES;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
    throw new RangeError(`maxBytes must be a positive integer, got ${maxBytes}`);
  }
  const framing = walkRecords(bytes, maxBytes);
  if (framing.kind === "incomplete") return options.atEof ? { kind: "truncated" } : { kind: "incomplete" };
  if (framing.kind !== "complete") return framing;
  return parseHandshakeMessage(assembleMessage(bytes, framing.messageBytes));
}

type Framing = ClientHelloResult | { kind: "complete"; messageBytes: number };

/**
 * The cheap path, run on every call: walks the record headers only, reading at most the four bytes of the
 * handshake header out of the payloads. Says whether the whole handshake message (`messageBytes` bytes,
 * header included) has arrived, or why it never will.
 */
function walkRecords(bytes: Uint8Array, maxBytes: number): Framing {
  let headerBytesSeen = 0; // of the 4-byte handshake header
  let bodyLength = 0; // accumulates the 24-bit length, big-endian
  let messageBytes = -1; // handshake header + body, once the length is known
  let payloadBefore = 0; // declared payload of the records before the one at `recordStart`
  let recordStart = 0;
  while (true) {
    const headerVerdict = checkRecordHeader(bytes, recordStart);
    if (headerVerdict !== null) return headerVerdict;
    const recordLength = (bytes[recordStart + 3] << 8) | bytes[recordStart + 4];
    const payloadStart = recordStart + RECORD_HEADER_BYTES;
    const available = Math.min(recordLength, bytes.length - payloadStart);

    // The handshake header may itself be split across records: take its bytes one by one, four at most.
    for (let i = 0; headerBytesSeen < HANDSHAKE_HEADER_BYTES && i < available; i++) {
      const byte = bytes[payloadStart + i];
      if (headerBytesSeen === 0 && byte !== HANDSHAKE_TYPE_CLIENT_HELLO) {
        return malformed(`handshake type is ${byte}, expected ClientHello (1)`);
      }
      if (headerBytesSeen > 0) bodyLength = (bodyLength << 8) | byte;
      headerBytesSeen++;
      if (headerBytesSeen === HANDSHAKE_HEADER_BYTES) messageBytes = HANDSHAKE_HEADER_BYTES + bodyLength;
    }

    const payloadAfter = payloadBefore + recordLength;
    if (messageBytes >= 0) {
      if (payloadAfter >= messageBytes) {
        // The hello ends inside this record; the rest of the record is not needed.
        const end = payloadStart + (messageBytes - payloadBefore);
        if (end > maxBytes) return { kind: "too_large" };
        return bytes.length >= end ? { kind: "complete", messageBytes } : { kind: "incomplete" };
      }
      // Even if the rest came in full-size records, the hello could not fit: say so before buffering it.
      const rest = messageBytes - payloadAfter;
      const fewestRecords = Math.ceil(rest / MAX_RECORD_PAYLOAD_BYTES);
      if (payloadStart + recordLength + fewestRecords * RECORD_HEADER_BYTES + rest > maxBytes) {
        return { kind: "too_large" };
      }
    }
    if (available < recordLength) return { kind: "incomplete" };
    payloadBefore = payloadAfter;
    recordStart = payloadStart + recordLength;
  }
}

/**
 * Checks the record header at `offset` as far as it has arrived: `null` when it is a complete, valid
 * handshake record header. The first record decides `not_tls` from its first two bytes, so the relay can fall
 * back to HTTP sniffing at once; later records are already inside TLS, so a wrong byte there is `malformed`.
 */
function checkRecordHeader(bytes: Uint8Array, offset: number): ClientHelloResult | null {
  const available = bytes.length - offset;
  if (available < 1) return { kind: "incomplete" };
  const contentType = bytes[offset];
  if (contentType !== CONTENT_TYPE_HANDSHAKE) {
    if (offset === 0) return { kind: "not_tls" };
    return malformed(`record at byte ${offset} has content type ${contentType}, expected handshake (22)`);
  }
  if (available < 2) return { kind: "incomplete" };
  if (bytes[offset + 1] !== RECORD_VERSION_MAJOR) {
    if (offset === 0) return { kind: "not_tls" };
    return malformed(`record at byte ${offset} has version major ${bytes[offset + 1]}, expected 3`);
  }
  if (available < 3) return { kind: "incomplete" };
  if (bytes[offset + 2] > RECORD_VERSION_MINOR_MAX) {
    return malformed(
      `record at byte ${offset} has version 0x03${hex2(bytes[offset + 2])}, expected 0x0300..0x0304`,
    );
  }
  if (available < RECORD_HEADER_BYTES) return { kind: "incomplete" };
  const recordLength = (bytes[offset + 3] << 8) | bytes[offset + 4];
  if (recordLength === 0 || recordLength > MAX_RECORD_PAYLOAD_BYTES) {
    return malformed(`record at byte ${offset} has length ${recordLength}, expected 1..16384`);
  }
  return null;
}

/**
 * Concatenates the payloads of the records that carry the handshake message, which `walkRecords` has already
 * validated and found complete. A hello in one record (the usual case) is a view, not a copy.
 */
function assembleMessage(bytes: Uint8Array, messageBytes: number): Uint8Array {
  const firstLength = (bytes[3] << 8) | bytes[4];
  if (firstLength >= messageBytes) {
    return bytes.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + messageBytes);
  }
  const message = new Uint8Array(messageBytes);
  let filled = 0;
  for (let recordStart = 0; filled < messageBytes;) {
    const recordLength = (bytes[recordStart + 3] << 8) | bytes[recordStart + 4];
    const take = Math.min(recordLength, messageBytes - filled);
    const payloadStart = recordStart + RECORD_HEADER_BYTES;
    message.set(bytes.subarray(payloadStart, payloadStart + take), filled);
    filled += take;
    recordStart = payloadStart + recordLength;
  }
  return message;
}

/** Parses a complete ClientHello handshake message (header included); run once per connection. */
function parseHandshakeMessage(message: Uint8Array): ClientHelloResult {
  // RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2 for the TLS 1.2 form, where extensions may be absent).
  const body = new ByteCursor(message.subarray(HANDSHAKE_HEADER_BYTES));
  const legacyVersion = body.uint16();
  if (legacyVersion === null) return malformed("legacy_version is truncated");
  if (legacyVersion >> 8 !== RECORD_VERSION_MAJOR) {
    return malformed(
      `legacy_version is 0x${hex2(legacyVersion >> 8)}${hex2(legacyVersion & 0xff)}, expected 0x03xx`,
    );
  }
  if (body.bytes(RANDOM_BYTES) === null) return malformed("random is truncated");
  const sessionId = body.vector8();
  if (sessionId === null) return malformed("session_id length exceeds the message");
  if (sessionId.length > MAX_SESSION_ID_BYTES) {
    return malformed(`session_id length is ${sessionId.length}, expected at most 32`);
  }
  const cipherSuites = body.vector16();
  if (cipherSuites === null) return malformed("cipher_suites length exceeds the message");
  if (cipherSuites.length < 2 || cipherSuites.length % 2 !== 0) {
    return malformed(`cipher_suites length is ${cipherSuites.length}, expected an even number of at least 2`);
  }
  const compressionMethods = body.vector8();
  if (compressionMethods === null) return malformed("compression_methods length exceeds the message");
  if (compressionMethods.length < 1) return malformed("compression_methods is empty");
  if (body.remaining === 0) return { kind: "no_sni", echOffered: false }; // an SSLv3-style hello
  const extensions = body.vector16();
  if (extensions === null) return malformed("extensions length exceeds the message");
  if (body.remaining !== 0) return malformed("extensions length is shorter than the message");
  return parseExtensions(new ByteCursor(extensions));
}

function parseExtensions(extensions: ByteCursor): ClientHelloResult {
  const seen = new Set<number>();
  let serverName: string | null = null;
  while (extensions.remaining > 0) {
    const type = extensions.uint16();
    if (type === null) return malformed("extension type is truncated");
    const data = extensions.vector16();
    if (data === null) return malformed(`extension 0x${hex4(type)} length exceeds the extensions block`);
    // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type in a given extension block."
    if (seen.has(type)) return malformed(`extension 0x${hex4(type)} appears twice`);
    seen.add(type);
    if (type === EXTENSION_SERVER_NAME) {
      const parsed = parseServerName(new ByteCursor(data));
      if (typeof parsed !== "string") return parsed;
      serverName = parsed;
    }
  }
  const echOffered = seen.has(EXTENSION_ENCRYPTED_CLIENT_HELLO);
  return serverName === null ? { kind: "no_sni", echOffered } : { kind: "sni", serverName, echOffered };
}

/**
 * Parses the server_name extension data (RFC 6066 §3): a list holding exactly one host_name entry. Other
 * name types were never defined; like OpenSSL, a list holding anything else is refused rather than skipped.
 */
function parseServerName(data: ByteCursor): string | ClientHelloResult {
  const list = data.vector16();
  if (list === null || data.remaining !== 0) {
    return malformed("server_name list length does not match the extension");
  }
  if (list.length === 0) return malformed("server_name list is empty");
  const entries = new ByteCursor(list);
  const nameType = entries.uint8();
  const name = entries.vector16();
  if (nameType === null || name === null) return malformed("server_name entry length exceeds the list");
  if (nameType !== NAME_TYPE_HOST_NAME) {
    return malformed(`server_name entry has name_type ${nameType}, expected 0`);
  }
  if (entries.remaining !== 0) {
    const secondIsEntry = entries.uint8() !== null && entries.vector16() !== null;
    return malformed(
      secondIsEntry
        ? "server_name list holds more than one entry"
        : "server_name entry length does not match the list",
    );
  }
  if (name.length === 0) return malformed("server_name host_name is empty");
  let text = "";
  for (const byte of name) {
    if (byte >= 0x80) return malformed("server_name host_name has non-ASCII bytes");
    if (byte < 0x20 || byte === 0x7f) return malformed("server_name host_name has control characters");
    // normalizeHostname would trim it, but a name with a space is not what the backend will see as its SNI.
    if (byte === 0x20) return malformed("server_name host_name has spaces");
    text += String.fromCharCode(byte);
  }
  const normalized = normalizeHostname(text);
  if (normalized !== null) return normalized;
  if (isIpLiteral(text)) return malformed("server_name host_name is an IP literal");
  return malformed("server_name host_name is not a valid hostname");
}

/** The shapes `normalizeHostname` refuses as addresses: an all-numeric last label (IPv4), or a colon (IPv6). */
function isIpLiteral(text: string): boolean {
  const name = text.trim().replace(/\.$/, "");
  return name.includes(":") || /(^|\.)[0-9]+$/.test(name);
}

function malformed(reason: string): ClientHelloResult {
  return { kind: "malformed", reason };
}

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

function hex4(value: number): string {
  return value.toString(16).padStart(4, "0");
}

/** Reads big-endian integers and length-prefixed vectors; every read returns `null` instead of overrunning. */
class ByteCursor {
  readonly #bytes: Uint8Array;
  #offset = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  uint8(): number | null {
    if (this.remaining < 1) return null;
    return this.#bytes[this.#offset++];
  }

  uint16(): number | null {
    if (this.remaining < 2) return null;
    const value = (this.#bytes[this.#offset] << 8) | this.#bytes[this.#offset + 1];
    this.#offset += 2;
    return value;
  }

  bytes(length: number): Uint8Array | null {
    if (this.remaining < length) return null;
    const view = this.#bytes.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return view;
  }

  vector8(): Uint8Array | null {
    const length = this.uint8();
    return length === null ? null : this.bytes(length);
  }

  vector16(): Uint8Array | null {
    const length = this.uint16();
    return length === null ? null : this.bytes(length);
  }
}
