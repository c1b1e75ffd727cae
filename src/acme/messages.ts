/**
 * The ACME resources this client reads (RFC 8555 §7.1): the directory, orders, authorizations and their
 * challenges, each parsed from the server's JSON into a typed value, and the few values derived from them
 * (the HTTP-01 key authorization, `Retry-After`). Pure: no I/O, so each is tested on recorded JSON.
 *
 * @module
 */

import { type AcmeProblem, AcmeProtocolError, isRecord, parseProblem } from "./problem.ts";

/** The directory (§7.1.1): where each request goes. */
export interface AcmeDirectory {
  readonly newNonce: string;
  readonly newAccount: string;
  readonly newOrder: string;
  /** The terms of service the account agrees to by `termsOfServiceAgreed` (§7.3), when the server has any. */
  readonly termsOfService?: string;
}

/** Status of an order (§7.1.6). */
export type OrderStatus = "pending" | "ready" | "processing" | "valid" | "invalid";

/** An order (§7.1.3). */
export interface AcmeOrder {
  readonly status: OrderStatus;
  readonly authorizations: readonly string[];
  readonly finalize: string;
  /** Present once the order is `valid`. */
  readonly certificate?: string;
  /** Why the order became `invalid`, when the server says. */
  readonly error?: AcmeProblem;
}

/** Status of an authorization (§7.1.6). */
export type AuthorizationStatus = "pending" | "valid" | "invalid" | "deactivated" | "expired" | "revoked";

/** An authorization (§7.1.4): proof of control over one identifier, by one of its challenges. */
export interface AcmeAuthorization {
  readonly status: AuthorizationStatus;
  /** The DNS name it is for. */
  readonly identifier: string;
  readonly challenges: readonly AcmeChallenge[];
}

/** Status of a challenge (§7.1.6). */
export type ChallengeStatus = "pending" | "processing" | "valid" | "invalid";

/** A challenge (§8). */
export interface AcmeChallenge {
  /** `http-01`, `dns-01`, `tls-alpn-01`, … */
  readonly type: string;
  readonly url: string;
  readonly status: ChallengeStatus;
  /** The token (§8.1); every challenge type this client answers has one. */
  readonly token?: string;
  /** Why validation failed, when it did. */
  readonly error?: AcmeProblem;
}

const ORDER_STATUSES: readonly OrderStatus[] = ["pending", "ready", "processing", "valid", "invalid"];
const AUTHORIZATION_STATUSES: readonly AuthorizationStatus[] = [
  "pending",
  "valid",
  "invalid",
  "deactivated",
  "expired",
  "revoked",
];
const CHALLENGE_STATUSES: readonly ChallengeStatus[] = ["pending", "processing", "valid", "invalid"];
// RFC 8555 §8.1: a token is base64url, at least 128 bits of entropy; nothing else may reach a URL path.
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{22,}$/;

/**
 * Reads the directory.
 *
 * @example
 * ```ts
 * import { parseDirectory } from "./messages.ts";
 * parseDirectory({ newNonce: "https://ca/nonce", newAccount: "https://ca/acct", newOrder: "https://ca/order" });
 * ```
 */
export function parseDirectory(json: unknown): AcmeDirectory {
  const body = record(json, "directory");
  const meta = isRecord(body.meta) ? body.meta : {};
  return {
    newNonce: url(body, "newNonce", "directory"),
    newAccount: url(body, "newAccount", "directory"),
    newOrder: url(body, "newOrder", "directory"),
    ...(typeof meta.termsOfService === "string" ? { termsOfService: meta.termsOfService } : {}),
  };
}

/** Reads an order. */
export function parseOrder(json: unknown): AcmeOrder {
  const body = record(json, "order");
  const status = oneOf(body, "status", ORDER_STATUSES, "order");
  if (!Array.isArray(body.authorizations) || body.authorizations.some((item) => !isUrl(item))) {
    throw new AcmeProtocolError("the order's authorizations are not a list of URLs");
  }
  return {
    status,
    authorizations: body.authorizations as string[],
    finalize: url(body, "finalize", "order"),
    ...(isUrl(body.certificate) ? { certificate: body.certificate } : {}),
    ...(body.error !== undefined ? { error: parseProblem(body.error, 0) } : {}),
  };
}

/** Reads an authorization. */
export function parseAuthorization(json: unknown): AcmeAuthorization {
  const body = record(json, "authorization");
  const status = oneOf(body, "status", AUTHORIZATION_STATUSES, "authorization");
  const identifier = isRecord(body.identifier) ? body.identifier : {};
  if (identifier.type !== "dns" || typeof identifier.value !== "string") {
    throw new AcmeProtocolError("the authorization's identifier is not a DNS name");
  }
  if (!Array.isArray(body.challenges)) {
    throw new AcmeProtocolError("the authorization has no list of challenges");
  }
  return { status, identifier: identifier.value, challenges: body.challenges.map(parseChallenge) };
}

/** Reads a challenge. */
export function parseChallenge(json: unknown): AcmeChallenge {
  const body = record(json, "challenge");
  if (typeof body.type !== "string") throw new AcmeProtocolError("a challenge has no type");
  const token = body.token;
  if (token !== undefined && (typeof token !== "string" || !TOKEN_PATTERN.test(token))) {
    throw new AcmeProtocolError("a challenge's token is not base64url of at least 128 bits");
  }
  return {
    type: body.type,
    url: url(body, "url", "challenge"),
    status: oneOf(body, "status", CHALLENGE_STATUSES, "challenge"),
    ...(typeof token === "string" ? { token } : {}),
    ...(body.error !== undefined ? { error: parseProblem(body.error, 0) } : {}),
  };
}

/**
 * The HTTP-01 key authorization (§8.1): the token, a dot, and the account key's JWK thumbprint (RFC 7638).
 *
 * @example
 * ```ts
 * import { keyAuthorization } from "./messages.ts";
 * keyAuthorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI");
 * ```
 */
export function keyAuthorization(token: string, accountThumbprint: string): string {
  return `${token}.${accountThumbprint}`;
}

/**
 * Reads `Retry-After` (RFC 9110 §10.2.3: seconds or an HTTP date) as milliseconds from `nowMs`, or `undefined`
 * when absent or unreadable; a date in the past is 0.
 *
 * @example
 * ```ts
 * import { parseRetryAfter } from "./messages.ts";
 * parseRetryAfter("120", 0); // 120000
 * ```
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

function record(json: unknown, what: string): Record<string, unknown> {
  if (!isRecord(json)) throw new AcmeProtocolError(`the ${what} is not a JSON object`);
  return json;
}

function url(body: Record<string, unknown>, key: string, what: string): string {
  const value = body[key];
  if (!isUrl(value)) throw new AcmeProtocolError(`the ${what}'s ${key} is not an http(s) URL`);
  return value;
}

function isUrl(value: unknown): value is string {
  return typeof value === "string" && /^https?:\/\/[^\s]+$/.test(value);
}

function oneOf<T extends string>(
  body: Record<string, unknown>,
  key: string,
  values: readonly T[],
  what: string,
): T {
  const value = body[key];
  if (typeof value !== "string" || !(values as readonly string[]).includes(value)) {
    throw new AcmeProtocolError(
      `the ${what}'s ${key} ${JSON.stringify(value)} is none of ${values.join(", ")}`,
    );
  }
  return value as T;
}
