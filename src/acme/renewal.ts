/**
 * When to ask the ACME server for the hub's certificate: at once when there is none, when a third of the
 * served certificate's life is left (Let's Encrypt's advice: day 60 of 90), and after a failure with
 * exponential backoff and jitter, never sleeping through the rest of the certificate's life. Pure: the clock
 * and the randomness come in as arguments.
 *
 * @module
 */

import { reconnectDelayMs } from "../links/reconnect.ts";

/** Backoff after failed attempts. */
export interface RetryPolicy {
  /** Delay after the first failure (before jitter). */
  readonly initialDelayMs: number;
  /** Longest delay, however many failures. */
  readonly maxDelayMs: number;
}

/** The validity of the certificate being served. */
export interface Validity {
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

/**
 * The moment a certificate should be renewed: two thirds into its life.
 *
 * @example
 * ```ts
 * import { renewalTimeMs } from "./renewal.ts";
 * const day = 86_400_000;
 * renewalTimeMs({ notBeforeMs: 0, notAfterMs: 90 * day }) / day; // 60
 * ```
 */
export function renewalTimeMs(validity: Validity): number {
  return validity.notBeforeMs + Math.floor((validity.notAfterMs - validity.notBeforeMs) * 2 / 3);
}

/**
 * The renewal state of one hub certificate: what is served, how many attempts failed in a row, and so when
 * the next attempt is due.
 *
 * @example
 * ```ts
 * import { RenewalSchedule } from "./renewal.ts";
 * const schedule = new RenewalSchedule({ initialDelayMs: 60_000, maxDelayMs: 3_600_000 });
 * schedule.nextAttemptMs(0); // 0: nothing served, ask now
 * schedule.served({ notBeforeMs: 0, notAfterMs: 90_000 });
 * schedule.nextAttemptMs(0); // 60000
 * ```
 */
export class RenewalSchedule {
  readonly #policy: RetryPolicy;
  readonly #random: () => number;
  #validity: Validity | undefined;
  #failures = 0;
  #retryAtMs = 0;

  constructor(policy: RetryPolicy, random: () => number = Math.random) {
    this.#policy = policy;
    this.#random = random;
  }

  /** Failed attempts since the last success. */
  get failures(): number {
    return this.#failures;
  }

  /** The validity of the certificate now served, if any. */
  get validity(): Validity | undefined {
    return this.#validity;
  }

  /** A certificate is now served (loaded at start or newly issued): failures are forgotten. */
  served(validity: Validity): void {
    this.#validity = validity;
    this.#failures = 0;
    this.#retryAtMs = 0;
  }

  /**
   * An attempt failed at `nowMs`; returns the delay until the next one. A server's `Retry-After`
   * (`retryAfterMs`) is a floor: asking a rate-limited server sooner only fails again.
   */
  failed(nowMs: number, retryAfterMs = 0): number {
    this.#failures += 1;
    const backoff = reconnectDelayMs(
      this.#failures - 1,
      this.#policy.initialDelayMs,
      this.#policy.maxDelayMs,
      this.#random,
    );
    // While a certificate is still valid, wait at most half of what is left of it (but not less than the
    // initial delay), so a long backoff never sleeps through its expiry.
    const remainingMs = this.#validity === undefined ? Infinity : this.#validity.notAfterMs - nowMs;
    const delayMs = Math.max(
      retryAfterMs,
      Math.min(backoff, Math.max(this.#policy.initialDelayMs, Math.floor(remainingMs / 2))),
    );
    this.#retryAtMs = nowMs + delayMs;
    return delayMs;
  }

  /** When the next attempt is due (never before `nowMs`). */
  nextAttemptMs(nowMs: number): number {
    if (this.#failures > 0) return Math.max(nowMs, this.#retryAtMs);
    if (this.#validity === undefined) return nowMs;
    return Math.max(nowMs, renewalTimeMs(this.#validity));
  }
}
