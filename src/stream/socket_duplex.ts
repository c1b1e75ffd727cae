/**
 * A TCP (or TLS) socket as a {@linkcode Duplex}: a manual read loop into a reused, adaptively sized buffer,
 * which measured 20–60% faster than `readable.pipeTo` and far cheaper in CPU.
 *
 * @module
 */

import { type Duplex, PeerGoneError } from "./duplex.ts";
import { AdaptiveReadBuffer } from "./read_buffer.ts";

/** How long a graceful close waits for the peer's FIN after ours, so the kernel never resets unsent data. */
const CLOSE_LINGER_MS = 2_000;

/** A socket as a duplex. */
export class SocketDuplex implements Duplex {
  readonly label: string;
  readonly unsignalledEndTimeoutMs = null;
  readonly #conn: Deno.Conn;
  readonly #readBuffer: AdaptiveReadBuffer;
  #sawEof = false;
  #wroteEof = false;
  #closed = false;

  /** `maxReadBytes`: the largest read (default 128 KiB; the buffer starts small and grows with the traffic). */
  constructor(conn: Deno.Conn, label: string, options: { maxReadBytes?: number } = {}) {
    this.#conn = conn;
    this.label = label;
    this.#readBuffer = new AdaptiveReadBuffer(options.maxReadBytes);
  }

  async read(): Promise<Uint8Array | null> {
    const buffer = this.#readBuffer.buffer;
    const n = await this.#conn.read(buffer);
    if (n === null) {
      this.#sawEof = true;
      return null;
    }
    this.#readBuffer.update(n);
    return buffer.subarray(0, n);
  }

  async write(chunk: Uint8Array): Promise<void> {
    try {
      let written = 0;
      while (written < chunk.length) written += await this.#conn.write(chunk.subarray(written));
    } catch (error) {
      // The peer reset or closed: nothing written later can arrive either.
      if (error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset) {
        throw new PeerGoneError(this.label);
      }
      throw error;
    }
  }

  async closeWrite(): Promise<void> {
    if (this.#wroteEof || this.#closed) return;
    this.#wroteEof = true;
    try {
      await this.#conn.closeWrite();
    } catch {
      // Already reset by the peer: there is nobody left to tell.
    }
  }

  async close(_reason: string, options?: { graceful?: boolean }): Promise<void> {
    if (this.#closed) return;
    if (options?.graceful && !this.#sawEof) await this.#linger();
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closing twice or after a reset is harmless.
    }
  }

  /** Sends our FIN, then reads and drops what the peer still sends until its FIN or the linger time. */
  async #linger(): Promise<void> {
    await this.closeWrite();
    const timer = setTimeout(() => {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed.
      }
    }, CLOSE_LINGER_MS);
    try {
      const scratch = new Uint8Array(1024);
      while (!this.#closed && (await this.#conn.read(scratch)) !== null) {
        // Discard: the other side of this connection is gone.
      }
    } catch {
      // Reset or closed by the timer: either way we are done.
    } finally {
      clearTimeout(timer);
    }
  }
}
