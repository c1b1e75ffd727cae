/**
 * `deno task soak`: scenarios that run a node and an agent as child processes (`nexus serve`, `nexus agent`)
 * with traffic services behind the agent, and drive them past their limits.
 *
 * ```sh
 * deno task soak [--scenario streams] --duration 60 --concurrency 200 [--max-bytes 4194304] \
 *   [--kill-agent-at 0.4] [--agent-down 1] [--seed 1] [--json]
 * deno task soak --scenario idle-past-budget [--connections 2000]
 * deno task soak --scenario hub-flood [--connections 2000] [--duration 30]
 * deno task soak --scenario fd-exhaustion [--open-files 3000]
 * deno task soak --scenario slow-handshakes [--connections 1100] [--duration 40]
 * deno task soak --scenario reload [--connections 64] [--duration 42]   # streams through 10+10 reloads
 * deno task soak --scenario all           # every scenario in turn
 * deno task soak --idle 1000              # node memory per idle proxied connection
 * ```
 *
 * Every scenario prints its figures at the end, then `passed` or each check that failed. Every step is a
 * phase with a deadline scaled to its size (`--phase-timeout S` gives every phase S seconds instead), and holds
 * and transfers also end once their count has stood still for 30 s; a phase that misses its deadline ends
 * the scenario with a line naming the phase, how far it got and the state of node and agent. Children are
 * killed on the way out, on Ctrl-C too.
 *
 * Exit codes: 0 every scenario passed; 1 a check failed (data lost or corrupted, a limit not held); 2 a bad
 * flag; 3 a phase failed (the scenario could not go on); 4 streams failed unexpectedly, nothing lost; 5 a phase
 * missed its deadline. With `all`, the code of the first scenario that did not pass.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { EXIT_DEADLINE, PhaseError, Phases } from "./bench/phase.ts";
import { reapOnExit, registeredChildren } from "./bench/reaper.ts";
import { fdExhaustion } from "./soak/fd_exhaustion.ts";
import { hubFlood } from "./soak/hub_flood.ts";
import { idlePastBudget } from "./soak/idle_past_budget.ts";
import type { Scenario, ScenarioOutcome, ScenarioSizes } from "./soak/scenario.ts";
import { reloadUnderLoad } from "./soak/reload.ts";
import { slowHandshakes } from "./soak/slow_handshakes.ts";
import { measureIdle, type SoakOptions, streamsScenario } from "./soak/streams.ts";

const MiB = 1024 * 1024;

/** The exit code of a scenario stopped by a phase that failed. */
const EXIT_PHASE_FAILED = 3;

const USAGE = `Usage: deno task soak [--scenario NAME] [--duration S] [--connections N] [--open-files N]
                      [--phase-timeout S] [--json]
         streams (default): [--concurrency N] [--max-bytes B] [--kill-agent-at F] [--agent-down S] [--seed N]
         idle-past-budget, hub-flood, fd-exhaustion, slow-handshakes, reload, or all (every scenario in turn)
       deno task soak --idle N [--json]     node memory per idle proxied connection`;

function fail(message: string): never {
  console.error(`soak: ${message}\n${USAGE}`);
  Deno.exit(2);
}

