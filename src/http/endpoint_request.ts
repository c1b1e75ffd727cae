/**
 * A pure parser for the head of an HTTP/1.1 request to one of the node's own endpoints (the hub's `/connect`,
 * `/mesh` and `/healthz`), which answers it itself rather than forwarding it. Unlike the relay's parser it
 * keeps every header, and it is strict: whoever dials a hub is an agent or a node, so anything unusual is
 * refused rather than interpreted.
 *
 * @module
 */

/** What the bytes read so far say about the request head. */
export type EndpointRequestResult =
  | { readonly kind: "incomplete" }
  | { readonly kind: "request"; readonly request: EndpointRequest; readonly headLength: number }
  | { readonly kind: "bad_request"; readonly reason: string }
  | { readonly kind: "too_large" };

/** A parsed request head. */
export interface EndpointRequest {
  readonly method: string;
  /** The path of the origin-form target, without its query. */
  readonly path: string;
  /** Header values by lower-case name, in the order they came. */
  readonly headers: ReadonlyMap<string, readonly string[]>;
}

/** Largest request head an endpoint reads: a handshake needs far less. */
const MAX_ENDPOINT_REQUEST_HEAD_BYTES = 8 * 1024;

const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\/[^\s?#]*)(?:\?[^\s#]*)? HTTP\/1\.1$/;
// Field values: visible characters, obs-text, SP and HTAB only (RFC 9110 §5.5); control characters refused.
// deno-lint-ignore no-control-regex
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*$/;
const latin1 = new TextDecoder("latin1");

/**
 * Parses the request head from all bytes read so far; never throws. The head ends at the first blank line;
 * lines end in CRLF.
 *
 * @example
 * ```ts
 * import { parseEndpointRequest } from "./endpoint_request.ts";
 * const head = new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n");
 * const result = parseEndpointRequest(head);
 * result.kind === "request" && result.request.path; // "/healthz"
 * ```
 */
export function parseEndpointRequest(
  bytes: Uint8Array,
  maxBytes = MAX_ENDPOINT_REQUEST_HEAD_BYTES,
): EndpointRequestResult {
  const limit = Math.min(bytes.length, maxBytes);
  let end = -1;
  for (let i = 3; i < limit; i++) {
    if (bytes[i] === 0x0a && bytes[i - 1] === 0x0d && bytes[i - 2] === 0x0a && bytes[i - 3] === 0x0d) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) return bytes.length >= maxBytes ? { kind: "too_large" } : { kind: "incomplete" };
  const lines = latin1.decode(bytes.subarray(0, end - 4)).split("\r\n");
  const requestLine = REQUEST_LINE.exec(lines[0]);
  if (requestLine === null) {
    return { kind: "bad_request", reason: "request line is not: method, origin-form path, HTTP/1.1" };
  }
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const field = FIELD_LINE.exec(line);
    if (field === null) return { kind: "bad_request", reason: "malformed header line" };
    const name = field[1].toLowerCase();
    const values = headers.get(name);
    if (values === undefined) headers.set(name, [field[2]]);
    else values.push(field[2]);
  }
  return {
    kind: "request",
    request: { method: requestLine[1], path: requestLine[2], headers },
    headLength: end,
  };
}

/** The only value of header `name`, or undefined when it is absent or repeated. */
export function singleHeader(request: EndpointRequest, name: string): string | undefined {
  const values = request.headers.get(name);
  return values?.length === 1 ? values[0] : undefined;
}

/** The comma-separated elements of every value of header `name`, trimmed, empty ones dropped. */
export function headerList(request: EndpointRequest, name: string): string[] {
  return (request.headers.get(name) ?? []).flatMap((value) =>
    value.split(",").map((element) => element.trim()).filter((element) => element !== "")
  );
}
