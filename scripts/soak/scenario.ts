/**
 * What every soak scenario shares: the sizes it is given, and what it hands back: its figures in words, the
 * checks that failed, and its report for `--json`.
 *
 * @module
 */

import type { Phases } from "../bench/phase.ts";

/** The sizes a scenario is run with; each scenario takes its own defaults for what is absent. */
export interface ScenarioSizes {
  /** `--connections`: the scenario's main count (idle, flood or slow connections). */
  readonly connections?: number;
  /** `--duration`: how long the scenario's load lasts, in seconds. */
  readonly durationSeconds?: number;
  /** `--open-files`: the node's open-file limit, for `fd-exhaustion`. */
  readonly openFiles?: number;
}

/** What a scenario is given. */
export interface ScenarioContext {
  readonly sizes: ScenarioSizes;
  readonly phases: Phases;
  readonly log: (line: string) => void;
}

/** What a scenario found. */
export interface ScenarioOutcome {
  readonly scenario: string;
  /** The figures, one line each, printed at the end. */
  readonly figures: readonly string[];
  /** Each check that failed, in one sentence; empty when the scenario passed. */
  readonly failures: readonly string[];
  /** The exit code when a check failed: 1 unless the scenario says otherwise. */
  readonly failureExitCode?: number;
  /** Everything measured, for `--json`. */
  readonly report: unknown;
}

/** A scenario: runs against a system it starts and stops itself. */
export type Scenario = (context: ScenarioContext) => Promise<ScenarioOutcome>;
