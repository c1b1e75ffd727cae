/**
 * The node's configuration: parsed once from YAML into typed, validated settings; nothing below `config/`
 * sees raw YAML. Every key is documented in `config.example.yaml` and the README.
 *
 * @module
 */

import { LETS_ENCRYPT_DIRECTORY_URL } from "../acme/client.ts";
import type { HubAcmeSettings } from "../acme/hub_certificate.ts";
import { stateRoot } from "../acme/state_dir.ts";
import { normalizeHostname } from "../hostnames/hostname.ts";
import { INITIAL_STREAM_CREDITS, MAX_DATA_PAYLOAD_BYTES } from "../protocol/frames.ts";
import { AddressBlocks, parseAddressBlock } from "../relay/address_blocks.ts";
import type { RelayPort, RelayProtocol } from "../relay/relay.ts";
import { type AdminKeys, readAdminKeys } from "./admin_keys.ts";
import {
  type OperationKeys,
  readOperationKeys,
  readStreamLimitKeys,
  type StreamLimitKeys,
} from "./shared_keys.ts";
import {
  keyPairProblem,
  readListenAddress,
  readPemFile,
  readSecret,
  readWebSocketUrls,
  resolvePath,
} from "./sources.ts";
import { type MapReader, readYamlConfig, type ValueReader } from "./yaml_reader.ts";

/** Everything a node needs. */
export interface NodeConfig extends OperationKeys, AdminKeys {
  readonly hub: {
    readonly hostname: string;
    readonly port: number;
    /** From `hubTlsCertFile`; `""` when the certificate comes from ACME (`hubAcme`). */
    readonly certPem: string;
    /** From `hubTlsKeyFile`; `""` when the certificate comes from ACME (`hubAcme`). */
    readonly keyPem: string;
  };
  /** The hub's certificate by ACME instead of files. */
  readonly hubAcme?: HubAcmeSettings;
  readonly relay: { readonly bindAddress: string; readonly ports: readonly RelayPort[] };
  readonly backendsJwtSecret: Uint8Array;
  /**
   * Secrets retired from `backendsJWTSecret` whose tokens are still accepted while agents move to the new one
   * (`previousBackendsJWTSecrets`); empty when none.
   */
  readonly previousBackendsJwtSecrets: readonly Uint8Array[];
  readonly peerSecret?: Uint8Array;
  readonly peers: readonly string[];
  readonly peerCaPem?: string;
  readonly limits: NodeLimits;
  readonly handshakeTimeouts: {
    readonly firstByteSeconds: number;
    readonly extendSeconds: number;
    readonly totalSeconds: number;
    /** Seconds the hub waits for each of a backend's two tokens; absent: the original's 10 s (§4.2). */
    readonly backendTokenSeconds?: number;
    /** Seconds from accept on the hub port to a complete WebSocket upgrade request, TLS handshake included. */
    readonly hubUpgradeSeconds: number;
  };
}

/** Caps and buffer sizes, each with a default an operator rarely needs to change. */
export interface NodeLimits extends StreamLimitKeys {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly maxHandshakes: number;
  /** Of `maxHandshakes`, what one source (an IPv4 address or IPv6 /64) may hold; its oldest goes beyond. */
  readonly maxHandshakesPerIp: number;
  readonly maxBackends: number;
  /** Connections on the hub port not yet authenticated (agents and peers proving themselves). */
  readonly maxHubHandshakes: number;
  /** Of `maxHubHandshakes`, what one source may hold; its oldest goes beyond. */
  readonly maxHubHandshakesPerIp: number;
  readonly maxStreamsPerBackend: number;
  /** What one stream may buffer here for a client that reads slowly: its credit window, in bytes. */
  readonly streamWindowBytes: number;
  /** What all streams together may buffer here for slow clients; windows shrink when it runs low. */
  readonly streamBufferBudgetBytes: number;
}

