/**
 * What a {@linkcode MuxSession} and the handshakes need of a WebSocket: the runtime's `WebSocket` (the hub's
 * and the mesh's accepted links) and our {@linkcode WebSocketClient} (the links we dial) both are one.
 *
 * @module
 */

/** The part of the WebSocket API the multiplexing code uses. */
export interface MessageSocket {
  binaryType: BinaryType;
  readonly readyState: number;
  readonly bufferedAmount: number;
  readonly protocol: string;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  /** Sends `head` then `payload` as one binary message without joining them first, where the socket can. */
  sendBinaryParts?(head: Uint8Array, payload: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  addEventListener<K extends keyof WebSocketEventMap>(
    type: K,
    listener: (event: WebSocketEventMap[K]) => void,
  ): void;
  removeEventListener<K extends keyof WebSocketEventMap>(
    type: K,
    listener: (event: WebSocketEventMap[K]) => void,
  ): void;
}
