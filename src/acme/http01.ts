/**
 * The node's own HTTP-01 responder (RFC 8555 §8.3) for its hub name, answered on its HTTP relay port. Every
 * request for that name is answered here and never routed to a backend, so no backend can prove control of
 * the hub's name and get a certificate for it. Pure: the relay hands in the parsed request head and writes
 * the bytes it gets back.
 *
 * @module
 */

import { plainTextResponse } from "../http/responses.ts";
import type { ChallengeResponder } from "./issue.ts";

/** The path prefix of HTTP-01 challenge responses (§8.3). */
const CHALLENGE_PATH_PREFIX = "/.well-known/acme-challenge/";
const ORIGIN_OF_ABSOLUTE_FORM = /^https?:\/\/[^/?#]*/i;

/** What the responder looks at in a request head (the relay's parsed `request` verdict). */
export interface RequestHeadFacts {
  /** Normalised host (lower-case, no port, no trailing dot). */
  readonly host: string;
  readonly method: string;
  readonly target: string;
}

/**
 * Serves the key authorizations of the challenges in flight for one name.
 *
 * @example
 * ```ts
 * import { Http01Responder } from "./http01.ts";
 * const responder = new Http01Responder("hub.example.com");
 * responder.publish("tok_tok_tok_tok_tok_tok_tok", "tok_tok_tok_tok_tok_tok_tok.thumb");
 * responder.answer({ host: "hub.example.com", method: "GET", target: "/.well-known/acme-challenge/tok_tok_tok_tok_tok_tok_tok" });
 * // a 200 response whose body is the key authorization
 * responder.answer({ host: "app.example.com", method: "GET", target: "/" }); // undefined: routed as usual
 * ```
 */
export class Http01Responder implements ChallengeResponder {
  readonly hostname: string;
  readonly #keyAuthorizations = new Map<string, string>();

  constructor(hostname: string) {
    this.hostname = hostname;
  }

  /** Serves `keyAuthorization` for `token` until it is withdrawn. */
  publish(token: string, keyAuthorization: string): void {
    this.#keyAuthorizations.set(token, keyAuthorization);
  }

  withdraw(token: string): void {
    this.#keyAuthorizations.delete(token);
  }

  /**
   * The complete response for a request to this responder's name, or `undefined` for any other name. A
   * token in flight gets its key authorization; anything else for the name gets `404`.
   */
  answer(request: RequestHeadFacts): Uint8Array | undefined {
    if (request.host !== this.hostname) return undefined;
    const token = challengeToken(request.target);
    const keyAuthorization = token === null ? undefined : this.#keyAuthorizations.get(token);
    if (request.method === "GET" && keyAuthorization !== undefined) {
      return plainTextResponse(200, keyAuthorization);
    }
    return plainTextResponse(
      404,
      token === null
        ? "Not Found: this name is the node's own hub; it serves only ACME challenges over HTTP\n"
        : "Not Found: no ACME challenge in flight with this token\n",
    );
  }
}

/**
 * The token of a challenge path (`/.well-known/acme-challenge/TOKEN`, origin or absolute form), or `null`.
 *
 * @example
 * ```ts
 * import { challengeToken } from "./http01.ts";
 * challengeToken("http://hub.example.com/.well-known/acme-challenge/abc"); // "abc"
 * challengeToken("/index.html"); // null
 * ```
 */
export function challengeToken(target: string): string | null {
  const path = target.replace(ORIGIN_OF_ABSOLUTE_FORM, "").replace(/[?#].*$/, "");
  if (!path.startsWith(CHALLENGE_PATH_PREFIX)) return null;
  const token = path.slice(CHALLENGE_PATH_PREFIX.length);
  return /^[A-Za-z0-9_-]+$/.test(token) ? token : null;
}
