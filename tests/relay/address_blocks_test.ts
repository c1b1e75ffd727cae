/**
 * Trusted address blocks: CIDR parsing with its exact errors, and membership checked against a model that
 * compares the addresses as big integers, for random blocks and addresses of both families.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type AddressBlock, AddressBlocks, parseAddressBlock } from "../../src/relay/address_blocks.ts";
import { formatIpAddress } from "../../src/transport/ip_address.ts";

const block = (text: string) => {
  const parsed = parseAddressBlock(text);
  assert.notEqual(typeof parsed, "string", String(parsed));
  return parsed as AddressBlock;
};

Deno.test("a block is address/length; a lone address is a block of one; /0 is everything of its family", () => {
  const blocks = new AddressBlocks([block("10.0.0.0/8"), block("192.0.2.7"), block("2001:db8::/32")]);
  assert.ok(blocks.contains("10.200.0.1"));
  assert.ok(blocks.contains("192.0.2.7"));
  assert.ok(!blocks.contains("192.0.2.6"));
  assert.ok(blocks.contains("2001:db8:1::1"));
  assert.ok(!blocks.contains("2001:db9::1"));
  const everyIpv4 = new AddressBlocks([block("0.0.0.0/0")]);
  assert.ok(everyIpv4.contains("203.0.113.1"));
  assert.ok(everyIpv4.contains("::ffff:203.0.113.1"), "an IPv4 client of a dual-stack socket");
  assert.ok(!everyIpv4.contains("2001:db8::1"));
  assert.ok(!new AddressBlocks([]).contains("10.0.0.1"));
});

Deno.test("an IPv4-mapped block is the IPv4 block it covers", () => {
  assert.deepEqual(block("::ffff:10.0.0.0/104"), block("10.0.0.0/8"));
  assert.ok(new AddressBlocks([block("::ffff:10.0.0.1")]).contains("10.0.0.1"));
});

Deno.test("what is not a block is explained", () => {
  assert.equal(
    parseAddressBlock("lb.example.com"),
    '"lb.example.com" is not an IP address or a CIDR block such as 10.0.0.0/8',
  );
  assert.equal(parseAddressBlock("10.0.0.0/"), '"10.0.0.0/" has a prefix length that is not 0-32');
  assert.equal(parseAddressBlock("10.0.0.0/08"), '"10.0.0.0/08" has a prefix length that is not 0-32');
  assert.equal(parseAddressBlock("::/129"), '"::/129" has a prefix length that is not 0-128');
  assert.equal(
    parseAddressBlock("10.0.0.1/31"),
    "10.0.0.1/31 has bits set past its /31: the block is 10.0.0.0/31",
  );
  assert.equal(
    parseAddressBlock("2001:db8::1/64"),
    "2001:db8::1/64 has bits set past its /64: the block is 2001:db8::/64",
  );
});

const toBigInt = (bytes: Uint8Array) => bytes.reduce((n, byte) => (n << 8n) | BigInt(byte), 0n);

Deno.test("property: an address is in a block exactly when its first prefix-length bits are the block's", () => {
  const family = fc.constantFrom(4, 6);
  fc.assert(
    fc.property(
      family.chain((f) =>
        fc.tuple(
          fc.constant(f as 4 | 6),
          fc.uint8Array({ minLength: f === 4 ? 4 : 16, maxLength: f === 4 ? 4 : 16 }),
          fc.integer({ min: 0, max: f === 4 ? 32 : 128 }),
          fc.uint8Array({ minLength: f === 4 ? 4 : 16, maxLength: f === 4 ? 4 : 16 }),
          fc.nat({ max: 8 }),
        )
      ),
      ([f, networkBytes, prefixLength, probeBytes, sharedBytes]) => {
        const bits = f === 4 ? 32 : 128;
        const shift = BigInt(bits - prefixLength);
        const network = (toBigInt(networkBytes) >> shift) << shift;
        const networkText = formatIpAddress({ family: f, bytes: fromBigInt(network, networkBytes.length) });
        const blocks = new AddressBlocks([block(`${networkText}/${prefixLength}`)]);
        // Probes near the block too: the network's first bytes, then random ones.
        const probe = probeBytes.map((
          byte,
          i,
        ) => (i < sharedBytes ? fromBigInt(network, networkBytes.length)[i] : byte));
        const expected = (toBigInt(probe) >> shift) === (network >> shift);
        assert.equal(blocks.contains(formatIpAddress({ family: f, bytes: probe })), expected);
      },
    ),
    { numRuns: 2_000 },
  );
});

function fromBigInt(value: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = length - 1, v = value; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}
