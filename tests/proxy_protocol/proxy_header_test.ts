/**
 * The PROXY protocol codec against the specification's own examples (haproxy.org proxy-protocol.txt, §2.1 and
 * §2.2), its exact errors, and properties: encode∘decode gives back any header with random addresses and
 * ports in both versions, the header's end is found exactly whatever follows, every prefix asks for more, and
 * arbitrary bytes never throw.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeProxyHeader,
  encodeProxyHeader,
  MAX_PROXY_HEADER_BYTES,
  MAX_V1_HEADER_BYTES,
  type ProxyAddresses,
  type ProxyHeader,
  type ProxyHeaderResult,
  type ProxyVersion,
} from "../../src/proxy_protocol/proxy_header.ts";
import { formatIpAddress } from "../../src/transport/ip_address.ts";

const ascii = (text: string) => new TextEncoder().encode(text);
const SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V2 = (...rest: number[]) => Uint8Array.from([...SIGNATURE, ...rest]);
const FFFF6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

function tcp(
  family: "tcp4" | "tcp6",
  source: [string, number],
  destination: [string, number],
): ProxyHeader {
  return {
    command: "proxy",
    addresses: {
      family,
      source: { address: source[0], port: source[1] },
      destination: { address: destination[0], port: destination[1] },
    },
  };
}

function header(result: ProxyHeaderResult): { version: ProxyVersion; header: ProxyHeader; length: number } {
  assert.equal(result.kind, "header", JSON.stringify(result));
  return result as Extract<ProxyHeaderResult, { kind: "header" }>;
}

// --- The specification's examples ---------------------------------------------------------------------------

Deno.test("v1: the spec's longest TCP4 line is 56 bytes and decodes to its addresses", () => {
  const line = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  assert.equal(line.length, 56);
  assert.deepEqual(decodeProxyHeader(ascii(line)), {
    kind: "header",
    version: 1,
    header: tcp("tcp4", ["255.255.255.255", 65535], ["255.255.255.255", 65535]),
    length: 56,
  });
});

Deno.test("v1: the spec's longest TCP6 line is 104 bytes and decodes to its addresses", () => {
  const line = `PROXY TCP6 ${FFFF6} ${FFFF6} 65535 65535\r\n`;
  assert.equal(line.length, 104);
  assert.deepEqual(
    header(decodeProxyHeader(ascii(line))).header,
    tcp("tcp6", [FFFF6, 65535], [FFFF6, 65535]),
  );
});

Deno.test("v1: UNKNOWN, the shortest line (15 bytes) and the worst case (107 bytes), says nothing of the ends", () => {
  const shortest = "PROXY UNKNOWN\r\n";
  const worst = `PROXY UNKNOWN ${FFFF6} ${FFFF6} 65535 65535\r\n`;
  assert.equal(shortest.length, 15);
  assert.equal(worst.length, MAX_V1_HEADER_BYTES);
  for (const line of [shortest, worst]) {
    assert.deepEqual(decodeProxyHeader(ascii(line)), {
      kind: "header",
      version: 1,
      header: { command: "proxy", addresses: null },
      length: line.length,
    });
  }
});

Deno.test("v1: the spec's HTTP example: the header ends at its CRLF and the request follows untouched", () => {
  const bytes = ascii(
    "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n",
  );
  const decoded = header(decodeProxyHeader(bytes));
  assert.deepEqual(decoded.header, tcp("tcp4", ["192.168.0.1", 56324], ["192.168.0.11", 443]));
  assert.equal(new TextDecoder().decode(bytes.subarray(decoded.length)).slice(0, 16), "GET / HTTP/1.1\r\n");
});

Deno.test("v2: the signature, PROXY over TCP4, with 12 address bytes, in network order", () => {
  const bytes = V2(0x21, 0x11, 0x00, 0x0c, 192, 0, 2, 7, 198, 51, 100, 1, 0xcb, 0xb0, 0x01, 0xbb, 0x16, 0x03);
  assert.deepEqual(decodeProxyHeader(bytes), {
    kind: "header",
    version: 2,
    header: tcp("tcp4", ["192.0.2.7", 52144], ["198.51.100.1", 443]),
    length: 28,
  });
  assert.deepEqual(
    encodeProxyHeader(tcp("tcp4", ["192.0.2.7", 52144], ["198.51.100.1", 443]), 2),
    bytes.subarray(0, 28),
  );
});

Deno.test("v2: PROXY over TCP6, with 36 address bytes", () => {
  const source = [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 0x07];
  const destination = [...new Array(15).fill(0), 0x01];
  const bytes = V2(0x21, 0x21, 0x00, 0x24, ...source, ...destination, 0x00, 0x50, 0x01, 0xbb);
  assert.deepEqual(header(decodeProxyHeader(bytes)).header, tcp("tcp6", ["2001:db8::7", 80], ["::1", 443]));
  assert.deepEqual(encodeProxyHeader(tcp("tcp6", ["2001:db8::7", 80], ["::1", 443]), 2), bytes);
});

Deno.test("v2: LOCAL (a health check of the proxy itself) discards its block, whatever the family", () => {
  assert.deepEqual(decodeProxyHeader(V2(0x20, 0x00, 0x00, 0x00)), {
    kind: "header",
    version: 2,
    header: { command: "local" },
    length: 16,
  });
  assert.deepEqual(header(decodeProxyHeader(V2(0x20, 0x31, 0x00, 0x02, 9, 9))).header, { command: "local" });
  assert.deepEqual(encodeProxyHeader({ command: "local" }, 2), V2(0x20, 0x00, 0x00, 0x00));
  assert.deepEqual(encodeProxyHeader({ command: "local" }, 1), ascii("PROXY UNKNOWN\r\n"), "v1 has no LOCAL");
});

Deno.test("v2: PROXY with AF_UNSPEC says nothing of the ends; unknown addresses encode to it", () => {
  assert.deepEqual(header(decodeProxyHeader(V2(0x21, 0x00, 0x00, 0x00))).header, {
    command: "proxy",
    addresses: null,
  });
  assert.deepEqual(encodeProxyHeader({ command: "proxy", addresses: null }, 2), V2(0x21, 0x00, 0x00, 0x00));
  assert.deepEqual(encodeProxyHeader({ command: "proxy", addresses: null }, 1), ascii("PROXY UNKNOWN\r\n"));
});

Deno.test("v2: TLVs after the addresses (ALPN, AUTHORITY, NOOP, AWS's 0xEA) are skipped and counted in the length", () => {
  const addresses = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x01, 0xbb];
  const tlvs = [
    0x01,
    0x00,
    0x02,
    0x68,
    0x32,
    0x02,
    0x00,
    0x03,
    0x61,
    0x2e,
    0x62,
    0x04,
    0x00,
    0x00,
    0xea,
    0x00,
    0x01,
    0x01,
  ];
  const bytes = V2(0x21, 0x11, 0x00, addresses.length + tlvs.length, ...addresses, ...tlvs, 0x16);
  const decoded = header(decodeProxyHeader(bytes));
  assert.deepEqual(decoded.header, tcp("tcp4", ["10.0.0.1", 12345], ["10.0.0.2", 443]));
  assert.equal(decoded.length, 16 + addresses.length + tlvs.length);
});

// --- Exact errors --------------------------------------------------------------------------------------------

const MALFORMED: ReadonlyArray<[string, Uint8Array, ProxyVersion, string]> = [
  [
    "v1 unknown protocol",
    ascii("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    1,
    'v1 protocol "UDP4" is not TCP4, TCP6 or UNKNOWN',
  ],
  [
    "v1 double space",
    ascii("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
    1,
    "v1 TCP4 header needs a source address, a destination address and two ports, each after exactly one space",
  ],
  [
    "v1 missing port",
    ascii("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
    1,
    "v1 TCP4 header needs a source address, a destination address and two ports, each after exactly one space",
  ],
  [
    "v1 IPv6 in TCP4",
    ascii("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
    1,
    'v1 source address "::1" is not an IPv4 address',
  ],
  [
    "v1 IPv4 in TCP6",
    ascii("PROXY TCP6 ::1 5.6.7.8 1 2\r\n"),
    1,
    'v1 destination address "5.6.7.8" is not an IPv6 address',
  ],
  [
    "v1 octet 256",
    ascii("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"),
    1,
    'v1 source address "1.2.3.256" is not an IPv4 address',
  ],
  [
    "v1 leading zero",
    ascii("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n"),
    1,
    'v1 destination address "5.6.7.08" is not an IPv4 address',
  ],
  [
    "v1 port 65536",
    ascii("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
    1,
    'v1 source port "65536" is not a port number (0-65535)',
  ],
  [
    "v1 port 080",
    ascii("PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n"),
    1,
    'v1 destination port "080" is not a port number (0-65535)',
  ],
  [
    "v1 port +1",
    ascii("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
    1,
    'v1 source port "+1" is not a port number (0-65535)',
  ],
  [
    "v1 bare LF",
    ascii("PROXY TCP4 1.2.3.4\n"),
    1,
    "v1 header has a line feed without a carriage return before it",
  ],
  [
    "v1 CR without LF",
    ascii("PROXY UNKNOWN\rx"),
    1,
    "v1 header has a carriage return not followed by a line feed",
  ],
  ["v1 control byte", ascii("PROXY TCP4\t1.2.3.4"), 1, "v1 header has byte 0x09, not printable US-ASCII"],
  [
    "v1 no CRLF in 107 bytes",
    ascii(`PROXY UNKNOWN ${"x".repeat(100)}`),
    1,
    "v1 header has no CRLF within its first 107 bytes",
  ],
  ["v1 CRLF at 108", ascii(`PROXY UNKNOWN ${"x".repeat(92)}\r\n`), 1, "v1 header is longer than 107 bytes"],
  ["v2 version 1", V2(0x11, 0x11, 0, 12), 2, "v2 header has version 1, expected 2"],
  ["v2 command 2", V2(0x22, 0x11, 0, 12), 2, "v2 header has command 2, neither LOCAL (0) nor PROXY (1)"],
  [
    "v2 UDP4",
    V2(0x21, 0x12, 0, 12, ...new Array(12).fill(0)),
    2,
    "v2 header is for a datagram transport (0x12), not a TCP stream",
  ],
  ["v2 UDP6", V2(0x21, 0x22, 0, 0), 2, "v2 header is for a datagram transport (0x22), not a TCP stream"],
  [
    "v2 UNIX",
    V2(0x21, 0x31, 0, 0),
    2,
    "v2 header carries AF_UNIX addresses, which a TCP relay cannot pass on",
  ],
  [
    "v2 INET with no transport",
    V2(0x21, 0x10, 0, 0),
    2,
    "v2 address family and transport 0x10 are not defined",
  ],
  ["v2 family 4", V2(0x21, 0x41, 0, 0), 2, "v2 address family and transport 0x41 are not defined"],
  [
    "v2 TCP4 short block",
    V2(0x21, 0x11, 0, 11, ...new Array(11).fill(0)),
    2,
    "v2 header of family 0x11 needs 12 address bytes, has 11",
  ],
  [
    "v2 TCP6 short block",
    V2(0x21, 0x21, 0, 12, ...new Array(12).fill(0)),
    2,
    "v2 header of family 0x21 needs 36 address bytes, has 12",
  ],
  [
    "v2 over the cap",
    V2(0x21, 0x11, 0x08, 0x01),
    2,
    "v2 header announces 2049 bytes of addresses and TLVs, more than the 2048 accepted",
  ],
  [
    "v2 TLV cut before its length",
    V2(0x21, 0x11, 0, 14, ...new Array(12).fill(1), 0x04, 0x00),
    2,
    "v2 TLV at byte 28 is cut off before its length",
  ],
  [
    "v2 TLV past the end",
    V2(0x21, 0x11, 0, 16, ...new Array(12).fill(1), 0x05, 0x00, 0x02, 0xaa),
    2,
    "v2 TLV at byte 28 (type 0x5) runs past the header",
  ],
];

for (const [name, bytes, version, reason] of MALFORMED) {
  Deno.test(`malformed: ${name}`, () => {
    assert.deepEqual(decodeProxyHeader(bytes), { kind: "malformed", version, reason });
  });
}

Deno.test("a version 2 header over the cap is refused from its first 16 bytes, before its block is read", () => {
  assert.equal(decodeProxyHeader(V2(0x21, 0x11, 0xff, 0xff)).kind, "malformed");
  const atCap = V2(
    0x21,
    0x00,
    0x08,
    0x00,
    ...Array.from({ length: 2048 / 4 }, () => [0x04, 0x00, 0x01, 0x00]).flat(),
  );
  assert.equal(header(decodeProxyHeader(atCap)).length, MAX_PROXY_HEADER_BYTES);
});

Deno.test("no signature: not_proxy from the first byte that rules both out; a signature's prefix waits", () => {
  assert.deepEqual(decodeProxyHeader(Uint8Array.of(0x16, 0x03, 0x01)), { kind: "not_proxy" });
  assert.deepEqual(decodeProxyHeader(ascii("GET / HTTP/1.1\r\n")), { kind: "not_proxy" });
  assert.deepEqual(decodeProxyHeader(ascii("PROPFIND / HTTP/1.1\r\n")), { kind: "not_proxy" });
  assert.deepEqual(decodeProxyHeader(ascii("PROXY")), { kind: "incomplete" });
  assert.deepEqual(decodeProxyHeader(ascii("PROXY"), { atEof: true }), { kind: "truncated" });
  assert.deepEqual(
    decodeProxyHeader(ascii("proxy tcp4")),
    { kind: "not_proxy" },
    "the signature is upper case",
  );
  assert.deepEqual(decodeProxyHeader(Uint8Array.of(0x0d, 0x0a, 0x0d)), { kind: "incomplete" });
  assert.deepEqual(decodeProxyHeader(Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x01)), { kind: "not_proxy" });
  assert.deepEqual(decodeProxyHeader(new Uint8Array()), { kind: "incomplete" });
});

Deno.test("encoding refuses an address of the wrong family or a port out of range", () => {
  assert.throws(
    () => encodeProxyHeader(tcp("tcp4", ["::1", 1], ["192.0.2.1", 2]), 1),
    new RangeError('The source address "::1" is not an IPv4 address'),
  );
  assert.throws(
    () => encodeProxyHeader(tcp("tcp6", ["::1", 1], ["::2", 65536]), 2),
    new RangeError("The destination port 65536 is not a port number (0-65535)"),
  );
});

// --- Properties ---------------------------------------------------------------------------------------------

const portArbitrary = fc.integer({ min: 0, max: 65_535 });
const ipv4Arbitrary = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((bytes) =>
  formatIpAddress({ family: 4, bytes })
);
/** IPv6 addresses with zero runs of every length, so every compression case of RFC 5952 comes up. */
const ipv6Arbitrary = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
}).map((groups) =>
  formatIpAddress({ family: 6, bytes: Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff])) })
);

