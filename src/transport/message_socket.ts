/**
 * What a {@linkcode MuxSession} and the handshakes need of a WebSocket: our {@linkcode WebSocketConnection}
 * (every link: the hub's and the mesh's accepted ones and the ones we dial) is one. The runtime's `WebSocket`
 * has the part the handshakes use ({@linkcode HandshakeSocket}) but neither `sendParts` nor `whenDrained`.
 *
 * @module
 */

/** The part of the WebSocket API the handshakes use (waiting for the open, reading the first messages). */
export interface HandshakeSocket {
  binaryType: BinaryType;
  readonly readyState: number;
  readonly bufferedAmount: number;
  readonly protocol: string;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
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

/** What the multiplexing code uses: the handshake's part, and sending frames in parts with backpressure. */
export interface MessageSocket extends HandshakeSocket {
  /** Sends `parts`, joined, as one binary message, each part copied once into the socket's output. */
  sendParts(parts: readonly Uint8Array[]): void;
  /** Resolves once at most `bufferedBytes` sent are still unwritten, or the socket is closing or gone. */
  whenDrained(bufferedBytes: number): Promise<void>;
  /**
   * Gives back the payload of a received binary message (or any view into it) once nothing uses it any more,
   * for a later message to reuse; nothing may read or write it afterwards.
   */
  recycle(payload: Uint8Array): void;
}
