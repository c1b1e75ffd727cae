/**
 * A reload, the same for node and agent (`SIGHUP`, `POST /reload`): read the config file again; an invalid
 * one is refused whole, each problem logged as `nexus check` prints it, and the config in force stays; a
 * valid one is compared key by key with the config in force ({@linkcode planReload}), the keys that need a
 * restart refused with why, and the rest handed to the process to apply through the components that own
 * them; each change that took effect is logged on a line of its own, and each that did not with why. Reloads
 * run one at a time, in the order they were asked for.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { type KeySpec, planReload, type ReloadPlan } from "./reload_plan.ts";
import { ConfigError } from "./yaml_reader.ts";

/** What one reload did, for the log, `POST /reload`'s answer, metrics and status. */
export interface ReloadReport {
  /** `ok`: the new config is in force (but for keys that need a restart); `failed`: refused or partly applied. */
  readonly result: "ok" | "failed";
  /** What asked for it: `SIGHUP` or `POST /reload`. */
  readonly trigger: string;
  /** When it finished (`Date.now()`). */
  readonly atMs: number;
  /** Keys that took effect (a key that could not be applied is not among them). */
  readonly applied: readonly string[];
  /** Keys refused because they need a restart, each with why. */
  readonly restartNeeded: readonly string[];
  /** Why the reload failed: each problem of an invalid config, or each part that could not be applied. */
  readonly problems: readonly string[];
}

/** What applying a plan did: the config now in force, and the parts that could not be applied. */
export interface Applied<C> {
  /** The plan's effective config, with the old setting of each key that could not be applied. */
  readonly inForce: C;
  readonly problems: readonly string[];
}

/** Reloads of one process. */
export class Reloader<C> {
  readonly #read: () => C;
  readonly #specs: readonly KeySpec<C>[];
  readonly #apply: (plan: ReloadPlan<C>) => Promise<Applied<C>>;
  readonly #log: Logger;
  #inForce: C;
  #queue: Promise<unknown> = Promise.resolve();
  #counts = { ok: 0, failed: 0 };
  #last: ReloadReport | null = null;
  #lastOkMs: number | null = null;

  constructor(options: {
    readonly inForce: C;
    /** Reads and validates the config file; throws `ConfigError` listing every problem. */
    readonly read: () => C;
    readonly specs: readonly KeySpec<C>[];
    readonly apply: (plan: ReloadPlan<C>) => Promise<Applied<C>>;
    readonly log: Logger;
  }) {
    this.#inForce = options.inForce;
    this.#read = options.read;
    this.#specs = options.specs;
    this.#apply = options.apply;
    this.#log = options.log;
  }

  /** The config in force. */
  get inForce(): C {
    return this.#inForce;
  }

  /** Reloads by result so far. */
  get counts(): { readonly ok: number; readonly failed: number } {
    return this.#counts;
  }

  /** The last reload, null before the first. */
  get last(): ReloadReport | null {
    return this.#last;
  }

  /** When a reload last succeeded (`Date.now()`), null when none has. */
  get lastOkMs(): number | null {
    return this.#lastOkMs;
  }

  /** Reloads after any reload still running; never throws. */
  reload(trigger: string): Promise<ReloadReport> {
    // A bug in planning or logging must not become an unhandled rejection of a SIGHUP: it is a failed reload.
    const report = this.#queue.then(() => this.#reload(trigger)).catch((error: unknown) => {
      this.#log.error("reload failed: internal error", { trigger, error: String(error) });
      return this.#finish({
        trigger,
        applied: [],
        restartNeeded: [],
        problems: [`internal error: ${error}`],
      });
    });
    this.#queue = report.then(() => {});
    return report;
  }

  async #reload(trigger: string): Promise<ReloadReport> {
    this.#log.info("reloading the configuration", { trigger });
    let next: C;
    try {
      next = this.#read();
    } catch (error) {
      const problems = error instanceof ConfigError
        ? error.message.split("\n")
        : [error instanceof Error ? error.message : String(error)];
      for (const problem of problems) this.#log.error("reload refused: invalid configuration", { problem });
      this.#log.error("reload refused: the configuration in force stays", {
        trigger,
        problems: problems.length,
      });
      return this.#finish({ trigger, applied: [], restartNeeded: [], problems });
    }
    const old = this.#inForce;
    const plan = planReload(this.#specs, old, next);
    for (const change of plan.restartNeeded) {
      this.#log.warn("not applied", {
        key: change.key,
        from: change.from,
        to: change.to,
        why: change.restartNeeded ?? "",
      });
    }
    let applied: Applied<C>;
    try {
      applied = await this.#apply(plan);
    } catch (error) {
      // A bug, not a bad config: say so, and keep what was in force.
      applied = { inForce: old, problems: [`internal error: ${String(error)}`] };
    }
    this.#inForce = applied.inForce;
    // What took effect is what differs in the config now in force: a part that failed kept its old setting.
    const tookEffect = planReload(this.#specs, old, applied.inForce).live;
    const effective = new Set(tookEffect.map((change) => change.key));
    for (const change of tookEffect) {
      this.#log.info("changed", { key: change.key, from: change.from, to: change.to });
    }
    for (const change of plan.live) {
      if (effective.has(change.key)) continue;
      const own = applied.problems.filter((problem) => problem.startsWith(`${change.key}:`));
      this.#log.error("not applied", {
        key: change.key,
        from: change.from,
        to: change.to,
        why: (own.length > 0 ? own : applied.problems).join("; "),
      });
    }
    for (const problem of applied.problems) {
      this.#log.error("a change could not be applied", { problem });
    }
    this.#log.info(applied.problems.length === 0 ? "reload done" : "reload done with problems", {
      trigger,
      changed: tookEffect.length,
      needs_restart: plan.restartNeeded.length,
      problems: applied.problems.length,
    });
    return this.#finish({
      trigger,
      applied: tookEffect.map((change) => change.key),
      restartNeeded: plan.restartNeeded.map((change) => `${change.key}: ${change.restartNeeded}`),
      problems: applied.problems,
    });
  }

  #finish(report: Omit<ReloadReport, "result" | "atMs">): ReloadReport {
    const result = report.problems.length === 0 ? "ok" : "failed";
    const atMs = Date.now();
    this.#counts = { ...this.#counts, [result]: this.#counts[result] + 1 };
    if (result === "ok") this.#lastOkMs = atMs;
    this.#last = { ...report, result, atMs };
    return this.#last;
  }
}