/** Plain objects (fast-check's records have no prototype, which deep equality would tell apart). */
const addressesArbitrary: fc.Arbitrary<ProxyAddresses> = fc.oneof(
  fc.tuple(fc.constant("tcp4" as const), ipv4Arbitrary, portArbitrary, ipv4Arbitrary, portArbitrary),
  fc.tuple(fc.constant("tcp6" as const), ipv6Arbitrary, portArbitrary, ipv6Arbitrary, portArbitrary),
).map(([family, source, sourcePort, destination, destinationPort]) => ({
  family,
  source: { address: source, port: sourcePort },
  destination: { address: destination, port: destinationPort },
}));

const headerArbitrary: fc.Arbitrary<ProxyHeader> = fc.oneof(
  { weight: 8, arbitrary: addressesArbitrary.map((addresses) => ({ command: "proxy" as const, addresses })) },
  { weight: 1, arbitrary: fc.constant({ command: "proxy" as const, addresses: null }) },
  { weight: 1, arbitrary: fc.constant({ command: "local" as const }) },
);
const versionArbitrary = fc.constantFrom<ProxyVersion>(1, 2);

Deno.test("property: decode∘encode gives back every header, in both versions, whatever follows it", () => {
  fc.assert(
    fc.property(
      headerArbitrary,
      versionArbitrary,
      fc.uint8Array({ maxLength: 64 }),
      (original, version, rest) => {
        const encoded = encodeProxyHeader(original, version);
        assert.ok(encoded.length <= (version === 1 ? MAX_V1_HEADER_BYTES : MAX_PROXY_HEADER_BYTES));
        const stream = new Uint8Array(encoded.length + rest.length);
        stream.set(encoded);
        stream.set(rest, encoded.length);
        // v1 has no LOCAL: it travels as UNKNOWN, which means the same to the receiver.
        const expected = version === 1 && original.command === "local"
          ? { command: "proxy", addresses: null }
          : original;
        assert.deepEqual(decodeProxyHeader(stream), {
          kind: "header",
          version,
          header: expected,
          length: encoded.length,
        });
      },
    ),
    { numRuns: 2_000 },
  );
});

