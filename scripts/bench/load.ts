/**
 * The load generator of `scripts/bench.ts`: a process of its own that takes one job per line of JSON on stdin
 * and answers one line of JSON on stdout. The same generator, with the same code path, drives every target
 * (direct, HAProxy, Nexus), so the comparison is fair; only the port differs.
 *
 * Every connection is a real TLS client (a fresh client config each time, so no session resumption) that sends
 * the SNI of the benchmark service and verifies its certificate against the benchmark CA.
 *
 * Usage: `deno run --allow-net --allow-read scripts/bench/load.ts --ca FILE`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { COMMAND_DOWNLOAD, COMMAND_ECHO, COMMAND_UPLOAD } from "./service.ts";

/** Where a job connects: a loopback port and the TLS server name to send. */
export interface LoadTarget {
  readonly port: number;
  readonly serverName: string;
}

/** One job for the generator. */
export type LoadJob =
  | { readonly op: "probe"; readonly target: LoadTarget }
  | { readonly op: "upload" | "download"; readonly target: LoadTarget; readonly bytes: number }
  | {
    readonly op: "streams";
    readonly target: LoadTarget;
    readonly streams: number;
    readonly bytesEach: number;
  }
  | {
    readonly op: "connections";
    readonly target: LoadTarget;
    readonly concurrency: number;
    readonly seconds: number;
  }
  | {
    readonly op: "requests";
    readonly target: LoadTarget;
    readonly connections: number;
    readonly seconds: number;
    readonly requestBytes: number;
  }
  | {
    readonly op: "latency";
    readonly target: LoadTarget;
    readonly connections: number;
    readonly ratePerSecond: number;
    readonly seconds: number;
    readonly requestBytes: number;
  }
  /** Opens echo connections and keeps them until `release`, until `upTo` are held in all. */
  | { readonly op: "hold"; readonly target: LoadTarget; readonly upTo: number; readonly concurrency: number }
  | { readonly op: "release" };

/** What every job answers: its own fields, or `error`. */
export type LoadResult = Record<string, number | string>;

/**
 * A line the generator prints every second while a job runs, before the job's {@linkcode LoadResult}: how far
 * the job got, for the message of a phase that misses its deadline.
 */
export interface LoadProgress {
  readonly progress: string;
}

const PROGRESS_INTERVAL_MS = 1_000;

const CHUNK_BYTES = 64 * 1024;
const UPLOAD_SOURCE = new Uint8Array(CHUNK_BYTES).map((_, i) => (i * 97 + 3) & 0xff);

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
}

