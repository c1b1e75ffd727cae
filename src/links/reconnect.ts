/**
 * Reconnect pacing shared by the agent's hub sessions and the mesh's peer links.
 *
 * @module
 */

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential from `initialMs`, capped at `maxMs`, with
 * "equal jitter" (half fixed, half random), so that agents that lost the same node do not all come back in
 * the same instant (no thundering herd after a node restart).
 *
 * @example
 * ```ts
 * import { reconnectDelayMs } from "./reconnect.ts";
 * reconnectDelayMs(3, 1_000, 60_000, () => 0); // 4000: half of 8 s, the random half being 0
 * ```
 */
export function reconnectDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random = Math.random,
): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** Waits `ms`, or less if `signal` aborts first. Never rejects. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
