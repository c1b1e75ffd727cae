/**
 * A real WebSocket pair on loopback: our own WebSocket in both roles (what every link of a node and an agent
 * runs), `acceptWebSocket` on a plain TCP listener at one end and a {@linkcode WebSocketClient} at the other,
 * both open, plain `ws://` (TLS is not what these tests are about). Sessions and raw peers are built on top.
 *
 * @module
 */

import { type Dialect, NEXUS_MUX } from "../../src/mux/dialect.ts";
import { parseEndpointRequest } from "../../src/http/endpoint_request.ts";
import { createLogger } from "../../src/log/logger.ts";
import { waitForOpen } from "../../src/transport/inbox.ts";
import type { HandshakeSocket } from "../../src/transport/message_socket.ts";
import { MUX_SUBPROTOCOL, MuxSession, type MuxSessionOptions } from "../../src/mux/session.ts";
import type { MuxStream } from "../../src/mux/stream.ts";
import type { WebSocketConnection } from "../../src/transport/websocket.ts";
import { acceptWebSocket } from "../../src/transport/websocket_accept.ts";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import {
  type ControlMessage,
  type DecodedFrame,
  decodeFrame,
  encodeControlFrame,
  encodeDataFrame,
  streamIdBytes,
  type StreamOpenInfo,
} from "../../src/protocol/frames.ts";

/** Two connected, open WebSockets. */
export interface WebSocketPair {
  /** The side `acceptWebSocket` answered. */
  readonly server: WebSocketConnection;
  /** The side that dialled. */
  readonly client: WebSocketConnection;
  /** Closes both sockets (if still open) and waits for both close events. */
  close(): Promise<void>;
}

/** Resolves when `ws` has fired its close event (at once if it already has). */
export function whenClosed(ws: HandshakeSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.addEventListener("close", () => resolve()));
}

/** Opens a WebSocket pair; `subprotocol` is offered by the client and accepted by the server. */
export async function openWebSocketPair(
  subprotocol: string | null = MUX_SUBPROTOCOL,
): Promise<WebSocketPair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = (async () => {
    const conn = await listener.accept();
    let bytes = new Uint8Array(0);
    for (;;) {
      const result = parseEndpointRequest(bytes);
      if (result.kind === "request") {
        return await acceptWebSocket(conn, result.request, bytes.slice(result.headLength), {
          maxMessageBytes: 1024 * 1024,
          ...(subprotocol === null ? {} : { protocol: subprotocol }),
        });
      }
      const chunk = new Uint8Array(4096);
      const n = await conn.read(chunk);
      if (n === null) throw new Error("the client left before its request");
      bytes = new Uint8Array([...bytes, ...chunk.subarray(0, n)]);
    }
  })();
  const client = new WebSocketClient(`ws://127.0.0.1:${listener.addr.port}/`, {
    protocols: subprotocol === null ? [] : [subprotocol],
  });
  try {
    const server = await accepted;
    const [clientError, serverError] = await Promise.all([
      waitForOpen(client, 5_000),
      waitForOpen(server, 5_000),
    ]);
    if (clientError !== null || serverError !== null) {
      throw new Error(`WebSocket pair did not open: ${clientError ?? serverError}`);
    }
    return {
      server,
      client,
      async close() {
        for (const ws of [client, server]) {
          try {
            ws.close(1000, "test over");
          } catch {
            // Already closing.
          }
        }
        await Promise.all([whenClosed(client), whenClosed(server)]);
      },
    };
  } finally {
    listener.close();
  }
}

const quietLog = createLogger("test-session");

/** Session options with test defaults. */
export function sessionOptions(overrides: Partial<MuxSessionOptions> = {}): MuxSessionOptions {
  return {
    label: "test",
    dialect: NEXUS_MUX,
    log: quietLog,
    maxStreams: 1_000,
    legacyStreamBufferBytes: 4 * 1024 * 1024,
    ...overrides,
  };
}

/** The open info tests use. */
export const TEST_OPEN_INFO: StreamOpenInfo = {
  hostname: "app.test.nexus",
  port: 443,
  clientAddress: "127.0.0.1:40000",
  isTls: true,
};

