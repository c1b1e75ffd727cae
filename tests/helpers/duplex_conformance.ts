/**
 * One suite of stream behaviours that every {@linkcode Duplex} of the data path must show, whatever carries it:
 * ordering, half-close, backpressure and close propagation. Run it against each implementation (a socket, a
 * stream over a hub session, a tunnel over a peer link) with {@linkcode runDuplexConformance}.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Duplex, PeerGoneError } from "../../src/stream/duplex.ts";
import { concat, patternBytes, sha256Hex } from "./services.ts";

/** Two connected ends: what `a` writes, `b` reads, and the other way round. */
export interface DuplexPair {
  readonly a: Duplex;
  readonly b: Duplex;
  /** Tears down whatever carries the pair (sessions, sockets, servers). */
  close(): Promise<void>;
}

/** What an implementation promises about buffering, so the suite can check the bound. */
export interface ConformanceBounds {
  /**
   * Most bytes a writer may get accepted while its reader reads nothing: whatever the carrier buffers (credit
   * windows, kernel socket buffers) plus one chunk in flight.
   */
  readonly maxBufferedBytes: number;
}

/** Reads from `from` until the end, copying every chunk (a chunk may be a view into a reused buffer). */
export async function readToEnd(from: Duplex, limit = 256 * 1024 * 1024): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const chunk = await from.read();
    if (chunk === null) break;
    chunks.push(chunk.slice());
    total += chunk.length;
    if (total > limit) throw new Error(`read more than ${limit} bytes`);
  }
  return concat(...chunks);
}

