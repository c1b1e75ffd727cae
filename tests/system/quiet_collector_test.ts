/**
 * The collection after a burst: the decision over generated memory traces (never while memory still grows,
 * never for less than a burst, once and only once for each burst that ended), then for real in a child
 * process with V8's `gc()`: a burst of dead buffers is given back within three intervals of going quiet, and
 * without `gc()` the collector stays off.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BURST_BYTES,
  BurstEnd,
  CHECK_INTERVAL_MS,
  QUIET_GROWTH_BYTES,
} from "../../src/system/quiet_collector.ts";

const MIB = 1024 * 1024;

Deno.test("quiet collector: collects only after a burst has ended, once per burst", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 200 * MIB }),
      // Changes of memory per interval: growth (traffic), small changes (quiet), drops (V8's own collections).
      fc.array(
        fc.oneof(
          fc.integer({ min: -4 * MIB, max: 8 * MIB }),
          fc.integer({ min: -QUIET_GROWTH_BYTES, max: QUIET_GROWTH_BYTES * 2 }),
        ),
        { maxLength: 200 },
      ),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (start, deltas, survives) => {
        const decision = new BurstEnd(start);
        let used = start;
        let base = start;
        let last = start;
        for (const delta of deltas) {
          used = Math.max(0, used + delta);
          base = Math.min(base, used);
          const due = decision.sample(used);
          const grewLately = used - last;
          last = used;
          if (due) {
            assert.ok(used - base >= BURST_BYTES, "a burst's worth grew since the last collection");
            assert.ok(grewLately < QUIET_GROWTH_BYTES, "memory has stopped growing");
            // What the collection leaves: part of what grew, the rest was garbage.
            used = base + Math.floor((used - base) * survives * 0.5);
            decision.collected(used);
            base = used;
            last = used;
          } else {
            assert.ok(used - base < BURST_BYTES || grewLately >= QUIET_GROWTH_BYTES, "a due collection ran");
          }
        }
      },
    ),
    { numRuns: 2_000 },
  );
});

Deno.test("quiet collector: a burst of dead buffers is given back soon after the process goes quiet", async () => {
  const script = `
    import { QuietCollector } from ${
    JSON.stringify(new URL("../../src/system/quiet_collector.ts", import.meta.url).href)
  };
    const collector = new QuietCollector();
    // A burst of buffers that are dead once it ends.
    let burst = [];
    for (let i = 0; i < 512; i++) burst.push(new Uint8Array(64 * 1024));
    burst = [];
    const before = Deno.memoryUsage().external;
    await new Promise((resolve) => setTimeout(resolve, ${3 * CHECK_INTERVAL_MS}));
    const after = Deno.memoryUsage().external;
    console.log(JSON.stringify({ active: collector.active, collections: collector.collections, before, after }));
    collector.close();
  `;
  const run = async (flags: string[]) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", ...flags, script],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(output.success);
    return JSON.parse(new TextDecoder().decode(output.stdout)) as {
      active: boolean;
      collections: number;
      before: number;
      after: number;
    };
  };
  const withGc = await run(["--v8-flags=--expose-gc"]);
  assert.equal(withGc.active, true);
  assert.equal(withGc.collections, 1);
  assert.ok(
    withGc.before - withGc.after >= 24 * MIB,
    `gave back ${(withGc.before - withGc.after) / MIB} MiB`,
  );
  const without = await run([]);
  assert.equal(without.active, false);
  assert.equal(without.collections, 0);
});
