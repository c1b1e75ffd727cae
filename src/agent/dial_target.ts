/**
 * Dialling a stream's local target, and, for a target that asks for it, telling the service who the client
 * is: a PROXY protocol header in front of the stream's first byte, built from what the node said in the
 * stream's `connect` event (the client's address, and the address the client reached).
 *
 * @module
 */

import type { StreamOpenInfo } from "../protocol/frames.ts";
import type { Duplex } from "../stream/duplex.ts";
import { SocketDuplex } from "../stream/socket_duplex.ts";
import { encodeProxyHeader, type ProxyAddresses, type ProxyHeader } from "../proxy_protocol/proxy_header.ts";
import { formatIpAddress, type IpAddress, mapToIpv6, unmapIpv4 } from "../transport/ip_address.ts";
import { parseSocketAddress } from "../transport/net_address.ts";
import type { Target } from "./targets.ts";

/**
 * Connects to `target` within `timeoutMs` (Nagle's algorithm off), as a duplex for the stream's splice. When
 * the target has `proxyProtocol`, the header for `info` goes in front of the first bytes the stream sends
 * (TLS and HTTP clients speak first, and the node sends their first bytes with the stream's opening), so
 * header and ClientHello leave in one write, one TCP segment. Throws when the service cannot be reached.
 */
export async function dialTarget(target: Target, info: StreamOpenInfo, timeoutMs: number): Promise<Duplex> {
  const conn = await Deno.connect({
    hostname: target.host,
    port: target.port,
    signal: AbortSignal.timeout(timeoutMs),
  });
  try {
    conn.setNoDelay(true);
  } catch {
    // Only latency.
  }
  const socket = new SocketDuplex(conn, `service ${target.host}:${target.port}`);
  if (target.proxyProtocol === undefined) return socket;
  return new HeaderFirstDuplex(socket, encodeProxyHeader(proxyHeaderFor(info), target.proxyProtocol));
}

/** A duplex whose first bytes written are `header`, joined to the first write (or alone before its end). */
class HeaderFirstDuplex implements Duplex {
  readonly label: string;
  readonly unsignalledEndTimeoutMs: number | null;
  readonly #inner: Duplex;
  #header: Uint8Array | null;

  constructor(inner: Duplex, header: Uint8Array) {
    this.label = inner.label;
    this.unsignalledEndTimeoutMs = inner.unsignalledEndTimeoutMs;
    this.#inner = inner;
    this.#header = header;
  }

  read(): Promise<Uint8Array | null> {
    return this.#inner.read();
  }

  write(chunk: Uint8Array): Promise<void> {
    const header = this.#header;
    if (header === null) return this.#inner.write(chunk);
    this.#header = null;
    const joined = new Uint8Array(header.length + chunk.length);
    joined.set(header);
    joined.set(chunk, header.length);
    return this.#inner.write(joined);
  }

  async closeWrite(): Promise<void> {
    // A stream that ends before its first byte still tells the service who it was.
    if (this.#header !== null) await this.write(new Uint8Array());
    await this.#inner.closeWrite();
  }

  close(reason: string, options?: { graceful?: boolean }): Promise<void> {
    return this.#inner.close(reason, options);
  }
}

/**
 * The PROXY header for a stream: the client as source, the address it reached as destination. IPv4 clients
 * of a dual-stack node (`::ffff:192.0.2.7`) are written as IPv4. Without a client address (a node of the
 * original protocol may send none) the header says the ends are unknown, so the service uses the
 * connection's own; without the relay's address (the original's nodes do not send it), the destination is
 * the unspecified address with the relay port.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { proxyHeaderFor } from "./dial_target.ts";
 * const info = { hostname: "app.example.com", port: 443, clientAddress: "192.0.2.7:52144", isTls: true };
 * assert.deepEqual(proxyHeaderFor(info), {
 *   command: "proxy",
 *   addresses: {
 *     family: "tcp4",
 *     source: { address: "192.0.2.7", port: 52144 },
 *     destination: { address: "0.0.0.0", port: 443 },
 *   },
 * });
 * ```
 */
export function proxyHeaderFor(info: StreamOpenInfo): ProxyHeader {
  const client = parseSocketAddress(info.clientAddress);
  if (client === null) return { command: "proxy", addresses: null };
  const relay = info.relayAddress === undefined ? null : parseSocketAddress(info.relayAddress);
  let source = unmapIpv4(client.address);
  let destination = relay === null ? unspecified(source.family) : unmapIpv4(relay.address);
  // One family for both ends, as both versions require: IPv4 carried in IPv6 when they differ.
  if (source.family !== destination.family) {
    source = mapToIpv6(source);
    destination = mapToIpv6(destination);
  }
  const addresses: ProxyAddresses = {
    family: source.family === 4 ? "tcp4" : "tcp6",
    source: { address: formatIpAddress(source), port: client.port },
    destination: { address: formatIpAddress(destination), port: relay?.port ?? info.port },
  };
  return { command: "proxy", addresses };
}

function unspecified(family: 4 | 6): IpAddress {
  return { family, bytes: new Uint8Array(family === 4 ? 4 : 16) };
}
