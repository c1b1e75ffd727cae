/**
 * Live reload of real child processes (`nexus serve`, `nexus agent`), by SIGHUP and by `POST /reload` on the
 * admin listener: a stream moving data both ways stays byte-exact across a certificate swap, a secret
 * rotation, a port added and one removed, a peer added and one removed; an invalid file changes nothing and is
 * counted; the agent re-registers with new names and weight, new targets and hubs without cutting a stream.
 */

import assert from "node:assert/strict";
import { createCertificateAuthority, issueCertificate } from "../../scripts/dev_certs.ts";
import { secretTokenSource } from "../../src/agent/token_source.ts";
import { testCertificates } from "../helpers/certs.ts";
import {
  connectTls,
  startTestAgent,
  startTestNode,
  Teardown,
  TEST_JWT_SECRET,
  TEST_PEER_SECRET,
  waitFor,
  withTimeout,
} from "../helpers/cluster.ts";
import {
  adminPortOf,
  agentYaml,
  makeConfigDir,
  type NexusProcess,
  spawnAgent,
  spawnNode,
} from "../helpers/processes.ts";
import { namedEchoService, readLine } from "../helpers/raw.ts";
import { echo, serveConnections, writeAll } from "../helpers/services.ts";
import { PatternStream, StreamDigest } from "../helpers/traffic.ts";
import { freePort } from "../mesh/mesh_fixtures.ts";

const APP = "app.test.nexus";
const OTHER = "other.test.nexus";
const ADMIN_TOKEN = "reload-admin-token-0123456789";
const NEW_SECRET = "rotated-backends-secret-0123456789";
const encoder = new TextEncoder();

/** A client stream that sends pattern bytes in paced pieces and reads the echo, until told to finish. */
class EchoFlow {
  readonly sent = new StreamDigest();
  readonly received = new StreamDigest();
  readonly #done: Promise<unknown>;
  #stopping = false;
  /** Why the stream failed, once it has: reported by the next wait rather than left unhandled. */
  #failure: unknown = null;

  constructor(conn: Deno.Conn, seed: number) {
    const pattern = new PatternStream(seed);
    const writer = (async () => {
      while (!this.#stopping) {
        const piece = pattern.next(16 * 1024);
        this.sent.update(piece);
        await writeAll(conn, piece);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await conn.closeWrite();
    })();
    const reader = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return;
        this.received.update(buffer.subarray(0, n));
      }
    })();
    this.#done = Promise.all([writer, reader]).catch((error) => (this.#failure = error ?? "failed")).finally(
      () => {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      },
    );
  }

  /** Waits until at least `bytes` more have come back (the stream is moving now). */
  async moving(bytes = 64 * 1024): Promise<void> {
    const target = this.received.bytes + bytes;
    await waitFor(
      () => this.received.bytes >= target || this.#failure !== null,
      "the stream to move data",
      15_000,
    );
    if (this.#failure !== null) throw this.#failure;
  }

  /** Ends the stream and returns both digests. */
  async finish(): Promise<{ sent: [number, string]; received: [number, string] }> {
    this.#stopping = true;
    await withTimeout(this.#done, "the stream's end");
    if (this.#failure !== null) throw this.#failure;
    return { sent: [this.sent.bytes, this.sent.hex()], received: [this.received.bytes, this.received.hex()] };
  }
}

/** Asks `process` to reload, by signal or over its admin listener; resolves with the report and log lines. */
async function reload(
  process: NexusProcess,
  how: "SIGHUP" | { adminPort: number },
): Promise<{ status: number | null; body: Record<string, unknown> | null; lines: string[] }> {
  const from = process.lines.length;
  let status: number | null = null;
  let body: Record<string, unknown> | null = null;
  if (how === "SIGHUP") {
    process.kill("SIGHUP");
  } else {
    const response = await fetch(`http://127.0.0.1:${how.adminPort}/reload`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    status = response.status;
    body = await response.json();
  }
  await process.waitForLine(/reload done|reload refused: the configuration in force stays/, {
    from,
    timeoutMs: 20_000,
  });
  return { status, body, lines: process.lines.slice(from) };
}

async function admin(port: number, path: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return await response.text();
}

/** Whether a TLS handshake with the hub succeeds when trusting only `caPem`. */
async function hubTrusted(port: number, caPem: string): Promise<boolean> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const tls = await Deno.startTls(tcp, { hostname: "127.0.0.1", caCerts: [caPem] });
    await tls.handshake();
    tls.close();
    return true;
  } catch {
    try {
      tcp.close();
    } catch {
      // startTls took it.
    }
    return false;
  }
}

async function refused(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.ConnectionRefused;
  }
}

