/**
 * The inbound PROXY step of a relay port with trusted upstreams (`trustedProxies`), before the ClientHello or
 * request head is sniffed: a connection from a trusted upstream (a cloud TCP load balancer, HAProxy) must
 * start with a PROXY header, v1 or v2, which names the real client; a connection from anywhere else must not
 * (that would be a client claiming to be someone else). The header is consumed here and never forwarded.
 *
 * @module
 */

import { decodeProxyHeader, MAX_PROXY_HEADER_BYTES } from "../proxy_protocol/proxy_header.ts";
import { formatAddress } from "../transport/net_address.ts";
import { type HandshakeDeadline, sniff } from "./sniff.ts";

/** Who the connection is from and what it reached, once the step is done. */
export interface InboundEnds {
  /** The client's `ip:port`: from the header of a trusted upstream, else the socket's peer. */
  readonly clientAddress: string;
  /** The client's IP alone (what the per-IP limits count by). */
  readonly clientIp: string;
  /** The `ip:port` the client connected to: the header's destination, else the socket's own address. */
  readonly relayAddress: string;
  /** Bytes read past the header: the start of the ClientHello or request head, to be sniffed next. */
  readonly carried: Uint8Array;
}

/** Why a connection was refused in this step: a refusal kind for the log and its counter, and details. */
export interface InboundRefusal {
  readonly kind:
    | "proxy_header_untrusted"
    | "proxy_header_missing"
    | "proxy_header_malformed"
    | "proxy_header_truncated"
    | "handshake_timeout"
    | "client_error";
  readonly fields: Record<string, string>;
}

/**
 * Reads a trusted upstream's PROXY header (`trusted`), or makes sure an untrusted peer sends none, within the
 * handshake's `deadline`. A LOCAL header (the upstream's own health check) or one whose addresses are unknown
 * (`UNKNOWN`, `AF_UNSPEC`) leaves the socket's ends in place, as the spec says.
 */
export async function readInboundProxy(
  conn: Deno.TcpConn,
  trusted: boolean,
  deadline: HandshakeDeadline,
): Promise<InboundEnds | InboundRefusal> {
  const peer = conn.remoteAddr as Deno.NetAddr;
  const own: InboundEnds = {
    clientAddress: formatAddress(peer),
    clientIp: peer.hostname,
    relayAddress: formatAddress(conn.localAddr as Deno.NetAddr),
    carried: new Uint8Array(),
  };
  const outcome = await sniff(
    conn,
    (bytes, atEof) => decodeProxyHeader(bytes, { atEof }),
    MAX_PROXY_HEADER_BYTES,
    { deadline },
  );
  if (outcome.kind === "failed") return { kind: "client_error", fields: { error: outcome.error } };
  if (outcome.kind === "timeout") {
    // An untrusted peer that sends nothing is a client that sends nothing: the sniff behind says so in its words.
    if (!trusted) return { ...own, carried: outcome.bytes };
    return { kind: "handshake_timeout", fields: { phase: "PROXY header" } };
  }
  const result = outcome.verdict;
  if (!trusted) {
    if (result.kind === "header" || result.kind === "malformed") {
      return {
        kind: "proxy_header_untrusted",
        fields: { detail: "a PROXY header from an address not in trustedProxies" },
      };
    }
    // Not a header (or cut short inside a signature's first bytes): the client's own first bytes.
    return { ...own, carried: outcome.bytes };
  }
  switch (result.kind) {
    case "not_proxy":
      return {
        kind: "proxy_header_missing",
        fields: { detail: "a trusted upstream sent no PROXY header" },
      };
    case "malformed":
      return {
        kind: "proxy_header_malformed",
        fields: { version: `v${result.version}`, detail: result.reason },
      };
    case "incomplete":
    case "truncated":
      return { kind: "proxy_header_truncated", fields: {} };
    case "header":
      break;
  }
  const carried = outcome.bytes.subarray(result.length);
  const header = result.header;
  if (header.command === "local" || header.addresses === null) return { ...own, carried };
  const { source, destination } = header.addresses;
  const address = (ip: string, port: number) => formatAddress({ transport: "tcp", hostname: ip, port });
  return {
    clientAddress: address(source.address, source.port),
    clientIp: source.address,
    relayAddress: address(destination.address, destination.port),
    carried,
  };
}
