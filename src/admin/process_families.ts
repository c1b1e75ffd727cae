/**
 * The metric families a node and an agent both expose: what runs (version, start, memory), whether it is ready
 * or draining, and how often a stream's sender waited for credits.
 *
 * @module
 */

import type { ReloadReport } from "../config/reloader.ts";
import type { MetricsRegistry } from "../metrics/registry.ts";
import { VERSION } from "../version.ts";

/** What the shared families read of the process. */
export interface ProcessState {
  /** `node` or `agent`, for the help texts. */
  readonly kind: "node" | "agent";
  readonly startedMs: number;
  draining(): boolean;
  ready(): boolean;
  /** How often its senders waited for credits (its `WindowStallCounter`). */
  windowStalls(): number;
}

/** Registers the shared families on `registry`, first, in this order. */
export function registerProcessFamilies(registry: MetricsRegistry, process: ProcessState): void {
  registry.gauge("nexus_build_info", "The running version; always 1.", ["version", "deno"], () => [
    [{ version: VERSION, deno: Deno.version.deno }, 1],
  ]);
  registry.gauge(
    "process_start_time_seconds",
    `When the ${process.kind} started, in Unix seconds.`,
    [],
    () => [
      [{}, Math.floor(process.startedMs / 1000)],
    ],
  );
  registry.gauge("process_resident_memory_bytes", "Resident memory of the process.", [], () => [
    [{}, Deno.memoryUsage().rss],
  ]);
  registry.gauge(
    "nexus_draining",
    `1 once the ${process.kind} is shutting down (and so not ready), else 0.`,
    [],
    () => [[{}, process.draining() ? 1 : 0]],
  );
  registry.gauge(
    "nexus_ready",
    "1 while /readyz answers 200, else 0.",
    [],
    () => [[{}, process.ready() ? 1 : 0]],
  );
  registry.countedBy(
    "nexus_stream_window_stalls_total",
    "Times a stream's sender found its credit window spent and waited: a slow reader on the other side.",
    [],
    () => [[{}, process.windowStalls()]],
  );
}

/** What the reload families read: a process's {@linkcode Reloader}. */
export interface ReloadState {
  readonly counts: { readonly ok: number; readonly failed: number };
  readonly lastOkMs: number | null;
  readonly last: ReloadReport | null;
}

/** Registers `nexus_config_reloads_total{result}` and the time of the last successful reload. */
export function registerReloadFamilies(registry: MetricsRegistry, reloads: () => ReloadState | null): void {
  registry.countedBy(
    "nexus_config_reloads_total",
    "Reloads of the config file (SIGHUP, POST /reload) by result: ok, or failed (refused or partly applied).",
    ["result"],
    () => {
      const counts = reloads()?.counts ?? { ok: 0, failed: 0 };
      return [[{ result: "ok" }, counts.ok], [{ result: "failed" }, counts.failed]];
    },
  );
  registry.gauge(
    "nexus_config_last_reload_success_timestamp_seconds",
    "When the config was last reloaded successfully, in Unix seconds; 0 before the first.",
    [],
    () => [[{}, Math.floor((reloads()?.lastOkMs ?? 0) / 1000)]],
  );
}

/** The `reload` block of `/status`. */
export interface ReloadStatus {
  readonly ok: number;
  readonly failed: number;
  /** When a reload last succeeded (ISO time), null before the first. */
  readonly lastSuccessAt: string | null;
  /** The last reload: when, what asked, its result, and what it changed, refused or could not do. */
  readonly last:
    | (Omit<ReloadReport, "atMs"> & { readonly at: string })
    | null;
}

/** The `reload` block of `/status` from a process's reloads (none: zeros). */
export function reloadStatus(reloads: ReloadState | null): ReloadStatus {
  const last = reloads?.last ?? null;
  const lastOkMs = reloads?.lastOkMs ?? null;
  let lastReport: ReloadStatus["last"] = null;
  if (last !== null) {
    const { atMs, ...rest } = last;
    lastReport = { ...rest, at: new Date(atMs).toISOString() };
  }
  return {
    ok: reloads?.counts.ok ?? 0,
    failed: reloads?.counts.failed ?? 0,
    lastSuccessAt: lastOkMs === null ? null : new Date(lastOkMs).toISOString(),
    last: lastReport,
  };
}
