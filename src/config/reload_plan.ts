/**
 * What a reload changes: the difference between the validated config in force and a newly read one, key by
 * key, as the operator writes the keys. Pure: the node and the agent compute a plan, log one line per change,
 * and then apply each change through the component that owns it. A key that cannot change while the process
 * runs (the hub's address) is reported with why a restart is needed, and the plan's effective config keeps
 * its old value while every other change of the same reload goes ahead.
 *
 * @example
 * ```ts ignore
 * const plan = planNodeReload(inForce, next);
 * for (const change of plan.changes) log.info("reload", { key: change.key, from: change.from, to: change.to });
 * const effective = applyChanges(inForce, plan.changes); // next, but for plan.restartNeeded
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { AgentConfig } from "./agent_config.ts";
import type { AdminSettings } from "./admin_keys.ts";
import type { NodeConfig, NodeLimits } from "./node_config.ts";

/** One key whose setting differs between the config in force and the new one. */
export interface ConfigChange<C> {
  /** The key as written in the YAML file (`limits.maxConnections`). */
  readonly key: string;
  /** The old and new setting as a log line shows them; secrets show only a short digest. */
  readonly from: string;
  readonly to: string;
  /** Why this key cannot change without a restart; null when the reload applies it. */
  readonly restartNeeded: string | null;
  /** `config` with this key's setting taken from the new config. */
  apply(config: C): C;
}

/** A reload's changes, live and refused. */
export interface ReloadPlan<C> {
  /** Every key that differs, in the order of the key table. */
  readonly changes: readonly ConfigChange<C>[];
  /** Of `changes`, those a reload applies. */
  readonly live: readonly ConfigChange<C>[];
  /** Of `changes`, those that need a restart. */
  readonly restartNeeded: readonly ConfigChange<C>[];
  /** The config that will be in force: the new one, but for the keys that need a restart. */
  readonly effective: C;
}

/** How one key is compared, shown and carried over. */
export interface KeySpec<C> {
  readonly key: string;
  /** The setting in a form that is equal exactly when the settings are. */
  read(config: C): string;
  /** The setting for a log line; `read` unless given (secrets must give one). */
  show?(config: C): string;
  /** `config` with this key's setting taken from `from`. */
  write(config: C, from: C): C;
  /** Why a change from `a` to `b` needs a restart; null or absent when it can be applied live. */
  restartNeeded?(a: C, b: C): string | null;
}

/** The changes from `inForce` to `next` by `specs`. */
export function planReload<C>(specs: readonly KeySpec<C>[], inForce: C, next: C): ReloadPlan<C> {
  const changes: ConfigChange<C>[] = [];
  for (const spec of specs) {
    if (spec.read(inForce) === spec.read(next)) continue;
    const show = spec.show ?? spec.read;
    changes.push({
      key: spec.key,
      from: show(inForce),
      to: show(next),
      restartNeeded: spec.restartNeeded?.(inForce, next) ?? null,
      apply: (config) => spec.write(config, next),
    });
  }
  const live = changes.filter((change) => change.restartNeeded === null);
  return {
    changes,
    live,
    restartNeeded: changes.filter((change) => change.restartNeeded !== null),
    effective: applyChanges(inForce, live),
  };
}

/** `config` with every change of `changes` applied. */
export function applyChanges<C>(config: C, changes: readonly ConfigChange<C>[]): C {
  return changes.reduce((c, change) => change.apply(c), config);
}

/** A short digest of a secret or a certificate, so a log line says whether it changed and never what it is. */
export function digestOf(bytes: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex").slice(0, 12)}`;
}

const NONE = "(none)";

function secretText(secret: Uint8Array | undefined): string {
  return secret === undefined ? NONE : digestOf(secret);
}

function adminText(admin: AdminSettings | undefined): string {
  if (admin === undefined) return NONE;
  return `${admin.hostname}:${admin.port} token ${secretText(admin.token)}`;
}

/** A top-level key compared by `read`, copied over whole. */
function topKey<C, K extends keyof C>(
  key: string,
  field: K,
  read: (value: C[K]) => string,
  extra: Pick<KeySpec<C>, "show" | "restartNeeded"> = {},
): KeySpec<C> {
  return {
    key,
    read: (config) => read(config[field]),
    write: (config, from) => {
      // An optional key absent from `from` is absent from the result, not present as undefined.
      const merged = { ...config };
      if (from[field] === undefined) delete merged[field];
      else merged[field] = from[field];
      return merged;
    },
    ...extra,
  };
}

