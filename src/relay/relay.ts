/**
 * The relay: public listeners that take client connections, read just enough to know the name (SNI on TLS
 * ports, `Host` on HTTP ports), pick a route, and splice the client to a stream, forwarding exactly the bytes
 * the client sent. It never knows whether the stream ends at a local backend or at a peer.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import type { RouteKind, Router, Upstream } from "../balancer/router.ts";
import { normalizeHostname } from "../hostnames/hostname.ts";
import { proxyErrorResponse } from "../http/responses.ts";
import { MAX_REQUEST_HEAD_BYTES, parseRequestHead, type RequestHeadResult } from "../http/request_head.ts";
import type { Logger, RateLimitedLog } from "../log/logger.ts";
import type { StreamOpenInfo } from "../protocol/frames.ts";
import { tlsAlert, type TlsAlertDescription } from "../sni/alerts.ts";
import { type ClientHelloResult, MAX_CLIENT_HELLO_BYTES, parseClientHello } from "../sni/client_hello.ts";
import type { Duplex } from "../stream/duplex.ts";
import { SocketDuplex } from "../stream/socket_duplex.ts";
import { Splice, type SpliceResult, SpliceSet, type SpliceSweeper } from "../stream/splice.ts";
import { acceptLoop } from "../transport/accept_loop.ts";
import { formatAddress } from "../transport/net_address.ts";
import type { AddressBlocks } from "./address_blocks.ts";
import type { Admission, AdmissionTicket } from "./admission.ts";
import { readInboundProxy } from "./inbound_proxy.ts";
import { HandshakeDeadline, sniff, type SniffDeadlines } from "./sniff.ts";

/** How a relay port reads its clients: TLS routed by SNI, or plain HTTP routed by `Host`. */
export type RelayProtocol = "tls" | "http";

/** One public listener. */
export interface RelayPort {
  readonly port: number;
  readonly protocol: RelayProtocol;
  /** Upstreams whose connections must start with a PROXY header naming the client; others must send none. */
  readonly trustedProxies?: AddressBlocks;
}

/** Everything the relay needs, wired by the node. */
export interface RelayDependencies {
  readonly bindAddress: string;
  readonly ports: readonly RelayPort[];
  readonly router: Router<Upstream>;
  readonly admission: Admission;
  readonly sweeper: SpliceSweeper;
  /** Read at each accept: a reload may change them. */
  readonly deadlines: SniffDeadlines | Live<SniffDeadlines>;
  readonly log: Logger;
  /** Refusals are counted and rate-limited, never one line per event in a flood. */
  readonly refusals: RateLimitedLog;
  /**
   * The node's own answer to an HTTP request, when it has one (the ACME HTTP-01 responder for its hub's
   * name): a complete response, written before the connection closes. `undefined` routes the request.
   */
  readonly answerHttp?: (request: HttpRequestHead) => Uint8Array | undefined;
  /** Told of each connection's milestones, for metrics; never in the way of the bytes. */
  readonly observer?: RelayObserver;
}

/** What the relay reports of its connections as they pass their milestones (the node counts them). */
export interface RelayObserver {
  /** A connection was accepted on `port` (before admission). */
  accepted(port: number): void;
  /** Its handshake phase ended after `seconds`, routed or not. */
  sniffed(port: number, seconds: number): void;
  /** It was routed to a local backend or a peer; the sniffed bytes (`preludeBytes`) went first. */
  routed(port: number, to: RouteKind, preludeBytes: number): void;
  /** Its splice ended; the result carries the bytes it moved. */
  closed(port: number, to: RouteKind, result: SpliceResult): void;
  /** A peer tunnelled a client here and it was spliced to a local backend. */
  tunnelAccepted(): void;
}

/** Byte counts and streams of the splices open now, read at scrape time. */
export interface RelayLiveCounts {
  readonly bytesFromClients: number;
  readonly bytesToClients: number;
  readonly streamsToBackends: number;
  readonly streamsToPeers: number;
}