function numberFlag(name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min) {
    fail(`--${name} must be a number of at least ${min}, got "${text}"`);
  }
  return value;
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        scenario: { type: "string", default: "streams" },
        duration: { type: "string" },
        concurrency: { type: "string", default: "200" },
        "max-bytes": { type: "string", default: String(4 * MiB) },
        "kill-agent-at": { type: "string", default: "0.4" },
        "agent-down": { type: "string", default: "1" },
        seed: { type: "string", default: String(Date.now() % 1_000_000) },
        connections: { type: "string" },
        "open-files": { type: "string" },
        "phase-timeout": { type: "string" },
        idle: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    fail(error instanceof Error ? error.message.split("\n")[0] : String(error));
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const log = (line: string) => console.error(`soak: ${line}`);
  reapOnExit("soak");
  const phases = new Phases({
    watched: registeredChildren,
    timeoutOverrideSeconds: numberFlag("phase-timeout", values["phase-timeout"], 0.001),
    log: Deno.env.get("NEXUS_SOAK_DEBUG") ? log : undefined,
  });
  const durationSeconds = numberFlag("duration", values.duration, 1);

  if (values.idle !== undefined) {
    const report = await measureIdle(numberFlag("idle", values.idle, 1)!, phases, log);
    if (values.json) console.log(JSON.stringify(report));
    else {
      console.error(
        `idle: ${report.connections} connections; node RSS ${
          (report.nodeRssBeforeBytes / MiB).toFixed(1)
        } → ${(report.nodeRssAfterBytes / MiB).toFixed(1)} MiB, ${
          (report.nodeRssPerConnectionBytes / 1024).toFixed(1)
        } KiB per connection (agent ${
          (report.agentRssPerConnectionBytes / 1024).toFixed(1)
        } KiB); descriptors ${report.nodeDescriptorsBefore} → ${report.nodeDescriptorsWithConnections} → ${report.nodeDescriptorsAfterClose}`,
      );
    }
    return 0;
  }

  const sizes: ScenarioSizes = {
    connections: numberFlag("connections", values.connections, 1),
    durationSeconds,
    openFiles: numberFlag("open-files", values["open-files"], 100),
  };
  const streamsOptions: SoakOptions = {
    durationSeconds: durationSeconds ?? 60,
    concurrency: Math.floor(numberFlag("concurrency", values.concurrency, 1)!),
    maxStreamBytes: Math.floor(numberFlag("max-bytes", values["max-bytes"], 1024)!),
    killAgentAt: Number(values["kill-agent-at"]),
    agentDownSeconds: numberFlag("agent-down", values["agent-down"], 0)!,
    seed: Math.floor(numberFlag("seed", values.seed, 0)!),
  };
  const scenarios: Record<string, Scenario> = {
    streams: () => streamsScenario(streamsOptions, phases, log),
    "idle-past-budget": idlePastBudget,
    "hub-flood": hubFlood,
    "fd-exhaustion": fdExhaustion,
    "slow-handshakes": slowHandshakes,
    reload: reloadUnderLoad,
  };
  const chosen = values.scenario === "all" ? Object.keys(scenarios) : [values.scenario];
  for (const name of chosen) {
    if (!(name in scenarios)) {
      fail(`--scenario must be one of ${Object.keys(scenarios).join(", ")} or all, got "${name}"`);
    }
  }
  let exitCode = 0;
  for (const name of chosen) {
    if (name === "streams") log(`streams: seed ${streamsOptions.seed}`);
    const code = await runScenario(name, scenarios[name], { sizes, phases, log }, values.json);
    if (exitCode === 0) exitCode = code;
  }
  return exitCode;
}

/** Runs one scenario, prints what it found, and returns its exit code. */
async function runScenario(
  name: string,
  scenario: Scenario,
  context: Parameters<Scenario>[0],
  json: boolean,
): Promise<number> {
  let outcome: ScenarioOutcome;
  try {
    outcome = await scenario(context);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`soak ${name}: FAILED: ${message}`);
    if (json) console.log(JSON.stringify({ scenario: name, passed: false, error: message }));
    if (error instanceof PhaseError) return error.kind === "deadline" ? EXIT_DEADLINE : EXIT_PHASE_FAILED;
    console.error(error instanceof Error ? error.stack : "");
    return EXIT_PHASE_FAILED;
  }
  for (const line of outcome.figures) console.error(`soak ${name}: ${line}`);
  if (outcome.failures.length === 0) console.error(`soak ${name}: passed`);
  for (const failure of outcome.failures) console.error(`soak ${name}: FAILED: ${failure}`);
  const passed = outcome.failures.length === 0;
  if (json) {
    console.log(
      JSON.stringify({ scenario: name, passed, failures: outcome.failures, report: outcome.report }),
    );
  }
  return passed ? 0 : outcome.failureExitCode ?? 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`soak: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(error instanceof PhaseError && error.kind === "deadline" ? EXIT_DEADLINE : EXIT_PHASE_FAILED);
  }
}
