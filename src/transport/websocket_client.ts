/**
 * A WebSocket client (RFC 6455) over a TCP or TLS socket this code opens itself, for the links a Nexus process
 * dials (agent to hub, node to peer). The runtime's `WebSocket` leaves Nagle's algorithm on: a second small
 * message then waits for the peer's delayed ACK, up to 40 ms, which measured as 90 ms p99 on a 64-byte
 * request/response through a node (docs/benchmarks.md). Here the socket has `TCP_NODELAY`, and every frame sent
 * in one turn of the event loop goes out in one write (see {@linkcode WebSocketConnection}).
 *
 * @module
 */

import { closeQuietly, CONNECTING, WebSocketConnection } from "./websocket.ts";
import { acceptKey } from "./websocket_accept.ts";

/** Options of a {@linkcode WebSocketClient}. */
export interface WebSocketClientOptions {
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`). */
  readonly protocols?: readonly string[];
  /** PEM certificates to trust for `wss:` beside the built-in roots. */
  readonly caCerts?: readonly string[];
  /** Extra request headers of the opening handshake (names and values must be valid HTTP tokens/values). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Largest message accepted; a bigger one closes the connection with 1009. Default 1 MiB. */
  readonly maxMessageBytes?: number;
}

const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
const encoder = new TextEncoder();

/** A WebSocket client connection; it connects as soon as it is constructed, like `new WebSocket(url)`. */
export class WebSocketClient extends WebSocketConnection {
  readonly url: string;
  /** The socket while the opening handshake runs, so a close can drop it. */
  #dialling: Deno.Conn | null = null;
  readonly #connectAbort = new AbortController();

  constructor(url: string, options: WebSocketClientOptions = {}) {
    super({
      role: "client",
      ...(options.maxMessageBytes ? { maxMessageBytes: options.maxMessageBytes } : {}),
    });
    this.url = url;
    void this.#run(options);
  }

  /**
   * A close while connecting gives the attempt up now (a peer that never answers must not keep the socket):
   * the failed connection is then reported with 1006, as the WebSocket API does. Deno keeps the socket of a TLS
   * handshake that is still waiting for the server's first flight even after the TLS connection is closed
   * (measured with Deno 2.9); a plain connect or an HTTP answer that never comes is given up here.
   */
  protected override abandonConnecting(): void {
    this.#connectAbort.abort();
    if (this.#dialling !== null) closeQuietly(this.#dialling);
  }

  async #run(options: WebSocketClientOptions): Promise<void> {
    let opened: { conn: Deno.Conn; leftover: Uint8Array; protocol: string };
    try {
      opened = await this.#connect(options);
    } catch (error) {
      this.failToOpen(error instanceof Error ? error.message : String(error));
      return;
    }
    this.attach(opened.conn, opened.leftover, opened.protocol);
  }

  /** TCP (and TLS), then the opening handshake; returns the socket and bytes that arrived after the head. */
  async #connect(options: WebSocketClientOptions) {
    const url = new URL(this.url);
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new SyntaxError(`${this.url} is not a ws: or wss: URL`);
    }
    const secure = url.protocol === "wss:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
    const tcp = await Deno.connect({ hostname, port, signal: this.#connectAbort.signal });
    this.#dialling = tcp;
    tcp.setNoDelay(true);
    let conn: Deno.Conn = tcp;
    try {
      if (this.closedWhileConnecting) throw new Error("closed before the connection was open");
      if (secure) {
        conn = await Deno.startTls(tcp, {
          hostname,
          ...(options.caCerts ? { caCerts: [...options.caCerts] } : {}),
          alpnProtocols: ["http/1.1"],
        });
        this.#dialling = conn;
      }
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      const offered = options.protocols ?? [];
      await writeAll(
        conn,
        encoder.encode(
          `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
            `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
            (offered.length > 0 ? `Sec-WebSocket-Protocol: ${offered.join(", ")}\r\n` : "") +
            headerLines(options.headers ?? {}) + "\r\n",
        ),
      );
      const { head, rest } = await readResponseHead(conn);
      const protocol = await checkResponse(head, key, offered);
      if (this.readyState !== CONNECTING) throw new Error("closed before the connection was open");
      return { conn, leftover: rest, protocol };
    } catch (error) {
      closeQuietly(conn);
      throw error;
    } finally {
      this.#dialling = null;
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
}

/** Reads up to the blank line that ends the response head; returns the head and what followed it. */
async function readResponseHead(conn: Deno.Conn): Promise<{ head: string; rest: Uint8Array }> {
  const buffer = new Uint8Array(MAX_RESPONSE_HEAD_BYTES);
  let length = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(length));
    if (n === null) throw new Error("the server closed the connection during the opening handshake");
    const from = Math.max(0, length - 3);
    length += n;
    for (let i = from; i + 3 < length; i++) {
      if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
        return {
          head: new TextDecoder().decode(buffer.subarray(0, i)),
          rest: buffer.slice(i + 4, length),
        };
      }
    }
    if (length === buffer.length) throw new Error("the server's handshake response head is too large");
  }
}

/** Extra handshake headers as lines; refuses names or values that could split the request. */
function headerLines(headers: Readonly<Record<string, string>>): string {
  let lines = "";
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) {
      throw new TypeError(`Invalid handshake header ${JSON.stringify(name)}`);
    }
    lines += `${name}: ${value}\r\n`;
  }
  return lines;
}

/** Checks the server's answer to the opening handshake (RFC 6455 §4.1); returns the chosen subprotocol. */
async function checkResponse(head: string, key: string, offered: readonly string[]): Promise<string> {
  const [statusLine, ...lines] = head.split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1];
  if (status !== "101") {
    throw new Error(`the server refused the WebSocket: ${statusLine.slice(0, 100) || "no status line"}`);
  }
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  if (headers.get("upgrade")?.toLowerCase() !== "websocket") throw new Error("the server did not upgrade");
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headers.get("connection") ?? "")) {
    throw new Error("the server's Connection header lacks upgrade");
  }
  if (headers.get("sec-websocket-accept") !== await acceptKey(key)) {
    throw new Error("the server's Sec-WebSocket-Accept does not match the key");
  }
  if (headers.has("sec-websocket-extensions")) throw new Error("the server chose an extension not offered");
  const protocol = headers.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !offered.includes(protocol)) {
    throw new Error(`the server chose subprotocol "${protocol.slice(0, 40)}", which was not offered`);
  }
  return protocol;
}
