/**
 * The `fd-exhaustion` scenario: the node runs under a low open-file limit (`sh -c 'ulimit -n 3000; exec
 * ...'`), relay connections fill its descriptors up to the limit, and then a client connects to the hub. The
 * node must stay alive; once the load is released, new relay clients and a new agent must work again, with no
 * restart: the listeners recover by themselves.
 *
 * A node that knows its budget refuses relay connections at its own (lowered) cap before the limit, keeping
 * the hub's share: the load then reaches that ceiling rather than the limit itself.
 *
 * The relay connections come from several loopback source addresses (so the default `maxConnectionsPerIp`
 * of 1,000 does not stop them first) and each sends a complete ClientHello for the agent's name, so they are
 * routed and no longer count against `maxHandshakes`. Node and agent otherwise run with their default config.
 *
 * @module
 */

import { buildClientHello } from "../../tests/sni/client_hello_builder.ts";
import { testCertificates } from "../../tests/helpers/certs.ts";
import { type NexusProcess, openDescriptors } from "../../tests/helpers/processes.ts";
import {
  controlRequest,
  type ControlResult,
  count,
  describeError,
  hubHealthy,
  loopbackAddresses,
  RawConnection,
} from "./clients.ts";
import type { ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { START_SECONDS } from "./streams.ts";
import { HOSTNAME, startSystem } from "./system.ts";

/** The node's open-file limit unless `--open-files` says otherwise. */
const DEFAULT_OPEN_FILES = 3_000;
/** Connections per source address, below the default `maxConnectionsPerIp`. */
const PER_ADDRESS = 900;
const BATCH = 50;
/** Batches in a row that add no descriptor at the node: it accepts no more, the limit is reached. */
const STALLED_BATCHES = 4;
/** How long the listeners get to recover after the load is released. */
const RECOVERY_LIMIT_MS = 30_000;
const REGISTER_LIMIT_MS = 20_000;

/** What the scenario found. */
export interface FdExhaustionReport {
  readonly openFileLimit: number;
  readonly nodeDescriptorsBefore: number;
  /** The most descriptors the node held while filled. */
  readonly nodeDescriptorsFilled: number;
  /**
   * Whether the load reached a ceiling: more connections made no difference at the node, because it ran out
   * or, as it should, refused at its own caps (lowered to fit the limit) first.
   */
  readonly reachedCeiling: boolean;
  readonly relayConnectionsOpened: number;
  readonly openFailures: Record<string, number>;
  /** What a hub client saw while the node was full. */
  readonly hubWhileFull: string;
  /** When and how the node died ("after the hub connection, exited with code 1: error: ..."); null: survived. */
  readonly nodeDeath: string | null;
  /**
   * Milliseconds from the release until a relay client and the hub worked again; null: not within the limit.
   * Absent when the node died before.
   */
  readonly recovery?: {
    readonly relayMs: number | null;
    readonly hubMs: number | null;
    readonly lastFailure: string;
  };
  /** Milliseconds until a new agent registered after the recovery; null: not within the limit; absent: not tried. */
  readonly newAgentRegisteredMs?: number | null;
}

function describeResult(result: ControlResult): string {
  return result.ok ? `answered in ${result.ms.toFixed(0)} ms` : result.reason;
}

/** Runs the scenario. */
export async function fdExhaustion({ sizes, phases, log }: ScenarioContext): Promise<ScenarioOutcome> {
  const openFileLimit = sizes.openFiles ?? DEFAULT_OPEN_FILES;
  const system = await phases.run(
    `fd-exhaustion: start node (open-file limit ${openFileLimit}) and agent`,
    START_SECONDS,
    () => startSystem({ nodeOpenFileLimit: openFileLimit }),
  );
  const caPem = (await testCertificates()).ca.certPem;
  const fill: RawConnection[] = [];
  const openFailures: Record<string, number> = {};
  try {
    await phases.run("fd-exhaustion: control request before the load", 30, async () => {
      const result = await controlRequest(system.tlsRoute);
      if (!result.ok) throw new Error(`the relay does not work even before the load: ${result.reason}`);
    });
    const nodeDescriptorsBefore = await openDescriptors(system.node.pid);
    const sources = loopbackAddresses(2, Math.ceil(openFileLimit / PER_ADDRESS) + 1);
    const hello = buildClientHello({ serverName: HOSTNAME });
    let nodeDescriptorsFilled = nodeDescriptorsBefore;
    let reachedCeiling = false;
    await phases.run(
      `fd-exhaustion: fill the node's ${openFileLimit} descriptors`,
      30 + openFileLimit * 0.02,
      async (context) => {
        let stalled = 0;
        for (let attempt = 0; attempt < 2 * openFileLimit && stalled < STALLED_BATCHES;) {
          if (context.signal.aborted || system.node.exitStatus !== null) return;
          const results = await Promise.allSettled(Array.from({ length: BATCH }, (_, i) => {
            const source = sources[Math.floor((attempt + i) / PER_ADDRESS) % sources.length];
            return RawConnection.connect(system.ports.tlsPort, source, 3_000);
          }));
          attempt += BATCH;
          for (const result of results) {
            if (result.status === "fulfilled") {
              result.value.write(hello);
              fill.push(result.value);
            } else {
              const reason = describeError(result.reason);
              openFailures[reason] = (openFailures[reason] ?? 0) + 1;
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
          const descriptors = await openDescriptors(system.node.pid).catch(() => 0);
          stalled = descriptors > nodeDescriptorsFilled ? 0 : stalled + 1;
          nodeDescriptorsFilled = Math.max(nodeDescriptorsFilled, descriptors);
          context.progress = `the node holds ${count(descriptors)} of ${
            count(openFileLimit)
          } descriptors after ${count(fill.length)} relay connections`;
        }
        reachedCeiling = stalled >= STALLED_BATCHES;
      },
    );
    log(
      `node filled: ${count(nodeDescriptorsFilled)} descriptors, ${
        count(fill.length)
      } relay connections open`,
    );
    const aliveWhenFull = system.node.exitStatus === null;
    const hubWhileFull = await phases.run("fd-exhaustion: connect to the hub while full", 30, async () => {
      const result = await hubHealthy(system.ports.hubPort, caPem);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      return describeResult(result);
    });
    const relayConnectionsOpened = fill.length;
    for (const conn of fill.splice(0)) conn.close();
    const report = {
      openFileLimit,
      nodeDescriptorsBefore,
      nodeDescriptorsFilled,
      reachedCeiling,
      relayConnectionsOpened,
      openFailures,
      hubWhileFull,
    };
    if (system.node.exitStatus !== null) {
      const when = aliveWhenFull ? "after the hub connection" : "while the relay filled its descriptors";
      return outcome({ ...report, nodeDeath: `${when}, ${nodeDeath(system.node)}` });
    }
    const recovery = await phases.run(
      "fd-exhaustion: recover after the release",
      RECOVERY_LIMIT_MS / 1000 + 20,
      async (context) => {
        const released = performance.now();
        let relayMs: number | null = null;
        let hubMs: number | null = null;
        let lastFailure = "";
        while ((relayMs === null || hubMs === null) && performance.now() - released < RECOVERY_LIMIT_MS) {
          if (system.node.exitStatus !== null || context.signal.aborted) break;
          if (relayMs === null) {
            const result = await controlRequest(system.tlsRoute, 64, 2_000);
            if (result.ok) relayMs = Math.round(performance.now() - released);
            else lastFailure = `relay: ${result.reason}`;
          }
          if (hubMs === null) {
            const result = await hubHealthy(system.ports.hubPort, caPem, 2_000);
            if (result.ok) hubMs = Math.round(performance.now() - released);
            else lastFailure = `hub: ${result.reason}`;
          }
          context.progress = `relay ${relayMs === null ? "not back" : "back"}, hub ${
            hubMs === null ? "not back" : "back"
          }; last failure: ${lastFailure}`;
          if (relayMs === null || hubMs === null) await new Promise((resolve) => setTimeout(resolve, 250));
        }
        return { relayMs, hubMs, lastFailure };
      },
    );
    if (system.node.exitStatus !== null) {
      return outcome({ ...report, nodeDeath: `after the release, ${nodeDeath(system.node)}`, recovery });
    }
    const newAgentRegisteredMs = await phases.run(
      "fd-exhaustion: a new agent after the release",
      REGISTER_LIMIT_MS / 1000 + 15,
      async () => {
        const started = performance.now();
        const agent = await system.startAgent("after-exhaustion-agent", { waitConnected: false });
        try {
          await agent.waitForLine(/connected to hub/, { timeoutMs: REGISTER_LIMIT_MS });
          return Math.round(performance.now() - started);
        } catch {
          return null;
        }
      },
    );
    return outcome({
      ...report,
      nodeDeath: system.node.exitStatus === null ? null : `at the end, ${nodeDeath(system.node)}`,
      recovery,
      newAgentRegisteredMs,
    });
  } finally {
    for (const conn of fill) conn.close();
    await system.stop();
  }
}

/** How the node died: its exit and the last error it printed. */
function nodeDeath(node: NexusProcess): string {
  const status = node.exitStatus!;
  const exit = status.signal === null ? `code ${status.code}` : `signal ${status.signal}`;
  const error = node.lines.findLast((line) => /^error:|ERROR/.test(line));
  return `exited with ${exit}${error === undefined ? "" : `: ${error.trim()}`}`;
}

function outcome(report: FdExhaustionReport): ScenarioOutcome {
  const seconds = (ms: number | null, limitMs: number) =>
    ms === null ? `not within ${limitMs / 1000} s` : `after ${(ms / 1000).toFixed(1)} s`;
  const failed = Object.entries(report.openFailures).map(([reason, n]) => `${reason} ×${n}`).join(", ");
  const figures = [
    `node under an open-file limit of ${count(report.openFileLimit)}: ${
      count(report.nodeDescriptorsBefore)
    } ` +
    `descriptors at rest, ${count(report.nodeDescriptorsFilled)} at most while filled by ` +
    `${count(report.relayConnectionsOpened)} relay connections${
      failed === "" ? "" : ` (connects failed: ${failed})`
    }`,
    `a hub client while full: ${report.hubWhileFull}`,
  ];
  if (report.recovery !== undefined) {
    figures.push(
      `after the release: relay clients work ${
        seconds(report.recovery.relayMs, RECOVERY_LIMIT_MS)
      }, the hub ` +
        `answers ${seconds(report.recovery.hubMs, RECOVERY_LIMIT_MS)}${
          report.recovery.lastFailure === "" ? "" : ` (last failure: ${report.recovery.lastFailure})`
        }`,
    );
  }
  if (report.newAgentRegisteredMs !== undefined) {
    figures.push(
      `a new agent after the release: registered ${seconds(report.newAgentRegisteredMs, REGISTER_LIMIT_MS)}`,
    );
  }
  figures.push(report.nodeDeath === null ? "node survived" : `node did not survive: ${report.nodeDeath}`);
  const failures: string[] = [];
  if (report.nodeDeath !== null) {
    failures.push(`the node died of descriptor exhaustion: ${report.nodeDeath}`);
  }
  if (!report.reachedCeiling) {
    failures.push(
      `the load reached no ceiling: the node held ${count(report.nodeDescriptorsFilled)} of ${
        count(report.openFileLimit)
      } descriptors and still took more`,
    );
  }
  if (report.recovery?.relayMs === null) {
    failures.push("the relay did not recover after the load was released");
  }
  if (report.recovery?.hubMs === null) failures.push("the hub did not recover after the load was released");
  if (report.newAgentRegisteredMs === null) {
    failures.push("a new agent could not register after the load was released");
  }
  return { scenario: "fd-exhaustion", figures, failures, report };
}
