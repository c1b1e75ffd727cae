/**
 * The PROXY protocol header (HAProxy's specification, versions 1 and 2), encoded and decoded: what a proxy
 * prepends to a TCP stream so that the server behind it learns the client's address. Pure: bytes in, bytes or
 * a verdict out; no sockets, no timers.
 *
 * - Version 1 is one line of US-ASCII, `PROXY TCP4 <src> <dst> <srcport> <dstport>\r\n` (or `TCP6`, or
 *   `UNKNOWN`), at most 107 bytes (spec §2.1).
 * - Version 2 is binary: a 12-byte signature, a version/command byte (LOCAL or PROXY), a family/transport
 *   byte, a 16-bit length, then the addresses and optional TLVs (spec §2.2). TLVs are checked to fit and
 *   skipped; the whole header is bounded by {@linkcode MAX_PROXY_HEADER_BYTES}.
 *
 * @module
 */

import { formatIpAddress, type IpAddress, parseIpAddress } from "../transport/ip_address.ts";

/** Which version of the protocol a header is written in. */
export type ProxyVersion = 1 | 2;

/** One end of the proxied connection. Addresses are in canonical text (RFC 5952 for IPv6). */
export interface ProxyEndpoint {
  readonly address: string;
  readonly port: number;
}

/** The proxied connection's ends: TCP over IPv4 or over IPv6 (the spec's `TCP4`, `TCP6`). */
export interface ProxyAddresses {
  readonly family: "tcp4" | "tcp6";
  /** The client. */
  readonly source: ProxyEndpoint;
  /** The address the client connected to. */
  readonly destination: ProxyEndpoint;
}

/**
 * What a header says. `local`: the proxy opened the connection itself (a health check, v2 only); the
 * receiver uses the connection's own ends. `proxy` with `addresses: null`: relayed, but the proxy does not
 * know the ends (v1 `UNKNOWN`, v2 `AF_UNSPEC`); the receiver uses the connection's own ends too.
 */
export type ProxyHeader =
  | { readonly command: "local" }
  | { readonly command: "proxy"; readonly addresses: ProxyAddresses | null };

/** The verdict on the first bytes of a connection. */
export type ProxyHeaderResult =
  /** A header, `length` bytes long: what follows it is the proxied stream. */
  | {
    readonly kind: "header";
    readonly version: ProxyVersion;
    readonly header: ProxyHeader;
    readonly length: number;
  }
  /** The bytes so far are the start of a header (or of a signature): read more. */
  | { readonly kind: "incomplete" }
  /** The stream ended inside a header. */
  | { readonly kind: "truncated" }
  /** The first bytes are neither signature: no PROXY header. */
  | { readonly kind: "not_proxy" }
  /** A signature followed by something the spec does not allow; `reason` says what. */
  | { readonly kind: "malformed"; readonly version: ProxyVersion; readonly reason: string };

/** The longest version 1 line, `\r\n` included (spec §2.1). */
export const MAX_V1_HEADER_BYTES = 107;
/** Address and TLV bytes a version 2 header may carry here: cloud load balancers send a few dozen. */
const MAX_V2_BLOCK_BYTES = 2048;
/** The fixed part of a version 2 header: signature, version/command, family/transport, length. */
const V2_FIXED_BYTES = 16;
/** The longest header of either version accepted here. */
export const MAX_PROXY_HEADER_BYTES = V2_FIXED_BYTES + MAX_V2_BLOCK_BYTES;

