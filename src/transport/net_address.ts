/**
 * Socket addresses as the logs and the protocol write them.
 *
 * @module
 */

import { type IpAddress, parseIpAddress } from "./ip_address.ts";

/**
 * `ip:port`, with IPv6 in brackets (§3.2 `client_ip`).
 *
 * @example
 * ```ts
 * import { formatAddress } from "./net_address.ts";
 * formatAddress({ transport: "tcp", hostname: "::1", port: 443 }); // "[::1]:443"
 * ```
 */
export function formatAddress(address: Deno.NetAddr): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

/**
 * The inverse of {@linkcode formatAddress}: the address and port of `ip:port` or `[ipv6]:port`, or null when
 * the text is not exactly that (a hostname, no port, a zone, IPv6 without brackets).
 *
 * @example
 * ```ts
 * import { parseSocketAddress } from "./net_address.ts";
 * parseSocketAddress("[2001:DB8::7]:443"); // { address: { family: 6, bytes: … }, port: 443 }
 * ```
 */
export function parseSocketAddress(text: string): { address: IpAddress; port: number } | null {
  const match = /^(?:\[([^\]]+)\]|([0-9.]+)):(0|[1-9][0-9]{0,4})$/.exec(text);
  if (match === null) return null;
  const address = parseIpAddress(match[1] ?? match[2]);
  const port = Number(match[3]);
  if (address === null || port > 65_535 || (match[1] !== undefined) !== (address.family === 6)) return null;
  return { address, port };
}
