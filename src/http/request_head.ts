/**
 * A pure parser for the head of an HTTP/1.x request, as read on the plain-HTTP listener.
 *
 * The relay only needs the routing name, so this parser finds the end of the head, checks the syntax that
 * RFC 9112 asks a server to refuse, refuses a body whose length could be read two ways (see
 * {@link RequestFraming}), and extracts the host; it never rewrites anything, and the relay forwards the bytes
 * exactly as read.
 *
 * Verdicts are final: every refusal is decided at the first byte (or complete line) that makes it certain, in
 * byte order, so a verdict given for some bytes is the verdict for any longer input that starts with them. A
 * TLS record or other non-HTTP bytes are refused at the first byte, without waiting for more.
 *
 * Reasons are fixed sentences that never echo the client's bytes, so they are safe to log or send back.
 *
 * @module
 */

import { normalizeHostname, trimOws } from "../hostnames/hostname.ts";
import { RequestFraming } from "./request_framing.ts";

/** What the bytes read so far say about the request head. */
export type RequestHeadResult =
  /** No verdict yet: read more bytes and call again with all of them. */
  | { kind: "incomplete" }
  /** A complete, routable head; `host` is normalised, `headLength` counts the bytes up to the blank line. */
  | { kind: "request"; host: string; method: string; target: string; headLength: number }
  /** Not an acceptable HTTP/1.x request head; `reason` is a fixed sentence, safe to log or send back. */
  | { kind: "bad_request"; reason: string }
  /** No end of head within the byte limit. */
  | { kind: "too_large" }
  /** The client closed its side before the head was complete. */
  | { kind: "truncated" };

/** Default limit on the size of a request head, blank line included. */
export const MAX_REQUEST_HEAD_BYTES = 32 * 1024;

const NUL = 0x00;
const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const COLON = 0x3a;
const DEL = 0x7f;
// First byte of a TLS handshake record (RFC 8446 §5.1, ContentType handshake(22)).
const TLS_HANDSHAKE_RECORD = 0x16;

// tchar (RFC 9110 §5.6.2): the characters of a method or a field name.
const IS_TCHAR = new Uint8Array(256);
for (const char of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  IS_TCHAR[char.charCodeAt(0)] = 1;
}

