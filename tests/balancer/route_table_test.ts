/** Route keys to pools: exact names before wildcards, single-label wildcards, and no empty pool left behind. */

import assert from "node:assert/strict";
import { RouteTable } from "../../src/balancer/route_table.ts";

const exact = (name: string) => ({ kind: "exact" as const, name });
const wildcard = (suffix: string) => ({ kind: "wildcard" as const, suffix });

Deno.test("an exact claim wins over a wildcard; a wildcard covers one label only", () => {
  const table = new RouteTable<string>();
  table.add(wildcard("example.com"), "wild", 1);
  table.add(exact("a.example.com"), "exact", 1);
  assert.equal(table.pick("a.example.com"), "exact");
  assert.equal(table.pick("b.example.com"), "wild");
  assert.equal(table.pick("x.b.example.com"), undefined);
  assert.equal(table.pick("example.com"), undefined);
  assert.deepEqual(table.keys(), ["*.example.com", "a.example.com"]);
});

Deno.test("when the last member of an exact name leaves, its wildcard takes over at once (the original kept empty pools, §8.2)", () => {
  const table = new RouteTable<string>();
  table.add(wildcard("example.com"), "wild", 1);
  table.add(exact("a.example.com"), "exact", 1);
  table.remove(exact("a.example.com"), "exact");
  assert.equal(table.pick("a.example.com"), "wild");
  assert.equal(table.hasExact("a.example.com"), false);
  assert.deepEqual(table.keys(), ["*.example.com"]);
  // Removing what is not there changes nothing.
  table.remove(exact("nothing.example.com"), "exact");
  table.remove(wildcard("example.com"), "stranger");
  assert.equal(table.pick("b.example.com"), "wild");
});

Deno.test("an exact pool whose members all refuse falls through to the wildcard; has() counts members, not acceptance", () => {
  const table = new RouteTable<string>();
  table.add(exact("a.example.com"), "busy", 1);
  table.add(wildcard("example.com"), "wild", 1);
  assert.equal(table.pick("a.example.com", (member) => member !== "busy"), "wild");
  assert.equal(table.has("a.example.com"), true);
  assert.equal(table.has("zzz.example.com"), true);
  assert.equal(table.has("example.org"), false);
});
