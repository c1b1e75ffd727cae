/**
 * What the reason of a refused backend handshake says, read the way the hub writes it
 * (`backend_token.ts`, README "Tokens and the hub handshake"): a refusal that cannot heal says
 * `authentication failed` or `forbidden` (the original's client also reads `unauthorized`, `invalid token`
 * and `invalid credential` so, §4.5); anything else may heal by itself.
 *
 * @module
 */

const CANNOT_HEAL = /authentication failed|forbidden|unauthorized|invalid token|invalid credential/i;

/**
 * Whether a refusal's reason says retrying will not help until someone changes a secret, a token or the
 * node's configuration.
 *
 * @example
 * ```ts
 * import { refusalCannotHeal } from "./refusal_reasons.ts";
 * refusalCannotHeal("authentication failed: token signature does not match the backends secret"); // true
 * refusalCannotHeal("token expired"); // false
 * ```
 */
export function refusalCannotHeal(reason: string): boolean {
  return CANNOT_HEAL.test(reason);
}

/** The kinds of backend refusal a metric counts by: a few words, whatever the reason's details. */
export type BackendRefusalKind =
  | "authentication_failed"
  | "forbidden"
  | "token_expired"
  | "token_not_yet_valid"
  | "handshake_mismatch"
  | "timeout"
  | "closed"
  | "protocol";

/**
 * The kind of a backend refusal, from the reason the hub gave it.
 *
 * @example
 * ```ts
 * import { backendRefusalKind } from "./refusal_reasons.ts";
 * backendRefusalKind("forbidden: app.example.com is this node's own hub name"); // "forbidden"
 * backendRefusalKind("no second token within 10s"); // "timeout"
 * ```
 */
export function backendRefusalKind(reason: string): BackendRefusalKind {
  if (reason.startsWith("authentication failed")) return "authentication_failed";
  if (reason.startsWith("forbidden")) return "forbidden";
  if (reason === "token expired") return "token_expired";
  if (reason === "token not yet valid") return "token_not_yet_valid";
  if (reason.startsWith("handshake mismatch")) return "handshake_mismatch";
  if (/^no \w+ token within/.test(reason)) return "timeout";
  if (reason.startsWith("closed before")) return "closed";
  return "protocol";
}
