/**
 * The address block one client is assumed to control, which the per-IP limits count by: an IPv4 address, or
 * the /64 of an IPv6 address (the smallest block a site is given, so one attacker owns all 2^64 addresses in
 * it). Pure: no sockets, no DNS.
 *
 * @module
 */

import { parseIpAddress } from "../transport/ip_address.ts";

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
export function sourcePrefix(text: string): string {
  const address = parseIpAddress(withoutBracketsAndZone(text));
  if (address === null) return text;
  const b = address.bytes;
  if (address.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const group = (i: number) => (b[2 * i] << 8) | b[2 * i + 1];
  const embedsIpv4 = [0, 0, 0, 0, 0, 0xffff].every((g, i) => group(i) === g) ||
    [0x64, 0xff9b, 0, 0, 0, 0].every((g, i) => group(i) === g);
  if (embedsIpv4) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  return `${[0, 1, 2, 3].map((i) => group(i).toString(16)).join(":")}::/64`;
}

/** `[2001:db8::1]` and `fe80::1%eth0` as the bare address. */
function withoutBracketsAndZone(text: string): string {
  let address = text;
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
  const zone = address.indexOf("%");
  return zone >= 0 ? address.slice(0, zone) : address;
}
