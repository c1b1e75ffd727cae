/**
 * The mesh: links to peer nodes (dialled from `peers`, or accepted on the hub's `/mesh` path), over which nodes
 * announce the names their backends serve and tunnel clients to each other. A link is a {@linkcode MuxSession}
 * like a backend's, so a tunnel is just another stream. Tunnels are served by the receiving node's own backends
 * only, never forwarded again: one hop, no loops (§6.4).
 *
 * Peers authenticate with `peerSecret` (§6.1): the dialling node sends a short-lived HS256 token signed with
 * it (the secret itself never crosses the wire). `Deno.listenTls` cannot ask for client certificates, so no
 * mTLS.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import { jwtVerify, SignJWT } from "jose";
import type { Router } from "../balancer/router.ts";
import type { Logger, RateLimitedLog } from "../log/logger.ts";
import { singleHeader } from "../http/endpoint_request.ts";
import type { HubRequest } from "../hub/hub_listener.ts";
import { MAX_BATCHED_MESSAGE_BYTES } from "../protocol/frames.ts";
import type { WebSocketConnection } from "../transport/websocket.ts";
import { withCertificateHint } from "../transport/certificate_hint.ts";
import { isUpgradeRequest, offeredSubprotocols, upgradeRefusal } from "../transport/websocket_accept.ts";
import type { BufferBudget, WindowStallCounter } from "../mux/flow_control.ts";
import type { MessageSocket } from "../transport/message_socket.ts";
import { dialWebSocket, holdLink, type LinkFailure, runDialledLink } from "../links/link.ts";
import { NEXUS_MUX } from "../mux/dialect.ts";
import { MUX_SUBPROTOCOL, MuxSession, type SessionEnd } from "../mux/session.ts";
import type { MuxStream } from "../mux/stream.ts";
import type { StreamOpenInfo } from "../protocol/frames.ts";

/** Settings of the mesh. */
export interface MeshSettings {
  readonly peerUrls: readonly string[];
  readonly peerSecret: Uint8Array;
  readonly peerCaPem?: string;
  readonly maxStreamsPerPeer: number;
  /** The node-wide budget the receive windows of tunnels this node opens are reserved from. */
  readonly receiveBudget: BufferBudget;
  /** The node's count of senders' waits for credits, shared by all its sessions. */
  readonly windowStalls: WindowStallCounter;
  readonly heartbeatIntervalMs: number;
  readonly reconnect: { readonly initialDelayMs: number; readonly maxDelayMs: number };
}

const PEER_TOKEN_ISSUER = "nexus-peer";
const PEER_TOKEN_AUDIENCE = "nexus-mesh";
const PEER_TOKEN_TTL_SECONDS = 60;
/** Accepted difference between the clocks of two peers, for the token's `iat` and `exp`. */
const PEER_CLOCK_TOLERANCE_SECONDS = 30;
const CONNECT_TIMEOUT_MS = 15_000;
/** A link that lived this long starts the redial backoff over. */
const STABLE_LINK_MS = 30_000;
/** How often a removed peer's link is checked for tunnels still open before it is closed. */
const RETIRE_POLL_MS = 200;

/** Where the link to one configured peer URL stands. */
export type PeerDialState = "dialling" | "linked" | "this node";

/** A peer as status output shows it: a configured URL this node dials, or a node that dialled in. */
export interface PeerStatus {
  /** The configured URL, or `ip:port` of a node that dialled in. */
  readonly url: string;
  readonly direction: "outbound" | "inbound";
  readonly state: PeerDialState;
  /** The open link, whose announced names the router knows. */
  readonly link: MuxSession | null;
  /** Why the last attempt failed or the last link ended (outbound only). */
  readonly lastError: string | null;
  /** Since when the state holds (`Date.now()`). */
  readonly sinceMs: number;
}

