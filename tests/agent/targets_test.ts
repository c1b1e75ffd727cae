/** The agent's targets: exact name, then wildcard, then default, per protocol; and the `host:port` syntax. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseTarget, TargetMap } from "../../src/agent/targets.ts";

const at = (port: number) => ({ host: "127.0.0.1", port });

Deno.test("exact, then a single-label wildcard, then default; each for its protocol", () => {
  const map = new TargetMap(
    new Map([
      ["app.example.com", { tls: at(1), http: at(2) }],
      ["*.example.com", { tls: at(3) }],
      ["default", { tls: at(4), http: at(5) }],
    ]),
  );
  assert.deepEqual(map.resolve("app.example.com", true), at(1));
  assert.deepEqual(map.resolve("app.example.com", false), at(2));
  assert.deepEqual(map.resolve("b.example.com", true), at(3));
  // The wildcard has no HTTP target: default answers for it.
  assert.deepEqual(map.resolve("b.example.com", false), at(5));
  assert.deepEqual(map.resolve("x.b.example.com", true), at(4));
  const noDefault = new TargetMap(new Map([["*.example.com", { tls: at(3) }]]));
  assert.equal(noDefault.resolve("other.org", true), undefined);
  assert.equal(noDefault.resolve("b.example.com", false), undefined);
  assert.throws(() => new TargetMap(new Map([["bad name", { tls: at(1) }]])), RangeError);
});

Deno.test("targets are host:port, [v6]:port or :port (127.0.0.1); anything else says what is wrong", () => {
  assert.deepEqual(parseTarget("10.0.0.2:8443"), { host: "10.0.0.2", port: 8443 });
  assert.deepEqual(parseTarget("[::1]:443"), { host: "::1", port: 443 });
  assert.deepEqual(parseTarget(":8080"), at(8080));
  assert.deepEqual(parseTarget(" localhost:80 "), { host: "localhost", port: 80 });
  assert.equal(parseTarget("localhost"), '"localhost" is not host:port');
  assert.equal(parseTarget("host:0"), 'port 0 in "host:0" is out of range 1-65535');
  assert.equal(parseTarget("host:70000"), 'port 70000 in "host:70000" is out of range 1-65535');
});

// Names over a small alphabet, so rules and queries meet often: one to four labels of "a", "b" or "c".
const label = fc.constantFrom("a", "b", "c");
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join("."));
const target = fc.option(fc.integer({ min: 1, max: 65_535 }).map(at), { nil: undefined });
const rule = fc.record({ tls: target, http: target }, { requiredKeys: [] });
const ruleKey = fc.oneof(
  name,
  // A wildcard needs two labels after "*." (parseHostnameClaim refuses `*.com`).
  fc.array(label, { minLength: 2, maxLength: 3 }).map((labels) => `*.${labels.join(".")}`),
  fc.constant("default"),
);

/** Whether `key` covers `hostname`: the same name, one label directly below a wildcard's suffix, or default. */
function covers(key: string, hostname: string): boolean {
  if (key === "default") return true;
  if (!key.startsWith("*.")) return key === hostname;
  const suffix = key.slice(1); // ".b.c"
  return hostname.endsWith(suffix) && !hostname.slice(0, -suffix.length).includes(".") &&
    hostname.length > suffix.length;
}

/** How specific a covering key is: an exact name beats a wildcard, which beats default. */
function specificity(key: string): number {
  return key === "default" ? 0 : key.startsWith("*.") ? 1 : 2;
}

Deno.test("property: a stream gets the most specific covering rule that has a target for its protocol", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(ruleKey, rule), { selector: ([key]) => key, maxLength: 12 }),
      fc.array(fc.tuple(name, fc.boolean()), { minLength: 1, maxLength: 20 }),
      (rules, queries) => {
        const map = new TargetMap(new Map(rules));
        for (const [hostname, isTls] of queries) {
          const expected = rules
            .filter(([key, r]) => covers(key, hostname) && (isTls ? r.tls : r.http) !== undefined)
            .sort(([a], [b]) => specificity(b) - specificity(a))
            .map(([, r]) => (isTls ? r.tls : r.http))[0];
          assert.deepEqual(map.resolve(hostname, isTls), expected, `${hostname} ${isTls ? "tls" : "http"}`);
        }
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("property: rule keys are normalised like the names they match (case, one trailing dot)", () => {
  fc.assert(
    fc.property(name, fc.boolean(), fc.integer({ min: 1, max: 65_535 }), (hostname, wildcard, port) => {
      const key = `${wildcard ? "*." : ""}${hostname}.example`;
      const map = new TargetMap(new Map([[`${key.toUpperCase()}.`, { tls: at(port) }]]));
      const asked = wildcard ? `x.${hostname}.example` : `${hostname}.example`;
      assert.deepEqual(map.resolve(asked, true), at(port));
      assert.equal(map.resolve(asked, false), undefined);
    }),
  );
});
