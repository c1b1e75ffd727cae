/**
 * The one backoff rule of every dialled link (agent to hub, node to peer): failures wait longer and longer, a
 * session that lived long enough starts over before its redial is paced, a permanent refusal waits longest.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Backoff } from "../../src/links/link.ts";
import { reconnectDelayMs } from "../../src/links/reconnect.ts";

const policy = { initialDelayMs: 1_000, maxDelayMs: 60_000, stableAfterMs: 30_000 };
const half = () => 0.5;

Deno.test("a link that dies after a day waits as little as one that never failed; a short one keeps backing off", () => {
  const backoff = new Backoff(policy);
  const failures = [1, 2, 3, 4, 5].map(() => backoff.next({ establishedForMs: null }, half));
  assert.deepEqual(failures, [750, 1_500, 3_000, 6_000, 12_000]);
  // Up for a day, then lost: the first redial waits the initial delay again.
  assert.equal(backoff.next({ establishedForMs: 86_400_000 }, half), 750);
  // Up for a second only: no reset, the count goes on.
  assert.equal(backoff.next({ establishedForMs: 1_000 }, half), 1_500);
  // A refusal that cannot heal waits the longest, and so do the failures after it.
  assert.equal(backoff.next({ establishedForMs: null, permanent: true }, half), 45_000);
});

Deno.test("property: every delay follows the model (count reset by stable sessions, capped, jittered within half)", () => {
  const outcome = fc.oneof(
    fc.constant({ establishedForMs: null }),
    fc.record({ establishedForMs: fc.integer({ min: 0, max: 100_000 }) }),
    fc.constant({ establishedForMs: null, permanent: true }),
  );
  fc.assert(
    fc.property(
      fc.array(outcome, { maxLength: 60 }),
      fc.double({ min: 0, max: 0.999, noNaN: true }),
      (outcomes, r) => {
        const backoff = new Backoff(policy);
        let attempt = 0;
        for (const o of outcomes) {
          if (o.establishedForMs !== null && o.establishedForMs >= policy.stableAfterMs) attempt = 0;
          const expected = reconnectDelayMs("permanent" in o ? Infinity : attempt, 1_000, 60_000, () => r);
          attempt += 1;
          const delay = backoff.next(o, () => r);
          assert.equal(delay, expected);
          assert.ok(delay >= 500 && delay <= 60_000);
        }
      },
    ),
    { numRuns: 500 },
  );
});
