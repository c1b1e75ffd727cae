/**
 * The hub's listener: where agents (`/connect`) and peer nodes (`/mesh`) dial in over TLS. It is a public TCP
 * port this code accepts itself, in front of the runtime's TLS server on loopback.
 *
 * Why the gate: Deno's TLS server starts the handshake of every connection it accepts, and closing such a
 * connection does not release its socket until the handshake finishes or the client goes away (measured with
 * Deno 2.9; the runtime waits for the handshake even on close). A client that connects and never speaks would
 * hold a descriptor for ever, and a flood of them would exhaust the node. With the gate the node holds the
 * public socket: every connection has a deadline until it has proven itself (TLS, upgrade and authentication
 * within a few seconds), the phase has a cap shared out per source address, and ending a connection closes
 * its socket at once, which also ends the loopback leg and with it the TLS server's handshake. Accept errors
 * (out of descriptors) never end the listener. The cost is one loopback hop for the hub's bytes.
 *
 * The TLS server on loopback only serves connections the gate made: anything else is closed at once. Its
 * certificate can be replaced while running; new connections get the new one, open ones keep theirs.
 *
 * @module
 */

import { Live } from "../config/live.ts";
import type { EndpointRequest } from "../http/endpoint_request.ts";
import { readEndpointRequest } from "../http/read_endpoint_request.ts";
import type { Logger, RateLimitedLog } from "../log/logger.ts";
import type { Admission, AdmissionTicket } from "../relay/admission.ts";
import { SocketDuplex } from "../stream/socket_duplex.ts";
import type { Duplex } from "../stream/duplex.ts";
import { Splice, SpliceSweeper } from "../stream/splice.ts";
import { acceptLoop } from "../transport/accept_loop.ts";
import { formatAddress } from "../transport/net_address.ts";
import { closeQuietly, type WebSocketConnection } from "../transport/websocket.ts";
import { acceptWebSocket } from "../transport/websocket_accept.ts";

/** Settings of a {@linkcode HubListener}. */
export interface HubListenerSettings {
  readonly hostname: string;
  readonly port: number;
  readonly certPem: string;
  readonly keyPem: string;
  /**
   * Connection caps of the hub port (its own, not the relay's), and the pool of connections that have not
   * sent a byte yet: a flood of silent connections sheds only its own kind.
   */
  readonly admission: Admission;
  /**
   * The pool of connections that have spoken (a ClientHello, at least) and not yet authenticated. No silent
   * connection takes a place here, so an agent that starts its handshake is not pushed out by a flood of
   * connections that never do, however many addresses they come from.
   */
  readonly handshakes: Admission;
  /** From accept to a complete upgrade request (TLS handshake included). */
  readonly upgradeDeadlineMs: number;
  /** From accept to proven (authenticated); the hub's token waits fit inside. */
  readonly proveDeadlineMs: number;
  /** Largest WebSocket message accepted before the peer has proven itself. */
  readonly unprovenMaxMessageBytes: number;
  readonly log: Logger;
  readonly refusals: RateLimitedLog;
}

/** A request read on the hub listener, before any answer. */
export interface HubRequest {
  readonly request: EndpointRequest;
  /** The client's public address, `ip:port`. */
  readonly remoteAddress: string;
  /** Answers with a plain response (`Connection: close`) and ends the connection. */
  respond(status: number, body: string): Promise<void>;
  /**
   * Accepts the WebSocket (`101`). Messages are limited to the unproven size until {@linkcode proven}; the
   * authentication must finish within the prove deadline, or the connection is closed.
   */
  upgrade(options: { protocol?: string; idleTimeoutMs?: number }): Promise<WebSocketConnection>;
  /** The peer has authenticated: it leaves the handshake phase and its deadline. Idempotent. */
  proven(): void;
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};
/** How long a replaced TLS server stays up for the connections the gate already sent it. */
const REPLACED_TLS_SERVER_GRACE_MS = 10_000;
/**
 * Largest read on either leg of the gate: hub links are few and carry every stream's bytes, and each read and
 * write across the loopback leg has its cost, so fewer, bigger ones (node CPU per GiB of a download, medians of
 * three interleaved runs: 5.44 s against 5.71 s with 128 KiB). The buffers start small and grow only while data
 * flows.
 */