Deno.test("property: every proper prefix of a header asks for more, or is truncated at end of stream", () => {
  fc.assert(
    fc.property(headerArbitrary, versionArbitrary, fc.nat(), (original, version, cut) => {
      const encoded = encodeProxyHeader(original, version);
      const prefix = encoded.subarray(0, cut % encoded.length);
      assert.deepEqual(decodeProxyHeader(prefix), { kind: "incomplete" });
      assert.deepEqual(decodeProxyHeader(prefix, { atEof: true }), { kind: "truncated" });
    }),
  );
});

Deno.test("property: v2 TLVs of any types and sizes are skipped and the addresses are kept", () => {
  const tlvs = fc.array(
    fc.record({ type: fc.integer({ min: 0, max: 255 }), value: fc.uint8Array({ maxLength: 200 }) }),
    {
      maxLength: 8,
    },
  );
  fc.assert(
    fc.property(addressesArbitrary, tlvs, (addresses, list) => {
      const base = encodeProxyHeader({ command: "proxy", addresses }, 2);
      const tlvBytes = list.flatMap((
        { type, value },
      ) => [type, value.length >> 8, value.length & 0xff, ...value]);
      fc.pre(base.length - 16 + tlvBytes.length <= 2048);
      const bytes = Uint8Array.from([...base, ...tlvBytes]);
      new DataView(bytes.buffer).setUint16(14, base.length - 16 + tlvBytes.length);
      assert.deepEqual(decodeProxyHeader(bytes), {
        kind: "header",
        version: 2,
        header: { command: "proxy", addresses },
        length: bytes.length,
      });
    }),
  );
});

