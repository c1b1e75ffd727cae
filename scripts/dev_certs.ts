/**
 * Throw-away certificates for local trials, the demo and the tests: a private CA and the leaf certificates it
 * signs, ECDSA P-256 with SHA-256, built with `@peculiar/x509` over WebCrypto, so openssl is not needed.
 *
 * Why a CA plus leaves and never one self-signed certificate: rustls (Deno's TLS) refuses a certificate with
 * `CA:TRUE` as an end-entity, and a self-signed one without it cannot be a trust anchor.
 *
 * As a command:
 *
 * ```sh
 * deno run --allow-read --allow-write scripts/dev_certs.ts --out certs --name app.demo.test --ip 127.0.0.1
 * ```
 *
 * writes `certs/ca.pem` and `certs/ca-key.pem` (or reuses them when both are there), then
 * `certs/app.demo.test.pem` and `certs/app.demo.test-key.pem`.
 *
 * @module
 */

import "reflect-metadata"; // @peculiar/x509 resolves its parsers through tsyringe, which needs it first.
import * as x509 from "@peculiar/x509";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseHostnameClaim } from "../src/hostnames/hostname.ts";
import { parseIpAddress } from "../src/transport/ip_address.ts";

/**
 * A private certificate authority: its PEMs, and what {@linkcode issueCertificate} needs to sign with it.
 *
 * @example
 * ```ts
 * import { type CertificateAuthority, createCertificateAuthority } from "./dev_certs.ts";
 * const ca: CertificateAuthority = await createCertificateAuthority();
 * await Deno.writeTextFile("ca.pem", ca.certPem); // give this to clients: caCerts, curl --cacert
 * ```
 */
export interface CertificateAuthority {
  /** The CA certificate, PEM ("CERTIFICATE"): what clients are given to trust (`caCerts`, `curl --cacert`). */
  readonly certPem: string;
  /** The CA's private key, PKCS#8 PEM ("PRIVATE KEY"). */
  readonly keyPem: string;
  /** The CA's signing key (ECDSA P-256, not extractable). */
  readonly privateKey: CryptoKey;
  /** DER of the CA's subject name, copied byte for byte into each leaf's issuer so chains match exactly. */
  readonly subjectDer: Uint8Array<ArrayBuffer>;
  /** The CA's subjectKeyIdentifier, copied into each leaf's authorityKeyIdentifier. */
  readonly keyIdentifier: Uint8Array<ArrayBuffer>;
  /** End of the CA's validity: leaves it issues never outlive it. */
  readonly notAfter: Date;
}

/**
 * A leaf certificate and its key, ready for `Deno.listenTls({ cert, key })` or `Deno.serve({ cert, key })`.
 *
 * @example
 * ```ts
 * import { createCertificateAuthority, type IssuedCertificate, issueCertificate } from "./dev_certs.ts";
 * const ca = await createCertificateAuthority();
 * const leaf: IssuedCertificate = await issueCertificate(ca, { dnsNames: ["app.demo.test"] });
 * await using server = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, cert: leaf.certPem, key: leaf.keyPem },
 *   () => new Response("hello"),
 * );
 * console.log(`https://app.demo.test:${server.addr.port}/ is served with the leaf`);
 * ```
 */
export interface IssuedCertificate {
  /** The leaf certificate, PEM ("CERTIFICATE"). */
  readonly certPem: string;
  /** The leaf's private key, PKCS#8 PEM ("PRIVATE KEY"). */
  readonly keyPem: string;
}

/**
 * Options of {@linkcode createCertificateAuthority}.
 *
 * @example
 * ```ts
 * import { type CertificateAuthorityOptions, createCertificateAuthority } from "./dev_certs.ts";
 * const options: CertificateAuthorityOptions = { commonName: "Demo CA", validDays: 7 };
 * console.log((await createCertificateAuthority(options)).notAfter);
 * ```
 */
export interface CertificateAuthorityOptions {
  /** Subject common name. Default "Nexus Proxy development CA" and 8 random hex digits. */
  commonName?: string;
  /** Days the CA stays valid from now. Default 365. */
  validDays?: number;
}

