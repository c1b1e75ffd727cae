/**
 * The backend agent: dials out to one or more hubs (one session each), proves itself with tokens, and splices
 * every stream the node opens to a local service. The same binary as the node, so a home server or an ARM
 * board needs nothing else.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { type InboxMessage, waitForOpen, WebSocketInbox } from "../transport/inbox.ts";
import { reconnectDelayMs, sleep } from "../mux/reconnect.ts";
import { MUX_SUBPROTOCOL, MuxSession } from "../mux/session.ts";
import type { MuxStream } from "../mux/stream.ts";
import { WebSocketClient } from "../transport/websocket_client.ts";
import type { StreamOpenInfo } from "../protocol/frames.ts";
import { type HubMessage, type HubMessageType, parseHubMessage } from "../protocol/hub_messages.ts";
import type { Duplex } from "../stream/duplex.ts";
import { Splice, SpliceSweeper } from "../stream/splice.ts";
import { countFreeDescriptors, RESERVED_DESCRIPTORS } from "../system/descriptors.ts";
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

/** How long to wait for each handshake step (the original client waits 15 s for the challenge, §1.2). */
const HANDSHAKE_STEP_MS = 15_000;
/** How long a stopping agent waits for each hub to answer its close (and so to have read everything). */
const SESSION_CLOSE_WAIT_MS = 5_000;
/** A session that lived this long resets the reconnect backoff. */
const STABLE_SESSION_MS = 30_000;

/** The agent: one reconnecting session per hub URL. */
export class Agent {
  readonly #settings: AgentSettings;
  readonly #log: Logger;
  readonly #sweeper: SpliceSweeper;
  readonly #sessions = new Map<string, MuxSession>();
  /** Streams being served, with what the node said about each (name, client address). */
  readonly #splices = new Map<Splice, StreamOpenInfo>();
  readonly #loops: Promise<void>[] = [];
  readonly #stopping = new AbortController();
  #onConnected: (hubUrl: string) => void = () => {};