/** Reads and validates a node config; throws `ConfigError` listing every problem. */
export function readNodeConfig(text: string, fileName: string, configDir: string): NodeConfig {
  return readYamlConfig(text, fileName, (root) => {
    const listen = readListenAddress(root, "backendListenAddress");
    const hubTls = readHubTls(root, configDir);
    const relayPorts = root.list("relayPorts", readRelayPort, { required: true, nonEmpty: true });
    checkDistinctPorts(root, relayPorts, listen?.port);
    if (hubTls.acme !== undefined && !relayPorts.some((port) => port.protocol === "http")) {
      root.problem("hubAcme", "needs an HTTP relay port (80) to answer the ACME HTTP-01 challenge on");
    }
    const peers = readWebSocketUrls(root, "peers", { default: [] });
    const peerSecret = readSecret(root, "peerSecret", configDir, { required: peers.length > 0 });
    const limits = root.map("limits");
    const timeouts = root.map("handshakeTimeouts");
    const firstByteSeconds = timeouts.integer("firstByteSeconds", { min: 1, max: 300, default: 15 });
    const totalSeconds = timeouts.integer("totalSeconds", { min: 1, max: 600, default: 30 });
    // A first-byte deadline past the total one would never apply (§8.3).
    if (firstByteSeconds > totalSeconds) {
      timeouts.problem("firstByteSeconds", `must not exceed totalSeconds (${totalSeconds})`);
    }
    return {
      hub: {
        hostname: listen?.hostname ?? "",
        port: listen?.port ?? 0,
        certPem: hubTls.certPem ?? "",
        keyPem: hubTls.keyPem ?? "",
      },
      ...optional("hubAcme", hubTls.acme),
      relay: {
        bindAddress: root.string("relayBindAddress", { default: "0.0.0.0", nonEmpty: true }),
        ports: relayPorts,
      },
      backendsJwtSecret: readSecret(root, "backendsJWTSecret", configDir, { required: true }) ??
        new Uint8Array(),
      previousBackendsJwtSecrets: root.list(
        "previousBackendsJWTSecrets",
        (item) => readSecret(item.asMap(), "secret", configDir, { required: true }),
        { default: [] },
      ),
      ...(peerSecret ? { peerSecret } : {}),
      peers,
      ...optional(
        "peerCaPem",
        readPemFile(root, "peerCaFile", configDir, "certificate", { required: false }),
      ),
      ...readOperationKeys(root, { idleTimeoutSeconds: 300 }),
      ...readAdminKeys(root, configDir),
      limits: {
        maxConnections: limits.integer("maxConnections", { min: 1, max: 10_000_000, default: 20_000 }),
        maxConnectionsPerIp: limits.integer("maxConnectionsPerIp", {
          min: 1,
          max: 10_000_000,
          default: 1_000,
        }),
        maxHandshakes: limits.integer("maxHandshakes", { min: 1, max: 1_000_000, default: 1_024 }),
        maxHandshakesPerIp: limits.integer("maxHandshakesPerIp", { min: 1, max: 1_000_000, default: 64 }),
        maxBackends: limits.integer("maxBackends", { min: 1, max: 100_000, default: 1_000 }),
        maxHubHandshakes: limits.integer("maxHubHandshakes", { min: 1, max: 100_000, default: 256 }),
        maxHubHandshakesPerIp: limits.integer("maxHubHandshakesPerIp", { min: 1, max: 100_000, default: 16 }),
        maxStreamsPerBackend: limits.integer("maxStreamsPerBackend", {
          min: 1,
          max: 1_000_000,
          default: 10_000,
        }),
        // 64 frames of 32 KiB, the protocol's window (§5.2); at least 2 frames, at most 1,024.
        streamWindowBytes: limits.integer("streamWindowBytes", {
          min: 2 * MAX_DATA_PAYLOAD_BYTES,
          max: 1_024 * MAX_DATA_PAYLOAD_BYTES,
          default: INITIAL_STREAM_CREDITS * MAX_DATA_PAYLOAD_BYTES,
        }),
        streamBufferBudgetBytes: limits.integer("streamBufferBudgetBytes", {
          min: 1024 * 1024,
          max: 1024 * 1024 * 1024 * 1024,
          default: 512 * 1024 * 1024,
        }),
        ...readStreamLimitKeys(limits),
      },
      handshakeTimeouts: {
        firstByteSeconds,
        extendSeconds: timeouts.integer("extendSeconds", { min: 1, max: 300, default: 5 }),
        totalSeconds,
        ...optional("backendTokenSeconds", timeouts.integer("backendTokenSeconds", { min: 1, max: 120 })),
        hubUpgradeSeconds: timeouts.integer("hubUpgradeSeconds", { min: 1, max: 120, default: 10 }),
      },
    };
  });
}

/** Default backoff of ACME attempts after a failure: a minute, doubling up to six hours. */
const ACME_RETRY = { initialDelayMs: 60_000, maxDelayMs: 6 * 3_600_000 } as const;
const EMAIL_PATTERN = /^[^@\s:,<>]+@[^@\s:,<>]+\.[^@\s:,<>]+$/;