/** One echo round trip through the relay on `port`. */
async function roundTrip(port: number, bytes = 32 * 1024): Promise<void> {
  const conn = await connectTls(port, APP);
  const flow = new EchoFlow(conn, bytes);
  await flow.moving(bytes);
  const { sent, received } = await flow.finish();
  assert.deepEqual(received, sent);
}

interface NodeFileOptions {
  readonly hubPort: number;
  readonly cert: string;
  readonly secretFile: string;
  readonly previousSecretFiles?: readonly string[];
  readonly peers: readonly number[];
  readonly ports: readonly string[];
  readonly extra?: string;
}

function nodeFile(o: NodeFileOptions): string {
  return [
    `backendListenAddress: "127.0.0.1:${o.hubPort}"`,
    `hubTlsCertFile: "${o.cert}.crt"`,
    `hubTlsKeyFile: "${o.cert}.key"`,
    `relayBindAddress: "127.0.0.1"`,
    `relayPorts:`,
    ...o.ports.map((port) => `  - ${port}`),
    `backendsJWTSecretFile: "${o.secretFile}"`,
    ...(o.previousSecretFiles?.length
      ? ["previousBackendsJWTSecrets:", ...o.previousSecretFiles.map((file) => `  - secretFile: "${file}"`)]
      : []),
    `peerSecretFile: "peer.secret"`,
    `peerCaFile: "ca.pem"`,
    `peers:`,
    ...o.peers.map((port) => `  - "wss://127.0.0.1:${port}/mesh"`),
    `admin:`,
    `  listenAddress: "127.0.0.1:0"`,
    `  tokenFile: "admin.token"`,
    `drainTimeoutSeconds: 5`,
    `idleTimeoutSeconds: 0`,
    `logLevel: info`,
    o.extra ?? "",
    "",
  ].join("\n");
}

const portOf = (url: string) => Number(new URL(url).port);

