/**
 * The hub's own certificate by ACME, against a real Pebble whose HTTP-01 validation really reaches the node's
 * HTTP relay port: first issuance, a restart that reuses the kept certificate, renewal under load, Pebble
 * unreachable, and a challenge that fails.
 */

import assert from "node:assert/strict";
import type { HubAcmeSettings } from "../../src/acme/hub_certificate.ts";
import { connectTls, startTestAgent, startTestNode, type TestNode, waitFor } from "../helpers/cluster.ts";
import { echo, readAll, serveConnections } from "../helpers/services.ts";
import { testCertificates } from "../helpers/certs.ts";
import { readExactly } from "../helpers/raw.ts";
import { makeConfigDir, NexusProcess } from "../helpers/processes.ts";
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

/** The leaf certificate the hub serves to a new connection for `localhost`, PEM (read with openssl). */
async function servedLeaf(port: number): Promise<string> {
  const output = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    signal: AbortSignal.timeout(10_000),
  }).output();
  const pem = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(output.stdout),
  );
  assert.ok(pem !== null, "openssl printed the served certificate");
  return pem[0];
}

/** The leaf of the chain the node keeps in its state directory. */
async function keptLeaf(stateDir: string): Promise<string> {
  const text = await Deno.readTextFile(`${stateDir}/localhost.pem`);
  return /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(text)![0];
}

/** A node of this file: TLS relay on a free port, the HTTP relay on `httpPort` (where Pebble validates). */
function acmeNode(pebble: Pebble, stateDir: string, httpPort: number, waitForHub = true): Promise<TestNode> {
  return startTestNode({
    relayPorts: [{ port: 0, protocol: "tls" }, { port: httpPort, protocol: "http" }],
    hubAcme: settings(pebble, stateDir),
    waitForHub,
  });
}

async function withPebble(
  options: { validitySeconds?: number; pebbleHttpPort?: number },
  body: (pebble: Pebble, stateDir: string, httpPort: number) => Promise<void>,
): Promise<void> {
  const httpPort = freePort();
  const pebble = await startPebble({
    httpPort: options.pebbleHttpPort ?? httpPort,
    certificateValiditySeconds: options.validitySeconds,
  });
  const stateDir = await Deno.makeTempDir({ prefix: "nexus-acme-state-" });
  try {
    await body(pebble, stateDir, httpPort);
  } finally {
    await pebble.stop();
    await Deno.remove(stateDir, { recursive: true });
  }
}

acmeTest(
  "a restart serves the kept certificate without asking Pebble; without it, the kept account orders anew",
  async () => {
    await withPebble({}, async (pebble, stateDir, httpPort) => {
      const first = await acmeNode(pebble, stateDir, httpPort);
      const issued = await keptLeaf(stateDir);
      await first.close();
      assert.equal(pebble.orders(), 1);

      const second = await acmeNode(pebble, stateDir, httpPort);
      try {
        assert.equal(pebble.orders(), 1, "no new order");
        assert.equal(second.node.hubCertificate?.issued, 0);
        assert.equal(await servedLeaf(second.node.hubAddress.port), issued);
        await hubHandshake(second.node.hubAddress.port, await pebble.issuingRoot());
      } finally {
        await second.close();
      }

      // The certificate gone, the account key kept: one new order, and no second account (onlyReturnExisting).
      await Deno.remove(`${stateDir}/localhost.pem`);
      const third = await acmeNode(pebble, stateDir, httpPort);
      try {
        assert.equal(pebble.orders(), 2);
        assert.equal(pebble.lines.filter((line) => /There are now 1 accounts/.test(line)).length, 1);
        assert.equal(pebble.lines.filter((line) => /There are now 2 accounts/.test(line)).length, 0);
        assert.notEqual(await servedLeaf(third.node.hubAddress.port), issued);
      } finally {
        await third.close();
      }
    });
  },
);

