/**
 * The admin listener of a node or an agent: `/healthz`, `/readyz`, `/metrics`, `/status` and the status page
 * at `/`, over plain HTTP/1.1 on an address of its own (off by default).
 *
 * It does not use `Deno.serve`, whose accept errors (out of descriptors) end the process: it accepts with the
 * project's accept loop, which backs off and goes on, reads each request head with the strict endpoint parser,
 * gives every connection a deadline from accept, and closes it after one response (`Connection: close`; the
 * page polls every 2 s, a new connection each time costs less than keeping idle ones). Connections waiting for
 * their request head share a bounded pool ({@linkcode Admission}): past it the oldest waiting one of the
 * heaviest source is closed, so a slow client cannot lock Prometheus out.
 *
 * With a token, every route but `/healthz` and the page itself (a static file holding no data, which asks for
 * the token and sends it with each `/status` request) needs `Authorization: Bearer <token>`, compared in
 * constant time.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { type EndpointRequest, singleHeader } from "../http/endpoint_request.ts";
import { readEndpointRequest } from "../http/read_endpoint_request.ts";
import type { Logger, RateLimitedLog } from "../log/logger.ts";
import { EXPOSITION_CONTENT_TYPE } from "../metrics/exposition.ts";
import { Admission } from "../relay/admission.ts";
import { acceptLoop } from "../transport/accept_loop.ts";
import { formatAddress } from "../transport/net_address.ts";
import { STATUS_PAGE } from "./status_page.ts";
import type { AdminSettings } from "../config/admin_keys.ts";
import { Live } from "../config/live.ts";
import type { ReloadReport } from "../config/reloader.ts";

/** What the admin listener shows: the node's or the agent's own state, read at each request. */
export interface AdminView {
  /** `null` when ready to take traffic, else why not (the body of the 503). */
  readiness(): string | null;
  /** The metrics in the text exposition format. */
  metrics(): string;
  /** The status document (`/status`), JSON-serialisable. */
  status(): unknown;
  /** Re-reads the config file (`POST /reload`); absent: no such route. */
  reload?(): Promise<ReloadReport>;
}

/** Settings of an {@linkcode AdminListener}. */
export interface AdminListenerSettings {
  readonly hostname: string;
  readonly port: number;
  /** The bearer token; absent: none needed. */
  readonly token?: Uint8Array;
  readonly view: AdminView;
  readonly log: Logger;
  /** Refused and shed admin connections are counted there (`admin_*` kinds). */
  readonly refusals: RateLimitedLog;
  /** From accept to the end of the response; default {@linkcode ADMIN_DEADLINE_MS}. */
  readonly deadlineMs?: number;
  /** Connection caps; default {@linkcode ADMIN_LIMITS}. */
  readonly limits?: ConstructorParameters<typeof Admission>[0];
}

/** A connection must have sent its request and read its answer within this time of accept. */
export const ADMIN_DEADLINE_MS = 10_000;
/**
 * Admin connections open at once, and of those still sending their request head, overall and per source: a
 * scraper and a few browsers need a handful.
 */
export const ADMIN_LIMITS = {
  maxConnections: 64,
  maxConnectionsPerIp: 64,
  maxHandshakes: 32,
  maxHandshakesPerIp: 16,
} as const;

/** A response before it is written. */
export interface AdminResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  422: "Unprocessable Content",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};
const TEXT = "text/plain; charset=utf-8";
const encoder = new TextEncoder();

/** SHA-256 of a token, so that tokens of any length compare in the same time. */
function tokenDigest(token: Uint8Array): Uint8Array {
  return createHash("sha256").update(token).digest();
}

/** `401` with the reason and the scheme a client should use. */
function unauthorized(refusal: string): AdminResponse {
  return {
    status: 401,
    contentType: TEXT,
    body: `${refusal}\n`,
    headers: { "WWW-Authenticate": 'Bearer realm="nexus admin"' },
  };
}

/**
 * The answer to one request, given the view and the token's digest (`null`: no token). Pure but for the
 * view's reads.
 */
