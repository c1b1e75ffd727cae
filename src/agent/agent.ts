/**
 * The backend agent: dials out to one or more hubs (one session each), proves itself with tokens, and splices
 * every stream the node opens to a local service. The same binary as the node, so a home server or an ARM
 * board needs nothing else.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import { type Logger, RateLimitedLog } from "../log/logger.ts";
import { refusalCannotHeal } from "../protocol/refusal_reasons.ts";
import { withCertificateHint } from "../transport/certificate_hint.ts";
import { type InboxMessage, WebSocketInbox } from "../transport/inbox.ts";
import {
  dialWebSocket,
  type LinkFailure,
  LinkRenewal,
  type ReconnectPolicy,
  runDialledLink,
} from "../links/link.ts";
import { NEXUS_MUX, ORIGINAL } from "../mux/dialect.ts";
import { MUX_SUBPROTOCOL, MuxSession, type SessionEnd } from "../mux/session.ts";
import { WindowStallCounter } from "../mux/flow_control.ts";
import type { MuxStream } from "../mux/stream.ts";
import type { StreamOpenInfo } from "../protocol/frames.ts";
import { type HubMessage, type HubMessageType, parseHubMessage } from "../protocol/hub_messages.ts";
import type { Duplex } from "../stream/duplex.ts";
import { Splice, SpliceSet, SpliceSweeper, type SpliceTimeouts } from "../stream/splice.ts";
import { countFreeDescriptors, RESERVED_DESCRIPTORS } from "../system/descriptors.ts";
import { QuietCollector } from "../system/quiet_collector.ts";
import { dialTarget } from "./dial_target.ts";
import type { TargetMap } from "./targets.ts";
import type { TokenSource } from "./token_source.ts";

/** Everything the agent needs, parsed and validated by the config loader. */
export interface AgentSettings {
  readonly name: string;
  readonly hubUrls: readonly string[];
  /** PEM of a CA to trust for the hubs' certificates, beside the system roots. */
  readonly hubCaPem?: string;
  readonly tokens: TokenSource;
  readonly targets: TargetMap;
  readonly maxStreams: number;
  readonly connectTimeoutMs: number;
  readonly reconnect: { readonly initialDelayMs: number; readonly maxDelayMs: number };
  readonly heartbeatIntervalMs: number;
  readonly idleTimeoutMs: number;
  readonly halfClosedTimeoutMs: number;
  /** Bytes one stream may buffer from a hub that ignores credits (an original Go node). */
  readonly legacyStreamBufferBytes: number;
}

/**
 * Where the agent stands with one hub: dialling and proving itself, registered (`connected`), registered while
 * the hub drains (it sends no new streams), waiting to reconnect, or waiting after a refusal that cannot heal.
 */
export type HubSessionState = "connecting" | "connected" | "draining" | "backing_off" | "refused";

