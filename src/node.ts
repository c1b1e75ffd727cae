/**
 * A node, wired in one place: the hub where backends dial in, the mesh of peer nodes, the router between them,
 * and the relay listeners that clients reach. Read this file to see the whole data path:
 *
 * ```
 * client socket -> Relay (sniff SNI/Host) -> Router -> backend MuxSession (hub)  -> agent -> local service
 *                                                   -> peer MuxSession (mesh)    -> peer node -> its backend
 * ```
 *
 * @module
 */

import {
  HubCertificate,
  type HubCertificateSink,
  type HubCertificateStatus,
} from "./acme/hub_certificate.ts";
import type { StoredCertificate } from "./acme/state_dir.ts";
import { Router } from "./balancer/router.ts";
import type { NodeConfig } from "./config/node_config.ts";
import { TOKEN_WAIT_MS } from "./hub/backend_handshake.ts";
import { Hub } from "./hub/hub.ts";
import { HubListener } from "./hub/hub_listener.ts";
import { AdminListener } from "./admin/admin_listener.ts";
import { NodeView } from "./admin/node_view.ts";
import { createLogger, RateLimitedLog, setLogFormat, setLogLevel } from "./log/logger.ts";
import { Mesh } from "./mesh/mesh.ts";
import { BufferBudget, WindowStallCounter } from "./mux/flow_control.ts";
import type { MuxSession } from "./mux/session.ts";
import { MAX_DATA_PAYLOAD_BYTES, MAX_MESSAGE_BYTES } from "./protocol/frames.ts";
import { Admission } from "./relay/admission.ts";
import { Relay } from "./relay/relay.ts";
import { SpliceSweeper } from "./stream/splice.ts";
import {
  countFreeDescriptors,
  type DescriptorPlan,
  descriptorsNeeded,
  planDescriptors,
} from "./system/descriptors.ts";

/** Session ping interval on links that speak our subprotocol (agents and peers). */
const HEARTBEAT_INTERVAL_MS = 15_000;
/** WebSocket-level ping after this much silence from a backend of the original protocol, and pong wait. */
const BACKEND_PING_IDLE_SECONDS = 60;
/** Hub connections allowed beyond the backends and the handshake pool: links from peer nodes. */
const HUB_PEER_LINK_ALLOWANCE = 256;
/** Beyond the upgrade and the two token waits, before an unauthenticated hub connection is closed. */
const PROVE_SLACK_MS = 2_000;

/** A running node. */
export class Node implements HubCertificateSink {
  readonly router: Router<MuxSession>;
  readonly hub: Hub;
  readonly mesh: Mesh | null;
  readonly relay: Relay;
  /**
   * Resolves once the hub listens: at once with certificate files; with `hubAcme`, once a certificate was
   * loaded from the state directory or obtained. Rejects when the hub cannot start (the state directory
   * cannot be written, the port is taken); the relay keeps running until shutdown.
   */
  readonly hubReady: Promise<void>;
  readonly #config: NodeConfig;
  readonly #acme: HubCertificate | null;
  readonly #admission: Admission;
  readonly #descriptors: DescriptorPlan;
  readonly #sweeper: SpliceSweeper;
  readonly #refusals: RateLimitedLog;
  readonly #receiveBudget: BufferBudget;
  /** Metrics, status and readiness; counted from the start, shown by the admin listener when there is one. */
  readonly view: NodeView;
  /** How often this node's senders waited for credits, over all its sessions (hub and mesh). */
  readonly windowStalls = new WindowStallCounter();
  readonly #admin: AdminListener | null;
  #hubListener: HubListener | null = null;
  readonly #housekeeping: ReturnType<typeof setInterval>;
  #shutdown: Promise<void> | null = null;