const encoder = new TextEncoder();
const V1_SIGNATURE = encoder.encode("PROXY ");
/** `\r\n\r\n\0\r\nQUIT\n` (spec §2.2). */
const V2_SIGNATURE = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const V2_VERSION = 0x20;
const V2_LOCAL = 0x0;
const V2_PROXY = 0x1;
/** Family (high nibble) and transport (low nibble) bytes the spec defines (§2.2). */
const V2_UNSPEC = 0x00;
const V2_TCP4 = 0x11;
const V2_UDP4 = 0x12;
const V2_TCP6 = 0x21;
const V2_UDP6 = 0x22;
const V2_UNIX_STREAM = 0x31;
const V2_UNIX_DGRAM = 0x32;
/** Address bytes of each family: two addresses and two ports (§2.2). */
const V2_INET_BYTES = 12;
const V2_INET6_BYTES = 36;
const PORT_TEXT = /^(?:0|[1-9][0-9]{0,4})$/;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Reads a PROXY header at the start of `bytes`, of either version. Never throws: a header, a request for more
 * bytes, `not_proxy` as soon as the first bytes rule out both signatures, or `malformed` with the reason.
 * `atEof` says no more bytes will come (an incomplete header is then `truncated`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeProxyHeader } from "./proxy_header.ts";
 * const bytes = new TextEncoder().encode("PROXY TCP4 192.0.2.7 198.51.100.1 52144 443\r\nGET /");
 * const result = decodeProxyHeader(bytes);
 * assert.equal(result.kind, "header");
 * if (result.kind === "header" && result.header.command === "proxy") {
 *   assert.equal(result.length, 45);
 *   assert.deepEqual(result.header.addresses?.source, { address: "192.0.2.7", port: 52144 });
 * }
 * ```
 */
export function decodeProxyHeader(bytes: Uint8Array, options: { atEof?: boolean } = {}): ProxyHeaderResult {
  const result = startsWith(bytes, V1_SIGNATURE)
    ? decodeV1(bytes)
    : startsWith(bytes, V2_SIGNATURE)
    ? decodeV2(bytes)
    : isPrefixOf(bytes, V1_SIGNATURE) || isPrefixOf(bytes, V2_SIGNATURE)
    ? { kind: "incomplete" as const }
    : { kind: "not_proxy" as const };
  return result.kind === "incomplete" && options.atEof === true ? { kind: "truncated" } : result;
}

/**
 * Writes `header` in `version`. Version 1 has no LOCAL command: a `local` header is written as `UNKNOWN`,
 * which tells the receiver the same (use the connection's own ends). Addresses are written in canonical
 * form. Throws a `RangeError` for an address that is not of its family or a port outside 0-65535.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeProxyHeader } from "./proxy_header.ts";
 * const header = encodeProxyHeader({
 *   command: "proxy",
 *   addresses: {
 *     family: "tcp4",
 *     source: { address: "192.0.2.7", port: 52144 },
 *     destination: { address: "198.51.100.1", port: 443 },
 *   },
 * }, 1);
 * assert.equal(new TextDecoder().decode(header), "PROXY TCP4 192.0.2.7 198.51.100.1 52144 443\r\n");
 * ```
 */
export function encodeProxyHeader(header: ProxyHeader, version: ProxyVersion): Uint8Array {
  const addresses = header.command === "proxy" ? header.addresses : null;
  const ends = addresses === null ? null : endpointsOf(addresses);
  if (version === 1) {
    if (ends === null) return encoder.encode("PROXY UNKNOWN\r\n");
    const [source, destination] = ends;
    return encoder.encode(
      `PROXY ${addresses!.family.toUpperCase()} ${formatIpAddress(source)} ${formatIpAddress(destination)} ` +
        `${addresses!.source.port} ${addresses!.destination.port}\r\n`,
    );
  }
  const blockBytes = ends === null ? 0 : ends[0].family === 4 ? V2_INET_BYTES : V2_INET6_BYTES;
  const out = new Uint8Array(V2_FIXED_BYTES + blockBytes);
  out.set(V2_SIGNATURE);
  out[12] = V2_VERSION | (header.command === "local" ? V2_LOCAL : V2_PROXY);
  out[13] = ends === null ? V2_UNSPEC : ends[0].family === 4 ? V2_TCP4 : V2_TCP6;
  const view = new DataView(out.buffer);
  view.setUint16(14, blockBytes);
  if (ends !== null) {
    const [source, destination] = ends;
    const size = source.bytes.length;
    out.set(source.bytes, V2_FIXED_BYTES);
    out.set(destination.bytes, V2_FIXED_BYTES + size);
    view.setUint16(V2_FIXED_BYTES + 2 * size, addresses!.source.port);
    view.setUint16(V2_FIXED_BYTES + 2 * size + 2, addresses!.destination.port);
  }
  return out;
}

