/**
 * The handshake's deadline, shared by the sniffs of one connection (a PROXY header, then the ClientHello),
 * against a model that recomputes it from the whole history of reads, over the whole range of its settings.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { HandshakeDeadline } from "../../src/relay/sniff.ts";

Deno.test("the first byte has firstByteMs, each later read extendPerReadMs from the last, all within totalMs", () => {
  const deadline = new HandshakeDeadline(
    { firstByteMs: 15_000, extendPerReadMs: 5_000, totalMs: 30_000 },
    1_000,
  );
  assert.equal(deadline.remainingMs(1_000), 15_000);
  assert.equal(deadline.remainingMs(16_000), 0, "no byte within 15 s: over");
  deadline.readReturned(2_000);
  assert.equal(deadline.remainingMs(2_000), 5_000);
  deadline.readReturned(29_000);
  assert.equal(deadline.remainingMs(29_000), 2_000, "never past 30 s from the start");
  assert.equal(deadline.remainingMs(31_000), 0, "30 s after the start: over");
});

Deno.test("property: the remaining time is what the history of reads says, for any settings", () => {
  const settings = fc.record({
    firstByteMs: fc.integer({ min: 1, max: 300_000 }),
    extendPerReadMs: fc.integer({ min: 1, max: 300_000 }),
    totalMs: fc.integer({ min: 1, max: 600_000 }),
  });
  const step = fc.record({ afterMs: fc.integer({ min: 0, max: 40_000 }), read: fc.boolean() });
  fc.assert(
    fc.property(
      settings,
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.array(step, { maxLength: 50 }),
      (s, startMs, steps) => {
        const deadline = new HandshakeDeadline({ ...s }, startMs);
        let nowMs = startMs;
        let lastReadMs = -1;
        for (const { afterMs, read } of steps) {
          nowMs += afterMs;
          if (read) {
            deadline.readReturned(nowMs);
            lastReadMs = nowMs;
          }
          const nextReadBy: number = lastReadMs < 0
            ? startMs + s.firstByteMs
            : lastReadMs + s.extendPerReadMs;
          const expected = Math.min(nextReadBy, startMs + s.totalMs) - nowMs;
          assert.equal(deadline.remainingMs(nowMs), expected);
          assert.ok(
            deadline.remainingMs(nowMs) <= startMs + s.totalMs - nowMs,
            "the total bounds every wait",
          );
        }
      },
    ),
    { numRuns: 1_000 },
  );
});
