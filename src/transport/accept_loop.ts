/**
 * The accept loop every listener of a node runs: it never ends on an error of `accept` (out of descriptors,
 * say), it backs off while the errors last and recovers by itself once the cause is gone.
 *
 * @module
 */

/** First pause after a failed accept; it doubles while accepts keep failing. */
const FIRST_BACKOFF_MS = 5;
/** Longest pause between attempts while accepts keep failing. */
const MAX_BACKOFF_MS = 1_000;

/**
 * Accepts connections from `listener` and hands each to `onConnection` until the listener is closed. A failed
 * accept is reported to `onError` with the pause before the next attempt (5 ms, doubling to 1 s while failures
 * last, back to nothing after a success), so a node out of descriptors neither spins nor stops listening.
 */
export async function acceptLoop<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  onConnection: (conn: C) => void,
  onError: (error: unknown, retryInMs: number) => void,
): Promise<void> {
  let backoffMs = 0;
  for (;;) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) return;
      backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs === 0 ? FIRST_BACKOFF_MS : backoffMs * 2);
      onError(error, backoffMs);
      await new Promise((resolve) => setTimeout(resolve, backoffMs));
      continue;
    }
    backoffMs = 0;
    onConnection(conn);
  }
}