/** Both addresses as bytes, checked against the family, and both ports checked. */
function endpointsOf(addresses: ProxyAddresses): [IpAddress, IpAddress] {
  const family = addresses.family === "tcp4" ? 4 : 6;
  const read = (endpoint: ProxyEndpoint, role: string) => {
    const address = parseIpAddress(endpoint.address);
    if (address === null || address.family !== family) {
      throw new RangeError(`The ${role} address "${endpoint.address}" is not an IPv${family} address`);
    }
    if (!Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 65_535) {
      throw new RangeError(`The ${role} port ${endpoint.port} is not a port number (0-65535)`);
    }
    return address;
  };
  return [read(addresses.source, "source"), read(addresses.destination, "destination")];
}

function decodeV1(bytes: Uint8Array): ProxyHeaderResult {
  const malformed = (reason: string): ProxyHeaderResult => ({ kind: "malformed", version: 1, reason });
  const end = Math.min(bytes.length, MAX_V1_HEADER_BYTES);
  let cr = -1;
  for (let i = V1_SIGNATURE.length; i < end; i++) {
    const byte = bytes[i];
    if (byte === CR) {
      cr = i;
      break;
    }
    if (byte === LF) return malformed("v1 header has a line feed without a carriage return before it");
    if (byte < 0x20 || byte > 0x7e) {
      return malformed(`v1 header has byte 0x${byte.toString(16).padStart(2, "0")}, not printable US-ASCII`);
    }
  }
  if (cr < 0) {
    return bytes.length >= MAX_V1_HEADER_BYTES
      ? malformed(`v1 header has no CRLF within its first ${MAX_V1_HEADER_BYTES} bytes`)
      : { kind: "incomplete" };
  }
  if (cr + 1 >= bytes.length) {
    return cr + 2 > MAX_V1_HEADER_BYTES ? malformed(tooLongV1()) : { kind: "incomplete" };
  }
  if (bytes[cr + 1] !== LF) return malformed("v1 header has a carriage return not followed by a line feed");
  if (cr + 2 > MAX_V1_HEADER_BYTES) return malformed(tooLongV1());
  const length = cr + 2;
  // Printable US-ASCII only (checked above), so one byte is one character.
  const fields = String.fromCharCode(...bytes.subarray(V1_SIGNATURE.length, cr)).split(" ");
  const protocol = fields[0];
  if (protocol === "UNKNOWN") {
    // The receiver must ignore whatever follows UNKNOWN on the line (§2.1).
    return { kind: "header", version: 1, header: { command: "proxy", addresses: null }, length };
  }
  if (protocol !== "TCP4" && protocol !== "TCP6") {
    return malformed(`v1 protocol "${protocol.slice(0, 16)}" is not TCP4, TCP6 or UNKNOWN`);
  }
  if (fields.length !== 5) {
    return malformed(
      `v1 ${protocol} header needs a source address, a destination address and two ports, ` +
        "each after exactly one space",
    );
  }
  const family = protocol === "TCP4" ? 4 : 6;
  const [, sourceText, destinationText, sourcePortText, destinationPortText] = fields;
  const source = parseIpAddress(sourceText);
  if (source === null || source.family !== family) {
    return malformed(`v1 source address "${sourceText}" is not an IPv${family} address`);
  }
  const destination = parseIpAddress(destinationText);
  if (destination === null || destination.family !== family) {
    return malformed(`v1 destination address "${destinationText}" is not an IPv${family} address`);
  }
  const sourcePort = parsePort(sourcePortText);
  if (sourcePort === null) {
    return malformed(`v1 source port "${sourcePortText}" is not a port number (0-65535)`);
  }
  const destinationPort = parsePort(destinationPortText);
  if (destinationPort === null) {
    return malformed(`v1 destination port "${destinationPortText}" is not a port number (0-65535)`);
  }
  const addresses: ProxyAddresses = {
    family: protocol === "TCP4" ? "tcp4" : "tcp6",
    source: { address: formatIpAddress(source), port: sourcePort },
    destination: { address: formatIpAddress(destination), port: destinationPort },
  };
  return { kind: "header", version: 1, header: { command: "proxy", addresses }, length };
}

function tooLongV1(): string {
  return `v1 header is longer than ${MAX_V1_HEADER_BYTES} bytes`;
}

/** A decimal port without leading zeros, or null. */
function parsePort(text: string): number | null {
  if (!PORT_TEXT.test(text)) return null;
  const port = Number(text);
  return port <= 65_535 ? port : null;
}

