/**
 * The agent's configuration: hubs to dial, the names it claims, how it gets tokens, and where each name's
 * streams go locally.
 *
 * @module
 */

import { parseHostnameClaim } from "../hostnames/hostname.ts";
import { MAX_WEIGHT } from "../protocol/backend_token.ts";
import {
  DEFAULT_TARGET_KEY,
  parseTarget,
  type Target,
  TargetMap,
  type TargetRule,
} from "../agent/targets.ts";
import { type AdminKeys, readAdminKeys } from "./admin_keys.ts";
import {
  type OperationKeys,
  readOperationKeys,
  readStreamLimitKeys,
  type StreamLimitKeys,
} from "./shared_keys.ts";
import { readPemFile, readSecret, readWebSocketUrls } from "./sources.ts";
import { type MapReader, readYamlConfig, type ValueReader } from "./yaml_reader.ts";

/** How the agent obtains its tokens. */
export type TokenConfig =
  | { readonly kind: "secret"; readonly secret: Uint8Array; readonly ttlSeconds: number }
  | { readonly kind: "command"; readonly argv: readonly string[]; readonly timeoutSeconds: number };

/** Everything an agent needs. */
export interface AgentConfig extends OperationKeys, AdminKeys {
  readonly name: string;
  readonly hubs: readonly string[];
  readonly hubCaPem?: string;
  readonly hostnames: readonly string[];
  readonly weight: number;
  readonly token: TokenConfig;
  readonly targets: TargetMap;
  readonly limits: StreamLimitKeys & { readonly maxStreams: number; readonly connectTimeoutSeconds: number };
  readonly reconnect: { readonly initialDelaySeconds: number; readonly maxDelaySeconds: number };
}

/** Reads and validates an agent config; throws `ConfigError` listing every problem. */
export function readAgentConfig(text: string, fileName: string, configDir: string): AgentConfig {
  return readYamlConfig(text, fileName, (root) => {
    const hubs = readWebSocketUrls(root, "hubs", { required: true, nonEmpty: true });
    const hostnames = root.list("hostnames", (value) => {
      const name = value.asString();
      if (name === undefined) return undefined;
      const claim = parseHostnameClaim(name);
      if (claim.kind !== "invalid") return name;
      value.problem(claim.reason);
      return undefined;
    }, { required: true, nonEmpty: true });
    // Every rule as written, an invalid one as already reported: the names it was meant to serve are not
    // reported a second time as served by nothing.
    const written = new Map<string, TargetRule>();
    const rules = root.entries("targets", (key, value) => {
      if (key !== DEFAULT_TARGET_KEY && parseHostnameClaim(key).kind === "invalid") {
        value.problem(`"${key}" is neither a hostname, a *.wildcard nor "${DEFAULT_TARGET_KEY}"`);
        return undefined;
      }
      const rule = readTargetRule(value);
      written.set(key, rule ?? REPORTED_RULE);
      return rule;
    }, { required: true, nonEmpty: true });
    const targets = new TargetMap(rules);
    const asWritten = new TargetMap(written);
    for (const name of hostnames) {
      const probe = name.startsWith("*.") ? `x${name.slice(1)}` : name;
      if (asWritten.resolve(probe, true) === undefined && asWritten.resolve(probe, false) === undefined) {
        root.problem("targets", `no target serves the claimed hostname ${name}`);
      }
    }
    const limits = root.map("limits");
    const reconnect = root.map("reconnect");
    const initialDelaySeconds = reconnect.integer("initialDelaySeconds", { min: 1, max: 3_600, default: 1 });
    const maxDelaySeconds = reconnect.integer("maxDelaySeconds", { min: 1, max: 86_400, default: 60 });
    // Otherwise the backoff would silently start at the maximum.
    if (maxDelaySeconds < initialDelaySeconds) {
      reconnect.problem("maxDelaySeconds", `must be at least initialDelaySeconds (${initialDelaySeconds})`);
    }
    return {
      name: root.string("name", { default: "agent", nonEmpty: true }),
      hubs,
      ...(() => {
        const pem = readPemFile(root, "hubCaFile", configDir, "certificate", { required: false });
        return pem === undefined ? {} : { hubCaPem: pem };
      })(),
      hostnames,
      weight: root.integer("weight", { min: 1, max: MAX_WEIGHT, default: 1 }),
      token: readToken(root.map("token", { required: true }), configDir),
      targets,
      ...readOperationKeys(root, { idleTimeoutSeconds: 0 }),
      ...readAdminKeys(root, configDir),
      limits: {
        maxStreams: limits.integer("maxStreams", { min: 1, max: 1_000_000, default: 10_000 }),
        connectTimeoutSeconds: limits.integer("connectTimeoutSeconds", { min: 1, max: 300, default: 10 }),
        ...readStreamLimitKeys(limits),
      },
      reconnect: { initialDelaySeconds, maxDelaySeconds },
    };
  });
}

