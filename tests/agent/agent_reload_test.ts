/**
 * An agent reconfigured in process against a real node: a session retired by a re-registration drains on
 * shutdown exactly like the current one, and the hub is told why each session closed.
 */

import assert from "node:assert/strict";
import { Agent } from "../../src/agent/agent.ts";
import { createLogger } from "../../src/log/logger.ts";
import {
  connectTls,
  startTestNode,
  Teardown,
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