/**
 * Options of {@linkcode issueCertificate}.
 *
 * @example
 * ```ts
 * import { createCertificateAuthority, type IssueCertificateOptions, issueCertificate } from "./dev_certs.ts";
 * const hubOptions: IssueCertificateOptions = { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] };
 * const hub = await issueCertificate(await createCertificateAuthority(), hubOptions);
 * console.log(hub.certPem);
 * ```
 */
export interface IssueCertificateOptions {
  /** DNS names the leaf serves (`localhost`, `app.demo.test`, `*.demo.test`). */
  dnsNames: string[];
  /** IPv4 or IPv6 addresses the leaf serves (`127.0.0.1`, `::1`). */
  ipAddresses?: string[];
  /** Subject common name, which TLS clients ignore. Default: the first name or address. */
  commonName?: string;
  /** Days the leaf stays valid from now, capped at the CA's end of validity. Default 30. */
  validDays?: number;
}

const DEFAULT_CA_COMMON_NAME = "Nexus Proxy development CA";
const DEFAULT_LEAF_COMMON_NAME = "Nexus Proxy development certificate";
const DEFAULT_CA_VALID_DAYS = 365;
const DEFAULT_LEAF_VALID_DAYS = 30;
// Backdated so that a clock a little behind the issuer's does not reject a certificate made a moment ago.
const BACKDATE_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;
// ub-common-name (RFC 5280 appendix A.1).
const MAX_COMMON_NAME_LENGTH = 64;
const SERIAL_LENGTH = 16;

const EC_KEY: EcKeyImportParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGNATURE: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };

/**
 * Creates a private CA: a self-signed v3 certificate (`CA:TRUE`, path length 0, keyCertSign and cRLSign) and
 * its ECDSA P-256 key.
 *
 * @example
 * ```ts
 * import { createCertificateAuthority } from "./dev_certs.ts";
 * const ca = await createCertificateAuthority({ commonName: "My trial CA" });
 * await Deno.writeTextFile("ca.pem", ca.certPem);
 * ```
 */
export async function createCertificateAuthority(
  options: CertificateAuthorityOptions = {},
): Promise<CertificateAuthority> {
  // A distinct default name per CA: verifiers find an issuer by name, so two CAs sharing one are confused for
  // each other (rustls then reports BadSignature where UnknownIssuer would say what is wrong).
  const commonName = checkCommonName(
    options.commonName ?? `${DEFAULT_CA_COMMON_NAME} ${crypto.getRandomValues(new Uint8Array(4)).toHex()}`,
  );
  const validity = validityFromNow(options.validDays ?? DEFAULT_CA_VALID_DAYS);
  const keys = await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }],
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    signingAlgorithm: SIGNATURE,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return {
    certPem: toPem("CERTIFICATE", new Uint8Array(certificate.rawData)),
    keyPem: toPem("PRIVATE KEY", pkcs8),
    privateKey: await importSigningKey(pkcs8, false),
    ...await namesOf(certificate),
    notAfter: validity.notAfter,
  };
}

/**
 * Loads a CA back from its PEMs (as written by {@linkcode createCertificateAuthority} or by openssl), so a CA
 * kept on disk can issue more certificates in a later run. The key must be ECDSA P-256 in PKCS#8 PEM, match
 * the certificate, and the certificate must be a CA (`basicConstraints CA:TRUE`).
 *
 * @example
 * ```ts
 * import { issueCertificate, loadCertificateAuthority } from "./dev_certs.ts";
 * const ca = await loadCertificateAuthority(
 *   await Deno.readTextFile("certs/ca.pem"),
 *   await Deno.readTextFile("certs/ca-key.pem"),
 * );
 * const leaf = await issueCertificate(ca, { dnsNames: ["app.demo.test"] });
 * await Deno.writeTextFile("certs/app.demo.test.pem", leaf.certPem);
 * await Deno.writeTextFile("certs/app.demo.test-key.pem", leaf.keyPem, { mode: 0o600 });
 * ```
 */
