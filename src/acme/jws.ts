/**
 * The JWS that carries every ACME request (RFC 8555 §6.2): flattened JSON serialization, ES256, with `nonce`
 * and `url` in the protected header, and the account's public key (`jwk`) before the account exists or its URL
 * (`kid`) after.
 *
 * @module
 */

import { calculateJwkThumbprint, exportJWK, FlattenedSign, type JWK } from "jose";

/** The signature algorithm of account keys: ECDSA P-256 with SHA-256, which every ACME server accepts. */
const JWS_ALGORITHM = "ES256";
const encoder = new TextEncoder();

/** An ACME account key, ready to sign with. */
export interface AccountKey {
  readonly privateKey: CryptoKey;
  /** The public half as a JWK (for `jwk` in the header of `newAccount`). */
  readonly publicJwk: JWK;
  /** RFC 7638 thumbprint of `publicJwk`, base64url: the second half of every key authorization (§8.1). */
  readonly thumbprint: string;
}

/** Makes a fresh ECDSA P-256 key pair, extractable so it can be kept in the state directory. */
export function generateAccountKeyPair(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
}

/**
 * Turns a key pair into an {@linkcode AccountKey}.
 *
 * @example
 * ```ts
 * import { accountKey, generateAccountKeyPair } from "./jws.ts";
 * const key = await accountKey(await generateAccountKeyPair());
 * console.log(key.thumbprint.length); // 43
 * ```
 */
export async function accountKey(pair: CryptoKeyPair): Promise<AccountKey> {
  const full = await exportJWK(pair.publicKey);
  // Only the members of the public key: exportJWK adds `key_ops`/`ext`, which have no place in a header.
  const publicJwk: JWK = { kty: full.kty, crv: full.crv, x: full.x, y: full.y };
  return { privateKey: pair.privateKey, publicJwk, thumbprint: await calculateJwkThumbprint(publicJwk) };
}

/** What the protected header names besides the algorithm. */
export interface JwsTarget {
  readonly url: string;
  readonly nonce: string;
  /** The account URL; absent for `newAccount`, which carries the public key instead. */
  readonly kid?: string;
}

/**
 * Signs one request and returns the request body (`application/jose+json`). `payload` `undefined` is a
 * POST-as-GET (§6.3): an empty payload, not `{}`.
 *
 * @example
 * ```ts
 * import { accountKey, generateAccountKeyPair, signRequest } from "./jws.ts";
 * const key = await accountKey(await generateAccountKeyPair());
 * const body = await signRequest(key, { url: "https://ca/order/1", nonce: "abc", kid: "https://ca/acct/1" }, undefined);
 * console.log(JSON.parse(body).payload); // ""
 * ```
 */
export async function signRequest(key: AccountKey, target: JwsTarget, payload: unknown): Promise<string> {
  const bytes = payload === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(payload));
  const jws = await new FlattenedSign(bytes)
    .setProtectedHeader({
      alg: JWS_ALGORITHM,
      nonce: target.nonce,
      url: target.url,
      ...(target.kid === undefined ? { jwk: key.publicJwk } : { kid: target.kid }),
    })
    .sign(key.privateKey);
  return JSON.stringify(jws);
}
