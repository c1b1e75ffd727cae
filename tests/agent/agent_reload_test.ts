/**
 * An agent reconfigured in process against a real node: a session retired by a re-registration drains on
 * shutdown exactly like the current one, and the hub is told why each session closed; a re-registration the
 * hub refused is retried, at once after a reload, and shows in status until it is done.
 */

import assert from "node:assert/strict";
import { Agent } from "../../src/agent/agent.ts";
import { type BackendIdentity, secretTokenSource, type TokenSource } from "../../src/agent/token_source.ts";
import { createLogger } from "../../src/log/logger.ts";
import {
  connectTls,
  startTestNode,
  Teardown,
  TEST_JWT_SECRET,
  testAgentSettings,
  waitFor,
  withTimeout,
} from "../helpers/cluster.ts";
import { echo, serveConnections, writeAll } from "../helpers/services.ts";
import { testCertificates } from "../helpers/certs.ts";

const APP = "app.test.nexus";

Deno.test("agent reload: a stream on a session retired by a re-registration drains on shutdown; the hub hears why", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const hub = teardown.add(await startTestNode());
    const options = { hubUrls: [hub.hubUrl], hostnames: [APP], targets: { [APP]: service.port } };
    const agent = new Agent(await testAgentSettings(options), createLogger("agent"));
    agent.start();
    teardown.add(agent);
    assert.ok(await agent.whenConnected(10_000));
    const client = await connectTls(hub.tlsPort, APP);
    const buffer = new Uint8Array(16);
    await writeAll(client, new TextEncoder().encode("before"));
    assert.equal(await client.read(buffer), 6);
    const [old] = [...hub.node.hub.backends];

    agent.reconfigure(await testAgentSettings({ ...options, weight: 2 }), { reregister: true });
    await waitFor(
      () => [...hub.node.hub.backends].some((b) => b.weight === 2),
      "the re-registration",
      10_000,
    );
    assert.equal(old.session.streamCount, 1, "the open stream stays on the old session");

    const stopped = agent.stop(10_000);
    // Longer than the retired session's poll: without the drain it has closed by now and cut the stream.
    await new Promise((resolve) => setTimeout(resolve, 600));
    await writeAll(client, new TextEncoder().encode("during"));
    assert.equal(
      await client.read(buffer),
      6,
      "the stream on the retired session still moves while draining",
    );
    assert.equal(new TextDecoder().decode(buffer.subarray(0, 6)), "during");
    client.close();
    await withTimeout(stopped, "the agent's stop");
    assert.equal((await old.session.closed).reason, "agent shutting down");
  } finally {
    await teardown.run();
  }
});

Deno.test("agent reload: a retired session that has drained closes with the reason of its retirement", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const hub = teardown.add(await startTestNode());
    const options = { hubUrls: [hub.hubUrl], hostnames: [APP], targets: { [APP]: service.port } };
    const agent = new Agent(await testAgentSettings(options), createLogger("agent"));
    agent.start();
    teardown.add(agent);
    assert.ok(await agent.whenConnected(10_000));
    const [old] = [...hub.node.hub.backends];
    agent.reconfigure(await testAgentSettings({ ...options, weight: 2 }), { reregister: true });
    const end = await withTimeout(old.session.closed, "the old session's close", 10_000);
    assert.equal(end.reason, "agent re-registered on a new session");
  } finally {
    await teardown.run();
  }
});

const OTHER = "other.test.nexus";

/** A token source signing with the test secret, or with a wrong one while `refused` is set. */
function switchableTokens(identity: BackendIdentity): TokenSource & { refused: boolean } {
  const good = secretTokenSource(identity, TEST_JWT_SECRET, 30);
  const bad = secretTokenSource(identity, new TextEncoder().encode("not-the-backends-secret-0123456789"), 30);
  return {
    refused: true,
    token(stage, nonce) {
      return (this.refused ? bad : good).token(stage, nonce);
    },
  };
}

async function refusedReregistration(reconnect: { initialDelayMs: number; maxDelayMs: number }) {
  const certs = await testCertificates();
  const teardown = new Teardown();
  const service = teardown.add(serveConnections(echo, certs.service));
  const hub = teardown.add(await startTestNode());
  const options = {
    hubUrls: [hub.hubUrl],
    hostnames: [APP],
    targets: { [APP]: service.port, [OTHER]: service.port },
    settings: { reconnect },
  };
  const agent = new Agent(await testAgentSettings(options), createLogger("agent"));
  agent.start();
  teardown.add(agent);
  assert.ok(await agent.whenConnected(10_000));
  const tokens = switchableTokens({ name: "test-agent", hostnames: [APP, OTHER], weight: 1 });
  const renamed = { ...options, hostnames: [APP, OTHER], tokens };
  agent.reconfigure(await testAgentSettings(renamed), { reregister: true });
  await waitFor(() => agent.hubs[0].lastError !== null, "the hub to refuse the re-registration", 10_000);
  const [status] = agent.hubs;
  assert.equal(status.state, "connected", "the session held stays");
  assert.equal(status.reregistrationPending, true, "status shows the re-registration still pending");
  assert.match(status.lastError ?? "", /re-registration/);
  assert.equal(hub.node.router.hasExactRoute(OTHER), false);
  return { teardown, hub, agent, tokens, renamed };
}

Deno.test("agent reload: a re-registration the hub refused is retried with the backoff until it is accepted", async () => {
  const { teardown, hub, agent, tokens } = await refusedReregistration({
    initialDelayMs: 100,
    maxDelayMs: 300,
  });
  try {
    tokens.refused = false;
    await waitFor(
      () => hub.node.router.hasExactRoute(OTHER),
      "the retried re-registration to serve the new name",
      10_000,
    );
    await waitFor(
      () => !agent.hubs[0].reregistrationPending,
      "status to show the re-registration done",
      10_000,
    );
  } finally {
    await teardown.run();
  }
});

Deno.test("agent reload: a reload that fixes the token retries a refused re-registration at once", async () => {
  const slow = { initialDelayMs: 60_000, maxDelayMs: 60_000 };
  const { teardown, hub, agent, tokens, renamed } = await refusedReregistration(slow);
  try {
    tokens.refused = false;
    // The token changed, nothing else: no re-registration is asked for but the one pending.
    agent.reconfigure(await testAgentSettings(renamed), { reregister: false });
    await waitFor(
      () => hub.node.router.hasExactRoute(OTHER),
      "the re-registration to serve the new name",
      10_000,
    );
    await waitFor(
      () => !agent.hubs[0].reregistrationPending,
      "status to show the re-registration done",
      10_000,
    );
  } finally {
    await teardown.run();
  }
});