/** One hub as status output shows it. */
export interface HubStatus {
  readonly url: string;
  readonly state: HubSessionState;
  /** The dialect of the current session (`nexus-mux.v1`, `original` …), null without one. */
  readonly protocol: string | null;
  /** Since when the state holds (`Date.now()`). */
  readonly sinceMs: number;
  /** Why the last attempt failed or the last session ended. */
  readonly lastError: string | null;
  /** Attempts after the first. */
  readonly reconnects: number;
  /**
   * A reload changed the names, weight or name and the session with them is not open yet (the hub refused it,
   * say: `lastError` tells why): the session held still serves the names it registered, and it is retried.
   */
  readonly reregistrationPending: boolean;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Bytes the agent moved between its hubs and its local services, open streams included. */
export interface AgentByteCounts {
  readonly toServices: number;
  readonly fromServices: number;
}

/** How long to wait for each handshake step (the original client waits 15 s for the challenge, §4.2). */
const HANDSHAKE_STEP_MS = 15_000;
/** How long a stopping agent waits for each hub to answer its close (and so to have read everything). */
const SESSION_CLOSE_WAIT_MS = 5_000;
/** A session that lived this long resets the reconnect backoff. */
const STABLE_SESSION_MS = 30_000;
/** How often a retired session (replaced, or of a removed hub) is checked for streams still open. */
const RETIRE_POLL_MS = 200;

/** Why a session is retired, as the hub logs it when the session closes. */
type RetireReason = "agent re-registered on a new session" | "hub removed from the agent's configuration";

/** What a reload changed that the agent must act on, beyond settings read at use time. */
export interface AgentChanges {
  /** The names, weight or name in its tokens changed: each hub gets a new session, the old ones drain. */
  readonly reregister: boolean;
}

/** A hub the agent has not reached yet. */
function newHubStatus(url: string): Mutable<HubStatus> {
  return {
    url,
    state: "connecting",
    protocol: null,
    sinceMs: Date.now(),
    lastError: null,
    reconnects: 0,
    reregistrationPending: false,
  };
}

/** The agent: one reconnecting session per hub URL. */
export class Agent {
  /** The settings in force: read at use (each dial, stream, token), replaced by {@linkcode reconfigure}. */
  #settings: AgentSettings;
  /** How often this agent's senders waited for credits, over all its hub sessions. */
  readonly windowStalls = new WindowStallCounter();
  readonly #sweeperTimeouts: Live<SpliceTimeouts>;
  readonly #reconnect: Live<ReconnectPolicy>;
  readonly #log: Logger;
  readonly #sweeper: SpliceSweeper;
  /** Gives back what a burst of traffic left for the garbage collector once it ends (quiet_collector.ts). */
  readonly #collector: QuietCollector;
  /** Streams refused for a limit: a few lines, then counts, never one line each in a burst. */
  readonly #refusals: RateLimitedLog;
  readonly #housekeeping: ReturnType<typeof setInterval>;
  /** Streams from their dial to their end, over all hub sessions. */
  #streamsServed = 0;
  /** For status: each hub and where the agent stands with it. */
  readonly #hubs = new Map<string, Mutable<HubStatus>>();
  /** Streams that could not reach their local service, by `host:port` (`none`: no target for the name). */
  readonly #dialFailures = new Map<string, number>();
  #streamsOpened = 0;
  /** Bytes of streams that have ended; open ones are added at read time. */
  #bytesToServices = 0;
  #bytesFromServices = 0;
  readonly #sessions = new Map<string, MuxSession>();
  /** Sessions replaced by a re-registration or of a removed hub, ending once their streams have. */
  readonly #retiring = new Set<MuxSession>();
  /** Streams being served, with what the node said about each (name, client address). */
  readonly #splices: SpliceSet<StreamOpenInfo>;
  /** Each hub's session loop, what ends it when a reload removes the hub, and what asks it to re-register. */
  readonly #loops = new Map<
    string,
    { readonly loop: Promise<void>; readonly removed: AbortController; readonly renewal: LinkRenewal }
  >();
  /** Loops of removed hubs still ending. */
  readonly #ending = new Set<Promise<void>>();
  readonly #stopping = new AbortController();
  #onConnected: (hubUrl: string) => void = () => {};

