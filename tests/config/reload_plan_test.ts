import assert from "node:assert/strict";
import fc from "fast-check";
import { TargetMap } from "../../src/agent/targets.ts";
import type { AgentConfig } from "../../src/config/agent_config.ts";
import type { NodeConfig } from "../../src/config/node_config.ts";
import {
  AGENT_KEYS,
  applyChanges,
  type KeySpec,
  NODE_KEYS,
  planAgentReload,
  planNodeReload,
  planReload,
} from "../../src/config/reload_plan.ts";
import { type AddressBlock, AddressBlocks, parseAddressBlock } from "../../src/relay/address_blocks.ts";

const encoder = new TextEncoder();

/** fast-check's records have no prototype; the configs the reader makes are ordinary objects. */
function plain<T>(value: T): T {
  if (Array.isArray(value)) return value.map(plain) as T;
  if (value === null || typeof value !== "object") return value;
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== null && prototype !== Object.prototype) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key, plain(v)])) as T;
}
const secret = fc.constantFrom("secret-one-0123456789", "secret-two-0123456789", "secret-three-01234567")
  .map((text) => encoder.encode(text));
const small = (values: readonly number[]) => fc.constantFrom(...values);
const maybe = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });
const blocks = fc.constantFrom("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32").map((text) =>
  new AddressBlocks([parseAddressBlock(text) as AddressBlock])
);

const relayPort = fc.record({
  port: small([0, 443, 8443, 80]),
  protocol: fc.constantFrom("tls" as const, "http" as const),
  trustedProxies: maybe(blocks),
}).map(({ trustedProxies, ...port }) => (trustedProxies === undefined ? port : { ...port, trustedProxies }));

const admin = maybe(
  fc.record({
    hostname: fc.constantFrom("127.0.0.1", "::1"),
    port: small([9100, 9101]),
    token: maybe(secret),
  }).map(({ token, ...rest }) => (token === undefined ? rest : { ...rest, token })),
);

/** Node configs over small domains, so that two of them often share some keys and differ in others. */
const nodeConfig: fc.Arbitrary<NodeConfig> = fc.record({
  hub: fc.record({
    hostname: fc.constantFrom("127.0.0.1", "0.0.0.0"),
    port: small([8443, 9443]),
    certPem: fc.constantFrom("CERT-A", "CERT-B"),
    keyPem: fc.constantFrom("KEY-A", "KEY-B"),
  }),
  acme: fc.boolean(),
  relay: fc.record({
    bindAddress: fc.constantFrom("0.0.0.0", "127.0.0.1"),
    ports: fc.array(relayPort, { minLength: 1, maxLength: 3 }),
  }),
  backendsJwtSecret: secret,
  previousBackendsJwtSecrets: fc.array(secret, { maxLength: 2 }),
  peerSecret: maybe(secret),
  peers: fc.subarray(["wss://a.example:8443/mesh", "wss://b.example:8443/mesh"]),
  peerCaPem: maybe(fc.constantFrom("CA-1", "CA-2")),
  limits: fc.record({
    maxConnections: small([100, 20_000]),
    maxConnectionsPerIp: small([10, 1_000]),
    maxHandshakes: small([16, 1_024]),
    maxHandshakesPerIp: small([4, 64]),
    maxBackends: small([10, 1_000]),
    maxHubHandshakes: small([16, 256]),
    maxHubHandshakesPerIp: small([4, 16]),
    maxStreamsPerBackend: small([100, 10_000]),
    streamWindowBytes: small([65_536, 2_097_152]),
    streamBufferBudgetBytes: small([1_048_576, 536_870_912]),
    legacyStreamBufferBytes: small([65_536, 4_194_304]),
    halfClosedTimeoutSeconds: small([0, 60]),
  }),
  handshakeTimeouts: fc.record({
    firstByteSeconds: small([5, 15]),
    extendSeconds: small([1, 5]),
    totalSeconds: small([30, 60]),
    backendTokenSeconds: maybe(small([5, 10])),
    hubUpgradeSeconds: small([5, 10]),
  }).map(({ backendTokenSeconds, ...rest }) =>
    backendTokenSeconds === undefined ? rest : { ...rest, backendTokenSeconds }
  ),
  drainTimeoutSeconds: small([0, 30]),
  idleTimeoutSeconds: small([0, 300]),
  logLevel: fc.constantFrom("debug" as const, "info" as const),
  logFormat: fc.constantFrom("text" as const, "json" as const),
  admin,
}).map(({ acme, peerSecret, peerCaPem, admin, hub, ...config }) => ({
  ...config,
  hub: acme ? { ...hub, certPem: "", keyPem: "" } : hub,
  ...(acme
    ? {
      hubAcme: {
        hostname: "hub.example.com",
        directoryUrl: "https://acme.example/dir",
        stateDir: "/var/lib/nexus/acme",
        retry: { initialDelayMs: 60_000, maxDelayMs: 3_600_000 },
      },
    }
    : {}),
  ...(peerSecret === undefined ? {} : { peerSecret }),
  ...(peerCaPem === undefined ? {} : { peerCaPem }),
  ...(admin === undefined ? {} : { admin }),
}));

