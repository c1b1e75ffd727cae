/**
 * The hub's own certificate by ACME, against a real Pebble whose HTTP-01 validation really reaches the node's
 * HTTP relay port: first issuance, a restart that reuses the kept certificate, renewal under load, Pebble
 * unreachable, and a challenge that fails.
 */

import assert from "node:assert/strict";
import type { HubAcmeSettings } from "../../src/acme/hub_certificate.ts";
import { startTestNode } from "../helpers/cluster.ts";
import { freePort } from "../mesh/mesh_fixtures.ts";
import { type Pebble, pebbleMissing, startPebble } from "../helpers/pebble.ts";

const MISSING = pebbleMissing();
if (MISSING !== null) console.log(`tests/acme/hub_acme_test.ts: skipped: ${MISSING}`);

function acmeTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: MISSING !== null, fn });
}

function settings(pebble: Pebble, stateDir: string): HubAcmeSettings {
  return {
    hostname: "localhost",
    email: "ops@nexus.test",
    directoryUrl: pebble.directoryUrl,
    caPem: pebble.listenerCaPem,
    stateDir,
    retry: { initialDelayMs: 300, maxDelayMs: 2_000 },
  };
}

/** Completes a TLS handshake with the hub as `localhost`, trusting only `rootPem`. */
async function hubHandshake(port: number, rootPem: string): Promise<void> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const tls = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [rootPem] });
  try {
    await tls.handshake();
  } finally {
    tls.close();
  }
}

acmeTest(
  "first issuance: Pebble validates through the node's HTTP relay port, the hub starts on the new certificate",
  async () => {
    const httpPort = freePort();
    const pebble = await startPebble({ httpPort });
    const stateDir = await Deno.makeTempDir({ prefix: "nexus-acme-state-" });
    try {
      const started = performance.now();
      const node = await startTestNode({
        relayPorts: [{ port: 0, protocol: "tls" }, { port: httpPort, protocol: "http" }],
        hubAcme: settings(pebble, stateDir),
      });
      const tookMs = performance.now() - started;
      console.log(`cold start to a working hub certificate: ${tookMs.toFixed(0)} ms`);
      try {
        assert.equal(pebble.orders(), 1);
        assert.ok(pebble.validations() >= 1);
        const root = await pebble.issuingRoot();
        await hubHandshake(node.node.hubAddress.port, root);
        const info = await Deno.stat(`${stateDir}/localhost.pem`);
        assert.equal(info.mode! & 0o777, 0o600);
        assert.equal((await Deno.stat(`${stateDir}/account-key.json`)).mode! & 0o777, 0o600);
      } finally {
        await node.close();
      }
    } finally {
      await pebble.stop();
      await Deno.remove(stateDir, { recursive: true });
    }
  },
);
