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
import {
  startTestAgent,
  startTestNode,
  Teardown,
  type TestNode,
  trustedBlocks,
  waitFor,
} from "../helpers/cluster.ts";
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
import { peerRouteKeys, sameList } from "../mesh/mesh_fixtures.ts";

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
 * For every name and both protocols: a request from a fresh loopback address to `relayPorts[protocol]`; the
 * consumer must answer with exactly the client socket's address, then the address the client reached.
 */
async function assertEveryServiceSeesTheClient(
  names: readonly string[],
  relayPorts: Readonly<Record<"tls" | "http", number>>,
): Promise<void> {
  for (const hostname of names) {
    for (const protocol of ["tls", "http"] as const) {
      const exchange = await requestFrom(nextClientAddress(), relayPorts[protocol], {
        hostname,
        tls: protocol === "tls",
      });
      assert.equal(exchange.status, 200, `${hostname} over ${protocol}: ${exchange.body}`);
      assert.equal(
        exchange.body.trim(),
        `${exchange.local} 127.0.0.1:${relayPorts[protocol]}`,
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

/** What every test here runs on: nginx and HAProxy behind an agent on node `agentNode`, serving `names`. */
interface Consumers {
  readonly names: string[];
  readonly agentNode: TestNode;
  readonly teardown: Teardown;
}

/** Starts the consumers, the agent's node (with `relayPorts`, if given) and the agent; runs `body`; tears down. */
async function withConsumersBehindAgent(
  agentNodeOptions: { relayPorts?: RelayPort[] },
  body: (consumers: Consumers) => Promise<void>,
): Promise<void> {
  const teardown = new Teardown();
  try {
    const nginx = await startNginxConsumer();
    teardown.add({ close: () => nginx.stop() });
    const haproxy = await startHaproxyConsumer();
    teardown.add({ close: () => haproxy.stop() });
    const { names, targets } = targetsFor([nginx, haproxy]);
    const agentNode = teardown.add(await startTestNode(agentNodeOptions));
    teardown.add(await startTestAgent({ hubUrls: [agentNode.hubUrl], hostnames: names, targets }));
    await body({ names, agentNode, teardown });
  } finally {
    await teardown.run();
  }
}

/** Node A, with no backend of its own, linked to the agent's node; once it has learnt the names. */
async function tunnellingNode(
  { names, agentNode, teardown }: Consumers,
  relayPorts?: RelayPort[],
): Promise<TestNode> {
  const a = teardown.add(
    await startTestNode({ peers: [agentNode.meshUrl], ...(relayPorts ? { relayPorts } : {}) }),
  );
  await waitFor(() => sameList(peerRouteKeys(a), names), "A to learn the agent's node's names");
  return a;
}

const relayPortsOf = (node: TestNode) => ({ tls: node.tlsPort, http: node.httpPort });

Deno.test({
  name:
    "nginx and HAProxy behind the agent see the client's address and port and the relay address, v1 and v2, TLS and HTTP",
  ignore: MISSING !== null,
  fn: () =>
    withConsumersBehindAgent({}, async ({ names, agentNode }) => {
      await assertEveryServiceSeesTheClient(names, relayPortsOf(agentNode));
    }),
});

Deno.test({
  name: "through a mesh tunnel, the service behind node C sees the client of node A and A's relay address",
  ignore: MISSING !== null,
  fn: () =>
    withConsumersBehindAgent({}, async (consumers) => {
      const a = await tunnellingNode(consumers);
      await assertEveryServiceSeesTheClient(consumers.names, relayPortsOf(a));
      assert.equal(a.node.router.route(consumers.names[0])?.kind, "peer", "A has no backend of its own");
    }),
});

/** Relay ports that trust 127.0.0.1 (where the load balancer connects from) to send PROXY headers. */
function trustingLoopback(): RelayPort[] {
  const trustedProxies = trustedBlocks("127.0.0.1");
  return [
    { port: 0, protocol: "tls", trustedProxies },
    { port: 0, protocol: "http", trustedProxies },
  ];
}

/** HAProxy in front of `node`'s relay ports, sending PROXY headers of the given versions. */
async function balancerInFront(node: TestNode, teardown: Teardown, versions: { tls: 1 | 2; http: 1 | 2 }) {
  const lb = await startHaproxyBalancer({
    tls: { nodePort: node.tlsPort, version: versions.tls },
    http: { nodePort: node.httpPort, version: versions.http },
  });
  teardown.add({ close: () => lb.stop() });
  return { tls: lb.ports.tls, http: lb.ports.http };
}

Deno.test({
  name:
    "behind HAProxy sending PROXY v2 to a trusted port of the agent's own node, the service sees HAProxy's client",
  ignore: MISSING !== null,
  fn: () =>
    withConsumersBehindAgent({ relayPorts: trustingLoopback() }, async ({ names, agentNode, teardown }) => {
      // The client reached the load balancer: its address is the destination the service must see.
      await assertEveryServiceSeesTheClient(
        names,
        await balancerInFront(agentNode, teardown, { tls: 2, http: 2 }),
      );
    }),
});

Deno.test({
  name:
    "behind HAProxy sending PROXY v2 (and v1) to a trusted port of node A, the service behind C sees HAProxy's client",
  ignore: MISSING !== null,
  fn: () =>
    withConsumersBehindAgent({}, async (consumers) => {
      const a = await tunnellingNode(consumers, trustingLoopback());
      await assertEveryServiceSeesTheClient(
        consumers.names,
        await balancerInFront(a, consumers.teardown, { tls: 2, http: 1 }),
      );
      assert.equal(a.node.refusals.total("proxy_header_missing"), 0);
    }),
});
