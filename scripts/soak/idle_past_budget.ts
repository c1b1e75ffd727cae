/**
 * The `idle-past-budget` scenario: more idle proxied TLS connections than the node's stream buffer budget
 * gives full windows to (`limits.streamBufferBudgetBytes` / `limits.streamWindowBytes` = 512 MiB / 2 MiB =
 * 256 by default), then new streams that move data while they are held, byte for byte. Past the budget new
 * streams get smaller windows; they must still work, and every descriptor must come back once the idle
 * connections close.
 *
 * The node runs with its default limits except `maxConnectionsPerIp` and `maxStreamsPerBackend`, raised to
 * fit the connections (they all come from 127.0.0.1 and ride one agent).
 *
 * @module
 */

import type { PhaseContext } from "../bench/phase.ts";
import { openDescriptors } from "../../tests/helpers/processes.ts";
import { count } from "./clients.ts";
import type { ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { holdEchoStreams, holdSeconds, runStream, STALL_SECONDS, START_SECONDS } from "./streams.ts";
import { type DescriptorSettling, settleDescriptors, startSystem, type System } from "./system.ts";

/** Idle connections held unless `--connections` says otherwise. */
const DEFAULT_IDLE_CONNECTIONS = 2_000;

const MiB = 1024 * 1024;
/** The streams opened while the idle connections are held: each moves its bytes, checked by SHA-256. */
const TRANSFERS = [
  ...Array.from({ length: 4 }, () => ({ kind: "download" as const, bytes: 4 * MiB })),
  ...Array.from({ length: 4 }, () => ({ kind: "upload" as const, bytes: 4 * MiB })),
  ...Array.from({ length: 2 }, () => ({ kind: "echo" as const, bytes: 1 * MiB })),
];
/** "Back within a few of the baseline": descriptors a process may hold above what it held before. */
const DESCRIPTOR_TOLERANCE = 5;
/** How long the node and agent get to release every descriptor after the connections close. */
const SETTLE_LIMIT_MS = 30_000;

/** What the scenario found. */
export interface IdlePastBudgetReport {
  readonly connections: number;
  readonly held: number;
  readonly transfers: ReadonlyArray<{
    readonly kind: string;
    readonly bytes: number;
    readonly result: string;
    readonly detail?: string;
  }>;
  readonly descriptors: Record<"node" | "agent", {
    readonly before: number;
    readonly holding: number;
    readonly after: DescriptorSettling;
  }>;
}

async function transfersWhileHolding(system: System, context: PhaseContext) {
  const counters = { sent: 0, received: 0 };
  let done = 0;
  const total = TRANSFERS.reduce((sum, t) => sum + (t.kind === "echo" ? 2 : 1) * t.bytes, 0);
  const timer = setInterval(() => {
    context.progress = `${done} of ${TRANSFERS.length} transfers done, ${
      ((counters.sent + counters.received) / MiB).toFixed(1)
    } of ${(total / MiB).toFixed(1)} MiB moved`;
  }, 500);
  try {
    return await Promise.all(TRANSFERS.map(async (transfer, i) => {
      const outcome = await runStream(
        system.tlsRoute,
        transfer.kind,
        transfer.bytes,
        1000 + i,
        "fast",
        Math.random,
        counters,
      );
      done += 1;
      return {
        kind: transfer.kind,
        bytes: transfer.bytes,
        result: outcome.result,
        ...(outcome.result === "lost" ? { detail: `${outcome.bytes} bytes short` } : {}),
        ...(outcome.result === "corrupted" ? { detail: outcome.detail } : {}),
        ...(outcome.result === "failed" ? { detail: outcome.reason } : {}),
      };
    }));
  } finally {
    clearInterval(timer);
  }
}

/** Runs the scenario. */
export async function idlePastBudget({ sizes, phases, log }: ScenarioContext): Promise<ScenarioOutcome> {
  const connections = sizes.connections ?? DEFAULT_IDLE_CONNECTIONS;
  const system = await phases.run("idle-past-budget: start node and agent", START_SECONDS, () =>
    startSystem({
      nodeExtra: `limits:\n  maxHandshakesPerIp: 1024\n  maxConnectionsPerIp: ${
        connections + 1_000
      }\n  maxStreamsPerBackend: ${connections + 1_000}\n`,
    }));
  const conns: Deno.Conn[] = [];
  try {
    // Warm up the code paths, so the baseline is not mostly compilation.
    await phases.run("idle-past-budget: warm up", 30, async (context) => {
      const warm: Deno.Conn[] = [];
      await holdEchoStreams(system.tlsRoute, warm, 20, context);
      for (const conn of warm) conn.close();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
    });
    const before = {
      node: await openDescriptors(system.node.pid),
      agent: await openDescriptors(system.agent.pid),
    };
    await phases.run(
      `idle-past-budget: hold ${connections} idle connections`,
      holdSeconds(connections),
      (context) => holdEchoStreams(system.tlsRoute, conns, connections, context),
      { stallSeconds: STALL_SECONDS },
    );
    log(`${count(conns.length)} idle connections held`);
    const holding = {
      node: await openDescriptors(system.node.pid),
      agent: await openDescriptors(system.agent.pid),
    };
    const transferBytes = TRANSFERS.reduce((sum, t) => sum + t.bytes, 0);
    const transfers = await phases.run(
      "idle-past-budget: transfers while holding",
      15 + transferBytes / (2 * MiB),
      (context) => transfersWhileHolding(system, context),
      { stallSeconds: STALL_SECONDS },
    );
    const held = conns.length;
    for (const conn of conns.splice(0)) conn.close();
    const after = await phases.run(
      "idle-past-budget: release",
      SETTLE_LIMIT_MS / 1000 + 15,
      (context) =>
        Promise.all([
          settleDescriptors(
            system.node.pid,
            before.node + DESCRIPTOR_TOLERANCE,
            SETTLE_LIMIT_MS,
            context.signal,
          ),
          settleDescriptors(
            system.agent.pid,
            before.agent + DESCRIPTOR_TOLERANCE,
            SETTLE_LIMIT_MS,
            context.signal,
          ),
        ]),
    );
    const report: IdlePastBudgetReport = {
      connections,
      held,
      transfers,
      descriptors: {
        node: { before: before.node, holding: holding.node, after: after[0] },
        agent: { before: before.agent, holding: holding.agent, after: after[1] },
      },
    };
    return outcome(report);
  } finally {
    for (const conn of conns) conn.close();
    await system.stop();
  }
}

function outcome(report: IdlePastBudgetReport): ScenarioOutcome {
  const ok = report.transfers.filter((t) => t.result === "ok");
  const verifiedBytes = ok.reduce((sum, t) => sum + (t.kind === "echo" ? 2 : 1) * t.bytes, 0);
  const descriptors = (name: "node" | "agent") => {
    const d = report.descriptors[name];
    return `${name} ${count(d.before)} → ${count(d.holding)} → ${count(d.after.descriptors)} (${
      d.after.ms === null
        ? `not back within ${DESCRIPTOR_TOLERANCE} of the start after ${SETTLE_LIMIT_MS / 1000} s`
        : `back within ${DESCRIPTOR_TOLERANCE} of the start after ${(d.after.ms / 1000).toFixed(1)} s`
    })`;
  };
  const figures = [
    `${count(report.held)} of ${
      count(report.connections)
    } idle TLS connections held (the default budget gives ` +
    `256 streams a full window)`,
    `transfers while holding: ${ok.length} of ${report.transfers.length} byte-exact (4 downloads and 4 uploads ` +
    `of 4 MiB, 2 echoes of 1 MiB), ${(verifiedBytes / MiB).toFixed(1)} MiB verified by SHA-256`,
    ...report.transfers.filter((t) => t.result !== "ok").map((t) =>
      `  ${t.kind} of ${(t.bytes / MiB).toFixed(1)} MiB: ${t.result}${
        t.detail === undefined ? "" : `, ${t.detail}`
      }`
    ),
    `descriptors before, holding, after closing: ${descriptors("node")}; ${descriptors("agent")}`,
  ];
  const failures: string[] = [];
  if (report.held < report.connections) {
    failures.push(
      `only ${count(report.held)} of ${count(report.connections)} idle connections could be held`,
    );
  }
  if (ok.length < report.transfers.length) {
    failures.push(
      `${report.transfers.length - ok.length} of ${report.transfers.length} transfers were not byte-exact`,
    );
  }
  for (const name of ["node", "agent"] as const) {
    if (report.descriptors[name].after.ms === null) {
      failures.push(
        `the ${name} held ${count(report.descriptors[name].after.descriptors)} descriptors ${
          SETTLE_LIMIT_MS / 1000
        } s ` +
          `after the connections closed, ${count(report.descriptors[name].before)} before`,
      );
    }
  }
  return { scenario: "idle-past-budget", figures, failures, report };
}
