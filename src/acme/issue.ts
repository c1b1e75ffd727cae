/**
 * The order flow of RFC 8555 §7.1 for one certificate: a new order, each pending authorization answered by its
 * HTTP-01 challenge, finalization with a CSR, the download. A challenge's response is published for exactly as
 * long as the server may validate it.
 *
 * @module
 */

import { sleep } from "../links/reconnect.ts";
import type { AcmeClient } from "./client.ts";
import { type AcmeOrder, keyAuthorization, type OrderStatus } from "./messages.ts";
import { AcmeProblemError } from "./problem.ts";

/** Where HTTP-01 responses are served from while the server validates them (the node's HTTP relay port). */
export interface ChallengeResponder {
  publish(token: string, keyAuthorization: string): void;
  withdraw(token: string): void;
}

/** What {@linkcode issueCertificate} needs besides the client. */
export interface IssueRequest {
  readonly hostname: string;
  /** The CSR (DER) for `hostname`, sent at finalization. */
  readonly csrDer: Uint8Array;
  readonly responder: ChallengeResponder;
  /** Longest wait between polls when the server gives no `Retry-After` (default 1 s; the first waits are shorter). */
  readonly pollIntervalMs?: number;
  /** Give up an order that has not finished in this time (default 5 minutes). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** The order did not end in a certificate, for a reason the server gave or that the state shows. */
export class AcmeOrderError extends Error {
  override readonly name = "AcmeOrderError";
}

/**
 * Orders a certificate for one name and returns its chain (PEM, leaf first). A refused challenge throws an
 * {@linkcode AcmeProblemError} with the problem the server recorded on it (why validation failed).
 */
export async function issueCertificate(client: AcmeClient, request: IssueRequest): Promise<string> {
  const pollMs = request.pollIntervalMs ?? 1_000;
  const deadline = Date.now() + (request.timeoutMs ?? 300_000);
  const signal = request.signal ?? new AbortController().signal;
  // Polls start quick (validation and issuance usually take well under a second) and slow down to pollMs.
  let polls = 0;
  const wait = (retryAfterMs: number | undefined) => {
    if (Date.now() > deadline) {
      throw new AcmeOrderError(`the order for ${request.hostname} did not finish in time`);
    }
    const delayMs = retryAfterMs ?? Math.min(pollMs, 50 * 2 ** polls++);
    return sleep(Math.min(delayMs, Math.max(0, deadline - Date.now())), signal).then(() => {
      if (signal.aborted) throw signal.reason;
    });
  };

  const placed = await client.newOrder([request.hostname]);
  let order = placed.order;
  for (const url of order.authorizations) await authorize(client, url, request, wait);

  // What newOrder said is stale now that every authorization is valid: ask again before waiting.
  order = await pollOrder(client, placed.url, (await client.order(placed.url)).order, ["pending"], wait);
  if (order.status === "ready") {
    order = await client.finalize(order.finalize, request.csrDer);
    order = await pollOrder(client, placed.url, order, ["ready", "processing"], wait);
  }
  if (order.status !== "valid" || order.certificate === undefined) {
    if (order.error) throw new AcmeProblemError(order.error, placed.url);
    throw new AcmeOrderError(`the order for ${request.hostname} ended ${order.status}, not valid`);
  }
  return await client.certificate(order.certificate);
}

async function authorize(
  client: AcmeClient,
  url: string,
  request: IssueRequest,
  wait: (retryAfterMs: number | undefined) => Promise<void>,
): Promise<void> {
  let { authorization } = await client.authorization(url);
  // A valid authorization may be reused from an earlier order (§7.1.4): nothing to prove then.
  if (authorization.status === "valid") return;
  if (authorization.status !== "pending") {
    throw new AcmeOrderError(`the authorization for ${authorization.identifier} is ${authorization.status}`);
  }
  const challenge = authorization.challenges.find((c) => c.type === "http-01");
  if (challenge?.token === undefined) {
    throw new AcmeOrderError(
      `the server offers no http-01 challenge for ${authorization.identifier} (offered: ${
        authorization.challenges.map((c) => c.type).join(", ") || "none"
      })`,
    );
  }
  request.responder.publish(challenge.token, keyAuthorization(challenge.token, client.thumbprint));
  try {
    await client.acceptChallenge(challenge.url);
    for (;;) {
      const polled = await client.authorization(url);
      authorization = polled.authorization;
      if (authorization.status !== "pending") break;
      await wait(polled.retryAfterMs);
    }
  } finally {
    request.responder.withdraw(challenge.token);
  }
  if (authorization.status === "valid") return;
  const failed = authorization.challenges.find((c) => c.url === challenge.url);
  if (failed?.error) throw new AcmeProblemError(failed.error, challenge.url);
  throw new AcmeOrderError(`the authorization for ${authorization.identifier} ended ${authorization.status}`);
}

/** Polls the order while its status is one of `whileIn`. */
async function pollOrder(
  client: AcmeClient,
  url: string,
  current: AcmeOrder,
  whileIn: readonly OrderStatus[],
  wait: (retryAfterMs: number | undefined) => Promise<void>,
): Promise<AcmeOrder> {
  let order = current;
  let retryAfterMs: number | undefined;
  while (whileIn.includes(order.status)) {
    await wait(retryAfterMs);
    ({ order, retryAfterMs } = await client.order(url));
  }
  return order;
}