function answerAdminRequest(
  request: EndpointRequest,
  view: AdminView,
  expectedTokenDigest: Uint8Array | null,
): AdminResponse {
  if (request.path === "/reload") {
    return { status: 405, contentType: TEXT, body: "only POST\n", headers: { Allow: "POST" } };
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return { status: 405, contentType: TEXT, body: "only GET and HEAD\n", headers: { Allow: "GET, HEAD" } };
  }
  switch (request.path) {
    case "/healthz":
      return { status: 200, contentType: TEXT, body: "ok\n" };
    case "/":
      return {
        status: 200,
        contentType: "text/html; charset=utf-8",
        body: STATUS_PAGE.html,
        headers: {
          "Content-Security-Policy": STATUS_PAGE.contentSecurityPolicy,
          "X-Frame-Options": "DENY",
          "Referrer-Policy": "no-referrer",
        },
      };
    case "/readyz":
    case "/metrics":
    case "/status":
      break;
    default:
      return { status: 404, contentType: TEXT, body: "not found\n" };
  }
  const refusal = authorizationRefusal(request, expectedTokenDigest);
  if (refusal !== null) return unauthorized(refusal);
  switch (request.path) {
    case "/readyz": {
      const notReady = view.readiness();
      return notReady === null
        ? { status: 200, contentType: TEXT, body: "ready\n" }
        : { status: 503, contentType: TEXT, body: `not ready: ${notReady}\n` };
    }
    case "/metrics":
      return { status: 200, contentType: EXPOSITION_CONTENT_TYPE, body: view.metrics() };
    default:
      return {
        status: 200,
        contentType: "application/json; charset=utf-8",
        body: JSON.stringify(view.status()),
      };
  }
}

/** Why a request is not authorized, or null when it is (or no token is set). */
function authorizationRefusal(request: EndpointRequest, expectedDigest: Uint8Array | null): string | null {
  if (expectedDigest === null) return null;
  const header = singleHeader(request, "authorization");
  if (header === undefined) return "this admin listener needs Authorization: Bearer <token>";
  const presented = /^Bearer +(\S+)$/i.exec(header)?.[1];
  if (presented === undefined) return "the Authorization header must be Bearer <token>";
  return timingSafeEqual(tokenDigest(encoder.encode(presented)), expectedDigest) ? null : "wrong token";
}

/** The response's bytes: head and body (no body for HEAD), `Connection: close`. */
function encodeResponse(response: AdminResponse, withBody: boolean): Uint8Array {
  const body = encoder.encode(response.body);
  let head = `HTTP/1.1 ${response.status} ${STATUS_TEXT[response.status] ?? "Error"}\r\n` +
    `Content-Type: ${response.contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n` +
    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  for (const [name, value] of Object.entries(response.headers ?? {})) head += `${name}: ${value}\r\n`;
  const headBytes = encoder.encode(head + "\r\n");
  const bytes = new Uint8Array(headBytes.length + (withBody ? body.length : 0));
  bytes.set(headBytes);
  if (withBody) bytes.set(body, headBytes.length);
  return bytes;
}

/** The admin listener. */
export class AdminListener {
  readonly #settings: AdminListenerSettings;
  /** The token's digest, replaced when a reload changes the token on the same address. */
  readonly #tokenDigest: Live<Uint8Array | null>;
  readonly #admission: Admission;
  #listener: Deno.TcpListener | null = null;
  #acceptLoop: Promise<void> = Promise.resolve();
  readonly #open = new Set<Deno.Conn>();
  readonly #handlers = new Set<Promise<void>>();

  constructor(settings: AdminListenerSettings) {
    this.#settings = settings;
    this.#tokenDigest = new Live(settings.token === undefined ? null : tokenDigest(settings.token));
    this.#admission = new Admission(settings.limits ?? ADMIN_LIMITS);
  }

