/** Smooth weighted round robin, exactly: its order, its shares over any cycle, and members joining and leaving. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { WeightedPool } from "../../src/balancer/weighted_pool.ts";

function picks<T>(pool: WeightedPool<T>, count: number, accept?: (member: T) => boolean): T[] {
  return Array.from({ length: count }, () => pool.pick(accept)!);
}

Deno.test("5:1:1 comes out smooth, not in bursts: a a b a c a a, then the same again", () => {
  const pool = new WeightedPool<string>();
  pool.add("a", 5);
  pool.add("b", 1);
  pool.add("c", 1);
  assert.deepEqual(picks(pool, 14).join(" "), "a a b a c a a a a b a c a a");
});

Deno.test("property: over every full cycle each member is picked exactly in proportion to its weight", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 8 }), (weights) => {
      const pool = new WeightedPool<number>();
      weights.forEach((weight, member) => pool.add(member, weight));
      const total = weights.reduce((sum, w) => sum + w, 0);
      for (let cycle = 0; cycle < 3; cycle++) {
        const counts = new Map<number, number>();
        for (const member of picks(pool, total)) counts.set(member, (counts.get(member) ?? 0) + 1);
        weights.forEach((weight, member) => assert.equal(counts.get(member) ?? 0, weight));
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("a member that joins gets its share from the next cycle; one that leaves is never picked again", () => {
  const pool = new WeightedPool<string>();
  pool.add("a", 1);
  pool.add("b", 1);
  assert.deepEqual(picks(pool, 4).sort(), ["a", "a", "b", "b"]);
  pool.add("c", 2);
  const counts = (members: string[]) =>
    Object.fromEntries(["a", "b", "c"].map((m) => [m, members.filter((x) => x === m).length]));
  assert.deepEqual(counts(picks(pool, 8)), { a: 2, b: 2, c: 4 });
  assert.equal(pool.remove("c"), true);
  assert.equal(pool.remove("c"), false);
  assert.deepEqual(counts(picks(pool, 6)), { a: 3, b: 3, c: 0 });
  // Adding a member again updates its weight.
  pool.add("a", 3);
  assert.equal(pool.size, 2);
  assert.deepEqual(counts(picks(pool, 8)), { a: 6, b: 2, c: 0 });
});

Deno.test("members refused by the filter are skipped and the others keep their proportions; none left: undefined", () => {
  const pool = new WeightedPool<string>();
  pool.add("full", 3);
  pool.add("x", 2);
  pool.add("y", 1);
  const open = (member: string) => member !== "full";
  const chosen = picks(pool, 6, open);
  assert.equal(chosen.filter((m) => m === "x").length, 4);
  assert.equal(chosen.filter((m) => m === "y").length, 2);
  assert.equal(pool.pick(() => false), undefined);
  assert.equal(new WeightedPool<string>().pick(), undefined);
  assert.throws(() => pool.add("z", 0), /integer ≥ 1/);
  assert.throws(() => pool.add("z", 1.5), /integer ≥ 1/);
});
