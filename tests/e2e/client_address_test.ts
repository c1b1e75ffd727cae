/**
 * The client's real address at the service, checked by real consumers of the PROXY protocol: nginx
 * (`listen … proxy_protocol`) and HAProxy (`accept-proxy`) behind the agent answer every request with the
 * source and destination the agent's header gave them. For v1 and v2, TLS and plain HTTP, directly and
 * through a mesh tunnel, and behind a real HAProxy that sends PROXY v2 (and v1) to a trusted relay port;
 * every answer is compared with the client socket's own address and port. Clients connect from distinct
 * loopback addresses (127.0.0.0/8 is all this host's), so an address cannot be right by accident.
 */

import assert from "node:assert/strict";
import type { TargetRule } from "../../src/agent/targets.ts";
import { startTestAgent, startTestNode, type TestNode, trustedBlocks, waitFor } from "../helpers/cluster.ts";
import type { RelayPort } from "../../src/relay/relay.ts";
import {
  HAPROXY,
  NGINX,
  programMissing,
  type ProxyConsumer,
  requestFrom,
  startHaproxyBalancer,
  startHaproxyConsumer,
  startNginxConsumer,
} from "../helpers/proxy_consumers.ts";
import { peerRouteKeys, sameList, Teardown } from "../mesh/mesh_fixtures.ts";

const NGINX_MISSING = programMissing(NGINX, "nginx");
const HAPROXY_MISSING = programMissing(HAPROXY, "haproxy");
for (const missing of [NGINX_MISSING, HAPROXY_MISSING]) {
  if (missing !== null) console.log(`tests/e2e/client_address_test.ts: some tests skipped: ${missing}`);
}
const MISSING = NGINX_MISSING ?? HAPROXY_MISSING;

/** A name per consumer and version, each with TLS and HTTP targets on that consumer with that header. */
function targetsFor(
  consumers: readonly ProxyConsumer[],
): { names: string[]; targets: Record<string, TargetRule> } {
  const targets: Record<string, TargetRule> = {};
  for (const consumer of consumers) {
    for (const version of [1, 2] as const) {
      targets[`${consumer.name.toLowerCase()}-v${version}.test.nexus`] = {
        tls: { host: "127.0.0.1", port: consumer.tlsPort, proxyProtocol: version },
        http: { host: "127.0.0.1", port: consumer.httpPort, proxyProtocol: version },
      };
    }
  }
  return { names: Object.keys(targets).sort(), targets };
}

/** Next client address: a new loopback address per request, so no answer can match by chance. */
let lastOctet = 10;
function nextClientAddress(): string {
  lastOctet = lastOctet >= 250 ? 10 : lastOctet + 1;
  return `127.0.0.${lastOctet}`;
}

/**
 * For every name and both protocols: a request from a fresh loopback address to `relayPort(protocol)`; the
 * consumer must answer with exactly the client socket's address and `destination(protocol)`.
 */
async function assertEveryServiceSeesTheClient(
  names: readonly string[],
  relayPort: (protocol: "tls" | "http") => number,
  destination: (protocol: "tls" | "http") => string,
): Promise<void> {
  for (const hostname of names) {
    for (const protocol of ["tls", "http"] as const) {
      const exchange = await requestFrom(nextClientAddress(), relayPort(protocol), {
        hostname,
        tls: protocol === "tls",
      });
      assert.equal(exchange.status, 200, `${hostname} over ${protocol}: ${exchange.body}`);
      assert.equal(
        exchange.body.trim(),
        `${exchange.local} ${destination(protocol)}`,
        `${hostname} over ${protocol}: the client's address and port, then the relay address it reached`,
      );
      assert.equal(
        exchange.headers.get("x-remote"),
        exchange.local,
        `${hostname}: the service's own client address`,
      );
    }
  }
}

async function startConsumers(teardown: Teardown): Promise<ProxyConsumer[]> {
  const nginx = await startNginxConsumer();
  teardown.add({ close: () => nginx.stop() });
  const haproxy = await startHaproxyConsumer();
  teardown.add({ close: () => haproxy.stop() });
  return [nginx, haproxy];
}