/** A client connection in the handshake phase, as its routing sees it. */
interface ClientHandshake {
  readonly conn: Deno.TcpConn;
  readonly client: SocketDuplex;
  readonly port: RelayPort;
  /** The client's `ip:port` (from a trusted upstream's PROXY header, else the socket's peer). */
  readonly address: string;
  /** The `ip:port` the client connected to. */
  readonly relayAddress: string;
  /** Aborted when the admission shed this handshake to make room for another (the connection is closed). */
  readonly shed: AbortSignal;
  /** One deadline for the whole handshake, PROXY header included. */
  readonly deadline: HandshakeDeadline;
  /** Bytes read past a PROXY header, where the ClientHello or request head starts. */
  readonly carried?: Uint8Array;
  /** Where it was routed, once it was. */
  routedTo?: RouteKind;
}

/** A listening relay port, and the settings its next connection is accepted with. */
interface BoundPort {
  readonly listener: Deno.TcpListener;
  /** The bound port (port 0 in the config asked for a free one). */
  readonly port: number;
  settings: RelayPort;
  /** As the config has it (port 0 stays 0), for the reload that compares configs. */
  configured: RelayPort;
}

/**
 * The ports by the key a reload matches them by: the port number, or for port 0 (a free port, in tests)
 * its protocol and its place among the port-0 entries of that protocol.
 */
function keyedPorts(ports: readonly RelayPort[]): Map<string, RelayPort> {
  const keyed = new Map<string, RelayPort>();
  const zeros = new Map<string, number>();
  for (const port of ports) {
    if (port.port !== 0) {
      keyed.set(String(port.port), port);
      continue;
    }
    const nth = zeros.get(port.protocol) ?? 0;
    zeros.set(port.protocol, nth + 1);
    keyed.set(`0/${port.protocol}/${nth}`, port);
  }
  return keyed;
}

/** A complete, routable HTTP request head, as the parser read it. */
export type HttpRequestHead = Extract<RequestHeadResult, { kind: "request" }>;

/** Public listeners and the connections they carry. */
export class Relay {
  readonly #deps: RelayDependencies;
  readonly #deadlines: Live<SniffDeadlines>;
  /** Each listening port by its key ({@linkcode portKey}), in configuration order, with its settings in force. */
  readonly #listeners = new Map<string, BoundPort>();
  /** One per listener; each ends once its listener is closed and its port free again. */
  readonly #acceptLoops = new Set<Promise<void>>();
  /** Clients spliced to their streams, and where each stream goes. */
  readonly #clients: SpliceSet<RouteKind>;
  /** Tunnels from peers spliced to this node's backends. */
  readonly #tunnels: SpliceSet;
  readonly #handlers = new Set<Promise<void>>();
  /** Connections still in the handshake phase (not yet spliced), so a shutdown can end them too. */
  readonly #handshaking = new Set<Deno.Conn>();
  #aborted = false;

  constructor(deps: RelayDependencies) {
    this.#deps = deps;
    this.#deadlines = Live.of(deps.deadlines);
    this.#clients = new SpliceSet(deps.sweeper);
    this.#tunnels = new SpliceSet(deps.sweeper);
  }

