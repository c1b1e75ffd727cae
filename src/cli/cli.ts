/**
 * The command line: one program, subcommands `serve`, `agent`, `token`, `check`, `version`.
 * Exit codes: 0 success, 1 failure (bad config, cannot listen, ...), 2 bad usage.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { AdminListener, moveAdminListener } from "../admin/admin_listener.ts";
import { AgentView } from "../admin/agent_view.ts";
import { Agent } from "../agent/agent.ts";
import { commandTokenSource, secretTokenSource } from "../agent/token_source.ts";
import { type AgentConfig, readAgentConfig } from "../config/agent_config.ts";
import type { AdminSettings } from "../config/admin_keys.ts";
import { readNodeConfig } from "../config/node_config.ts";
import { AGENT_KEYS } from "../config/reload_plan.ts";
import { Reloader } from "../config/reloader.ts";
import { ConfigError, parseDurationSeconds } from "../config/yaml_reader.ts";
import { parseHostnameClaim } from "../hostnames/hostname.ts";
import { createLogger, RateLimitedLog, setLogFormat, setLogLevel } from "../log/logger.ts";
import { MAX_WEIGHT, signBackendToken } from "../protocol/backend_token.ts";
import { Node } from "../node.ts";
import { VERSION } from "../version.ts";

export { VERSION };

/** A mistake in how the program was called: one line, then the usage, exit code 2. */
class UsageError extends Error {}

const USAGE: Record<string, string> = {
  main: `Nexus Proxy ${VERSION}: a TLS-passthrough edge proxy and its backend agent.

Usage: nexus <command> [options]

Commands:
  serve --config FILE     run a node (relay ports, hub, mesh)
  agent --config FILE     run a backend agent that dials a node's hub
  token [options]         print a backend token (stands in for the central authorizer)
  check --config FILE     validate a node or agent config and list every problem
  version                 print the version

Run "nexus <command> --help" for a command's options.`,
  serve: `Usage: nexus serve --config FILE

Runs a node. SIGTERM or SIGINT drains open streams for drainTimeoutSeconds, a second signal exits at once.
SIGHUP (or POST /reload on the admin listener) re-reads FILE: an invalid file changes nothing; what changed
is applied and logged key by key, open streams stay up (README: "Reloading the configuration").
With an admin block, admin.listenAddress serves /healthz, /readyz, /metrics (Prometheus), /status (JSON)
and a status page at /; readiness turns 503 as soon as the node begins to drain.`,
  agent: `Usage: nexus agent --config FILE

Runs a backend agent. SIGTERM or SIGINT drains open streams for drainTimeoutSeconds, a second signal exits at once.
SIGHUP (or POST /reload on the admin listener) re-reads FILE; new names or weight re-register on a new
session while open streams finish on the old one.
With an admin block, admin.listenAddress serves /healthz, /readyz (200 once a hub session is registered),
/metrics, /status and a status page at /.`,
  token: `Usage: nexus token --secret-file FILE --hostname NAME [--hostname NAME...] [options]

Prints an HS256 backend token signed with the secret in FILE (the node's backendsJWTSecret).

Options:
  --secret-file FILE   file holding the secret (required)
  --hostname NAME      a name the backend may serve; exact or *.wildcard; repeatable (required)
  --weight N           the backend's weight, 1-${MAX_WEIGHT} (default 1)
  --ttl DURATION       lifetime: 90, 30s, 5m, 1h, 2d (default 30s)
  --name NAME          the backend's name, the token's subject (default "backend")
  --nonce NONCE        the hub's challenge nonce (default: $NEXUS_SESSION_NONCE, as set for token commands)`,
  check: `Usage: nexus check --config FILE

Validates a node config (it has backendListenAddress) or an agent config (it has hubs), reading the files it
names, and lists every problem with its line and column. Exit code 0 when the config is valid, 1 when not.`,
  version: `Usage: nexus version

Prints the version, the Deno version and the target it runs on.`,
};

/** Runs the program with `args`; resolves with the exit code. */
export async function runCli(args: readonly string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case undefined:
        throw new UsageError("a command is required");
      case "--help":
      case "-h":
        print(USAGE.main);
        return 0;
      case "help":
        return help(rest);
      case "version":
      case "--version":
        if (wantsHelp(rest, "version")) return 0;
        noArgs(rest);
        print(`nexus ${VERSION} (deno ${Deno.version.deno}, ${Deno.build.target})`);
        return 0;
      case "serve":
        return await serve(rest);
      case "agent":
        return await agent(rest);
      case "token":
        return await token(rest);
      case "check":
        return check(rest);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      printError(`nexus: ${error.message}`);
      printError(USAGE[command ?? "main"] ?? USAGE.main);
      return 2;
    }
    if (error instanceof ConfigError) {
      printError(`nexus: invalid configuration:\n${error.message}`);
      return 1;
    }
    printError(`nexus: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

/** `nexus help [COMMAND]`: the main usage, or that command's. */
function help(args: readonly string[]): number {
  const [topic, ...more] = args;
  noArgs(more);
  if (topic === undefined) {
    print(USAGE.main);
    return 0;
  }
  if (topic === "main" || !Object.hasOwn(USAGE, topic)) throw new UsageError(`unknown command "${topic}"`);
  print(USAGE[topic]);
  return 0;
}

function wantsHelp(args: readonly string[], command: string): boolean {
  if (!args.includes("--help") && !args.includes("-h")) return false;
  print(USAGE[command]);
  return true;
}

function noArgs(args: readonly string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0]}"`);
}