function decodeV2(bytes: Uint8Array): ProxyHeaderResult {
  const malformed = (reason: string): ProxyHeaderResult => ({ kind: "malformed", version: 2, reason });
  if (bytes.length < V2_FIXED_BYTES) return { kind: "incomplete" };
  const versionCommand = bytes[12];
  if ((versionCommand & 0xf0) !== V2_VERSION) {
    return malformed(`v2 header has version ${versionCommand >> 4}, expected 2`);
  }
  const command = versionCommand & 0x0f;
  if (command !== V2_LOCAL && command !== V2_PROXY) {
    return malformed(`v2 header has command ${command}, neither LOCAL (0) nor PROXY (1)`);
  }
  const familyTransport = bytes[13];
  const blockBytes = (bytes[14] << 8) | bytes[15];
  if (blockBytes > MAX_V2_BLOCK_BYTES) {
    return malformed(
      `v2 header announces ${blockBytes} bytes of addresses and TLVs, more than the ${MAX_V2_BLOCK_BYTES} accepted`,
    );
  }
  const length = V2_FIXED_BYTES + blockBytes;
  if (bytes.length < length) return { kind: "incomplete" };
  // LOCAL: the receiver uses the connection's own ends and discards the block, family included (§2.2).
  if (command === V2_LOCAL) return { kind: "header", version: 2, header: { command: "local" }, length };
  const hex = `0x${familyTransport.toString(16).padStart(2, "0")}`;
  let addressBytes: number;
  switch (familyTransport) {
    case V2_UNSPEC:
      addressBytes = 0;
      break;
    case V2_TCP4:
      addressBytes = V2_INET_BYTES;
      break;
    case V2_TCP6:
      addressBytes = V2_INET6_BYTES;
      break;
    case V2_UDP4:
    case V2_UDP6:
    case V2_UNIX_DGRAM:
      return malformed(`v2 header is for a datagram transport (${hex}), not a TCP stream`);
    case V2_UNIX_STREAM:
      return malformed("v2 header carries AF_UNIX addresses, which a TCP relay cannot pass on");
    default:
      return malformed(`v2 address family and transport ${hex} are not defined`);
  }
  if (blockBytes < addressBytes) {
    return malformed(`v2 header of family ${hex} needs ${addressBytes} address bytes, has ${blockBytes}`);
  }
  const tlvError = checkTlvs(bytes, V2_FIXED_BYTES + addressBytes, length);
  if (tlvError !== null) return malformed(tlvError);
  if (addressBytes === 0) {
    return { kind: "header", version: 2, header: { command: "proxy", addresses: null }, length };
  }
  const size = addressBytes === V2_INET_BYTES ? 4 : 16;
  const family = size === 4 ? 4 : 6;
  const at = V2_FIXED_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const addresses: ProxyAddresses = {
    family: size === 4 ? "tcp4" : "tcp6",
    source: {
      address: formatIpAddress({ family, bytes: bytes.subarray(at, at + size) }),
      port: view.getUint16(at + 2 * size),
    },
    destination: {
      address: formatIpAddress({ family, bytes: bytes.subarray(at + size, at + 2 * size) }),
      port: view.getUint16(at + 2 * size + 2),
    },
  };
  return { kind: "header", version: 2, header: { command: "proxy", addresses }, length };
}

/** Why the TLVs between `from` and `to` do not tile that range exactly (type, 16-bit length, value), or null. */
function checkTlvs(bytes: Uint8Array, from: number, to: number): string | null {
  for (let offset = from; offset < to;) {
    if (offset + 3 > to) return `v2 TLV at byte ${offset} is cut off before its length`;
    const end = offset + 3 + ((bytes[offset + 1] << 8) | bytes[offset + 2]);
    if (end > to) {
      return `v2 TLV at byte ${offset} (type 0x${bytes[offset].toString(16)}) runs past the header`;
    }
    offset = end;
  }
  return null;
}

function startsWith(bytes: Uint8Array, signature: Uint8Array): boolean {
  if (bytes.length < signature.length) return false;
  for (let i = 0; i < signature.length; i++) if (bytes[i] !== signature[i]) return false;
  return true;
}

/** Whether `bytes` (shorter than the signature) could still become it. */
function isPrefixOf(bytes: Uint8Array, signature: Uint8Array): boolean {
  if (bytes.length >= signature.length) return false;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== signature[i]) return false;
  return true;
}