  constructor(settings: AgentSettings, log: Logger) {
    this.#settings = { ...settings, maxStreams: streamCapUnderLimit(settings, log) };
    this.#log = log;
    this.#sweeperTimeouts = new Live(sweeperTimeouts(settings));
    this.#reconnect = new Live({ ...settings.reconnect, stableAfterMs: STABLE_SESSION_MS });
    this.#sweeper = new SpliceSweeper(this.#sweeperTimeouts);
    this.#splices = new SpliceSet(this.#sweeper);
    this.#collector = new QuietCollector();
    this.#refusals = new RateLimitedLog(log);
    this.#housekeeping = setInterval(() => this.#refusals.flush(), 1_000);
    Deno.unrefTimer(this.#housekeeping);
  }

  /** Hubs with an established session right now. */
  get connectedHubs(): number {
    return this.#sessions.size;
  }

  /** Streams being served right now. */
  get activeStreams(): number {
    return this.#splices.size;
  }

  /**
   * What the node said about each stream being served right now: the name and the original client's address
   * (for a client that reached another node of the mesh too). For tests: `/status` shows no client addresses.
   */
  get streamInfos(): StreamOpenInfo[] {
    return this.#splices.values();
  }

  /** Every hub and where the agent stands with it, for status output. */
  get hubs(): HubStatus[] {
    return this.#settings.hubUrls.map((url) => this.#hubs.get(url) ?? newHubStatus(url));
  }

  /** Whether the agent is stopping (it is then not ready). */
  get draining(): boolean {
    return this.#stopping.signal.aborted;
  }

  /** Streams the hubs opened so far. */
  get streamsOpened(): number {
    return this.#streamsOpened;
  }

  /** Streams that could not reach their local service, by target. */
  get dialFailures(): ReadonlyMap<string, number> {
    return this.#dialFailures;
  }

  /** Bytes moved so far to and from the local services: O(open streams), for a scrape. */
  byteCounts(): AgentByteCounts {
    let toServices = this.#bytesToServices;
    let fromServices = this.#bytesFromServices;
    for (const [splice] of this.#splices.entries()) {
      toServices += splice.bytesAToB;
      fromServices += splice.bytesBToA;
    }
    return { toServices, fromServices };
  }

  /** Bytes received from hubs that the local services have not taken yet (for status and tests). */
  get bufferedBytes(): number {
    let total = 0;
    for (const session of this.#sessions.values()) total += session.bufferedBytes;
    return total;
  }

  /** Starts one session loop per hub. */
  start(): void {
    this.#syncHubs();
  }

  /**
   * Puts `settings` in force (a reload): targets, tokens, limits and timeouts apply to what comes next (the
   * next stream, dial or token); a new hub is dialled, a removed one drains (no new streams, open ones go on
   * to their end) and then closes; with `changes.reregister`, each hub gets a new session with the new
   * names and weight, opened before the old one drains, so no open stream is cut and new ones go to the new
   * session.
   */
  reconfigure(settings: AgentSettings, changes: AgentChanges): void {
    if (this.#stopping.signal.aborted) return;
    this.#settings = { ...settings, maxStreams: streamCapUnderLimit(settings, this.#log) };
    this.#sweeperTimeouts.set(sweeperTimeouts(settings));
    this.#reconnect.set({ ...settings.reconnect, stableAfterMs: STABLE_SESSION_MS });
    this.#syncHubs();
    for (const [url, { renewal }] of this.#loops) {
      const hub = this.#hubs.get(url);
      // A re-registration still pending is tried again at once: this reload may have fixed why it was refused.
      if (!changes.reregister && hub?.reregistrationPending !== true) continue;
      // A hub still dialling its first session registers with the new settings anyway.
      if (hub !== undefined && this.#sessions.has(url)) hub.reregistrationPending = true;
      renewal.request();
    }
  }

  /** Makes the session loops match the configured hubs. */
  #syncHubs(): void {
    const wanted = new Set(this.#settings.hubUrls);
    for (const [url, { loop, removed }] of this.#loops) {
      if (wanted.has(url)) continue;
      this.#loops.delete(url);
      this.#hubs.delete(url);
      removed.abort();
      const session = this.#sessions.get(url);
      this.#log.info("hub removed from the configuration", { hub: url, streams: session?.streamCount ?? 0 });
      const retired = session === undefined
        ? Promise.resolve()
        : this.#retire(session, "hub removed from the agent's configuration");
      const ending = retired.then(() => loop).finally(() => this.#ending.delete(ending));
      this.#ending.add(ending);
    }
    for (const url of wanted) {
      if (this.#loops.has(url)) continue;
      const removed = new AbortController();
      const renewal = new LinkRenewal();
      this.#loops.set(url, { loop: this.#runHub(url, removed.signal, renewal), removed, renewal });
    }
  }

  /**
   * Ends a session without cutting its streams: the hub is told to send no new ones, and once the last has
   * ended (or the agent stops) the session closes.
   */
  async #retire(session: MuxSession, why: RetireReason): Promise<SessionEnd> {
    this.#retiring.add(session);
    session.drain();
    while (session.isOpen && session.streamCount > 0 && !this.#stopping.signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, RETIRE_POLL_MS));
    }
    // A stopping agent drains the streams of a retiring session as of a current one: `stop` closes it.
    if (!this.#stopping.signal.aborted) await session.closeGracefully(1000, why, SESSION_CLOSE_WAIT_MS);
    const end = await session.closed;
    this.#retiring.delete(session);
    return end;
  }

  /** Resolves once every hub has a session (for the demo and tests). */
  whenConnected(timeoutMs: number): Promise<boolean> {
    if (this.#sessions.size === this.#settings.hubUrls.length) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      const previous = this.#onConnected;
      this.#onConnected = (url) => {
        previous(url);
        if (this.#sessions.size === this.#settings.hubUrls.length) {
          clearTimeout(timer);
          resolve(true);
        }
      };
    });
  }

  /**
   * Stops: no new sessions, the hubs are told to send no new streams, open streams get `drainMs` to finish,
   * then every session closes (waiting for the hubs' answers, so nothing sent is cut off). A second call with
   * 0 cuts the drain short.
   */
  async stop(drainMs: number): Promise<void> {
    this.#stopping.abort();
    // The hubs take this backend out of their pools at once, so new clients go to other backends.
    for (const session of [...this.#sessions.values(), ...this.#retiring]) session.drain();
    if (drainMs > 0 && this.#splices.size > 0) {
      this.#log.info("draining streams", { streams: this.#splices.size, drain_ms: drainMs });
      await this.#splices.drain(drainMs);
    }
    this.#splices.abortAll("agent shutting down");
    // Closing handshakes, not just closes: the process exits next, and the hub must get the last bytes first.
    await Promise.all(
      [...this.#sessions.values(), ...this.#retiring].map((session) =>
        session.closeGracefully(1000, "agent shutting down", SESSION_CLOSE_WAIT_MS)
      ),
    );
    await Promise.allSettled([...[...this.#loops.values()].map(({ loop }) => loop), ...this.#ending]);
    this.#sweeper.close();
    this.#collector.close();
    clearInterval(this.#housekeeping);
    this.#refusals.flush({ all: true });
  }

  #runHub(url: string, removed: AbortSignal, renewal: LinkRenewal): Promise<void> {
    const hub: Mutable<HubStatus> = newHubStatus(url);
    this.#hubs.set(url, hub);
    const enter = (state: HubSessionState) => {
      if (hub.state !== state) hub.sinceMs = Date.now();
      hub.state = state;
    };
    return runDialledLink({
      target: url,
      kind: "hub",
      self: "agent",
      reconnect: this.#reconnect,
      signal: AbortSignal.any([this.#stopping.signal, removed]),
      renewal,
      retire: (session) => this.#retire(session, "agent re-registered on a new session"),
      log: this.#log,
      establish: () => this.#establish(url, () => enter("draining")),
      // A wrong secret or a forbidden name stays wrong until someone changes it.
      cannotHeal: refusalCannotHeal,
      attempting: () => enter("connecting"),
      up: (session) => {
        const replaced = this.#sessions.get(url);
        this.#sessions.set(url, session);
        if (replaced !== undefined && replaced !== session) {
          this.#log.info("re-registered on a new session; the old one drains", {
            hub: url,
            streams_on_old: replaced.streamCount,
          });
        }
        hub.protocol = session.dialect.name;
        hub.reregistrationPending = false;
        enter(session.draining ? "draining" : "connected");
        this.#log.info("connected to hub", { hub: url, protocol: session.dialect.name });
        this.#onConnected(url);
      },
      down: (session) => {
        // A retired session ends after its successor took its place: only the session held counts.
        if (this.#sessions.get(url) !== session) return;
        this.#sessions.delete(url);
        hub.protocol = null;
      },
      renewalFailed: (why) => {
        hub.lastError = `re-registration refused or failed: ${why}`;
      },
      waiting: (why, _delayMs, permanent) => {
        hub.lastError = why;
        hub.reconnects += 1;
        enter(permanent ? "refused" : "backing_off");
      },
    });
  }

  /** Dials one hub and completes the handshake: a session ready for streams, or why there is none. */
  async #establish(url: string, onDrain: () => void): Promise<MuxSession | LinkFailure> {
    const ws = await dialWebSocket(
      url,
      {
        protocols: [MUX_SUBPROTOCOL],
        ...(this.#settings.hubCaPem ? { caCerts: [this.#settings.hubCaPem] } : {}),
      },
      HANDSHAKE_STEP_MS,
      this.#stopping.signal,
    );
    if ("reason" in ws) return { reason: withCertificateHint(ws.reason, "hubCaFile") };
    const inbox = new WebSocketInbox(ws);
    const abandon = (reason: string): LinkFailure => {
      try {
        ws.close(1000, reason.slice(0, 120));
      } catch {
        // Already closed.
      }
      return { reason };
    };
    const dialect = ws.protocol === MUX_SUBPROTOCOL ? NEXUS_MUX : ORIGINAL;

    ws.send(await this.#settings.tokens.token("handshake"));
    const challenge = expectHubMessage(await inbox.next(HANDSHAKE_STEP_MS), "handshake_challenge");
    if (typeof challenge === "string") return abandon(challenge);
    ws.send(await this.#settings.tokens.token("attest", challenge.nonce));
    if (dialect === NEXUS_MUX) {
      // Our hub acknowledges; the original sends nothing and a rejection shows only as a close (§4.2).
      const accepted = expectHubMessage(await inbox.next(HANDSHAKE_STEP_MS), "handshake_accepted");
      if (typeof accepted === "string") return abandon(accepted);
    }

    const session = new MuxSession(ws, {
      label: `hub ${url}`,
      dialect,
      log: this.#log,
      maxStreams: this.#settings.maxStreams,
      legacyStreamBufferBytes: this.#settings.legacyStreamBufferBytes,
      windowStalls: this.windowStalls,
      heartbeatIntervalMs: this.#settings.heartbeatIntervalMs,
      pendingMessages: inbox.detach(),
      onStreamOpened: (stream, info) =>
        void this.#serve(stream, info).catch((error) => {
          // A bug ends this stream, never the agent (an unhandled rejection would).
          this.#log.error("stream handler failed", { host: info.hostname, error: String(error) });
          void stream.close("internal error", { code: "local_error" });
        }),
      onDrain: () => {
        onDrain();
        this.#log.info("hub is shutting down: it sends no new streams", { hub: url });
      },
      onText: (text) => void this.#onText(session, text),
    });
    if (!session.isOpen) return { reason: "hub closed the session during the handshake" };
    return session;
  }

  /** Re-authentication, which an original Go node may ask for (§4.6). */
  async #onText(session: MuxSession, text: string): Promise<void> {
    const message = parseHubMessage(text);
    if (message?.type !== "reauth_challenge") {
      this.#log.debug("text message from hub ignored", { session: session.label });
      return;
    }
    try {
      session.sendText(await this.#settings.tokens.token("reauth", message.nonce));
    } catch (error) {
      this.#log.error("cannot produce a re-authentication token; ending the session", {
        error: String(error),
      });
      session.close(1000, "re-authentication token unavailable");
    }
  }

  /**
   * Not async, nor is the splice awaited below: a stream that stays open holds no suspended frame of the
   * dial (10,000 idle streams measured about 0.4 KiB each less).
   */
  #serve(stream: MuxStream, info: StreamOpenInfo): Promise<void> {
    // One budget for all hub sessions: each stream holds a descriptor from its dial on, whichever hub it came
    // from, so dials in progress count too.
    if (this.#streamsServed >= this.#settings.maxStreams) {
      this.#refusals.event("max_streams", "stream refused: limits.maxStreams reached", {
        host: info.hostname,
      });
      return stream.close("too many streams", { code: "local_error" });
    }
    this.#streamsServed += 1;
    return this.#dialAndSplice(stream, info).finally(() => {
      this.#streamsServed -= 1;
    });
  }

  async #dialAndSplice(stream: MuxStream, info: StreamOpenInfo): Promise<void> {
    this.#streamsOpened += 1;
    const target = this.#settings.targets.resolve(info.hostname, info.isTls);
    if (target === undefined) {
      this.#countDialFailure("none");
      this.#log.warn("stream refused: no target for this name", {
        host: info.hostname,
        protocol: info.isTls ? "tls" : "http",
      });
      await stream.close("no target", { code: "dial_failed" });
      return;
    }
    let service: Duplex;
    try {
      service = await dialTarget(target, info, this.#settings.connectTimeoutMs);
    } catch (error) {
      this.#countDialFailure(`${target.host}:${target.port}`);
      this.#log.warn("stream refused: cannot reach the local service", {
        host: info.hostname,
        target: `${target.host}:${target.port}`,
        error: error instanceof Error ? error.message : String(error),
      });
      await stream.close("dial failed", { code: "dial_failed" });
      return;
    }
    // Returned, not awaited (see #serve).
    return this.#splices.add(new Splice(stream, service), info).then((result) => {
      this.#bytesToServices += result.bytesAToB;
      this.#bytesFromServices += result.bytesBToA;
      this.#log.debug("stream closed", {
        host: info.hostname,
        client: info.clientAddress,
        why: result.reason,
      });
    });
  }

  #countDialFailure(target: string): void {
    this.#dialFailures.set(target, (this.#dialFailures.get(target) ?? 0) + 1);
  }
}

