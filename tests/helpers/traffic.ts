/**
 * Traffic for load and fault tests: a service that sends, sinks or echoes as many bytes as a client asks for,
 * and the client side of it, with every byte verified by SHA-256 as it streams (nothing is held in memory, so
 * 64 MiB transfers cost no more than 64 KiB ones).
 *
 * A client opens a stream through the node (TLS with SNI, or plain HTTP with a `Host` head that the service
 * skips) and sends one command line:
 *
 * - `SEND <bytes> <seed>`: the service sends that many pattern bytes, then half-closes.
 * - `SINK`: the service reads to the end, then answers `<bytes> <sha256-hex>` and closes.
 * - `ECHO`: the service echoes every byte until the end, then half-closes.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { testCertificates } from "./certs.ts";
import { serveConnections, type TestService, writeAll } from "./services.ts";

/** Deterministic pseudo-random bytes (xorshift32) produced piece by piece: `next(n)` continues the sequence. */
export class PatternStream {
  #x: number;

  constructor(seed: number) {
    this.#x = seed | 0 || 1;
  }

  /** The next `length` bytes of the sequence. */
  next(length: number): Uint8Array {
    const out = new Uint8Array(length);
    let x = this.#x;
    for (let i = 0; i < length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
    this.#x = x;
    return out;
  }
}

/** SHA-256 hex of the first `length` bytes of the pattern with `seed`, computed in pieces. */
export function patternSha256(length: number, seed: number): string {
  const pattern = new PatternStream(seed);
  const hash = createHash("sha256");
  for (let done = 0; done < length;) {
    const n = Math.min(1024 * 1024, length - done);
    hash.update(pattern.next(n));
    done += n;
  }
  return hash.digest("hex");
}

/** Counts and hashes a byte stream as it passes. */
export class StreamDigest {
  bytes = 0;
  readonly #hash = createHash("sha256");

  update(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    this.#hash.update(chunk);
  }