  /**
   * Starts every listener; throws with a clear message when one cannot start (port in use, no permission).
   * With `hubAcme` the relay starts first, since it answers the ACME challenge, and the hub follows
   * ({@linkcode hubReady}).
   */
  constructor(config: NodeConfig) {
    setLogLevel(config.logLevel);
    setLogFormat(config.logFormat);
    this.#config = config;
    this.view = new NodeView(this, config);
    this.#refusals = new RateLimitedLog(createLogger("refusals"), {
      onEvent: (kind, fields) => this.view.refusal(kind, fields),
    });
    this.#sweeper = new SpliceSweeper({
      idleTimeoutMs: config.idleTimeoutSeconds * 1000,
      halfClosedTimeoutMs: config.limits.halfClosedTimeoutSeconds * 1000,
    });
    this.router = new Router<MuxSession>(() => this.mesh?.announce());
    this.#acme = config.hubAcme === undefined
      ? null
      : new HubCertificate(config.hubAcme, createLogger("acme"));
    // The hub's own name is the node's: no backend or peer may answer for it (and so get a certificate for it).
    if (this.#acme !== null) this.router.reserve(this.#acme.hostname);
    const receiveBudget = new BufferBudget(config.limits.streamBufferBudgetBytes, MAX_DATA_PAYLOAD_BYTES);
    this.#receiveBudget = receiveBudget;
    const tokenSeconds = config.handshakeTimeouts.backendTokenSeconds;
    this.hub = new Hub(
      {
        jwtSecret: config.backendsJwtSecret,
        maxBackends: config.limits.maxBackends,
        maxStreamsPerBackend: config.limits.maxStreamsPerBackend,
        legacyStreamBufferBytes: config.limits.legacyStreamBufferBytes,
        streamWindowFrames: Math.floor(config.limits.streamWindowBytes / MAX_DATA_PAYLOAD_BYTES),
        receiveBudget,
        windowStalls: this.windowStalls,
        pingIdleSeconds: BACKEND_PING_IDLE_SECONDS,
        heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
        tokenWaitMs: tokenSeconds === undefined ? undefined : tokenSeconds * 1000,
        isReserved: (hostname) => this.router.isReserved(hostname),
      },
      createLogger("hub"),
      this.#refusals,
      {
        onUp: (backend) => this.router.addBackend(backend.session, backend.claims, backend.weight),
        onDown: (backend) => this.router.removeBackend(backend.session),
      },
    );
    this.mesh = config.peerSecret === undefined ? null : new Mesh(
      {
        peerUrls: config.peers,
        peerSecret: config.peerSecret,
        ...(config.peerCaPem ? { peerCaPem: config.peerCaPem } : {}),
        maxStreamsPerPeer: config.limits.maxStreamsPerBackend,
        receiveBudget,
        windowStalls: this.windowStalls,
        heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
        reconnect: { initialDelayMs: 1_000, maxDelayMs: 30_000 },
      },
      this.router,
      (stream, info) => this.relay.acceptTunnel(stream, info),
      createLogger("mesh"),
      this.#refusals,
    );
    this.#descriptors = descriptorPlan(config);
    this.#admission = new Admission({ ...config.limits, maxConnections: this.#descriptors.relayConnections });
    this.relay = new Relay({
      bindAddress: config.relay.bindAddress,
      ports: config.relay.ports,
      router: this.router,
      admission: this.#admission,
      sweeper: this.#sweeper,
      deadlines: {
        firstByteMs: config.handshakeTimeouts.firstByteSeconds * 1000,
        extendPerReadMs: config.handshakeTimeouts.extendSeconds * 1000,
        totalMs: config.handshakeTimeouts.totalSeconds * 1000,
      },
      log: createLogger("relay"),
      refusals: this.#refusals,
      observer: this.view.relayObserver,
      ...(this.#acme === null ? {} : { answerHttp: this.#acme.responder.answer.bind(this.#acme.responder) }),
    });
    // First, so that it answers /readyz (503) while the hub waits for its certificate.
    this.#admin = config.admin === undefined ? null : new AdminListener({
      ...config.admin,
      view: this.view,
      log: createLogger("admin"),
      refusals: this.#refusals,
    });
    let hubListener: HubListener | null = null;
    try {
      this.#admin?.listen();
      if (this.#acme === null) {
        hubListener = this.#startHub(config, { certPem: config.hub.certPem, keyPem: config.hub.keyPem });
        this.relay.listen();
        this.#hubStarted(hubListener);
        this.hubReady = Promise.resolve();
      } else {
        this.relay.listen();
        this.hubReady = this.#startHubByAcme(this.#acme);
      }
    } catch (error) {
      void hubListener?.close();
      void this.#admin?.close();
      this.#sweeper.close();
      throw error;
    }
    this.#housekeeping = setInterval(() => this.#refusals.flush(), 1_000);
    Deno.unrefTimer(this.#housekeeping);
  }

  /** The hub's bound address (port 0 in the config picks a free port); throws before {@linkcode hubReady}. */
  get hubAddress(): Deno.NetAddr {
    if (this.#hubListener === null) throw new Error("the hub has not started yet: it has no certificate");
    return this.#hubListener.address;
  }

  /**
   * Serves new hub connections with another certificate and key (ACME renewals call this); open backend and
   * peer sessions keep theirs. Throws, changing nothing, when the pair cannot be used.
   */
  replaceHubCertificate(certPem: string, keyPem: string): void {
    if (this.#hubListener === null) throw new Error("the hub has not started yet");
    this.#hubListener.replaceCertificate(certPem, keyPem);
  }

  /** Loads or obtains the hub's certificate, then starts the hub and keeps the certificate renewed. */
  async #startHubByAcme(acme: HubCertificate): Promise<void> {
    let kept: StoredCertificate | undefined;
    try {
      kept = await acme.loadKept();
    } catch (error) {
      throw new Error(`Cannot start the hub: ${describe(error)}`);
    }
    const certificate = kept ?? await acme.obtainFirst();
    if (certificate === undefined || this.#shutdown !== null) return; // shut down while waiting
    this.#hubStarted(this.#startHub(this.#config, certificate));
    acme.startRenewing(this);
  }

  /** The hub listens: the mesh (which shares its listener) starts. */
  #hubStarted(hubListener: HubListener): void {
    const config = this.#config;
    this.#hubListener = hubListener;
    this.mesh?.start();
    createLogger("node").info("node started", {
      hub: `${hubListener.address.hostname}:${hubListener.address.port}`,
      relay_ports: this.relay.ports.map((p) => `${p.port}/${p.protocol}`).join(","),
      peers: config.peers.length,
    });
  }

  /** The state of the hub's ACME certificate (`null` with certificate files), shown in `/status`. */
  get hubCertificate(): HubCertificateStatus | null {
    return this.#acme?.status ?? null;
  }

  /** Refusal counters by kind, for status and tests. */
  get refusals(): RateLimitedLog {
    return this.#refusals;
  }

  /** Open client connections, including those still in the handshake phase. */
  get connections(): number {
    return this.#admission.connections;
  }

  /** Client connections still in the handshake phase. */
  get handshakes(): number {
    return this.#admission.handshakes;
  }

  /** Whether the node has begun to shut down (it is then not ready). */
  get draining(): boolean {
    return this.#shutdown !== null;
  }

  /** Whether the hub listens (with `hubAcme`, not before it has a certificate). */
  get hubListening(): boolean {
    return this.#hubListener !== null;
  }

  /** Connections through the hub's gate right now. */
  get hubConnections(): number {
    return this.#hubListener?.connections ?? 0;
  }

  /** Tunnels from peers being served. */
  get tunnelsOpen(): number {
    return this.relay.activeTunnels;
  }

  /** What open streams' windows hold of `limits.streamBufferBudgetBytes`. */
  get bufferBudgetReservedBytes(): number {
    return this.#config.limits.streamBufferBudgetBytes - this.#receiveBudget.availableBytes;
  }

  /** The connection caps in force, after the open-file limit had its say. */
  get limitsInForce(): { readonly relayConnections: number; readonly hubConnections: number } {
    return this.#descriptors;
  }

  /** The admin listener's bound address; throws when there is none. */
  get adminAddress(): Deno.NetAddr {
    if (this.#admin === null) throw new Error("This node has no admin listener (no admin block)");
    return this.#admin.address;
  }

  /**
   * Graceful shutdown: stop accepting, withdraw this node's routes from its peers, let open streams finish for
   * up to `drainMs`, then close the rest and every backend and peer session. Idempotent.
   */
  shutdown(drainMs: number): Promise<void> {
    this.#shutdown ??= this.#stop(drainMs);
    return this.#shutdown;
  }

  async #stop(drainMs: number): Promise<void> {
    const log = createLogger("node");
    this.relay.stopAccepting();
    await this.#acme?.stop();
    this.hub.drainAll();
    this.mesh?.withdraw();
    log.info("shutting down: no longer accepting", {
      open_streams: this.relay.activeStreams,
      open_tunnels: this.relay.activeTunnels,
      drain_ms: drainMs,
    });
    // Tunnels from peers drain like our own clients: the peers were told to send no new ones (withdraw).
    const left = await this.relay.drain(drainMs);
    if (left > 0) {
      const tunnels = this.relay.activeTunnels;
      log.warn("drain time over; closing remaining connections", { connections: left - tunnels, tunnels });
    }
    this.relay.abortAll("node shutting down");
    await this.hub.closeAll(1001, "node shutting down", 5_000);
    await this.mesh?.stop();
    await this.relay.drain(5_000);
    await this.#hubListener?.close();
    await this.relay.stoppedAccepting();
    this.#sweeper.close();
    clearInterval(this.#housekeeping);
    this.#refusals.flush({ all: true });
    // Last: a load balancer watching /readyz sees 503 all through the drain.
    await this.#admin?.close();
    log.info("stopped");
  }

  /**
   * Starts the hub's listener with `certificate`; its routes: `/connect` for backends, `/mesh` for peers,
   * `/healthz`. Throws with the address when it cannot listen.
   */
  #startHub(config: NodeConfig, certificate: StoredCertificate): HubListener {
    const { limits, handshakeTimeouts } = config;
    const upgradeMs = handshakeTimeouts.hubUpgradeSeconds * 1000;
    const tokenMs = (handshakeTimeouts.backendTokenSeconds ?? TOKEN_WAIT_MS / 1000) * 1000;
    const hubListener = new HubListener({
      hostname: config.hub.hostname,
      port: config.hub.port,
      certPem: certificate.certPem,
      keyPem: certificate.keyPem,
      admission: new Admission({
        maxConnections: this.#descriptors.hubConnections,
        maxConnectionsPerIp: limits.maxConnectionsPerIp,
        maxHandshakes: Math.min(limits.maxHubHandshakes, this.#descriptors.hubConnections),
        maxHandshakesPerIp: limits.maxHubHandshakesPerIp,
      }),
      // Connections counted by the first pool already: this one only shares out its handshakes.
      handshakes: new Admission({
        maxConnections: this.#descriptors.hubConnections,
        maxConnectionsPerIp: limits.maxConnectionsPerIp,
        maxHandshakes: Math.min(limits.maxHubHandshakes, this.#descriptors.hubConnections),
        maxHandshakesPerIp: limits.maxHubHandshakesPerIp,
      }),
      upgradeDeadlineMs: upgradeMs,
      // Both tokens, and a moment for the answers to cross.
      proveDeadlineMs: upgradeMs + 2 * tokenMs + PROVE_SLACK_MS,
      unprovenMaxMessageBytes: MAX_MESSAGE_BYTES,
      log: createLogger("hub"),
      refusals: this.#refusals,
    }, (request) => {
      const mesh = this.mesh;
      switch (request.request.path) {
        case "/connect":
          return this.hub.handleUpgrade(request);
        case "/mesh":
          return mesh === null ? request.respond(404, "Not found\n") : mesh.handleUpgrade(request);
        case "/healthz":
          return request.respond(200, "ok\n");
        default:
          return request.respond(404, "Not found\n");
      }
    });
    try {
      hubListener.listen();
    } catch (error) {
      throw new Error(
        `Cannot start the hub on ${config.hub.hostname}:${config.hub.port}: ${describe(error)}`,
      );
    }
    return hubListener;
  }
}

/**
 * The relay's and the hub's connection caps under the process's open-file limit; when the limit is too small
 * for the configuration, says so once at start with what to change.
 */
function descriptorPlan(config: NodeConfig): DescriptorPlan {
  const { limits } = config;
  const demand = {
    relayConnections: limits.maxConnections,
    hubConnections: limits.maxBackends + limits.maxHubHandshakes + HUB_PEER_LINK_ALLOWANCE,
    dialledLinks: config.peers.length,
  };
  const free = countFreeDescriptors(descriptorsNeeded(demand));
  const plan = planDescriptors(free ?? Infinity, demand);
  if (plan.reduced) {
    createLogger("node").warn("the open-file limit is too small for the configured limits; caps lowered", {
      free_descriptors: free ?? "unknown",
      needed: plan.needed,
      relay_connections: plan.relayConnections,
      hub_connections: plan.hubConnections,
      hint: "raise the limit (LimitNOFILE=, ulimit -n) or lower limits.maxConnections and limits.maxBackends",
    });
  }
  return plan;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
