/**
 * One lifecycle for every link a Nexus process keeps: the agent's sessions to its hubs, the node's links to
 * its peers (dialled or accepted) and the hub's backend sessions. Dial or accept, handshake, session,
 * register, await the end, unregister; and for the links this side dials, back off and dial again, with one
 * rule for when the backoff starts over.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import type { Logger } from "../log/logger.ts";
import type { MuxSession, SessionEnd } from "../mux/session.ts";
import { waitForOpen } from "../transport/inbox.ts";
import { WebSocketClient, type WebSocketClientOptions } from "../transport/websocket_client.ts";
import { reconnectDelayMs, sleep } from "./reconnect.ts";

/** Why a dial produced no session. */
export interface LinkFailure {
  readonly reason: string;
  /**
   * The other side refused for a reason that cannot heal by itself (a wrong secret, a name it forbids): dial
   * again only at the slowest pace, so a misconfigured agent does not hammer its hub.
   */
  readonly permanent?: boolean;
}

/** Registers a session while it is up. */
export interface LinkHooks {
  /** The session is established: make it usable (pools, routes, status). */
  up(session: MuxSession): void;
  /** The session ended: forget it. */
  down(session: MuxSession, end: SessionEnd): void;
}

/** Holds an established session registered until it ends; resolves with how it ended. */
export async function holdLink(session: MuxSession, hooks: LinkHooks): Promise<SessionEnd> {
  hooks.up(session);
  const end = await session.closed;
  hooks.down(session, end);
  return end;
}

/** Pacing of a dialled link's attempts. */
export interface ReconnectPolicy {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** A session that lived this long starts the backoff over: its first redial waits the initial delay. */
  readonly stableAfterMs: number;
}

/** How long to wait before dial number `attempt` + 1 after one that ended as described. */
export class Backoff {
  readonly #policy: Live<ReconnectPolicy>;
  #attempt = 0;

  constructor(policy: ReconnectPolicy | Live<ReconnectPolicy>) {
    this.#policy = Live.of(policy);
  }

  /**
   * The delay after an attempt: `establishedForMs` is how long its session lived (null: none was
   * established). A stable session resets the count before the delay is computed, so a link that dies after
   * a day waits as little as one that never failed; a permanent refusal waits the longest.
   */
  next(outcome: { establishedForMs: number | null; permanent?: boolean }, random = Math.random): number {
    const { initialDelayMs, maxDelayMs, stableAfterMs } = this.#policy.current;
    if (outcome.establishedForMs !== null && outcome.establishedForMs >= stableAfterMs) this.#attempt = 0;
    const attempt = outcome.permanent ? Infinity : this.#attempt;
    this.#attempt += 1;
    return reconnectDelayMs(attempt, initialDelayMs, maxDelayMs, random);
  }
}

/** What a dialled link needs: how to establish one session, and what to do with it. */
export interface DialledLinkOptions extends LinkHooks {
  /** What is dialled, for logs: a hub or peer URL. */
  readonly target: string;
  /** `hub` or `peer`: the words of the log lines. */
  readonly kind: string;
  /** `agent` or `node`: what this side is, in the log lines. */
  readonly self: string;
  readonly reconnect: ReconnectPolicy | Live<ReconnectPolicy>;
  /**
   * Asks for a new session beside the one held (the agent re-registers with new names): once it is
   * established it is registered (`up`), and the old one is handed to `retire`, which ends it when its
   * streams have ended; `down` follows for it then. A new session that cannot be established leaves the old
   * one as it is, and is retried with the backoff.
   */
  readonly renewal?: LinkRenewal;
  retire?(session: MuxSession): Promise<SessionEnd>;
  /** Aborted when the process stops: no more dials, and the wait between them ends at once. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** Dials and completes the handshake: an open session, or why there is none. */
  establish(): Promise<MuxSession | LinkFailure>;
  /** Checked after every attempt: true ends the loop (the mesh found its own URL among its peers). */
  giveUp?(): boolean;
  /**
   * Whether why a session ended says it can never succeed as configured (an original Go node refuses a
   * token only by closing a session that looked established): the next dial then waits the longest.
   */
  cannotHeal?(why: string): boolean;
  /** An attempt starts (for status). */
  attempting?(): void;
  /** A new session asked for by `renewal` could not be established: the held one stays, and it is retried. */
  renewalFailed?(why: string): void;
  /** An attempt failed or a session ended: the next dial comes after `delayMs` (for status). */
  waiting?(why: string, delayMs: number, permanent: boolean): void;
}

