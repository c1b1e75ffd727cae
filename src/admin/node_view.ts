/**
 * What the admin listener shows of a node: its metrics, its status document and its readiness. Gauges are read
 * at scrape time from the state the node's parts already keep; counters are counted at events that already
 * happen once per connection (the relay's milestones, the refusal log, a tunnel from a peer), never per byte or
 * per frame.
 *
 * Labels are bounded: ports come from the config, reasons from the code's own words, route keys only from the
 * claims of registered backends, at most {@linkcode LABEL_VALUE_CAP} of them (the rest summed as `other`).
 *
 * @module
 */

import type { HubCertificateStatus } from "../acme/hub_certificate.ts";
import type { RouteKind } from "../balancer/router.ts";
import type { NodeConfig } from "../config/node_config.ts";
import { claimKey } from "../hostnames/hostname.ts";
import type { LogFields } from "../log/logger.ts";
import { type Counter, type Histogram, LABEL_VALUE_CAP, MetricsRegistry } from "../metrics/registry.ts";
import { NEXUS_MUX } from "../mux/dialect.ts";
import type { Node } from "../node.ts";
import { backendRefusalKind } from "../protocol/refusal_reasons.ts";
import type { RelayObserver } from "../relay/relay.ts";
import type { SpliceResult } from "../stream/splice.ts";
import { VERSION } from "../version.ts";
import type { AdminView } from "./admin_listener.ts";
import type { ReloadReport } from "../config/reloader.ts";
import {
  registerProcessFamilies,
  registerReloadFamilies,
  type ReloadStatus,
  reloadStatus,
} from "./process_families.ts";

/** Upper bounds of the sniffing-time histogram, in seconds: loopback clients take well under a millisecond. */
const SNIFF_BUCKETS_SECONDS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** How a route is named in labels and status: a backend on this node, or a peer. */
function routeLabel(kind: RouteKind): "backend" | "peer" {
  return kind === "local" ? "backend" : "peer";
}

/** The node's metrics, status and readiness, for its admin listener. */
export class NodeView implements AdminView {
  readonly registry = new MetricsRegistry();
  readonly #node: Node;
  readonly #startedMs = Date.now();
  readonly #accepted: Counter<"port">;
  readonly #routed: Counter<"port" | "to">;
  readonly #refusals: Counter<"reason" | "port">;
  readonly #authFailures: Counter<"reason">;
  readonly #sniffTime: Histogram<"port">;
  /** Bytes of connections whose splice has ended, and of the sniffed preludes. */
  #bytesFromClients = 0;
  #bytesToClients = 0;
  #tunnelsIn = 0;
  #tunnelsOut = 0;

