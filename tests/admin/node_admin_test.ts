/**
 * A node's admin listener end to end: its metrics and status follow real traffic through the relay (bytes
 * exactly, refusals by reason and port, routes and backends), route keys past the label cap are summed as
 * `other`, and a node that begins to drain is unready at once while it still serves its open streams.
 */

import assert from "node:assert/strict";
import type { NodeStatus } from "../../src/admin/node_view.ts";
import { LABEL_VALUE_CAP } from "../../src/metrics/registry.ts";
import { startTestAgent, startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { adminGet, sampleValue } from "../helpers/metrics.ts";
import { readAll, writeAll } from "../helpers/services.ts";
import { digestToEnd, openTrafficStream, patternSha256, startTrafficService } from "../helpers/traffic.ts";

const TOKEN = "node-admin-token-0123456789";
const ADMIN = { hostname: "127.0.0.1", port: 0, token: new TextEncoder().encode(TOKEN) };
const APP = "app.test.nexus";

Deno.test("metrics and status follow a transfer, a refusal and a registered backend", async () => {
  const service = await startTrafficService({ tls: false });
  const node = await startTestNode({ admin: ADMIN });
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: [APP],
    targets: { [APP]: service.port },
  });
  const port = node.node.adminAddress.port;
  const metrics = async () => (await adminGet(port, "/metrics", TOKEN)).body;
  try {
    assert.equal((await adminGet(port, "/readyz", TOKEN)).body, "ready\n");
    const before = await metrics();
    const http = String(node.httpPort);
    assert.equal(sampleValue(before, "nexus_relay_bytes_total", { direction: "out" }), 0);
    assert.equal(sampleValue(before, "nexus_hub_backends", { route: APP }), 1);
    assert.equal(sampleValue(before, "nexus_hub_sessions", { protocol: "nexus-mux.v1" }), 1);

    const bytes = 3 * 1024 * 1024 + 17;
    const route = { port: node.httpPort, protocol: "http", hostname: APP } as const;
    const conn = await openTrafficStream(route, `SEND ${bytes} 7`);
    const received = await digestToEnd(conn);
    conn.close();
    assert.deepEqual(received, { bytes, sha256: patternSha256(bytes, 7) });
    const request = `GET / HTTP/1.1\r\nHost: ${APP}\r\n\r\nSEND ${bytes} 7\n`.length;

    const refused = await Deno.connect({ hostname: "127.0.0.1", port: node.httpPort });
    await writeAll(refused, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: nobody.test.nexus\r\n\r\n"));
    assert.match(new TextDecoder().decode(await readAll(refused)), /^HTTP\/1\.1 503 /);
    refused.close();

    await waitFor(() => node.node.relay.activeStreams === 0, "the transfer's splice to end");
    const after = await metrics();
    assert.equal(sampleValue(after, "nexus_relay_bytes_total", { direction: "out" }), bytes);
    assert.equal(sampleValue(after, "nexus_relay_bytes_total", { direction: "in" }), request);
    assert.equal(sampleValue(after, "nexus_relay_connections_accepted_total", { port: http }), 2);
    assert.equal(
      sampleValue(after, "nexus_relay_connections_routed_total", { port: http, to: "backend" }),
      1,
    );
    assert.equal(sampleValue(after, "nexus_refusals_total", { reason: "no_backend", port: http }), 1);
    assert.equal(sampleValue(after, "nexus_relay_sniff_duration_seconds_count", { port: http }), 2);
    assert.equal(sampleValue(after, "nexus_relay_streams_open", { to: "backend" }), 0);
    assert.equal(sampleValue(after, "nexus_ready"), 1);
    assert.equal(sampleValue(after, "nexus_build_info", { version: "0.1.0" }), 1);

    const status: NodeStatus = JSON.parse((await adminGet(port, "/status", TOKEN)).body);
    assert.equal(status.counters.bytesOut, bytes);
    assert.equal(status.counters.refusals.no_backend, 1);
    assert.deepEqual(status.routes.map((r) => r.route), [APP]);
    const [backend] = status.routes[0].backends;
    assert.deepEqual({ ...backend, address: "", connectedAt: "" }, {
      name: "test-agent",
      address: "",
      weight: 1,
      streams: 0,
      protocol: "nexus-mux.v1",
      draining: false,
      pausesReceived: 0,
      connectedAt: "",
    });
    assert.equal(status.hubCertificate, null);
    assert.match(backend.address, /^127\.0\.0\.1:\d+$/);
    assert.ok(Date.parse(backend.connectedAt) <= Date.now());
    // The caps in force, after the open-file limit had its say (this test asks for 100,000).
    assert.equal(status.limits.maxConnections, node.node.limitsInForce.relayConnections);
    assert.ok(node.node.limitsInForce.relayConnections <= 100_000);
  } finally {
    await agent.stop(0);
    await node.close();
    await service.close();
  }
});

