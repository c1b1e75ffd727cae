/**
 * The renewal schedule against a model, over the whole range of its parameters: when the next attempt is due
 * after any sequence of certificates served, failures and time passing.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { RenewalSchedule, renewalTimeMs, type RetryPolicy, type Validity } from "../../src/acme/renewal.ts";

const DAY = 86_400_000;

Deno.test("renewal is due two thirds into a certificate's life: day 60 of 90", () => {
  assert.equal(renewalTimeMs({ notBeforeMs: 0, notAfterMs: 90 * DAY }), 60 * DAY);
  assert.equal(renewalTimeMs({ notBeforeMs: 1_000, notAfterMs: 31_000 }), 21_000);
});

type Event =
  | { kind: "served"; lifetimeMs: number; ageMs: number }
  | { kind: "failed"; retryAfterMs: number }
  | { kind: "time"; ms: number };

const events: fc.Arbitrary<Event[]> = fc.array(
  fc.oneof<fc.Arbitrary<Event>[]>(
    fc.record({
      kind: fc.constant("served" as const),
      lifetimeMs: fc.integer({ min: 1_000, max: 400 * DAY }),
      ageMs: fc.integer({ min: 0, max: 400 * DAY }),
    }),
    fc.record({ kind: fc.constant("failed" as const), retryAfterMs: fc.oneof(fc.constant(0), fc.nat(DAY)) }),
    fc.record({ kind: fc.constant("time" as const), ms: fc.nat(30 * DAY) }),
  ),
  { maxLength: 40 },
);

const policies = fc.tuple(fc.integer({ min: 1, max: 3_600_000 }), fc.integer({ min: 1, max: 7 * DAY }))
  .map(([a, b]): RetryPolicy => ({ initialDelayMs: Math.min(a, b), maxDelayMs: Math.max(a, b) }));

Deno.test("property: the schedule matches its model after any sequence of events", () => {
  fc.assert(
    fc.property(
      policies,
      events,
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (policy, list, r) => {
        const schedule = new RenewalSchedule(policy, () => r);
        let now = 1_000 * DAY;
        // The model: what is served, how many failures in a row, when a retry is due.
        let validity: Validity | undefined;
        let failures = 0;
        let retryAt = 0;
        for (const event of list) {
          if (event.kind === "time") now += event.ms;
          if (event.kind === "served") {
            validity = { notBeforeMs: now - event.ageMs, notAfterMs: now - event.ageMs + event.lifetimeMs };
            schedule.served(validity);
            failures = 0;
          }
          if (event.kind === "failed") {
            failures += 1;
            const ceiling = Math.min(
              policy.maxDelayMs,
              policy.initialDelayMs * 2 ** Math.min(failures - 1, 30),
            );
            const backoff = Math.round(ceiling / 2 + r * (ceiling / 2));
            const remaining = validity === undefined ? Infinity : validity.notAfterMs - now;
            const delay = Math.max(
              event.retryAfterMs,
              Math.min(backoff, Math.max(policy.initialDelayMs, Math.floor(remaining / 2))),
            );
            assert.equal(schedule.failed(now, event.retryAfterMs), delay);
            retryAt = now + delay;
            // Never longer than the backoff allows, unless the server asked for longer.
            assert.ok(delay <= Math.max(policy.maxDelayMs, event.retryAfterMs));
            // A valid certificate is never slept through while there is time for an attempt before it ends.
            if (validity !== undefined && event.retryAfterMs === 0 && remaining > 2 * policy.initialDelayMs) {
              assert.ok(
                now + delay < validity!.notAfterMs,
              );
            }
          }
          assert.equal(schedule.failures, failures);
          assert.deepEqual(schedule.validity, validity);
          const expected = failures > 0
            ? Math.max(now, retryAt)
            : validity === undefined
            ? now
            : Math.max(now, renewalTimeMs(validity));
          assert.equal(schedule.nextAttemptMs(now), expected);
          assert.ok(schedule.nextAttemptMs(now) >= now);
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("past its limit: after many failures the delay stays at the maximum, never beyond", () => {
  const policy = { initialDelayMs: 60_000, maxDelayMs: 6 * 3_600_000 };
  const schedule = new RenewalSchedule(policy, () => 0.999);
  const delays = Array.from({ length: 40 }, () => schedule.failed(0));
  assert.ok(delays.every((delay, i) => i === 0 || delay >= delays[i - 1]));
  assert.equal(Math.max(...delays), Math.round(policy.maxDelayMs / 2 + 0.999 * policy.maxDelayMs / 2));
  assert.equal(schedule.failures, 40);
  schedule.served({ notBeforeMs: 0, notAfterMs: 90 * DAY });
  assert.equal(schedule.failures, 0);
  assert.equal(schedule.nextAttemptMs(0), 60 * DAY);
});