/** Stands for a target rule that was invalid and has been reported. */
const REPORTED_RULE: TargetRule = { tls: { host: "", port: 0 }, http: { host: "", port: 0 } };

/**
 * A target for both protocols (`"host:port"` or `{ address, proxyProtocol }`), or `{ tls, http }` with a
 * target for each.
 */
function readTargetRule(value: ValueReader): TargetRule | undefined {
  if (value.isScalar() || (value.isMap() && value.asMap().has("address"))) {
    const target = readTarget(value);
    return target === undefined ? undefined : { tls: target, http: target };
  }
  const map = value.asMap();
  const tls = map.value("tls");
  const http = map.value("http");
  if (tls === undefined && http === undefined) {
    map.problem("tls", "give tls, http or both (or address for both)");
    return undefined;
  }
  const tlsTarget = tls === undefined ? undefined : readTarget(tls);
  const httpTarget = http === undefined ? undefined : readTarget(http);
  // A target already reported makes the rule reported: the names it was meant to serve are not reported again.
  if ((tls !== undefined && tlsTarget === undefined) || (http !== undefined && httpTarget === undefined)) {
    return undefined;
  }
  return { ...(tlsTarget ? { tls: tlsTarget } : {}), ...(httpTarget ? { http: httpTarget } : {}) };
}

/** `"host:port"`, or `{ address: "host:port", proxyProtocol: v1 | v2 }`. */
function readTarget(value: ValueReader): Target | undefined {
  if (value.isScalar()) return readTargetAddress(value);
  const map = value.asMap();
  const address = map.value("address");
  const version = map.string("proxyProtocol", { pattern: /^v[12]$/, patternHint: "v1 or v2" });
  if (address === undefined) {
    map.problem("address", "give the target's address as host:port");
    return undefined;
  }
  const target = readTargetAddress(address);
  if (target === undefined || version === undefined) return target;
  return { ...target, proxyProtocol: version === "v1" ? 1 : 2 };
}

function readTargetAddress(value: ValueReader): Target | undefined {
  const text = value.asString({ nonEmpty: true });
  if (text === undefined) return undefined;
  const target = parseTarget(text);
  if (typeof target === "string") {
    value.problem(target);
    return undefined;
  }
  return target;
}

function readToken(map: MapReader, configDir: string): TokenConfig {
  const command = map.stringList("command", { nonEmpty: true });
  // Decided by presence: a command that is set but wrong has been reported, and no secret is missing then.
  const commandGiven = map.has("command");
  const secret = readSecret(map, "secret", configDir, { required: !commandGiven });
  if (commandGiven && ["secret", "secretFile", "secretEnv"].some((key) => map.has(key))) {
    map.problem("command", "set either command or a secret, not both");
  }
  if (commandGiven) {
    if (Deno.permissions.querySync({ name: "run" }).state !== "granted") {
      map.problem(
        "command",
        "running a token command needs permission to run programs, which this build does not have " +
          "(run from source with --allow-run, or use secretFile)",
      );
    }
    if (map.has("ttlSeconds")) {
      map.problem("ttlSeconds", "applies to tokens signed from a secret, not to a command");
    }
    return {
      kind: "command",
      argv: command ?? [],
      timeoutSeconds: map.integer("timeoutSeconds", { min: 1, max: 300, default: 15 }),
    };
  }
  if (map.has("timeoutSeconds")) map.problem("timeoutSeconds", "applies to a token command, not to a secret");
  return {
    kind: "secret",
    secret: secret ?? new Uint8Array(),
    ttlSeconds: map.integer("ttlSeconds", { min: 1, max: 86_400, default: 30 }),
  };
}
