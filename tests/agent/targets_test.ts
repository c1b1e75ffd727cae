/** The agent's targets: exact name, then wildcard, then default, per protocol; and the `host:port` syntax. */

import assert from "node:assert/strict";
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