  /** Binds every relay port; throws with the port named when one cannot be bound. */
  listen(): void {
    try {
      for (const [key, relayPort] of keyedPorts(this.#deps.ports)) this.#bind(key, relayPort);
    } catch (error) {
      this.stopAccepting();
      throw error;
    }
  }

  /**
   * Makes the listening ports match `ports` (a reload): a new port is bound, a removed one stops accepting
   * while its open connections go on to their end, and a kept one takes its new settings (`trustedProxies`)
   * for the connections it accepts from now on. A port that cannot be bound is left out and named in the
   * problems; everything else is applied. Returns the configured ports now in force, and the problems.
   */
  setPorts(ports: readonly RelayPort[]): { inForce: RelayPort[]; problems: string[] } {
    const wanted = keyedPorts(ports);
    const problems: string[] = [];
    for (const [key, bound] of [...this.#listeners]) {
      if (wanted.has(key)) continue;
      this.#listeners.delete(key);
      closeQuietly(bound.listener);
      this.#deps.log.info("relay port closed: no new connections, open ones go on", {
        port: bound.port,
        protocol: bound.settings.protocol,
      });
    }
    const kept = new Map<string, BoundPort>();
    for (const [key, relayPort] of wanted) {
      const bound = this.#listeners.get(key);
      if (bound !== undefined) {
        bound.settings = { ...relayPort, port: bound.port };
        bound.configured = relayPort;
        kept.set(key, bound);
        continue;
      }
      try {
        this.#bind(key, relayPort);
        kept.set(key, this.#listeners.get(key)!);
      } catch (error) {
        problems.push(describe(error));
      }
    }
    // Configuration order, for `ports` and status.
    this.#listeners.clear();
    for (const [key, bound] of kept) this.#listeners.set(key, bound);
    return { inForce: [...kept.values()].map((bound) => bound.configured), problems };
  }

  /** Binds one port and starts accepting on it; throws naming the port when it cannot be bound. */
  #bind(key: string, relayPort: RelayPort): void {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: this.#deps.bindAddress, port: relayPort.port, transport: "tcp" });
    } catch (error) {
      throw new Error(
        `Cannot listen on ${this.#deps.bindAddress}:${relayPort.port} (${relayPort.protocol}): ${
          describe(error)
        }`,
      );
    }
    const port = (listener.addr as Deno.NetAddr).port;
    const bound: BoundPort = { listener, port, settings: { ...relayPort, port }, configured: relayPort };
    this.#listeners.set(key, bound);
    this.#deps.log.info("relay listening", {
      address: `${this.#deps.bindAddress}:${port}`,
      protocol: relayPort.protocol,
    });
    const loop = this.#accept(bound);
    this.#acceptLoops.add(loop);
    void loop.finally(() => this.#acceptLoops.delete(loop));
  }

  /** The bound ports in configuration order (useful when port 0 asked for a free one). */
  get ports(): RelayPort[] {
    return [...this.#listeners.values()].map(({ port, settings }) => ({ port, protocol: settings.protocol }));
  }

  /** Spliced client connections currently open. */
  get activeStreams(): number {
    return this.#clients.size;
  }

  /** Tunnels from peers currently open. */
  get activeTunnels(): number {
    return this.#tunnels.size;
  }

  /**
   * The relay's second entrance: a peer tunnels a client to this node. It is served by this node's own
   * backends only, never forwarded again (one hop, §6.4), so routing loops cannot form.
   */
  acceptTunnel(stream: Duplex, info: StreamOpenInfo): void {
    const hostname = normalizeHostname(info.hostname);
    const route = hostname === null || this.#aborted
      ? undefined
      : this.#deps.router.route(hostname, { localOnly: true });
    const backendStream = route?.upstream.openStream({ ...info, hostname: hostname ?? info.hostname }) ??
      null;
    if (backendStream === null) {
      this.#deps.refusals.event("tunnel_no_backend", "tunnel refused: no local backend", {
        host: info.hostname,
      });
      void stream.close("no local backend", { code: "dial_failed" });
      return;
    }
    this.#deps.observer?.tunnelAccepted();
    void this.#tunnels.add(new Splice(stream, backendStream), undefined);
  }

  /** What the open splices have moved so far and where they go: O(open connections), for a scrape. */
  liveCounts(): RelayLiveCounts {
    let bytesFromClients = 0;
    let bytesToClients = 0;
    let streamsToPeers = 0;
    for (const [splice, to] of this.#clients.entries()) {
      bytesFromClients += splice.bytesAToB;
      bytesToClients += splice.bytesBToA;
      if (to === "peer") streamsToPeers += 1;
    }
    return {
      bytesFromClients,
      bytesToClients,
      streamsToBackends: this.#clients.size - streamsToPeers,
      streamsToPeers,
    };
  }

  /** Stops accepting; open connections go on. */
  stopAccepting(): void {
    for (const { listener } of this.#listeners.values()) closeQuietly(listener);
    this.#listeners.clear();
  }
  /** Resolves once every listener's port is released (a closed listener frees its port a moment later). */
  async stoppedAccepting(): Promise<void> {
    this.stopAccepting();
    await Promise.all([...this.#acceptLoops]);
  }

  /**
   * Resolves when every open connection and tunnel has ended, or after `timeoutMs`; returns how many were
   * still open.
   */
  async drain(timeoutMs: number): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const [, tunnelsLeft] = await Promise.all([
      Promise.race([
        Promise.allSettled([...this.#handlers]),
        new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]).finally(() => clearTimeout(timer)),
      this.#tunnels.drain(timeoutMs),
    ]);
    return this.#handlers.size + tunnelsLeft;
  }

  /** Aborts every open connection and tunnel, those still in the handshake phase included. */
  abortAll(reason: string): void {
    this.#aborted = true;
    this.#clients.abortAll(reason);
    this.#tunnels.abortAll(reason);
    for (const conn of this.#handshaking) closeQuietly(conn);
  }

  #accept(bound: BoundPort): Promise<void> {
    return acceptLoop(bound.listener, (conn) => {
      // The port's settings as they are at accept: a reload may have changed them since it was bound.
      const relayPort = bound.settings;
      this.#deps.observer?.accepted(relayPort.port);
      const handler = this.#handle(conn, relayPort).catch((error) => {
        this.#deps.log.error("connection handler failed", { port: relayPort.port, error: describe(error) });
        closeQuietly(conn);
      });
      this.#handlers.add(handler);
      void handler.finally(() => this.#handlers.delete(handler));
    }, (error, retryInMs) => {
      // Out of descriptors and the like: say so, pause instead of spinning, keep serving.
      this.#deps.refusals.event("accept_error", "accept failed", {
        port: bound.port,
        error: describe(error),
        retry_in_ms: retryInMs,
      });
    });
  }

  async #handle(conn: Deno.TcpConn, relayPort: RelayPort): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const clientAddress = formatAddress(remote);
    const acceptedMs = Date.now();
    const acceptedAt = performance.now();
    const shed = new AbortController();
    // A trusted upstream's connection is a source of its own until its PROXY header names the client.
    const trusted = relayPort.trustedProxies?.contains(remote.hostname) ?? false;
    const ticket = this.#deps.admission.admit(trusted ? null : remote.hostname, {
      shed: () => {
        // Synchronous, from another connection's admission: say why, then end this one where it waits.
        shed.abort();
        this.#deps.refusals.event(
          "handshake_shed",
          "connection shed: its handshake slot went to a newer client",
          {
            client: clientAddress,
            port: relayPort.port,
            handshake_ms: Date.now() - acceptedMs,
          },
        );
        closeQuietly(conn);
      },
    });
    if (typeof ticket === "string") {
      this.#deps.refusals.event(ticket, "connection refused: limit reached", {
        limit: ticket,
        client: clientAddress,
        port: relayPort.port,
      });
      closeQuietly(conn);
      return;
    }
    const client = new SocketDuplex(conn, `client ${clientAddress}`);
    const accepted: ClientHandshake = {
      conn,
      client,
      port: relayPort,
      address: clientAddress,
      relayAddress: formatAddress(conn.localAddr as Deno.NetAddr),
      shed: shed.signal,
      deadline: new HandshakeDeadline(this.#deadlines.current, acceptedMs),
    };
    this.#handshaking.add(conn);
    let spliced: Promise<void> | null = null;
    try {
      try {
        conn.setNoDelay(true);
      } catch {
        // Not fatal: only latency.
      }
      const handshake = relayPort.trustedProxies === undefined
        ? accepted
        : await this.#readProxyHeader(accepted, trusted, ticket);
      const routed = handshake === null
        ? null
        : relayPort.protocol === "tls"
        ? await this.#routeTls(handshake)
        : await this.#routeHttp(handshake);
      this.#handshaking.delete(conn);
      ticket.handshakeDone();
      this.#deps.observer?.sniffed(relayPort.port, (performance.now() - acceptedAt) / 1000);
      if (routed === null) return;
      if (this.#aborted || shed.signal.aborted) {
        const why = this.#aborted ? "node shutting down" : "handshake shed";
        await routed.close(why);
        await client.close(why);
        return;
      }
      spliced = this.#splice(new Splice(client, routed), handshake?.routedTo ?? "local", {
        port: relayPort.port,
        client: clientAddress,
        ticket,
      });
    } finally {
      this.#handshaking.delete(conn);
      if (spliced === null) ticket.release();
    }
    // Returned, not awaited: the handshake's frame and everything it held go now, not when the client leaves.
    return spliced ?? undefined;
  }

  /** Keeps `splice` until it ends, then counts, logs and releases its admission. */
  #splice(
    splice: Splice,
    to: RouteKind,
    at: { readonly port: number; readonly client: string; readonly ticket: AdmissionTicket },
  ): Promise<void> {
    return this.#clients.add(splice, to).then((result) => {
      this.#deps.observer?.closed(at.port, to, result);
      this.#deps.log.debug("connection closed", {
        client: at.client,
        why: result.reason,
        bytes_in: result.bytesAToB,
        bytes_out: result.bytesBToA,
      });
    }).finally(() => at.ticket.release());
  }

  /**
   * The inbound PROXY step of a port with `trustedProxies`: the handshake as seen from its real client, its
   * connection re-keyed to that client's source when it came from a trusted upstream, or null when it was
   * refused (counted, logged and closed).
   */
  async #readProxyHeader(
    accepted: ClientHandshake,
    trusted: boolean,
    ticket: AdmissionTicket,
  ): Promise<ClientHandshake | null> {
    const upstream = { upstream: accepted.address, trusted: String(trusted) };
    const ends = await readInboundProxy(accepted.conn, trusted, accepted.deadline);
    if ("kind" in ends) return this.#refuse(accepted, null, ends.kind, { ...upstream, ...ends.fields });
    const handshake: ClientHandshake = {
      ...accepted,
      address: ends.clientAddress,
      relayAddress: ends.relayAddress,
      carried: ends.carried,
    };
    if (!trusted) return handshake;
    // From here the node's per-IP limits count this connection as its client's (see admission.ts, rules 3-4).
    const refusal = ticket.rekey(ends.clientIp);
    if (refusal === null) return handshake;
    return this.#refuse(handshake, null, refusal, {
      ...upstream,
      client: ends.clientAddress,
      limit: refusal,
    });
  }

  async #routeTls(handshake: ClientHandshake) {
    const { conn, address: clientAddress } = handshake;
    const outcome = await sniff<ClientHelloResult>(
      conn,
      (bytes, atEof) => parseClientHello(bytes, { atEof }),
      MAX_CLIENT_HELLO_BYTES,
      { deadline: handshake.deadline, carried: handshake.carried },
    );
    const refuse = (kind: string, alert: TlsAlertDescription | null, fields: Record<string, string>) =>
      this.#refuse(handshake, alert === null ? null : tlsAlert(alert), kind, {
        client: clientAddress,
        ...fields,
      });
    if (outcome.kind === "failed") return refuse("client_error", null, { error: outcome.error });
    if (outcome.kind === "timeout") return refuse("handshake_timeout", null, { phase: "ClientHello" });
    const hello = outcome.verdict;
    switch (hello.kind) {
      case "incomplete":
      case "truncated":
        return refuse("truncated_client_hello", null, {});
      case "not_tls":
        return refuse("not_tls", "handshake_failure", { detail: "first bytes are not a TLS handshake" });
      case "malformed":
        return refuse("malformed_client_hello", "handshake_failure", { detail: hello.reason });
      case "too_large":
        return refuse("client_hello_too_large", "handshake_failure", { limit: `${MAX_CLIENT_HELLO_BYTES}` });
      case "no_sni":
        return refuse("no_sni", "unrecognized_name", { ech: String(hello.echOffered) });
      case "sni":
        break;
    }
    const hostname = hello.serverName;
    // With ECH the outer SNI is only the client-facing server's public name: route it only to a backend that
    // claims exactly that name, since that backend must then be the ECH server (it holds the ECH keys).
    if (hello.echOffered && !this.#deps.router.hasExactRoute(hostname)) {
      return refuse("ech_refused", "unrecognized_name", {
        sni: hostname,
        detail: "ECH offered and no backend claims exactly this public name",
      });
    }
    const stream = this.#openStream(hostname, handshake, true);
    if (typeof stream === "string") return refuse(stream, "unrecognized_name", { sni: hostname });
    return await this.#sendPrelude(stream, outcome.bytes, handshake);
  }

  async #routeHttp(handshake: ClientHandshake) {
    const { conn, address: clientAddress } = handshake;
    const outcome = await sniff<RequestHeadResult>(
      conn,
      (bytes, atEof) => parseRequestHead(bytes, { atEof }),
      MAX_REQUEST_HEAD_BYTES,
      { deadline: handshake.deadline, carried: handshake.carried },
    );
    const fields = { client: clientAddress };
    if (outcome.kind === "failed") {
      return this.#refuse(handshake, null, "client_error", { ...fields, error: outcome.error });
    }
    if (outcome.kind === "timeout") {
      return this.#refuse(handshake, proxyErrorResponse(408), "handshake_timeout", {
        ...fields,
        phase: "request head",
      });
    }
    const head = outcome.verdict;
    switch (head.kind) {
      case "incomplete":
      case "truncated":
        return this.#refuse(handshake, null, "truncated_request", fields);
      case "bad_request":
        return this.#refuse(handshake, proxyErrorResponse(400, head.reason), "bad_request", {
          ...fields,
          detail: head.reason,
        });
      case "too_large":
        return this.#refuse(handshake, proxyErrorResponse(431), "request_head_too_large", fields);
      case "request":
        break;
    }
    const answer = this.#deps.answerHttp?.(head);
    if (answer !== undefined) {
      this.#deps.log.debug("answered by the node", { ...fields, host: head.host });
      await handshake.client.write(answer).catch(() => {});
      await handshake.client.close("answered by the node", { graceful: true });
      return null;
    }
    const stream = this.#openStream(head.host, handshake, false);
    if (typeof stream === "string") {
      return this.#refuse(
        handshake,
        proxyErrorResponse(503, `no backend available for ${head.host}`),
        stream,
        {
          ...fields,
          host: head.host,
        },
      );
    }
    return await this.#sendPrelude(stream, outcome.bytes, handshake);
  }

  /** Opens a stream on the chosen route, or names the refusal. */
  #openStream(hostname: string, handshake: ClientHandshake, isTls: boolean) {
    const route = this.#deps.router.route(hostname);
    // Every backend (or peer) of a served name being at its stream limit is not the same as no backend at all.
    if (route === undefined) {
      return this.#deps.router.serves(hostname) ? "max_streams_per_backend" : "no_backend";
    }
    const { address: clientAddress, relayAddress } = handshake;
    const info: StreamOpenInfo = { hostname, port: handshake.port.port, clientAddress, isTls, relayAddress };
    const stream = route.upstream.openStream(info);
    if (stream === null) return "backend_unavailable";
    handshake.routedTo = route.kind;
    this.#deps.log.debug("routed", { client: clientAddress, host: hostname, to: route.upstream.label });
    return stream;
  }

  /** Forwards the sniffed bytes, unchanged, as the stream's first data. */
  async #sendPrelude(
    stream: Duplex,
    prelude: Uint8Array,
    handshake: ClientHandshake,
  ): Promise<Duplex | null> {
    const client = handshake.client;
    try {
      await stream.write(prelude);
      this.#deps.observer?.routed(handshake.port.port, handshake.routedTo ?? "local", prelude.length);
      return stream;
    } catch (error) {
      await stream.close("prelude not delivered");
      await client.close(`upstream failed before the first byte: ${describe(error)}`);
      return null;
    }
  }

  /** Answers with an alert or an HTTP error if there is one, closes gracefully, and counts the refusal. */
  async #refuse(
    handshake: ClientHandshake,
    answer: Uint8Array | null,
    kind: string,
    fields: Record<string, string>,
  ): Promise<null> {
    const client = handshake.client;
    if (this.#aborted || handshake.shed.aborted) {
      // Ended by the shutdown or shed (counted then), not refused: nothing to count or to say.
      await client.close(this.#aborted ? "node shutting down" : "handshake shed");
      return null;
    }
    this.#deps.refusals.event(kind, `connection refused: ${kind.replaceAll("_", " ")}`, {
      ...fields,
      port: String(handshake.port.port),
    });
    if (answer !== null) {
      try {
        await client.write(answer);
      } catch {
        // The client is already gone.
      }
    }
    await client.close(kind, { graceful: answer !== null });
    return null;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