  hex(): string {
    return this.#hash.digest("hex");
  }
}

/** A running traffic service. */
export interface TrafficService extends TestService {
  /** Bytes the service has written so far, over all connections. */
  readonly bytesSent: number;
  /** Bytes the service has read after the command lines, over all connections. */
  readonly bytesReceived: number;
  /** Connections currently open at the service. */
  readonly open: number;
  /** From now on the service reads nothing more (a stalled local service) until {@linkcode resumeReading}. */
  pauseReading(): void;
  resumeReading(): void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Starts a traffic service: TLS unless `tls` is false, with `certificate` or else the shared test service
 * certificate (a service in another process is given the one its clients trust).
 */
export async function startTrafficService(
  options: { tls?: boolean; certificate?: { certPem: string; keyPem: string } } = {},
): Promise<TrafficService> {
  let bytesSent = 0;
  let bytesReceived = 0;
  let open = 0;
  let gate: { promise: Promise<void>; release: () => void } | null = null;
  const whenReadable = () => gate?.promise;

  const service = serveConnections(async (conn) => {
    open += 1;
    try {
      const buffer = new Uint8Array(64 * 1024);
      const { line, rest } = await readCommand(conn, buffer);
      const [verb, ...args] = line.split(" ");
      const readBody = async (onChunk: (chunk: Uint8Array) => Promise<void> | void) => {
        if (rest.length > 0) {
          bytesReceived += rest.length;
          await onChunk(rest);
        }
        for (;;) {
          await whenReadable();
          const n = await conn.read(buffer);
          if (n === null) return;
          bytesReceived += n;
          await onChunk(buffer.subarray(0, n));
        }
      };
      switch (verb) {
        case "SEND": {
          const total = Number(args[0]);
          const pattern = new PatternStream(Number(args[1]));
          for (let done = 0; done < total;) {
            const n = Math.min(64 * 1024, total - done);
            await writeAll(conn, pattern.next(n));
            bytesSent += n;
            done += n;
          }
          await conn.closeWrite();
          await readBody(() => {});
          return;
        }
        case "SINK": {
          const digest = new StreamDigest();
          await readBody((chunk) => digest.update(chunk));
          const answer = encoder.encode(`${digest.bytes} ${digest.hex()}\n`);
          await writeAll(conn, answer);
          bytesSent += answer.length;
          await conn.closeWrite();
          return;
        }
        case "ECHO": {
          await readBody(async (chunk) => {
            await writeAll(conn, chunk);
            bytesSent += chunk.length;
          });
          await conn.closeWrite();
          return;
        }
        default:
          throw new Error(`unknown command ${JSON.stringify(line)}`);
      }
    } finally {
      open -= 1;
    }
  }, options.tls === false ? undefined : options.certificate ?? (await testCertificates()).service);

  const resumeReading = () => {
    const current = gate;
    gate = null;
    current?.release();
  };
  return {
    get port() {
      return service.port;
    },
    get accepted() {
      return service.accepted;
    },
    get bytesSent() {
      return bytesSent;
    },
    get bytesReceived() {
      return bytesReceived;
    },
    get open() {
      return open;
    },
    pauseReading() {
      if (gate !== null) return;
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      gate = { promise, release };
    },
    resumeReading,
    async close() {
      resumeReading();
      await service.close();
    },
  };
}

/**
 * Reads the command line, after skipping an HTTP request head if the stream starts with one (the relay's HTTP
 * port forwards the head it routed by). Returns the line and the bytes read past it.
 */
async function readCommand(conn: Deno.Conn, buffer: Uint8Array): Promise<{ line: string; rest: Uint8Array }> {
  let pending = new Uint8Array(0);
  let skippedHead = false;
  for (;;) {
    if (!skippedHead && pending.length >= 4) {
      const startsHttp = decoder.decode(pending.subarray(0, 4)) === "GET ";
      if (!startsHttp) skippedHead = true;
      else {
        const end = indexOf(pending, encoder.encode("\r\n\r\n"));
        if (end >= 0) {
          pending = pending.slice(end + 4);
          skippedHead = true;
        }
      }
    }
    if (skippedHead) {
      const newline = pending.indexOf(0x0a);
      if (newline >= 0) {
        return { line: decoder.decode(pending.subarray(0, newline)), rest: pending.slice(newline + 1) };
      }
    }
    if (pending.length > 70_000) throw new Error("no command line in the first 70,000 bytes");
    const n = await conn.read(buffer);
    if (n === null) throw new Error("stream ended before a command line");
    const grown = new Uint8Array(pending.length + n);
    grown.set(pending);
    grown.set(buffer.subarray(0, n), pending.length);
    pending = grown;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** How a traffic client reaches the node. */
export interface TrafficRoute {
  /** The relay port. */
  readonly port: number;
  /** `tls`: a TLS client with SNI `hostname`; `http`: a plain client that sends a `Host` head first. */
  readonly protocol: "tls" | "http";
  readonly hostname: string;
}

/** Opens a client stream through the node and sends `command` (the line, without its newline). */
export async function openTrafficStream(route: TrafficRoute, command: string): Promise<Deno.Conn> {
  let conn: Deno.Conn;
  if (route.protocol === "tls") {
    const certs = await testCertificates();
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: route.port });
    try {
      conn = await Deno.startTls(tcp, { hostname: route.hostname, caCerts: [certs.ca.certPem] });
    } catch (error) {
      try {
        tcp.close();
      } catch {
        // startTls may have taken it.
      }
      throw error;
    }
  } else {
    conn = await Deno.connect({ hostname: "127.0.0.1", port: route.port });
  }
  try {
    const head = route.protocol === "http" ? `GET / HTTP/1.1\r\nHost: ${route.hostname}\r\n\r\n` : "";
    await writeAll(conn, encoder.encode(`${head}${command}\n`));
  } catch (error) {
    conn.close();
    throw error;
  }
  return conn;
}

/** Reads to the end of `conn`, hashing; `onChunk` sees every chunk (for pacing and progress). */
export async function digestToEnd(
  conn: Deno.Conn,
  onChunk?: (bytes: number) => Promise<void> | void,
): Promise<{ bytes: number; sha256: string }> {
  const digest = new StreamDigest();
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    digest.update(buffer.subarray(0, n));
    await onChunk?.(n);
  }
  return { bytes: digest.bytes, sha256: digest.hex() };
}

/** Writes `length` pattern bytes with `seed` in pieces of up to `pieceBytes`; `beforePiece` may pace it. */
export async function writePattern(
  conn: Deno.Conn,
  length: number,
  seed: number,
  options: { pieceBytes?: number; beforePiece?: (done: number) => Promise<void> | void } = {},
): Promise<void> {
  const pattern = new PatternStream(seed);
  const pieceBytes = options.pieceBytes ?? 64 * 1024;
  for (let done = 0; done < length;) {
    await options.beforePiece?.(done);
    const n = Math.min(pieceBytes, length - done);
    await writeAll(conn, pattern.next(n));
    done += n;
  }
}

/** Reads the `SINK` answer line: the bytes the service received and their hash. */
export async function readSinkAnswer(conn: Deno.Conn): Promise<{ bytes: number; sha256: string }> {
  const answer = decoder.decode(new Uint8Array(await readAllSmall(conn))).trim();
  const match = /^(\d+) ([0-9a-f]{64})$/.exec(answer);
  if (match === null) throw new Error(`unexpected sink answer ${JSON.stringify(answer.slice(0, 100))}`);
  return { bytes: Number(match[1]), sha256: match[2] };
}

async function readAllSmall(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return new Uint8Array(chunks);
    chunks.push(...buffer.subarray(0, n));
    if (chunks.length > 10_000) throw new Error("sink answer longer than 10,000 bytes");
  }
}

/**
 * Waits until `progress()` has not changed for `quietMs` (a transfer is held back), failing after `timeoutMs`.
 * The quiet period only decides when to stop looking, so a slow machine cannot make a test fail through it.
 */
export async function waitUntilQuiet(
  progress: () => number,
  what: string,
  options: { quietMs?: number; timeoutMs?: number } = {},
): Promise<number> {
  const quietMs = options.quietMs ?? 300;
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  let last = progress();
  let since = Date.now();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = progress();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return now;
    }
    if (Date.now() > deadline) throw new Error(`${what} never came to rest (last value ${now})`);
  }
}

/** Samples `value()` every `intervalMs` and keeps the largest; `stop()` returns it. */
export function samplePeak(value: () => number, intervalMs = 5): { stop(): number } {
  let peak = value();
  const timer = setInterval(() => (peak = Math.max(peak, value())), intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, value());
    },
  };
}
