/**
 * The requests of an ACME client (RFC 8555 §7): the directory, nonces, the account, orders, authorizations,
 * challenges, finalization and the certificate download. Each request is one signed POST (§6.2), retried with
 * a fresh nonce when the server says `badNonce` (§6.5); every other refusal becomes an
 * {@linkcode AcmeProblemError} carrying the server's problem document. The order flow itself is in
 * `issue.ts`; what the JSON means is in `messages.ts`.
 *
 * @module
 */

import { type AccountKey, signRequest } from "./jws.ts";
import {
  type AcmeAuthorization,
  type AcmeChallenge,
  type AcmeDirectory,
  type AcmeOrder,
  parseAuthorization,
  parseChallenge,
  parseDirectory,
  parseOrder,
  parseRetryAfter,
} from "./messages.ts";
import { AcmeProblemError, AcmeProtocolError, parseProblem } from "./problem.ts";

/** Let's Encrypt's production directory, the default of `hubAcme.directoryUrl`. */
export const LETS_ENCRYPT_DIRECTORY_URL = "https://acme-v02.api.letsencrypt.org/directory";

/**
 * How often a request is tried with a fresh nonce after `badNonce` before the refusal is reported. A retry
 * costs one request, and servers reject good nonces on purpose now and then (Pebble does, to test clients).
 */
const BAD_NONCE_ATTEMPTS = 10;
/** Default time allowed for one request, connect to last byte. */
const REQUEST_TIMEOUT_MS = 30_000;

/** The ACME server could not be reached, or did not answer in time. */
export class AcmeConnectionError extends Error {
  override readonly name = "AcmeConnectionError";
}

/** Options of an {@linkcode AcmeClient}. */
export interface AcmeClientOptions {
  readonly directoryUrl: string;
  readonly accountKey: AccountKey;
  /** PEM certificates to trust for the ACME server's HTTPS beside the system roots (a private CA, Pebble's). */
  readonly caCerts?: readonly string[];
  /** Time allowed for one request (default 30 s). */
  readonly requestTimeoutMs?: number;
  /** Aborts every request in flight and every later one. */
  readonly signal?: AbortSignal;
}

/** What a request answered, once it succeeded. */
interface AcmeResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: unknown;
}

/** One ACME account at one ACME server. Close it to release its HTTP client. */
export class AcmeClient {
  readonly #options: AcmeClientOptions;
  readonly #http: Deno.HttpClient | undefined;
  readonly #nonces: string[] = [];
  #directory: AcmeDirectory | undefined;
  #accountUrl: string | undefined;
  #badNonceRetries = 0;

  constructor(options: AcmeClientOptions) {
    this.#options = options;
    this.#http = options.caCerts !== undefined && options.caCerts.length > 0
      ? Deno.createHttpClient({ caCerts: [...options.caCerts] })
      : undefined;
  }

  /** Requests sent again with a fresh nonce after the server answered `badNonce`. */
  get badNonceRetries(): number {
    return this.#badNonceRetries;
  }

  /** The account key's thumbprint, for key authorizations. */
  get thumbprint(): string {
    return this.#options.accountKey.thumbprint;
  }

  /** The directory, fetched once. */
  async directory(): Promise<AcmeDirectory> {
    if (this.#directory === undefined) {
      const response = await this.#fetch(this.#options.directoryUrl, { method: "GET" });
      if (!response.ok) {
        throw new AcmeProblemError(parseProblem(await readJson(response), response.status), response.url);
      }
      this.#directory = parseDirectory(await readJson(response));
    }
    return this.#directory;
  }