const HTTP2_PREFACE_LINE = "PRI * HTTP/2.0"; // RFC 9113 §3.4
const ABSOLUTE_FORM_AUTHORITY = /^https?:\/\/([^/?#]*)/i;
const URI_SCHEME = /^[a-z][a-z0-9+.-]*:/i;
const HTTP_VERSION = /^HTTP\/[0-9]\.[0-9]$/;
const PORT = /^[0-9]{1,5}$/;
// Every label numeric (decimal or hex, as inet_aton reads them): an IPv4 literal, not a name.
const IPV4_LITERAL = /^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*$/i;

interface RequestLine {
  method: string;
  target: string;
  version: string;
  /** The host of an absolute-form target, already normalised; it wins over the Host header. */
  targetHost: string | null;
}

/** The request line and what the field lines read so far say. */
interface HeadSoFar {
  requestLine: RequestLine;
  hostValues: string[];
  framing: RequestFraming;
}

interface BadRequest {
  kind: "bad_request";
  reason: string;
}

/**
 * Parses the head of an HTTP/1.x request from all the bytes read so far on a connection.
 *
 * Pass every byte read so far on each call (the scan restarts from the beginning, which is cheap within the
 * limit). Bytes after the head are the body: they are left alone, and the relay forwards them anyway.
 *
 * Options: `atEof` says the client has closed its side, so an incomplete head is `truncated`; `maxBytes`
 * (default {@linkcode MAX_REQUEST_HEAD_BYTES}) bounds the head, blank line included. Never throws.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "./request_head.ts";
 * const bytes = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: App.Example.com:8080\r\n\r\n");
 * parseRequestHead(bytes);
 * // { kind: "request", host: "app.example.com", method: "GET", target: "/", headLength: 46 }
 * parseRequestHead(bytes.subarray(0, 20)); // { kind: "incomplete" }
 * parseRequestHead(bytes.subarray(0, 20), { atEof: true }); // { kind: "truncated" }
 * parseRequestHead(new Uint8Array([0x16, 0x03, 0x01]));
 * // { kind: "bad_request", reason: "TLS handshake received on the plain-HTTP listener" }
 * ```
 */
export function parseRequestHead(
  bytes: Uint8Array,
  options: { atEof?: boolean; maxBytes?: number } = {},
): RequestHeadResult {
  const requestedMax = options.maxBytes ?? MAX_REQUEST_HEAD_BYTES;
  const maxBytes = Number.isNaN(requestedMax)
    ? MAX_REQUEST_HEAD_BYTES
    : Math.max(0, Math.floor(requestedMax));
  const limit = Math.min(bytes.length, maxBytes);
  let head: HeadSoFar | null = null;
  let lineStart = 0;
  let inMethod = true; // reading the method of the request line, which is checked byte by byte to fail fast

  for (let i = 0; i < limit; i++) {
    const byte = bytes[i];
    if (byte === NUL) return badRequest("request head contains a NUL byte");
    if (byte === CR) {
      // A CR is only allowed right before LF (RFC 9112 §2.2).
      if (i + 1 < bytes.length && bytes[i + 1] !== LF) return badRequest("request head contains a bare CR");
      continue;
    }
    if (byte === LF) {
      // Lines end in CRLF or a bare LF, which RFC 9112 §2.2 lets a recipient accept.
      const lineEnd = i > lineStart && bytes[i - 1] === CR ? i - 1 : i;
      if (head === null) {
        // Empty lines before the request line are ignored (RFC 9112 §2.2).
        if (lineEnd > lineStart) {
          const parsed = parseRequestLine(bytes, lineStart, lineEnd);
          if ("reason" in parsed) return parsed;
          head = { requestLine: parsed, hostValues: [], framing: new RequestFraming(parsed.version) };
        }
      } else if (lineEnd === lineStart) {
        return finishHead(head, i + 1);
      } else {
        const refusal = readFieldLine(bytes, lineStart, lineEnd, head);
        if (refusal !== null) return badRequest(refusal);
      }
      lineStart = i + 1;
      inMethod = true;
      continue;
    }
    if (head === null && inMethod && IS_TCHAR[byte] === 0) {
      if (byte === SP && i > lineStart) {
        inMethod = false;
      } else if (i === lineStart && byte === TLS_HANDSHAKE_RECORD) {
        return badRequest("TLS handshake received on the plain-HTTP listener");
      } else {
        return badRequest("request line does not start with a method token followed by a space");
      }
    }
  }
  if (bytes.length > maxBytes) return { kind: "too_large" };
  return options.atEof ? { kind: "truncated" } : { kind: "incomplete" };
}

function badRequest(reason: string): BadRequest {
  return { kind: "bad_request", reason };
}

/** request-line = method SP request-target SP HTTP-version (RFC 9112 §3), without its line ending. */
function parseRequestLine(bytes: Uint8Array, start: number, end: number): RequestLine | BadRequest {
  const line = latin1(bytes, start, end);
  if (line === HTTP2_PREFACE_LINE) return badRequest("HTTP/2 prior knowledge is not supported");
  const parts = line.split(" ");
  if (parts.length !== 3 || parts[1] === "") {
    return badRequest("request line is not: method, space, request-target, space, HTTP version");
  }
  const [method, target, version] = parts;
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    return badRequest(
      HTTP_VERSION.test(version)
        ? "HTTP version is not supported; expected HTTP/1.0 or HTTP/1.1"
        : "request line does not end with an HTTP version",
    );
  }
  for (let i = 0; i < target.length; i++) {
    const code = target.charCodeAt(i);
    if (code <= SP || code === DEL) {
      return badRequest("request-target contains whitespace or a control character");
    }
  }
  // Request-target forms: RFC 9112 §3.2.
  if (target.startsWith("/") || target === "*" || method === "CONNECT") {
    return { method, target, version, targetHost: null };
  }
  const authority = ABSOLUTE_FORM_AUTHORITY.exec(target);
  if (authority === null) {
    return badRequest(
      URI_SCHEME.test(target)
        ? "absolute-form request-target must be an http or https URI with a host"
        : "request-target is not in origin, absolute, authority or asterisk form",
    );
  }
  const host = routableHost(authority[1]);
  return typeof host === "string" ? { method, target, version, targetHost: host } : host;
}

/**
 * field-line = field-name ":" OWS field-value OWS (RFC 9112 §5); collects Host values and checks the framing
 * fields. Returns a refusal reason, or null when the line is acceptable.
 */
function readFieldLine(bytes: Uint8Array, start: number, end: number, head: HeadSoFar): string | null {
  if (bytes[start] === SP || bytes[start] === HTAB) {
    // obs-fold, or whitespace before the first field line: both refused (RFC 9112 §5.2, §2.2).
    return "header line starts with whitespace (obsolete line folding is not accepted)";
  }
  let colon = start;
  while (colon < end && IS_TCHAR[bytes[colon]] === 1) colon++;
  if (colon === end || bytes[colon] !== COLON) {
    if (bytes[colon] === SP || bytes[colon] === HTAB) {
      return "whitespace between header field name and colon"; // RFC 9112 §5.1
    }
    return "header line is not a token field name followed by a colon";
  }
  if (colon === start) return "header field name is empty";
  let valueStart = colon + 1;
  let valueEnd = end;
  while (valueStart < valueEnd && (bytes[valueStart] === SP || bytes[valueStart] === HTAB)) valueStart++;
  while (valueEnd > valueStart && (bytes[valueEnd - 1] === SP || bytes[valueEnd - 1] === HTAB)) valueEnd--;
  for (let i = valueStart; i < valueEnd; i++) {
    const byte = bytes[i];
    // field-value allows VCHAR, obs-text, SP and HTAB (RFC 9110 §5.5).
    if ((byte < SP && byte !== HTAB) || byte === DEL) {
      return "header field value contains a control character";
    }
  }
  // Only the names read here are decoded: "host", "content-length" and "transfer-encoding".
  const nameLength = colon - start;
  if (nameLength !== 4 && nameLength !== 14 && nameLength !== 17) return null;
  const name = latin1(bytes, start, colon).toLowerCase();
  const value = latin1(bytes, valueStart, valueEnd);
  if (name !== "host") return head.framing.readField(name, value);
  head.hostValues.push(value);
  return null;
}

/** The blank line has been read: check the framing, then decide the routing host (RFC 9112 §3.2, §3.2.2). */
function finishHead(head: HeadSoFar, headLength: number): RequestHeadResult {
  const framingRefusal = head.framing.finish();
  if (framingRefusal !== null) return badRequest(framingRefusal);
  const { requestLine, hostValues } = head;
  if (hostValues.length > 1) return badRequest("more than one Host header");
  let host = requestLine.targetHost;
  if (host === null) {
    if (hostValues.length === 0) return badRequest("missing Host header");
    const fromHeader = routableHost(hostValues[0]);
    if (typeof fromHeader !== "string") return fromHeader;
    host = fromHeader;
  }
  return { kind: "request", host, method: requestLine.method, target: requestLine.target, headLength };
}

/** uri-host [ ":" port ] (RFC 9110 §7.2) to a normalised route name, or the reason it cannot be one. */
function routableHost(raw: string): string | BadRequest {
  if (trimOws(raw) === "") return badRequest("Host is empty");
  if (raw.includes("@")) return badRequest("Host must not contain userinfo");
  if (raw.startsWith("[")) return badRequest("Host is an IPv6 literal, which cannot be routed");
  let name = raw;
  const colon = raw.lastIndexOf(":");
  if (colon >= 0) {
    const port = raw.slice(colon + 1);
    if (!PORT.test(port) || Number(port) > 65535) {
      return badRequest("Host has an invalid port; expected 1 to 5 digits, at most 65535");
    }
    name = raw.slice(0, colon);
  }
  const normalized = normalizeHostname(name);
  if (normalized !== null) return normalized;
  const bare = trimOws(name).replace(/\.$/, "");
  return badRequest(
    IPV4_LITERAL.test(bare)
      ? "Host is an IP literal, not a routable hostname"
      : "Host is not a routable hostname",
  );
}

/** Bytes as ISO-8859-1 text: one character per byte, so nothing is lost and nothing can fail. */
function latin1(bytes: Uint8Array, start: number, end: number): string {
  let text = "";
  for (let i = start; i < end; i++) text += String.fromCharCode(bytes[i]);
  return text;
}
