/**
 * Sequential reading of a WebSocket's first messages, for handshakes: the WebSocket API pushes messages as
 * events, a handshake wants to `await` the next one with a deadline.
 *
 * @module
 */

import type { HandshakeSocket } from "./message_socket.ts";

/** The next message, or why there is none. */
export type InboxMessage =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "binary"; readonly bytes: number }
  | { readonly kind: "closed"; readonly reason: string }
  | { readonly kind: "timeout" };

/** Messages an inbox keeps for its handshake at most; one more closes the WebSocket. */
export const MAX_QUEUED_MESSAGES = 64;

/** Buffers a WebSocket's messages until a handshake reads them; {@linkcode detach} hands over the rest. */
export class WebSocketInbox {
  readonly #ws: HandshakeSocket;
  readonly #queue: unknown[] = [];
  #closedReason: string | null = null;
  #waiter: (() => void) | null = null;

  constructor(ws: HandshakeSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      // A handshake reads a message or two; a peer that sends on and on before it is answered is not one.
      if (this.#queue.length >= MAX_QUEUED_MESSAGES) {
        this.#closedReason ??= `more than ${MAX_QUEUED_MESSAGES} messages before the handshake was answered`;
        try {
          ws.close(1008, "too many messages during the handshake");
        } catch {
          // A client may not send 1008: close normally with the same reason.
          try {
            ws.close(1000, "too many messages during the handshake");
          } catch {
            // Already closing.
          }
        }
        this.#wake();
        return;
      }
      this.#queue.push(event.data);
      this.#wake();
    };
    ws.onclose = (event) => {
      this.#closedReason = event.reason || `closed with code ${event.code}`;
      this.#wake();
    };
    ws.onerror = () => {
      // The close event follows and carries the reason.
    };
  }

  /** Waits up to `timeoutMs` for the next message. */
  async next(timeoutMs: number): Promise<InboxMessage> {
    if (this.#queue.length === 0 && this.#closedReason === null) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
      this.#waiter = null;
    }
    if (this.#queue.length > 0) {
      const data = this.#queue.shift();
      if (typeof data === "string") return { kind: "text", text: data };
      return {
        kind: "binary",
        bytes: data instanceof ArrayBuffer || data instanceof Uint8Array ? data.byteLength : 0,
      };
    }
    if (this.#closedReason !== null) return { kind: "closed", reason: this.#closedReason };
    return { kind: "timeout" };
  }

  /** Stops buffering; returns the messages that arrived but were not read, for the session to replay. */
  detach(): unknown[] {
    this.#ws.onmessage = null;
    this.#ws.onclose = null;
    return this.#queue.splice(0);
  }

  #wake(): void {
    this.#waiter?.();
  }
}

/** Waits until a client WebSocket is open; resolves with an error text if it failed or timed out. */
export function waitForOpen(ws: HandshakeSocket, timeoutMs: number): Promise<string | null> {
  if (ws.readyState === WebSocket.OPEN) return Promise.resolve(null);
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish("timed out connecting"), timeoutMs);
    const finish = (error: string | null) => {
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("error", onError);
      ws.removeEventListener("close", onClose);
      resolve(error);
    };
    const onOpen = () => finish(null);
    const onError = (event: Event) =>
      finish(event instanceof ErrorEvent ? event.message : "connection failed");
    const onClose = (event: CloseEvent) => finish(event.reason || `closed with code ${event.code}`);
    ws.addEventListener("open", onOpen);
    ws.addEventListener("error", onError);
    ws.addEventListener("close", onClose);
  });
}
