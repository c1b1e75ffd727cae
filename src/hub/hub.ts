/**
 * The hub: where backends dial in (`/connect`), prove themselves with tokens, and become members of the pools
 * of the names they claim. Each backend is one {@linkcode MuxSession}.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import type { HostnameClaim } from "../hostnames/hostname.ts";
import { claimKey } from "../hostnames/hostname.ts";
import type { Logger, RateLimitedLog } from "../log/logger.ts";
import type { BufferBudget, WindowStallCounter } from "../mux/flow_control.ts";
import { NEXUS_MUX, ORIGINAL } from "../mux/dialect.ts";
import { MUX_SUBPROTOCOL, MuxSession, truncateReason } from "../mux/session.ts";
import { MAX_BATCHED_MESSAGE_BYTES, MAX_MESSAGE_BYTES } from "../protocol/frames.ts";
import type { WebSocketConnection } from "../transport/websocket.ts";
import { isUpgradeRequest, offeredSubprotocols, upgradeRefusal } from "../transport/websocket_accept.ts";
import type { HubRequest } from "./hub_listener.ts";
import { holdLink } from "../links/link.ts";
import { acceptBackendHandshake } from "./backend_handshake.ts";

/** A registered backend. */
export interface Backend {
  readonly name: string;
  readonly remoteAddress: string;
  readonly claims: readonly HostnameClaim[];
  readonly weight: number;
  readonly session: MuxSession;
  /** When it registered (`Date.now()`), for status output. */
  readonly connectedAtMs: number;
}

/** Limits and settings of the hub. */
export interface HubSettings {
  readonly jwtSecret: Uint8Array;
  /** Retired secrets whose tokens are still accepted (`previousBackendsJWTSecrets`). */
  readonly previousJwtSecrets?: readonly Uint8Array[];
  readonly maxBackends: number;
  readonly maxStreamsPerBackend: number;
  readonly legacyStreamBufferBytes: number;
  /** Frames each stream to a backend may buffer here for a slow client (the credits granted at open). */
  readonly streamWindowFrames: number;
  /** The node-wide budget those windows are reserved from. */
  readonly receiveBudget: BufferBudget;
  /** The node's count of senders' waits for credits, shared by all its sessions. */
  readonly windowStalls: WindowStallCounter;
  /** Seconds of silence after which the hub pings a backend, and as long again for its pong (WebSocket level). */
  readonly pingIdleSeconds: number;
  /** Session ping interval for backends that speak our subprotocol. */
  readonly heartbeatIntervalMs: number;
  /** Wait for each handshake token; absent: the original's 10 s (`TOKEN_WAIT_MS`). */
  readonly tokenWaitMs?: number;
  /** Names the node keeps for itself (its hub's ACME name): a backend claiming one exactly is refused. */
  readonly isReserved?: (hostname: string) => boolean;
}

/** Close code for handshake refusals (§4.2: 1008 policy violation). */
export const POLICY_VIOLATION = 1008;

/** Accepts backends and keeps the set of registered ones. */
export class Hub {
  readonly #settings: Live<HubSettings>;
  readonly #log: Logger;
  readonly #refusals: RateLimitedLog;
  readonly #onUp: (backend: Backend) => void;
  readonly #onDown: (backend: Backend) => void;
  readonly #backends = new Set<Backend>();
  #closing = false;

  constructor(
    settings: HubSettings | Live<HubSettings>,
    log: Logger,
    refusals: RateLimitedLog,
    events: { onUp: (backend: Backend) => void; onDown: (backend: Backend) => void },
  ) {
    this.#settings = Live.of(settings);
    this.#log = log;
    this.#refusals = refusals;
    this.#onUp = events.onUp;
    this.#onDown = events.onDown;
  }

  /** Registered backends. */
  get backends(): ReadonlySet<Backend> {
    return this.#backends;
  }

