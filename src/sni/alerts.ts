/**
 * Fatal TLS alert records the relay may send before closing a connection whose ClientHello it refuses.
 *
 * The relay never terminates TLS, so these are plaintext alerts (RFC 8446 §6), which any client understands
 * before keys are agreed.
 *
 * @module
 */

/**
 * The alert descriptions the relay sends (RFC 8446 §6.2):
 * - `handshake_failure` (40): no route for the hello, or a hello the relay refuses;
 * - `protocol_version` (70): a record or hello version the relay does not speak;
 * - `internal_error` (80): the relay failed for reasons of its own;
 * - `unrecognized_name` (112): no backend claims the server name (RFC 6066 §3).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type TlsAlertDescription, tlsAlert } from "./alerts.ts";
 * const reason: TlsAlertDescription = "unrecognized_name";
 * assert.equal(tlsAlert(reason)[6], 112);
 * ```
 */
export type TlsAlertDescription =
  | "handshake_failure"
  | "unrecognized_name"
  | "internal_error"
  | "protocol_version";

const ALERT_CODES: Readonly<Record<TlsAlertDescription, number>> = {
  handshake_failure: 40,
  protocol_version: 70,
  internal_error: 80,
  unrecognized_name: 112,
};

// RFC 8446 §5.1 and §6: content type alert (21), legacy_record_version 0x0303, length 2, level fatal (2).
const CONTENT_TYPE_ALERT = 0x15;
const ALERT_LEVEL_FATAL = 2;

/**
 * Returns a fresh 7-byte record carrying one fatal alert with the given description.
 *
 * @example
 * ```ts
 * import { tlsAlert } from "./alerts.ts";
 * tlsAlert("unrecognized_name"); // Uint8Array [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]
 * ```
 */
export function tlsAlert(description: TlsAlertDescription): Uint8Array {
  return Uint8Array.of(
    CONTENT_TYPE_ALERT,
    0x03,
    0x03,
    0x00,
    0x02,
    ALERT_LEVEL_FATAL,
    ALERT_CODES[description],
  );
}
