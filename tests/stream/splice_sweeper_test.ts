/**
 * The sweeper's timeouts, driven with explicit clock readings (`sweep(nowMs)`), over splices between in-memory
 * duplexes: idle, half-closed, and half-closed where the other side could not be told (a backend of the
 * original protocol, which has no half-close).
 */

import assert from "node:assert/strict";
import type { Duplex } from "../../src/stream/duplex.ts";
import { ORIGINAL } from "../../src/mux/dialect.ts";
import { Splice, SpliceSweeper } from "../../src/stream/splice.ts";

/** What a backend of the original protocol allows a half-closed stream that it could not be told of. */
const UNSIGNALLED_HALF_CLOSE_TIMEOUT_MS = ORIGINAL.unsignalledEndTimeoutMs!;

/** A duplex whose far side the test drives: `push` data or `end` it; what the splice writes is kept. */
class ScriptedDuplex implements Duplex {
  readonly label: string;
  readonly unsignalledEndTimeoutMs: number | null;
  readonly written: Uint8Array[] = [];
  closedWith: string | null = null;
  #queue: Array<Uint8Array | null> = [];
  #reader: ((chunk: Uint8Array | null) => void) | null = null;
  #failReader: ((error: Error) => void) | null = null;

  constructor(label: string, canHalfClose: boolean) {
    this.label = label;
    this.unsignalledEndTimeoutMs = canHalfClose ? null : UNSIGNALLED_HALF_CLOSE_TIMEOUT_MS;
  }

  push(chunk: Uint8Array | null): void {
    if (this.#reader) {
      const reader = this.#reader;
      this.#reader = null;
      reader(chunk);
    } else this.#queue.push(chunk);
  }

  read(): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.closedWith !== null) return Promise.reject(new Error("closed"));
    return new Promise((resolve, reject) => {
      this.#reader = resolve;
      this.#failReader = reject;
    });
  }

  write(chunk: Uint8Array): Promise<void> {
    this.written.push(chunk.slice());
    return Promise.resolve();
  }

  closeWrite(): Promise<void> {
    return Promise.resolve();
  }

  close(reason: string): Promise<void> {
    this.closedWith ??= reason;
    this.#failReader?.(new Error(reason));
    this.#reader = null;
    return Promise.resolve();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

function pair(canHalfClose: boolean) {
  const client = new ScriptedDuplex("client", true);
  const backend = new ScriptedDuplex("backend", canHalfClose);
  return { client, backend, splice: new Splice(client, backend) };
}

Deno.test("sweeper: a splice quiet for the idle timeout is aborted; one that moves bytes is not", async () => {
  const sweeper = new SpliceSweeper({ idleTimeoutMs: 1_000, halfClosedTimeoutMs: 60_000 }, 3_600_000);
  const quiet = pair(true);
  const busy = pair(true);
  try {
    sweeper.watch(quiet.splice);
    sweeper.watch(busy.splice);
    const start = Date.now();
    busy.client.push(new Uint8Array([1]));
    await settle();
    sweeper.sweep(start + 999);
    busy.client.push(new Uint8Array([2]));
    await settle();
    sweeper.sweep(start + 1_500);
    assert.equal(quiet.backend.closedWith, "idle timeout");
    assert.equal(busy.backend.closedWith, null);
  } finally {
    busy.splice.abort("test over");
    quiet.splice.abort("test over");
    await Promise.all([quiet.splice.done, busy.splice.done]);
    sweeper.close();
  }
});

Deno.test("sweeper: a client's end that the backend could not be told of is closed after 5 s of quiet, not 60", async () => {
  const sweeper = new SpliceSweeper({ idleTimeoutMs: 0, halfClosedTimeoutMs: 60_000 }, 3_600_000);
  const legacy = pair(false);
  const ours = pair(true);
  try {
    sweeper.watch(legacy.splice);
    sweeper.watch(ours.splice);
    const start = Date.now();
    legacy.client.push(null);
    ours.client.push(null);
    await settle();
    assert.equal(legacy.splice.unsignalledEndTimeoutMs, UNSIGNALLED_HALF_CLOSE_TIMEOUT_MS);
    assert.equal(ours.splice.unsignalledEndTimeoutMs, null);
    sweeper.sweep(start + UNSIGNALLED_HALF_CLOSE_TIMEOUT_MS - 10);
    assert.equal(legacy.backend.closedWith, null, "a response may still be on its way");
    sweeper.sweep(start + UNSIGNALLED_HALF_CLOSE_TIMEOUT_MS + 10);
    assert.equal(legacy.backend.closedWith, "half-closed timeout");
    assert.equal(ours.backend.closedWith, null, "our agent was told, so it gets the full half-closed time");
    sweeper.sweep(start + 60_010);
    assert.equal(ours.backend.closedWith, "half-closed timeout");
  } finally {
    legacy.splice.abort("test over");
    ours.splice.abort("test over");
    await Promise.all([legacy.splice.done, ours.splice.done]);
    sweeper.close();
  }
});

Deno.test("sweeper: a response still flowing after the client's end keeps the splice open", async () => {
  const sweeper = new SpliceSweeper({ idleTimeoutMs: 0, halfClosedTimeoutMs: 60_000 }, 3_600_000);
  const legacy = pair(false);
  try {
    sweeper.watch(legacy.splice);
    const start = Date.now();
    legacy.client.push(null);
    await settle();
    for (let second = 1; second <= 20; second++) {
      legacy.backend.push(new Uint8Array([second]));
      await settle();
      sweeper.sweep(start + second * 1_000);
    }
    assert.equal(legacy.backend.closedWith, null);
    assert.equal(legacy.client.written.length, 20);
  } finally {
    legacy.splice.abort("test over");
    await legacy.splice.done;
    sweeper.close();
  }
});