  /**
   * Handles `GET /connect` on the hub listener. Never throws: a backend gets an answer or a closed WebSocket,
   * and the listener goes on either way.
   */
  async handleUpgrade(hubRequest: HubRequest): Promise<void> {
    const { request, remoteAddress } = hubRequest;
    if (!isUpgradeRequest(request)) {
      return await hubRequest.respond(
        426,
        "This is the Nexus hub: backends connect here with a WebSocket.\n",
      );
    }
    const refusal = upgradeRefusal(request);
    if (refusal !== null) return await hubRequest.respond(400, `${refusal}\n`);
    if (this.#closing) return await hubRequest.respond(503, "Shutting down\n");
    // Only registered backends count: strangers still proving themselves are bounded by the hub listener's
    // handshake pools, and must not make real agents see 503.
    if (this.#backends.size >= this.#settings.current.maxBackends) {
      this.#refusals.event("backend_limit", "backend refused: maxBackends reached", {
        remote: remoteAddress,
      });
      return await hubRequest.respond(503, "Too many backends\n");
    }
    const speaksCredits = offeredSubprotocols(request).includes(MUX_SUBPROTOCOL);
    try {
      const socket = await hubRequest.upgrade({
        idleTimeoutMs: this.#settings.current.pingIdleSeconds * 1000,
        ...(speaksCredits ? { protocol: MUX_SUBPROTOCOL } : {}),
      });
      await this.#admit(socket, hubRequest, speaksCredits).catch((error) => {
        this.#log.error("backend handshake failed unexpectedly", {
          remote: remoteAddress,
          error: String(error),
        });
        closeQuietly(socket, 1011, "internal error");
      });
    } catch (error) {
      this.#log.debug("backend gone before its upgrade was answered", {
        remote: remoteAddress,
        error: String(error),
      });
    }
  }

  /**
   * Tells every backend that this node is shutting down: they get no new streams, open ones go on. New
   * backends are refused from now on.
   */
  drainAll(): void {
    this.#closing = true;
    for (const backend of this.#backends) backend.session.drain();
  }

  /**
   * Closes every backend session (shutdown) and waits, at most `timeoutMs`, for their closing handshakes, so
   * the last bytes of finished streams reach the backends before the process exits. New backends are refused
   * from now on.
   */
  async closeAll(code: number, reason: string, timeoutMs: number): Promise<void> {
    this.#closing = true;
    await Promise.all(
      [...this.#backends].map((backend) => backend.session.closeGracefully(code, reason, timeoutMs)),
    );
  }

  async #admit(ws: WebSocketConnection, hubRequest: HubRequest, speaksCredits: boolean): Promise<void> {
    const { remoteAddress } = hubRequest;
    const settings = this.#settings.current;
    const outcome = await acceptBackendHandshake(ws, [
      settings.jwtSecret,
      ...settings.previousJwtSecrets ?? [],
    ], {
      acknowledge: speaksCredits,
      tokenWaitMs: this.#settings.current.tokenWaitMs,
    });
    if (!outcome.ok) {
      this.#refusals.event("backend_rejected", "backend rejected", {
        remote: remoteAddress,
        why: outcome.reason,
      });
      closeQuietly(ws, POLICY_VIOLATION, outcome.reason);
      return;
    }
    if (this.#closing) {
      closeQuietly(ws, 1001, "shutting down");
      return;
    }
    if (this.#backends.size >= this.#settings.current.maxBackends) {
      this.#refusals.event("backend_limit", "backend refused: maxBackends reached", {
        remote: remoteAddress,
      });
      closeQuietly(ws, 1013, "too many backends; try again later");
      return;
    }
    // Authenticated: out of the handshake phase, and messages as large as the protocol allows.
    hubRequest.proven();
    ws.setMaxMessageBytes(speaksCredits ? MAX_BATCHED_MESSAGE_BYTES : MAX_MESSAGE_BYTES);
    const { claims } = outcome;
    const reserved = claims.hostnames.find((claim) =>
      claim.kind === "exact" && this.#settings.current.isReserved?.(claim.name)
    );
    if (reserved !== undefined) {
      // "forbidden": a claim that cannot heal, so the original's client stops retrying (README, tokens).
      const reason = `forbidden: ${claimKey(reserved)} is this node's own hub name`;
      this.#refusals.event("backend_rejected", "backend rejected", { remote: remoteAddress, why: reason });
      closeQuietly(ws, POLICY_VIOLATION, reason);
      return;
    }
    const name = claims.name || remoteAddress;
    // A backend that drains (its agent is shutting down) leaves the pools at once; its open streams go on.
    let leavePool = () => {};
    const session = new MuxSession(ws, {
      label: `backend ${name} ${remoteAddress}`,
      dialect: speaksCredits ? NEXUS_MUX : ORIGINAL,
      log: this.#log,
      maxStreams: this.#settings.current.maxStreamsPerBackend,
      legacyStreamBufferBytes: this.#settings.current.legacyStreamBufferBytes,
      receiveWindowFrames: this.#settings.current.streamWindowFrames,
      receiveBudget: this.#settings.current.receiveBudget,
      windowStalls: this.#settings.current.windowStalls,
      heartbeatIntervalMs: this.#settings.current.heartbeatIntervalMs,
      pendingMessages: outcome.pendingMessages,
      onText: () =>
        this.#log.debug("text message from backend ignored (no re-authentication pending)", { name }),
      onDrain: () => leavePool(),
    });
    if (!session.isOpen) return;
    const backend: Backend = {
      name,
      remoteAddress,
      claims: claims.hostnames,
      weight: claims.weight,
      session,
      connectedAtMs: Date.now(),
    };
    let inPool = false;
    leavePool = () => {
      if (!inPool) return;
      inPool = false;
      this.#onDown(backend);
      if (session.isOpen) {
        this.#log.info("backend draining: no new streams", {
          name,
          remote: remoteAddress,
          streams: session.streamCount,
        });
      }
    };
    const end = await holdLink(session, {
      up: () => {
        this.#backends.add(backend);
        this.#log.info("backend registered", {
          name,
          remote: remoteAddress,
          hostnames: claims.hostnames.map(claimKey).join(","),
          weight: claims.weight,
          protocol: speaksCredits ? MUX_SUBPROTOCOL : "original",
        });
        if (claims.ignoredPortClaims) {
          this.#log.warn("backend's port claims ignored: this node routes by hostname", { name });
        }
        inPool = true;
        this.#onUp(backend);
        // It may have said it drains before it was even registered.
        if (session.draining) leavePool();
      },
      down: () => {
        this.#backends.delete(backend);
        leavePool();
      },
    });
    this.#log.info("backend left", { name, remote: remoteAddress, why: end.reason });
  }
}

/** Refuses a backend: the close frame goes out, and nothing of the connection is kept while it answers. */
function closeQuietly(ws: WebSocketConnection, code: number, reason: string): void {
  try {
    ws.closeAndDrop(code, truncateReason(reason));
  } catch {
    // Already closed.
  }
}