/** Exactly one of `hubTlsCertFile` with `hubTlsKeyFile`, or `hubAcme`. */
function readHubTls(
  root: MapReader,
  configDir: string,
): { certPem?: string; keyPem?: string; acme?: HubAcmeSettings } {
  const files = root.has("hubTlsCertFile") || root.has("hubTlsKeyFile");
  if (!root.has("hubAcme")) {
    const certPem = readPemFile(root, "hubTlsCertFile", configDir, "certificate", { required: true });
    const keyPem = readPemFile(root, "hubTlsKeyFile", configDir, "private key", { required: true });
    // Checked here, so that `nexus check` and a reload refuse a pair the TLS server would refuse at start.
    const mismatch = certPem === undefined || keyPem === undefined ? null : keyPairProblem(certPem, keyPem);
    if (mismatch !== null) root.problem("hubTlsKeyFile", `${mismatch} in hubTlsCertFile`);
    return { certPem, keyPem };
  }
  if (files) {
    root.problem(
      root.has("hubTlsCertFile") ? "hubTlsCertFile" : "hubTlsKeyFile",
      "set either hubTlsCertFile and hubTlsKeyFile, or hubAcme, not both",
    );
    // Read anyway, so their own mistakes are reported in the same pass.
    readPemFile(root, "hubTlsCertFile", configDir, "certificate", { required: false });
    readPemFile(root, "hubTlsKeyFile", configDir, "private key", { required: false });
  }
  return { acme: readHubAcme(root.map("hubAcme"), configDir) };
}

/** The `hubAcme` block. */
function readHubAcme(map: MapReader, configDir: string): HubAcmeSettings | undefined {
  const rawHostname = map.string("hostname", { required: true, nonEmpty: true });
  const hostname = normalizeHostname(rawHostname);
  if (rawHostname !== "" && hostname === null) {
    map.problem("hostname", `"${rawHostname}" is not a DNS name (no wildcard, no IP address)`);
  }
  const email = map.string("email", {
    nonEmpty: true,
    pattern: EMAIL_PATTERN,
    patternHint: "an address such as ops@example.com",
  });
  const directoryUrl = map.string("directoryUrl", {
    default: LETS_ENCRYPT_DIRECTORY_URL,
    pattern: /^https:\/\/[^\s/]+(?:\/\S*)?$/,
    patternHint: "an https:// URL (RFC 8555 §6.1)",
  });
  const caPem = readPemFile(map, "caFile", configDir, "certificate", { required: false });
  const stateDir = resolvePath(
    configDir,
    map.string("stateDir", { default: `${stateRoot()}/acme`, nonEmpty: true }),
  );
  checkWritable(map, stateDir);
  if (hostname === null) return undefined;
  return {
    hostname,
    ...(email === undefined ? {} : { email }),
    directoryUrl,
    ...(caPem === undefined ? {} : { caPem }),
    stateDir,
    retry: ACME_RETRY,
  };
}

/** Reports a state directory this process may not write to, saying what may be written and how to allow it. */
function checkWritable(map: MapReader, stateDir: string): void {
  if (Deno.permissions.querySync({ name: "write", path: stateDir }).state === "granted") return;
  map.problem(
    "stateDir",
    `this process may not write to ${stateDir}: the released binary may write only under ${stateRoot()} ` +
      `(fixed when it is built: scripts/compile.ts --write-dir); from source, run with --allow-write=${stateDir}`,
  );
}

/** `443` (TLS), `80` (HTTP), or `{ port: 8080, protocol: http, trustedProxies: ["10.0.0.0/8"] }`. */
function readRelayPort(value: ValueReader): RelayPort | undefined {
  if (value.isScalar()) {
    const port = value.asInteger({ min: 1, max: 65_535 });
    return port === undefined ? undefined : { port, protocol: port === 80 ? "http" : "tls" };
  }
  const map = value.asMap();
  const port = map.integer("port", { min: 0, max: 65_535, required: true });
  const protocol = map.string("protocol", { default: port === 80 ? "http" : "tls" });
  const trusted = map.list("trustedProxies", (item) => {
    const text = item.asString({ nonEmpty: true });
    if (text === undefined) return undefined;
    const block = parseAddressBlock(text);
    if (typeof block !== "string") return block;
    item.problem(block);
    return undefined;
  }, { nonEmpty: true });
  if (protocol !== "tls" && protocol !== "http") {
    map.problem("protocol", `expected tls or http, got "${protocol}"`);
    return undefined;
  }
  return {
    port,
    protocol: protocol as RelayProtocol,
    ...(trusted === undefined ? {} : { trustedProxies: new AddressBlocks(trusted) }),
  };
}

function checkDistinctPorts(root: MapReader, ports: readonly RelayPort[], hubPort: number | undefined): void {
  const seen = new Set<number>();
  for (const { port } of ports) {
    if (port === 0) continue;
    if (seen.has(port)) root.problem("relayPorts", `port ${port} is listed twice`);
    if (port === hubPort) {
      root.problem("relayPorts", `port ${port} is also the hub's backendListenAddress port`);
    }
    seen.add(port);
  }
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