  constructor(settings: AgentSettings, log: Logger) {
    this.#settings = { ...settings, maxStreams: streamCapUnderLimit(settings, log) };
    this.#log = log;
    this.#sweeper = new SpliceSweeper({
      idleTimeoutMs: settings.idleTimeoutMs,
      halfClosedTimeoutMs: settings.halfClosedTimeoutMs,
    });
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
   * (for a client that reached another node of the mesh too), for status output and tests.
   */
  get streamInfos(): StreamOpenInfo[] {
    return [...this.#splices.values()];
  }

  /** Bytes received from hubs that the local services have not taken yet (for status and tests). */
  get bufferedBytes(): number {
    let total = 0;
    for (const session of this.#sessions.values()) total += session.bufferedBytes;
    return total;
  }

  /** Starts one session loop per hub. */
  start(): void {
    for (const url of this.#settings.hubUrls) this.#loops.push(this.#runHub(url));
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
    for (const session of this.#sessions.values()) session.drain();
    if (drainMs > 0 && this.#splices.size > 0) {
      this.#log.info("draining streams", { streams: this.#splices.size, drain_ms: drainMs });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#splices.keys()].map((splice) => splice.done)),
        new Promise((resolve) => (timer = setTimeout(resolve, drainMs))),
      ]);
      clearTimeout(timer);
    }
    for (const splice of this.#splices.keys()) splice.abort("agent shutting down");
    // Closing handshakes, not just closes: the process exits next, and the hub must get the last bytes first.
    await Promise.all(
      [...this.#sessions.values()].map((session) =>
        session.closeGracefully(1000, "agent shutting down", SESSION_CLOSE_WAIT_MS)
      ),
    );
    await Promise.allSettled(this.#loops);
    this.#sweeper.close();
  }

  async #runHub(url: string): Promise<void> {
    const { initialDelayMs, maxDelayMs } = this.#settings.reconnect;
    let attempt = 0;
    while (!this.#stopping.signal.aborted) {
      const startedMs = Date.now();
      const end = await this.#session(url).catch((error) => ({
        established: false,
        reason: error instanceof Error ? error.message : String(error),
      }));
      if (this.#stopping.signal.aborted) return;
      if (end.established && Date.now() - startedMs >= STABLE_SESSION_MS) attempt = 0;
      const delayMs = reconnectDelayMs(attempt, initialDelayMs, maxDelayMs);
      attempt += 1;
      this.#log[end.established ? "warn" : "error"](
        end.established ? "hub session ended; reconnecting" : "cannot connect to hub; retrying",
        { hub: url, why: end.reason, retry_in_ms: delayMs },
      );
      await sleep(delayMs, this.#stopping.signal);
    }
  }

  /** One session: connect, handshake, serve until it ends. */
  async #session(url: string): Promise<{ established: boolean; reason: string }> {
    // Our own client, not the runtime's WebSocket: that one leaves Nagle's algorithm on (see websocket_client.ts).
    const ws = new WebSocketClient(url, {
      protocols: [MUX_SUBPROTOCOL],
      ...(this.#settings.hubCaPem ? { caCerts: [this.#settings.hubCaPem] } : {}),
    });
    const inbox = new WebSocketInbox(ws);
    const abandon = (reason: string) => {
      try {
        ws.close(1000, reason.slice(0, 120));
      } catch {
        // Not open yet or already closed.
      }
      return { established: false, reason };
    };
    const openError = await waitForOpen(ws, HANDSHAKE_STEP_MS);
    if (openError !== null) return abandon(openError);
    const mode = ws.protocol === MUX_SUBPROTOCOL ? "credits" : "legacy";

    ws.send(await this.#settings.tokens.token("handshake"));
    const challenge = expectHubMessage(await inbox.next(HANDSHAKE_STEP_MS), "handshake_challenge");
    if (typeof challenge === "string") return abandon(challenge);
    ws.send(await this.#settings.tokens.token("attest", challenge.nonce));
    if (mode === "credits") {
      // Our hub acknowledges; the original sends nothing and a rejection shows only as a close (§1.2).
      const accepted = expectHubMessage(await inbox.next(HANDSHAKE_STEP_MS), "handshake_accepted");
      if (typeof accepted === "string") return abandon(accepted);
    }

    const session = new MuxSession(ws, {
      label: `hub ${url}`,
      mode,
      log: this.#log,
      maxStreams: this.#settings.maxStreams,
      legacyStreamBufferBytes: this.#settings.legacyStreamBufferBytes,
      heartbeatIntervalMs: mode === "credits" ? this.#settings.heartbeatIntervalMs : 0,
      pendingMessages: inbox.detach(),
      onStreamOpened: (stream, info) => void this.#serve(stream, info),
      onDrain: () => this.#log.info("hub is shutting down: it sends no new streams", { hub: url }),
      onText: (text) => void this.#onText(session, text),
    });
    if (!session.isOpen) return { established: false, reason: "hub closed the session during the handshake" };
    this.#sessions.set(url, session);
    this.#log.info("connected to hub", {
      hub: url,
      protocol: mode === "credits" ? MUX_SUBPROTOCOL : "original",
    });
    this.#onConnected(url);
    const end = await session.closed;
    this.#sessions.delete(url);
    return { established: true, reason: end.reason };
  }

  /** Re-authentication, which an original Go node may ask for (§1.5). */
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

  async #serve(stream: MuxStream, info: StreamOpenInfo): Promise<void> {
    const target = this.#settings.targets.resolve(info.hostname, info.isTls);
    if (target === undefined) {
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
      this.#log.warn("stream refused: cannot reach the local service", {
        host: info.hostname,
        target: `${target.host}:${target.port}`,
        error: error instanceof Error ? error.message : String(error),
      });
      await stream.close("dial failed", { code: "dial_failed" });
      return;
    }
    const splice = new Splice(stream, service);
    this.#splices.set(splice, info);
    this.#sweeper.watch(splice);
    const result = await splice.done;
    this.#splices.delete(splice);
    this.#log.debug("stream closed", { host: info.hostname, client: info.clientAddress, why: result.reason });
  }
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
