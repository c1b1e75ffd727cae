/**
 * The server's side of the WebSocket opening handshake (RFC 6455 §4.2): check an upgrade request, answer it with
 * `101 Switching Protocols`, and hand the socket to a {@linkcode WebSocketConnection} in the server role.
 *
 * @module
 */

import { type EndpointRequest, headerList, singleHeader } from "../http/endpoint_request.ts";
import { WebSocketConnection } from "./websocket.ts";

/** The GUID of the opening handshake's accept key (RFC 6455 §1.3). */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY_PATTERN = /^[A-Za-z0-9+/]{22}==$/;
const encoder = new TextEncoder();

/** `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2). */
export async function acceptKey(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID)));
  return btoa(String.fromCharCode(...digest));
}

/** Whether `request` asks for a WebSocket at all (so a plain GET can get a plain answer). */
export function isUpgradeRequest(request: EndpointRequest): boolean {
  return headerList(request, "upgrade").some((protocol) => protocol.toLowerCase() === "websocket");
}

/** The subprotocols a client offers, in its order of preference. */
export function offeredSubprotocols(request: EndpointRequest): string[] {
  return headerList(request, "sec-websocket-protocol");
}

/** Why an upgrade request cannot be accepted, or null when it can (RFC 6455 §4.2.1). */
export function upgradeRefusal(request: EndpointRequest): string | null {
  if (request.method !== "GET") return "a WebSocket upgrade must be a GET";
  if (!isUpgradeRequest(request)) return "Upgrade: websocket is missing";
  if (!headerList(request, "connection").some((token) => token.toLowerCase() === "upgrade")) {
    return "Connection: upgrade is missing";
  }
  if (singleHeader(request, "sec-websocket-version") !== "13") return "Sec-WebSocket-Version must be 13";
  if (!KEY_PATTERN.test(singleHeader(request, "sec-websocket-key") ?? "")) {
    return "Sec-WebSocket-Key is not 16 bytes in base64";
  }
  return null;
}

/** Options of {@linkcode acceptWebSocket}. */
export interface AcceptOptions {
  /** The subprotocol chosen from those offered, or none. */
  readonly protocol?: string;
  /** Largest message accepted to begin with (see {@linkcode WebSocketConnection.setMaxMessageBytes}). */
  readonly maxMessageBytes: number;
  /** Ping a silent peer after this long, drop it after twice that; 0: never. */
  readonly idleTimeoutMs?: number;
}

/**
 * Answers a checked upgrade request ({@linkcode upgradeRefusal} gave null) with `101` and returns the open
 * connection; `leftover` are bytes the client sent after its request head. Rejects if the answer cannot be
 * written (the client is gone), having closed `conn`.
 */
export async function acceptWebSocket(
  conn: Deno.Conn,
  request: EndpointRequest,
  leftover: Uint8Array,
  options: AcceptOptions,
): Promise<WebSocketConnection> {
  const key = singleHeader(request, "sec-websocket-key") ?? "";
  const response = encoder.encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n` +
      (options.protocol ? `Sec-WebSocket-Protocol: ${options.protocol}\r\n` : "") + "\r\n",
  );
  try {
    for (let written = 0; written < response.length;) written += await conn.write(response.subarray(written));
  } catch (error) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
    throw error;
  }
  const ws = new WebSocketConnection({
    role: "server",
    maxMessageBytes: options.maxMessageBytes,
    idleTimeoutMs: options.idleTimeoutMs ?? 0,
  });
  ws.attach(conn, leftover, options.protocol ?? "");
  return ws;
}
