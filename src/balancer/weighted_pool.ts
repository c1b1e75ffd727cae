/**
 * Smooth weighted round robin (the nginx algorithm): weights 5:1:1 give `a a b a c a a` rather than five
 * `a`s in a row, and over any full cycle each member is picked exactly in proportion to its weight. Pure.
 *
 * @module
 */

/**
 * A pool of members picked in weighted round robin. Members join and leave without disturbing the others'
 * share: a leaving member's accumulated credit is simply dropped.
 *
 * @example
 * ```ts
 * import { WeightedPool } from "./weighted_pool.ts";
 * const pool = new WeightedPool<string>();
 * pool.add("a", 2);
 * pool.add("b", 1);
 * [pool.pick(), pool.pick(), pool.pick()]; // ["a", "b", "a"]
 * ```
 */
export class WeightedPool<T> {
  readonly #members: Array<{ member: T; weight: number; current: number }> = [];
  #totalWeight = 0;

  /** Number of members. */
  get size(): number {
    return this.#members.length;
  }

  /** The members, in joining order. */
  members(): T[] {
    return this.#members.map((entry) => entry.member);
  }

  /** Adds a member (weight ≥ 1, integer); adding a member twice updates its weight. */
  add(member: T, weight: number): void {
    if (!Number.isInteger(weight) || weight < 1) {
      throw new RangeError(`Weight must be an integer ≥ 1, got ${weight}`);
    }
    const existing = this.#members.find((entry) => entry.member === member);
    if (existing) {
      this.#totalWeight += weight - existing.weight;
      existing.weight = weight;
      return;
    }
    this.#members.push({ member, weight, current: 0 });
    this.#totalWeight += weight;
  }

  /** Removes a member; returns whether it was there. */
  remove(member: T): boolean {
    const index = this.#members.findIndex((entry) => entry.member === member);
    if (index < 0) return false;
    this.#totalWeight -= this.#members[index].weight;
    this.#members.splice(index, 1);
    return true;
  }

  /** Picks the next member, or undefined for an empty pool. `accept` can skip members (e.g. at capacity). */
  pick(accept?: (member: T) => boolean): T | undefined {
    let best: { member: T; weight: number; current: number } | undefined;
    let eligibleWeight = 0;
    for (const entry of this.#members) {
      if (accept !== undefined && !accept(entry.member)) continue;
      entry.current += entry.weight;
      eligibleWeight += entry.weight;
      if (best === undefined || entry.current > best.current) best = entry;
    }
    if (best === undefined) return undefined;
    best.current -= eligibleWeight;
    return best.member;
  }
}