export async function loadCertificateAuthority(
  certPem: string,
  keyPem: string,
): Promise<CertificateAuthority> {
  const certificate = new x509.X509Certificate(fromPem(certPem, "CERTIFICATE"));
  if (certificate.getExtension(x509.BasicConstraintsExtension)?.ca !== true) {
    throw new TypeError("The CA certificate is not a CA: expected basicConstraints with CA:TRUE");
  }
  if (/-----BEGIN EC PRIVATE KEY-----/.test(keyPem)) {
    throw new TypeError(
      'The CA key is a SEC1 "EC PRIVATE KEY": expected PKCS#8 "PRIVATE KEY" ' +
        "(convert with `openssl pkcs8 -topk8 -nocrypt`)",
    );
  }
  const pkcs8 = fromPem(keyPem, "PRIVATE KEY");
  let checkKey: CryptoKey;
  try {
    checkKey = await importSigningKey(pkcs8, true);
  } catch (error) {
    throw new TypeError(`The CA key cannot be used: expected an ECDSA P-256 key (${errorMessage(error)})`);
  }
  // The key's public half, as SPKI, must be the certificate's.
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", checkKey);
  const publicKey = await crypto.subtle.importKey("jwk", { kty, crv, x, y }, EC_KEY, true, ["verify"]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
  if (!equalBytes(spki, new Uint8Array(certificate.publicKey.rawData))) {
    throw new TypeError("The CA key does not match the CA certificate's public key");
  }
  return {
    certPem,
    keyPem,
    privateKey: await importSigningKey(pkcs8, false),
    ...await namesOf(certificate),
    notAfter: certificate.notAfter,
  };
}

/**
 * Issues a leaf certificate for TLS servers (and clients): `CA:FALSE`, digitalSignature, serverAuth and
 * clientAuth, with the given DNS names (wildcards such as `*.demo.test` included) and IP addresses as
 * subjectAltName, which is all that TLS clients check.
 *
 * @example
 * ```ts
 * import { createCertificateAuthority, issueCertificate } from "./dev_certs.ts";
 * const ca = await createCertificateAuthority();
 * const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] });
 * const service = await issueCertificate(ca, { dnsNames: ["app.demo.test", "*.demo.test"] });
 * const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: hub.certPem, key: hub.keyPem });
 * // Clients trust the CA: Deno.connectTls({ hostname: "localhost", port, caCerts: [ca.certPem] }).
 * console.log(`hub on port ${listener.addr.port}; service certificate:\n${service.certPem}`);
 * listener.close();
 * ```
 */
export async function issueCertificate(
  ca: CertificateAuthority,
  options: IssueCertificateOptions,
): Promise<IssuedCertificate> {
  const names = parseSubjectAltNames(options.dnsNames, options.ipAddresses ?? []);
  const defaultCommonName = names.labels[0].length <= MAX_COMMON_NAME_LENGTH
    ? names.labels[0]
    : DEFAULT_LEAF_COMMON_NAME;
  const commonName = checkCommonName(options.commonName ?? defaultCommonName);
  const fromNow = validityFromNow(options.validDays ?? DEFAULT_LEAF_VALID_DAYS);
  if (ca.notAfter.getTime() <= fromNow.now.getTime()) {
    throw new RangeError(
      `The CA expired on ${ca.notAfter.toISOString()}: expected a CA still valid; create a new one`,
    );
  }
  // A leaf outliving its CA would only fail later, with a less obvious error.
  const notAfter = fromNow.notAfter > ca.notAfter ? ca.notAfter : fromNow.notAfter;
  const keys = await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [commonName] }],
    // The CA's subject as it is encoded in its certificate, so the leaf's issuer matches it byte for byte.
    issuer: new x509.Name(ca.subjectDer),
    notBefore: fromNow.notBefore,
    notAfter,
    signingAlgorithm: SIGNATURE,
    publicKey: keys.publicKey,
    signingKey: ca.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(names.generalNames),
      new x509.AuthorityKeyIdentifierExtension(ca.keyIdentifier.toHex()),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return {
    certPem: toPem("CERTIFICATE", new Uint8Array(certificate.rawData)),
    keyPem: toPem("PRIVATE KEY", pkcs8),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Checks and conversions

/**
 * What leaves copy from their CA: its subject as encoded, and its subjectKeyIdentifier (openssl's CAs have one,
 * and chain builders match on it), or one computed from its key the same way when it has none.
 */
async function namesOf(
  certificate: x509.X509Certificate,
): Promise<Pick<CertificateAuthority, "subjectDer" | "keyIdentifier">> {
  const keyId = certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ??
    (await x509.SubjectKeyIdentifierExtension.create(certificate.publicKey)).keyId;
  return {
    subjectDer: new Uint8Array(certificate.subjectName.toArrayBuffer()),
    keyIdentifier: Uint8Array.fromHex(keyId),
  };
}

function validityFromNow(validDays: number): { now: Date; notBefore: Date; notAfter: Date } {
  if (!Number.isInteger(validDays) || validDays < 1) {
    throw new RangeError(`Invalid validDays ${validDays}: expected a whole number of days, at least 1`);
  }
  // Whole seconds: the encoded times carry no fractions, and the dates returned should equal the encoded ones.
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  return {
    now,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + validDays * DAY_MS),
  };
}

