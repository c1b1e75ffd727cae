/**
 * The few responses the proxy writes itself, on the plain-HTTP listener, before a connection is routed.
 *
 * @module
 */

// Reason phrases: RFC 9110 §15.3.1, §15.5.1, §15.5.5, §15.5.9, §15.5.20, §15.6.3, §15.6.4; RFC 6585 §5.
const REASON_PHRASES = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  408: "Request Timeout",
  421: "Misdirected Request",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  503: "Service Unavailable",
} as const;

/** The statuses the proxy writes itself. */
export type ResponseStatus = keyof typeof REASON_PHRASES;

const encoder = new TextEncoder();

/**
 * Builds a complete, minimal HTTP/1.1 error response that ends the connection.
 *
 * The body is one line: the reason phrase, then `: detail` when a detail is given (control characters in it
 * become spaces, so the body stays one line). The proxy closes the connection after writing it, which
 * `Connection: close` announces; `Cache-Control: no-store` keeps intermediaries from caching a routing error.
 *
 * @example
 * ```ts
 * import { proxyErrorResponse } from "./responses.ts";
 * new TextDecoder().decode(proxyErrorResponse(421, "no route for app.example.com"));
 * // "HTTP/1.1 421 Misdirected Request\r\n" +
 * // "Content-Type: text/plain; charset=utf-8\r\n" +
 * // "Content-Length: 50\r\n" +
 * // "Connection: close\r\n" +
 * // "Cache-Control: no-store\r\n" +
 * // "\r\n" +
 * // "Misdirected Request: no route for app.example.com\n"
 * ```
 */
export function proxyErrorResponse(status: Exclude<ResponseStatus, 200>, detail?: string): Uint8Array {
  const reason = REASON_PHRASES[status];
  // deno-lint-ignore no-control-regex
  const line = detail ? `${reason}: ${detail.replace(/[\x00-\x1f\x7f]/g, " ")}` : reason;
  return plainTextResponse(status, `${line}\n`);
}

/**
 * Builds a complete HTTP/1.1 response with a plain-text body, sent as given, that ends the connection: what
 * {@linkcode proxyErrorResponse} sends, and the node's own answers (an ACME HTTP-01 key authorization).
 *
 * @example
 * ```ts
 * import { plainTextResponse } from "./responses.ts";
 * new TextDecoder().decode(plainTextResponse(200, "token.thumbprint")).endsWith("\r\n\r\ntoken.thumbprint"); // true
 * ```
 */
export function plainTextResponse(status: ResponseStatus, body: string): Uint8Array {
  const bodyBytes = encoder.encode(body);
  const head = encoder.encode(
    `HTTP/1.1 ${status} ${REASON_PHRASES[status]}\r\n` +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      `Content-Length: ${bodyBytes.length}\r\n` +
      "Connection: close\r\n" +
      "Cache-Control: no-store\r\n" +
      "\r\n",
  );
  const response = new Uint8Array(head.length + bodyBytes.length);
  response.set(head);
  response.set(bodyBytes, head.length);
  return response;
}
