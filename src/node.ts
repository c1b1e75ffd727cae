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
import { Live } from "./config/live.ts";
import type { NodeConfig } from "./config/node_config.ts";
import { NODE_KEYS, type ReloadPlan } from "./config/reload_plan.ts";
import { type Applied, Reloader, type ReloadReport } from "./config/reloader.ts";
import { TOKEN_WAIT_MS } from "./hub/backend_handshake.ts";
import { Hub, type HubSettings } from "./hub/hub.ts";
import { HubListener, type HubListenerSettings } from "./hub/hub_listener.ts";
import { AdminListener, moveAdminListener } from "./admin/admin_listener.ts";
import { NodeView } from "./admin/node_view.ts";
import { createLogger, RateLimitedLog, setLogFormat, setLogLevel } from "./log/logger.ts";
import { Mesh, type MeshSettings } from "./mesh/mesh.ts";
import { BufferBudget, WindowStallCounter } from "./mux/flow_control.ts";
import type { MuxSession } from "./mux/session.ts";
import { MAX_DATA_PAYLOAD_BYTES, MAX_MESSAGE_BYTES } from "./protocol/frames.ts";
import { Admission, type AdmissionLimits } from "./relay/admission.ts";
import { Relay } from "./relay/relay.ts";
import type { SniffDeadlines } from "./relay/sniff.ts";
import { SpliceSweeper, type SpliceTimeouts } from "./stream/splice.ts";
import { QuietCollector } from "./system/quiet_collector.ts";
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
  /** The config in force: the one started with, then what each reload put in force. */
  #config: NodeConfig;
  readonly #acme: HubCertificate | null;
  readonly #admission: Admission;
  #descriptors: DescriptorPlan;
  /** Free descriptors at start (null: unknown), against which a reload plans the connection caps again. */
  readonly #freeDescriptors: number | null;
  /** What a reload may change while the components run: one {@linkcode Live} each, set by `#putInForce`. */
  readonly #sweeperTimeouts: Live<SpliceTimeouts>;
  readonly #hubSettings: Live<HubSettings>;
  readonly #hubAdmissionLimits: Live<AdmissionLimits>;
  #hubListenerSettings: Live<HubListenerSettings> | null = null;
  readonly #meshSettings: Live<MeshSettings> | null;
  readonly #relayAdmissionLimits: Live<AdmissionLimits>;
  readonly #relayDeadlines: Live<SniffDeadlines>;
  readonly #reloader: Reloader<NodeConfig> | null;
  readonly #sweeper: SpliceSweeper;
  /** Gives back what a burst of traffic left for the garbage collector once it ends (quiet_collector.ts). */
  readonly #collector: QuietCollector;
  readonly #refusals: RateLimitedLog;
  readonly #receiveBudget: BufferBudget;
  /** Metrics, status and readiness; counted from the start, shown by the admin listener when there is one. */
  readonly view: NodeView;
  /** How often this node's senders waited for credits, over all its sessions (hub and mesh). */
  readonly windowStalls = new WindowStallCounter();
  #admin: AdminListener | null;
  #hubListener: HubListener | null = null;
  readonly #housekeeping: ReturnType<typeof setInterval>;
  #shutdown: Promise<void> | null = null;

  /**
   * Starts every listener; throws with a clear message when one cannot start (port in use, no permission).
   * With `hubAcme` the relay starts first, since it answers the ACME challenge, and the hub follows
   * ({@linkcode hubReady}).
   *
   * @param readConfig reads and validates the config file again, for reloads (`SIGHUP`, `POST /reload`);
   * absent: the node cannot reload.
   */
  constructor(config: NodeConfig, readConfig?: () => NodeConfig) {
    setLogLevel(config.logLevel);
    setLogFormat(config.logFormat);
    this.#config = config;
    this.#reloader = readConfig === undefined ? null : new Reloader({
      inForce: config,
      read: readConfig,
      specs: NODE_KEYS,
      apply: (plan) => this.#applyReload(plan),
      log: createLogger("reload"),
    });
    this.view = new NodeView(this, config);
    this.#refusals = new RateLimitedLog(createLogger("refusals"), {
      onEvent: (kind, fields) => this.view.refusal(kind, fields),
    });
    const { descriptors, free } = descriptorPlan(config);
    this.#descriptors = descriptors;
    this.#freeDescriptors = free;
    const live = liveSettings(config, descriptors);
    this.#sweeperTimeouts = new Live(live.sweeper);
    this.#sweeper = new SpliceSweeper(this.#sweeperTimeouts);
    this.#collector = new QuietCollector();
    this.router = new Router<MuxSession>(() => this.mesh?.announce());
    this.#acme = config.hubAcme === undefined
      ? null
      : new HubCertificate(config.hubAcme, createLogger("acme"));
    // The hub's own name is the node's: no backend or peer may answer for it (and so get a certificate for it).
    if (this.#acme !== null) this.router.reserve(this.#acme.hostname);
    const receiveBudget = new BufferBudget(config.limits.streamBufferBudgetBytes, MAX_DATA_PAYLOAD_BYTES);
    this.#receiveBudget = receiveBudget;
    this.#hubSettings = new Live<HubSettings>({
      ...live.hub,
      receiveBudget,
      windowStalls: this.windowStalls,
      pingIdleSeconds: BACKEND_PING_IDLE_SECONDS,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      isReserved: (hostname) => this.router.isReserved(hostname),
    });
    this.hub = new Hub(this.#hubSettings, createLogger("hub"), this.#refusals, {
      onUp: (backend) => this.router.addBackend(backend.session, backend.claims, backend.weight),
      onDown: (backend) => this.router.removeBackend(backend.session),
    });
    this.#hubAdmissionLimits = new Live(live.hubAdmission);
    const peerSecret = config.peerSecret;
    this.#meshSettings = peerSecret === undefined ? null : new Live<MeshSettings>({
      ...live.mesh,
      peerSecret,
      receiveBudget,
      windowStalls: this.windowStalls,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      reconnect: { initialDelayMs: 1_000, maxDelayMs: 30_000 },
    });
    this.mesh = this.#meshSettings === null ? null : new Mesh(
      this.#meshSettings,
      this.router,
      (stream, info) => this.relay.acceptTunnel(stream, info),
      createLogger("mesh"),
      this.#refusals,
    );
    this.#relayAdmissionLimits = new Live(live.relayAdmission);
    this.#admission = new Admission(this.#relayAdmissionLimits);
    this.#relayDeadlines = new Live(live.deadlines);
    this.relay = new Relay({
      bindAddress: config.relay.bindAddress,
      ports: config.relay.ports,
      router: this.router,
      admission: this.#admission,
      sweeper: this.#sweeper,
      deadlines: this.#relayDeadlines,
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
      this.#collector.close();
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

  /** The config in force: the one started with, or what the last reload put in force. */
  get config(): NodeConfig {
    return this.#config;
  }

  /** Reloads so far and the last one's report; null for a node started without a config file to re-read. */
  get reloads(): Reloader<NodeConfig> | null {
    return this.#reloader;
  }

  /**
   * Re-reads the config file and applies what changed (`SIGHUP`, `POST /reload`): an invalid file changes
   * nothing; keys that need a restart are refused and logged, everything else goes into force through the
   * component that owns it, and open streams, backend sessions and peer links stay up.
   */
  reload(trigger: string): Promise<ReloadReport> {
    if (this.#reloader !== null) return this.#reloader.reload(trigger);
    return Promise.resolve({
      result: "failed",
      trigger,
      atMs: Date.now(),
      applied: [],
      restartNeeded: [],
      problems: ["this node was started without a config file to read again"],
    });
  }

  /** Applies a reload's plan; returns what is in force now, with the old setting of each part that failed. */
  #applyReload(plan: ReloadPlan<NodeConfig>): Promise<Applied<NodeConfig>> {
    const old = this.#config;
    if (this.#shutdown !== null) {
      return Promise.resolve({ inForce: old, problems: ["the node is shutting down"] });
    }
    const changed = new Set(plan.live.map((change) => change.key));
    const problems: string[] = [];
    let next = plan.effective;
    setLogLevel(next.logLevel);
    setLogFormat(next.logFormat);
    if (changed.has("hubTlsCertFile") && this.#hubListener !== null) {
      try {
        this.replaceHubCertificate(next.hub.certPem, next.hub.keyPem);
      } catch (error) {
        problems.push(`hubTlsCertFile: ${describe(error)}; the hub keeps serving its certificate`);
        next = { ...next, hub: old.hub };
      }
    }
    if (changed.has("relayPorts")) {
      const ports = this.relay.setPorts(next.relay.ports);
      problems.push(...ports.problems.map((problem) => `relayPorts: ${problem}`));
      next = { ...next, relay: { ...next.relay, ports: ports.inForce } };
    }
    this.#descriptors =
      descriptorPlan(next, { free: this.#freeDescriptors, inForce: this.#descriptors }).descriptors;
    this.#putInForce(next);
    // After the mesh's settings: a new peer is dialled with the secret and CA in force.
    if (changed.has("peers")) this.mesh?.syncPeers(next.drainTimeoutSeconds * 1000);
    if (changed.has("admin")) {
      const { listener, problem } = moveAdminListener(
        this.#admin,
        old.admin,
        next.admin,
        (settings) =>
          new AdminListener({
            ...settings,
            view: this.view,
            log: createLogger("admin"),
            refusals: this.#refusals,
          }),
      );
      this.#admin = listener;
      if (problem !== null) {
        problems.push(problem);
        const { admin: _dropped, ...rest } = next;
        next = old.admin === undefined ? rest : { ...rest, admin: old.admin };
      }
    }
    this.#config = next;
    return Promise.resolve({ inForce: next, problems });
  }

  /** Sets every component's live settings from `config`. */
  #putInForce(config: NodeConfig): void {
    const live = liveSettings(config, this.#descriptors);
    this.#sweeperTimeouts.set(live.sweeper);
    this.#hubSettings.set({ ...this.#hubSettings.current, ...live.hub });
    this.#hubAdmissionLimits.set(live.hubAdmission);
    this.#hubListenerSettings?.set({ ...this.#hubListenerSettings.current, ...live.hubDeadlines });
    if (this.#meshSettings !== null && config.peerSecret !== undefined) {
      this.#meshSettings.set({ ...this.#meshSettings.current, ...live.mesh, peerSecret: config.peerSecret });
    }
    this.#relayAdmissionLimits.set(live.relayAdmission);
    this.#relayDeadlines.set(live.deadlines);
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
    this.#collector.close();
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
    // Connections counted by the first pool already: the second only shares out the handshakes of those
    // that have spoken. Both follow the limits in force.
    this.#hubListenerSettings = new Live<HubListenerSettings>({
      hostname: config.hub.hostname,
      port: config.hub.port,
      certPem: certificate.certPem,
      keyPem: certificate.keyPem,
      admission: new Admission(this.#hubAdmissionLimits),
      handshakes: new Admission(this.#hubAdmissionLimits),
      ...liveSettings(config, this.#descriptors).hubDeadlines,
      unprovenMaxMessageBytes: MAX_MESSAGE_BYTES,
      log: createLogger("hub"),
      refusals: this.#refusals,
    });
    const hubListener = new HubListener(this.#hubListenerSettings, (request) => {
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
 * for the configuration, says so with what to change. At start it counts the free descriptors; a reload
 * plans again against the count from the start (`free`), since the node's own connections hold some now.
 */
function descriptorPlan(
  config: NodeConfig,
  counted?: { free: number | null; inForce: DescriptorPlan },
): { descriptors: DescriptorPlan; free: number | null } {
  const { limits } = config;
  const demand = {
    relayConnections: limits.maxConnections,
    hubConnections: limits.maxBackends + limits.maxHubHandshakes + HUB_PEER_LINK_ALLOWANCE,
    dialledLinks: config.peers.length,
  };
  const free = counted === undefined ? countFreeDescriptors(descriptorsNeeded(demand)) : counted.free;
  const plan = planDescriptors(free ?? Infinity, demand);
  // Said once per change: a reload that leaves the lowered caps as they were repeats nothing.
  const inForce = counted?.inForce;
  const unchanged = inForce !== undefined && inForce.reduced && inForce.needed === plan.needed &&
    inForce.relayConnections === plan.relayConnections && inForce.hubConnections === plan.hubConnections;
  if (plan.reduced && !unchanged) {
    createLogger("node").warn("the open-file limit is too small for the configured limits; caps lowered", {
      free_descriptors: free ?? "unknown",
      needed: plan.needed,
      relay_connections: plan.relayConnections,
      hub_connections: plan.hubConnections,
      hint: "raise the limit (LimitNOFILE=, ulimit -n) or lower limits.maxConnections and limits.maxBackends",
    });
  }
  return { descriptors: plan, free };
}

/**
 * What each component reads of the config at use time, computed from a validated config: at start, and again
 * from the config a reload puts in force. Whatever is not here is read once, at start.
 */
function liveSettings(config: NodeConfig, descriptors: DescriptorPlan) {
  const { limits, handshakeTimeouts } = config;
  const upgradeMs = handshakeTimeouts.hubUpgradeSeconds * 1000;
  const tokenMs = (handshakeTimeouts.backendTokenSeconds ?? TOKEN_WAIT_MS / 1000) * 1000;
  const hubHandshakes = Math.min(limits.maxHubHandshakes, descriptors.hubConnections);
  return {
    sweeper: {
      idleTimeoutMs: config.idleTimeoutSeconds * 1000,
      halfClosedTimeoutMs: limits.halfClosedTimeoutSeconds * 1000,
    } satisfies SpliceTimeouts,
    hub: {
      jwtSecret: config.backendsJwtSecret,
      previousJwtSecrets: config.previousBackendsJwtSecrets,
      maxBackends: limits.maxBackends,
      maxStreamsPerBackend: limits.maxStreamsPerBackend,
      legacyStreamBufferBytes: limits.legacyStreamBufferBytes,
      streamWindowFrames: Math.floor(limits.streamWindowBytes / MAX_DATA_PAYLOAD_BYTES),
      tokenWaitMs: handshakeTimeouts.backendTokenSeconds === undefined
        ? undefined
        : handshakeTimeouts.backendTokenSeconds * 1000,
    } satisfies Partial<HubSettings>,
    hubDeadlines: {
      upgradeDeadlineMs: upgradeMs,
      // Both tokens, and a moment for the answers to cross.
      proveDeadlineMs: upgradeMs + 2 * tokenMs + PROVE_SLACK_MS,
    } satisfies Partial<HubListenerSettings>,
    hubAdmission: {
      maxConnections: descriptors.hubConnections,
      maxConnectionsPerIp: limits.maxConnectionsPerIp,
      maxHandshakes: hubHandshakes,
      maxHandshakesPerIp: limits.maxHubHandshakesPerIp,
    } satisfies AdmissionLimits,
    mesh: {
      peerUrls: config.peers,
      peerCaPem: config.peerCaPem,
      maxStreamsPerPeer: limits.maxStreamsPerBackend,
    } satisfies Partial<MeshSettings>,
    relayAdmission: {
      maxConnections: descriptors.relayConnections,
      maxConnectionsPerIp: limits.maxConnectionsPerIp,
      maxHandshakes: limits.maxHandshakes,
      maxHandshakesPerIp: limits.maxHandshakesPerIp,
    } satisfies AdmissionLimits,
    deadlines: {
      firstByteMs: handshakeTimeouts.firstByteSeconds * 1000,
      extendPerReadMs: handshakeTimeouts.extendSeconds * 1000,
      totalMs: handshakeTimeouts.totalSeconds * 1000,
    } satisfies SniffDeadlines,
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