/** A random serial number as hex: positive (top bit clear) and exactly SERIAL_LENGTH bytes in DER. */
function randomSerial(): string {
  const serial = crypto.getRandomValues(new Uint8Array(SERIAL_LENGTH));
  serial[0] = (serial[0] & 0x7f) | 0x40;
  return serial.toHex();
}

function checkCommonName(commonName: string): string {
  if (commonName.length === 0 || commonName.length > MAX_COMMON_NAME_LENGTH) {
    throw new RangeError(
      `Invalid commonName "${commonName}": expected 1 to ${MAX_COMMON_NAME_LENGTH} characters`,
    );
  }
  return commonName;
}

/** subjectAltName entries, checked, plus their texts for messages and the default common name. */
interface SubjectAltNames {
  readonly generalNames: x509.JsonGeneralName[];
  readonly labels: string[];
}

function parseSubjectAltNames(dnsNames: readonly string[], ipAddresses: readonly string[]): SubjectAltNames {
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new TypeError("No names given: expected at least one DNS name or IP address");
  }
  const generalNames: x509.JsonGeneralName[] = [];
  const labels: string[] = [];
  for (const raw of dnsNames) {
    if (ipAddressText(raw) !== null) {
      throw new TypeError(`Invalid DNS name "${raw}": it is an IP address; pass it in ipAddresses (--ip)`);
    }
    const claim = parseHostnameClaim(raw);
    if (claim.kind === "invalid") throw new TypeError(`Invalid DNS name: ${claim.reason}`);
    const name = claim.kind === "exact" ? claim.name : `*.${claim.suffix}`;
    generalNames.push({ type: "dns", value: name });
    labels.push(name);
  }
  for (const raw of ipAddresses) {
    const text = ipAddressText(raw);
    if (text === null) {
      throw new TypeError(`Invalid IP address "${raw}": expected IPv4 (127.0.0.1) or IPv6 (::1)`);
    }
    generalNames.push({ type: "ip", value: text });
    labels.push(raw.trim());
  }
  return { generalNames, labels };
}

/**
 * An address (IPv6 in brackets too) as the x509 encoder reads it: dotted IPv4, or IPv6 as eight hex groups,
 * so `::ffff:192.0.2.1` stays 16 bytes instead of being taken for IPv4. Null when it is not an address.
 */
