/**
 * Route keys to weighted pools: exact names first, then single-label wildcards (`*.example.com` serves
 * `a.example.com` but not `a.b.example.com`), as in the original (docs/protocol.md §8.2). An emptied pool is
 * deleted at once, so it can never hide a wildcard that still has members (the original kept empty pools).
 * Pure.
 *
 * @module
 */

import { type HostnameClaim, wildcardSuffixOf } from "../hostnames/hostname.ts";
import { WeightedPool } from "./weighted_pool.ts";

/**
 * Members (backend sessions, peer links) by the names they claimed.
 *
 * @example
 * ```ts
 * import { RouteTable } from "./route_table.ts";
 * const table = new RouteTable<string>();
 * table.add({ kind: "wildcard", suffix: "example.com" }, "wild", 1);
 * table.add({ kind: "exact", name: "a.example.com" }, "exact", 1);
 * table.pick("a.example.com"); // "exact"
 * table.pick("b.example.com"); // "wild"
 * ```
 */
export class RouteTable<T> {
  readonly #exact = new Map<string, WeightedPool<T>>();
  readonly #wildcard = new Map<string, WeightedPool<T>>();

  /** Adds a member under a claim with a weight. */
  add(claim: HostnameClaim, member: T, weight: number): void {
    const [pools, key] = this.#locate(claim);
    let pool = pools.get(key);
    if (pool === undefined) {
      pool = new WeightedPool<T>();
      pools.set(key, pool);
    }
    pool.add(member, weight);
  }

  /** Removes a member from a claim's pool, deleting the pool when it empties. */
  remove(claim: HostnameClaim, member: T): void {
    const [pools, key] = this.#locate(claim);
    const pool = pools.get(key);
    if (pool === undefined) return;
    pool.remove(member);
    if (pool.size === 0) pools.delete(key);
  }

  /**
   * Picks a member for a normalised hostname: from the exact pool if any member qualifies, else from the
   * wildcard pool of its parent domain.
   */
  pick(hostname: string, accept?: (member: T) => boolean): T | undefined {
    const exact = this.#exact.get(hostname)?.pick(accept);
    if (exact !== undefined) return exact;
    const suffix = wildcardSuffixOf(hostname);
    return suffix === null ? undefined : this.#wildcard.get(suffix)?.pick(accept);
  }

  /** Whether any member serves this name, exactly or through a wildcard (pools never stay empty). */
  has(hostname: string): boolean {
    if (this.#exact.has(hostname)) return true;
    const suffix = wildcardSuffixOf(hostname);
    return suffix !== null && this.#wildcard.has(suffix);
  }

  /** Whether any member serves exactly this name (not through a wildcard). */
  hasExact(hostname: string): boolean {
    return this.#exact.has(hostname);
  }

  /** Every route key with at least one member: names and `*.suffix` wildcards, sorted. */
  keys(): string[] {
    return [...this.#exact.keys(), ...[...this.#wildcard.keys()].map((suffix) => `*.${suffix}`)].sort();
  }

  #locate(claim: HostnameClaim): [Map<string, WeightedPool<T>>, string] {
    return claim.kind === "exact" ? [this.#exact, claim.name] : [this.#wildcard, claim.suffix];
  }
}