/** Parses flags strictly; unknown flags and stray arguments are usage errors. */
function flags<T extends Record<string, { type: "string" | "boolean"; multiple?: boolean }>>(
  args: readonly string[],
  options: T,
) {
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.split("\n")[0] : String(error));
  }
}

function configPath(args: readonly string[]): string {
  const { config } = flags(args, { config: { type: "string" } });
  if (config === undefined) throw new UsageError("--config FILE is required");
  return config;
}

function readConfigText(path: string): { text: string; dir: string } {
  try {
    const text = Deno.readTextFileSync(path);
    const slash = path.lastIndexOf("/");
    return { text, dir: slash < 0 ? "." : path.slice(0, slash) || "/" };
  } catch (error) {
    throw new Error(`cannot read config ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function serve(args: readonly string[]): Promise<number> {
  if (wantsHelp(args, "serve")) return 0;
  const path = configPath(args);
  const { text, dir } = readConfigText(path);
  const config = readNodeConfig(text, path, dir);
  const readAgain = () => {
    const again = readConfigText(path);
    return readNodeConfig(again.text, path, again.dir);
  };
  // Signals are heard from before the node starts: a SIGTERM right after "node started" must drain, not kill,
  // and a SIGHUP must not end the process (its default).
  let node: Node | null = null;
  const signalled = untilSignalled(() =>
    node?.shutdown(node.config.drainTimeoutSeconds * 1000) ?? Promise.resolve()
  );
  onReloadSignal(() => void node?.reload("SIGHUP"));
  node = new Node(config, readAgain);
  let hubFailure: unknown;
  const started = node;
  await Promise.race([
    signalled,
    // The hub can fail after the relay started only with hubAcme (state directory, port): then stop and say why.
    started.hubReady.then(() => new Promise<never>(() => {}), async (error) => {
      hubFailure = error;
      await started.shutdown(0);
    }),
  ]);
  if (hubFailure !== undefined) throw hubFailure;
  return 0;
}

async function agent(args: readonly string[]): Promise<number> {
  if (wantsHelp(args, "agent")) return 0;
  const path = configPath(args);
  const { text, dir } = readConfigText(path);
  const config = readAgentConfig(text, path, dir);
  setLogLevel(config.logLevel);
  setLogFormat(config.logFormat);
  const agent = new Agent(agentSettings(config), createLogger("agent"));
  let admin: AdminListener | null = null;
  const refusals = new RateLimitedLog(createLogger("refusals"), {
    onEvent: (kind, fields) => view.refusal(kind, fields),
  });
  const makeAdmin = (settings: AdminSettings) =>
    new AdminListener({ ...settings, view, log: createLogger("admin"), refusals });
  const reloads: Reloader<AgentConfig> = new Reloader({
    inForce: config,
    read: () => {
      const again = readConfigText(path);
      return readAgentConfig(again.text, path, again.dir);
    },
    specs: AGENT_KEYS,
    log: createLogger("reload"),
    apply: (plan) => {
      const next = plan.effective;
      const changed = new Set(plan.live.map((change) => change.key));
      setLogLevel(next.logLevel);
      setLogFormat(next.logFormat);
      agent.reconfigure(agentSettings(next), {
        reregister: ["name", "hostnames", "weight"].some((key) => changed.has(key)),
      });
      if (!changed.has("admin")) return Promise.resolve({ inForce: next, problems: [] });
      const moved = moveAdminListener(admin, reloads.inForce.admin, next.admin, makeAdmin);
      admin = moved.listener;
      if (moved.problem === null) return Promise.resolve({ inForce: next, problems: [] });
      const { admin: _refused, ...rest } = next;
      const old = reloads.inForce.admin;
      return Promise.resolve({
        inForce: old === undefined ? rest : { ...rest, admin: old },
        problems: [moved.problem],
      });
    },
  });
  const view = new AgentView(agent, reloads);
  // Signals are heard from before the agent dials: a SIGTERM right after it starts must drain, not kill, and
  // a SIGHUP must not end it (its default).
  const signalled = untilSignalled(async () => {
    await agent.stop(reloads.inForce.drainTimeoutSeconds * 1000);
    // Last: /readyz answers 503 all through the drain.
    await admin?.close();
  });
  onReloadSignal(() => void reloads.reload("SIGHUP"));
  if (config.admin !== undefined) {
    admin = makeAdmin(config.admin);
    admin.listen();
  }
  agent.start();
  await signalled;
  return 0;
}

/** Turns a validated agent config into the agent's settings. */
export function agentSettings(config: AgentConfig): ConstructorParameters<typeof Agent>[0] {
  const identity = { name: config.name, hostnames: config.hostnames, weight: config.weight };
  return {
    name: config.name,
    hubUrls: config.hubs,
    ...(config.hubCaPem ? { hubCaPem: config.hubCaPem } : {}),
    tokens: config.token.kind === "secret"
      ? secretTokenSource(identity, config.token.secret, config.token.ttlSeconds)
      : commandTokenSource(identity, config.token.argv, config.token.timeoutSeconds * 1000),
    targets: config.targets,
    maxStreams: config.limits.maxStreams,
    connectTimeoutMs: config.limits.connectTimeoutSeconds * 1000,
    reconnect: {
      initialDelayMs: config.reconnect.initialDelaySeconds * 1000,
      maxDelayMs: config.reconnect.maxDelaySeconds * 1000,
    },
    heartbeatIntervalMs: 15_000,
    idleTimeoutMs: config.idleTimeoutSeconds * 1000,
    halfClosedTimeoutMs: config.limits.halfClosedTimeoutSeconds * 1000,
    legacyStreamBufferBytes: config.limits.legacyStreamBufferBytes,
  };
}

async function token(args: readonly string[]): Promise<number> {
  if (wantsHelp(args, "token")) return 0;
  const values = flags(args, {
    "secret-file": { type: "string" },
    hostname: { type: "string", multiple: true },
    weight: { type: "string" },
    ttl: { type: "string" },
    name: { type: "string" },
    nonce: { type: "string" },
  });
  const secretFile = values["secret-file"];
  if (secretFile === undefined) throw new UsageError("--secret-file FILE is required");
  const hostnames = values.hostname ?? [];
  if (hostnames.length === 0) throw new UsageError("at least one --hostname NAME is required");
  for (const name of hostnames) {
    const claim = parseHostnameClaim(name);
    if (claim.kind === "invalid") throw new UsageError(`--hostname: ${claim.reason}`);
  }
  const weight = values.weight === undefined ? 1 : Number(values.weight);
  if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
    throw new UsageError(`--weight must be an integer from 1 to ${MAX_WEIGHT}, got "${values.weight}"`);
  }
  const ttlSeconds = values.ttl === undefined ? 30 : parseDurationSeconds(values.ttl);
  if (ttlSeconds === null || ttlSeconds < 1) {
    throw new UsageError(`--ttl must be a duration such as 30s, 5m or 1h, got "${values.ttl}"`);
  }
  let secret: string;
  try {
    secret = Deno.readTextFileSync(secretFile).trim();
  } catch (error) {
    throw new Error(
      `cannot read the secret file ${secretFile}: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (secret.length === 0) throw new Error(`secret file ${secretFile} is empty`);
  const nonce = values.nonce ?? (Deno.env.get("NEXUS_SESSION_NONCE") || undefined);
  print(
    await signBackendToken({
      secret: new TextEncoder().encode(secret),
      name: values.name ?? "backend",
      hostnames,
      weight,
      ttlSeconds,
      ...(nonce !== undefined ? { sessionNonce: nonce } : {}),
    }),
  );
  return 0;
}

function check(args: readonly string[]): number {
  if (wantsHelp(args, "check")) return 0;
  const path = configPath(args);
  const { text, dir } = readConfigText(path);
  if (/^backendListenAddress\s*:/m.test(text)) {
    readNodeConfig(text, path, dir);
    print(`${path}: valid node configuration`);
  } else if (/^hubs\s*:/m.test(text)) {
    readAgentConfig(text, path, dir);
    print(`${path}: valid agent configuration`);
  } else {
    throw new Error(
      `${path}: cannot tell a node config (it has backendListenAddress) from an agent config (it has hubs)`,
    );
  }
  return 0;
}

/** Calls `reload` on each SIGHUP (not on Windows, which has none). */
function onReloadSignal(reload: () => void): void {
  if (Deno.build.os === "windows") return;
  Deno.addSignalListener("SIGHUP", reload);
}

/**
 * Resolves once `stop` has finished after SIGINT or SIGTERM. A second signal exits at once with code 1: it
 * must not wait for anything (a close handshake with a peer that no longer answers), and the kernel closes
 * every socket with the process.
 */
async function untilSignalled(stop: () => Promise<void>): Promise<void> {
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGINT", "SIGTERM"];
  let received = 0;
  let stopped: Promise<void> | null = null;
  await new Promise<void>((resolve) => {
    const onSignal = () => {
      received += 1;
      if (received === 1) {
        stopped = stop().then(resolve);
      } else {
        printError("nexus: second signal: exiting now");
        Deno.exit(1);
      }
    };
    for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  });
  await stopped;
}

function print(text: string): void {
  console.log(text);
}

function printError(text: string): void {
  console.error(text);
}
