/**
 * What to say when a TLS peer's certificate fails verification: the runtime's error names the cause
 * (`invalid peer certificate: UnknownIssuer`) but not the setting that fixes it.
 *
 * @module
 */

/**
 * `error` with a hint when it says the certificate's issuer is unknown: which setting names the CA to trust
 * (`hubCaFile` for an agent dialling a hub, `peerCaFile` for a node dialling a peer). Other errors are returned
 * as they are.
 *
 * @example
 * ```ts
 * import { withCertificateHint } from "./certificate_hint.ts";
 * withCertificateHint("invalid peer certificate: UnknownIssuer", "hubCaFile");
 * // "invalid peer certificate: UnknownIssuer (the certificate is not signed by a CA this process trusts: set
 * // hubCaFile to the CA that signed it)"
 * ```
 */
export function withCertificateHint(error: string, caSetting: "hubCaFile" | "peerCaFile"): string {
  if (!/UnknownIssuer/.test(error)) return error;
  return `${error} (the certificate is not signed by a CA this process trusts: set ${caSetting} to the CA ` +
    "that signed it)";
}