  /**
   * Finds the account of this key, or creates it (§7.3). `existingKey` says the key was kept from an earlier
   * run: then the server is first asked with `onlyReturnExisting`, which never creates a second account (rate
   * limits count accounts), and only a server that does not know the key (another server, or one that lost
   * its state) gets a new account. Returns the account URL, which signs every later request (`kid`).
   */
  async account(options: { email?: string; existingKey: boolean }): Promise<string> {
    const directory = await this.directory();
    if (options.existingKey) {
      try {
        const found = await this.#post(directory.newAccount, { onlyReturnExisting: true }, {
          withKid: false,
        });
        return this.#rememberAccount(found);
      } catch (error) {
        if (!(error instanceof AcmeProblemError && error.is("accountDoesNotExist"))) throw error;
      }
    }
    const created = await this.#post(directory.newAccount, {
      termsOfServiceAgreed: true,
      ...(options.email === undefined ? {} : { contact: [`mailto:${options.email}`] }),
    }, { withKid: false });
    return this.#rememberAccount(created);
  }

  /** Places an order for certificates of these DNS names (§7.4); returns its URL and the order. */
  async newOrder(hostnames: readonly string[]): Promise<{ url: string; order: AcmeOrder }> {
    const directory = await this.directory();
    const response = await this.#post(directory.newOrder, {
      identifiers: hostnames.map((value) => ({ type: "dns", value })),
    });
    const url = response.headers.get("location");
    if (url === null) throw new AcmeProtocolError("the new order has no Location");
    return { url, order: parseOrder(response.body) };
  }

  /** Fetches an order (POST-as-GET); with how long the server asks to wait before asking again. */
  async order(url: string): Promise<{ order: AcmeOrder; retryAfterMs?: number }> {
    const response = await this.#post(url, undefined);
    return withRetryAfter({ order: parseOrder(response.body) }, response);
  }

  /** Fetches an authorization (POST-as-GET). */
  async authorization(url: string): Promise<{ authorization: AcmeAuthorization; retryAfterMs?: number }> {
    const response = await this.#post(url, undefined);
    return withRetryAfter({ authorization: parseAuthorization(response.body) }, response);
  }

  /** Tells the server the challenge's response is in place, so it may validate (§7.5.1: the payload `{}`). */
  async acceptChallenge(url: string): Promise<AcmeChallenge> {
    return parseChallenge((await this.#post(url, {})).body);
  }

  /** Sends the CSR (DER) of a `ready` order (§7.4). */
  async finalize(url: string, csrDer: Uint8Array): Promise<AcmeOrder> {
    return parseOrder(
      (await this.#post(url, { csr: csrDer.toBase64({ alphabet: "base64url", omitPadding: true }) })).body,
    );
  }

  /** Downloads the certificate chain (§7.4.2), PEM, leaf first. */
  async certificate(url: string): Promise<string> {
    const response = await this.#post(url, undefined, { accept: "application/pem-certificate-chain" });
    if (typeof response.body !== "string" || !response.body.includes("-----BEGIN CERTIFICATE-----")) {
      throw new AcmeProtocolError("the certificate download holds no PEM certificate");
    }
    return response.body;
  }

  /** Releases the HTTP client. Idempotent. */
  close(): void {
    try {
      this.#http?.close();
    } catch {
      // Already closed.
    }
  }

  #rememberAccount(response: AcmeResponse): string {
    const url = response.headers.get("location");
    if (url === null) throw new AcmeProtocolError("the account answer has no Location");
    this.#accountUrl = url;
    return url;
  }

  /** A signed POST; `payload` `undefined` is a POST-as-GET. Retries `badNonce` with the nonce it came with. */
  async #post(
    url: string,
    payload: unknown,
    options: { withKid?: boolean; accept?: string } = {},
  ): Promise<AcmeResponse> {
    const withKid = options.withKid ?? true;
    if (withKid && this.#accountUrl === undefined) {
      throw new Error("an ACME request needs the account: call account() first");
    }
    for (let attempt = 1;; attempt++) {
      const nonce = await this.#nonce();
      const body = await signRequest(this.#options.accountKey, {
        url,
        nonce,
        ...(withKid ? { kid: this.#accountUrl } : {}),
      }, payload);
      const response = await this.#fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/jose+json",
          ...(options.accept ? { accept: options.accept } : {}),
        },
        body,
      });
      this.#keepNonce(response);
      const contentType = response.headers.get("content-type") ?? "";
      const answer = contentType.includes("json") ? await readJson(response) : await response.text();
      if (response.ok) return { status: response.status, headers: response.headers, body: answer };
      const error = new AcmeProblemError(
        parseProblem(answer, response.status),
        url,
        parseRetryAfter(response.headers.get("retry-after"), Date.now()),
      );
      if (!error.is("badNonce") || attempt >= BAD_NONCE_ATTEMPTS) throw error;
      this.#badNonceRetries += 1;
    }
  }

  async #nonce(): Promise<string> {
    const kept = this.#nonces.pop();
    if (kept !== undefined) return kept;
    const directory = await this.directory();
    const response = await this.#fetch(directory.newNonce, { method: "HEAD" });
    await response.body?.cancel();
    const nonce = response.headers.get("replay-nonce");
    if (nonce === null) throw new AcmeProtocolError(`newNonce (${directory.newNonce}) gave no Replay-Nonce`);
    return nonce;
  }

  #keepNonce(response: Response): void {
    const nonce = response.headers.get("replay-nonce");
    if (nonce !== null) this.#nonces.push(nonce);
  }

  async #fetch(url: string, init: RequestInit): Promise<Response> {
    const timeout = AbortSignal.timeout(this.#options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS);
    const signal = this.#options.signal ? AbortSignal.any([this.#options.signal, timeout]) : timeout;
    try {
      return await fetch(url, { ...init, signal, ...(this.#http ? { client: this.#http } : {}) });
    } catch (error) {
      if (this.#options.signal?.aborted) throw error;
      throw new AcmeConnectionError(
        `cannot reach the ACME server at ${url}: ${
          timeout.aborted ? "no answer in time" : describeFetchError(error)
        }`,
      );
    }
  }
}

/** `fetch failed` says nothing: the cause (connection refused, a certificate error) is what the operator needs. */
function describeFetchError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? error.cause.message : undefined;
  return cause === undefined || cause === error.message ? error.message : `${error.message}: ${cause}`;
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function withRetryAfter<T extends object>(value: T, response: AcmeResponse): T & { retryAfterMs?: number } {
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"), Date.now());
  return retryAfterMs === undefined ? value : { ...value, retryAfterMs };
}