const targets = fc.constantFrom(
  new TargetMap(new Map([["default", { tls: { host: "127.0.0.1", port: 8443 } }]])),
  new TargetMap(new Map([["app.example.com", { tls: { host: "127.0.0.1", port: 8443, proxyProtocol: 2 } }]])),
  new TargetMap(new Map([["default", { http: { host: "127.0.0.1", port: 8080 } }]])),
);

const agentConfig: fc.Arbitrary<AgentConfig> = fc.record({
  name: fc.constantFrom("agent", "web-1"),
  hubs: fc.subarray(["wss://a.example:8443/connect", "wss://b.example:8443/connect"], { minLength: 1 }),
  hubCaPem: maybe(fc.constantFrom("CA-1", "CA-2")),
  hostnames: fc.subarray(["app.example.com", "*.example.org"], { minLength: 1 }),
  weight: small([1, 5]),
  token: fc.oneof(
    fc.record({ kind: fc.constant("secret" as const), secret, ttlSeconds: small([30, 60]) }),
    fc.record({
      kind: fc.constant("command" as const),
      argv: fc.constantFrom(["/bin/token"], ["/bin/token", "--x"]),
      timeoutSeconds: small([5, 15]),
    }),
  ),
  targets,
  limits: fc.record({
    maxStreams: small([100, 10_000]),
    connectTimeoutSeconds: small([5, 10]),
    legacyStreamBufferBytes: small([65_536, 4_194_304]),
    halfClosedTimeoutSeconds: small([0, 60]),
  }),
  reconnect: fc.record({ initialDelaySeconds: small([1, 2]), maxDelaySeconds: small([8, 60]) }),
  drainTimeoutSeconds: small([0, 30]),
  idleTimeoutSeconds: small([0, 300]),
  logLevel: fc.constantFrom("debug" as const, "info" as const),
  logFormat: fc.constantFrom("text" as const, "json" as const),
  admin,
}).map(({ hubCaPem, admin, ...config }) => ({
  ...config,
  ...(hubCaPem === undefined ? {} : { hubCaPem }),
  ...(admin === undefined ? {} : { admin }),
}));

/** The model: each key's effective setting is the new one, or the old one exactly when it needs a restart. */
function checkPlan<C>(specs: readonly KeySpec<C>[], generatedA: C, generatedB: C): void {
  const a = plain(generatedA);
  const b = plain(generatedB);
  const plan = planReload(specs, a, b);
  const restart = new Set(plan.restartNeeded.map((change) => change.key));
  for (const spec of specs) {
    const differs = spec.read(a) !== spec.read(b);
    assert.equal(plan.changes.some((change) => change.key === spec.key), differs, spec.key);
    const expected = restart.has(spec.key) ? spec.read(a) : spec.read(b);
    assert.equal(spec.read(plan.effective), expected, `${spec.key} in the effective config`);
  }
  if (restart.size === 0) assert.deepStrictEqual(plan.effective, b, "nothing refused: the new config whole");
  // Applying the plan again changes nothing more, and the effective config is where the plan leads.
  assert.deepStrictEqual(applyChanges(plan.effective, plan.live), plan.effective);
  assert.equal(planReload(specs, plan.effective, b).live.length, 0, "no live change is left over");
  assert.equal(planReload(specs, a, a).changes.length, 0, "a config against itself changes nothing");
}

Deno.test("node reload plan: the effective config is the new one but for keys that need a restart", () => {
  fc.assert(fc.property(nodeConfig, nodeConfig, (a, b) => checkPlan(NODE_KEYS, a, b)), { numRuns: 500 });
});

Deno.test("agent reload plan: every key applies live", () => {
  fc.assert(
    fc.property(agentConfig, agentConfig, (a, b) => {
      checkPlan(AGENT_KEYS, a, b);
      assert.equal(planAgentReload(a, b).restartNeeded.length, 0);
    }),
    { numRuns: 500 },
  );
});

Deno.test("node reload plan: what needs a restart, and that secrets never show", () => {
  fc.assert(
    fc.property(nodeConfig, nodeConfig, (a, b) => {
      const plan = planNodeReload(a, b);
      const restart = plan.restartNeeded.map((change) => change.key);
      const sameMesh = (a.peerSecret === undefined) === (b.peerSecret === undefined);
      const expected = NODE_KEYS.filter((spec) => spec.read(a) !== spec.read(b)).filter((spec) =>
        spec.key === "backendListenAddress" || spec.key === "relayBindAddress" || spec.key === "hubAcme" ||
        spec.key === "limits.streamBufferBudgetBytes" ||
        (spec.key === "hubTlsCertFile" && (a.hubAcme !== undefined || b.hubAcme !== undefined)) ||
        (spec.key === "peerSecret" && !sameMesh) ||
        (spec.key === "peers" && a.peerSecret === undefined && b.peers.length > 0)
      ).map((spec) => spec.key);
      assert.deepEqual(restart, expected);
      for (const change of plan.changes) {
        for (const text of [change.from, change.to]) assert.doesNotMatch(text, /secret-(one|two|three)/);
        // A change logged must show what changed (a new key for the same certificate too).
        assert.notEqual(change.from, change.to, change.key);
        if (change.restartNeeded !== null) assert.match(change.restartNeeded, /needs a restart/);
      }
    }),
    { numRuns: 300 },
  );
});
