/**
 * Local services that stand behind agents in tests: a TLS echo server, a TLS "sink/source" that answers a
 * request for N bytes, and a plain TCP variant, all on 127.0.0.1 with free ports.
 *
 * @module
 */

/** A running service; `close` stops it and every connection it holds. */
export interface TestService {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

type Handler = (conn: Deno.Conn) => Promise<void>;

/** Runs `handler` for every connection on a TLS (when `tls` is given) or plain TCP listener. */
export function serveConnections(
  handler: Handler,
  tls?: { certPem: string; keyPem: string },
): TestService {
  const listener: Deno.Listener = tls
    ? Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: tls.certPem, key: tls.keyPem })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      accepted += 1;
      conns.add(conn);
      const handled = handler(conn)
        .catch(() => {})
        .finally(() => {
          conns.delete(conn);
          try {
            conn.close();
          } catch {
            // Already closed by the handler.
          }
        });
      handlers.add(handled);
      void handled.finally(() => handlers.delete(handled));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    async close() {
      listener.close();
      await loop;
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.allSettled([...handlers]);
    },
  };
}

/** Echoes every byte back until the client half-closes, then half-closes too. */
export async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    await writeAll(conn, buffer.subarray(0, n));
  }
  await conn.closeWrite();
}

/** Writes every byte of `bytes`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** The parts, one after the other. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Reads until end of stream; returns everything read. */
export async function readAll(conn: Deno.Conn, limit = 1024 * 1024 * 1024): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    total += n;
    if (total > limit) throw new Error(`read more than ${limit} bytes`);
  }
  return concat(...chunks);
}

/** Deterministic pseudo-random bytes (xorshift), so both ends can produce or check them without storing. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** SHA-256 of bytes, as hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