/** Reads exactly `length` bytes (fails at an early end). */
export async function readExactly(from: Duplex, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let offset = 0;
  while (offset < length) {
    const chunk = await from.read();
    if (chunk === null) throw new Error(`stream ended after ${offset} of ${length} bytes`);
    assert.ok(offset + chunk.length <= length, `read ${offset + chunk.length} bytes, expected ${length}`);
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Writes `bytes` in chunks of varying size (1 byte to 100 KiB), as a real producer would. */
export async function writeInPieces(to: Duplex, bytes: Uint8Array, seed: number): Promise<void> {
  let x = seed | 0 || 1;
  for (let offset = 0; offset < bytes.length;) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const size = 1 + (Math.abs(x) % (100 * 1024));
    const end = Math.min(bytes.length, offset + size);
    await to.write(bytes.subarray(offset, end));
    offset = end;
  }
}

/**
 * Writes `chunkBytes`-sized chunks until `total` or until writes stop completing for `quietMs` (the reader is
 * not reading). Returns how many bytes the writer got accepted and the write still pending, if any. The
 * quiet period only decides when to stop looking: a slow machine stops earlier, with fewer bytes accepted,
 * which still satisfies every bound.
 */
export async function writeUntilHeldBack(
  to: Duplex,
  data: Uint8Array,
  chunkBytes: number,
  quietMs = 300,
): Promise<{ accepted: number; pending: Promise<void> | null }> {
  let accepted = 0;
  for (let offset = 0; offset < data.length; offset += chunkBytes) {
    const write = to.write(data.subarray(offset, Math.min(data.length, offset + chunkBytes)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      write.then(() => "written" as const),
      new Promise<"held">((resolve) => (timer = setTimeout(() => resolve("held"), quietMs))),
    ]);
    clearTimeout(timer);
    if (outcome === "held") return { accepted, pending: write };
    accepted = Math.min(data.length, offset + chunkBytes);
  }
  return { accepted, pending: null };
}

/** Registers the conformance tests for one implementation; `open` makes a fresh pair per test. */
export function runDuplexConformance(
  name: string,
  open: () => Promise<DuplexPair>,
  bounds: ConformanceBounds,
): void {
  const test = (behaviour: string, fn: (pair: DuplexPair) => Promise<void>) =>
    Deno.test(`${name}: ${behaviour}`, async () => {
      const pair = await open();
      try {
        await fn(pair);
      } finally {
        await pair.close();
      }
    });

  test("ordering: bytes arrive in order and byte-exact, both ways at once", async ({ a, b }) => {
    const aToB = patternBytes(3 * 1024 * 1024 + 17, 11);
    const bToA = patternBytes(2 * 1024 * 1024 + 5, 12);
    const [atB, atA] = await Promise.all([
      readToEnd(b),
      readToEnd(a),
      writeInPieces(a, aToB, 1).then(() => a.closeWrite()),
      writeInPieces(b, bToA, 2).then(() => b.closeWrite()),
    ]);
    assert.equal(atB.length, aToB.length);
    assert.equal(await sha256Hex(atB), await sha256Hex(aToB));
    assert.equal(atA.length, bToA.length);
    assert.equal(await sha256Hex(atA), await sha256Hex(bToA));
  });

  test("half-close: the reader sees the end after the data, and the other direction keeps flowing", async ({ a, b }) => {
    assert.equal(a.unsignalledEndTimeoutMs, null);
    const request = patternBytes(100_000, 21);
    await a.write(request);
    await a.closeWrite();
    assert.deepEqual(await readToEnd(b), request);
    // The direction that did not end still works, in full, after the other one ended.
    const response = patternBytes(700_000, 22);
    const [atA] = await Promise.all([readToEnd(a), b.write(response).then(() => b.closeWrite())]);
    assert.equal(atA.length, response.length);
    assert.equal(await sha256Hex(atA), await sha256Hex(response));
  });

  test("backpressure: a writer is held back while its reader reads nothing, and nothing is lost", async ({ a, b }) => {
    const data = patternBytes(48 * 1024 * 1024, 31);
    const { accepted, pending } = await writeUntilHeldBack(a, data, 16 * 1024);
    assert.notEqual(pending, null, "writes never stalled: 48 MiB were accepted with nobody reading");
    assert.ok(
      accepted <= bounds.maxBufferedBytes,
      `${accepted} bytes accepted with nobody reading; the bound is ${bounds.maxBufferedBytes}`,
    );
    // The reader resumes: the held write completes and every byte arrives.
    const rest = (async () => {
      await pending;
      const from = accepted + 16 * 1024;
      if (from < data.length) await a.write(data.subarray(from));
      await a.closeWrite();
    })();
    const [received] = await Promise.all([readToEnd(b), rest]);
    assert.equal(received.length, data.length);
    assert.equal(await sha256Hex(received), await sha256Hex(data));
  });

  test("close propagation: the far side reads what was sent, then the end; its writes fail as gone", async ({ a, b }) => {
    const last = patternBytes(50_000, 41);
    await a.write(last);
    // Let the data reach b before the close, as a socket needs its receive buffer empty to send a FIN.
    assert.deepEqual(await readExactly(b, last.length), last);
    await a.close("done");
    assert.equal(await b.read(), null);
    let failure: unknown = null;
    for (let i = 0; i < 1_000 && failure === null; i++) {
      try {
        await b.write(new Uint8Array(1024));
      } catch (error) {
        failure = error;
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    assert.ok(failure instanceof PeerGoneError, `expected PeerGoneError, got ${failure}`);
    await b.close("done");
  });

  test("close propagation: a close by the reader fails a writer held back by backpressure", async ({ a, b }) => {
    const data = patternBytes(48 * 1024 * 1024, 51);
    const { pending } = await writeUntilHeldBack(a, data, 16 * 1024);
    assert.notEqual(pending, null);
    await b.close("reader gave up");
    await assert.rejects(pending!, PeerGoneError);
    await a.close("writer gave up");
  });

  test("close is idempotent and a closed duplex fails its own reads and writes", async ({ a, b }) => {
    await a.close("first");
    await a.close("second");
    await assert.rejects(a.write(new Uint8Array([1])));
    await assert.rejects(a.read());
    await b.close("done");
  });
}
