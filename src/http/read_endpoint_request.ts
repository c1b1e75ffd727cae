/**
 * Reading the head of a request to one of the node's own endpoints (the hub's and the admin listener's) off a
 * connection, for {@linkcode parseEndpointRequest}.
 *
 * @module
 */

import { type EndpointRequestResult, parseEndpointRequest } from "./endpoint_request.ts";

/**
 * Reads until the request head is complete or refused; returns the verdict with every byte read (what follows
 * the head, a WebSocket's first frames, is there too), or null if the connection ended or failed first.
 */
export async function readEndpointRequest(
  conn: Deno.Conn,
): Promise<{ result: Exclude<EndpointRequestResult, { kind: "incomplete" }>; bytes: Uint8Array } | null> {
  let bytes = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  for (;;) {
    const result = parseEndpointRequest(bytes);
    if (result.kind !== "incomplete") return { result, bytes };
    let n: number | null;
    try {
      n = await conn.read(chunk);
    } catch {
      return null;
    }
    if (n === null) return null;
    const grown = new Uint8Array(bytes.length + n);
    grown.set(bytes);
    grown.set(chunk.subarray(0, n), bytes.length);
    bytes = grown;
  }
}
