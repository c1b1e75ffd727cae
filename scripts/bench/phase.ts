/**
 * Deadlines for the steps of the benchmark and the soak. Every step runs as a named phase with a deadline
 * scaled to its size; a phase that misses it, or fails, ends the program with one line that names the phase,
 * says how far it got and in what state the child processes are, for example
 *
 * ```text
 * phase "idle connections, nexus, 1000": 412 of 1000 connections established after 60 s; node alive,
 * 1,030 descriptors; agent alive, 980 descriptors
 * ```
 *
 * instead of waiting forever for a proxy that stopped answering.
 *
 * @module
 */

import { openDescriptors } from "../../tests/helpers/processes.ts";

/** A child process whose state a failed phase reports. */
export interface WatchedProcess {
  readonly name: string;
  readonly pid: number;
  /** The exit status once it has exited, else null. */
  readonly exitStatus: Deno.CommandStatus | null;
}

/** What a phase's work sees. */
export interface PhaseContext {
  /** How far the work got, in words ("412 of 1000 connections established"); said when the phase fails. */
  progress: string;
  /** Aborted when the deadline passes, so loops of the work can stop. */
  readonly signal: AbortSignal;
}

/** A phase that missed its deadline (`kind: "deadline"`) or threw (`kind: "failed"`). */
export class PhaseError extends Error {
  readonly phase: string;
  readonly kind: "deadline" | "failed";

  constructor(phase: string, kind: "deadline" | "failed", message: string) {
    super(message);
    this.name = "PhaseError";
    this.phase = phase;
    this.kind = kind;
  }
}

/** The exit code of a program whose phase missed its deadline, the same for the benchmark and the soak. */
export const EXIT_DEADLINE = 5;

/** How often a phase with a stall limit looks at its progress. */
const STALL_CHECK_MS = 250;

const count = (n: number) => n.toLocaleString("en-US");
/** "39 s", "0.05 s": whole seconds from 10 s on, where fractions are noise. */
const seconds = (ms: number) => `${ms >= 10_000 ? Math.round(ms / 1000) : Number((ms / 1000).toFixed(3))} s`;

/** "node alive, 1,030 descriptors; agent exited with code 1", one clause per process. */
export async function describeProcesses(processes: readonly WatchedProcess[]): Promise<string> {
  const clauses = await Promise.all(processes.map(async (process) => {
    const status = process.exitStatus;
    if (status !== null) {
      return `${process.name} exited with ${
        status.signal === null ? `code ${status.code}` : `signal ${status.signal}`
      }`;
    }
    const descriptors = await openDescriptors(process.pid).then(count, () => "unknown");
    return `${process.name} alive, ${descriptors} descriptors`;
  }));
  return clauses.length === 0 ? "no child processes" : clauses.join("; ");
}

/** Runs phases one at a time, each within its deadline. */
export class Phases {
  readonly #watched: () => readonly WatchedProcess[];
  readonly #overrideMs: number | null;
  readonly #log: (line: string) => void;

  /**
   * `watched` lists the processes to describe when a phase fails; `timeoutOverrideSeconds` replaces every
   * phase's own deadline (the `--phase-timeout` flag); `log` hears each phase begin.
   */
  constructor(options: {
    watched: () => readonly WatchedProcess[];
    timeoutOverrideSeconds?: number;
    log?: (line: string) => void;
  }) {
    this.#watched = options.watched;
    this.#overrideMs = options.timeoutOverrideSeconds === undefined
      ? null
      : options.timeoutOverrideSeconds * 1000;
    this.#log = options.log ?? (() => {});
  }

  /**
   * Runs `work` as the phase `name`; rejects with a {@linkcode PhaseError} when it fails or runs too long.
   * With `stallSeconds`, the phase also ends early once its progress has not changed for that long: a count
   * that stopped moving will not move again before the deadline.
   */
  async run<T>(
    name: string,
    timeoutSeconds: number,
    work: (context: PhaseContext) => Promise<T>,
    options: { stallSeconds?: number } = {},
  ): Promise<T> {
    const deadlineMs = this.#overrideMs ?? timeoutSeconds * 1000;
    const controller = new AbortController();
    const context: PhaseContext = { progress: "", signal: controller.signal };
    const startedMs = performance.now();
    this.#log(`phase "${name}" (deadline ${seconds(deadlineMs)})`);
    const timers: Array<ReturnType<typeof setTimeout>> = [];
    const expired = new Promise<{ stalledMs: number | null }>((resolve) => {
      timers.push(setTimeout(() => resolve({ stalledMs: null }), deadlineMs));
      if (options.stallSeconds === undefined) return;
      let seen = context.progress;
      let changedMs = startedMs;
      timers.push(setInterval(() => {
        if (context.progress !== seen) {
          seen = context.progress;
          changedMs = performance.now();
        } else if (performance.now() - changedMs >= options.stallSeconds! * 1000) {
          resolve({ stalledMs: performance.now() - changedMs });
        }
      }, STALL_CHECK_MS));
    });
    let outcome: { value: T } | { stalledMs: number | null };
    try {
      outcome = await Promise.race([work(context).then((value) => ({ value })), expired]);
    } catch (error) {
      controller.abort();
      const message = error instanceof Error ? error.message : String(error);
      throw new PhaseError(
        name,
        "failed",
        `phase "${name}" failed after ${seconds(performance.now() - startedMs)}: ${message}${
          context.progress === "" ? "" : ` (${context.progress})`
        }; ${await describeProcesses(this.#watched())}`,
      );
    } finally {
      for (const timer of timers) clearTimeout(timer);
    }
    if ("stalledMs" in outcome) {
      controller.abort();
      const progress = context.progress === "" ? "not finished" : context.progress;
      const when = outcome.stalledMs === null
        ? `after ${seconds(deadlineMs)}`
        : `and no progress for ${seconds(outcome.stalledMs)}, after ${
          seconds(performance.now() - startedMs)
        } of its ${seconds(deadlineMs)}`;
      throw new PhaseError(
        name,
        "deadline",
        `phase "${name}": ${progress} ${when}; ${await describeProcesses(this.#watched())}`,
      );
    }
    return outcome.value;
  }
}
