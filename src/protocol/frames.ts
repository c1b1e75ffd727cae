/**
 * The frame codec of the multiplexing protocol, shared by the hub, the agent and the mesh: nothing else builds
 * or reads frames by hand.
 *
 * A WebSocket binary message is either `0x01` + 16-byte stream id + payload (data) or `0x02` + UTF-8 JSON
 * (control), docs/protocol.md §2.1. Control JSON uses the original's wire names; this module turns it into
 * typed {@linkcode ControlMessage}s and back, so the rest of the code never sees wire JSON.
 *
 * @module
 */

/** First byte of a data frame (§2.1). */
export const FRAME_DATA = 0x01;
/** First byte of a control frame (§2.1). */
export const FRAME_CONTROL = 0x02;
/** Raw stream id length in data frames (§2.2). */
export const STREAM_ID_BYTES = 16;
/** Bytes before the payload of a data frame. */
export const DATA_HEADER_BYTES = 1 + STREAM_ID_BYTES;
/** Largest payload of one data frame: the standalone client refuses bigger messages (§2.5). */
export const MAX_DATA_PAYLOAD_BYTES = 32 * 1024;
/** Largest WebSocket message either end accepts: 32,768 + 17 (§2.5). */
export const MAX_MESSAGE_BYTES = MAX_DATA_PAYLOAD_BYTES + DATA_HEADER_BYTES;

/**
 * First byte of a batch: several frames in one WebSocket message, each as a 4-byte big-endian length and the
 * frame. Only in our subprotocol (the original's client ignores unknown first bytes, §2.1, and would lose the
 * frames inside). Our earlier versions sent the frames of one turn so, against the runtime's WebSocket, whose
 * per-message cost dominated the node's profile; with our own WebSocket on both ends the frames of a turn leave
 * in one socket write anyway, so nothing sends batches now, and they are still read from peers that do.
 */
export const FRAME_BATCH = 0x03;
/** Largest batch message those senders build. */
export const MAX_BATCH_BYTES = 256 * 1024;
/** Largest message a peer of our subprotocol accepts: a full batch plus the largest frame that started it. */
export const MAX_BATCHED_MESSAGE_BYTES = MAX_BATCH_BYTES + MAX_MESSAGE_BYTES + 4;

/** Credits a receiver grants when a stream opens, and the batch it replenishes in (§5.2). */
export const INITIAL_STREAM_CREDITS = 64;
/** Frames consumed before a receiver sends a replenishment (§5.2). */
export const CREDIT_REPLENISH_BATCH = 8;
/** Largest grant honoured; bigger grants are clamped, never trusted (§5.2). */
export const MAX_CREDIT_GRANT = 2 ** 20;

/** Why a stream ended, in the original's vocabulary (§3.3). */
export type DisconnectReason =
  | "normal"
  | "buffer_full"
  | "dial_failed"
  | "timeout"
  | "local_error"
  | "shutdown"
  | "session_ended"
  | "pause_violated"
  | "unknown";

const DISCONNECT_REASONS: ReadonlySet<string> = new Set<DisconnectReason>([
  "normal",
  "buffer_full",
  "dial_failed",
  "timeout",
  "local_error",
  "shutdown",
  "session_ended",
  "pause_violated",
  "unknown",
]);

/** What the opening side tells the accepting side about a new stream (the `connect` event, §3.2). */
export interface StreamOpenInfo {
  /** Normalised SNI or Host name the client asked for. */
  readonly hostname: string;
  /** Relay port the client connected to (for tunnels: the origin node's port). */
  readonly port: number;
  /** The client's address as `ip:port`, IPv6 in brackets. */
  readonly clientAddress: string;
  /** Whether the client speaks TLS (SNI-routed) rather than plain HTTP. */
  readonly isTls: boolean;
  /**
   * The address the client connected to, as `ip:port`: the relay's own socket address, or what a trusted
   * upstream's PROXY header said (for tunnels: at the origin node). Our extension, the wire's `relay_addr`,
   * which the original's parties ignore; absent from them.
   */
  readonly relayAddress?: string;
}

