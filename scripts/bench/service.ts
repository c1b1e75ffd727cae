/**
 * The service behind every benchmark target: one TLS port, and the first byte of each connection says what it
 * wants. Run as its own process by `scripts/bench.ts`, so its CPU never shares an event loop with the proxy.
 *
 * - `U`: upload sink. Reads to the end, then answers the byte count (8 bytes, big-endian) and closes.
 * - `D` + 8-byte big-endian count: download source. Sends that many bytes, then closes.
 * - `E`: echo. Sends back every byte it reads until the client closes (request/response and idle holds).
 *
 * Usage: `deno run --allow-net --allow-read scripts/bench/service.ts --cert FILE --key FILE`; it prints
 * `{"port":N}` on one line once it listens, and runs until killed.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The command byte of an upload (client to service) connection. */
export const COMMAND_UPLOAD = 0x55; // "U"
/** The command byte of a download (service to client) connection. */
export const COMMAND_DOWNLOAD = 0x44; // "D"
/** The command byte of an echo connection. */
export const COMMAND_ECHO = 0x45; // "E"

const CHUNK_BYTES = 64 * 1024;
const SOURCE = new Uint8Array(CHUNK_BYTES).map((_, i) => (i * 131 + 7) & 0xff);

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
}

/** Reads exactly `into.length` bytes; false if the stream ended first. */
async function readExactly(conn: Deno.Conn, into: Uint8Array): Promise<boolean> {
  for (let got = 0; got < into.length;) {
    const n = await conn.read(into.subarray(got));
    if (n === null) return false;
    got += n;
  }
  return true;
}

async function serve(conn: Deno.Conn): Promise<void> {
  const command = new Uint8Array(1);
  if (!(await readExactly(conn, command))) return;
  const buffer = new Uint8Array(CHUNK_BYTES);
  switch (command[0]) {
    case COMMAND_UPLOAD: {
      let total = 0;
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        total += n;
      }
      const answer = new Uint8Array(8);
      new DataView(answer.buffer).setBigUint64(0, BigInt(total));
      await writeAll(conn, answer);
      return;
    }
    case COMMAND_DOWNLOAD: {
      const header = new Uint8Array(8);
      if (!(await readExactly(conn, header))) return;
      let left = Number(new DataView(header.buffer).getBigUint64(0));
      while (left > 0) {
        const n = Math.min(left, CHUNK_BYTES);
        await writeAll(conn, SOURCE.subarray(0, n));
        left -= n;
      }
      return;
    }
    case COMMAND_ECHO:
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return;
        await writeAll(conn, buffer.subarray(0, n));
      }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { cert: { type: "string" }, key: { type: "string" } },
    strict: true,
  });
  if (values.cert === undefined || values.key === undefined) {
    console.error("usage: service.ts --cert FILE --key FILE");
    Deno.exit(2);
  }
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(values.cert),
    key: Deno.readTextFileSync(values.key),
  });
  console.log(JSON.stringify({ port: listener.addr.port }));
  for await (const conn of listener) {
    void serve(conn).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    });
  }
}