const GATE_READ_BYTES = 512 * 1024;
/**
 * How long a gate connection may stay quiet with one side ended: the hub has ended a session and its peer does
 * not close its side (a frozen agent), or the other way round.
 */
const GATE_HALF_CLOSED_MS = 5_000;
/** How long the TLS server waits for the gate to register a connection it accepted. */
const EARLY_ACCEPT_WAIT_MS = 1_000;
const encoder = new TextEncoder();

/**
 * One connection through the gate, from accept until it closes: first the public socket alone while the
 * loopback leg connects, then both spliced. Ending it at any point closes what it holds and frees its slot.
 */
class GatedConnection {
  readonly remoteAddress: string;
  readonly ticket: AdmissionTicket;
  phase: "tls" | "upgraded" | "proven" = "tls";
  deadline: ReturnType<typeof setTimeout> | undefined;
  /** Its place in the pool of connections that have spoken, from its first byte until it is proven. */
  speaking: AdmissionTicket | null = null;
  /** Resolves once the connection has ended and its slot is free. */
  readonly done: Promise<void>;
  readonly #conn: Deno.TcpConn;
  readonly #connecting = new AbortController();
  #splice: Splice | null = null;
  #ended = false;
  #resolveDone!: () => void;

  constructor(conn: Deno.TcpConn, remoteAddress: string, ticket: AdmissionTicket) {
    this.#conn = conn;
    this.remoteAddress = remoteAddress;
    this.ticket = ticket;
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
    void this.done.then(() => {
      clearTimeout(this.deadline);
      ticket.release();
      this.speaking?.release();
    });
  }

