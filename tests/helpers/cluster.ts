/**
 * Nodes and agents for tests, in-process, on 127.0.0.1 with free ports, built from the same typed settings
 * the config loader produces.
 *
 * @module
 */

import { Agent, type AgentSettings } from "../../src/agent/agent.ts";
import { type Target, TargetMap, type TargetRule } from "../../src/agent/targets.ts";
import { secretTokenSource, type TokenSource } from "../../src/agent/token_source.ts";
import type { HubAcmeSettings } from "../../src/acme/hub_certificate.ts";
import type { AdminSettings } from "../../src/config/admin_keys.ts";
import type { NodeConfig, NodeLimits } from "../../src/config/node_config.ts";
import { createLogger } from "../../src/log/logger.ts";
import { Node } from "../../src/node.ts";
import { AddressBlocks, parseAddressBlock } from "../../src/relay/address_blocks.ts";
import type { RelayPort } from "../../src/relay/relay.ts";
import { testCertificates } from "./certs.ts";

/** The backends secret all test nodes and agents share unless a test says otherwise. */
export const TEST_JWT_SECRET = new TextEncoder().encode("test-backends-secret-0123456789");
/** The peer secret of test meshes. */
export const TEST_PEER_SECRET = new TextEncoder().encode("test-peer-secret-0123456789abcdef");

/** Options of {@linkcode startTestNode}; everything has a test-friendly default. */
export interface TestNodeOptions {
  readonly relayPorts?: readonly RelayPort[];
  readonly idleTimeoutSeconds?: number;
  readonly limits?: Partial<NodeLimits>;
  readonly peers?: readonly string[];
  readonly peerSecret?: Uint8Array | null;
  readonly hubPort?: number;
  readonly handshakeTimeouts?: NodeConfig["handshakeTimeouts"];
  /** The hub's certificate by ACME instead of the test CA's. */
  readonly hubAcme?: HubAcmeSettings;
  /** Wait until the hub listens (default true; with `hubAcme` it may never, when no certificate can be had). */
  readonly waitForHub?: boolean;
  /** An admin listener (`admin` block). */
  readonly admin?: AdminSettings;
  /** Trust no private CA for peers (`null`); default: the test CA. */
  readonly peerCaPem?: null;
}

/** A running test node. */
export interface TestNode {
  readonly node: Node;
  readonly hubUrl: string;
  readonly meshUrl: string;
  /** Ports by protocol, first of each. */
  readonly tlsPort: number;
  readonly httpPort: number;
  close(): Promise<void>;
}

/** Starts a node with one TLS and one HTTP relay port unless told otherwise. */
export async function startTestNode(options: TestNodeOptions = {}): Promise<TestNode> {
  const certs = await testCertificates();
  const config: NodeConfig = {
    hub: {
      hostname: "127.0.0.1",
      port: options.hubPort ?? 0,
      certPem: options.hubAcme ? "" : certs.hub.certPem,
      keyPem: options.hubAcme ? "" : certs.hub.keyPem,
    },
    ...(options.hubAcme ? { hubAcme: options.hubAcme } : {}),
    ...(options.admin ? { admin: options.admin } : {}),
    relay: {
      bindAddress: "127.0.0.1",
      ports: options.relayPorts ?? [{ port: 0, protocol: "tls" }, { port: 0, protocol: "http" }],
    },
    backendsJwtSecret: TEST_JWT_SECRET,
    previousBackendsJwtSecrets: [],
    ...(options.peerSecret === null ? {} : { peerSecret: options.peerSecret ?? TEST_PEER_SECRET }),
    peers: options.peers ?? [],
    ...(options.peerCaPem === null ? {} : { peerCaPem: certs.ca.certPem }),
    idleTimeoutSeconds: options.idleTimeoutSeconds ?? 0,
    drainTimeoutSeconds: 0,
    logLevel: (Deno.env.get("NEXUS_TEST_LOG_LEVEL") as NodeConfig["logLevel"] | undefined) ?? "error",
    logFormat: "text",
    limits: {
      maxConnections: 100_000,
      maxConnectionsPerIp: 100_000,
      maxHandshakes: 10_000,
      maxHandshakesPerIp: 10_000,
      maxBackends: 1_000,
      maxHubHandshakes: 256,
      maxHubHandshakesPerIp: 256,
      maxStreamsPerBackend: 100_000,
      legacyStreamBufferBytes: 4 * 1024 * 1024,
      streamWindowBytes: 2 * 1024 * 1024,
      streamBufferBudgetBytes: 512 * 1024 * 1024,
      halfClosedTimeoutSeconds: 60,
      ...options.limits,
    },
    handshakeTimeouts: options.handshakeTimeouts ??
      { firstByteSeconds: 15, extendSeconds: 5, totalSeconds: 30, hubUpgradeSeconds: 10 },
  };
  const node = new Node(config);
  if (options.waitForHub !== false) {
    await withTimeout(node.hubReady, "the hub's start", 60_000).catch(async (error) => {
      await node.shutdown(0);
      throw error;
    });
  }
  const ports = node.relay.ports;
  // The hub's name: with ACME, its certificate is for that name only.
  const hubHost = options.hubAcme?.hostname ?? "127.0.0.1";
  return {
    node,
    get hubUrl() {
      return `wss://${hubHost}:${node.hubAddress.port}/connect`;
    },
    get meshUrl() {
      return `wss://${hubHost}:${node.hubAddress.port}/mesh`;
    },
    tlsPort: ports.find((p) => p.protocol === "tls")?.port ?? 0,
    httpPort: ports.find((p) => p.protocol === "http")?.port ?? 0,
    close: () => node.shutdown(0),
  };
}

