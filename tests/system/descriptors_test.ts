/**
 * The descriptor budget: the plan that shares the open-file limit between relay and hub, over its whole range,
 * and the probe that measures what is free, in child processes with a real, low limit.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DESCRIPTORS_PER_HUB_CONNECTION,
  descriptorsNeeded,
  planDescriptors,
  RESERVED_DESCRIPTORS,
} from "../../src/system/descriptors.ts";
import { REPO_ROOT } from "../helpers/processes.ts";

Deno.test("property: the plan keeps the demand when it fits, else fits under the limit and leaves each listener some", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 10_000_000 })),
      fc.record({
        relayConnections: fc.integer({ min: 1, max: 10_000_000 }),
        hubConnections: fc.integer({ min: 1, max: 200_000 }),
        dialledLinks: fc.integer({ min: 0, max: 100 }),
      }),
      (free, demand) => {
        const plan = planDescriptors(free, demand);
        assert.equal(plan.needed, descriptorsNeeded(demand));
        if (plan.needed <= free) {
          assert.deepEqual(plan, {
            relayConnections: demand.relayConnections,
            hubConnections: demand.hubConnections,
            reduced: false,
            needed: plan.needed,
          });
          return;
        }
        assert.equal(plan.reduced, true);
        assert.ok(plan.relayConnections >= 1 && plan.hubConnections >= 1, "every listener keeps some");
        assert.ok(plan.relayConnections <= demand.relayConnections);
        assert.ok(plan.hubConnections <= demand.hubConnections);
        const available = free - RESERVED_DESCRIPTORS - demand.dialledLinks;
        const used = plan.relayConnections + DESCRIPTORS_PER_HUB_CONNECTION * plan.hubConnections;
        // Under the limit, unless it is too small even for one connection each.
        if (available >= 1 + 4 * DESCRIPTORS_PER_HUB_CONNECTION) {
          assert.ok(used <= available, `${used} > ${available}`);
        }
        // A full relay cannot take the hub's share, nor the hub more than a quarter.
        assert.ok(
          plan.hubConnections === 1 || DESCRIPTORS_PER_HUB_CONNECTION * plan.hubConnections <= available / 4,
        );
      },
    ),
    { numRuns: 2_000 },
  );
});

/** Runs the probe in a child with open-file limit `limit`; returns what it counted. */
async function freeUnderLimit(limit: number, upTo: number): Promise<number> {
  const script = `import { countFreeDescriptors } from "${REPO_ROOT}src/system/descriptors.ts";` +
    `console.log(countFreeDescriptors(${upTo}));`;
  const output = await new Deno.Command("sh", {
    args: ["-c", `ulimit -n ${limit} && exec "$0" eval "$1"`, Deno.execPath(), script],
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return Number(new TextDecoder().decode(output.stdout).trim());
}

Deno.test("the probe counts the descriptors a low open-file limit leaves, and stops at what it was asked", async () => {
  const free = await freeUnderLimit(300, 10_000);
  // The runtime itself holds a few dozen.
  assert.ok(free > 200 && free < 300, `free ${free}`);
  assert.equal(await freeUnderLimit(300, 50), 50);
  // Afterwards every probed descriptor is closed again: a second, larger probe finds as many.
  const script = `import { countFreeDescriptors } from "${REPO_ROOT}src/system/descriptors.ts";` +
    `const a = countFreeDescriptors(100); const b = countFreeDescriptors(10000); ` +
    `const held = []; try { for (;;) held.push(Deno.openSync("/dev/null")); } catch { /* the limit */ } ` +
    `console.log(a, b, held.length);`;
  const output = await new Deno.Command("sh", {
    args: ["-c", `ulimit -n 300 && exec "$0" eval "$1"`, Deno.execPath(), script],
  }).output();
  const [a, b, held] = new TextDecoder().decode(output.stdout).trim().split(" ").map(Number);
  assert.equal(a, 100);
  assert.equal(b, held, "the probe left nothing open");
});