Deno.test({
  name:
    "nginx and HAProxy behind the agent see the client's address and port and the relay address, v1 and v2, TLS and HTTP",
  ignore: MISSING !== null,
  async fn() {
    const teardown = new Teardown();
    try {
      const { names, targets } = targetsFor(await startConsumers(teardown));
      const node = teardown.add(await startTestNode());
      teardown.add(await startTestAgent({ hubUrls: [node.hubUrl], hostnames: names, targets }));
      const port = (protocol: "tls" | "http") => (protocol === "tls" ? node.tlsPort : node.httpPort);
      await assertEveryServiceSeesTheClient(names, port, (protocol) => `127.0.0.1:${port(protocol)}`);
    } finally {
      await teardown.run();
    }
  },
});

Deno.test({
  name: "through a mesh tunnel, the service behind node C sees the client of node A and A's relay address",
  ignore: MISSING !== null,
  async fn() {
    const teardown = new Teardown();
    try {
      const { names, targets } = targetsFor(await startConsumers(teardown));
      const c = teardown.add(await startTestNode());
      teardown.add(await startTestAgent({ hubUrls: [c.hubUrl], hostnames: names, targets }));
      const a = teardown.add(await startTestNode({ peers: [c.meshUrl] }));
      await waitFor(() => sameList(peerRouteKeys(a), names), "A to learn C's names");
      const port = (protocol: "tls" | "http") => (protocol === "tls" ? a.tlsPort : a.httpPort);
      await assertEveryServiceSeesTheClient(names, port, (protocol) => `127.0.0.1:${port(protocol)}`);
      assert.equal(a.node.router.route(names[0])?.kind, "peer", "A has no backend of its own: it tunnelled");
    } finally {
      await teardown.run();
    }
  },
});

/** Relay ports that trust 127.0.0.1 (where the load balancer connects from) to send PROXY headers. */
function trustingLoopback(): RelayPort[] {
  const trustedProxies = trustedBlocks("127.0.0.1");
  return [
    { port: 0, protocol: "tls", trustedProxies },
    { port: 0, protocol: "http", trustedProxies },
  ];
}

Deno.test({
  name:
    "behind HAProxy sending PROXY v2 (and v1) to a trusted relay port, the service sees the client of HAProxy, directly and through a tunnel",
  ignore: MISSING !== null,
  async fn() {
    const teardown = new Teardown();
    try {
      const { names, targets } = targetsFor(await startConsumers(teardown));
      const c = teardown.add(await startTestNode());
      teardown.add(await startTestAgent({ hubUrls: [c.hubUrl], hostnames: names, targets }));
      // A: the agent's own node is C; A tunnels. C itself is behind the load balancer too.
      const a = teardown.add(await startTestNode({ peers: [c.meshUrl], relayPorts: trustingLoopback() }));
      await waitFor(() => sameList(peerRouteKeys(a), names), "A to learn C's names");
      const lb = await startHaproxyBalancer({
        tls: { nodePort: a.tlsPort, version: 2 },
        http: { nodePort: a.httpPort, version: 1 },
      });
      teardown.add({ close: () => lb.stop() });
      // The client reached the load balancer: its address is the destination the service must see.
      const port = (protocol: "tls" | "http") => lb.ports[protocol];
      await assertEveryServiceSeesTheClient(names, port, (protocol) => `127.0.0.1:${port(protocol)}`);
      assert.equal(a.node.refusals.total("proxy_header_missing"), 0);
    } finally {
      await teardown.run();
    }
  },
});

Deno.test({
  name:
    "behind HAProxy sending PROXY v2 to a trusted port of the agent's own node, the service sees the client",
  ignore: MISSING !== null,
  async fn() {
    const teardown = new Teardown();
    try {
      const { names, targets } = targetsFor(await startConsumers(teardown));
      const node: TestNode = teardown.add(await startTestNode({ relayPorts: trustingLoopback() }));
      teardown.add(await startTestAgent({ hubUrls: [node.hubUrl], hostnames: names, targets }));
      const lb = await startHaproxyBalancer({
        tls: { nodePort: node.tlsPort, version: 2 },
        http: { nodePort: node.httpPort, version: 2 },
      });
      teardown.add({ close: () => lb.stop() });
      const port = (protocol: "tls" | "http") => lb.ports[protocol];
      await assertEveryServiceSeesTheClient(names, port, (protocol) => `127.0.0.1:${port(protocol)}`);
    } finally {
      await teardown.run();
    }
  },
});