/** The address blocks of a relay port's `trustedProxies`, from their CIDR text (which must be valid). */
export function trustedBlocks(...blocks: readonly string[]): AddressBlocks {
  return new AddressBlocks(blocks.map((text) => {
    const block = parseAddressBlock(text);
    if (typeof block === "string") throw new RangeError(block);
    return block;
  }));
}

/** Options of {@linkcode startTestAgent}. */
export interface TestAgentOptions {
  readonly hubUrls: readonly string[];
  readonly hostnames: readonly string[];
  /** Hostname rule → target; a number is a 127.0.0.1 port for both TLS and HTTP. */
  readonly targets: Record<string, number | TargetRule>;
  readonly name?: string;
  readonly weight?: number;
  readonly tokens?: TokenSource;
  readonly settings?: Partial<AgentSettings>;
  /** Wait until every hub has a session (default true). */
  readonly waitConnected?: boolean;
}

/** The settings {@linkcode startTestAgent} starts an agent with (a test reconfigures it with others). */
export async function testAgentSettings(options: TestAgentOptions): Promise<AgentSettings> {
  const certs = await testCertificates();
  const rules = new Map<string, TargetRule>();
  for (const [key, value] of Object.entries(options.targets)) {
    const target: Target = { host: "127.0.0.1", port: typeof value === "number" ? value : 0 };
    rules.set(key, typeof value === "number" ? { tls: target, http: target } : value);
  }
  const identity = {
    name: options.name ?? "test-agent",
    hostnames: options.hostnames,
    weight: options.weight ?? 1,
  };
  return {
    name: identity.name,
    hubUrls: options.hubUrls,
    hubCaPem: certs.ca.certPem,
    tokens: options.tokens ?? secretTokenSource(identity, TEST_JWT_SECRET, 30),
    targets: new TargetMap(rules),
    maxStreams: 100_000,
    connectTimeoutMs: 5_000,
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    heartbeatIntervalMs: 15_000,
    idleTimeoutMs: 0,
    halfClosedTimeoutMs: 60_000,
    legacyStreamBufferBytes: 4 * 1024 * 1024,
    ...options.settings,
  };
}

/** Starts an agent and, by default, waits until it is registered at every hub. */
export async function startTestAgent(options: TestAgentOptions): Promise<Agent> {
  const settings = await testAgentSettings(options);
  const agent = new Agent(settings, createLogger(`agent ${settings.name}`));
  agent.start();
  if (options.waitConnected !== false && !(await agent.whenConnected(10_000))) {
    await agent.stop(0);
    throw new Error(`test agent ${settings.name} did not connect to ${options.hubUrls.join(", ")}`);
  }
  return agent;
}

/** Opens a TLS connection to the relay on `port` with SNI `servername`, trusting the test CA. */
export async function connectTls(port: number, servername: string): Promise<Deno.TlsConn> {
  const certs = await testCertificates();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await Deno.startTls(tcp, { hostname: servername, caCerts: [certs.ca.certPem] });
  } catch (error) {
    try {
      tcp.close();
    } catch {
      // startTls may have taken it.
    }
    throw error;
  }
}

/**
 * Polls `condition` every `pollMs` (10 ms unless a tight loop needs less) until it holds; fails the test with
 * `what` after `timeoutMs`.
 */
export async function waitFor(
  condition: () => boolean,
  what: string,
  timeoutMs = 5_000,
  { pollMs = 10 }: { pollMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Closes everything started, last first, even when a step fails. */
export class Teardown {
  readonly #steps: Array<() => Promise<void>> = [];

  add<T extends { close(): Promise<void> } | Agent>(thing: T): T {
    this.#steps.push(() => ("stop" in thing ? thing.stop(0) : thing.close()));
    return thing;
  }

  /** Runs every step, last added first; rethrows the first failure once all have run. */
  async run(): Promise<void> {
    const failures: unknown[] = [];
    for (const step of this.#steps.splice(0).reverse()) await step().catch((error) => failures.push(error));
    if (failures.length > 0) throw failures[0];
  }
}

/**
 * Resolves as `promise` does, or fails with `what` after `timeoutMs`: a guard so a hang fails the test with a
 * message instead of stalling the suite; not a speed requirement.
 */
export function withTimeout<T>(promise: Promise<T>, what: string, timeoutMs = 60_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}
