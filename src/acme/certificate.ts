/**
 * The X.509 parts of getting a certificate: a fresh key for each certificate, the CSR that asks for one name,
 * and what a downloaded chain says about itself (names, validity), by `@peculiar/x509` over WebCrypto.
 *
 * @module
 */

import "reflect-metadata"; // @peculiar/x509 resolves its parsers through tsyringe, which needs it first.
import * as x509 from "@peculiar/x509";

/** ECDSA P-256 with SHA-256: what Deno's TLS serves and every ACME CA signs for. */
const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** A certificate's own key and the CSR that asks for it. */
export interface CertificateRequest {
  /** PKCS#8 PEM ("PRIVATE KEY"), as `Deno.serve({ key })` takes it. */
  readonly keyPem: string;
  /** The CSR, DER. */
  readonly csrDer: Uint8Array<ArrayBuffer>;
}

/** What a chain's first (leaf) certificate says. */
export interface CertificateFacts {
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Its DNS subject alternative names, lower-case. */
  readonly dnsNames: readonly string[];
}

/**
 * Makes a new key and a CSR for `hostname` (subject CN and one DNS subject alternative name).
 *
 * @example
 * ```ts
 * import { createCertificateRequest } from "./certificate.ts";
 * const { keyPem, csrDer } = await createCertificateRequest("hub.example.com");
 * console.log(keyPem.startsWith("-----BEGIN PRIVATE KEY-----"), csrDer.length > 0); // true true
 * ```
 */
export async function createCertificateRequest(hostname: string): Promise<CertificateRequest> {
  const keys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [hostname] }],
    keys,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: hostname }])],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return {
    keyPem: x509.PemConverter.encode(pkcs8.buffer, "PRIVATE KEY"),
    csrDer: new Uint8Array(csr.rawData),
  };
}

/**
 * Reads the leaf of a PEM chain; throws when the text holds no certificate.
 *
 * @example
 * ```ts ignore
 * import { certificateFacts } from "./certificate.ts";
 * const facts = certificateFacts(await Deno.readTextFile("hub.pem"));
 * console.log(facts.dnsNames, facts.notAfter);
 * ```
 */
export function certificateFacts(chainPem: string): CertificateFacts {
  const match = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(chainPem);
  if (match === null) throw new Error("the text holds no PEM certificate");
  const leaf = new x509.X509Certificate(match[0]);
  const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
  const dnsNames = (san?.names.items ?? [])
    .filter((name) => name.type === "dns")
    .map((name) => name.value.toLowerCase());
  return { notBefore: leaf.notBefore, notAfter: leaf.notAfter, dnsNames };
}
