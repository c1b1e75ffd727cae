/**
 * The framing of a request's body, checked from its `Content-Length` and `Transfer-Encoding` field lines
 * (RFC 9112 §6), as the head parser reads them.
 *
 * The relay forwards requests unchanged, so any request whose body length two HTTP implementations could read
 * differently is refused instead of passed on: that disagreement is what request smuggling exploits. The
 * rules are those of RFC 9112 §6.1–§6.3 and RFC 9110 §8.6, taking the strict choice wherever the RFCs allow
 * one:
 * - `Content-Length` and `Transfer-Encoding` together are refused (RFC 9112 §6.1 lets a proxy refuse them).
 * - `Content-Length` is `1*DIGIT`, at most 2^53 − 1. Repeated values, in several field lines or in one
 *   comma-separated list, are accepted only when they are all the same number (RFC 9110 §8.6), since every
 *   reader then agrees on the length.
 * - `Transfer-Encoding` is a list of known codings (`chunked`, `gzip`, `deflate`, `compress`, and the
 *   `x-gzip`/`x-compress` aliases of RFC 9112 §7.2), case-insensitive, without parameters, with `chunked` once
 *   and last (RFC 9112 §6.3, §7.1), and only on HTTP/1.1 (RFC 9112 §6.1).
 * - An empty element in either list is refused, although RFC 9110 §5.6.1 asks recipients to skip them:
 *   implementations disagree on `chunked,` and `, 5`, so they are ambiguous.
 *
 * Reasons are fixed sentences that never echo the client's bytes.
 *
 * @module
 */
import { trimOws } from "../hostnames/hostname.ts";

// RFC 9112 §7 and the IANA HTTP Transfer Coding registry; `identity` and `trailers` are reserved, not codings.
const TRANSFER_CODINGS = new Set(["chunked", "gzip", "deflate", "compress", "x-gzip", "x-compress"]);
const DECIMAL = /^[0-9]+$/;
const BOTH = "both Content-Length and Transfer-Encoding are present";

/**
 * The `Content-Length` and `Transfer-Encoding` field lines of one request head, read in order.
 *
 * @example
 * ```ts
 * import { RequestFraming } from "./request_framing.ts";
 * const framing = new RequestFraming("HTTP/1.1");
 * framing.readField("transfer-encoding", "gzip"); // null: chunked may still follow
 * framing.finish(); // "Transfer-Encoding does not end with chunked"
 * new RequestFraming("HTTP/1.1").readField("content-length", "0x10"); // "Content-Length is not a decimal number"
 * ```
 */
export class RequestFraming {
  readonly #isHttp10: boolean;
  #contentLength: number | null = null;
  #hasTransferEncoding = false;
  #chunked = false;

  /** `version` is the request line's HTTP version, `HTTP/1.0` or `HTTP/1.1`. */
  constructor(version: string) {
    this.#isHttp10 = version === "HTTP/1.0";
  }

  /**
   * Reads one field line, `name` lower-case and `value` without its surrounding whitespace; other fields are
   * ignored. Returns the reason the request is refused, as soon as this line makes it certain, or null.
   */
  readField(name: string, value: string): string | null {
    if (name === "content-length") return this.#readContentLength(value);
    if (name === "transfer-encoding") return this.#readTransferEncoding(value);
    // Servers behind CGI-style gateways map `_` to `-`, and would read these as the framing fields.
    if (name === "content_length" || name === "transfer_encoding") {
      return "framing header written with an underscore (Content_Length, Transfer_Encoding)";
    }
    return null;
  }

  /** The head has ended: the reason its framing is refused, or null when it is unambiguous. */
  finish(): string | null {
    // A later Transfer-Encoding line could still have added chunked, so this waits for the end of the head.
    if (this.#hasTransferEncoding && !this.#chunked) return "Transfer-Encoding does not end with chunked";
    return null;
  }

  #readContentLength(value: string): string | null {
    if (this.#hasTransferEncoding) return BOTH;
    for (const element of listElements(value)) {
      if (!DECIMAL.test(element)) return "Content-Length is not a decimal number";
      const length = Number(element);
      if (length > Number.MAX_SAFE_INTEGER) return "Content-Length is larger than 2^53 - 1";
      if (this.#contentLength !== null && this.#contentLength !== length) {
        return "Content-Length values differ";
      }
      this.#contentLength = length;
    }
    return null;
  }

  #readTransferEncoding(value: string): string | null {
    if (this.#isHttp10) return "Transfer-Encoding on an HTTP/1.0 request";
    if (this.#contentLength !== null) return BOTH;
    this.#hasTransferEncoding = true;
    for (const element of listElements(value)) {
      if (element === "") return "Transfer-Encoding has an empty coding";
      const coding = element.toLowerCase();
      if (!TRANSFER_CODINGS.has(coding)) {
        return "Transfer-Encoding has a coding other than chunked, gzip, deflate or compress";
      }
      // chunked must be last, and a sender must not apply it twice (RFC 9112 §6.3, §7.1).
      if (this.#chunked) {
        return coding === "chunked"
          ? "Transfer-Encoding applies chunked more than once"
          : "Transfer-Encoding does not end with chunked";
      }
      this.#chunked = coding === "chunked";
    }
    return null;
  }
}

/**
 * The elements of a comma-separated field value (RFC 9110 §5.6.1), each without its optional whitespace (SP and
 * HTAB only, never the NBSP a backend keeps); empty ones kept.
 */
function listElements(value: string): string[] {
  return value.split(",").map(trimOws);
}
