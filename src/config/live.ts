/**
 * One mechanism for settings that a reload may change while components run: a component that reads a
 * setting at use time (each new connection, each sweep) holds a {@linkcode Live} instead of a copy, and the
 * node or agent replaces its value when a reload applies. Components given a plain value wrap it, so tests
 * and callers that never reload are unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Live } from "./live.ts";
 * const limits = Live.of({ maxConnections: 10 });
 * const seen = limits; // what a component keeps
 * limits.set({ maxConnections: 20 });
 * assert.equal(seen.current.maxConnections, 20);
 * ```
 *
 * @module
 */

/** A setting whose value may be replaced while it is in use; readers see the new value from then on. */
export class Live<T> {
  #current: T;

  constructor(initial: T) {
    this.#current = initial;
  }

  /** `value` itself when it is already live, else a holder of it. */
  static of<T>(value: T | Live<T>): Live<T> {
    return value instanceof Live ? value : new Live(value);
  }

  /** The value in force. */
  get current(): T {
    return this.#current;
  }

  /** Puts `next` in force for every later read. */
  set(next: T): void {
    this.#current = next;
  }
}