Deno.test(`route keys past the label cap of ${LABEL_VALUE_CAP} are summed under route="other"`, async () => {
  const service = await startTrafficService({ tls: false });
  const node = await startTestNode({ admin: { hostname: "127.0.0.1", port: 0 } });
  const names = Array.from(
    { length: LABEL_VALUE_CAP + 5 },
    (_, i) => `n${String(i).padStart(3, "0")}.test.nexus`,
  );
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: names,
    targets: { default: service.port },
  });
  try {
    const text = (await adminGet(node.node.adminAddress.port, "/metrics")).body;
    const routes = text.split("\n").filter((line) => line.startsWith("nexus_hub_backends{"));
    assert.equal(routes.length, LABEL_VALUE_CAP + 1);
    assert.equal(sampleValue(text, "nexus_hub_backends", { route: "n000.test.nexus" }), 1);
    assert.equal(sampleValue(text, "nexus_hub_backends", { route: "n099.test.nexus" }), 1);
    assert.equal(sampleValue(text, "nexus_hub_backends", { route: "n100.test.nexus" }), undefined);
    assert.equal(sampleValue(text, "nexus_hub_backends", { route: "other" }), 5);
  } finally {
    await agent.stop(0);
    await node.close();
    await service.close();
  }
});

Deno.test("a node that begins to drain answers /readyz with 503 at once, while its open stream goes on", async () => {
  const service = await startTrafficService({ tls: false });
  const node = await startTestNode({ admin: { hostname: "127.0.0.1", port: 0 } });
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: [APP],
    targets: { [APP]: service.port },
  });
  const port = node.node.adminAddress.port;
  const conn = await openTrafficStream({ port: node.httpPort, protocol: "http", hostname: APP }, "ECHO");
  try {
    await writeAll(conn, new TextEncoder().encode("before"));
    const echoed = new Uint8Array(6);
    for (let n = 0; n < 6;) n += (await conn.read(echoed.subarray(n))) ?? 0;
    assert.equal((await adminGet(port, "/readyz")).status, 200);
    const stopped = node.node.shutdown(30_000);
    assert.deepEqual(await adminGet(port, "/readyz"), {
      status: 503,
      body: "not ready: draining: the node is shutting down\n",
    });
    assert.equal(sampleValue((await adminGet(port, "/metrics")).body, "nexus_draining"), 1);
    // The open stream still works while the node drains.
    await writeAll(conn, new TextEncoder().encode("during"));
    for (let n = 0; n < 6;) n += (await conn.read(echoed.subarray(n))) ?? 0;
    assert.equal(new TextDecoder().decode(echoed), "during");
    await conn.closeWrite();
    await readAll(conn);
    await withTimeout(stopped, "the drain");
    await assert.rejects(adminGet(port, "/healthz"), "the admin listener closes last");
  } finally {
    conn.close();
    await agent.stop(0);
    await node.close();
    await service.close();
  }
});

Deno.test("a node whose hub waits for an ACME certificate is not ready, and says why", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "nexus-acme-state-" });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const node = await startTestNode({
    admin: { hostname: "127.0.0.1", port: 0 },
    hubAcme: {
      hostname: "hub.test.nexus",
      directoryUrl: `https://127.0.0.1:${port}/dir`,
      stateDir,
      retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
    },
    waitForHub: false,
  });
  // It never gets a certificate; shut down while it waits, its start fails quietly.
  const hubStart = node.node.hubReady.catch(() => {});
  try {
    const admin = node.node.adminAddress.port;
    assert.deepEqual(await adminGet(admin, "/readyz"), {
      status: 503,
      body: "not ready: the hub is not listening yet: it has no certificate from ACME\n",
    });
    const text = (await adminGet(admin, "/metrics")).body;
    assert.equal(sampleValue(text, "nexus_ready"), 0);
    assert.equal(sampleValue(text, "nexus_hub_connections"), 0);
    const status: NodeStatus = JSON.parse((await adminGet(admin, "/status")).body);
    assert.equal(status.listeners.hub, null);
    assert.equal(status.notReady, "the hub is not listening yet: it has no certificate from ACME");
  } finally {
    await node.close();
    await hubStart;
    await Deno.remove(stateDir, { recursive: true });
  }
});
