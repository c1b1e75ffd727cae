/**
 * Reading a connection's first bytes until a pure parser gives its verdict, within the handshake deadlines:
 * the first byte within 15 s, each read extends the deadline by 5 s, 30 s at most (§5.2, lesson 9). Only this
 * phase is bounded; an established stream is not.
 *
 * @module
 */

/** Deadlines of the handshake phase, in milliseconds. */
export interface SniffDeadlines {
  readonly firstByteMs: number;
  readonly extendPerReadMs: number;
  readonly totalMs: number;
}

/** How sniffing ended. `bytes` are exactly the bytes read, to be forwarded unchanged. */
export type SniffOutcome<V> =
  | { readonly kind: "verdict"; readonly verdict: V; readonly bytes: Uint8Array }
  | { readonly kind: "timeout"; readonly bytes: Uint8Array }
  | { readonly kind: "failed"; readonly error: string };

/**
 * Reads from `conn` and asks `parse` about all bytes so far after every read, until it returns something
 * other than `incomplete`. At end of stream it asks once more with `atEof`, so the parser can say `truncated`.
 * `maxBytes` is the parser's own cap: a buffer filled without a verdict gives the parser's verdict at the cap.
 */
export async function sniff<V extends { kind: string }>(
  conn: Deno.Conn,
  parse: (bytes: Uint8Array, atEof: boolean) => V,
  maxBytes: number,
  deadlines: SniffDeadlines,
): Promise<SniffOutcome<V>> {
  const startMs = Date.now();
  let buffer = new Uint8Array(Math.min(4096, maxBytes + 1));
  let length = 0;
  let deadlineMs = startMs + deadlines.firstByteMs;
  for (;;) {
    if (length === buffer.length) {
      const grown = new Uint8Array(Math.min(buffer.length * 2, maxBytes + 1));
      grown.set(buffer);
      buffer = grown;
    }
    const waitMs = Math.min(deadlineMs, startMs + deadlines.totalMs) - Date.now();
    let n: number | null | "timeout";
    try {
      n = waitMs <= 0 ? "timeout" : await readWithin(conn, buffer.subarray(length), waitMs);
    } catch (error) {
      return { kind: "failed", error: error instanceof Error ? error.message : String(error) };
    }
    if (n === "timeout") return { kind: "timeout", bytes: buffer.subarray(0, length) };
    if (n !== null) length += n;
    const bytes = buffer.subarray(0, length);
    const verdict = parse(bytes, n === null);
    if (verdict.kind !== "incomplete") return { kind: "verdict", verdict, bytes };
    if (n === null) return { kind: "failed", error: "parser gave no verdict at end of stream" };
    deadlineMs = Date.now() + deadlines.extendPerReadMs;
  }
}

/** One read that gives up after `waitMs`; the abandoned read fails quietly when the caller closes `conn`. */
function readWithin(conn: Deno.Conn, into: Uint8Array, waitMs: number): Promise<number | null | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const read = conn.read(into);
  read.catch(() => {});
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), waitMs)));
  return Promise.race([read, timeout]).finally(() => clearTimeout(timer));
}
