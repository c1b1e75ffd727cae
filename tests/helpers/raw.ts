/**
 * A raw TCP "recorder" service for tests that must prove a backend received exactly the bytes a client sent:
 * it reads each connection to its end, keeps every byte, then optionally answers and half-closes.
 *
 * @module
 */

import { readAll, serveConnections, type TestService, writeAll } from "./services.ts";

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