/** Bytes that reach every branch: arbitrary, behind either signature, and near-valid v1 lines. */
const hostileArbitrary = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.uint8Array({ maxLength: 300 }).map((rest) => Uint8Array.from([...SIGNATURE, ...rest])),
  fc.uint8Array({ maxLength: 300 }).map((rest) => Uint8Array.from([...ascii("PROXY "), ...rest])),
  fc.array(
    fc.constantFrom(
      "PROXY ",
      "TCP4",
      "TCP6",
      "UNKNOWN",
      " ",
      "1.2.3.4",
      "::1",
      "65535",
      "0",
      "\r",
      "\n",
      "\r\n",
      ":",
      ".",
    ),
    {
      maxLength: 14,
    },
  ).map((parts) => ascii(parts.join(""))),
);

Deno.test("property: arbitrary bytes never throw, and a header's length never exceeds the bytes or the cap", () => {
  fc.assert(
    fc.property(hostileArbitrary, fc.boolean(), (bytes, atEof) => {
      const result = decodeProxyHeader(bytes, { atEof });
      assert.ok(["header", "incomplete", "truncated", "not_proxy", "malformed"].includes(result.kind));
      if (result.kind === "incomplete") assert.equal(atEof, false);
      if (result.kind === "header") {
        assert.ok(result.length <= bytes.length && result.length <= MAX_PROXY_HEADER_BYTES);
        // What was decoded is what the header's own bytes say, and it encodes again.
        assert.deepEqual(decodeProxyHeader(bytes.subarray(0, result.length)), result);
        const again = decodeProxyHeader(encodeProxyHeader(result.header, result.version));
        assert.deepEqual(header(again).header, result.header);
      }
    }),
    { numRuns: 5_000 },
  );
});