/** Links to peer nodes and the routes they announced. */
export class Mesh {
  readonly #settings: Live<MeshSettings>;
  readonly #router: Router<MuxSession>;
  readonly #acceptTunnel: (stream: MuxStream, info: StreamOpenInfo) => void;
  readonly #log: Logger;
  readonly #refusals: RateLimitedLog;
  readonly #links = new Set<MuxSession>();
  readonly #lastVersion = new Map<MuxSession, number>();
  /** The dial loop of each configured peer URL, and what ends it when the URL is removed by a reload. */
  readonly #loops = new Map<string, { readonly loop: Promise<void>; readonly removed: AbortController }>();
  /** Loops of removed peers still ending (their links drain first). */
  readonly #ending = new Set<Promise<void>>();
  readonly #inbound = new Set<Promise<SessionEnd>>();
  readonly #stopping = new AbortController();
  /** `jti` of each token this node is dialling with → the URL it dials, so a node that dials itself notices. */
  readonly #dialling = new Map<string, string>();
  readonly #peerStates = new Map<string, PeerDialState>();
  readonly #selfUrls = new Set<string>();
  /** For status: each configured peer's open link, last error and since when its state holds. */
  readonly #dialled = new Map<
    string,
    { link: MuxSession | null; lastError: string | null; sinceMs: number }
  >();
  /** For status: links other nodes dialled, by the address they came from, and since when. */
  readonly #dialledIn = new Map<MuxSession, { remote: string; sinceMs: number }>();
  #announceVersion = 0;
  #withdrawn = false;
  #started = false;

  constructor(
    settings: MeshSettings | Live<MeshSettings>,
    router: Router<MuxSession>,
    acceptTunnel: (stream: MuxStream, info: StreamOpenInfo) => void,
    log: Logger,
    refusals: RateLimitedLog,
  ) {
    this.#settings = Live.of(settings);
    this.#router = router;
    this.#acceptTunnel = acceptTunnel;
    this.#log = log;
    this.#refusals = refusals;
  }

  /** Open links, inbound and outbound. */
  get links(): ReadonlySet<MuxSession> {
    return this.#links;
  }