/** A decoded control message. Stream ids are canonical lower-case UUID text. */
export type ControlMessage =
  | { readonly type: "open"; readonly id: string; readonly info: StreamOpenInfo; readonly credits?: number }
  | { readonly type: "close"; readonly id: string; readonly reason?: DisconnectReason }
  | { readonly type: "close_write"; readonly id: string }
  | { readonly type: "ping_stream"; readonly id: string }
  | { readonly type: "pong_stream"; readonly id: string }
  | { readonly type: "pause"; readonly id: string }
  | { readonly type: "resume"; readonly id: string; readonly credits?: number }
  | { readonly type: "ping" }
  | { readonly type: "pong" }
  /** The sender is shutting down: no new streams on this session either way; open ones go on (our extension). */
  | { readonly type: "drain" }
  /** The names the sender serves, full state; `more`: further parts of this version follow (announcement.ts). */
  | {
    readonly type: "announce";
    readonly version: number;
    readonly routes: readonly string[];
    readonly more?: boolean;
  };

/** A decoded binary message. Views point into the message; nothing is copied. */
export type DecodedFrame =
  | { readonly kind: "data"; readonly id: string; readonly payload: Uint8Array }
  | { readonly kind: "batch"; readonly frames: readonly Uint8Array[] }
  | { readonly kind: "control"; readonly message: ControlMessage }
  | { readonly kind: "ignored"; readonly reason: string }
  | { readonly kind: "invalid"; readonly reason: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Canonical UUID text of 16 raw id bytes starting at `offset`. */
export function streamIdText(bytes: Uint8Array, offset = 0): string {
  let s = "";
  for (let i = 0; i < STREAM_ID_BYTES; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += "-";
    s += HEX[bytes[offset + i]];
  }
  return s;
}

/** The 16 raw bytes of a canonical UUID text id (§2.2: same order as the hex digits). */
export function streamIdBytes(id: string): Uint8Array {
  const hex = id.replaceAll("-", "");
  const out = new Uint8Array(STREAM_ID_BYTES);
  for (let i = 0; i < STREAM_ID_BYTES; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A fresh random (version 4) stream id. */
export function newStreamId(): string {
  return crypto.randomUUID();
}

/**
 * Encodes one data frame. The payload is copied, so the caller may reuse its buffer at once.
 *
 * @example
 * ```ts
 * import { encodeDataFrame, newStreamId, streamIdBytes } from "./frames.ts";
 * const frame = encodeDataFrame(streamIdBytes(newStreamId()), new Uint8Array([1, 2, 3]));
 * frame.length; // 20
 * ```
 */
export function encodeDataFrame(idBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_DATA_PAYLOAD_BYTES) {
    throw new RangeError(`Data payload of ${payload.length} bytes exceeds ${MAX_DATA_PAYLOAD_BYTES}`);
  }
  const frame = new Uint8Array(DATA_HEADER_BYTES + payload.length);
  frame[0] = FRAME_DATA;
  frame.set(idBytes, 1);
  frame.set(payload, DATA_HEADER_BYTES);
  return frame;
}

/**
 * The 17-byte header every data frame of one stream starts with (its payload follows, §2.1): built once per
 * stream, for a transport that sends header and payload as one message without joining them first;
 * {@linkcode encodeDataFrame} is the joined form.
 *
 * @example
 * ```ts
 * import { encodeDataFrameHeader, newStreamId, streamIdBytes } from "./frames.ts";
 * encodeDataFrameHeader(streamIdBytes(newStreamId())).length; // 17
 * ```
 */
export function encodeDataFrameHeader(idBytes: Uint8Array): Uint8Array {
  const header = new Uint8Array(DATA_HEADER_BYTES);
  header[0] = FRAME_DATA;
  header.set(idBytes, 1);
  return header;
}

/** Encodes one control frame with the original's wire names and field order (§3.1). */
export function encodeControlFrame(message: ControlMessage): Uint8Array {
  const json = encoder.encode(JSON.stringify(toWire(message)));
  const frame = new Uint8Array(1 + json.length);
  frame[0] = FRAME_CONTROL;
  frame.set(json, 1);
  return frame;
}

function toWire(message: ControlMessage): Record<string, unknown> {
  switch (message.type) {
    case "open":
      return {
        event: "connect",
        client_id: message.id,
        conn_port: message.info.port,
        client_ip: message.info.clientAddress,
        transport: "tcp",
        hostname: message.info.hostname,
        ...(message.info.isTls ? { is_tls: true } : {}),
        ...(message.credits ? { credits: message.credits } : {}),
        // Last, so the original's fields are written exactly as the original writes them.
        ...(message.info.relayAddress ? { relay_addr: message.info.relayAddress } : {}),
      };
    case "close":
      return {
        event: "disconnect",
        client_id: message.id,
        ...(message.reason ? { reason: message.reason } : {}),
      };
    case "close_write":
      return { event: "close_write", client_id: message.id };
    case "ping_stream":
      return { event: "ping_client", client_id: message.id };
    case "pong_stream":
      return { event: "pong_client", client_id: message.id };
    case "pause":
      return { event: "pause_stream", client_id: message.id, reason: "buffer_full" };
    case "resume":
      return {
        event: "resume_stream",
        client_id: message.id,
        ...(message.credits ? { credits: message.credits } : {}),
      };
    case "ping":
    case "pong":
    case "drain":
      return { event: message.type };
    case "announce":
      return {
        event: "announce",
        version: message.version,
        routes: message.routes,
        ...(message.more ? { more: true } : {}),
      };
  }
}

/**
 * Decodes one binary WebSocket message. Never throws: bad input gives `invalid` with a reason, and frames
 * the original defines but this code does not act on give `ignored`.
 *
 * @example
 * ```ts
 * import { decodeFrame, encodeControlFrame } from "./frames.ts";
 * decodeFrame(encodeControlFrame({ type: "ping" })); // { kind: "control", message: { type: "ping" } }
 * ```
 */
export function decodeFrame(message: Uint8Array): DecodedFrame {
  if (message.length === 0) return { kind: "ignored", reason: "empty message" };
  if (message[0] === FRAME_BATCH) return splitBatch(message);
  if (message.length > MAX_MESSAGE_BYTES) {
    return { kind: "invalid", reason: `message of ${message.length} bytes exceeds ${MAX_MESSAGE_BYTES}` };
  }
  if (message[0] === FRAME_DATA) {
    if (message.length < DATA_HEADER_BYTES) {
      return { kind: "invalid", reason: "data frame shorter than its header" };
    }
    return { kind: "data", id: streamIdText(message, 1), payload: message.subarray(DATA_HEADER_BYTES) };
  }
  if (message[0] === FRAME_CONTROL) return decodeControl(message.subarray(1));
  return { kind: "ignored", reason: `unknown frame type 0x${HEX[message[0]]}` };
}

/** The frames of a batch, as views into it; a batch inside a batch, or a length that lies, is invalid. */
function splitBatch(message: Uint8Array): DecodedFrame {
  if (message.length > MAX_BATCHED_MESSAGE_BYTES) {
    return {
      kind: "invalid",
      reason: `batch of ${message.length} bytes exceeds ${MAX_BATCHED_MESSAGE_BYTES}`,
    };
  }
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const frames: Uint8Array[] = [];
  for (let offset = 1; offset < message.length;) {
    if (offset + 4 > message.length) return { kind: "invalid", reason: "batch ends inside a frame length" };
    const length = view.getUint32(offset);
    offset += 4;
    if (length === 0 || offset + length > message.length) {
      return { kind: "invalid", reason: "batch frame length is zero or runs past the message" };
    }
    if (message[offset] === FRAME_BATCH) return { kind: "invalid", reason: "batch inside a batch" };
    frames.push(message.subarray(offset, offset + length));
    offset += length;
  }
  return { kind: "batch", frames };
}

function decodeControl(json: Uint8Array): DecodedFrame {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(json));
  } catch {
    return { kind: "invalid", reason: "control frame is not UTF-8 JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "invalid", reason: "control frame is not a JSON object" };
  }
  const fields = value as Record<string, unknown>;
  const event = fields.event;
  if (typeof event !== "string") return { kind: "invalid", reason: "control frame has no event name" };
  if (event === "ping" || event === "pong" || event === "drain") {
    return { kind: "control", message: { type: event } };
  }
  if (event === "announce") return decodeAnnounce(fields);

  const id = fields.client_id;
  if (typeof id !== "string" || !UUID_PATTERN.test(id.toLowerCase())) {
    return { kind: "invalid", reason: `${event}: client_id is not a UUID` };
  }
  const streamId = id.toLowerCase();
  const credits = optionalCredits(fields.credits);
  if (credits === null) return { kind: "invalid", reason: `${event}: credits is not a non-negative integer` };
  switch (event) {
    case "connect":
      return decodeConnect(streamId, fields, credits);
    case "disconnect": {
      const reason = typeof fields.reason === "string" && DISCONNECT_REASONS.has(fields.reason)
        ? fields.reason as DisconnectReason
        : undefined;
      return { kind: "control", message: { type: "close", id: streamId, ...(reason ? { reason } : {}) } };
    }
    case "close_write":
      return { kind: "control", message: { type: "close_write", id: streamId } };
    case "ping_client":
      return { kind: "control", message: { type: "ping_stream", id: streamId } };
    case "pong_client":
      return { kind: "control", message: { type: "pong_stream", id: streamId } };
    case "pause_stream":
      return { kind: "control", message: { type: "pause", id: streamId } };
    case "resume_stream":
      return { kind: "control", message: { type: "resume", id: streamId, ...(credits ? { credits } : {}) } };
    default:
      return { kind: "ignored", reason: `unsupported event "${event.slice(0, 40)}"` };
  }
}

function decodeConnect(
  id: string,
  fields: Record<string, unknown>,
  credits: number | undefined,
): DecodedFrame {
  const {
    hostname,
    conn_port: port,
    client_ip: clientAddress,
    is_tls: isTls,
    transport,
    relay_addr: relayAddress,
  } = fields;
  if (transport !== undefined && transport !== "tcp") {
    return {
      kind: "invalid",
      reason: `connect: transport "${String(transport).slice(0, 20)}" is not supported`,
    };
  }
  if (typeof hostname !== "string" || hostname.length === 0 || hostname.length > 255) {
    return { kind: "invalid", reason: "connect: hostname missing" };
  }
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65_535) {
    return { kind: "invalid", reason: "connect: conn_port is not a port number" };
  }
  if (clientAddress !== undefined && (typeof clientAddress !== "string" || clientAddress.length > 64)) {
    return { kind: "invalid", reason: "connect: client_ip is not an address" };
  }
  if (isTls !== undefined && typeof isTls !== "boolean") {
    return { kind: "invalid", reason: "connect: is_tls is not a boolean" };
  }
  if (relayAddress !== undefined && (typeof relayAddress !== "string" || relayAddress.length > 64)) {
    return { kind: "invalid", reason: "connect: relay_addr is not an address" };
  }
  const info: StreamOpenInfo = {
    hostname,
    port: port as number,
    clientAddress: clientAddress ?? "",
    isTls: isTls === true,
    ...(relayAddress ? { relayAddress } : {}),
  };
  return { kind: "control", message: { type: "open", id, info, ...(credits ? { credits } : {}) } };
}

function decodeAnnounce(fields: Record<string, unknown>): DecodedFrame {
  const { version, routes, more } = fields;
  if (!Number.isSafeInteger(version) || (version as number) < 0) {
    return { kind: "invalid", reason: "announce: version is not a non-negative integer" };
  }
  if (!Array.isArray(routes) || routes.length > 100_000 || !routes.every((r) => typeof r === "string")) {
    return { kind: "invalid", reason: "announce: routes is not a list of names" };
  }
  if (more !== undefined && typeof more !== "boolean") {
    return { kind: "invalid", reason: "announce: more is not a boolean" };
  }
  const message = { type: "announce", version: version as number, routes } as const;
  return { kind: "control", message: more === true ? { ...message, more } : message };
}

/** `undefined` when absent, `null` when present but not a non-negative integer; clamped to MAX_CREDIT_GRANT. */
function optionalCredits(value: unknown): number | undefined | null {
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || (value as number) < 0) return null;
  return Math.min(value as number, MAX_CREDIT_GRANT);
}
