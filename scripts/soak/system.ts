/**
 * The system a soak scenario runs against: a node and an agent as child processes of the soak (`nexus serve`,
 * `nexus agent`, with the configs of `tests/helpers/processes.ts`), and the traffic services behind the agent
 * in a third process. Every child is killed when the soak ends, however it ends, and is described when a
 * phase fails.
 *
 * @module
 */

import { BenchChild } from "../bench/child.ts";
import { killOnExit, removeOnExit } from "../bench/reaper.ts";
import {
  agentYaml,
  type ConfigDir,
  makeConfigDir,
  type NexusProcess,
  type NodePorts,
  nodeYaml,
  openDescriptors,
  REPO_ROOT,
  spawnAgent,
  spawnNode,
} from "../../tests/helpers/processes.ts";
import { testCertificates } from "../../tests/helpers/certs.ts";
import type { TrafficRoute } from "../../tests/helpers/traffic.ts";
import type { ServicePorts } from "./service.ts";

/** The name the agent serves; the TLS service's certificate is valid for it. */
export const HOSTNAME = "app.test.nexus";

/** How the system differs from the defaults. */
export interface SystemOptions {
  /** YAML appended to the node's config (its `limits:` and the like). */
  readonly nodeExtra?: string;
  /** YAML appended to the agent's config; absent: `limits.maxStreams: 100000`. */
  readonly agentExtra?: string;
  /** The node's open-file limit; absent: the soak's own. */
  readonly nodeOpenFileLimit?: number;
}

/** A running system. */
export interface System {
  readonly dir: ConfigDir;
  readonly node: NexusProcess;
  readonly ports: NodePorts;
  /** The node's TLS relay port, routed by SNI to the TLS service. */
  readonly tlsRoute: TrafficRoute;
  /** The node's HTTP relay port, routed by `Host` to the plain service. */
  readonly httpRoute: TrafficRoute;
  /** The agent started with the system (replaced by {@linkcode System.restartAgent}). */
  readonly agent: NexusProcess;
  /** Kills the agent (SIGKILL) and waits for its exit. */
  killAgent(): Promise<void>;
  /** Starts the agent again and waits for its hub session. */
  restartAgent(): Promise<void>;
  /**
   * Starts one more agent, named `name`, for the same hostname; `waitConnected: false` returns at once, for a
   * caller that waits for its `connected to hub` line with a deadline of its own.
   */
  startAgent(name: string, options?: { waitConnected?: boolean }): Promise<NexusProcess>;
  /** Stops every child (agents at once, the node with SIGTERM, SIGKILL after 10 s) and removes the files. */
  stop(): Promise<void>;
}

const STOP_GRACE_MS = 10_000;

/** Registers `process` to be killed at exit and described by failed phases; returns the forget function. */
function reaped(name: string, process: NexusProcess): () => void {
  return killOnExit({
    name,
    pid: process.pid,
    get exitStatus() {
      return process.exitStatus;
    },
    kill: (signal) => process.kill(signal),
  });
}

async function stopProcess(process: NexusProcess, forget: () => void, signal: Deno.Signal): Promise<void> {
  process.kill(signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    process.exited,
    new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS))),
  ]);
  clearTimeout(timer);
  process.kill("SIGKILL");
  await process.exited;
  forget();
}

/** Starts the services, the node and the agent; on failure, stops what it started. */
export async function startSystem(options: SystemOptions = {}): Promise<System> {
  const dir = await makeConfigDir();
  removeOnExit(dir.path);
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
    await dir.remove().catch(() => {});
  };
  try {
    const certs = await testCertificates();
    const service = new BenchChild(
      "services",
      [
        Deno.execPath(),
        "run",
        "--allow-net",
        "--allow-read",
        `${REPO_ROOT}scripts/soak/service.ts`,
        "--cert",
        await dir.write("service.crt", certs.service.certPem),
        "--key",
        await dir.write("service.key", certs.service.keyPem),
      ],
      { logFile: `${dir.path}/services.log` },
    );
    stops.push(() => service.stop());
    const services = JSON.parse(await service.readLine()) as ServicePorts;

    // Info level: the start-up lines name the bound ports; nothing is logged per stream at info.
    const nodeConfig = await dir.write(
      "node.yaml",
      nodeYaml({ drainTimeoutSeconds: 0, extra: options.nodeExtra }),
    );
    // Registered the moment it exists: a phase that runs out of time may end the soak during the wait.
    const { process: node, ports } = await spawnNode(nodeConfig, {
      openFileLimit: options.nodeOpenFileLimit,
      onSpawn: (process) => {
        const forget = reaped("node", process);
        stops.push(() => stopProcess(process, forget, "SIGTERM"));
      },
    });

    const agentConfig = (name: string) =>
      dir.write(
        `${name}.yaml`,
        agentYaml({
          name,
          hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
          hostnames: [HOSTNAME],
          targets: { [HOSTNAME]: { tls: services.tls, http: services.http } },
          extra: options.agentExtra ?? "limits:\n  maxStreams: 100000\n",
        }),
      );
    const startAgent = async (name: string, startOptions: { waitConnected?: boolean } = {}) => {
      return await spawnAgent(await agentConfig(name), {
        ...startOptions,
        onSpawn: (process) => {
          const forget = reaped(name, process);
          stops.push(() => stopProcess(process, forget, "SIGKILL"));
        },
      });
    };
    let agent = await startAgent("agent");
    const system: System = {
      dir,
      node,
      ports,
      tlsRoute: { port: ports.tlsPort, protocol: "tls", hostname: HOSTNAME },
      httpRoute: { port: ports.httpPort, protocol: "http", hostname: HOSTNAME },
      get agent() {
        return agent;
      },
      async killAgent() {
        agent.kill("SIGKILL");
        await agent.exited;
      },
      async restartAgent() {
        agent = await startAgent("agent");
      },
      startAgent,
      stop: stopAll,
    };
    return system;
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** How long a process took to come back to a count of open descriptors. */
export interface DescriptorSettling {
  /** The count when it got there, or when the wait ended. */
  readonly descriptors: number;
  /** Milliseconds from the call until the count was at most the target; null if it never was. */
  readonly ms: number | null;
}

/**
 * Polls `/proc/<pid>/fd` every 100 ms until the process holds at most `atMost` descriptors or `limitMs` has
 * passed (or `signal` aborts).
 */
export async function settleDescriptors(
  pid: number,
  atMost: number,
  limitMs: number,
  signal?: AbortSignal,
): Promise<DescriptorSettling> {
  const started = performance.now();
  for (;;) {
    const descriptors = await openDescriptors(pid);
    if (descriptors <= atMost) return { descriptors, ms: Math.round(performance.now() - started) };
    if (performance.now() - started > limitMs || signal?.aborted) return { descriptors, ms: null };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