  /** The view reads `node` only when asked (scrapes, status), so the node may create it first thing. */
  constructor(node: Node, config: NodeConfig) {
    this.#node = node;
    const r = this.registry;
    registerProcessFamilies(r, {
      kind: "node",
      startedMs: this.#startedMs,
      draining: () => node.draining,
      ready: () => this.readiness() === null,
      windowStalls: () => node.windowStalls.count,
    });
    registerReloadFamilies(r, () => node.reloads);
    this.#accepted = r.counter("nexus_relay_connections_accepted_total", "Client connections accepted.", {
      labels: ["port"],
    });
    this.#routed = r.counter(
      "nexus_relay_connections_routed_total",
      "Client connections routed, to a backend on this node or to a peer.",
      { labels: ["port", "to"] },
    );
    this.#refusals = r.counter(
      "nexus_refusals_total",
      "Refused or shed connections by the reason the log gives; port is the relay port for client connections.",
      { labels: ["reason", "port"] },
    );
    r.gauge(
      "nexus_relay_connections_open",
      "Client connections open, those in the handshake phase included.",
      [],
      () => [
        [{}, node.connections],
      ],
    );
    r.gauge(
      "nexus_relay_handshakes",
      "Client connections still sending their ClientHello or request head.",
      [],
      () => [
        [{}, node.handshakes],
      ],
    );
    r.gauge(
      "nexus_relay_streams_open",
      "Client connections spliced to a stream, by where it goes.",
      ["to"],
      () => {
        const live = node.relay.liveCounts();
        return [[{ to: "backend" }, live.streamsToBackends], [{ to: "peer" }, live.streamsToPeers]];
      },
    );
    r.countedBy(
      "nexus_relay_bytes_total",
      "Bytes from clients (in) and to clients (out), open connections included.",
      ["direction"],
      () => {
        const live = node.relay.liveCounts();
        return [
          [{ direction: "in" }, this.#bytesFromClients + live.bytesFromClients],
          [{ direction: "out" }, this.#bytesToClients + live.bytesToClients],
        ];
      },
    );
    this.#sniffTime = r.histogram(
      "nexus_relay_sniff_duration_seconds",
      "From accept to the end of the handshake phase (routed or refused).",
      { labels: ["port"], bounds: SNIFF_BUCKETS_SECONDS },
    );
    r.gauge("nexus_hub_connections", "Connections through the hub port, authenticated or not.", [], () => [
      [{}, node.hubConnections],
    ]);
    r.gauge("nexus_hub_sessions", "Backend sessions by protocol: ours (nexus-mux.v1) or the original's.", [
      "protocol",
    ], () => {
      let ours = 0;
      for (const backend of node.hub.backends) if (backend.session.dialect === NEXUS_MUX) ours += 1;
      return [[{ protocol: NEXUS_MUX.name }, ours], [
        { protocol: "original" },
        node.hub.backends.size - ours,
      ]];
    });
    r.gauge(
      "nexus_hub_backends",
      `Backends taking new streams, per route key they claim (at most ${LABEL_VALUE_CAP} keys, the rest as other).`,
      ["route"],
      () => {
        const perRoute = new Map<string, number>();
        for (const backend of node.hub.backends) {
          if (backend.session.draining) continue;
          for (const claim of backend.claims) {
            const key = claimKey(claim);
            perRoute.set(key, (perRoute.get(key) ?? 0) + 1);
          }
        }
        return [...perRoute].map(([route, count]) => [{ route }, count] as const);
      },
    );
    r.gauge("nexus_hub_streams_open", "Streams open on backend sessions.", [], () => {
      let streams = 0;
      for (const backend of node.hub.backends) streams += backend.session.streamCount;
      return [[{}, streams]];
    });
    this.#authFailures = r.counter(
      "nexus_hub_backend_auth_failures_total",
      "Backends refused at their handshake, by kind of reason.",
      { labels: ["reason"] },
    );
    r.gauge(
      "nexus_mesh_peers",
      "Peers by state: configured peers by their dial state, nodes that dialled in as linked.",
      ["state"],
      () => {
        const counts = new Map<string, number>([["dialling", 0], ["linked", 0], ["this node", 0]]);
        for (const peer of node.mesh?.peers() ?? []) {
          counts.set(
            peer.state,
            (counts.get(peer.state) ?? 0) + 1,
          );
        }
        return [...counts].map(([state, count]) => [{ state: state.replace(" ", "_") }, count] as const);
      },
    );
    r.gauge("nexus_mesh_tunnels_open", "Tunnels open: in from peers, out to peers.", ["direction"], () => [
      [{ direction: "in" }, node.tunnelsOpen],
      [{ direction: "out" }, node.relay.liveCounts().streamsToPeers],
    ]);
    r.countedBy(
      "nexus_mesh_tunnels_total",
      "Tunnels from peers served by local backends (in), client connections tunnelled to a peer (out).",
      ["direction"],
      () => [[{ direction: "in" }, this.#tunnelsIn], [{ direction: "out" }, this.#tunnelsOut]],
    );
    r.gauge("nexus_stream_buffer_budget_bytes", "limits.streamBufferBudgetBytes.", [], () => [
      [{}, config.limits.streamBufferBudgetBytes],
    ]);
    r.gauge(
      "nexus_stream_buffer_budget_reserved_bytes",
      "Of the buffer budget, what open streams' windows hold.",
      [],
      () => [
        [{}, node.bufferBudgetReservedBytes],
      ],
    );
  }

  /** Counts what the relay reports, never touching the bytes. */
  readonly relayObserver: RelayObserver = {
    accepted: (port) => this.#accepted.inc({ port: String(port) }),
    sniffed: (port, seconds) => this.#sniffTime.observe({ port: String(port) }, seconds),
    routed: (port, to, preludeBytes) => {
      this.#routed.inc({ port: String(port), to: routeLabel(to) });
      this.#bytesFromClients += preludeBytes;
      if (to === "peer") this.#tunnelsOut += 1;
    },
    closed: (_port: number, _to: RouteKind, result: SpliceResult) => {
      this.#bytesFromClients += result.bytesAToB;
      this.#bytesToClients += result.bytesBToA;
    },
    tunnelAccepted: () => this.#tunnelsIn += 1,
  };

  /** Counts an event of the refusal log (`RateLimitedLog`'s listener). */
  refusal(kind: string, fields: LogFields | undefined): void {
    this.#refusals.inc({ reason: kind, port: fields?.port === undefined ? "" : String(fields.port) });
    if (kind === "backend_rejected") {
      this.#authFailures.inc({ reason: backendRefusalKind(String(fields?.why ?? "")) });
    }
  }

  readiness(): string | null {
    const node = this.#node;
    if (node.draining) return "draining: the node is shutting down";
    if (node.relay.ports.length < this.#node.config.relay.ports.length) {
      return "the relay ports are not listening";
    }
    if (!node.hubListening) {
      return this.#node.config.hubAcme === undefined
        ? "the hub is not listening"
        : "the hub is not listening yet: it has no certificate from ACME";
    }
    return null;
  }

  /** `POST /reload`. */
  reload(): Promise<ReloadReport> {
    return this.#node.reload("POST /reload");
  }

  metrics(): string {
    return this.registry.render();
  }

  status(): NodeStatus {
    const node = this.#node;
    const live = node.relay.liveCounts();
    const routes = new Map<string, { backends: BackendStatus[]; peers: string[] }>();
    const routeOf = (key: string) => {
      let route = routes.get(key);
      if (route === undefined) routes.set(key, route = { backends: [], peers: [] });
      return route;
    };
    for (const backend of node.hub.backends) {
      for (const claim of backend.claims) {
        routeOf(claimKey(claim)).backends.push({
          name: backend.name,
          address: backend.remoteAddress,
          weight: backend.weight,
          streams: backend.session.streamCount,
          protocol: backend.session.dialect.name,
          draining: backend.session.draining,
          pausesReceived: backend.session.pausesReceived,
          connectedAt: new Date(backend.connectedAtMs).toISOString(),
        });
      }
    }
    const peers = (node.mesh?.peers() ?? []).map((peer) => {
      const names = peer.link === null ? [] : node.router.peerRouteKeys(peer.link).sort();
      for (const name of names) routeOf(name).peers.push(peer.url);
      return {
        url: peer.url,
        direction: peer.direction,
        state: peer.state,
        names,
        lastError: peer.lastError,
        since: new Date(peer.sinceMs).toISOString(),
      };
    });
    const refusals: Record<string, number> = {};
    for (const [kind, count] of node.refusals.totals()) refusals[kind] = count;
    const { limits, handshakeTimeouts } = this.#node.config;
    return {
      kind: "node",
      version: VERSION,
      deno: Deno.version.deno,
      now: new Date().toISOString(),
      startedAt: new Date(this.#startedMs).toISOString(),
      uptimeSeconds: Math.floor((Date.now() - this.#startedMs) / 1000),
      ready: this.readiness() === null,
      notReady: this.readiness(),
      draining: node.draining,
      hubCertificate: node.hubCertificate,
      listeners: {
        relay: node.relay.ports.map((port) => ({ port: port.port, protocol: port.protocol })),
        hub: node.hubListening ? `${node.hubAddress.hostname}:${node.hubAddress.port}` : null,
      },
      counters: {
        connectionsAccepted: sumOf(this.#accepted),
        connectionsRouted: sumOf(this.#routed),
        bytesIn: this.#bytesFromClients + live.bytesFromClients,
        bytesOut: this.#bytesToClients + live.bytesToClients,
        refusals,
      },
      gauges: {
        connectionsOpen: node.connections,
        handshakes: node.handshakes,
        streamsOpen: live.streamsToBackends + live.streamsToPeers,
        tunnelsIn: node.tunnelsOpen,
        tunnelsOut: live.streamsToPeers,
        backends: node.hub.backends.size,
        bufferBudgetBytes: limits.streamBufferBudgetBytes,
        bufferBudgetReservedBytes: node.bufferBudgetReservedBytes,
      },
      routes: [...routes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map((
        [route, { backends, peers }],
      ) => ({
        route,
        backends,
        peers,
      })),
      peers,
      limits: {
        ...limits,
        // What the open-file limit left of them (see "Descriptors are a budget").
        maxConnections: node.limitsInForce.relayConnections,
        hubConnections: node.limitsInForce.hubConnections,
        handshakeTimeouts,
        idleTimeoutSeconds: this.#node.config.idleTimeoutSeconds,
        drainTimeoutSeconds: this.#node.config.drainTimeoutSeconds,
      },
      reload: reloadStatus(node.reloads),
    };
  }
}

/** The sum of a counter's series. */
function sumOf(counter: Counter<string>): number {
  const family = counter.family();
  return family.type === "histogram" ? 0 : family.samples.reduce((sum, sample) => sum + sample.value, 0);
}

/** One backend of a route, in `/status`. */
export interface BackendStatus {
  readonly name: string;
  readonly address: string;
  readonly weight: number;
  readonly streams: number;
  readonly protocol: string;
  readonly draining: boolean;
  /** `pause_stream`s the backend sent: the original client's brake, so a backend that could not keep up. */
  readonly pausesReceived: number;
  readonly connectedAt: string;
}

/** The node's `/status` document. */
export interface NodeStatus {
  readonly kind: "node";
  readonly version: string;
  readonly deno: string;
  readonly now: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly ready: boolean;
  readonly notReady: string | null;
  readonly draining: boolean;
  /** The hub's ACME certificate, null when the hub serves certificate files. */
  readonly hubCertificate: HubCertificateStatus | null;
  readonly listeners: {
    readonly relay: ReadonlyArray<{ port: number; protocol: string }>;
    readonly hub: string | null;
  };
  readonly counters: {
    readonly connectionsAccepted: number;
    readonly connectionsRouted: number;
    readonly bytesIn: number;
    readonly bytesOut: number;
    readonly refusals: Readonly<Record<string, number>>;
  };
  readonly gauges: Readonly<Record<string, number>>;
  readonly routes: ReadonlyArray<
    { route: string; backends: readonly BackendStatus[]; peers: readonly string[] }
  >;
  readonly peers: ReadonlyArray<{
    url: string;
    direction: string;
    state: string;
    names: readonly string[];
    lastError: string | null;
    since: string;
  }>;
  readonly limits: Readonly<Record<string, unknown>>;
  /** Reloads of the config file, and the last one. */
  readonly reload: ReloadStatus;
}