function sweeperTimeouts(settings: AgentSettings): SpliceTimeouts {
  return { idleTimeoutMs: settings.idleTimeoutMs, halfClosedTimeoutMs: settings.halfClosedTimeoutMs };
}

/**
 * Each stream holds one descriptor (its connection to the local service): the stream cap must fit under the
 * open-file limit, or the agent would fail to dial once it runs out. Says so once when it lowers the cap.
 */
function streamCapUnderLimit(settings: AgentSettings, log: Logger): number {
  const wanted = RESERVED_DESCRIPTORS + settings.hubUrls.length + settings.maxStreams;
  const free = countFreeDescriptors(wanted);
  if (free === null || free >= wanted) return settings.maxStreams;
  const room = Math.max(1, free - RESERVED_DESCRIPTORS - settings.hubUrls.length);
  log.warn("the open-file limit is too small for limits.maxStreams; cap lowered", {
    free_descriptors: free,
    max_streams: room,
    hint: "raise the limit (LimitNOFILE=, ulimit -n) or lower limits.maxStreams",
  });
  return room;
}

/** The hub message of `type` (a challenge carries its nonce), or why it is not there. */
function expectHubMessage(message: InboxMessage, type: HubMessageType): HubMessage | string {
  switch (message.kind) {
    case "closed":
      return `hub closed the connection: ${message.reason}`;
    case "timeout":
      return `no ${type} from the hub within ${HANDSHAKE_STEP_MS / 1000}s`;
    case "binary":
      return `expected ${type} as a text frame, got a binary frame`;
    case "text": {
      const parsed = parseHubMessage(message.text);
      return parsed?.type === type ? parsed : `expected ${type}, got something else`;
    }
  }
}