/** Two {@linkcode MuxSession}s over a real WebSocket pair; streams opened by `opener` arrive at `acceptor`. */
export interface SessionPair {
  readonly opener: MuxSession;
  readonly acceptor: MuxSession;
  readonly sockets: WebSocketPair;
  /** Opens a stream at the opener and resolves with both ends once the acceptor has it. */
  openStream(info?: StreamOpenInfo): Promise<{ local: MuxStream; remote: MuxStream; info: StreamOpenInfo }>;
  close(): Promise<void>;
}

/** Opens a session pair; the client WebSocket is the opener (as the hub's session is opened by backends). */
export async function openSessionPair(
  options: {
    dialect?: Dialect;
    opener?: Partial<MuxSessionOptions>;
    acceptor?: Partial<MuxSessionOptions>;
  } = {},
): Promise<SessionPair> {
  const dialect = options.dialect ?? NEXUS_MUX;
  const sockets = await openWebSocketPair(dialect === NEXUS_MUX ? MUX_SUBPROTOCOL : null);
  const arrivals: Array<(value: { stream: MuxStream; info: StreamOpenInfo }) => void> = [];
  const early: Array<{ stream: MuxStream; info: StreamOpenInfo }> = [];
  const opener = new MuxSession(
    sockets.client,
    sessionOptions({ label: "opener", dialect, ...options.opener }),
  );
  const acceptor = new MuxSession(
    sockets.server,
    sessionOptions({
      label: "acceptor",
      dialect,
      onStreamOpened: (stream, info) => {
        const waiter = arrivals.shift();
        if (waiter) waiter({ stream, info });
        else early.push({ stream, info });
      },
      ...options.acceptor,
    }),
  );
  return {
    opener,
    acceptor,
    sockets,
    async openStream(info = TEST_OPEN_INFO) {
      const local = opener.openStream(info);
      if (local === null) throw new Error("opener refused to open a stream");
      const arrived = early.shift() ??
        await new Promise<{ stream: MuxStream; info: StreamOpenInfo }>((resolve) => arrivals.push(resolve));
      return { local, remote: arrived.stream, info: arrived.info };
    },
    async close() {
      opener.close(1000, "test over");
      acceptor.close(1000, "test over");
      await Promise.all([opener.closed, acceptor.closed]);
      await sockets.close();
    },
  };
}

/**
 * The far end of a session, driven by hand: it sends frames built with the codec and records every frame it
 * receives, so a test can check exactly what a session put on the wire and in which order.
 */
export class RawPeer {
  readonly ws: WebSocket | WebSocketConnection;
  readonly received: DecodedFrame[] = [];
  readonly texts: string[] = [];
  /** Called for every binary frame as it arrives, after it was recorded (to answer it, e.g. echo data). */
  onFrame: ((frame: DecodedFrame) => void) | null = null;
  #waiters: Array<() => void> = [];

  constructor(ws: WebSocket | WebSocketConnection) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this.texts.push(event.data);
      else {
        // The runtime's WebSocket delivers an ArrayBuffer, ours a Uint8Array.
        const message = decodeFrame(
          event.data instanceof Uint8Array ? event.data : new Uint8Array(event.data as ArrayBuffer),
        );
        // A credits session sends the frames of one turn as one batch: record them one by one, in order.
        const frames = message.kind === "batch"
          ? message.frames.map((frame) => decodeFrame(frame))
          : [message];
        for (const frame of frames) {
          this.received.push(frame);
          this.onFrame?.(frame);
        }
      }
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const wake of waiters) wake();
    };
  }

  sendControl(message: ControlMessage): void {
    this.ws.send(encodeControlFrame(message));
  }

  sendData(id: string, payload: Uint8Array): void {
    this.ws.send(encodeDataFrame(streamIdBytes(id), payload));
  }

  /** Control messages received so far, in order. */
  controls(): ControlMessage[] {
    return this.received.flatMap((frame) => frame.kind === "control" ? [frame.message] : []);
  }

  /** Waits until `condition` holds over what was received; fails after `timeoutMs`. */
  async waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /**
   * A barrier: sends a session `ping` and waits for the `pong`. WebSockets are ordered, so afterwards every
   * frame the session sent while handling what we sent before the ping has been received.
   */
  async barrier(): Promise<void> {
    const pongsBefore = this.controls().filter((m) => m.type === "pong").length;
    this.sendControl({ type: "ping" });
    await this.waitFor(
      () => this.controls().filter((m) => m.type === "pong").length > pongsBefore,
      "the pong of a barrier",
    );
  }
}
