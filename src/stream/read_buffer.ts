/**
 * An adaptively sized read buffer. A pending read pins its buffer, so an idle connection should hold a small
 * one (1,000 idle connections with 64 KiB buffers measured ~114 KiB each), while a busy one should read big
 * chunks: the buffer grows when reads fill it and shrinks back when they come in small.
 *
 * @module
 */

/**
 * Smallest buffer: what every idle connection pins while its read is pending. A bare Deno socket held with a
 * pending read measured 8.6 KiB of RSS with a 2 KiB buffer, 6.1 KiB with 256 B and 5.9 KiB with 64 B (10,000
 * sockets); 512 B keeps most of that saving and still takes a small request in one read. Full reads grow it
 * fourfold, so a transfer reaches the largest size after four reads.
 */
export const MIN_READ_BUFFER_BYTES = 512;
/**
 * Largest buffer: one read fills four data frames, sent in one turn. Against one frame per read (32 KiB) it
 * measured 13% less CPU per GiB at node and agent together (docs/benchmarks.md).
 */
export const MAX_READ_BUFFER_BYTES = 128 * 1024;

/** A reusable read buffer whose size follows the traffic. */
export class AdaptiveReadBuffer {
  #buffer: Uint8Array;
  readonly #maxBytes: number;

  /** @param maxBytes the largest it grows to (default 128 KiB) */
  constructor(maxBytes = MAX_READ_BUFFER_BYTES) {
    this.#buffer = new Uint8Array(MIN_READ_BUFFER_BYTES);
    this.#maxBytes = maxBytes;
  }

  /** The buffer to pass to the next read. */
  get buffer(): Uint8Array {
    return this.#buffer;
  }

  /**
   * Adjusts the size after a read of `bytesRead` bytes: a full read quadruples it (up to the maximum), a read
   * that used less than an eighth of a grown buffer drops it back to the minimum.
   */
  update(bytesRead: number): void {
    const size = this.#buffer.length;
    if (bytesRead === size && size < this.#maxBytes) {
      this.#buffer = new Uint8Array(Math.min(size * 4, this.#maxBytes));
    } else if (size > MIN_READ_BUFFER_BYTES && bytesRead < size / 8) {
      this.#buffer = new Uint8Array(MIN_READ_BUFFER_BYTES);
    }
  }
}
