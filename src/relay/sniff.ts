/**
 * Reading a connection's first bytes until a pure parser gives its verdict, within the handshake deadlines:
 * the first byte within 15 s, each read extends the deadline by 5 s, 30 s at most (§8.3). Only this
 * phase is bounded; an established stream is not. A connection may be sniffed more than once (a PROXY header,
 * then the ClientHello behind it): the sniffs share one {@linkcode HandshakeDeadline}, so the limits hold for
 * the whole handshake, and bytes a sniff read past its verdict are carried into the next.
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
 * The deadline of one connection's handshake: the next read must return by `firstByteMs` after the start,
 * then by `extendPerReadMs` after the last read that returned, and never later than `totalMs` after the
 * start.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandshakeDeadline } from "./sniff.ts";
 * const deadline = new HandshakeDeadline({ firstByteMs: 15_000, extendPerReadMs: 5_000, totalMs: 30_000 }, 0);
 * assert.equal(deadline.remainingMs(1_000), 14_000);
 * deadline.readReturned(27_000);
 * assert.equal(deadline.remainingMs(27_000), 3_000, "capped by the total");
 * ```
 */
export class HandshakeDeadline {
  readonly #endMs: number;
  readonly #extendPerReadMs: number;
  #nextReadByMs: number;

  constructor(deadlines: SniffDeadlines, startedMs: number) {
    this.#endMs = startedMs + deadlines.totalMs;
    this.#extendPerReadMs = deadlines.extendPerReadMs;
    this.#nextReadByMs = startedMs + deadlines.firstByteMs;
  }

  /** Milliseconds the next read may take from `nowMs`; zero or less: the deadline has passed. */
  remainingMs(nowMs: number): number {
    return Math.min(this.#nextReadByMs, this.#endMs) - nowMs;
  }

  /** A read returned at `nowMs`: the next one has `extendPerReadMs` from then. */
  readReturned(nowMs: number): void {
    this.#nextReadByMs = nowMs + this.#extendPerReadMs;
  }
}

/** How one sniff reads: against which deadline, and from which bytes already read. */
export interface SniffOptions {
  readonly deadline: HandshakeDeadline;
  /** Bytes an earlier sniff of the same connection read past its verdict: parsed before anything is read. */
  readonly carried?: Uint8Array;
}

/**
 * Reads from `conn` and asks `parse` about all bytes so far after every read (and first about the carried
 * bytes, if any), until it returns something other than `incomplete`. At end of stream it asks once more with
 * `atEof`, so the parser can say `truncated`. `maxBytes` is the parser's own cap: a buffer filled without a
 * verdict gives the parser's verdict at the cap.
 */
export async function sniff<V extends { kind: string }>(
  conn: Deno.Conn,
  parse: (bytes: Uint8Array, atEof: boolean) => V,
  maxBytes: number,
  options: SniffOptions,
): Promise<SniffOutcome<V>> {
  const { deadline } = options;
  const carried = options.carried?.subarray(0, maxBytes + 1) ?? new Uint8Array();
  let buffer = new Uint8Array(Math.max(carried.length, Math.min(4096, maxBytes + 1)));
  buffer.set(carried);
  let length = carried.length;
  if (length > 0) {
    const verdict = parse(buffer.subarray(0, length), false);
    if (verdict.kind !== "incomplete") return { kind: "verdict", verdict, bytes: buffer.subarray(0, length) };
  }
  for (;;) {
    if (length === buffer.length) {
      const grown = new Uint8Array(Math.min(buffer.length * 2, maxBytes + 1));
      grown.set(buffer);
      buffer = grown;
    }
    const waitMs = deadline.remainingMs(Date.now());
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
    deadline.readReturned(Date.now());
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
