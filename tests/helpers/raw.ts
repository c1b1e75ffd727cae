/**
 * Raw TCP clients and services for end-to-end tests that compare bytes exactly: a client that writes chosen
 * chunks and reads to the end, a recorder that keeps every byte a backend received, and a service that says
 * its name and then echoes, so a test can tell which backend a connection reached.
 *
 * @module
 */

import net from "node:net";
import { concat, echo, readAll, serveConnections, type TestService, writeAll } from "./services.ts";

/** RFC 8446 §6: an alert record (TLS 1.2 record version, length 2), fatal, unrecognized_name (112). */
export const UNRECOGNIZED_NAME_ALERT = Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70);
/** The same record with handshake_failure (40). */
export const HANDSHAKE_FAILURE_ALERT = Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28);

/** `bytes` cut into consecutive chunks of the given sizes, used in turn. */
export function chunked(bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let offset = 0, i = 0; offset < bytes.length; i++) {
    const end = Math.min(offset + sizes[i % sizes.length], bytes.length);
    chunks.push(bytes.subarray(offset, end));
    offset = end;
  }
  return chunks;
}

/**
 * Connects to `port` on 127.0.0.1, writes `chunks` one TCP write each (no Nagle delay), optionally
 * half-closes, and reads until the far side closes. Returns every byte read. Writes that fail because the
 * far side already closed (a refused client) are not an error: what was read is the answer.
 */
export async function rawExchange(
  port: number,
  chunks: readonly Uint8Array[],
  options: { halfClose?: boolean } = {},
): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    conn.setNoDelay(true);
    const reading = readAll(conn);
    try {
      for (const chunk of chunks) await writeAll(conn, chunk);
      if (options.halfClose) await conn.closeWrite();
    } catch (error) {
      await reading.catch(() => {});
      if (!(error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset)) {
        throw error;
      }
    }
    return await reading;
  } finally {
    conn.close();
  }
}

/**
 * {@linkcode rawExchange} from a chosen local address (any 127.x.y.z is this host's; `Deno.connect` cannot
 * choose one), through `node:net`: writes `chunks` one write each, optionally half-closes, and reads until
 * the far side closes or resets. Returns every byte read.
 */
export async function rawExchangeFrom(
  localAddress: string,
  port: number,
  chunks: readonly Uint8Array[],
  options: { halfClose?: boolean } = {},
): Promise<Uint8Array> {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress, noDelay: true });
  const received: Uint8Array[] = [];
  const ended = new Promise<void>((resolve) => {
    socket.on("data", (chunk: Uint8Array) => received.push(chunk));
    // A refused client may see a reset instead of an end: what was read is the answer either way.
    socket.once("error", () => resolve());
    socket.once("close", () => resolve());
  });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    for (const chunk of chunks) {
      await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
    }
    if (options.halfClose) socket.end();
    await ended;
  } finally {
    socket.destroy();
  }
  return concat(...received);
}

/** A running recorder. */
export interface RecordingService extends TestService {
  /** The bytes of each finished connection (read to end of stream), in the order they finished. */
  readonly recordings: readonly Uint8Array[];
}

/**
 * Starts a plain TCP recorder on 127.0.0.1. Each connection is read until the client half-closes; its bytes
 * are recorded, then `reply` (if given) is written and the recorder half-closes too.
 */
export function recordingService(reply?: (received: Uint8Array) => Uint8Array): RecordingService {
  const recordings: Uint8Array[] = [];
  const service = serveConnections(async (conn) => {
    const received = await readAll(conn);
    recordings.push(received);
    if (reply !== undefined) await writeAll(conn, reply(received));
    await conn.closeWrite();
  });
  return {
    port: service.port,
    get accepted() {
      return service.accepted;
    },
    recordings,
    close: () => service.close(),
  };
}

/**
 * Starts a plain TCP service that writes `name` and a newline as soon as it accepts, then echoes every byte
 * until the client half-closes, then half-closes too.
 */
export function namedEchoService(name: string): TestService {
  return serveConnections(async (conn) => {
    await writeAll(conn, new TextEncoder().encode(`${name}\n`));
    await echo(conn);
  });
}

/** Reads exactly `length` bytes; throws if the stream ends first. */
export async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  for (let filled = 0; filled < length;) {
    const n = await conn.read(out.subarray(filled));
    if (n === null) throw new Error(`stream ended after ${filled} of ${length} bytes`);
    filled += n;
  }
  return out;
}

/** Reads one line byte by byte (so nothing after it is consumed) and returns it without the newline. */
export async function readLine(conn: Deno.Conn): Promise<string> {
  const bytes: number[] = [];
  const byte = new Uint8Array(1);
  while (bytes.at(-1) !== 0x0a) {
    if ((await conn.read(byte)) === null) throw new Error("stream ended before the end of the line");
    bytes.push(byte[0]);
  }
  return new TextDecoder().decode(Uint8Array.from(bytes.slice(0, -1)));
}
