/**
 * The header the agent writes for a stream, from what the node said in its `connect` event: both ends of
 * either family, IPv4 clients of dual-stack nodes as IPv4, and what it says when the node did not say
 * everything (a node of the original protocol). And the dialled target as a stream: the shared conformance
 * suite, with the header in front of the first bytes (also when the stream ends before any).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { dialTarget, proxyHeaderFor } from "../../src/agent/dial_target.ts";
import type { Duplex } from "../../src/stream/duplex.ts";
import { SocketDuplex } from "../../src/stream/socket_duplex.ts";
import { runDuplexConformance } from "../helpers/duplex_conformance.ts";
import { concat, readAll } from "../helpers/services.ts";
import type { StreamOpenInfo } from "../../src/protocol/frames.ts";
import { decodeProxyHeader, encodeProxyHeader } from "../../src/proxy_protocol/proxy_header.ts";
import { formatIpAddress } from "../../src/transport/ip_address.ts";
import { formatAddress } from "../../src/transport/net_address.ts";

const info = (clientAddress: string, relayAddress?: string): StreamOpenInfo => ({
  hostname: "app.example.com",
  port: 443,
  clientAddress,
  isTls: true,
  ...(relayAddress === undefined ? {} : { relayAddress }),
});

const tcp = (family: "tcp4" | "tcp6", source: [string, number], destination: [string, number]) => ({
  command: "proxy",
  addresses: {
    family,
    source: { address: source[0], port: source[1] },
    destination: { address: destination[0], port: destination[1] },
  },
});

Deno.test("the client is the source and the address it reached the destination, in either family", () => {
  assert.deepEqual(
    proxyHeaderFor(info("192.0.2.7:52144", "198.51.100.1:8443")),
    tcp("tcp4", ["192.0.2.7", 52144], ["198.51.100.1", 8443]),
  );
  assert.deepEqual(
    proxyHeaderFor(info("[2001:DB8::7]:52144", "[2001:db8::1]:443")),
    tcp("tcp6", ["2001:db8::7", 52144], ["2001:db8::1", 443]),
  );
});

Deno.test("IPv4 clients of a dual-stack node are written as IPv4; mixed families as IPv6", () => {
  assert.deepEqual(
    proxyHeaderFor(info("[::ffff:192.0.2.7]:1", "[::ffff:198.51.100.1]:443")),
    tcp("tcp4", ["192.0.2.7", 1], ["198.51.100.1", 443]),
  );
  assert.deepEqual(
    proxyHeaderFor(info("192.0.2.7:1", "[2001:db8::1]:443")),
    tcp("tcp6", ["::ffff:192.0.2.7", 1], ["2001:db8::1", 443]),
  );
});

Deno.test("without the relay's address (an original node), the destination is unspecified with the relay port", () => {
  assert.deepEqual(proxyHeaderFor(info("192.0.2.7:1")), tcp("tcp4", ["192.0.2.7", 1], ["0.0.0.0", 443]));
  assert.deepEqual(proxyHeaderFor(info("[2001:db8::7]:1")), tcp("tcp6", ["2001:db8::7", 1], ["::", 443]));
  assert.deepEqual(
    proxyHeaderFor(info("192.0.2.7:1", "not an address")),
    tcp("tcp4", ["192.0.2.7", 1], ["0.0.0.0", 443]),
  );
});

Deno.test("without a client address the header says the ends are unknown (UNKNOWN, AF_UNSPEC)", () => {
  for (const client of ["", "somewhere:1", "192.0.2.7", "2001:db8::7:1", "192.0.2.7:65536"]) {
    assert.deepEqual(
      proxyHeaderFor(info(client, "198.51.100.1:443")),
      { command: "proxy", addresses: null },
      client,
    );
  }
});

Deno.test("property: any client and relay address a node reports reach the service as they were", () => {
  const address = fc.oneof(
    fc.uint8Array({ minLength: 4, maxLength: 4 }).map((bytes) => ({ family: 4 as const, bytes })),
    fc.uint8Array({ minLength: 16, maxLength: 16 }).map((bytes) => ({ family: 6 as const, bytes })),
  );
  const port = fc.integer({ min: 0, max: 65_535 });
  fc.assert(
    fc.property(
      address,
      port,
      address,
      port,
      fc.constantFrom(1 as const, 2 as const),
      (c, cp, r, rp, version) => {
        const client = formatAddress({ transport: "tcp", hostname: formatIpAddress(c), port: cp });
        const relay = formatAddress({ transport: "tcp", hostname: formatIpAddress(r), port: rp });
        const decoded = decodeProxyHeader(encodeProxyHeader(proxyHeaderFor(info(client, relay)), version));
        assert.equal(decoded.kind, "header");
        if (decoded.kind !== "header" || decoded.header.command !== "proxy") return;
        const { source, destination } = decoded.header.addresses!;
        // The same addresses, up to how an IPv4 address is carried (alone, or mapped beside an IPv6 one).
        const unmapped = (text: string) => text.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1");
        assert.equal(unmapped(source.address), unmapped(formatIpAddress(c)));
        assert.equal(unmapped(destination.address), unmapped(formatIpAddress(r)));
        assert.deepEqual([source.port, destination.port], [cp, rp]);
      },
    ),
    { numRuns: 1_000 },
  );
});

/**
 * The accepted end of a dialled target, minus the header: it reads the PROXY header off the front (checking
 * it is exactly `expected`), then passes the rest on, so the shared suite sees only the stream's bytes.
 */