  /** Every configured peer and every node that dialled in, for status output. */
  peers(): PeerStatus[] {
    const outbound = this.#settings.current.peerUrls.map((url): PeerStatus => {
      const dialled = this.#dialled.get(url);
      return {
        url,
        direction: "outbound",
        state: this.#peerStates.get(url) ?? "dialling",
        link: dialled?.link ?? null,
        lastError: dialled?.lastError ?? null,
        sinceMs: dialled?.sinceMs ?? Date.now(),
      };
    });
    const inbound = [...this.#dialledIn].map(([link, { remote, sinceMs }]): PeerStatus => ({
      url: remote,
      direction: "inbound",
      state: "linked",
      link,
      lastError: null,
      sinceMs,
    }));
    return [...outbound, ...inbound];
  }

  /** Starts dialling every configured peer. */
  start(): void {
    this.#started = true;
    this.syncPeers();
  }

  /**
   * Makes the dialled links match the configured peers (after a reload changed `peerUrls`): a new URL is
   * dialled; a removed one is told that this node serves nothing, gets no new tunnels from here, and its link
   * closes once the tunnels on it have ended (at most `drainMs`).
   */
  syncPeers(drainMs = 30_000): void {
    if (!this.#started || this.#stopping.signal.aborted) return;
    const wanted = new Set(this.#settings.current.peerUrls);
    for (const [url, { loop, removed }] of this.#loops) {
      if (wanted.has(url)) continue;
      this.#loops.delete(url);
      removed.abort();
      const link = this.#dialled.get(url)?.link ?? null;
      this.#dialled.delete(url);
      this.#peerStates.delete(url);
      this.#log.info("peer removed from the configuration", { peer: url, linked: link !== null });
      const ending = (link === null ? loop : this.#retire(link, drainMs).then(() => loop))
        .finally(() => this.#ending.delete(ending));
      this.#ending.add(ending);
    }
    for (const url of wanted) {
      if (this.#loops.has(url)) continue;
      const removed = new AbortController();
      this.#loops.set(url, { loop: this.#runPeer(url, removed.signal), removed });
    }
  }

  /** Withdraws this node's routes from `link` and forgets its own, then closes it once its tunnels end. */
  async #retire(link: MuxSession, drainMs: number): Promise<void> {
    link.announce(++this.#announceVersion, []);
    this.#router.removePeer(link);
    const deadline = Date.now() + drainMs;
    while (link.isOpen && link.streamCount > 0 && Date.now() < deadline && !this.#stopping.signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, RETIRE_POLL_MS));
    }
    await link.closeGracefully(1000, "peer removed from the configuration", 5_000);
  }

  /** Sends this node's current routes to every peer (full state, §6.3). */
  announce(): void {
    if (this.#withdrawn) return;
    const routes = this.#router.localRouteKeys();
    this.#announceVersion += 1;
    for (const link of this.#links) link.announce(this.#announceVersion, routes);
  }

  /** Handles `GET /mesh` on the hub listener. Never throws. */
  async handleUpgrade(hubRequest: HubRequest): Promise<void> {
    const { request, remoteAddress } = hubRequest;
    if (!isUpgradeRequest(request)) {
      return await hubRequest.respond(426, "Peer nodes connect here with a WebSocket.\n");
    }
    const malformed = upgradeRefusal(request);
    if (malformed !== null) return await hubRequest.respond(400, `${malformed}\n`);
    if (this.#stopping.signal.aborted) return await hubRequest.respond(503, "Shutting down\n");
    const token = /^Bearer (.+)$/.exec(singleHeader(request, "authorization") ?? "")?.[1];
    const refusal = !offeredSubprotocols(request).includes(MUX_SUBPROTOCOL)
      ? `peer must offer the ${MUX_SUBPROTOCOL} subprotocol`
      : token === undefined
      ? "peer sent no token"
      : await this.#verifyPeerToken(token);
    if (refusal !== null) {
      this.#refusals.event("peer_rejected", "peer rejected", { remote: remoteAddress, why: refusal });
      return await hubRequest.respond(403, `${refusal}\n`);
    }
    let socket: WebSocketConnection;
    try {
      socket = await hubRequest.upgrade({ protocol: MUX_SUBPROTOCOL, idleTimeoutMs: 60_000 });
    } catch (error) {
      this.#log.warn("inbound peer link failed before it opened", {
        peer: remoteAddress,
        why: String(error),
      });
      return;
    }
    // The token proved the peer before the upgrade.
    hubRequest.proven();
    socket.setMaxMessageBytes(MAX_BATCHED_MESSAGE_BYTES);
    const link = this.#session(socket, `peer ${remoteAddress} (inbound)`);
    if (link === null) return;
    const inbound = holdLink(link, {
      up: (l) => {
        this.#dialledIn.set(l, { remote: remoteAddress, sinceMs: Date.now() });
        this.#linkUp(l);
      },
      down: (l, end) => {
        this.#dialledIn.delete(l);
        this.#linkDown(l, end);
      },
    });
    this.#inbound.add(inbound);
    void inbound.finally(() => this.#inbound.delete(inbound));
    await inbound;
  }

  /** Tells every peer that this node serves nothing any more (shutdown), so they stop tunnelling to it. */
  withdraw(): void {
    this.#withdrawn = true;
    this.#announceVersion += 1;
    for (const link of this.#links) link.announce(this.#announceVersion, []);
  }

  /** Stops dialling and closes every link. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    for (const link of this.#links) link.close(1001, "node shutting down");
    await Promise.allSettled([
      ...[...this.#loops.values()].map(({ loop }) => loop),
      ...this.#ending,
      ...this.#inbound,
    ]);
  }

  async #verifyPeerToken(token: string): Promise<string | null> {
    try {
      const { payload } = await jwtVerify(token, this.#settings.current.peerSecret, {
        issuer: PEER_TOKEN_ISSUER,
        audience: PEER_TOKEN_AUDIENCE,
        algorithms: ["HS256"],
        maxTokenAge: `${PEER_TOKEN_TTL_SECONDS}s`,
        clockTolerance: PEER_CLOCK_TOLERANCE_SECONDS,
      });
      const ownUrl = typeof payload.jti === "string" ? this.#dialling.get(payload.jti) : undefined;
      if (ownUrl === undefined) return null;
      this.#selfUrls.add(ownUrl);
      return `this node is listed among its own peers as ${ownUrl}`;
    } catch (error) {
      return `peer token refused: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  #runPeer(url: string, removed: AbortSignal): Promise<void> {
    return runDialledLink({
      target: url,
      kind: "peer",
      self: "node",
      reconnect: { ...this.#settings.current.reconnect, stableAfterMs: STABLE_LINK_MS },
      signal: AbortSignal.any([this.#stopping.signal, removed]),
      log: this.#log,
      establish: () => this.#establish(url),
      attempting: () => this.#setPeerState(url, "dialling"),
      up: (link) => {
        this.#setPeerState(url, "linked");
        this.#dialled.get(url)!.link = link;
        this.#linkUp(link);
      },
      down: (link, end) => {
        // A peer removed by a reload is no longer shown: only its link is forgotten.
        if (!removed.aborted) {
          this.#dialled.get(url)!.link = null;
          this.#setPeerState(url, "dialling");
        }
        this.#linkDown(link, end);
      },
      waiting: (why) => {
        const dialled = this.#dialled.get(url);
        if (dialled !== undefined) dialled.lastError = why;
      },
      giveUp: () => {
        if (!this.#selfUrls.has(url)) return false;
        this.#setPeerState(url, "this node");
        this.#log.warn("peer URL leads back to this node; not dialling it again", { peer: url });
        return true;
      },
    });
  }

  /** Dials one peer with a fresh token: an open link, or why there is none. */
  async #establish(url: string): Promise<MuxSession | LinkFailure> {
    const jti = crypto.randomUUID();
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuer(PEER_TOKEN_ISSUER)
      .setAudience(PEER_TOKEN_AUDIENCE)
      .setJti(jti)
      .setIssuedAt()
      .setExpirationTime(`${PEER_TOKEN_TTL_SECONDS}s`)
      .sign(this.#settings.current.peerSecret);
    // While the dial is out, a node that receives this token knows it dialled itself.
    this.#dialling.set(jti, url);
    const ws = await dialWebSocket(
      url,
      {
        protocols: [MUX_SUBPROTOCOL],
        headers: { authorization: `Bearer ${token}` },
        ...(this.#settings.current.peerCaPem ? { caCerts: [this.#settings.current.peerCaPem] } : {}),
      },
      CONNECT_TIMEOUT_MS,
      this.#stopping.signal,
    ).finally(() => this.#dialling.delete(jti));
    if ("reason" in ws) return { reason: withCertificateHint(ws.reason, "peerCaFile") };
    if (ws.protocol !== MUX_SUBPROTOCOL) {
      ws.close(1000, "subprotocol not accepted");
      return { reason: `peer did not accept the ${MUX_SUBPROTOCOL} subprotocol` };
    }
    return this.#session(ws, `peer ${url}`) ?? { reason: "peer closed the link as it opened" };
  }

  /** A link's session over an open WebSocket, or null when it closed at once or the node is stopping. */
  #session(ws: MessageSocket, label: string): MuxSession | null {
    // A link that opened while the node began to stop would outlive `stop()`.
    if (this.#stopping.signal.aborted) {
      ws.close(1000, "node shutting down");
      return null;
    }
    const link: MuxSession = new MuxSession(ws, {
      label,
      dialect: NEXUS_MUX,
      log: this.#log,
      maxStreams: this.#settings.current.maxStreamsPerPeer,
      receiveBudget: this.#settings.current.receiveBudget,
      windowStalls: this.#settings.current.windowStalls,
      legacyStreamBufferBytes: 0,
      heartbeatIntervalMs: this.#settings.current.heartbeatIntervalMs,
      onStreamOpened: this.#acceptTunnel,
      onAnnounce: (version, routes) => this.#onAnnounce(link, version, routes),
    });
    return link.isOpen ? link : null;
  }

  #setPeerState(url: string, state: PeerDialState): void {
    if (this.#peerStates.get(url) === state) return;
    this.#peerStates.set(url, state);
    const dialled = this.#dialled.get(url);
    if (dialled === undefined) this.#dialled.set(url, { link: null, lastError: null, sinceMs: Date.now() });
    else dialled.sinceMs = Date.now();
  }

  #linkUp(link: MuxSession): void {
    this.#links.add(link);
    this.#log.info("peer link up", { peer: link.label });
    link.announce(++this.#announceVersion, this.#withdrawn ? [] : this.#router.localRouteKeys());
  }

  #linkDown(link: MuxSession, end: SessionEnd): void {
    this.#links.delete(link);
    this.#lastVersion.delete(link);
    this.#router.removePeer(link);
    this.#log.info("peer link down", { peer: link.label, why: end.reason });
  }

  #onAnnounce(link: MuxSession, version: number, routes: readonly string[]): void {
    // Announcements are full state; an older one that arrives late must not undo a newer one (§6.3).
    if (version <= (this.#lastVersion.get(link) ?? -1)) return;
    this.#lastVersion.set(link, version);
    const rejected = this.#router.setPeerRoutes(link, routes);
    this.#log.info("peer routes", { peer: link.label, routes: routes.length - rejected.length });
    if (rejected.length > 0) {
      this.#log.warn("peer announced invalid route keys; ignored", {
        peer: link.label,
        keys: rejected.join(","),
      });
    }
  }
}