/** One key of a nested block (`limits.maxConnections`), copied over alone. */
function nestedKey<C, B extends keyof C, K extends keyof C[B]>(
  block: B,
  field: K,
  extra: Pick<KeySpec<C>, "restartNeeded"> = {},
): KeySpec<C> {
  return {
    key: `${String(block)}.${String(field)}`,
    read: (config) => String(config[block][field] ?? NONE),
    write: (config, from) => {
      const merged = { ...config[block] } as Record<keyof C[B], unknown>;
      if (from[block][field] === undefined) delete merged[field];
      else merged[field] = from[block][field];
      return { ...config, [block]: merged };
    },
    ...extra,
  };
}

const RESTART = "needs a restart";

/** The node's limits, in the order the README lists them. */
export const NODE_LIMIT_KEYS: readonly (keyof NodeLimits)[] = [
  "maxConnections",
  "maxConnectionsPerIp",
  "maxHandshakes",
  "maxHandshakesPerIp",
  "maxBackends",
  "maxHubHandshakes",
  "maxHubHandshakesPerIp",
  "maxStreamsPerBackend",
  "streamWindowBytes",
  "streamBufferBudgetBytes",
  "legacyStreamBufferBytes",
  "halfClosedTimeoutSeconds",
];

const NODE_TIMEOUT_KEYS: readonly (keyof NodeConfig["handshakeTimeouts"])[] = [
  "firstByteSeconds",
  "extendSeconds",
  "totalSeconds",
  "backendTokenSeconds",
  "hubUpgradeSeconds",
];

/** The node's hub certificate is managed by ACME on either side of the reload. */
function acmeOnEitherSide(a: NodeConfig, b: NodeConfig): string | null {
  return a.hubAcme !== undefined || b.hubAcme !== undefined
    ? `${RESTART}: switching between certificate files and hubAcme takes effect at start`
    : null;
}

/** The mesh starts or stops (peerSecret set or removed). */
function meshStartsOrStops(a: NodeConfig, b: NodeConfig): string | null {
  return (a.peerSecret === undefined) !== (b.peerSecret === undefined)
    ? `${RESTART}: the mesh is started or stopped (peerSecret set or removed) only at start`
    : null;
}