acmeTest(
  "a backend may not claim the hub's name, and the node answers every HTTP request for it itself",
  async () => {
    await withPebble({}, async (pebble, stateDir, httpPort) => {
      const node = await acmeNode(pebble, stateDir, httpPort);
      try {
        const root = await pebble.issuingRoot();
        const refused = await startTestAgent({
          hubUrls: [node.hubUrl],
          hostnames: ["localhost", "app.test.nexus"],
          targets: { default: 1 },
          settings: { hubCaPem: root },
          waitConnected: false,
        });
        try {
          await waitFor(
            () => node.node.refusals.total("backend_rejected") > 0,
            "the claim's refusal",
            10_000,
          );
          assert.equal(node.node.hub.backends.size, 0);
        } finally {
          await refused.stop(0);
        }
        for (
          const [target, body] of [
            ["/", "this name is the node's own hub"],
            ["/.well-known/acme-challenge/not-in-flight", "no ACME challenge in flight"],
          ]
        ) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: httpPort });
          await conn.write(new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: LocalHost.:80\r\n\r\n`));
          const answer = new TextDecoder().decode(await readAll(conn));
          conn.close();
          assert.match(answer, /^HTTP\/1\.1 404 Not Found\r\n/);
          assert.ok(answer.includes(body), answer);
        }
      } finally {
        await node.close();
      }
    });
  },
);

acmeTest(
  "renewal: a new certificate while an agent session and a client stream stay up byte-exact",
  async () => {
    // Pebble's certificates live 20 s here, so renewal (a third of the life left) comes after about 13 s.
    await withPebble({ validitySeconds: 20 }, async (pebble, stateDir, httpPort) => {
      const certs = await testCertificates();
      const service = serveConnections(echo, certs.service);
      const node = await acmeNode(pebble, stateDir, httpPort);
      const root = await pebble.issuingRoot();
      const agent = await startTestAgent({
        hubUrls: [node.hubUrl],
        hostnames: ["app.test.nexus"],
        targets: { "app.test.nexus": service.port },
        settings: { hubCaPem: root },
      });
      const client = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        const [backend] = [...node.node.hub.backends];
        const chunk = (i: number) => new TextEncoder().encode(`chunk ${i} `.padEnd(1000, String(i % 10)));
        let sent = 0;
        const exchange = async () => {
          const bytes = chunk(sent++);
          await client.write(bytes);
          assert.deepEqual(await readExactly(client, bytes.length), bytes);
        };
        await exchange();
        const firstLeaf = await keptLeaf(stateDir);
        // Traffic all along, until the renewed certificate is saved.
        while (node.node.hubCertificate?.issued !== 2) {
          await exchange();
          await new Promise((resolve) => setTimeout(resolve, 200));
          assert.ok(sent < 200, "renewed within 40 s");
        }
        await exchange();
        assert.equal(pebble.orders(), 2);
        assert.notEqual(await keptLeaf(stateDir), firstLeaf);
        assert.deepEqual([...node.node.hub.backends], [backend], "the same backend session");
        assert.ok(backend.session.isOpen);
        // Swapped in while running: new connections get the renewed certificate, no restart needed.
        assert.equal(node.node.hubCertificate?.restartNeeded, false);
        assert.equal(await servedLeaf(node.node.hubAddress.port), await keptLeaf(stateDir));
      } finally {
        client.close();
        await agent.stop(0);
        await node.close();
        await service.close();
      }
      const restarted = await acmeNode(pebble, stateDir, httpPort);
      try {
        assert.equal(await servedLeaf(restarted.node.hubAddress.port), await keptLeaf(stateDir));
        assert.equal(pebble.orders(), 2);
      } finally {
        await restarted.close();
      }
    });
  },
);

Deno.test({
  name: "renewal: new hub connections get the renewed certificate, open sessions stay up",
  ignore: MISSING !== null,
  fn: async () => {
    await withPebble({ validitySeconds: 20 }, async (pebble, stateDir, httpPort) => {
      const node = await acmeNode(pebble, stateDir, httpPort);
      const agent = await startTestAgent({
        hubUrls: [node.hubUrl],
        hostnames: ["app.test.nexus"],
        targets: { default: 1 },
        settings: { hubCaPem: await pebble.issuingRoot() },
      });
      try {
        const [backend] = [...node.node.hub.backends];
        const before = await servedLeaf(node.node.hubAddress.port);
        await waitFor(() => node.node.hubCertificate?.issued === 2, "the renewal", 40_000);
        const after = await servedLeaf(node.node.hubAddress.port);
        assert.notEqual(after, before);
        assert.equal(after, await keptLeaf(stateDir));
        assert.equal(node.node.hubCertificate?.restartNeeded, false);
        assert.deepEqual([...node.node.hub.backends], [backend]);
        assert.ok(backend.session.isOpen);
      } finally {
        await agent.stop(0);
        await node.close();
      }
    });
  },
});

acmeTest(
  "Pebble unreachable: the hub keeps serving its kept certificate, retries with backoff, says why, renews once Pebble is back",
  async () => {
    const httpPort = freePort();
    const acmePort = freePort();
    const stateDir = await Deno.makeTempDir({ prefix: "nexus-acme-state-" });
    let pebble = await startPebble({ httpPort, port: acmePort, certificateValiditySeconds: 20 });
    try {
      const first = await acmeNode(pebble, stateDir, httpPort);
      await first.close();
      const root = await pebble.issuingRoot();
      await pebble.stop();

      const node = await acmeNode(pebble, stateDir, httpPort);
      try {
        // Renewal is due after about 13 s; every attempt fails while Pebble is down.
        await waitFor(() => (node.node.hubCertificate?.failures ?? 0) >= 3, "three failed renewals", 30_000);
        const status = node.node.hubCertificate!;
        assert.match(
          status.lastFailure ?? "",
          /cannot reach the ACME server at https:\/\/localhost:\d+\/dir/,
        );
        assert.equal(status.issued, 0);
        await hubHandshake(node.node.hubAddress.port, root);

        pebble = await startPebble({ httpPort, port: acmePort, certificateValiditySeconds: 20 });
        await waitFor(
          () => node.node.hubCertificate?.issued === 1,
          "the renewal once Pebble is back",
          // A hang guard, not a speed requirement: on a loaded machine Pebble's restart and one backoff take a while.
          45_000,
        );
        assert.equal(node.node.hubCertificate?.failures, 0);
        assert.equal(pebble.orders(), 1);
        // The new Pebble has a new root, and the hub serves the renewed certificate at once.
        await hubHandshake(node.node.hubAddress.port, await pebble.issuingRoot());
      } finally {
        await node.close();
      }
    } finally {
      await pebble.stop();
      await Deno.remove(stateDir, { recursive: true });
    }
  },
);

acmeTest("no certificate and Pebble unreachable: the hub does not start, and the node says why", async () => {
  await withPebble({}, async (pebble, stateDir, httpPort) => {
    await pebble.stop();
    const node = await acmeNode(pebble, stateDir, httpPort, false);
    try {
      await waitFor(() => (node.node.hubCertificate?.failures ?? 0) >= 2, "two failed attempts", 20_000);
      assert.match(node.node.hubCertificate?.lastFailure ?? "", /cannot reach the ACME server/);
      assert.throws(() => node.node.hubAddress, /the hub has not started yet/);
    } finally {
      await node.close();
    }
  });
});

acmeTest(
  "a challenge Pebble cannot validate: the problem document is logged and the hub does not start",
  async () => {
    // Pebble validates on a port where nothing listens, not on the node's HTTP relay port.
    await withPebble({ pebbleHttpPort: freePort() }, async (pebble, stateDir, httpPort) => {
      const dir = await makeConfigDir();
      const config = await dir.write(
        "node.yaml",
        [
          `backendListenAddress: "127.0.0.1:0"`,
          `hubAcme:`,
          `  hostname: localhost`,
          `  directoryUrl: "${pebble.directoryUrl}"`,
          `  caFile: "${pebble.listenerCaFile}"`,
          `  stateDir: "${stateDir}"`,
          `relayBindAddress: "127.0.0.1"`,
          `relayPorts: [{ port: ${httpPort}, protocol: http }]`,
          `backendsJWTSecretFile: "backends.secret"`,
        ].join("\n") + "\n",
      );
      const process = new NexusProcess(["serve", "--config", config], { allowWrite: stateDir });
      try {
        const line = await process.waitForLine(/cannot start the hub: no certificate for localhost/, {
          timeoutMs: 30_000,
        });
        assert.match(line, /problem="connection \(400\): /);
        // A minute before the next attempt, less up to half for jitter.
        const retry = Number(/retry_in_s=(\d+)/.exec(line)?.[1]);
        assert.ok(retry >= 30 && retry <= 60, line);
        assert.equal(process.matching(/node started/).length, 0);
      } finally {
        await process.stop();
        await dir.remove();
      }
    });
  },
);
