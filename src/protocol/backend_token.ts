/**
 * Backend tokens: HS256 JWTs from the central authorizer (or our `token` command, or the agent itself) whose
 * claims name the hostnames a backend serves and its weight (docs/protocol.md §4.3).
 *
 * Error text is protocol (§4.5): the original client gives up for good after five rejections whose
 * reason contains `authentication failed`, `forbidden`, `invalid token` and the like, and retries forever
 * otherwise. So a wrong secret or a token that can never be accepted says `authentication failed` or
 * `forbidden`; something that may heal (expiry, clock skew, a nonce race) says neither.
 *
 * @module
 */

import { errors, jwtVerify, SignJWT } from "jose";
import { claimKey, type HostnameClaim, parseHostnameClaim } from "../hostnames/hostname.ts";

/** Required `iss` (§4.3). */
const TOKEN_ISSUER = "authorizer";
/** Required `aud` (§4.3). */
const TOKEN_AUDIENCE = "nexus";
/** Largest weight a token may claim. */
export const MAX_WEIGHT = 10_000;
const ALGORITHMS = ["HS256", "HS384", "HS512"];

/** What a verified token says about a backend. */
export interface BackendTokenClaims {
  /** The backend's name (`sub`), for logs only. */
  readonly name: string;
  /** Claimed names, deduplicated. */
  readonly hostnames: readonly HostnameClaim[];
  /** Weight in its pools; tokens with none, or ≤ 0, get 1 (§4.3). */
  readonly weight: number;
  /** Whether the token carried a weight claim at all (stage 1 may omit it, §4.2). */
  readonly weightClaimed: boolean;
  readonly sessionNonce?: string;
  /** Port claims this node does not serve; reported, not silently dropped. */
  readonly ignoredPortClaims: boolean;
}

/** The outcome of checking a token. */
export type TokenVerdict =
  | { readonly ok: true; readonly claims: BackendTokenClaims }
  | { readonly ok: false; readonly reason: string };

/**
 * Verifies a backend token's signature and standard claims and reads its backend claims.
 *
 * @example
 * ```ts
 * import { signBackendToken, verifyBackendToken } from "./backend_token.ts";
 * const secret = new TextEncoder().encode("demo-secret");
 * const token = await signBackendToken({ secret, name: "app-1", hostnames: ["app.example.com"], weight: 1 });
 * (await verifyBackendToken(token, secret)).ok; // true
 * ```
 */
export async function verifyBackendToken(
  token: string,
  secret: Uint8Array | readonly Uint8Array[],
): Promise<TokenVerdict> {
  // With several secrets (the current one first, then those retired but still accepted during a rotation),
  // the first whose signature matches decides: its expiry or claims are what the backend is told about.
  const secrets = secret instanceof Uint8Array ? [secret] : secret;
  let mismatch: TokenVerdict = { ok: false, reason: "authentication failed: no backends secret" };
  for (const candidate of secrets) {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token.trim(), candidate, {
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        algorithms: ALGORITHMS,
      }));
    } catch (error) {
      const verdict: TokenVerdict = { ok: false, reason: describeJoseError(error) };
      if (!(error instanceof errors.JWSSignatureVerificationFailed)) return verdict;
      mismatch = verdict;
      continue;
    }
    return readClaims(payload);
  }
  return mismatch;
}

function describeJoseError(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "token expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    // Only a well-formed nbf in the future may heal; a malformed one never will (and must say so, §4.5).
    if (error.claim === "nbf" && error.reason === "check_failed") return "token not yet valid";
    if (error.claim === "iss") return `authentication failed: token issuer must be "${TOKEN_ISSUER}"`;
    if (error.claim === "aud") {
      return `authentication failed: token audience must include "${TOKEN_AUDIENCE}"`;
    }
    return `authentication failed: token claim ${error.claim} rejected`;
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "authentication failed: token signature does not match the backends secret";
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return "authentication failed: token must be signed with HS256, HS384 or HS512";
  }
  return "authentication failed: not a well-formed JWT";
}

function readClaims(payload: Record<string, unknown>): TokenVerdict {
  const { sub, hostnames, weight, session_nonce: nonce, tcp_ports: tcpPorts, udp_routes: udpRoutes } =
    payload;
  const names = hostnames ?? [];
  if (!Array.isArray(names) || !names.every((n) => typeof n === "string")) {
    return { ok: false, reason: "forbidden: hostnames claim must be a list of names" };
  }
  const claims = new Map<string, HostnameClaim>();
  for (const raw of names as string[]) {
    const claim = parseHostnameClaim(raw);
    if (claim.kind === "invalid") return { ok: false, reason: `forbidden: ${claim.reason}` };
    claims.set(claimKey(claim), claim);
  }
  const ignoredPortClaims = isNonEmptyList(tcpPorts) || isNonEmptyList(udpRoutes);
  if (claims.size === 0) {
    return {
      ok: false,
      reason: ignoredPortClaims
        ? "forbidden: token claims only ports; this node routes by hostname"
        : "forbidden: token claims no hostnames",
    };
  }
  if (weight !== undefined && (!Number.isInteger(weight) || (weight as number) > MAX_WEIGHT)) {
    return { ok: false, reason: `forbidden: weight must be an integer up to ${MAX_WEIGHT}` };
  }
  if (nonce !== undefined && typeof nonce !== "string") {
    return { ok: false, reason: "forbidden: session_nonce must be a string" };
  }
  return {
    ok: true,
    claims: {
      name: typeof sub === "string" ? sub.slice(0, 100) : "",
      hostnames: [...claims.values()],
      weight: typeof weight === "number" && weight > 0 ? weight : 1,
      weightClaimed: typeof weight === "number" && weight > 0,
      ...(typeof nonce === "string" ? { sessionNonce: nonce } : {}),
      ignoredPortClaims,
    },
  };
}

function isNonEmptyList(value: unknown): boolean {
  return Array.isArray(value) && value.length > 0;
}

/** What {@linkcode signBackendToken} puts in a token. */
export interface BackendTokenRequest {
  readonly secret: Uint8Array;
  readonly name: string;
  readonly hostnames: readonly string[];
  readonly weight: number;
  /** Seconds until `exp` (the original client's default is 30). */
  readonly ttlSeconds?: number;
  /** The challenge nonce, for the second stage of the handshake and re-authentication. */
  readonly sessionNonce?: string;
}

/** Signs an HS256 backend token the way the original's client does (§4.3, §4.4). */
export function signBackendToken(request: BackendTokenRequest): Promise<string> {
  const claims: Record<string, unknown> = { hostnames: [...request.hostnames], weight: request.weight };
  if (request.sessionNonce !== undefined) claims.session_nonce = request.sessionNonce;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(TOKEN_ISSUER)
    .setAudience(TOKEN_AUDIENCE)
    .setSubject(request.name)
    .setIssuedAt()
    .setExpirationTime(`${request.ttlSeconds ?? 30}s`)
    .sign(request.secret);
}

/** Whether two claim sets name the same hostnames (stage 1 must repeat stage 0 exactly, §4.2). */
export function sameHostnames(a: readonly HostnameClaim[], b: readonly HostnameClaim[]): boolean {
  if (a.length !== b.length) return false;
  const keys = new Set(a.map(claimKey));
  return b.every((claim) => keys.has(claimKey(claim)));
}
