/**
 * Address blocks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address), and a set of them that
 * says whether an address falls in any: which upstreams a relay port trusts to send PROXY headers. Pure.
 *
 * @module
 */

import {
  formatIpAddress,
  type IpAddress,
  isIpv4Mapped,
  parseIpAddress,
  unmapIpv4,
} from "../transport/ip_address.ts";

/** An address and how many of its leading bits make the block. */
export interface AddressBlock {
  readonly network: IpAddress;
  readonly prefixLength: number;
}

/**
 * Parses `address/length`, or a lone address (a block of one), or explains what is wrong. A block with bits
 * set past its prefix is refused (`10.1.2.3/8`), since it usually means another block than the one written.
 *
 * @example
 * ```ts
 * import { parseAddressBlock } from "./address_blocks.ts";
 * parseAddressBlock("10.0.0.0/8"); // { network: { family: 4, bytes: … }, prefixLength: 8 }
 * parseAddressBlock("10.1.0.0/8"); // "10.1.0.0/8 has bits set past its /8: the block is 10.0.0.0/8"
 * ```
 */
export function parseAddressBlock(text: string): AddressBlock | string {
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const address = parseIpAddress(addressText);
  if (address === null) return `"${text}" is not an IP address or a CIDR block such as 10.0.0.0/8`;
  const bits = address.bytes.length * 8;
  const lengthText = slash < 0 ? String(bits) : text.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > bits) {
    return `"${text}" has a prefix length that is not 0-${bits}`;
  }
  const prefixLength = Number(lengthText);
  const network = { family: address.family, bytes: masked(address.bytes, prefixLength) };
  if (!network.bytes.every((byte, i) => byte === address.bytes[i])) {
    return `${text} has bits set past its /${prefixLength}: the block is ${
      formatIpAddress(network)
    }/${prefixLength}`;
  }
  // Addresses are compared unmapped, so an IPv4-mapped block is kept as the IPv4 block it covers.
  if (isIpv4Mapped(address) && prefixLength >= 96) {
    return { network: unmapIpv4(address), prefixLength: prefixLength - 96 };
  }
  return { network: address, prefixLength };
}

/** Blocks an address may fall in; IPv4-mapped IPv6 addresses count as their IPv4 address. */
export class AddressBlocks {
  readonly #blocks: readonly AddressBlock[];

  constructor(blocks: readonly AddressBlock[]) {
    this.#blocks = blocks;
  }

  /** The blocks as CIDR text in their order (`10.0.0.0/8,192.0.2.7/32`): what a reload compares and logs. */
  toString(): string {
    return this.#blocks.map((block) => `${formatIpAddress(block.network)}/${block.prefixLength}`).join(",");
  }

  /**
   * Whether `ip` (as a socket reports it) is in one of the blocks; anything that is not an address is in none.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { AddressBlocks, type AddressBlock, parseAddressBlock } from "./address_blocks.ts";
   * const trusted = new AddressBlocks([parseAddressBlock("10.0.0.0/8") as AddressBlock]);
   * assert.ok(trusted.contains("::ffff:10.1.2.3"));
   * assert.ok(!trusted.contains("192.0.2.1"));
   * ```
   */
  contains(ip: string): boolean {
    const parsed = parseIpAddress(ip);
    if (parsed === null) return false;
    const address = unmapIpv4(parsed);
    return this.#blocks.some((block) =>
      block.network.family === address.family &&
      masked(address.bytes, block.prefixLength).every((byte, i) => byte === block.network.bytes[i])
    );
  }
}

/** `bytes` with every bit past the first `prefixLength` cleared. */
function masked(bytes: Uint8Array, prefixLength: number): Uint8Array {
  return bytes.map((byte, i) => {
    const kept = Math.max(0, Math.min(8, prefixLength - 8 * i));
    return byte & (0xff << (8 - kept)) & 0xff;
  });
}