/** Keeps one dialled link up until `signal` aborts: establish, hold, back off, again. */
export async function runDialledLink(options: DialledLinkOptions): Promise<void> {
  const backoff = new Backoff(options.reconnect);
  const { log, target, kind, signal } = options;
  while (!signal.aborted) {
    options.attempting?.();
    const outcome = await options.establish().catch((error): LinkFailure => ({ reason: describe(error) }));
    if (signal.aborted) {
      if (!("reason" in outcome)) outcome.close(1000, "shutting down");
      return;
    }
    let establishedForMs: number | null = null;
    let why: string;
    if ("reason" in outcome) {
      why = outcome.reason;
    } else {
      const startedMs = Date.now();
      const end = options.renewal === undefined
        ? await holdLink(outcome, options)
        : await holdRenewing(outcome, options, options.renewal);
      establishedForMs = Date.now() - startedMs;
      why = end.reason;
    }
    if (signal.aborted || options.giveUp?.()) return;
    const permanent = ("permanent" in outcome && outcome.permanent === true) ||
      options.cannotHeal?.(why) === true;
    const delayMs = backoff.next({ establishedForMs, permanent });
    const fields = { [kind]: target, why, retry_in_ms: delayMs };
    if (permanent) {
      log.error(
        `the ${kind} refused this ${options.self} for a reason that cannot heal: fix the token or the node's ` +
          "configuration; retrying at the slowest backoff",
        fields,
      );
    } else if (establishedForMs !== null) log.warn(`${kind} session ended; reconnecting`, fields);
    else log.error(`cannot connect to ${kind}; retrying`, fields);
    options.waiting?.(why, delayMs, permanent);
    await sleep(delayMs, signal);
  }
}

/**
 * Requests for a dialled link to move to a new session. A request stays pending until it is taken, so a
 * wait given up (a retry's backoff that ended first) loses none; requests made before one is taken count once.
 */
export class LinkRenewal {
  #pending = false;
  /** One wait for the next request, shared by every caller: waits given up pile nothing up. */
  #asked: { readonly promise: Promise<void>; readonly wake: () => void } | null = null;

  /** Asks for a new session. */
  request(): void {
    this.#pending = true;
    this.#asked?.wake();
    this.#asked = null;
  }

  /** Resolves once a request is pending (at once when one is), without taking it. */
  asked(): Promise<void> {
    if (this.#pending) return Promise.resolve();
    if (this.#asked === null) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#asked = { promise, wake: resolve };
    }
    return this.#asked.promise;
  }

  /** Takes the pending request: whether there was one. */
  take(): boolean {
    const pending = this.#pending;
    this.#pending = false;
    return pending;
  }
}

/**
 * Holds a session like {@linkcode holdLink}, and on each renewal request establishes its successor beside it,
 * registers that and retires the old one: streams on the old session go on until they end. Resolves with how
 * the session held last ended.
 */
async function holdRenewing(
  first: MuxSession,
  options: DialledLinkOptions,
  renewal: LinkRenewal,
): Promise<SessionEnd> {
  let session = first;
  options.up(session);
  for (;;) {
    const event = await Promise.race([session.closed, renewal.asked().then(() => null)]);
    if (event !== null) {
      options.down(session, event);
      return event;
    }
    renewal.take();
    if (options.signal.aborted) continue;
    const successor = await establishSuccessor(session, options, renewal);
    if (successor === null) continue;
    if (options.signal.aborted || !session.isOpen) {
      // Stopping, or the old session ended meanwhile: the successor simply takes its place.
      if (options.signal.aborted) successor.close(1000, "shutting down");
      else {
        options.down(session, await session.closed);
        session = successor;
        options.up(session);
      }
      continue;
    }
    const retired = session;
    session = successor;
    options.up(session);
    const retire = options.retire ?? ((old: MuxSession) => {
      old.close(1000, "replaced by a new session");
      return old.closed;
    });
    void retire(retired).then((end) => options.down(retired, end));
  }
}

/**
 * Establishes the successor of `session`, retrying with the link's backoff until one is established (null:
 * the process stops or `session` ends first, and the redial that follows uses the settings in force). A new
 * renewal request retries at once: the reload that fixed a refused token need not wait for the backoff.
 */
async function establishSuccessor(
  session: MuxSession,
  options: DialledLinkOptions,
  renewal: LinkRenewal,
): Promise<MuxSession | null> {
  const backoff = new Backoff(options.reconnect);
  while (!options.signal.aborted && session.isOpen) {
    const outcome = await options.establish().catch((error): LinkFailure => ({ reason: describe(error) }));
    if (!("reason" in outcome)) return outcome;
    const permanent = outcome.permanent === true || options.cannotHeal?.(outcome.reason) === true;
    const delayMs = backoff.next({ establishedForMs: null, permanent });
    options.log.warn(`cannot open a new ${options.kind} session; the current one stays, retrying`, {
      [options.kind]: options.target,
      why: outcome.reason,
      retry_in_ms: delayMs,
    });
    options.renewalFailed?.(outcome.reason);
    await Promise.race([sleep(delayMs, options.signal), renewal.asked(), session.closed]);
    renewal.take();
  }
  return null;
}

/**
 * Dials a WebSocket and waits until it is open (our client: `TCP_NODELAY`, one write per turn), giving the
 * attempt up when `signal` aborts or `timeoutMs` passes. On failure the socket is closed, never leaked.
 */
export async function dialWebSocket(
  url: string,
  options: WebSocketClientOptions,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<WebSocketClient | LinkFailure> {
  const ws = new WebSocketClient(url, options);
  // Shutdown must not wait for a dial to a peer that does not answer.
  const abandon = () => ws.close(1000, "shutting down");
  signal.addEventListener("abort", abandon);
  const openError = await waitForOpen(ws, timeoutMs);
  signal.removeEventListener("abort", abandon);
  if (openError === null) return ws;
  // After a timeout the WebSocket is still connecting: give its socket up rather than leak it.
  ws.close();
  return { reason: openError };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
