/**
 * Base64url without padding (RFC 4648 §5), as the original encodes its nonces (§1.2).
 *
 * @module
 */

/**
 * Encodes bytes as base64url without padding.
 *
 * @example
 * ```ts
 * import { encodeBase64Url } from "./base64url.ts";
 * encodeBase64Url(new Uint8Array([251, 255])); // "-_8"
 * ```
 */
export function encodeBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
