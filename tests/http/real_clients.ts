/**
 * Real clients (curl, fetch) talking to a listener on 127.0.0.1, one connection each, read the way the relay
 * reads a plain-HTTP connection: all bytes so far go to the head parser until it gives a verdict.
 *
 * @module
 */

import { parseRequestHead, type RequestHeadResult } from "../../src/http/request_head.ts";
import { concat } from "../helpers/services.ts";

/** The bytes a client sent, and the head parser's verdict on them. */
export interface CapturedRequest {
  bytes: Uint8Array;
  result: RequestHeadResult;
}

/** Starts a client against `port`; aborting `signal` must end it (kill the process, abort the fetch). */
export type StartClient<T> = (port: number, signal: AbortSignal) => Promise<T>;

/** A client running `curl` with `args`, where `{port}` stands for the listener's port; resolves to its output. */
export function curl(args: string[]): StartClient<Deno.CommandOutput> {
  return (port, signal) =>
    new Deno.Command("curl", {
      args: ["--silent", "--max-time", "5", ...args.map((arg) => arg.replaceAll("{port}", String(port)))],
      stdout: "piped",
      stderr: "piped",
      signal,
    }).output();
}

/** What a fetch() client received. */
export interface FetchedResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** A client calling fetch() on `http://{hostname}:{port}{path}`. */
export function fetchFrom(hostname: string, path: string): StartClient<FetchedResponse> {
  return async (port, signal) => {
    const response = await fetch(`http://${hostname}:${port}${path}`, { signal });
    return { status: response.status, headers: response.headers, body: await response.text() };
  };
}

/**
 * Captures what the client sends up to the parser's verdict (and `bodyBytes` more after a complete head), then
 * closes the connection and kills or aborts the client.
 */
export async function captureRequest<T>(
  start: StartClient<T>,
  options: { bodyBytes?: number } = {},
): Promise<CapturedRequest> {
  const { captured, client, abort } = await serveOne(start, async (conn) => {
    const captured = await readUntilVerdict(conn);
    const { result } = captured;
    const wanted = result.kind === "request" ? result.headLength + (options.bodyBytes ?? 0) : 0;
    while (captured.bytes.length < wanted) {
      const more = await readChunk(conn);
      if (more === null) break;
      captured.bytes = concat(captured.bytes, more);
    }
    return captured;
  });
  abort();
  await client.catch(() => {});
  return captured;
}

/** Reads the request up to the verdict, answers with `respond(captured)`, closes, and waits for the client. */
export async function respondTo<T>(
  start: StartClient<T>,
  respond: (captured: CapturedRequest) => Uint8Array,
): Promise<{ captured: CapturedRequest; client: T }> {
  const { captured, client } = await serveOne(start, async (conn) => {
    const captured = await readUntilVerdict(conn);
    const response = respond(captured);
    for (let written = 0; written < response.length;) {
      written += await conn.write(response.subarray(written));
    }
    return captured;
  });
  return { captured, client: await client };
}

/** Serves the client's one connection with `serve`, then closes it; the client may still be running. */
async function serveOne<T>(
  start: StartClient<T>,
  serve: (conn: Deno.Conn) => Promise<CapturedRequest>,
): Promise<{ captured: CapturedRequest; client: Promise<T>; abort: () => void }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const controller = new AbortController();
  const abort = () => controller.abort();
  const client = start(listener.addr.port, controller.signal);
  try {
    // A client that ends without connecting must fail the test, not leave it waiting on accept().
    const ended = client.then(() => Promise.reject(new Error("client ended before connecting")));
    ended.catch(() => {});
    using conn = await Promise.race([listener.accept(), ended]);
    return { captured: await serve(conn), client, abort };
  } catch (error) {
    abort();
    await client.catch(() => {});
    throw error;
  }
}

async function readUntilVerdict(conn: Deno.Conn): Promise<CapturedRequest> {
  let bytes: Uint8Array = new Uint8Array(0);
  while (true) {
    const chunk = await readChunk(conn);
    if (chunk !== null) bytes = concat(bytes, chunk);
    const result = parseRequestHead(bytes, { atEof: chunk === null });
    if (result.kind !== "incomplete") return { bytes, result };
  }
}

async function readChunk(conn: Deno.Conn): Promise<Uint8Array | null> {
  const buffer = new Uint8Array(16 * 1024);
  const read = await conn.read(buffer);
  return read === null ? null : buffer.subarray(0, read);
}
