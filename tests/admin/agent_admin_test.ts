/**
 * An agent's admin listener, with the agent as a child process from a real config: ready once a hub session is
 * registered, metrics that follow its streams, bytes and dial failures, unready at once when it begins to stop;
 * a refusal that cannot heal said plainly, retried at the slowest backoff and shown in its status; and
 * certificates from an unknown CA named with the setting that fixes them, for agents and for peers.
 */

import assert from "node:assert/strict";
import type { AgentStatus } from "../../src/admin/agent_view.ts";
import type { NodeStatus } from "../../src/admin/node_view.ts";
import { startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { adminGet, sampleValue } from "../helpers/metrics.ts";
import {
  adminPortOf,
  agentYaml,
  makeConfigDir,
  type NexusProcess,
  spawnAgent,
} from "../helpers/processes.ts";
import { readAll, writeAll } from "../helpers/services.ts";
import { digestToEnd, openTrafficStream, startTrafficService } from "../helpers/traffic.ts";

const APP = "app.test.nexus";
const BROKEN = "broken.test.nexus";

/** A port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("an agent is ready once registered, counts its streams, bytes and dial failures, and is unready as it stops", async () => {
  const service = await startTrafficService({ tls: false });
  const node = await startTestNode();
  const dir = await makeConfigDir();
  let agent: NexusProcess | undefined;
  try {
    const config = await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [node.hubUrl],
        hostnames: [APP, BROKEN],
        targets: { [APP]: service.port, [BROKEN]: closedPort() },
        extra: 'admin:\n  listenAddress: "127.0.0.1:0"',
      }),
    );
    agent = await spawnAgent(config);
    const port = await adminPortOf(agent);
    assert.deepEqual(await adminGet(port, "/readyz"), { status: 200, body: "ready\n" });
    const metrics = async () => (await adminGet(port, "/metrics")).body;
    const hub = node.hubUrl;
    assert.equal(sampleValue(await metrics(), "nexus_agent_hub_sessions", { hub, state: "connected" }), 1);
    assert.equal(sampleValue(await metrics(), "nexus_agent_hub_sessions", { hub, state: "connecting" }), 0);

    const bytes = 1024 * 1024 + 3;
    const conn = await openTrafficStream(
      { port: node.httpPort, protocol: "http", hostname: APP },
      `SEND ${bytes} 1`,
    );
    assert.equal((await digestToEnd(conn)).bytes, bytes);
    conn.close();
    const refused = await Deno.connect({ hostname: "127.0.0.1", port: node.httpPort });
    await writeAll(refused, new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${BROKEN}\r\n\r\n`));
    await readAll(refused);
    refused.close();

    await waitFor(() => node.node.relay.activeStreams === 0, "both streams to end at the node");
    let text = "";
    await withTimeout(
      (async () => {
        for (;;) {
          text = await metrics();
          if (sampleValue(text, "nexus_agent_streams_open") === 0) return;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })(),
      "the agent's streams to end",
    );
    const request = `GET / HTTP/1.1\r\nHost: ${APP}\r\n\r\nSEND ${bytes} 1\n`.length;
    assert.equal(sampleValue(text, "nexus_agent_bytes_total", { direction: "from_service" }), bytes);
    assert.equal(sampleValue(text, "nexus_agent_bytes_total", { direction: "to_service" }), request);
    assert.equal(sampleValue(text, "nexus_agent_streams_total"), 2);
    const failures = text.split("\n").filter((line) => line.startsWith("nexus_agent_dial_failures_total{"));
    assert.equal(failures.length, 1);
    assert.match(failures[0], /^nexus_agent_dial_failures_total\{target="127\.0\.0\.1:\d+"\} 1$/);
    const status: AgentStatus = JSON.parse((await adminGet(port, "/status")).body);
    assert.deepEqual(status.hubs.map((h) => [h.url, h.state, h.protocol]), [[
      hub,
      "connected",
      "nexus-mux.v1",
    ]]);
    assert.deepEqual(status.hostnames, [APP, BROKEN]);

    // An open stream holds the drain (drainTimeoutSeconds 5): readiness turns at once all the same.
    const open = await openTrafficStream({ port: node.httpPort, protocol: "http", hostname: APP }, "ECHO");
    await writeAll(open, new TextEncoder().encode("x"));
    await open.read(new Uint8Array(1));
    agent.kill("SIGTERM");
    await agent.waitForLine(/draining streams/);
    assert.deepEqual(await adminGet(port, "/readyz"), {
      status: 503,
      body: "not ready: draining: the agent is stopping\n",
    });
    await open.closeWrite();
    await readAll(open);
    open.close();
    assert.equal((await withTimeout(agent.exited, "the agent's exit")).code, 0);
  } finally {
    await agent?.stop();
    await node.close();
    await service.close();
    await dir.remove();
  }
});

Deno.test("an agent refused for a wrong secret says it cannot heal, retries at the slowest backoff, and shows why", async () => {
  const node = await startTestNode({ admin: { hostname: "127.0.0.1", port: 0 } });
  const dir = await makeConfigDir();
  let agent: NexusProcess | undefined;
  try {
    await dir.write("wrong.secret", "not-the-backends-secret-at-all");
    const config = await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [node.hubUrl],
        hostnames: [APP],
        targets: { [APP]: closedPort() },
        extra: 'admin:\n  listenAddress: "127.0.0.1:0"',
      })
        .replace('secretFile: "backends.secret"', 'secretFile: "wrong.secret"'),
    );
    agent = await spawnAgent(config, { waitConnected: false });
    const port = await adminPortOf(agent);
    const line = await agent.waitForLine(/cannot heal/);
    assert.match(
      line,
      /ERROR agent: the hub refused this agent for a reason that cannot heal: fix the token or the node's configuration; retrying at the slowest backoff hub=\S+ why="hub closed the connection: authentication failed: token signature does not match the backends secret" retry_in_ms=(\d+)$/,
    );
    // agentYaml's reconnect.maxDelaySeconds is 8: the slowest backoff is 4-8 s, never the first attempt's 0.5-1 s.
    const retryMs = Number(/retry_in_ms=(\d+)/.exec(line)?.[1]);
    assert.ok(retryMs >= 4_000 && retryMs <= 8_000, `retry_in_ms=${retryMs}`);
    const status: AgentStatus = JSON.parse((await adminGet(port, "/status")).body);
    assert.equal(status.hubs[0].state, "refused");
    assert.match(status.hubs[0].lastError ?? "", /authentication failed/);
    const ready = await adminGet(port, "/readyz");
    assert.equal(ready.status, 503);
    assert.match(
      ready.body,
      /^not ready: no hub session registered and taking streams \(wss:\S+: refused, hub closed/,
    );
    const nodeMetrics = (await adminGet(node.node.adminAddress.port, "/metrics")).body;
    assert.equal(
      sampleValue(nodeMetrics, "nexus_hub_backend_auth_failures_total", { reason: "authentication_failed" }),
      1,
    );
    assert.equal(sampleValue(nodeMetrics, "nexus_refusals_total", { reason: "backend_rejected" }), 1);
  } finally {
    await agent?.stop();
    await node.close();
    await dir.remove();
  }
});

Deno.test("a hub or peer certificate from an unknown CA is reported with the setting that names the CA", async () => {
  const node = await startTestNode();
  const dialling = await startTestNode({
    peers: [node.meshUrl],
    peerCaPem: null,
    admin: { hostname: "127.0.0.1", port: 0 },
  });
  const dir = await makeConfigDir();
  let agent: NexusProcess | undefined;
  try {
    const config = await dir.write(
      "agent.yaml",
      agentYaml({ hubUrls: [node.hubUrl], hostnames: [APP], targets: { [APP]: closedPort() } })
        .replace('hubCaFile: "ca.pem"\n', ""),
    );
    agent = await spawnAgent(config, { waitConnected: false });
    assert.match(
      await agent.waitForLine(/cannot connect to hub/),
      /why="[^"]*UnknownIssuer \(the certificate is not signed by a CA this process trusts: set hubCaFile to the CA that signed it\)"/,
    );
    let peer: NodeStatus["peers"][number] | undefined;
    await withTimeout(
      (async () => {
        for (;;) {
          const status: NodeStatus = JSON.parse(
            (await adminGet(dialling.node.adminAddress.port, "/status")).body,
          );
          peer = status.peers[0];
          if (peer?.lastError) return;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })(),
      "the peer's first failed dial",
    );
    assert.deepEqual([peer?.url, peer?.direction, peer?.state], [node.meshUrl, "outbound", "dialling"]);
    assert.match(peer?.lastError ?? "", /UnknownIssuer \(.*set peerCaFile to the CA that signed it\)$/);
  } finally {
    await agent?.stop();
    await dialling.close();
    await node.close();
    await dir.remove();
  }
});
