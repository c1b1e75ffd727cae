/** The ACME client's requests against a real Pebble: accounts found again by key, and `badNonce` retried. */

import assert from "node:assert/strict";
import { AcmeClient } from "../../src/acme/client.ts";
import { accountKey, generateAccountKeyPair } from "../../src/acme/jws.ts";
import { AcmeProblemError } from "../../src/acme/problem.ts";
import { pebbleMissing, startPebble } from "../helpers/pebble.ts";
import { freePort } from "../mesh/mesh_fixtures.ts";

const MISSING = pebbleMissing();
if (MISSING !== null) console.log(`tests/acme/client_test.ts: skipped: ${MISSING}`);

Deno.test({
  name: "an account is created once; the same key finds it again with onlyReturnExisting, a new key does not",
  ignore: MISSING !== null,
  fn: async () => {
    const pebble = await startPebble({ httpPort: freePort() });
    const key = await accountKey(await generateAccountKeyPair());
    const open = (accountKeyToUse = key) =>
      new AcmeClient({
        directoryUrl: pebble.directoryUrl,
        accountKey: accountKeyToUse,
        caCerts: [pebble.listenerCaPem],
      });
    const first = open();
    const second = open();
    const stranger = open(await accountKey(await generateAccountKeyPair()));
    try {
      const url = await first.account({ email: "ops@nexus.test", existingKey: false });
      assert.equal(await second.account({ existingKey: true }), url);
      // Asked to return an existing account only, for a key it does not know: a new one is made, not an error.
      assert.notEqual(await stranger.account({ existingKey: true }), url);
      assert.equal(pebble.lines.filter((line) => /There are now \d+ accounts/.test(line)).length, 2);
    } finally {
      first.close();
      second.close();
      stranger.close();
      await pebble.stop();
    }
  },
});

Deno.test({
  name: "a server that rejects good nonces (badNonce): every request succeeds on a fresh nonce",
  ignore: MISSING !== null,
  fn: async () => {
    const pebble = await startPebble({ httpPort: freePort(), nonceRejectPercent: 20 });
    const client = new AcmeClient({
      directoryUrl: pebble.directoryUrl,
      accountKey: await accountKey(await generateAccountKeyPair()),
      caCerts: [pebble.listenerCaPem],
    });
    try {
      await client.account({ existingKey: false });
      const { url } = await client.newOrder(["app.test.nexus"]);
      for (let i = 0; i < 40; i++) assert.equal((await client.order(url)).order.status, "pending");
      // 41 signed requests at 20% rejected: some were, and none surfaced.
      assert.ok(client.badNonceRetries > 0, "Pebble rejected some nonces");
      console.log(`${client.badNonceRetries} badNonce answers retried over 42 requests`);
    } finally {
      client.close();
      await pebble.stop();
    }
  },
});

Deno.test({
  name: "a refusal carries the server's problem document",
  ignore: MISSING !== null,
  fn: async () => {
    const pebble = await startPebble({ httpPort: freePort() });
    const client = new AcmeClient({
      directoryUrl: pebble.directoryUrl,
      accountKey: await accountKey(await generateAccountKeyPair()),
      caCerts: [pebble.listenerCaPem],
    });
    try {
      await client.account({ existingKey: false });
      await assert.rejects(client.newOrder(["not a name"]), (error: unknown) => {
        assert.ok(error instanceof AcmeProblemError);
        assert.match(error.problem.type, /^urn:ietf:params:acme:error:/);
        assert.equal(error.problem.status, 400);
        assert.ok(error.problem.detail.length > 0);
        return true;
      });
    } finally {
      client.close();
      await pebble.stop();
    }
  },
});
