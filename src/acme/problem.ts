/**
 * ACME problem documents (RFC 8555 §6.7, RFC 7807) as typed errors, so that a caller can tell a refusal that
 * may heal (a rate limit, a bad nonce, the server busy) from one that will not (a name the CA refuses), and log
 * exactly what the server said. Pure.
 *
 * @module
 */

/** The namespace of the error types RFC 8555 §6.7 defines. */
const ACME_ERROR_NAMESPACE = "urn:ietf:params:acme:error:";

/** A problem document as the ACME server sent it. */
export interface AcmeProblem {
  /** The full type URI, e.g. `urn:ietf:params:acme:error:rateLimited`. */
  readonly type: string;
  /** The server's human-readable explanation. */
  readonly detail: string;
  /** The HTTP status the server answered with. */
  readonly status: number;
  /** The identifier a sub-problem is about (RFC 8555 §6.7.1), as `dns:name`. */
  readonly identifier?: string;
  readonly subproblems?: readonly AcmeProblem[];
}

/**
 * The problem types this client acts on: `badNonce` is retried at once with the fresh nonce (§6.5),
 * `accountDoesNotExist` answers `onlyReturnExisting` for a new account key (§7.3.1), `rateLimited` waits for
 * `Retry-After` (§6.6).
 */
export const ACME_ERRORS = {
  badNonce: `${ACME_ERROR_NAMESPACE}badNonce`,
  accountDoesNotExist: `${ACME_ERROR_NAMESPACE}accountDoesNotExist`,
  rateLimited: `${ACME_ERROR_NAMESPACE}rateLimited`,
} as const;

/** The ACME server refused a request and said why. */
export class AcmeProblemError extends Error {
  override readonly name = "AcmeProblemError";
  readonly problem: AcmeProblem;
  /** What was asked: the request's URL. */
  readonly url: string;
  /** The server's `Retry-After`, in milliseconds from when it answered, when it gave one. */
  readonly retryAfterMs?: number;

  constructor(problem: AcmeProblem, url: string, retryAfterMs?: number) {
    super(`the ACME server refused ${url}: ${describeProblem(problem)}`);
    this.problem = problem;
    this.url = url;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }

  /** Whether the problem is of this type (a key of {@linkcode ACME_ERRORS}). */
  is(kind: keyof typeof ACME_ERRORS): boolean {
    return this.problem.type === ACME_ERRORS[kind];
  }
}

/** The ACME server answered something that is not what RFC 8555 says it must (a broken or wrong server). */
export class AcmeProtocolError extends Error {
  override readonly name = "AcmeProtocolError";
}

/**
 * Reads a problem document from a response body, or makes one from the status when the body is none (a
 * proxy's HTML error page, say), so every refusal is reported the same way.
 *
 * @example
 * ```ts
 * import { parseProblem } from "./problem.ts";
 * parseProblem({ type: "urn:ietf:params:acme:error:rateLimited", detail: "too many" }, 429);
 * // { type: "urn:ietf:params:acme:error:rateLimited", detail: "too many", status: 429 }
 * ```
 */
export function parseProblem(body: unknown, status: number): AcmeProblem {
  if (!isRecord(body)) {
    return { type: "about:blank", detail: `HTTP ${status} without a problem document`, status };
  }
  const subproblems = Array.isArray(body.subproblems)
    ? body.subproblems.map((sub) => parseProblem(sub, status))
    : [];
  const identifier = isRecord(body.identifier) && typeof body.identifier.value === "string"
    ? `${String(body.identifier.type)}:${body.identifier.value}`
    : undefined;
  return {
    type: typeof body.type === "string" ? body.type : "about:blank",
    detail: typeof body.detail === "string" ? body.detail : "",
    status: typeof body.status === "number" ? body.status : status,
    ...(identifier === undefined ? {} : { identifier }),
    ...(subproblems.length > 0 ? { subproblems } : {}),
  };
}

/**
 * One line for a log: the short type (`rateLimited` for the ACME namespace), the status, the detail, and each
 * sub-problem with its identifier.
 *
 * @example
 * ```ts
 * import { describeProblem } from "./problem.ts";
 * describeProblem({ type: "urn:ietf:params:acme:error:rejectedIdentifier", detail: "no", status: 400 });
 * // "rejectedIdentifier (400): no"
 * ```
 */
export function describeProblem(problem: AcmeProblem): string {
  const type = problem.type.startsWith(ACME_ERROR_NAMESPACE)
    ? problem.type.slice(ACME_ERROR_NAMESPACE.length)
    : problem.type;
  const subs = (problem.subproblems ?? []).map((sub) =>
    `; ${sub.identifier ?? "?"}: ${describeProblem({ ...sub, subproblems: [] })}`
  );
  return `${type} (${problem.status}): ${problem.detail}${subs.join("")}`;
}

/** Whether a value is a JSON object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