/** Every key of a node config and what a reload does with it. */
export const NODE_KEYS: readonly KeySpec<NodeConfig>[] = [
  {
    key: "backendListenAddress",
    read: (c) => `${c.hub.hostname}:${c.hub.port}`,
    write: (c, from) => ({ ...c, hub: { ...c.hub, hostname: from.hub.hostname, port: from.hub.port } }),
    restartNeeded: () => `${RESTART}: the hub's listening address is bound at start`,
  },
  {
    key: "hubTlsCertFile",
    read: (c) => `${digestOf(c.hub.certPem)} ${digestOf(c.hub.keyPem)}`,
    // Both digests: a new key for the same certificate is a change too.
    show: (c) =>
      c.hub.certPem === "" ? NONE : `certificate ${digestOf(c.hub.certPem)} key ${digestOf(c.hub.keyPem)}`,
    write: (c, from) => ({ ...c, hub: { ...c.hub, certPem: from.hub.certPem, keyPem: from.hub.keyPem } }),
    restartNeeded: acmeOnEitherSide,
  },
  topKey("hubAcme", "hubAcme", (acme) => acme === undefined ? NONE : JSON.stringify(acme), {
    show: (c) => c.hubAcme === undefined ? NONE : `${c.hubAcme.hostname} via ${c.hubAcme.directoryUrl}`,
    restartNeeded: () =>
      `${RESTART}: hubAcme is read at start (a reload keeps the certificate ACME gave and keeps renewing it)`,
  }),
  {
    key: "relayBindAddress",
    read: (c) => c.relay.bindAddress,
    write: (c, from) => ({ ...c, relay: { ...c.relay, bindAddress: from.relay.bindAddress } }),
    restartNeeded: () => `${RESTART}: the relay's bind address applies to every port, bound at start`,
  },
  {
    key: "relayPorts",
    read: (c) =>
      c.relay.ports.map((p) =>
        `${p.port}/${p.protocol}${p.trustedProxies === undefined ? "" : ` trusting ${p.trustedProxies}`}`
      ).join(", "),
    write: (c, from) => ({ ...c, relay: { ...c.relay, ports: from.relay.ports } }),
  },
  topKey("backendsJWTSecret", "backendsJwtSecret", secretText),
  topKey(
    "previousBackendsJWTSecrets",
    "previousBackendsJwtSecrets",
    (secrets) => secrets.length === 0 ? NONE : secrets.map(secretText).join(","),
  ),
  topKey("peers", "peers", (peers) => peers.length === 0 ? NONE : peers.join(","), {
    restartNeeded: (a, b) =>
      a.peerSecret === undefined && b.peers.length > 0
        ? `${RESTART}: this node was started without peerSecret, so it has no mesh to dial peers from`
        : null,
  }),
  topKey("peerSecret", "peerSecret", secretText, { restartNeeded: meshStartsOrStops }),
  topKey("peerCaFile", "peerCaPem", (pem) => pem === undefined ? NONE : `certificate ${digestOf(pem)}`),
  ...NODE_LIMIT_KEYS.map((field) =>
    nestedKey<NodeConfig, "limits", keyof NodeLimits>("limits", field, {
      restartNeeded: field === "streamBufferBudgetBytes"
        ? () => `${RESTART}: the node-wide buffer budget is reserved from at start`
        : undefined,
    })
  ),
  ...NODE_TIMEOUT_KEYS.map((field) =>
    nestedKey<NodeConfig, "handshakeTimeouts", typeof field>("handshakeTimeouts", field)
  ),
  topKey("idleTimeoutSeconds", "idleTimeoutSeconds", String),
  topKey("drainTimeoutSeconds", "drainTimeoutSeconds", String),
  topKey("logLevel", "logLevel", String),
  topKey("logFormat", "logFormat", String),
  topKey("admin", "admin", adminText),
];

type AgentLimits = AgentConfig["limits"];
const AGENT_LIMIT_KEYS: readonly (keyof AgentLimits)[] = [
  "maxStreams",
  "connectTimeoutSeconds",
  "legacyStreamBufferBytes",
  "halfClosedTimeoutSeconds",
];

/** Every key of an agent config and what a reload does with it: all of them apply live. */
export const AGENT_KEYS: readonly KeySpec<AgentConfig>[] = [
  topKey("name", "name", String),
  topKey("hubs", "hubs", (hubs) => hubs.join(",")),
  topKey("hubCaFile", "hubCaPem", (pem) => pem === undefined ? NONE : `certificate ${digestOf(pem)}`),
  topKey("hostnames", "hostnames", (names) => names.join(",")),
  topKey("weight", "weight", String),
  topKey(
    "token",
    "token",
    (token) =>
      token.kind === "secret"
        ? `secret ${digestOf(token.secret)} ttl ${token.ttlSeconds}s`
        : `command ${JSON.stringify(token.argv)} timeout ${token.timeoutSeconds}s`,
  ),
  topKey("targets", "targets", (targets) => targets.toString()),
  ...AGENT_LIMIT_KEYS.map((field) => nestedKey<AgentConfig, "limits", keyof AgentLimits>("limits", field)),
  nestedKey<AgentConfig, "reconnect", "initialDelaySeconds">("reconnect", "initialDelaySeconds"),
  nestedKey<AgentConfig, "reconnect", "maxDelaySeconds">("reconnect", "maxDelaySeconds"),
  topKey("idleTimeoutSeconds", "idleTimeoutSeconds", String),
  topKey("drainTimeoutSeconds", "drainTimeoutSeconds", String),
  topKey("logLevel", "logLevel", String),
  topKey("logFormat", "logFormat", String),
  topKey("admin", "admin", adminText),
];

/** The node's reload plan from `inForce` to `next`. */
export function planNodeReload(inForce: NodeConfig, next: NodeConfig): ReloadPlan<NodeConfig> {
  return planReload(NODE_KEYS, inForce, next);
}

/** The agent's reload plan from `inForce` to `next`. */
export function planAgentReload(inForce: AgentConfig, next: AgentConfig): ReloadPlan<AgentConfig> {
  return planReload(AGENT_KEYS, inForce, next);
}
