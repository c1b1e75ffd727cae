/**
 * Throw-away certificates for local trials, the demo and the tests: a private CA and the leaf certificates it
 * signs, made with WebCrypto (ECDSA P-256, SHA-256) and a small DER encoder, so neither openssl nor a
 * dependency is needed.
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

import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseHostnameClaim } from "../src/hostnames/hostname.ts";

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

/** Bytes over a plain ArrayBuffer, as WebCrypto accepts them. */
type Bytes = Uint8Array<ArrayBuffer>;

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

const OID = {
  commonName: "2.5.4.3",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

// KeyUsage bits (RFC 5280 §4.2.1.3), numbered from the most significant bit of the first byte.
const KEY_USAGE_DIGITAL_SIGNATURE = 0;
const KEY_USAGE_KEY_CERT_SIGN = 5;
const KEY_USAGE_CRL_SIGN = 6;

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
  const keys = await generateKeyPair();
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const keyIdentifier = await keyIdentifierOf(spki);
  const subjectDer = encodeName(commonName);
  const extensions = [
    extension(OID.basicConstraints, true, sequence(booleanTrue(), smallInteger(0))),
    extension(OID.keyUsage, true, keyUsage(KEY_USAGE_KEY_CERT_SIGN, KEY_USAGE_CRL_SIGN)),
    extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier)),
  ];
  const certDer = await signCertificate({
    issuerDer: subjectDer,
    subjectDer,
    spki,
    extensions,
    validity,
    signingKey: keys.privateKey,
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return {
    certPem: toPem("CERTIFICATE", certDer),
    keyPem: toPem("PRIVATE KEY", pkcs8),
    privateKey: await importSigningKey(pkcs8, false),
    subjectDer,
    keyIdentifier,
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
  const certDer = fromPem(certPem, "CERTIFICATE");
  const parsed = parseCertificate(certDer);
  if (!parsed.isCa) {
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
  const jwk = await crypto.subtle.exportKey("jwk", checkKey);
  const publicPoint = concat(
    [0x04],
    Uint8Array.fromBase64(jwk.x ?? "", { alphabet: "base64url" }),
    Uint8Array.fromBase64(jwk.y ?? "", { alphabet: "base64url" }),
  );
  if (!equalBytes(publicPoint, parsed.publicKey)) {
    throw new TypeError("The CA key does not match the CA certificate's public key");
  }
  return {
    certPem,
    keyPem,
    privateKey: await importSigningKey(pkcs8, false),
    subjectDer: parsed.subjectDer,
    keyIdentifier: parsed.subjectKeyIdentifier ?? await sha1(parsed.publicKey),
    notAfter: parsed.notAfter,
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
  const validity = { ...fromNow, notAfter: fromNow.notAfter > ca.notAfter ? ca.notAfter : fromNow.notAfter };
  const keys = await generateKeyPair();
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const extensions = [
    extension(OID.basicConstraints, true, sequence()),
    extension(OID.keyUsage, true, keyUsage(KEY_USAGE_DIGITAL_SIGNATURE)),
    extension(
      OID.extKeyUsage,
      false,
      sequence(objectIdentifier(OID.serverAuth), objectIdentifier(OID.clientAuth)),
    ),
    extension(OID.subjectAltName, false, sequence(...names.generalNames)),
    extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, ca.keyIdentifier))),
    extension(OID.subjectKeyIdentifier, false, octetString(await keyIdentifierOf(spki))),
  ];
  const certDer = await signCertificate({
    issuerDer: ca.subjectDer,
    subjectDer: encodeName(commonName),
    spki,
    extensions,
    validity,
    signingKey: ca.privateKey,
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return { certPem: toPem("CERTIFICATE", certDer), keyPem: toPem("PRIVATE KEY", pkcs8) };
}

// ---------------------------------------------------------------------------------------------------------
// Certificate assembly (RFC 5280 §4.1)

interface Validity {
  readonly now: Date;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

interface CertificateToSign {
  readonly issuerDer: Bytes;
  readonly subjectDer: Bytes;
  readonly spki: Bytes;
  readonly extensions: Bytes[];
  readonly validity: Validity;
  readonly signingKey: CryptoKey;
}

async function signCertificate(input: CertificateToSign): Promise<Bytes> {
  const signatureAlgorithm = sequence(objectIdentifier(OID.ecdsaWithSha256)); // no parameters (RFC 5758 §3.2)
  const tbs = sequence(
    explicit(0, smallInteger(2)), // v3
    integer(randomSerial()),
    signatureAlgorithm,
    input.issuerDer,
    sequence(time(input.validity.notBefore), time(input.validity.notAfter)),
    input.subjectDer,
    input.spki,
    explicit(3, sequence(...input.extensions)),
  );
  const rawSignature = new Uint8Array(await crypto.subtle.sign(SIGNATURE, input.signingKey, tbs));
  // WebCrypto gives r || s; X.509 wants ECDSA-Sig-Value, a SEQUENCE of two INTEGERs (RFC 3279 §2.2.3).
  const half = rawSignature.length / 2;
  const signature = sequence(integer(rawSignature.subarray(0, half)), integer(rawSignature.subarray(half)));
  return sequence(tbs, signatureAlgorithm, bitString(signature));
}

function validityFromNow(validDays: number): Validity {
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

function randomSerial(): Bytes {
  const serial = crypto.getRandomValues(new Uint8Array(SERIAL_LENGTH));
  // Positive (top bit clear) and exactly SERIAL_LENGTH bytes in DER (second-highest bit set).
  serial[0] = (serial[0] & 0x7f) | 0x40;
  return serial;
}

function encodeName(commonName: string): Bytes {
  return sequence(set(sequence(objectIdentifier(OID.commonName), utf8String(commonName))));
}

function checkCommonName(commonName: string): string {
  if (commonName.length === 0 || commonName.length > MAX_COMMON_NAME_LENGTH) {
    throw new RangeError(
      `Invalid commonName "${commonName}": expected 1 to ${MAX_COMMON_NAME_LENGTH} characters`,
    );
  }
  return commonName;
}

function extension(oid: string, critical: boolean, value: Bytes): Bytes {
  // `critical` is DEFAULT FALSE, so DER leaves it out when false.
  return critical
    ? sequence(objectIdentifier(oid), booleanTrue(), octetString(value))
    : sequence(objectIdentifier(oid), octetString(value));
}

function keyUsage(...bits: number[]): Bytes {
  const highest = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3] |= 0x80 >> (bit & 7);
  // DER drops trailing zero bits: the unused-bits count says how many of the last byte are padding.
  return bitString(bytes, 7 - (highest & 7));
}

/** subjectAltName entries, checked, plus their texts for messages and the default common name. */
interface SubjectAltNames {
  readonly generalNames: Bytes[];
  readonly labels: string[];
}

function parseSubjectAltNames(dnsNames: readonly string[], ipAddresses: readonly string[]): SubjectAltNames {
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new TypeError("No names given: expected at least one DNS name or IP address");
  }
  const generalNames: Bytes[] = [];
  const labels: string[] = [];
  for (const raw of dnsNames) {
    if (parseIpAddress(raw.trim()) !== null) {
      throw new TypeError(`Invalid DNS name "${raw}": it is an IP address; pass it in ipAddresses (--ip)`);
    }
    const claim = parseHostnameClaim(raw);
    if (claim.kind === "invalid") throw new TypeError(`Invalid DNS name: ${claim.reason}`);
    const name = claim.kind === "exact" ? claim.name : `*.${claim.suffix}`;
    generalNames.push(tlv(0x82, new TextEncoder().encode(name))); // [2] dNSName, IA5String
    labels.push(name);
  }
  for (const raw of ipAddresses) {
    const bytes = parseIpAddress(raw.trim());
    if (bytes === null) {
      throw new TypeError(`Invalid IP address "${raw}": expected IPv4 (127.0.0.1) or IPv6 (::1)`);
    }
    generalNames.push(tlv(0x87, bytes)); // [7] iPAddress, 4 or 16 octets
    labels.push(raw.trim());
  }
  return { generalNames, labels };
}

function parseIpAddress(raw: string): Bytes | null {
  const text = raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw;
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

function parseIpv4(text: string): Bytes | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (const [index, part] of parts.entries()) {
    // No leading zeros: "010" is octal to some parsers and decimal to others.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return null;
    bytes[index] = Number(part);
  }
  return bytes;
}

function parseIpv6(text: string): Bytes | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = parseIpv6Groups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? parseIpv6Groups(halves[1], true) : [];
  if (head === null || tail === null) return null;
  const groupCount = head.length + tail.length;
  if (halves.length === 1 ? groupCount !== 8 : groupCount > 7) return null;
  const groups = [...head, ...new Array<number>(8 - groupCount).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (const [index, group] of groups.entries()) {
    bytes[index * 2] = group >> 8;
    bytes[index * 2 + 1] = group & 0xff;
  }
  return bytes;
}

function parseIpv6Groups(text: string, mayEndInIpv4: boolean): number[] | null {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (mayEndInIpv4 && index === parts.length - 1 && part.includes(".")) {
      const ipv4 = parseIpv4(part);
      if (ipv4 === null) return null;
      groups.push((ipv4[0] << 8) | ipv4[1], (ipv4[2] << 8) | ipv4[3]);
    } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return null;
    }
  }
  return groups;
}

// ---------------------------------------------------------------------------------------------------------
// Keys

async function generateKeyPair(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
}

async function importSigningKey(pkcs8: Bytes, extractable: boolean): Promise<CryptoKey> {
  return await crypto.subtle.importKey("pkcs8", pkcs8, EC_KEY, extractable, ["sign"]);
}

/** The key identifier of RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits, as openssl does. */
async function keyIdentifierOf(spki: Bytes): Promise<Bytes> {
  return await sha1(subjectPublicKeyBits(spki));
}

async function sha1(bytes: Bytes): Promise<Bytes> {
  return new Uint8Array(await crypto.subtle.digest("SHA-1", bytes));
}

function subjectPublicKeyBits(spki: Bytes): Bytes {
  const [, publicKey] = children(spki, readNode(spki, 0));
  // Skip the BIT STRING's unused-bits byte.
  return spki.subarray(publicKey.contentStart + 1, publicKey.end);
}

// ---------------------------------------------------------------------------------------------------------
// Reading a CA certificate back: just the fields a CA needs to sign.

interface ParsedCertificate {
  readonly subjectDer: Bytes;
  readonly publicKey: Bytes;
  readonly subjectKeyIdentifier: Bytes | undefined;
  readonly notAfter: Date;
  readonly isCa: boolean;
}

function parseCertificate(der: Bytes): ParsedCertificate {
  try {
    const [tbs] = children(der, readNode(der, 0));
    const fields = children(der, tbs);
    const rest = fields[0].tag === 0xa0 ? fields.slice(1) : fields; // [0] version is optional (v1)
    const [, , , validity, subject, spki, ...optional] = rest;
    if (spki === undefined) throw new Error("too few TBSCertificate fields");
    const [, notAfter] = children(der, validity);
    let subjectKeyIdentifier: Bytes | undefined;
    let isCa = false;
    const extensionsWrapper = optional.find((node) => node.tag === 0xa3);
    const extensions = extensionsWrapper === undefined
      ? []
      : children(der, children(der, extensionsWrapper)[0]);
    for (const ext of extensions) {
      const parts = children(der, ext);
      const oid = decodeObjectIdentifier(der.subarray(parts[0].contentStart, parts[0].end));
      const valueNode = parts[parts.length - 1];
      const value = der.subarray(valueNode.contentStart, valueNode.end);
      if (oid === OID.subjectKeyIdentifier) {
        const keyId = readNode(value, 0);
        subjectKeyIdentifier = value.slice(keyId.contentStart, keyId.end);
      } else if (oid === OID.basicConstraints) {
        const [first] = children(value, readNode(value, 0));
        isCa = first !== undefined && first.tag === 0x01 && value[first.contentStart] !== 0;
      }
    }
    const spkiDer = der.subarray(spki.start, spki.end);
    return {
      subjectDer: der.slice(subject.start, subject.end),
      publicKey: subjectPublicKeyBits(spkiDer).slice(),
      subjectKeyIdentifier,
      notAfter: decodeTime(der, notAfter),
      isCa,
    };
  } catch (error) {
    throw new TypeError(`The CA certificate is not a valid X.509 certificate (${errorMessage(error)})`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// DER (X.690), the small subset X.509 needs

function tlv(tag: number, ...contents: Bytes[]): Bytes {
  const content = concat(...contents);
  const length = content.length;
  let header: number[];
  if (length < 0x80) {
    header = [tag, length];
  } else {
    const lengthBytes: number[] = [];
    for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) lengthBytes.unshift(rest & 0xff);
    header = [tag, 0x80 | lengthBytes.length, ...lengthBytes];
  }
  return concat(header, content);
}

function sequence(...items: Bytes[]): Bytes {
  return tlv(0x30, ...items);
}

function set(...items: Bytes[]): Bytes {
  return tlv(0x31, ...items);
}

function explicit(tagNumber: number, content: Bytes): Bytes {
  return tlv(0xa0 | tagNumber, content);
}

function booleanTrue(): Bytes {
  return tlv(0x01, new Uint8Array([0xff]));
}

/** An INTEGER from an unsigned big-endian magnitude. */
function integer(magnitude: Bytes): Bytes {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  // A leading 0x00 keeps a magnitude with its top bit set positive.
  return (trimmed[0] & 0x80) !== 0 ? tlv(0x02, new Uint8Array([0]), trimmed) : tlv(0x02, trimmed);
}

function smallInteger(value: number): Bytes {
  return integer(new Uint8Array([value]));
}

function bitString(bytes: Bytes, unusedBits = 0): Bytes {
  return tlv(0x03, new Uint8Array([unusedBits]), bytes);
}

function octetString(bytes: Bytes): Bytes {
  return tlv(0x04, bytes);
}

function utf8String(text: string): Bytes {
  return tlv(0x0c, new TextEncoder().encode(text));
}

function objectIdentifier(dotted: string): Bytes {
  const arcs = dotted.split(".").map(Number);
  const bytes: number[] = [];
  for (const arc of [arcs[0] * 40 + arcs[1], ...arcs.slice(2)]) {
    const base128 = [arc & 0x7f];
    for (let rest = arc >>> 7; rest > 0; rest >>>= 7) base128.unshift((rest & 0x7f) | 0x80);
    bytes.push(...base128);
  }
  return tlv(0x06, new Uint8Array(bytes));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). */
function time(date: Date): Bytes {
  const year = date.getUTCFullYear();
  const pad = (value: number) => String(value).padStart(2, "0");
  const rest = pad(date.getUTCMonth() + 1) + pad(date.getUTCDate()) + pad(date.getUTCHours()) +
    pad(date.getUTCMinutes()) + pad(date.getUTCSeconds()) + "Z";
  return year < 2050
    ? tlv(0x17, new TextEncoder().encode(pad(year % 100) + rest))
    : tlv(0x18, new TextEncoder().encode(String(year) + rest));
}

interface DerNode {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly start: number;
  readonly contentStart: number;
  /** Offset just past the content. */
  readonly end: number;
}

function readNode(bytes: Bytes, offset: number): DerNode {
  if (offset + 2 > bytes.length) throw new Error(`truncated DER at offset ${offset}`);
  const tag = bytes[offset];
  if ((tag & 0x1f) === 0x1f) throw new Error(`unsupported multi-byte DER tag at offset ${offset}`);
  let length = bytes[offset + 1];
  let contentStart = offset + 2;
  if (length & 0x80) {
    const lengthBytes = length & 0x7f;
    if (lengthBytes === 0 || lengthBytes > 4) throw new Error(`unsupported DER length at offset ${offset}`);
    length = 0;
    for (let index = 0; index < lengthBytes; index++) length = length * 256 + bytes[contentStart + index];
    contentStart += lengthBytes;
  }
  const end = contentStart + length;
  if (end > bytes.length) throw new Error(`truncated DER at offset ${offset}`);
  return { tag, start: offset, contentStart, end };
}

function children(bytes: Bytes, parent: DerNode): DerNode[] {
  const nodes: DerNode[] = [];
  for (let offset = parent.contentStart; offset < parent.end;) {
    const node = readNode(bytes, offset);
    if (node.end > parent.end) throw new Error(`DER element overruns its parent at offset ${offset}`);
    nodes.push(node);
    offset = node.end;
  }
  return nodes;
}

function decodeObjectIdentifier(content: Bytes): string {
  const arcs: number[] = [];
  let value = 0;
  for (const byte of content) {
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  const first = Math.min(Math.floor(arcs[0] / 40), 2);
  return [first, arcs[0] - first * 40, ...arcs.slice(1)].join(".");
}

function decodeTime(bytes: Bytes, node: DerNode): Date {
  const text = new TextDecoder().decode(bytes.subarray(node.contentStart, node.end));
  const match = node.tag === 0x17
    ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
    : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (match === null) throw new Error(`unsupported certificate time "${text}"`);
  const [year, month, day, hours, minutes, seconds] = match.slice(1).map(Number);
  // UTCTime years 50-99 are 19xx (RFC 5280 §4.1.2.5.1).
  const fullYear = node.tag === 0x17 ? (year < 50 ? 2000 + year : 1900 + year) : year;
  return new Date(Date.UTC(fullYear, month - 1, day, hours, minutes, seconds));
}

// ---------------------------------------------------------------------------------------------------------
// PEM and bytes

function toPem(label: string, der: Bytes): string {
  const lines = der.toBase64().match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function fromPem(pem: string, label: string): Bytes {
  const match = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  if (match === null) throw new TypeError(`Invalid PEM: expected a "${label}" block`);
  return Uint8Array.fromBase64(match[1].replace(/\s+/g, ""));
}

function concat(...parts: ArrayLike<number>[]): Bytes {
  const out = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function equalBytes(a: Bytes, b: Bytes): boolean {
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
