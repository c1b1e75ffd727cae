/**
 * IP addresses as text and as bytes: strict parsing (no brackets, no zone, no leading zeros in IPv4) and the
 * canonical text of RFC 5952. Pure: no sockets, no DNS. The PROXY protocol codec, the trusted address blocks
 * and the per-IP limits' sources all read addresses through it.
 *
 * @module
 */

/** An IPv4 address (4 bytes) or an IPv6 address (16 bytes), in network order. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

const DOT = 0x2e;
const ZERO = 0x30;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/**
 * Parses dotted-decimal IPv4 (`192.0.2.7`, no leading zeros, which some parsers read as octal) or IPv6 text
 * (`2001:db8::7`, `::ffff:192.0.2.7`), or returns null.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIpAddress } from "./ip_address.ts";
 * assert.deepEqual(parseIpAddress("192.0.2.7")?.bytes, Uint8Array.of(192, 0, 2, 7));
 * assert.equal(parseIpAddress("2001:db8::7")?.family, 6);
 * assert.equal(parseIpAddress("192.0.2.07"), null);
 * ```
 */
export function parseIpAddress(text: string): IpAddress | null {
  const ipv4 = parseIpv4(text);
  if (ipv4 !== null) return { family: 4, bytes: ipv4 };
  const ipv6 = parseIpv6(text);
  return ipv6 === null ? null : { family: 6, bytes: ipv6 };
}

/**
 * The canonical text of an address (RFC 5952 for IPv6: lower case, no leading zeros, the longest run of two
 * or more zero groups as `::`, IPv4-mapped addresses as `::ffff:192.0.2.7`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatIpAddress, parseIpAddress } from "./ip_address.ts";
 * assert.equal(formatIpAddress(parseIpAddress("2001:DB8:0:0:0:0:0:7")!), "2001:db8::7");
 * ```
 */
export function formatIpAddress(address: IpAddress): string {
  const b = address.bytes;
  if (address.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (isIpv4Mapped(address)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  // The longest run of zero groups, the first of equal ones, if at least two long (RFC 5952 §4.2).
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (from: number, to: number) => groups.slice(from, to).map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

/** Whether an IPv6 address carries an IPv4 address as `::ffff:0:0/96` (how dual-stack sockets show IPv4). */
export function isIpv4Mapped(address: IpAddress): boolean {
  const b = address.bytes;
  return address.family === 6 && b.subarray(0, 10).every((byte) => byte === 0) && b[10] === 0xff &&
    b[11] === 0xff;
}

/** The IPv4 address an IPv4-mapped IPv6 address carries; any other address as it is. */
export function unmapIpv4(address: IpAddress): IpAddress {
  return isIpv4Mapped(address) ? { family: 4, bytes: address.bytes.slice(12) } : address;
}

/** The IPv4-mapped IPv6 form of an IPv4 address; an IPv6 address as it is. */
export function mapToIpv6(address: IpAddress): IpAddress {
  if (address.family === 6) return address;
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(address.bytes, 12);
  return { family: 6, bytes };
}

/** Dotted decimal, by hand: addresses are parsed per connection, and this is several times faster than split. */
function parseIpv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    // The end of the text ends the last octet as a dot would.
    const c = i < text.length ? text.charCodeAt(i) : DOT;
    if (c === DOT) {
      if (digits === 0 || part > 3) return null;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= ZERO && c <= ZERO + 9) {
      if (digits > 0 && value === 0) return null; // a leading zero
      value = value * 10 + (c - ZERO);
      digits += 1;
      if (value > 255) return null;
    } else {
      return null;
    }
  }
  return part === 4 ? out : null;
}

function parseIpv6(text: string): Uint8Array | null {
  let address = text;
  // A dotted IPv4 tail (`::ffff:192.0.2.7`) stands for the last two groups.
  let tail: Uint8Array | null = null;
  const lastColon = address.lastIndexOf(":");
  if (lastColon >= 0 && address.indexOf(".", lastColon) > lastColon) {
    tail = parseIpv4(address.slice(lastColon + 1));
    if (tail === null) return null;
    address = address.slice(0, lastColon + 1);
    if (!address.endsWith("::")) address = address.slice(0, -1);
  }
  const halves = address.split("::");
  if (halves.length > 2) return null;
  const parse = (half: string): number[] | null => {
    if (half === "") return [];
    const parts = half.split(":");
    if (!parts.every((part) => HEX_GROUP.test(part))) return null;
    return parts.map((part) => parseInt(part, 16));
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (head === null || rest === null) return null;
  const tailGroups = tail === null ? [] : [(tail[0] << 8) | tail[1], (tail[2] << 8) | tail[3]];
  const given = head.length + rest.length + tailGroups.length;
  if (halves.length === 2 ? given > 7 : given !== 8) return null;
  const groups = [...head, ...new Array<number>(8 - given).fill(0), ...rest, ...tailGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}