class HeaderStrippingDuplex implements Duplex {
  readonly label = "service";
  readonly unsignalledEndTimeoutMs = null;
  readonly #inner: SocketDuplex;
  #expected: Uint8Array | null;
  #pending: Uint8Array = new Uint8Array();

  constructor(inner: SocketDuplex, expected: Uint8Array) {
    this.#inner = inner;
    this.#expected = expected;
  }

  async read(): Promise<Uint8Array | null> {
    while (this.#expected !== null) {
      const chunk = await this.#inner.read();
      if (chunk === null) throw new Error("the stream ended before the PROXY header was complete");
      this.#pending = concat(this.#pending, chunk);
      if (this.#pending.length >= this.#expected.length) {
        assert.deepEqual(this.#pending.subarray(0, this.#expected.length), this.#expected);
        const rest = this.#pending.subarray(this.#expected.length);
        this.#expected = null;
        if (rest.length > 0) return rest;
      }
    }
    return await this.#inner.read();
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#inner.write(chunk);
  }

  closeWrite(): Promise<void> {
    return this.#inner.closeWrite();
  }

  close(reason: string, options?: { graceful?: boolean }): Promise<void> {
    return this.#inner.close(reason, options);
  }
}

for (const version of [1, 2] as const) {
  runDuplexConformance(`the agent's dialled target with a PROXY v${version} header`, async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const streamInfo = info("192.0.2.7:52144", "198.51.100.1:443");
    const [a, server] = await Promise.all([
      dialTarget({ host: "127.0.0.1", port, proxyProtocol: version }, streamInfo, 5_000),
      listener.accept(),
    ]);
    listener.close();
    const expected = encodeProxyHeader(proxyHeaderFor(streamInfo), version);
    const b = new HeaderStrippingDuplex(new SocketDuplex(server, "service"), expected);
    return {
      a,
      b,
      async close() {
        await a.close("test over");
        await b.close("test over");
      },
    };
  }, { maxBufferedBytes: 32 * 1024 * 1024 });
}

Deno.test("a stream that ends before its first byte still gives the service its header, then the end", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const streamInfo = info("[2001:db8::7]:1", "[2001:db8::1]:443");
  const [service, server] = await Promise.all([
    dialTarget(
      { host: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port, proxyProtocol: 2 },
      streamInfo,
      5_000,
    ),
    listener.accept(),
  ]);
  listener.close();
  try {
    await service.closeWrite();
    assert.deepEqual(await readAll(server), encodeProxyHeader(proxyHeaderFor(streamInfo), 2));
  } finally {
    await service.close("test over");
    server.close();
  }
});
