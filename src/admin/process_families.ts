/**
 * The metric families a node and an agent both expose: what runs (version, start, memory), whether it is ready
 * or draining, and how often a stream's sender waited for credits.
 *
 * @module
 */

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
