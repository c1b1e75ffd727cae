/**
 * The address block one client is assumed to control, which the per-IP limits count by: an IPv4 address, or
 * the /64 of an IPv6 address (the smallest block a site is given, so one attacker owns all 2^64 addresses in
 * it). Pure: no sockets, no DNS.
 *
 * @module
 */

const IPV4_PATTERN = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const HEX_GROUP = /^[0-9a-f]{1,4}$/;

/**
 * The source an address counts as: an IPv4 address as it is, an IPv6 address as its /64 in canonical form
 * (`2001:db8:0:1::/64`). An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:0:0/96`, as a
 * dual-stack listener reports IPv4 clients, or the NAT64 prefix `64:ff9b::/96`) counts as that IPv4 address.
 * Anything else (not an address) is returned unchanged, so it still counts as one source of its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sourcePrefix } from "./source_prefix.ts";
 * assert.equal(sourcePrefix("192.0.2.7"), "192.0.2.7");
 * assert.equal(sourcePrefix("2001:DB8:0:1:aa::7"), "2001:db8:0:1::/64");
 * assert.equal(sourcePrefix("::ffff:192.0.2.7"), "192.0.2.7");
 * ```
 */
export function sourcePrefix(address: string): string {
  if (IPV4_PATTERN.test(address)) return address;
  const groups = parseIpv6(address);
  if (groups === null) return address;
  const embedsIpv4 = (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 &&
    groups[4] === 0 && groups[5] === 0xffff) ||
    (groups[0] === 0x64 && groups[1] === 0xff9b && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 &&
      groups[5] === 0);
  if (embedsIpv4) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`;
  }
  return `${groups.slice(0, 4).map((group) => group.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (a zone `%eth0` and brackets ignored), or null. */
function parseIpv6(text: string): number[] | null {
  let address = text.toLowerCase();
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
  const zone = address.indexOf("%");
  if (zone >= 0) address = address.slice(0, zone);
  // A dotted IPv4 tail (`::ffff:192.0.2.7`) stands for the last two groups.
  const tail = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(address);
  let tailGroups: number[] = [];
  if (tail !== null) {
    const octets = IPV4_PATTERN.exec(tail[2])!.slice(1).map(Number);
    if (octets.some((octet) => octet > 255)) return null;
    tailGroups = [(octets[0] << 8) | octets[1], (octets[2] << 8) | octets[3]];
    address = tail[1].endsWith("::") ? tail[1] : tail[1].slice(0, -1);
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
  const given = head.length + rest.length + tailGroups.length;
  if (halves.length === 2 ? given > 7 : given !== 8) return null;
  return [...head, ...new Array<number>(8 - given).fill(0), ...rest, ...tailGroups];
}