  /** Binds the address; throws naming it when it cannot. */
  listen(): void {
    const { hostname, port } = this.#settings;
    try {
      this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (error) {
      throw new Error(`Cannot start the admin listener on ${hostname}:${port}: ${describe(error)}`);
    }
    this.#settings.log.info("admin listening", {
      address: formatAddress(this.address),
      token: this.#tokenDigest.current !== null,
    });
    this.#acceptLoop = acceptLoop(this.#listener, (conn) => this.#accept(conn), (error, retryInMs) => {
      this.#settings.refusals.event("admin_accept_error", "admin accept failed", {
        error: describe(error),
        retry_in_ms: retryInMs,
      });
    });
  }

  /** The bound address (port 0 picks a free one). */
  get address(): Deno.NetAddr {
    if (this.#listener === null) throw new Error("The admin listener is not listening");
    return this.#listener.addr as Deno.NetAddr;
  }

  /** Guards every route from now on with `token` (absent: none), as a reload of the same address asks. */
  setToken(token: Uint8Array | undefined): void {
    this.#tokenDigest.set(token === undefined ? null : tokenDigest(token));
  }

  /**
   * Stops accepting and resolves once the requests in progress are answered (a reload moved the listener;
   * the request that asked for the reload gets its answer). Idempotent.
   */
  async retire(): Promise<void> {
    try {
      this.#listener?.close();
    } catch {
      // Already closed.
    }
    await Promise.allSettled([this.#acceptLoop, ...this.#handlers]);
  }

  /** Stops accepting, ends open connections, and resolves once the port is free. Idempotent. */
  async close(): Promise<void> {
    try {
      this.#listener?.close();
    } catch {
      // Already closed.
    }
    for (const conn of this.#open) closeQuietly(conn);
    await Promise.allSettled([this.#acceptLoop, ...this.#handlers]);
  }

  #accept(conn: Deno.TcpConn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const ticket = this.#admission.admit(remote.hostname, {
      shed: () => {
        this.#settings.refusals.event("admin_shed", "admin connection shed: its slot went to a newer one", {
          remote: formatAddress(remote),
        });
        closeQuietly(conn);
      },
    });
    if (typeof ticket === "string") {
      this.#settings.refusals.event(`admin_${ticket}`, "admin connection refused: limit reached", {
        remote: formatAddress(remote),
      });
      closeQuietly(conn);
      return;
    }
    this.#open.add(conn);
    const deadline = setTimeout(() => closeQuietly(conn), this.#settings.deadlineMs ?? ADMIN_DEADLINE_MS);
    const handler = this.#serve(conn, () => ticket.handshakeDone())
      .catch((error) => {
        this.#settings.log.warn("admin request failed", {
          remote: formatAddress(remote),
          error: describe(error),
        });
      })
      .finally(() => {
        clearTimeout(deadline);
        closeQuietly(conn);
        this.#open.delete(conn);
        ticket.release();
      });
    this.#handlers.add(handler);
    void handler.finally(() => this.#handlers.delete(handler));
  }

  /** `POST /reload` with the token: the reload's report as JSON, 200 when it succeeded, 422 when not. */
  async #answerReload(request: EndpointRequest): Promise<AdminResponse> {
    const view = this.#settings.view;
    if (view.reload === undefined) return { status: 404, contentType: TEXT, body: "not found\n" };
    const refusal = authorizationRefusal(request, this.#tokenDigest.current);
    if (refusal !== null) return unauthorized(refusal);
    const report = await view.reload();
    return {
      status: report.result === "ok" ? 200 : 422,
      contentType: "application/json; charset=utf-8",
      body: `${JSON.stringify({ ...report, at: new Date(report.atMs).toISOString() })}\n`,
    };
  }

  async #serve(conn: Deno.TcpConn, headRead: () => void): Promise<void> {
    const head = await readEndpointRequest(conn);
    if (head === null) return;
    const { result } = head;
    headRead();
    let response: AdminResponse;
    let withBody = true;
    if (result.kind === "request") {
      withBody = result.request.method !== "HEAD";
      try {
        response = result.request.path === "/reload" && result.request.method === "POST"
          ? await this.#answerReload(result.request)
          : answerAdminRequest(result.request, this.#settings.view, this.#tokenDigest.current);
      } catch (error) {
        this.#settings.log.error("admin view failed", { path: result.request.path, error: describe(error) });
        response = { status: 500, contentType: TEXT, body: "internal error\n" };
      }
    } else {
      response = result.kind === "too_large"
        ? { status: 431, contentType: TEXT, body: "request head too large\n" }
        : {
          status: 400,
          contentType: TEXT,
          body: `${result.kind === "bad_request" ? result.reason : "bad request"}\n`,
        };
    }
    const bytes = encodeResponse(response, withBody);
    for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
  }
}

/**
 * The admin listener a reload leaves in force, going from settings `from` to `to` (`undefined`: none): the
 * same address takes the new token; another address is bound first (`make` builds the listener), and the
 * old listener then stops accepting and answers what it has, the `POST /reload` that asked included. When
 * the new address cannot be bound, `problem` says so and the old listener stays as it was.
 */
export function moveAdminListener(
  current: AdminListener | null,
  from: AdminSettings | undefined,
  to: AdminSettings | undefined,
  make: (settings: AdminSettings) => AdminListener,
): { listener: AdminListener | null; problem: string | null } {
  if (
    current !== null && from !== undefined && to !== undefined && from.hostname === to.hostname &&
    from.port === to.port
  ) {
    current.setToken(to.token);
    return { listener: current, problem: null };
  }
  let next: AdminListener | null = null;
  if (to !== undefined) {
    next = make(to);
    try {
      next.listen();
    } catch (error) {
      return { listener: current, problem: `admin: ${describe(error)}; the admin listener stays as it was` };
    }
  }
  void current?.retire();
  return { listener: next, problem: null };
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
