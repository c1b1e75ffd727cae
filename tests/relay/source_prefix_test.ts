/**
 * The source an address counts as for the per-IP limits: IPv4 addresses as they are, IPv6 addresses by /64
 * whatever their spelling, IPv4 carried in IPv6 as that IPv4 address.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { sourcePrefix } from "../../src/relay/source_prefix.ts";

Deno.test("IPv4 addresses count one by one", () => {
  assert.equal(sourcePrefix("192.0.2.7"), "192.0.2.7");
  assert.equal(sourcePrefix("127.0.0.1"), "127.0.0.1");
  assert.notEqual(sourcePrefix("192.0.2.7"), sourcePrefix("192.0.2.8"));
});

Deno.test("IPv6 addresses count by /64, in one canonical spelling", () => {
  assert.equal(sourcePrefix("2001:db8:0:1:aa::7"), "2001:db8:0:1::/64");
  assert.equal(sourcePrefix("2001:0DB8:0000:0001:ffff:ffff:ffff:ffff"), "2001:db8:0:1::/64");
  assert.equal(sourcePrefix("[2001:db8:0:1::1]"), "2001:db8:0:1::/64");
  assert.equal(sourcePrefix("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(sourcePrefix("::1"), "0:0:0:0::/64");
  assert.equal(sourcePrefix("::"), "0:0:0:0::/64");
  assert.equal(sourcePrefix("1:2:3:4:5:6:7::"), "1:2:3:4::/64");
  assert.notEqual(sourcePrefix("2001:db8:0:1::1"), sourcePrefix("2001:db8:0:2::1"));
});

Deno.test("IPv4 carried in IPv6 counts as that IPv4 address", () => {
  assert.equal(sourcePrefix("::ffff:192.0.2.7"), "192.0.2.7", "IPv4-mapped, as dual-stack listeners report");
  assert.equal(sourcePrefix("::FFFF:c000:0207"), "192.0.2.7", "the same in hex groups");
  assert.equal(sourcePrefix("64:ff9b::198.51.100.1"), "198.51.100.1", "the NAT64 well-known prefix");
  // Other embedded forms are ordinary IPv6 addresses.
  assert.equal(sourcePrefix("::192.0.2.7"), "0:0:0:0::/64");
  assert.equal(sourcePrefix("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4::/64");
});

Deno.test("what is not an address counts as itself", () => {
  for (
    const text of [
      "",
      "localhost",
      "1:2:3",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "12345::",
      "::ffff:1.2.3.256",
      "g::",
    ]
  ) {
    assert.equal(sourcePrefix(text), text);
  }
  assert.equal(sourcePrefix("1:2:3:4:5:6:7::8"), "1:2:3:4:5:6:7::8", "`::` standing for no group at all");
});

const groupsArbitrary = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });

/** The ways an address can be written: zeros padded or not, a zero run compressed or not, either case. */
function spellings(groups: readonly number[], random: (n: number) => number): string[] {
  const hex = groups.map((group) => group.toString(16));
  const padded = groups.map((group) => group.toString(16).padStart(4, "0"));
  const out = [hex.join(":"), padded.join(":").toUpperCase()];
  // Compress one run of zero groups (any run, not only the longest: both are accepted).
  const zeroRuns: Array<[number, number]> = [];
  for (let i = 0; i < 8; i++) {
    if (groups[i] !== 0) continue;
    let end = i;
    while (end + 1 < 8 && groups[end + 1] === 0) end++;
    zeroRuns.push([i, end]);
    i = end;
  }
  if (zeroRuns.length > 0) {
    const [from, to] = zeroRuns[random(zeroRuns.length)];
    out.push(`${hex.slice(0, from).join(":")}::${hex.slice(to + 1).join(":")}`);
  }
  out.push(`[${hex.join(":")}]`, `${hex.join(":")}%7`);
  return out;
}

const carriesIpv4 = (g: readonly number[]) =>
  (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) ||
  (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0));

Deno.test("property: every spelling of an IPv6 address counts as the /64 of its first four groups", () => {
  fc.assert(
    fc.property(groupsArbitrary, fc.infiniteStream(fc.nat()), (groups, randoms) => {
      fc.pre(!carriesIpv4(groups));
      const iterator = randoms[Symbol.iterator]();
      const random = (n: number) => iterator.next().value % n;
      const expected = `${groups.slice(0, 4).map((group) => group.toString(16)).join(":")}::/64`;
      for (const spelling of spellings(groups, random)) {
        assert.equal(sourcePrefix(spelling), expected, spelling);
      }
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("property: two IPv6 addresses share a source exactly when their first 64 bits are equal", () => {
  fc.assert(
    fc.property(groupsArbitrary, groupsArbitrary, fc.boolean(), (a, b, sameNetwork) => {
      const other = sameNetwork ? [...a.slice(0, 4), ...b.slice(4)] : b;
      fc.pre(!carriesIpv4(a) && !carriesIpv4(other));
      const same = a.slice(0, 4).every((group, i) => group === other[i]);
      const spell = (g: readonly number[]) => g.map((group) => group.toString(16)).join(":");
      assert.equal(sourcePrefix(spell(a)) === sourcePrefix(spell(other)), same);
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("property: any IPv4 address, alone or IPv4-mapped, counts as itself", () => {
  fc.assert(
    fc.property(fc.ipV4(), (ip) => {
      assert.equal(sourcePrefix(ip), ip);
      assert.equal(sourcePrefix(`::ffff:${ip}`), ip);
    }),
  );
});
