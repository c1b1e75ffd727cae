/**
 * A full garbage collection once the process goes quiet after a burst of traffic.
 *
 * Why: the data path's buffers die young, but some live long enough to reach V8's old generation, and V8
 * frees dead old objects (and the `ArrayBuffer` memory under them) only at a major collection, which it starts
 * when allocation goes on, not when it stops. A process that goes quiet right after a transfer therefore kept
 * what the transfer left behind: an agent measured 16–20 MiB above its start for as long as it stayed quiet,
 * against 9 MiB once collected. One collection when allocation stops gives that back at once, at the cost of a
 * few tens of milliseconds once per burst (measured figures in README "Memory").
 *
 * It needs V8's `gc()` (`--v8-flags=--expose-gc`, which the release binaries, `deno task nexus` and the
 * container set); without it this does nothing.
 *
 * @module
 */

/** Growth of the heap and of `ArrayBuffer` memory since the last collection that is worth collecting. */
export const BURST_BYTES = 8 * 1024 * 1024;
/** Growth over one interval below which the process counts as quiet. */
export const QUIET_GROWTH_BYTES = 256 * 1024;
/** How often the memory is looked at. */
export const CHECK_INTERVAL_MS = 1_000;

/**
 * The decision, pure: `used` samples, one per interval, go in; `true` comes out when a collection is due
 * (the memory grew by a burst since the last collection, and hardly at all over the last interval).
 */
export class BurstEnd {
  #base: number;
  #last: number;

  constructor(used: number) {
    this.#base = used;
    this.#last = used;
  }

  /** Takes one sample; true when a collection is due now. */
  sample(used: number): boolean {
    const grewLately = used - this.#last;
    this.#last = used;
    // A collection by V8 itself brings `used` down: what is left is the new base.
    if (used < this.#base) this.#base = used;
    return used - this.#base >= BURST_BYTES && grewLately < QUIET_GROWTH_BYTES;
  }

  /** The collection ran: `used` is what survived it. */
  collected(used: number): void {
    this.#base = used;
    this.#last = used;
  }
}

/** Watches memory and collects when a burst has ended; stopped by {@linkcode close}. */
export class QuietCollector {
  readonly #timer: ReturnType<typeof setInterval> | undefined;
  #collections = 0;

  constructor() {
    const collect = exposedGc();
    if (collect === undefined) return;
    const burst = new BurstEnd(usedMemory());
    this.#timer = setInterval(() => {
      if (!burst.sample(usedMemory())) return;
      collect();
      this.#collections += 1;
      burst.collected(usedMemory());
    }, CHECK_INTERVAL_MS);
    Deno.unrefTimer(this.#timer);
  }

  /** Whether it runs (V8's `gc()` is there). */
  get active(): boolean {
    return this.#timer !== undefined;
  }

  /** Collections made so far. */
  get collections(): number {
    return this.#collections;
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/** V8's heap in use plus `ArrayBuffer` memory. */
function usedMemory(): number {
  const { heapUsed, external } = Deno.memoryUsage();
  return heapUsed + external;
}

/**
 * V8's `gc()`, when the process runs with `--expose-gc`: twice, because the memory of dead `ArrayBuffer`s
 * went back only at the second full collection (one alone, called from a timer, freed nothing; both took
 * about 30 ms with a 15 MiB heap).
 */
function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== "function") return undefined;
  return () => {
    gc();
    gc();
  };
}