  /** Aborts the loopback connect when the connection ends first. */
  get signal(): AbortSignal {
    return this.#connecting.signal;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /**
   * The loopback leg is up: splice it to the public socket, watched by `sweeper`; `onFirstBytes` hears of
   * the client's first bytes. False (and `loopback` closed) if the connection has already ended.
   */
  forward(loopback: Deno.TcpConn, sweeper: SpliceSweeper, onFirstBytes: () => void): boolean {
    if (this.#ended) {
      closeQuietly(loopback);
      return false;
    }
    const client = new SocketDuplex(this.#conn, `hub client ${this.remoteAddress}`, {
      maxReadBytes: GATE_READ_BYTES,
    });
    this.#splice = new Splice(
      firstBytesHeard(client, onFirstBytes),
      new SocketDuplex(loopback, "hub TLS server", { maxReadBytes: GATE_READ_BYTES }),
    );
    // A side that ended while the other never does (a frozen agent) must not hold the sockets for good.
    sweeper.watch(this.#splice);
    void this.#splice.done.then(() => {
      this.#ended = true;
      this.#resolveDone();
    });
    return true;
  }

  /** Ends the connection now: both sockets close, which also ends the TLS server's side. Idempotent. */
  end(why: string): void {
    if (this.#splice !== null) {
      this.#splice.abort(why);
      return;
    }
    if (this.#ended) return;
    this.#ended = true;
    this.#connecting.abort();
    closeQuietly(this.#conn);
    this.#resolveDone();
  }
}

/** `duplex`, telling `onFirstBytes` once when its first bytes are read. */
function firstBytesHeard(duplex: Duplex, onFirstBytes: () => void): Duplex {
  let heard = false;
  return {
    label: duplex.label,
    unsignalledEndTimeoutMs: duplex.unsignalledEndTimeoutMs,
    read: async () => {
      const chunk = await duplex.read();
      if (!heard && chunk !== null && chunk.length > 0) {
        heard = true;
        onFirstBytes();
      }
      return chunk;
    },
    write: (chunk) => duplex.write(chunk),
    closeWrite: () => duplex.closeWrite(),
    close: (reason, options) => duplex.close(reason, options),
  };
}

/** The TLS server on loopback that the gate forwards to. */
interface TlsServer {
  readonly listener: Deno.TlsListener;
  readonly port: number;
}

/** The hub's listener. */
export class HubListener {
  readonly #settings: Live<HubListenerSettings>;
  readonly #handle: (request: HubRequest) => Promise<void>;
  #public: Deno.TcpListener | null = null;
  #tls: TlsServer | null = null;
  readonly #retired = new Set<TlsServer>();
  /** Gated connections by the gate's end of their loopback leg (`127.0.0.1:port`): how the TLS server sees them. */
  readonly #byLoopbackLeg = new Map<string, GatedConnection>();
  /** Loopback legs of gate connections that ended before the TLS server accepted them: closed without a word. */
  readonly #endedLegs = new Set<string>();
  /** Ends gate connections left half-closed (one side gone, the other never closing). */
  readonly #sweeper = new SpliceSweeper({ idleTimeoutMs: 0, halfClosedTimeoutMs: GATE_HALF_CLOSED_MS });
  /** Every connection through the gate, those still connecting their loopback leg included. */
  readonly #open = new Set<GatedConnection>();
  /** Connections the TLS server accepted before the gate had registered them (see #serveTls). */
  readonly #early = new Map<string, { conn: Deno.TlsConn; timer: ReturnType<typeof setTimeout> }>();
  readonly #handlers = new Set<Promise<void>>();
  /** The accept loops; each ends once its listener is closed and its port free again. */
  readonly #acceptLoops = new Set<Promise<void>>();
  #closed = false;

  constructor(
    settings: HubListenerSettings | Live<HubListenerSettings>,
    handle: (request: HubRequest) => Promise<void>,
  ) {
    this.#settings = Live.of(settings);
    this.#handle = handle;
  }

  /** Binds the public port and the loopback TLS server; throws with the reason when either cannot start. */
  listen(): void {
    const { hostname, port } = this.#settings.current;
    this.#tls = this.#startTlsServer(this.#settings.current.certPem, this.#settings.current.keyPem);
    try {
      this.#public = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (error) {
      this.#tls.listener.close();
      throw error;
    }
    const publicListener = this.#public;
    this.#acceptLoops.add(acceptLoop(publicListener, (conn) => this.#gate(conn), (error, retryInMs) => {
      this.#settings.current.refusals.event("hub_accept_error", "hub accept failed", {
        error: describe(error),
        retry_in_ms: retryInMs,
      });
    }));
  }

  /** The public address (port 0 in the config picks a free port). */
  get address(): Deno.NetAddr {
    if (this.#public === null) throw new Error("The hub listener is not listening");
    return this.#public.addr as Deno.NetAddr;
  }

  /** Connections through the gate right now, proven or not. */
  get connections(): number {
    return this.#open.size;
  }

  /**
   * Serves new connections with another certificate; open connections keep the one they have. Throws (and
   * changes nothing) when the certificate or key cannot be used.
   */
  replaceCertificate(certPem: string, keyPem: string): void {
    const next = this.#startTlsServer(certPem, keyPem);
    const previous = this.#tls;
    this.#tls = next;
    if (previous === null) return;
    // Connections the gate already sent to the old server may still wait in its accept queue.
    this.#retired.add(previous);
    const timer = setTimeout(() => {
      this.#retired.delete(previous);
      closeListener(previous.listener);
    }, REPLACED_TLS_SERVER_GRACE_MS);
    Deno.unrefTimer(timer);
  }

  /** Stops accepting; connections already through the gate go on. */
  stopAccepting(): void {
    if (this.#public !== null) closeListener(this.#public);
  }

  /** Stops accepting and ends every connection still open through the gate. */
  async close(): Promise<void> {
    this.#closed = true;
    this.stopAccepting();
    for (const server of [this.#tls, ...this.#retired]) if (server !== null) closeListener(server.listener);
    this.#retired.clear();
    for (const gated of this.#open) gated.end("hub closing");
    this.#sweeper.close();
    await Promise.allSettled([
      ...this.#handlers,
      ...[...this.#open].map((gated) => gated.done),
    ]);
  }

  #startTlsServer(certPem: string, keyPem: string): TlsServer {
    const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: certPem, key: keyPem });
    const server: TlsServer = { listener, port: (listener.addr as Deno.NetAddr).port };
    const loop = acceptLoop(listener, (conn) => this.#serveTls(conn), (error, retryInMs) => {
      this.#settings.current.refusals.event("hub_accept_error", "hub TLS accept failed", {
        error: describe(error),
        retry_in_ms: retryInMs,
      });
    });
    this.#acceptLoops.add(loop);
    void loop.finally(() => this.#acceptLoops.delete(loop));
    return server;
  }

  /** A public connection: admit it, give it its deadlines, and forward it to the TLS server. */
  #gate(conn: Deno.TcpConn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const remoteAddress = formatAddress(remote);
    let gated: GatedConnection | null = null;
    const shed = () => {
      this.#settings.current.refusals.event(
        "hub_handshake_shed",
        "hub connection shed: its slot went to a newer one",
        {
          remote: remoteAddress,
        },
      );
      gated?.end("shed");
    };
    const ticket = this.#settings.current.admission.admit(remote.hostname, { shed });
    if (typeof ticket === "string") {
      this.#settings.current.refusals.event(`hub_${ticket}`, "hub connection refused: limit reached", {
        limit: ticket,
        remote: remoteAddress,
      });
      closeQuietly(conn);
      return;
    }
    const tls = this.#tls;
    if (tls === null || this.#closed) {
      ticket.release();
      closeQuietly(conn);
      return;
    }
    const entry = new GatedConnection(conn, remoteAddress, ticket);
    gated = entry;
    this.#open.add(entry);
    void entry.done.then(() => this.#open.delete(entry));
    // The deadline runs from accept: a loopback connect that waits (a full accept queue) counts too.
    this.#deadline(entry, this.#settings.current.upgradeDeadlineMs, "no complete WebSocket upgrade in time");
    conn.setNoDelay(true);
    // From its first byte on, a connection leaves the pool of silent ones for the pool of those that spoke.
    const spoke = () => {
      if (entry.ended || entry.phase === "proven") return;
      const speaking = this.#settings.current.handshakes.admit(remote.hostname, { shed });
      if (typeof speaking === "string") return entry.end(`refused: ${speaking}`);
      entry.speaking = speaking;
      ticket.handshakeDone();
    };
    const connecting = Deno.connect({ hostname: "127.0.0.1", port: tls.port, signal: entry.signal }).then(
      (loopback) => {
        loopback.setNoDelay(true);
        const leg = formatAddress(loopback.localAddr as Deno.NetAddr);
        if (!entry.forward(loopback, this.#sweeper, spoke)) return;
        this.#byLoopbackLeg.set(leg, entry);
        void entry.done.then(() => {
          if (this.#byLoopbackLeg.get(leg) === entry) this.#byLoopbackLeg.delete(leg);
          this.#rememberEnded(leg);
        });
        const early = this.#early.get(leg);
        if (early !== undefined) {
          this.#early.delete(leg);
          clearTimeout(early.timer);
          this.#serveGated(early.conn, entry);
        }
      },
      (error) => {
        if (!entry.ended) {
          // Out of descriptors for the loopback leg, most likely: refuse this one, the listener goes on.
          this.#settings.current.refusals.event(
            "hub_loopback_failed",
            "hub connection refused: cannot reach its TLS server",
            {
              remote: remoteAddress,
              error: describe(error),
            },
          );
        }
        entry.end("loopback connect failed");
      },
    );
    this.#track(connecting);
  }

  /** For a moment, the TLS server may still accept the leg of a connection the gate has already ended. */
  #rememberEnded(leg: string): void {
    this.#endedLegs.add(leg);
    const timer = setTimeout(() => this.#endedLegs.delete(leg), EARLY_ACCEPT_WAIT_MS);
    Deno.unrefTimer(timer);
  }

  #deadline(gated: GatedConnection, ms: number, why: string): void {
    clearTimeout(gated.deadline);
    gated.deadline = setTimeout(() => {
      this.#settings.current.refusals.event(
        "hub_handshake_timeout",
        "hub connection closed: deadline passed",
        {
          remote: gated.remoteAddress,
          why,
        },
      );
      gated.end(why);
    }, ms);
  }

  /** A connection on the loopback TLS server: find whom the gate sent, read the request, hand it on. */
  #serveTls(conn: Deno.TlsConn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const leg = formatAddress(remote);
    const gated = remote.hostname === "127.0.0.1" ? this.#byLoopbackLeg.get(leg) : undefined;
    if (gated !== undefined) return this.#serveGated(conn, gated);
    // The accept may come before the gate's connect has resolved: wait a moment for the gate to name it.
    const early = {
      conn,
      timer: setTimeout(() => {
        if (this.#early.get(leg) === early) this.#early.delete(leg);
        closeQuietly(conn);
        // The leg of a gate connection already shed or past its deadline needs no word. Anything else was a
        // local process dialling the loopback port directly (Deno's TLS server keeps such a socket until that
        // process lets go; only local processes can reach the port).
        if (this.#endedLegs.has(leg)) return;
        this.#settings.current.refusals.event(
          "hub_loopback_stray",
          "hub TLS server: a local connection not from the gate closed",
          {
            remote: leg,
          },
        );
      }, EARLY_ACCEPT_WAIT_MS),
    };
    const previous = this.#early.get(leg);
    if (previous !== undefined) {
      clearTimeout(previous.timer);
      closeQuietly(previous.conn);
    }
    this.#early.set(leg, early);
  }

  #serveGated(conn: Deno.TlsConn, gated: GatedConnection): void {
    this.#track(
      this.#serveRequest(conn, gated).catch((error) => {
        this.#settings.current.log.warn("hub connection failed", {
          remote: gated.remoteAddress,
          error: describe(error),
        });
        closeQuietly(conn);
      }),
    );
  }

  async #serveRequest(conn: Deno.TlsConn, gated: GatedConnection): Promise<void> {
    try {
      await conn.handshake();
    } catch (error) {
      // After the gate ended the connection (shed, deadline), the failure is only its echo.
      if (!gated.ended) {
        this.#settings.current.refusals.event("hub_tls_failed", "hub TLS handshake failed", {
          remote: gated.remoteAddress,
          error: describe(error),
        });
      }
      closeQuietly(conn);
      return;
    }
    const head = await readEndpointRequest(conn);
    if (head === null) {
      closeQuietly(conn);
      return;
    }
    if (head.result.kind !== "request") {
      const status = head.result.kind === "too_large" ? 431 : 400;
      const why = head.result.kind === "bad_request" ? head.result.reason : "request head too large";
      this.#settings.current.refusals.event("hub_bad_request", "hub request refused", {
        remote: gated.remoteAddress,
        why,
      });
      await respond(conn, status, `${why}\n`);
      return;
    }
    const { request, headLength } = head.result;
    const leftover = head.bytes.slice(headLength);
    let answered = false;
    await this.#handle({
      request,
      remoteAddress: gated.remoteAddress,
      respond: (status, body) => {
        answered = true;
        return respond(conn, status, body);
      },
      upgrade: async (options) => {
        answered = true;
        gated.phase = "upgraded";
        this.#deadline(
          gated,
          this.#settings.current.proveDeadlineMs - this.#settings.current.upgradeDeadlineMs,
          "not authenticated in time",
        );
        return await acceptWebSocket(conn, request, leftover, {
          ...options,
          maxMessageBytes: this.#settings.current.unprovenMaxMessageBytes,
        });
      },
      proven: () => {
        if (gated.phase === "proven") return;
        gated.phase = "proven";
        clearTimeout(gated.deadline);
        gated.ticket.handshakeDone();
        gated.speaking?.handshakeDone();
      },
    });
    if (!answered) await respond(conn, 404, "Not found\n");
  }

  #track(work: Promise<void>): void {
    this.#handlers.add(work);
    void work.finally(() => this.#handlers.delete(work));
  }
}

/** Writes a plain response and closes the connection. */
async function respond(conn: Deno.Conn, status: number, body: string): Promise<void> {
  const bodyBytes = encoder.encode(body);
  const head =
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${bodyBytes.length}\r\nConnection: close\r\n\r\n`;
  const bytes = new Uint8Array([...encoder.encode(head), ...bodyBytes]);
  try {
    for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
  } catch {
    // The client is gone; nothing to answer.
  } finally {
    closeQuietly(conn);
  }
}

function closeListener(listener: Deno.Listener): void {
  try {
    listener.close();
  } catch {
    // Already closed.
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
