/**
 * The `hub-flood` scenario: many TCP connections to the hub port that never start TLS, held open, while a
 * control client makes requests through the relay (TLS, through node and agent) one after another, a few ms
 * apart. The flood must not disturb the control traffic, a new agent must still be able to register, and the
 * node must close the silent connections by its handshake deadline instead of holding them forever.
 *
 * Node and agent run with their default config.
 *
 * @module
 */

import { openDescriptors } from "../../tests/helpers/processes.ts";
import { ControlClient, count, describeError, RawConnection, warmUp } from "./clients.ts";
import type { ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { START_SECONDS } from "./streams.ts";
import { startSystem } from "./system.ts";

/** Flood connections unless `--connections` says otherwise. */
const DEFAULT_FLOOD_CONNECTIONS = 2_000;
/** How long the flood is held unless `--duration` says otherwise; the figures are taken at a third and at the end. */
const DEFAULT_FLOOD_SECONDS = 30;
/** The node's default `handshakeTimeouts.firstByteSeconds`: a silent connection should be closed by then. */
const FIRST_BYTE_SECONDS = 15;
/** The share of control requests that must succeed during the flood. */
const CONTROL_SUCCESS_RATE = 0.99;
/** Control requests: one every 5 ms, at most 8 at once (each is a new TLS connection, about 50 ms). */
const CONTROL_PACE = { intervalMs: 5, maxInFlight: 8 };
/** How long a new agent may take to register during the flood. */
const REGISTER_LIMIT_MS = 20_000;

/** What the scenario found. */
export interface HubFloodReport {
  readonly connections: number;
  readonly opened: number;
  readonly openFailures: Record<string, number>;
  readonly durationSeconds: number;
  readonly control: { readonly attempts: number; readonly succeeded: number; readonly successRate: number };
  /** Flood connections the node had not closed, and the node's descriptors, at a third and at the end. */
  readonly checkpoints: ReadonlyArray<
    { readonly atSeconds: number; readonly held: number; readonly nodeDescriptors: number }
  >;
  readonly nodeDescriptorsBefore: number;
  /** How long the new agent took to register during the flood; null if it did not within the limit. */
  readonly newAgentRegisteredMs: number | null;
}

/** Runs the scenario. */
export async function hubFlood({ sizes, phases, log }: ScenarioContext): Promise<ScenarioOutcome> {
  const connections = sizes.connections ?? DEFAULT_FLOOD_CONNECTIONS;
  const durationSeconds = sizes.durationSeconds ?? DEFAULT_FLOOD_SECONDS;
  const system = await phases.run("hub-flood: start node and agent", START_SECONDS, () => startSystem());
  const flood: RawConnection[] = [];
  const openFailures: Record<string, number> = {};
  try {
    const control = new ControlClient();
    await phases.run(
      "hub-flood: control requests before the flood",
      30,
      () => warmUp(system.tlsRoute, CONTROL_PACE),
    );
    const nodeDescriptorsBefore = await openDescriptors(system.node.pid);
    await phases.run(
      `hub-flood: open ${connections} flood connections`,
      15 + connections * 0.01,
      async (context) => {
        for (let batch = 0; batch < connections && !context.signal.aborted; batch += 100) {
          const results = await Promise.allSettled(
            Array.from(
              { length: Math.min(100, connections - batch) },
              () => RawConnection.connect(system.ports.hubPort, "127.0.0.1", 5_000),
            ),
          );
          for (const result of results) {
            if (result.status === "fulfilled") flood.push(result.value);
            else {
              const reason = describeError(result.reason);
              openFailures[reason] = (openFailures[reason] ?? 0) + 1;
            }
          }
          context.progress = `${count(flood.length)} of ${count(connections)} flood connections open`;
        }
      },
    );
    log(`${count(flood.length)} flood connections open`);
    const floodStarted = performance.now();
    const checkpoints: Array<{ atSeconds: number; held: number; nodeDescriptors: number }> = [];
    let newAgentRegisteredMs: number | null = null;
    await phases.run(`hub-flood: ${durationSeconds} s of flood`, durationSeconds + 45, async (context) => {
      const stop = new AbortController();
      context.signal.addEventListener("abort", () => stop.abort());
      const controlling = control.run(system.tlsRoute, stop.signal, CONTROL_PACE);
      const registering = (async () => {
        const started = performance.now();
        const agent = await system.startAgent("flood-time-agent", { waitConnected: false });
        try {
          await agent.waitForLine(/connected to hub/, {
            timeoutMs: Math.min(REGISTER_LIMIT_MS, durationSeconds * 1000),
          });
          newAgentRegisteredMs = Math.round(performance.now() - started);
        } catch {
          // Not within the limit: the figure says so.
        }
      })();
      for (const fraction of [1 / 3, 1]) {
        const atMs = durationSeconds * 1000 * fraction;
        const wait = floodStarted + atMs - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        checkpoints.push({
          atSeconds: Math.round(atMs / 100) / 10,
          held: flood.filter((conn) => conn.open).length,
          nodeDescriptors: await openDescriptors(system.node.pid),
        });
        context.progress = `${
          count(control.attempts)
        } control requests made, ${checkpoints.length} of 2 checkpoints`;
      }
      stop.abort();
      await Promise.all([controlling, registering]);
    });
    return outcome({
      connections,
      opened: flood.length,
      openFailures,
      durationSeconds,
      control: { attempts: control.attempts, succeeded: control.succeeded, successRate: control.successRate },
      checkpoints,
      nodeDescriptorsBefore,
      newAgentRegisteredMs,
    }, control.describe());
  } finally {
    for (const conn of flood) conn.close();
    await system.stop();
  }
}

function outcome(report: HubFloodReport, control: string): ScenarioOutcome {
  const figures = [
    `${count(report.opened)} of ${count(report.connections)} flood connections opened to the hub port${
      Object.keys(report.openFailures).length === 0 ? "" : ` (failed: ${JSON.stringify(report.openFailures)})`
    }, held ${report.durationSeconds} s`,
    `control requests through the relay during the flood: ${control}`,
    ...report.checkpoints.map((c) =>
      `after ${c.atSeconds} s: the node still holds ${count(c.held)} flood connections; node descriptors ` +
      `${count(c.nodeDescriptors)} (${count(report.nodeDescriptorsBefore)} before the flood)`
    ),
    `a new agent during the flood: ${
      report.newAgentRegisteredMs === null
        ? `did not register within ${Math.min(REGISTER_LIMIT_MS / 1000, report.durationSeconds)} s`
        : `registered after ${(report.newAgentRegisteredMs / 1000).toFixed(1)} s`
    }`,
  ];
  const failures: string[] = [];
  if (report.control.successRate < CONTROL_SUCCESS_RATE) {
    failures.push(
      `only ${
        (report.control.successRate * 100).toFixed(1)
      }% of control requests succeeded during the flood ` +
        `(at least ${CONTROL_SUCCESS_RATE * 100}% expected)`,
    );
  }
  if (report.newAgentRegisteredMs === null) failures.push("a new agent could not register during the flood");
  const last = report.checkpoints.at(-1);
  // Only a flood held past the first-byte deadline (and some slack) can show whether the node closes them.
  if (last !== undefined && report.durationSeconds >= FIRST_BYTE_SECONDS + 10 && last.held > 0) {
    failures.push(
      `the node still held ${count(last.held)} of ${count(report.opened)} silent hub connections after ` +
        `${last.atSeconds} s (its first-byte deadline is ${FIRST_BYTE_SECONDS} s)`,
    );
  }
  return { scenario: "hub-flood", figures, failures, report };
}
