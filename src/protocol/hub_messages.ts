/**
 * The text messages a hub sends a backend (§4.2, §4.6): challenges carrying a nonce, and, for backends of our
 * subprotocol only, the acknowledgement that the handshake succeeded (the original sends none). Shared by the
 * hub, which writes them, and the agent, which reads them.
 *
 * @module
 */

/** The kinds of hub message. */
export type HubMessageType = "handshake_challenge" | "reauth_challenge" | "handshake_accepted";

const TYPES: ReadonlySet<string> = new Set<HubMessageType>([
  "handshake_challenge",
  "reauth_challenge",
  "handshake_accepted",
]);

/** A hub message; challenges carry a non-blank nonce. */
export interface HubMessage {
  readonly type: HubMessageType;
  readonly nonce?: string;
}

/**
 * Encodes a hub message as the original does: `{"type": …, "nonce": …}` (§4.2).
 *
 * @example
 * ```ts
 * import { encodeHubMessage } from "./hub_messages.ts";
 * encodeHubMessage({ type: "handshake_challenge", nonce: "abc" }); // '{"type":"handshake_challenge","nonce":"abc"}'
 * ```
 */
export function encodeHubMessage(message: HubMessage): string {
  return JSON.stringify(message.nonce === undefined ? { type: message.type } : message);
}

/** Reads a hub message, or null for anything else (unknown types are ignored, as the original client does). */
export function parseHubMessage(text: string): HubMessage | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { type, nonce } = value as Record<string, unknown>;
  if (typeof type !== "string" || !TYPES.has(type)) return null;
  if (type === "handshake_accepted") return { type };
  if (typeof nonce !== "string" || nonce.trim() === "") return null;
  return { type: type as HubMessageType, nonce };
}
