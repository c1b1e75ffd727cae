/**
 * The hub's side of the backend handshake (docs/protocol.md §4.2): a stage-0 token, a challenge with a fresh
 * nonce, a stage-1 token that carries the nonce and repeats stage 0's claims. Only then is the backend
 * registered. The original sends no acknowledgement; a backend that offered our subprotocol gets one, so our
 * agent knows it is registered.
 *
 * @module
 */

import { type BackendTokenClaims, sameHostnames, verifyBackendToken } from "../protocol/backend_token.ts";
import { WebSocketInbox } from "../transport/inbox.ts";
import type { HandshakeSocket } from "../transport/message_socket.ts";
import { encodeHubMessage } from "../protocol/hub_messages.ts";

/** Time allowed for each token to arrive (§4.2: 10 s). */
export const TOKEN_WAIT_MS = 10_000;

/** The outcome of a backend handshake. */
export type HandshakeOutcome =
  | { readonly ok: true; readonly claims: BackendTokenClaims; readonly pendingMessages: unknown[] }
  | { readonly ok: false; readonly reason: string };

/** A fresh challenge nonce: 32 random bytes, base64url without padding (§4.2). */
function newNonce(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64({ alphabet: "base64url", omitPadding: true });
}

/** Runs the handshake on a freshly upgraded WebSocket. Never throws. */
export async function acceptBackendHandshake(
  ws: HandshakeSocket,
  secrets: readonly Uint8Array[],
  options: { acknowledge: boolean; tokenWaitMs?: number },
): Promise<HandshakeOutcome> {
  const inbox = new WebSocketInbox(ws);
  const waitMs = options.tokenWaitMs ?? TOKEN_WAIT_MS;

  const first = await readToken(inbox, waitMs, "first");
  if (typeof first !== "string") return first;
  const stage0 = await verifyBackendToken(first, secrets);
  if (!stage0.ok) return stage0;

  const nonce = newNonce();
  ws.send(encodeHubMessage({ type: "handshake_challenge", nonce }));

  const second = await readToken(inbox, waitMs, "second");
  if (typeof second !== "string") return second;
  const stage1 = await verifyBackendToken(second, secrets);
  if (!stage1.ok) return stage1;
  const mismatch = compareStages(stage0.claims, stage1.claims, nonce);
  if (mismatch !== null) return { ok: false, reason: `handshake mismatch: ${mismatch}` };

  if (options.acknowledge) ws.send(encodeHubMessage({ type: "handshake_accepted" }));
  return { ok: true, claims: stage0.claims, pendingMessages: inbox.detach() };
}

async function readToken(
  inbox: WebSocketInbox,
  waitMs: number,
  which: string,
): Promise<string | { ok: false; reason: string }> {
  const message = await inbox.next(waitMs);
  switch (message.kind) {
    case "text":
      return message.text;
    case "binary":
      return { ok: false, reason: `expected the ${which} token as a text frame, got a binary frame` };
    case "closed":
      return { ok: false, reason: `closed before the ${which} token: ${message.reason}` };
    case "timeout":
      return { ok: false, reason: `no ${which} token within ${waitMs / 1000}s` };
  }
}

/** Stage 1 must carry the nonce and repeat stage 0's names; its weight may be absent or the same (§4.2). */
function compareStages(stage0: BackendTokenClaims, stage1: BackendTokenClaims, nonce: string): string | null {
  if (stage1.sessionNonce !== nonce) return "second token does not carry the challenge nonce";
  if (!sameHostnames(stage0.hostnames, stage1.hostnames)) return "second token claims other hostnames";
  if (stage1.weightClaimed && stage1.weight !== stage0.weight) return "second token claims another weight";
  return null;
}