function ipAddressText(raw: string): string | null {
  const trimmed = raw.trim();
  const address = parseIpAddress(
    trimmed.startsWith("[") && trimmed.endsWith("]") ? trimmed.slice(1, -1) : trimmed,
  );
  if (address === null) return null;
  const b = address.bytes;
  if (address.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  return Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(":");
}

async function importSigningKey(pkcs8: Uint8Array<ArrayBuffer>, extractable: boolean): Promise<CryptoKey> {
  return await crypto.subtle.importKey("pkcs8", pkcs8, EC_KEY, extractable, ["sign"]);
}

function toPem(label: string, der: Uint8Array): string {
  const lines = der.toBase64().match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function fromPem(pem: string, label: string): Uint8Array<ArrayBuffer> {
  const match = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  if (match === null) throw new TypeError(`Invalid PEM: expected a "${label}" block`);
  return Uint8Array.fromBase64(match[1].replace(/\s+/g, ""));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------------------
// Command line

const USAGE =
  `Usage: deno run --allow-read --allow-write scripts/dev_certs.ts --out DIR --name NAME [--name NAME ...] [--ip IP ...]

Writes DIR/ca.pem and DIR/ca-key.pem (reused when both exist), then a certificate for the names and
addresses, signed by that CA, as DIR/<first name>.pem and DIR/<first name>-key.pem ("*" becomes "_wildcard").

Options:
  --out DIR     Folder to write to (created when missing).
  --name NAME   DNS name the certificate serves, e.g. app.demo.test or *.demo.test. Repeatable.
  --ip IP       IPv4 or IPv6 address the certificate serves, e.g. 127.0.0.1 or ::1. Repeatable.
  -h, --help    Print this help.`;

/** A mistake in the command line: reported in one line with the usage, exit code 2. */
class UsageError extends Error {}

interface CommandLine {
  readonly outDir: string;
  readonly dnsNames: string[];
  readonly ipAddresses: string[];
  /** The names and addresses as they will read in the certificate; the first one names the files. */
  readonly labels: string[];
}

function parseCommandLine(args: string[]): CommandLine | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        out: { type: "string" },
        name: { type: "string", multiple: true },
        ip: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  if (values.help) return "help";
  if (values.out === undefined || values.out === "") throw new UsageError("Missing --out DIR");
  const dnsNames = values.name ?? [];
  if (dnsNames.length === 0) throw new UsageError("Missing --name NAME: expected at least one DNS name");
  const ipAddresses = values.ip ?? [];
  try {
    const { labels } = parseSubjectAltNames(dnsNames, ipAddresses);
    return { outDir: values.out, dnsNames, ipAddresses, labels };
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
}

async function runCommand(commandLine: CommandLine): Promise<void> {
  const { outDir } = commandLine;
  await Deno.mkdir(outDir, { recursive: true });
  const caCertPath = join(outDir, "ca.pem");
  const caKeyPath = join(outDir, "ca-key.pem");
  const [hasCaCert, hasCaKey] = await Promise.all([exists(caCertPath), exists(caKeyPath)]);
  let ca: CertificateAuthority;
  if (hasCaCert && hasCaKey) {
    ca = await loadCertificateAuthority(
      await Deno.readTextFile(caCertPath),
      await Deno.readTextFile(caKeyPath),
    );
    console.log(`Reused CA      ${caCertPath} (key ${caKeyPath})`);
  } else if (hasCaCert || hasCaKey) {
    const [found, missing] = hasCaCert ? [caCertPath, caKeyPath] : [caKeyPath, caCertPath];
    throw new Error(`Found ${found} but not ${missing}: restore it, or delete ${found} to create a new CA`);
  } else {
    ca = await createCertificateAuthority();
    await writePrivateFile(caKeyPath, ca.keyPem);
    await Deno.writeTextFile(caCertPath, ca.certPem);
    console.log(`Created CA     ${caCertPath} (key ${caKeyPath})`);
  }
  const leaf = await issueCertificate(ca, {
    dnsNames: commandLine.dnsNames,
    ipAddresses: commandLine.ipAddresses,
  });
  const { labels } = commandLine;
  const baseName = labels[0].replace("*", "_wildcard");
  const leafCertPath = join(outDir, `${baseName}.pem`);
  const leafKeyPath = join(outDir, `${baseName}-key.pem`);
  await writePrivateFile(leafKeyPath, leaf.keyPem);
  await Deno.writeTextFile(leafCertPath, leaf.certPem);
  console.log(`Wrote cert     ${leafCertPath} for ${labels.join(", ")}`);
  console.log(`Wrote key      ${leafKeyPath}`);
  const exampleHost = labels[0].replace("*", "app");
  console.log(`Trust the CA:  curl --cacert ${caCertPath} https://${exampleHost}/`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Writes a key readable by its owner only, tightening an existing file's mode before it gets the new key. */
async function writePrivateFile(path: string, text: string): Promise<void> {
  if (Deno.build.os !== "windows" && await exists(path)) await Deno.chmod(path, 0o600);
  await Deno.writeTextFile(path, text, { mode: 0o600 });
}

async function main(args: string[]): Promise<number> {
  let commandLine: CommandLine | "help";
  try {
    commandLine = parseCommandLine(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`dev_certs: ${error.message.split("\n")[0]}`);
    console.error(USAGE);
    return 2;
  }
  if (commandLine === "help") {
    console.log(USAGE);
    return 0;
  }
  try {
    await runCommand(commandLine);
    return 0;
  } catch (error) {
    console.error(`dev_certs: ${errorMessage(error)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
