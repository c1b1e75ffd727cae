/**
 * A backend gets its own certificate through the node: certbot (a real ACME client) behind a real agent asks
 * Pebble for a certificate; Pebble's HTTP-01 validation reaches the node's HTTP relay port and is routed by
 * `Host` through the agent to certbot's standalone responder. Then a TLS client reaches the service through
 * the node's TLS port and verifies the new certificate against Pebble's root. The same through a mesh tunnel:
 * Pebble reaches node A, the backend is on node C.
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, type TestNode, waitFor } from "../helpers/cluster.ts";
import { type Pebble, pebbleMissing, startPebble } from "../helpers/pebble.ts";
import { readAll, writeAll } from "../helpers/services.ts";
import { freePort, peerRouteKeys, sameList } from "../mesh/mesh_fixtures.ts";

const CERTBOT = "/usr/bin/certbot";
const NAME = "app.test.nexus";

function certbotMissing(): string | null {
  try {
    Deno.statSync(CERTBOT);
    return null;
  } catch {
    return `${CERTBOT} is not installed (Debian package certbot; .ci/run installs it)`;
  }
}

const MISSING = pebbleMissing() ?? certbotMissing();
if (MISSING !== null) console.log(`tests/acme/backend_certificate_test.ts: skipped: ${MISSING}`);

/** Runs certbot's standalone HTTP-01 responder on `port` for {@linkcode NAME}; returns its live directory. */
async function runCertbot(pebble: Pebble, port: number, workDir: string): Promise<string> {
  const output = await new Deno.Command(CERTBOT, {
    args: [
      "certonly",
      "--standalone",
      "--http-01-address",
      "127.0.0.1",
      "--http-01-port",
      String(port),
      "--server",
      pebble.directoryUrl,
      "--config-dir",
      `${workDir}/config`,
      "--work-dir",
      `${workDir}/work`,
      "--logs-dir",
      `${workDir}/logs`,
      "--register-unsafely-without-email",
      "--agree-tos",
      "--non-interactive",
      "-d",
      NAME,
    ],
    env: { REQUESTS_CA_BUNDLE: pebble.listenerCaFile },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const decoder = new TextDecoder();
  assert.ok(
    output.success,
    `certbot failed:\n${decoder.decode(output.stdout)}${decoder.decode(output.stderr)}`,
  );
  return `${workDir}/config/live/${NAME}`;
}

/** A TLS service on `port` with certbot's certificate that greets and closes. */
async function greetingService(port: number, liveDir: string): Promise<Deno.TlsListener> {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port,
    cert: await Deno.readTextFile(`${liveDir}/fullchain.pem`),
    key: await Deno.readTextFile(`${liveDir}/privkey.pem`),
  });
  void (async () => {
    for await (const conn of listener) {
      void writeAll(conn, new TextEncoder().encode(`hello from ${NAME}\n`))
        .then(() => conn.closeWrite())
        .then(() => readAll(conn))
        .catch(() => {})
        .finally(() => conn.close());
    }
  })().catch(() => {});
  return listener;
}

/** Reaches {@linkcode NAME} through `node`'s TLS port, verifying its certificate against `rootPem` only. */
async function greetingThrough(node: TestNode, rootPem: string): Promise<string> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
  const tls = await Deno.startTls(tcp, { hostname: NAME, caCerts: [rootPem] });
  try {
    await tls.closeWrite();
    return new TextDecoder().decode(await readAll(tls)).trim();
  } finally {
    tls.close();
  }
}

/**
 * The whole story: Pebble validates on `edge`'s HTTP port, the agent sits on `home` (the same node, or a
 * peer that `edge` tunnels to).
 */
async function certificateThrough(edge: TestNode, home: TestNode, pebble: Pebble): Promise<void> {
  const certbotPort = freePort();
  const servicePort = freePort();
  const workDir = await Deno.makeTempDir({ prefix: "nexus-certbot-" });
  const agent = await startTestAgent({
    hubUrls: [home.hubUrl],
    hostnames: [NAME],
    targets: {
      [NAME]: {
        http: { host: "127.0.0.1", port: certbotPort },
        tls: { host: "127.0.0.1", port: servicePort },
      },
    },
  });
  let service: Deno.TlsListener | undefined;
  try {
    if (edge !== home) {
      await waitFor(() => sameList(peerRouteKeys(edge), [NAME]), "the edge to learn the name");
    }
    const liveDir = await runCertbot(pebble, certbotPort, workDir);
    // Pebble asked the edge node's HTTP relay port, not certbot's own.
    assert.ok(
      pebble.lines.some((line) =>
        line.includes(`Attempting to validate w/ HTTP: http://${NAME}:${edge.httpPort}/`)
      ),
    );
    assert.equal(pebble.orders(), 1);
    service = await greetingService(servicePort, liveDir);
    assert.equal(await greetingThrough(edge, await pebble.issuingRoot()), `hello from ${NAME}`);
  } finally {
    service?.close();
    await agent.stop(0);
    await Deno.remove(workDir, { recursive: true });
  }
}

Deno.test({
  name:
    "certbot behind an agent gets a certificate through the node's HTTP port and serves it through its TLS port",
  ignore: MISSING !== null,
  fn: async () => {
    const httpPort = freePort();
    const pebble = await startPebble({ httpPort });
    const node = await startTestNode({
      relayPorts: [{ port: 0, protocol: "tls" }, { port: httpPort, protocol: "http" }],
    });
    try {
      await certificateThrough(node, node, pebble);
    } finally {
      await node.close();
      await pebble.stop();
    }
  },
});

Deno.test({
  name: "certbot on node C gets a certificate through node A's HTTP port, over the mesh tunnel",
  ignore: MISSING !== null,
  fn: async () => {
    const httpPort = freePort();
    const pebble = await startPebble({ httpPort });
    const c = await startTestNode();
    const a = await startTestNode({
      relayPorts: [{ port: 0, protocol: "tls" }, { port: httpPort, protocol: "http" }],
      peers: [c.meshUrl],
    });
    try {
      await certificateThrough(a, c, pebble);
    } finally {
      await a.close();
      await c.close();
      await pebble.stop();
    }
  },
});