async function readExactly(conn: Deno.Conn, into: Uint8Array): Promise<void> {
  for (let got = 0; got < into.length;) {
    const n = await conn.read(into.subarray(got));
    if (n === null) throw new Error(`connection ended after ${got} of ${into.length} bytes`);
    got += n;
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** The generator: TLS connections to targets, with the CA that signed the service's certificate. */
class Generator {
  readonly #caPem: string;
  readonly #held: Deno.Conn[] = [];
  /** How far the running job got, in words. */
  progress = "";

  constructor(caPem: string) {
    this.#caPem = caPem;
  }

  /** A TLS connection whose handshake is complete. */
  async #open(target: LoadTarget): Promise<Deno.TlsConn> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
    try {
      tcp.setNoDelay(true);
      const tls = await Deno.startTls(tcp, { hostname: target.serverName, caCerts: [this.#caPem] });
      try {
        await tls.handshake();
      } catch (error) {
        closeQuietly(tls);
        throw error;
      }
      return tls;
    } catch (error) {
      closeQuietly(tcp);
      throw error;
    }
  }

  /** An echo connection that has answered one round trip, proving the whole path is up. */
  async #openEcho(target: LoadTarget): Promise<Deno.TlsConn> {
    const conn = await this.#open(target);
    try {
      await writeAll(conn, new Uint8Array([COMMAND_ECHO, 0x2a]));
      await readExactly(conn, new Uint8Array(1));
      return conn;
    } catch (error) {
      closeQuietly(conn);
      throw error;
    }
  }

  async run(job: LoadJob): Promise<LoadResult> {
    this.progress = "";
    switch (job.op) {
      case "probe": {
        const conn = await this.#openEcho(job.target);
        closeQuietly(conn);
        return { ok: 1 };
      }
      case "upload":
        return await this.#upload(job.target, job.bytes);
      case "download":
        return await this.#download(job.target, job.bytes);
      case "streams":
        return await this.#streams(job.target, job.streams, job.bytesEach);
      case "connections":
        return await this.#connections(job.target, job.concurrency, job.seconds);
      case "requests":
        return await this.#requests(job);
      case "latency":
        return await this.#latency(job);
      case "hold":
        return await this.#hold(job.target, job.upTo, job.concurrency);
      case "release": {
        const released = this.#held.length;
        for (const conn of this.#held.splice(0)) closeQuietly(conn);
        return { released };
      }
    }
  }

  async #upload(target: LoadTarget, bytes: number): Promise<LoadResult> {
    const conn = await this.#open(target);
    try {
      const started = performance.now();
      await writeAll(conn, new Uint8Array([COMMAND_UPLOAD]));
      for (let left = bytes; left > 0;) {
        const n = Math.min(left, CHUNK_BYTES);
        await writeAll(conn, UPLOAD_SOURCE.subarray(0, n));
        left -= n;
        this.progress = `${mib(bytes - left)} of ${mib(bytes)} sent`;
      }
      await conn.closeWrite();
      const answer = new Uint8Array(8);
      await readExactly(conn, answer);
      const seconds = (performance.now() - started) / 1000;
      const received = Number(new DataView(answer.buffer).getBigUint64(0));
      if (received !== bytes) throw new Error(`the service received ${received} of ${bytes} bytes`);
      return { bytes, seconds };
    } finally {
      closeQuietly(conn);
    }
  }

  /** Downloads `bytes` on an open connection; resolves with the bytes received; `onBytes` hears each read. */
  async #receive(conn: Deno.Conn, bytes: number, onBytes: (n: number) => void): Promise<number> {
    const request = new Uint8Array(9);
    request[0] = COMMAND_DOWNLOAD;
    new DataView(request.buffer).setBigUint64(1, BigInt(bytes));
    await writeAll(conn, request);
    const buffer = new Uint8Array(CHUNK_BYTES);
    let received = 0;
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      received += n;
      onBytes(n);
    }
    if (received !== bytes) throw new Error(`received ${received} of ${bytes} bytes`);
    return received;
  }

  async #download(target: LoadTarget, bytes: number): Promise<LoadResult> {
    const conn = await this.#open(target);
    try {
      const started = performance.now();
      let received = 0;
      await this.#receive(conn, bytes, (n) => {
        received += n;
        this.progress = `${mib(received)} of ${mib(bytes)} received`;
      });
      return { bytes, seconds: (performance.now() - started) / 1000 };
    } finally {
      closeQuietly(conn);
    }
  }

  async #streams(target: LoadTarget, streams: number, bytesEach: number): Promise<LoadResult> {
    const conns: Deno.Conn[] = [];
    try {
      for (let i = 0; i < streams; i++) {
        conns.push(await this.#open(target));
        this.progress = `${conns.length} of ${streams} streams connected`;
      }
      const started = performance.now();
      let total = 0;
      const onBytes = (n: number) => {
        total += n;
        this.progress = `${mib(total)} of ${mib(streams * bytesEach)} received over ${streams} streams`;
      };
      const received = await Promise.all(conns.map((conn) => this.#receive(conn, bytesEach, onBytes)));
      const seconds = (performance.now() - started) / 1000;
      return { bytes: received.reduce((a, b) => a + b, 0), seconds };
    } finally {
      for (const conn of conns) closeQuietly(conn);
    }
  }

  async #connections(target: LoadTarget, concurrency: number, seconds: number): Promise<LoadResult> {
    const started = performance.now();
    const deadline = started + seconds * 1000;
    let completed = 0;
    // The handshake alone proves the whole path: the ServerHello and Finished came from the service. An echo on
    // top would measure the service's Nagle delay after its session tickets instead (Deno's TLS listener does
    // not set TCP_NODELAY), the same for every target.
    const worker = async () => {
      while (performance.now() < deadline) {
        const conn = await this.#open(target);
        closeQuietly(conn);
        completed += 1;
        this.progress = `${completed} connections completed`;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { connections: completed, seconds: (performance.now() - started) / 1000 };
  }

  async #requests(job: Extract<LoadJob, { op: "requests" }>): Promise<LoadResult> {
    const conns = await this.#openMany(job.target, job.connections);
    try {
      const request = new Uint8Array(job.requestBytes).fill(0x61);
      const started = performance.now();
      const deadline = started + job.seconds * 1000;
      let completed = 0;
      await Promise.all(conns.map(async (conn) => {
        const answer = new Uint8Array(job.requestBytes);
        while (performance.now() < deadline) {
          await writeAll(conn, request);
          await readExactly(conn, answer);
          completed += 1;
          this.progress = `${completed} requests answered`;
        }
      }));
      return { requests: completed, seconds: (performance.now() - started) / 1000 };
    } finally {
      for (const conn of conns) closeQuietly(conn);
    }
  }

  /** Paced request/response: each connection sends on a fixed schedule, so the load is the same for all. */
  async #latency(job: Extract<LoadJob, { op: "latency" }>): Promise<LoadResult> {
    const conns = await this.#openMany(job.target, job.connections);
    try {
      const request = new Uint8Array(job.requestBytes).fill(0x62);
      const intervalMs = (1000 * job.connections) / job.ratePerSecond;
      const perConnection = Math.max(1, Math.floor((job.seconds * 1000) / intervalMs));
      const rtts: number[] = [];
      await Promise.all(conns.map(async (conn, index) => {
        const answer = new Uint8Array(job.requestBytes);
        // Stagger the connections over one interval so their requests do not arrive in bursts.
        const start = performance.now() + (intervalMs * index) / job.connections;
        for (let k = 0; k < perConnection; k++) {
          const wait = start + k * intervalMs - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          const sent = performance.now();
          await writeAll(conn, request);
          await readExactly(conn, answer);
          rtts.push(performance.now() - sent);
          this.progress = `${rtts.length} requests answered`;
        }
      }));
      rtts.sort((a, b) => a - b);
      return {
        requests: rtts.length,
        p50Ms: quantile(rtts, 0.5),
        p99Ms: quantile(rtts, 0.99),
        maxMs: rtts[rtts.length - 1],
      };
    } finally {
      for (const conn of conns) closeQuietly(conn);
    }
  }

  async #hold(target: LoadTarget, upTo: number, concurrency: number): Promise<LoadResult> {
    const started = performance.now();
    let next = this.#held.length;
    this.progress = `${this.#held.length} of ${upTo} connections established`;
    const worker = async () => {
      while (next < upTo) {
        next += 1;
        this.#held.push(await this.#openEcho(target));
        this.progress = `${this.#held.length} of ${upTo} connections established`;
      }
    };
    await Promise.all(Array.from({ length: Math.max(0, Math.min(concurrency, upTo - next)) }, worker));
    return { held: this.#held.length, seconds: (performance.now() - started) / 1000 };
  }

  async #openMany(target: LoadTarget, count: number): Promise<Deno.TlsConn[]> {
    const conns: Deno.TlsConn[] = [];
    try {
      for (let i = 0; i < count; i++) conns.push(await this.#openEcho(target));
      return conns;
    } catch (error) {
      for (const conn of conns) closeQuietly(conn);
      throw error;
    }
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** The `q` quantile of sorted values (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { ca: { type: "string" } }, strict: true });
  if (values.ca === undefined) {
    console.error("usage: load.ts --ca FILE");
    Deno.exit(2);
  }
  const generator = new Generator(Deno.readTextFileSync(values.ca));
  const encoder = new TextEncoder();
  let pending = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      let result: LoadResult;
      const reporter = setInterval(() => {
        const progress: LoadProgress = { progress: generator.progress };
        void Deno.stdout.write(encoder.encode(JSON.stringify(progress) + "\n"));
      }, PROGRESS_INTERVAL_MS);
      try {
        result = await generator.run(JSON.parse(line) as LoadJob);
      } catch (error) {
        result = { error: error instanceof Error ? error.message : String(error) };
      } finally {
        clearInterval(reporter);
      }
      await Deno.stdout.write(encoder.encode(JSON.stringify(result) + "\n"));
    }
  }
}
