/**
 * IP address text: strict parsing, and RFC 5952's canonical text checked against the WHATWG URL parser's
 * (which compresses the same way) for random addresses, with every zero-run shape.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  formatIpAddress,
  isIpv4Mapped,
  mapToIpv6,
  parseIpAddress,
  unmapIpv4,
} from "../../src/transport/ip_address.ts";

Deno.test("IPv4: dotted decimal, four octets of 0-255, no leading zeros", () => {
  assert.deepEqual(parseIpAddress("0.0.0.0"), { family: 4, bytes: Uint8Array.of(0, 0, 0, 0) });
  assert.deepEqual(parseIpAddress("255.255.255.255")?.bytes, Uint8Array.of(255, 255, 255, 255));
  for (
    const text of [
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.256",
      "01.2.3.4",
      "1.2.3.-4",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1..3.4",
      "0x1.2.3.4",
    ]
  ) {
    assert.equal(parseIpAddress(text), null, text);
  }
});

Deno.test("IPv6: groups, one ::, a dotted IPv4 tail; no brackets, no zone", () => {
  assert.equal(formatIpAddress(parseIpAddress("::")!), "::");
  assert.equal(formatIpAddress(parseIpAddress("::1")!), "::1");
  assert.equal(formatIpAddress(parseIpAddress("1::")!), "1::");
  assert.equal(
    formatIpAddress(parseIpAddress("2001:0DB8:0000:0000:0001:0000:0000:0001")!),
    "2001:db8::1:0:0:1",
  );
  assert.equal(
    formatIpAddress(parseIpAddress("2001:db8:0:1:1:1:1:1")!),
    "2001:db8:0:1:1:1:1:1",
    "one zero group stays",
  );
  assert.equal(formatIpAddress(parseIpAddress("1:2:3:4:5:6:1.2.3.4")!), "1:2:3:4:5:6:102:304");
  assert.equal(formatIpAddress(parseIpAddress("::ffff:192.0.2.7")!), "::ffff:192.0.2.7");
  assert.equal(formatIpAddress(parseIpAddress("::FFFF:c000:207")!), "::ffff:192.0.2.7");
  for (
    const text of [
      "[::1]",
      "fe80::1%eth0",
      "1:2:3",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "12345::",
      "::ffff:1.2.3.256",
      "g::",
      ":1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7::8",
      ":::",
      "::1.2.3",
    ]
  ) {
    assert.equal(parseIpAddress(text), null, text);
  }
});

Deno.test("IPv4-mapped addresses map and unmap; others pass unchanged", () => {
  const mapped = parseIpAddress("::ffff:10.0.0.1")!;
  assert.ok(isIpv4Mapped(mapped));
  assert.deepEqual(unmapIpv4(mapped), parseIpAddress("10.0.0.1"));
  assert.deepEqual(mapToIpv6(parseIpAddress("10.0.0.1")!), mapped);
  const plain = parseIpAddress("2001:db8::1")!;
  assert.equal(unmapIpv4(plain), plain);
  assert.equal(isIpv4Mapped(parseIpAddress("::fffe:10.0.0.1")!), false);
});

const groupsArbitrary = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
});
const toBytes = (groups: readonly number[]) => Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff]));

Deno.test("property: IPv6 text is RFC 5952's, as the URL parser writes it, and parses back to the same bytes", () => {
  fc.assert(
    fc.property(groupsArbitrary, (groups) => {
      const address = { family: 6 as const, bytes: toBytes(groups) };
      const text = formatIpAddress(address);
      assert.deepEqual(parseIpAddress(text), address);
      if (!isIpv4Mapped(address)) assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname);
      // Any spelling (upper case, padded) gives the same canonical text.
      const padded = groups.map((g) => g.toString(16).padStart(4, "0").toUpperCase()).join(":");
      assert.equal(formatIpAddress(parseIpAddress(padded)!), text);
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("property: IPv4 text parses back to the same bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (bytes) => {
      assert.deepEqual(parseIpAddress(formatIpAddress({ family: 4, bytes })), { family: 4, bytes });
    }),
  );
});

Deno.test("property: arbitrary text never throws", () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.%[] x") }), (text) => {
      const address = parseIpAddress(text);
      if (address !== null) assert.deepEqual(parseIpAddress(formatIpAddress(address)), address);
    }),
    { numRuns: 5_000 },
  );
});