Deno.test("node reload: a stream stays byte-exact across a certificate swap, a secret rotation, ports and peers changed", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const dir = await makeConfigDir();
    teardown.add({ close: () => dir.remove() });
    await dir.write("peer.secret", new TextDecoder().decode(TEST_PEER_SECRET));
    await dir.write("admin.token", ADMIN_TOKEN);
    await dir.write("backends2.secret", NEW_SECRET);
    const ca2 = await createCertificateAuthority({ commonName: "Nexus reload test CA 2" });
    const hub2 = await issueCertificate(ca2, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    await dir.write("hub2.crt", hub2.certPem);
    await dir.write("hub2.key", hub2.keyPem);
    const p1 = teardown.add(await startTestNode());
    const p2 = teardown.add(await startTestNode());
    const hubPort = freePort();
    const addedPort = freePort();
    const base = {
      hubPort,
      cert: "hub",
      secretFile: "backends.secret",
      peers: [portOf(p1.meshUrl)],
      ports: ["{ port: 0, protocol: tls }", "{ port: 0, protocol: http }"],
    };
    const configPath = await dir.write("node.yaml", nodeFile(base));
    const { process: node, ports } = await spawnNode(configPath);
    teardown.add({ close: async () => void (await node.stop()) });
    const adminPort = await adminPortOf(node);
    const agentPath = await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
        hostnames: [APP],
        targets: { [APP]: service.port },
      }),
    );
    const agent = await spawnAgent(agentPath);
    teardown.add({ close: async () => void (await agent.stop()) });
    await waitFor(() => p1.node.mesh!.links.size === 1, "N to link to P1");

    const flow = new EchoFlow(await connectTls(ports.tlsPort, APP), 1);
    await flow.moving();

    // 1. The certificate (SIGHUP): new connections get it, the agent's open session and the stream go on.
    assert.ok(await hubTrusted(hubPort, certs.ca.certPem));
    await dir.write("node.yaml", nodeFile({ ...base, cert: "hub2" }));
    let step = await reload(node, "SIGHUP");
    assert.ok(
      step.lines.some((line) => /reload: changed.*key=hubTlsCertFile/.test(line)),
      step.lines.join("\n"),
    );
    assert.equal(
      await hubTrusted(hubPort, certs.ca.certPem),
      false,
      "the old certificate is no longer served",
    );
    assert.ok(await hubTrusted(hubPort, ca2.certPem), "new connections get the new certificate");
    const newCaAgent = teardown.add(
      await startTestAgent({
        hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
        hostnames: [OTHER],
        targets: { [OTHER]: service.port },
        settings: { hubCaPem: ca2.certPem },
      }),
    );
    assert.equal(newCaAgent.connectedHubs, 1);
    await flow.moving();

    // 2. The backends secret rotates (POST /reload): old and new tokens are accepted.
    await dir.write(
      "node.yaml",
      nodeFile({
        ...base,
        cert: "hub2",
        secretFile: "backends2.secret",
        previousSecretFiles: ["backends.secret"],
      }),
    );
    step = await reload(node, { adminPort });
    assert.equal(step.status, 200, JSON.stringify(step.body));
    assert.deepEqual(step.body?.applied, ["backendsJWTSecret", "previousBackendsJWTSecrets"]);
    const identity = { name: "rotated", hostnames: [OTHER], weight: 1 };
    const settings = { hubCaPem: ca2.certPem };
    for (const secret of [TEST_JWT_SECRET, encoder.encode(NEW_SECRET)]) {
      const rotated = await startTestAgent({
        hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
        hostnames: identity.hostnames,
        targets: { [OTHER]: service.port },
        tokens: secretTokenSource(identity, secret, 30),
        settings,
      });
      await rotated.stop(0);
    }
    await flow.moving();

    // 3. A port added and one removed (SIGHUP): the new one takes clients, the removed one refuses them.
    const portsChanged = { ...base, cert: "hub2", secretFile: "backends2.secret" };
    await dir.write(
      "node.yaml",
      nodeFile({
        ...portsChanged,
        previousSecretFiles: ["backends.secret"],
        ports: ["{ port: 0, protocol: tls }", `{ port: ${addedPort}, protocol: tls }`],
      }),
    );
    step = await reload(node, "SIGHUP");
    assert.ok(step.lines.some((line) => /relay port closed/.test(line)), step.lines.join("\n"));
    await roundTrip(addedPort);
    assert.ok(await refused(ports.httpPort), "the removed port accepts no more");
    await flow.moving();

    // 4. A peer added and one removed (POST /reload): P1's link closes, P2 gets one; the secret's old
    // form is dropped too, so old tokens are refused from now on while the open session stays.
    await dir.write(
      "node.yaml",
      nodeFile({
        ...portsChanged,
        peers: [portOf(p2.meshUrl)],
        ports: ["{ port: 0, protocol: tls }", `{ port: ${addedPort}, protocol: tls }`],
      }),
    );
    step = await reload(node, { adminPort });
    assert.equal(step.status, 200, JSON.stringify(step.body));
    assert.deepEqual(step.body?.applied, ["previousBackendsJWTSecrets", "peers"]);
    await waitFor(() => p1.node.mesh!.links.size === 0, "P1's link to close", 10_000);
    await waitFor(() => p2.node.mesh!.links.size === 1, "N to link to P2", 10_000);
    const stale = await startTestAgent({
      hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
      hostnames: [OTHER],
      targets: { [OTHER]: service.port },
      name: "stale",
      settings,
      waitConnected: false,
    });
    await waitFor(
      () => stale.hubs[0].lastError?.includes("authentication failed") ?? false,
      "an agent with the retired secret to be refused",
      10_000,
    );
    await stale.stop(0);

    const { sent, received } = await flow.finish();
    assert.deepEqual(received, sent, "every byte came back, in order");
    assert.ok(sent[0] > 256 * 1024, `the stream moved ${sent[0]} bytes during the reloads`);
    const metrics = await admin(adminPort, "/metrics");
    assert.match(metrics, /nexus_config_reloads_total\{result="ok"\} 4/);
    assert.match(metrics, /nexus_config_reloads_total\{result="failed"\} 0/);
    const status = JSON.parse(await admin(adminPort, "/status"));
    assert.equal(status.reload.ok, 4);
    assert.notEqual(status.reload.lastSuccessAt, null);
    assert.deepEqual(
      status.listeners.relay.map((port: { port: number }) => port.port),
      [ports.tlsPort, addedPort],
    );
  } finally {
    await teardown.run();
  }
});

