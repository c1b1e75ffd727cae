/**
 * Socket addresses as the logs and the protocol write them.
 *
 * @module
 */

/**
 * `ip:port`, with IPv6 in brackets (§2.4 `client_ip`).
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