Deno.test("node reload: an invalid file changes nothing, each problem is logged and counted; a key that needs a restart is refused alone; a lowered limit refuses the next client", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const dir = await makeConfigDir();
    teardown.add({ close: () => dir.remove() });
    await dir.write("peer.secret", new TextDecoder().decode(TEST_PEER_SECRET));
    await dir.write("admin.token", ADMIN_TOKEN);
    const hubPort = freePort();
    const base = {
      hubPort,
      cert: "hub",
      secretFile: "backends.secret",
      peers: [],
      ports: ["{ port: 0, protocol: tls }"],
    };
    const configPath = await dir.write("node.yaml", nodeFile(base));
    const { process: node, ports } = await spawnNode(configPath);
    teardown.add({ close: async () => void (await node.stop()) });
    const adminPort = await adminPortOf(node);
    const agent = teardown.add(
      await startTestAgent({
        hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
        hostnames: [APP],
        targets: { [APP]: service.port },
      }),
    );
    const flow = new EchoFlow(await connectTls(ports.tlsPort, APP), 2);
    await flow.moving();
    const statusBefore = JSON.parse(await admin(adminPort, "/status"));

    // Three problems: a bad limit, a bad log level, a missing secret file.
    await dir.write(
      "node.yaml",
      nodeFile({ ...base, secretFile: "missing.secret", extra: "limits:\n  maxConnections: 0" })
        .replace("logLevel: info", "logLevel: loud"),
    );
    const byPost = await reload(node, { adminPort });
    assert.equal(byPost.status, 422);
    const problems = byPost.body?.problems as string[];
    assert.equal(problems.length, 3, problems.join("\n"));
    for (const pattern of [/limits\.maxConnections/, /logLevel/, /backendsJWTSecretFile/]) {
      assert.ok(problems.some((problem) => pattern.test(problem)), `${pattern} in ${problems.join("\n")}`);
      assert.ok(
        byPost.lines.some((line) => /reload refused: invalid configuration/.test(line) && pattern.test(line)),
        `${pattern} logged`,
      );
    }
    // The same by SIGHUP: counted again, nothing changed.
    const bySignal = await reload(node, "SIGHUP");
    assert.equal(
      bySignal.lines.filter((line) => /reload refused: invalid configuration/.test(line)).length,
      3,
    );
    const metrics = await admin(adminPort, "/metrics");
    assert.match(metrics, /nexus_config_reloads_total\{result="failed"\} 2/);
    assert.match(metrics, /nexus_config_last_reload_success_timestamp_seconds 0/);
    const statusAfter = JSON.parse(await admin(adminPort, "/status"));
    assert.deepEqual(statusAfter.limits, statusBefore.limits);
    assert.deepEqual(statusAfter.listeners, statusBefore.listeners);
    assert.equal(statusAfter.reload.failed, 2);
    assert.equal(statusAfter.reload.lastSuccessAt, null);
    // A wrong token gets nothing reloaded.
    const wrong = await fetch(`http://127.0.0.1:${adminPort}/reload`, {
      method: "POST",
      headers: { authorization: "Bearer wrong" },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    await flow.moving();

    // The hub's address needs a restart: refused, saying so, while the other change of that reload applies.
    const movedHub = freePort();
    await dir.write(
      "node.yaml",
      nodeFile({ ...base, hubPort: movedHub, extra: "limits:\n  maxBackends: 7" }),
    );
    const partial = await reload(node, { adminPort });
    assert.equal(partial.status, 200, JSON.stringify(partial.body));
    assert.deepEqual(partial.body?.applied, ["limits.maxBackends"]);
    assert.match(
      String((partial.body?.restartNeeded as string[])[0]),
      /backendListenAddress: needs a restart/,
    );
    assert.ok(partial.lines.some((line) => /reload: not applied.*key=backendListenAddress/.test(line)));
    const status = JSON.parse(await admin(adminPort, "/status"));
    assert.equal(status.limits.maxBackends, 7);
    assert.equal(status.listeners.hub, `127.0.0.1:${hubPort}`);
    assert.equal(agent.connectedHubs, 1);

    // A hub key that does not match its certificate makes the file invalid, as `nexus check` says: nothing of
    // it is applied. A relay port and an admin address already taken do not take effect, so neither is applied
    // nor logged as changed; the limit changed beside them is.
    const other = await issueCertificate(
      await createCertificateAuthority({ commonName: "Nexus mismatch CA" }),
      {
        dnsNames: ["localhost"],
      },
    );
    await dir.write("mismatch.crt", await Deno.readTextFile(`${dir.path}/hub.crt`));
    await dir.write("mismatch.key", other.keyPem);
    await dir.write("node.yaml", nodeFile({ ...base, cert: "mismatch", extra: "limits:\n  maxBackends: 8" }));
    const mismatched = await reload(node, { adminPort });
    assert.equal(mismatched.status, 422);
    assert.deepEqual(mismatched.body?.applied ?? [], [], JSON.stringify(mismatched.body));
    assert.ok(
      mismatched.lines.some((line) =>
        /reload refused.*the private key does not belong to the certificate/.test(line)
      ),
      mismatched.lines.join("\n"),
    );
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    teardown.add({ close: () => Promise.resolve(taken.close()) });
    await dir.write(
      "node.yaml",
      nodeFile({
        ...base,
        ports: [...base.ports, `{ port: ${taken.addr.port}, protocol: tls }`],
        extra: "limits:\n  maxBackends: 8",
      }).replace(`listenAddress: "127.0.0.1:0"`, `listenAddress: "127.0.0.1:${taken.addr.port}"`),
    );
    const failing = await reload(node, { adminPort });
    assert.deepEqual(failing.body?.applied, ["limits.maxBackends"], JSON.stringify(failing.body));
    assert.equal((failing.body?.problems as string[]).length, 2, JSON.stringify(failing.body));
    assert.ok(!failing.lines.some((line) => /reload: changed.*key=(relayPorts|admin)/.test(line)));
    for (const key of ["relayPorts", "admin"]) {
      assert.ok(
        failing.lines.some((line) => new RegExp(`reload: not applied.*key=${key}.*why=`).test(line)),
        `${key} logged as not applied:\n${failing.lines.join("\n")}`,
      );
    }
    assert.ok(failing.lines.some((line) => /reload: changed.*key=limits.maxBackends/.test(line)));
    assert.ok(!failing.lines.some((line) => /reload: reload:/.test(line)), failing.lines.join("\n"));
    await flow.moving();

    // A limit lowered below what is open: nothing open is closed, the next client past it is refused.
    await dir.write("node.yaml", nodeFile({ ...base, extra: "limits:\n  maxConnectionsPerIp: 1" }));
    assert.equal(
      (await reload(node, "SIGHUP")).lines.filter((line) => /reload: changed/.test(line)).length,
      2,
    );
    const past = await connectTls(ports.tlsPort, APP);
    await assert.rejects(past.handshake(), "a second connection from this address is refused");
    past.close();
    assert.match(await admin(adminPort, "/metrics"), /nexus_refusals_total\{reason="max_connections_per_ip"/);
    await flow.moving();
    const { sent, received } = await flow.finish();
    assert.deepEqual(received, sent);
    await dir.write("node.yaml", nodeFile(base));
    await reload(node, { adminPort });
    await roundTrip(ports.tlsPort);
  } finally {
    await teardown.run();
  }
});

Deno.test("agent reload: new names, weight, targets and hubs, by SIGHUP and POST /reload, without cutting an open stream", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const named = teardown.add(namedEchoService("second target"));
    const first = teardown.add(namedEchoService("first target"));
    const h1 = teardown.add(await startTestNode());
    const h2 = teardown.add(await startTestNode());
    const dir = await makeConfigDir();
    teardown.add({ close: () => dir.remove() });
    await dir.write("admin.token", ADMIN_TOKEN);
    const adminBlock = `admin:\n  listenAddress: "127.0.0.1:0"\n  tokenFile: "admin.token"`;
    const agentPath = await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [h1.hubUrl],
        hostnames: [APP],
        targets: { [APP]: { tls: service.port, http: first.port } },
        extra: adminBlock,
      }),
    );
    const agent = await spawnAgent(agentPath);
    teardown.add({ close: async () => void (await agent.stop()) });
    const adminPort = await adminPortOf(agent);
    await waitFor(() => h1.node.hub.backends.size === 1, "the agent to register at H1");
    const flow = new EchoFlow(await connectTls(h1.tlsPort, APP), 3);
    await flow.moving();

    // SIGHUP: another name, weight 3, HTTP to another target, a second hub.
    await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [h1.hubUrl, h2.hubUrl],
        hostnames: [APP, OTHER],
        targets: { [APP]: { tls: service.port, http: named.port }, [OTHER]: service.port },
        extra: `${adminBlock}\nweight: 3`,
      }),
    );
    const step = await reload(agent, "SIGHUP");
    assert.ok(step.lines.some((line) => /reload: changed.*key=hostnames/.test(line)), step.lines.join("\n"));
    await waitFor(
      () => [...h1.node.hub.backends].some((b) => b.weight === 3 && !b.session.draining),
      "the agent to re-register at H1 with weight 3",
      10_000,
    );
    await waitFor(() => h2.node.hub.backends.size === 1, "the agent to register at H2", 10_000);
    assert.ok(h1.node.router.hasExactRoute(OTHER), "H1 routes the new name");
    // The old session drains at H1 and carries the open stream on.
    await waitFor(
      () =>
        [...h1.node.hub.backends].some((b) =>
          b.weight === 1 && b.session.draining && b.session.streamCount === 1
        ),
      "the old session to drain at H1, the open stream on it",
    );
    await flow.moving();
    const http = await Deno.connect({ hostname: "127.0.0.1", port: h1.httpPort });
    await writeAll(http, encoder.encode(`GET / HTTP/1.1\r\nHost: ${APP}\r\n\r\n`));
    assert.equal(await readLine(http), "second target", "a new stream goes to the new target");
    http.close();

    // POST /reload: H1 removed. Its sessions drain; the stream on the old one goes on to its end.
    await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [h2.hubUrl],
        hostnames: [APP, OTHER],
        targets: { [APP]: { tls: service.port, http: named.port }, [OTHER]: service.port },
        extra: `${adminBlock}\nweight: 3`,
      }),
    );
    const removed = await reload(agent, { adminPort });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.deepEqual(removed.body?.applied, ["hubs"]);
    await waitFor(
      () => !h1.node.router.hasExactRoute(APP),
      "H1 to route no new streams to the agent",
      10_000,
    );
    await flow.moving();
    const { sent, received } = await flow.finish();
    assert.deepEqual(received, sent, "the stream stayed byte-exact through both reloads");
    await waitFor(() => h1.node.hub.backends.size === 0, "the agent's sessions at H1 to close", 10_000);
    assert.equal(h2.node.hub.backends.size, 1);
    const status = JSON.parse(await admin(adminPort, "/status"));
    assert.equal(status.reload.ok, 2);
    assert.deepEqual(status.hostnames, [APP, OTHER]);
    assert.deepEqual(status.hubs.map((hub: { url: string }) => hub.url), [h2.hubUrl]);
  } finally {
    await teardown.run();
  }
});
