import { deepStrictEqual, equal, ok } from "node:assert/strict";
import fc from "fast-check";
import {
  MAX_REQUEST_HEAD_BYTES,
  parseRequestHead,
  type RequestHeadResult,
} from "../../src/http/request_head.ts";
import { captureRequest, curl, fetchFrom } from "./real_clients.ts";

/** One byte per character, so tests can write any byte (`\x16`, `\xff`) in a string. */
function bytesOf(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}

function parse(text: string, options?: { atEof?: boolean; maxBytes?: number }): RequestHeadResult {
  return parseRequestHead(bytesOf(text), options);
}

function request(host: string, method: string, target: string, head: string): RequestHeadResult {
  return { kind: "request", host, method, target, headLength: head.length };
}

function badRequest(reason: string): RequestHeadResult {
  return { kind: "bad_request", reason };
}

const CURL_HEAD =
  "GET /path HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const BROWSER_HEAD = "GET /dashboard?tab=usage&sort=-date HTTP/1.1\r\n" +
  "Host: app.example.com\r\n" +
  "Connection: keep-alive\r\n" +
  'sec-ch-ua: "Chromium";v="130", "Google Chrome";v="130", "Not?A_Brand";v="99"\r\n' +
  "sec-ch-ua-mobile: ?0\r\n" +
  'sec-ch-ua-platform: "Linux"\r\n' +
  "Upgrade-Insecure-Requests: 1\r\n" +
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r\n" +
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
  "Sec-Fetch-Site: none\r\n" +
  "Sec-Fetch-Mode: navigate\r\n" +
  "Sec-Fetch-User: ?1\r\n" +
  "Sec-Fetch-Dest: document\r\n" +
  "Accept-Encoding: gzip, deflate, br, zstd\r\n" +
  "Accept-Language: en-GB,en;q=0.9,fr;q=0.8\r\n" +
  "Cookie: session=abc123; theme=dark\r\n" +
  'If-None-Match: W/"5e-1a2b3c"\r\n' +
  "\r\n";
const ACME_HEAD = "GET /.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0 HTTP/1.1\r\n" +
  "Host: app.example.com\r\n" +
  "User-Agent: Mozilla/5.0 (compatible; Let's Encrypt validation server; +https://www.letsencrypt.org)\r\n" +
  "Accept: */*\r\n" +
  "Accept-Encoding: gzip\r\n" +
  "Connection: close\r\n" +
  "\r\n";
const ABSOLUTE_FORM_HEAD =
  "GET http://App.Example.com:8080/x?y=1 HTTP/1.1\r\nHost: other.example.com\r\n\r\n";
const LF_ONLY_HEAD = "POST /submit HTTP/1.1\nHost: app.example.com\nContent-Length: 0\n\n";

// Normal requests

Deno.test("a curl-style request routes by its Host header", () => {
  deepStrictEqual(parse(CURL_HEAD), request("app.example.com", "GET", "/path", CURL_HEAD));
});

Deno.test("a browser-style request with many headers routes by its Host header", () => {
  deepStrictEqual(
    parse(BROWSER_HEAD),
    request("app.example.com", "GET", "/dashboard?tab=usage&sort=-date", BROWSER_HEAD),
  );
});

Deno.test("an ACME HTTP-01 challenge request routes by its Host header", () => {
  deepStrictEqual(
    parse(ACME_HEAD),
    request(
      "app.example.com",
      "GET",
      "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
      ACME_HEAD,
    ),
  );
});

Deno.test("an absolute-form target's host wins over the Host header", () => {
  deepStrictEqual(
    parse(ABSOLUTE_FORM_HEAD),
    request("app.example.com", "GET", "http://App.Example.com:8080/x?y=1", ABSOLUTE_FORM_HEAD),
  );
});

Deno.test("an absolute-form target routes without a Host header, and an invalid Host header is ignored", () => {
  const withoutHost = "GET HTTPS://app.example.com HTTP/1.0\r\n\r\n";
  deepStrictEqual(
    parse(withoutHost),
    request("app.example.com", "GET", "HTTPS://app.example.com", withoutHost),
  );
  const invalidHost = "GET http://app.example.com/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  deepStrictEqual(
    parse(invalidHost),
    request("app.example.com", "GET", "http://app.example.com/", invalidHost),
  );
});

Deno.test("an HTTP/1.0 request with a Host header routes by it", () => {
  const head = "GET /index.html HTTP/1.0\r\nHost: app.example.com\r\n\r\n";
  deepStrictEqual(parse(head), request("app.example.com", "GET", "/index.html", head));
});

Deno.test("the Host is normalised: port stripped, one trailing dot dropped, lower-cased, whitespace trimmed", () => {
  const cases: Array<[string, string]> = [
    ["app.example.com:8080", "app.example.com"],
    ["app.example.com:1", "app.example.com"],
    ["app.example.com:65535", "app.example.com"],
    ["app.example.com.", "app.example.com"],
    ["app.example.com.:443", "app.example.com"],
    ["APP.Example.COM", "app.example.com"],
    ["localhost:3000", "localhost"],
    ["_acme-challenge.example.com", "_acme-challenge.example.com"],
  ];
  for (const [value, host] of cases) {
    for (const field of [`Host: ${value}`, `host:${value}`, `HOST: \t${value} \t`]) {
      const head = `GET / HTTP/1.1\r\n${field}\r\n\r\n`;
      deepStrictEqual(parse(head), request(host, "GET", "/", head), field);
    }
  }
});

Deno.test("bare LF line endings are accepted, alone or mixed with CRLF", () => {
  deepStrictEqual(parse(LF_ONLY_HEAD), request("app.example.com", "POST", "/submit", LF_ONLY_HEAD));
  const mixed = "GET / HTTP/1.1\r\nHost: app.example.com\nAccept: */*\r\n\n";
  deepStrictEqual(parse(mixed), request("app.example.com", "GET", "/", mixed));
});

Deno.test("empty lines before the request line are skipped and counted in the head length", () => {
  const head = "\r\n\n\r\nGET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
  deepStrictEqual(parse(head), request("app.example.com", "GET", "/", head));
});

Deno.test("asterisk-form and CONNECT authority-form targets route by the Host header", () => {
  const options = "OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
  deepStrictEqual(parse(options), request("app.example.com", "OPTIONS", "*", options));
  const connect = "CONNECT app.example.com:443 HTTP/1.1\r\nHost: app.example.com:443\r\n\r\n";
  deepStrictEqual(parse(connect), request("app.example.com", "CONNECT", "app.example.com:443", connect));
});

Deno.test("any token is a method, and obs-text is kept in values and targets", () => {
  const head = "PROPFIND /caf\xc3\xa9 HTTP/1.1\r\nHost: app.example.com\r\nX-Note: \xe9t\xe9\r\n\r\n";
  deepStrictEqual(parse(head), request("app.example.com", "PROPFIND", "/caf\xc3\xa9", head));
});

Deno.test("bytes after the blank line are body: headLength stops at the blank line", () => {
  const head = "POST /form HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 20\r\n\r\n";
  for (
    const body of [
      "a=b",
      "\r\n\r\nGET / HTTP/1.1\r\n",
      "\x00\x16\x03\xff",
      "x".repeat(MAX_REQUEST_HEAD_BYTES),
    ]
  ) {
    deepStrictEqual(parse(head + body), request("app.example.com", "POST", "/form", head));
    deepStrictEqual(parse(head + body, { atEof: true }), request("app.example.com", "POST", "/form", head));
  }
});

// Refusals

Deno.test("a TLS ClientHello is refused at its first byte", () => {
  const reason = badRequest("TLS handshake received on the plain-HTTP listener");
  deepStrictEqual(parseRequestHead(Uint8Array.of(0x16)), reason);
  deepStrictEqual(
    parseRequestHead(Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc)),
    reason,
  );
  deepStrictEqual(parseRequestHead(Uint8Array.of(0x16), { atEof: true }), reason);
});

Deno.test("bytes that cannot start a method token are refused at once", () => {
  const reason = badRequest("request line does not start with a method token followed by a space");
  for (const start of [" GET", "\tGET", "GET\t", "(", "G(", "\x80", '{"jsonrpc"', "\x03\x00\x00"]) {
    deepStrictEqual(parse(start), reason, JSON.stringify(start));
  }
});

Deno.test("malformed request lines are refused when the line ends", () => {
  const reason = badRequest("request line is not: method, space, request-target, space, HTTP version");
  for (
    const line of [
      "GET",
      "GET /",
      "GET  / HTTP/1.1",
      "GET / HTTP/1.1 ",
      "GET / HTTP/1.1 extra",
      "SSH-2.0-OpenSSH_9.2p1 Debian-2",
    ]
  ) {
    deepStrictEqual(parse(`${line}\r\n`), reason, line);
  }
  deepStrictEqual(parse("GET / http/1.1\r\n"), badRequest("request line does not end with an HTTP version"));
  deepStrictEqual(parse("GET / HTTP/1\r\n"), badRequest("request line does not end with an HTTP version"));
});

Deno.test("HTTP versions other than 1.0 and 1.1 are refused", () => {
  const reason = badRequest("HTTP version is not supported; expected HTTP/1.0 or HTTP/1.1");
  for (const version of ["HTTP/0.9", "HTTP/1.2", "HTTP/2.0", "HTTP/3.0"]) {
    deepStrictEqual(parse(`GET / ${version}\r\nHost: app.example.com\r\n\r\n`), reason, version);
  }
});

Deno.test("the HTTP/2 connection preface is refused as soon as its first line is in", () => {
  const reason = badRequest("HTTP/2 prior knowledge is not supported");
  deepStrictEqual(parse("PRI * HTTP/2.0\r\n"), reason);
  deepStrictEqual(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), reason);
});

Deno.test("request-targets that are not in a known form are refused", () => {
  const cases: Array<[string, string]> = [
    ["example.com", "request-target is not in origin, absolute, authority or asterisk form"],
    ["?x", "request-target is not in origin, absolute, authority or asterisk form"],
    ["ftp://app.example.com/", "absolute-form request-target must be an http or https URI with a host"],
    ["http:app.example.com", "absolute-form request-target must be an http or https URI with a host"],
    ["/a\x01b", "request-target contains whitespace or a control character"],
    ["/a\x7fb", "request-target contains whitespace or a control character"],
    ["/a\tb", "request-target contains whitespace or a control character"],
  ];
  for (const [target, reason] of cases) {
    deepStrictEqual(
      parse(`GET ${target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n`),
      badRequest(reason),
      target,
    );
  }
});

Deno.test("a bare CR or a NUL byte is refused where it appears", () => {
  deepStrictEqual(parse("GET / HTTP/1.1\rHost: a"), badRequest("request head contains a bare CR"));
  deepStrictEqual(parse("GET / HTTP/1.1\r\nHost: a\r\r\n"), badRequest("request head contains a bare CR"));
  deepStrictEqual(parse("GET / HTTP/1.1\r\nX-A: \x00"), badRequest("request head contains a NUL byte"));
  deepStrictEqual(parse("\x00"), badRequest("request head contains a NUL byte"));
  // A CR at the end of the bytes read so far may still be followed by LF.
  deepStrictEqual(parse("GET / HTTP/1.1\r"), { kind: "incomplete" });
});

Deno.test("malformed header lines are refused", () => {
  const cases: Array<[string, string]> = [
    ["X-A: b\r\n c", "header line starts with whitespace (obsolete line folding is not accepted)"],
    ["X-A: b\r\n\tc", "header line starts with whitespace (obsolete line folding is not accepted)"],
    [" Host: app.example.com", "header line starts with whitespace (obsolete line folding is not accepted)"],
    ["Host : app.example.com", "whitespace between header field name and colon"],
    ["Host\t: app.example.com", "whitespace between header field name and colon"],
    ["X(A): b", "header line is not a token field name followed by a colon"],
    ["NoColonHere", "header line is not a token field name followed by a colon"],
    [": b", "header field name is empty"],
    ["X-A: a\x01b", "header field value contains a control character"],
    ["X-A: a\x7f", "header field value contains a control character"],
  ];
  for (const [line, reason] of cases) {
    const head = `GET / HTTP/1.1\r\nHost: app.example.com\r\n${line}\r\n\r\n`;
    const first = `GET / HTTP/1.1\r\n${line}\r\nHost: app.example.com\r\n\r\n`;
    deepStrictEqual(parse(head), badRequest(reason), line);
    deepStrictEqual(parse(first), badRequest(reason), line);
  }
});

Deno.test("a missing or repeated Host header is refused", () => {
  deepStrictEqual(parse("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), badRequest("missing Host header"));
  deepStrictEqual(parse("GET / HTTP/1.0\r\n\r\n"), badRequest("missing Host header"));
  deepStrictEqual(
    parse("GET / HTTP/1.1\r\nX-Host: app.example.com\r\n\r\n"),
    badRequest("missing Host header"),
  );
  const twice = badRequest("more than one Host header");
  deepStrictEqual(parse("GET / HTTP/1.1\r\nHost: a.example.com\r\nhost: b.example.com\r\n\r\n"), twice);
  deepStrictEqual(parse("GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: a.example.com\r\n\r\n"), twice);
  // Even when the absolute-form target names the host (RFC 9112 §3.2: MUST respond with 400).
  deepStrictEqual(parse("GET http://a.example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), twice);
});

Deno.test("Host values that cannot be routed are refused with the reason", () => {
  const cases: Array<[string, string]> = [
    ["", "Host is empty"],
    ["   ", "Host is empty"],
    ["app.example.com:", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["app.example.com:65536", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["app.example.com:123456", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["app.example.com:8o", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["app.example.com:+80", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["[::1]", "Host is an IPv6 literal, which cannot be routed"],
    ["[2001:db8::1]:8080", "Host is an IPv6 literal, which cannot be routed"],
    ["user@app.example.com", "Host must not contain userinfo"],
    ["user:pw@app.example.com:80", "Host must not contain userinfo"],
    ["127.0.0.1", "Host is an IP literal, not a routable hostname"],
    ["127.0.0.1:8080", "Host is an IP literal, not a routable hostname"],
    ["10.0.0.1.", "Host is an IP literal, not a routable hostname"],
    ["0x7f.1", "Host is an IP literal, not a routable hostname"],
    ["2130706433", "Host is an IP literal, not a routable hostname"],
    ["app example.com", "Host is not a routable hostname"],
    ["-app.example.com", "Host is not a routable hostname"],
    ["app..example.com", "Host is not a routable hostname"],
    ["caf\xc3\xa9.example.com", "Host is not a routable hostname"],
    ["app.example.123", "Host is not a routable hostname"],
    ["a:b:80", "Host is not a routable hostname"],
    ["::1", "Host is not a routable hostname"],
    [`${"a".repeat(64)}.example.com`, "Host is not a routable hostname"],
    // Only SP and HTAB are optional whitespace (RFC 9110 §5.6.3): a no-break space is part of the value.
    ["\xa0app.example.com", "Host is not a routable hostname"],
    ["app.example.com\xa0", "Host is not a routable hostname"],
    ["app.example.com\xa0:8080", "Host is not a routable hostname"],
    ["\xa0", "Host is not a routable hostname"],
  ];
  for (const [value, reason] of cases) {
    deepStrictEqual(parse(`GET / HTTP/1.1\r\nHost: ${value}\r\n\r\n`), badRequest(reason), value);
  }
});

Deno.test("an absolute-form target's host is checked like a Host header", () => {
  const cases: Array<[string, string]> = [
    ["http:///path", "Host is empty"],
    ["http://user:pw@app.example.com/", "Host must not contain userinfo"],
    ["http://[::1]:8080/", "Host is an IPv6 literal, which cannot be routed"],
    ["http://10.0.0.1/", "Host is an IP literal, not a routable hostname"],
    ["http://app.example.com:99999/", "Host has an invalid port; expected 1 to 5 digits, at most 65535"],
    ["https://bad_name!/", "Host is not a routable hostname"],
  ];
  for (const [target, reason] of cases) {
    // Refused as soon as the request line is in: the Host header cannot rescue it.
    deepStrictEqual(parse(`GET ${target} HTTP/1.1\r\n`), badRequest(reason), target);
  }
});

// Message framing (RFC 9112 §6)

/** A request head to app.example.com with these field lines after Host, and the request it must parse to. */
function framed(fields: string[], version = "HTTP/1.1"): { head: string; expected: RequestHeadResult } {
  const head = `POST /upload ${version}\r\nHost: app.example.com\r\n${
    fields.map((f) => `${f}\r\n`).join("")
  }\r\n`;
  return { head, expected: request("app.example.com", "POST", "/upload", head) };
}

Deno.test("one Content-Length, in any case and with optional whitespace, is accepted", () => {
  for (
    const field of [
      "Content-Length: 42",
      "content-length:0",
      "CONTENT-LENGTH: \t 7 \t",
      "Content-Length: 007",
      "Content-Length: 9007199254740991",
    ]
  ) {
    const { head, expected } = framed([field]);
    deepStrictEqual(parse(head), expected, field);
    deepStrictEqual(parse(framed([field], "HTTP/1.0").head), framed([field], "HTTP/1.0").expected, field);
  }
});

Deno.test("Content-Length repeated with the same number, in a list or in several lines, is accepted", () => {
  const cases = [
    ["Content-Length: 5, 5"],
    ["Content-Length: 5,5,\t5"],
    ["Content-Length: 5", "content-length: 5"],
    ["Content-Length: 5", "Content-Length: 5, 5"],
    // The same number written with a leading zero: every decimal reader agrees on it.
    ["Content-Length: 05", "Content-Length: 5"],
  ];
  for (const fields of cases) {
    const { head, expected } = framed(fields);
    deepStrictEqual(parse(head), expected, fields.join(" | "));
  }
});

Deno.test("Transfer-Encoding ending in chunked is accepted: any case, optional whitespace, known codings before", () => {
  const cases = [
    ["Transfer-Encoding: chunked"],
    ["transfer-encoding: Chunked"],
    ["TRANSFER-ENCODING:CHUNKED"],
    ["Transfer-Encoding: \tchunked \t"],
    ["Transfer-Encoding: gzip, chunked"],
    ["Transfer-Encoding: gzip,chunked"],
    ["Transfer-Encoding: GZIP \t,\t chunked"],
    ["Transfer-Encoding: x-gzip, deflate, compress, x-compress, chunked"],
    ["Transfer-Encoding: gzip, gzip, chunked"],
    // Field lines combine in order into one list (RFC 9110 §5.3).
    ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
  ];
  for (const fields of cases) {
    const { head, expected } = framed(fields);
    deepStrictEqual(parse(head), expected, fields.join(" | "));
  }
});

Deno.test("fields whose names only resemble Content-Length or Transfer-Encoding are not framing fields", () => {
  const fields = [
    "Content-Lengths: x",
    "X-Content-Length: 5, 6",
    "Content-Lengtx: +5",
    "Transfer-Encodings: xchunked",
    "X-Transfer-Encoding: chunked",
    "Transfer-Encodinx: gzip",
    "TE: trailers",
  ];
  const { head, expected } = framed(["Content-Length: 5", ...fields]);
  deepStrictEqual(parse(head), expected);
});

Deno.test("framing headers written with an underscore are refused: gateways would read them as the real ones", () => {
  for (const field of ["Transfer_Encoding: chunked", "Content_Length: 5", "transfer_encoding: gzip"]) {
    const head = `POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n${field}\r\n\r\n`;
    deepStrictEqual(parse(head), {
      kind: "bad_request",
      reason: "framing header written with an underscore (Content_Length, Transfer_Encoding)",
    });
  }
});

Deno.test("Content-Length together with Transfer-Encoding is refused, in either order", () => {
  const reason = badRequest("both Content-Length and Transfer-Encoding are present");
  const cases = [
    ["Content-Length: 5", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: chunked", "Content-Length: 5"],
    ["Content-Length: 0", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: gzip, chunked", "content-length: 100"],
  ];
  for (const fields of cases) deepStrictEqual(parse(framed(fields).head), reason, fields.join(" | "));
});

Deno.test("Content-Length values that differ are refused, in a list or in several lines", () => {
  const reason = badRequest("Content-Length values differ");
  const cases = [
    ["Content-Length: 5, 6"],
    ["Content-Length: 5,5,6"],
    ["Content-Length: 5", "Content-Length: 6"],
    ["Content-Length: 0", "Content-Length: 5, 0"],
    ["Content-Length: 5", "Content-Length: 50"],
  ];
  for (const fields of cases) deepStrictEqual(parse(framed(fields).head), reason, fields.join(" | "));
});

Deno.test("a Content-Length that is not a non-negative decimal integer is refused", () => {
  const notDecimal = "Content-Length is not a decimal number";
  const cases: Array<[string, string]> = [
    ["+5", notDecimal],
    ["-1", notDecimal],
    ["0x10", notDecimal],
    ["1e3", notDecimal],
    ["5.0", notDecimal],
    ["", notDecimal],
    ["1 0", notDecimal],
    ["1\t0", notDecimal],
    ["5,", notDecimal],
    [", 5", notDecimal],
    ["5,,5", notDecimal],
    ["5;", notDecimal],
    ["five", notDecimal],
    ["Infinity", notDecimal],
    // NBSP is obs-text, not whitespace to a field parser: String.prototype.trim() must not strip it.
    ["5\xa0", notDecimal],
    ["\xa05", notDecimal],
    ["9007199254740992", "Content-Length is larger than 2^53 - 1"],
    ["9007199254740993", "Content-Length is larger than 2^53 - 1"],
    ["99999999999999999999999999999999", "Content-Length is larger than 2^53 - 1"],
    ["5, 18446744073709551621", "Content-Length is larger than 2^53 - 1"],
  ];
  for (const [value, reason] of cases) {
    deepStrictEqual(parse(framed([`Content-Length: ${value}`]).head), badRequest(reason), value);
  }
});

Deno.test("a Transfer-Encoding that does not end in one chunked, with known codings only, is refused", () => {
  const notLast = "Transfer-Encoding does not end with chunked";
  const unknown = "Transfer-Encoding has a coding other than chunked, gzip, deflate or compress";
  const twice = "Transfer-Encoding applies chunked more than once";
  const empty = "Transfer-Encoding has an empty coding";
  const cases: Array<[string[], string]> = [
    [["Transfer-Encoding: xchunked"], unknown],
    [["Transfer-Encoding: chunkedx"], unknown],
    [["Transfer-Encoding: chunked\xa0"], unknown],
    [["Transfer-Encoding: chunked;ext=1"], unknown],
    [['Transfer-Encoding: "chunked"'], unknown],
    [["Transfer-Encoding: identity"], unknown],
    [["Transfer-Encoding: identity, chunked"], unknown],
    [["Transfer-Encoding: br, chunked"], unknown],
    [["Transfer-Encoding: chunked, gzip"], notLast],
    [["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"], notLast],
    [["Transfer-Encoding: gzip"], notLast],
    [["Transfer-Encoding: gzip", "Transfer-Encoding: deflate"], notLast],
    [["Transfer-Encoding: chunked, chunked"], twice],
    [["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], twice],
    [["Transfer-Encoding:"], empty],
    [["Transfer-Encoding: \t "], empty],
    [["Transfer-Encoding: chunked,"], empty],
    [["Transfer-Encoding: , chunked"], empty],
    [["Transfer-Encoding: gzip,,chunked"], empty],
  ];
  for (const [fields, reason] of cases) {
    deepStrictEqual(parse(framed(fields).head), badRequest(reason), fields.join(" | "));
  }
});

Deno.test("Transfer-Encoding on an HTTP/1.0 request is refused, even with a Content-Length", () => {
  const reason = badRequest("Transfer-Encoding on an HTTP/1.0 request");
  for (
    const fields of [
      ["Transfer-Encoding: chunked"],
      ["Content-Length: 5", "Transfer-Encoding: chunked"],
      ["Transfer-Encoding: chunked", "Content-Length: 5"],
    ]
  ) {
    deepStrictEqual(parse(framed(fields, "HTTP/1.0").head), reason, fields.join(" | "));
  }
});

Deno.test("folded or space-before-colon framing fields are refused by the field line syntax", () => {
  const cases: Array<[string[], string]> = [
    [
      ["Transfer-Encoding: gzip", " chunked"],
      "header line starts with whitespace (obsolete line folding is not accepted)",
    ],
    [
      ["Content-Length: 5", "\t6"],
      "header line starts with whitespace (obsolete line folding is not accepted)",
    ],
    [["Transfer-Encoding : chunked"], "whitespace between header field name and colon"],
    [["Content-Length\t: 5"], "whitespace between header field name and colon"],
  ];
  for (const [fields, reason] of cases) {
    deepStrictEqual(parse(framed(fields).head), badRequest(reason), fields.join(" | "));
  }
});

Deno.test("a framing refusal comes at the field line that makes it certain; a coding before chunked waits", () => {
  const start = "POST / HTTP/1.1\r\nHost: app.example.com\r\n";
  deepStrictEqual(
    parse(`${start}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n`),
    badRequest("both Content-Length and Transfer-Encoding are present"),
  );
  deepStrictEqual(
    parse(`${start}Content-Length: 5\r\nContent-Length: 6\n`),
    badRequest("Content-Length values differ"),
  );
  deepStrictEqual(
    parse(`${start}Transfer-Encoding: chunked, gzip\r\n`),
    badRequest("Transfer-Encoding does not end with chunked"),
  );
  // A later line may still append chunked, so "gzip" alone is decided at the blank line.
  deepStrictEqual(parse(`${start}Transfer-Encoding: gzip\r\n`), { kind: "incomplete" });
  deepStrictEqual(
    parse(`${start}Transfer-Encoding: gzip\r\n\r\n`),
    badRequest("Transfer-Encoding does not end with chunked"),
  );
  // Framing is decided before routing: a head with both faults gets the framing reason.
  deepStrictEqual(
    parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
    badRequest("Transfer-Encoding does not end with chunked"),
  );
});

// Size limit

Deno.test("a head of exactly maxBytes is accepted; one byte more is too large", () => {
  const head = "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
  deepStrictEqual(parse(head, { maxBytes: head.length }), request("app.example.com", "GET", "/", head));
  deepStrictEqual(parse(head, { maxBytes: head.length - 1 }), { kind: "too_large" });
  const padded = `GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Pad: ${
    "p".repeat(MAX_REQUEST_HEAD_BYTES - 50)
  }\r\n\r\n`;
  equal(padded.length, MAX_REQUEST_HEAD_BYTES);
  deepStrictEqual(parse(padded), request("app.example.com", "GET", "/", padded));
});

Deno.test("more than maxBytes without the end of the head is too large, at once and even at EOF", () => {
  const start = "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Pad: ";
  const atLimit = start + "p".repeat(MAX_REQUEST_HEAD_BYTES - start.length);
  deepStrictEqual(parse(atLimit), { kind: "incomplete" });
  deepStrictEqual(parse(atLimit + "p"), { kind: "too_large" });
  deepStrictEqual(parse(atLimit + "p", { atEof: true }), { kind: "too_large" });
  deepStrictEqual(parse(`${atLimit}\r\n\r\n`), { kind: "too_large" });
  deepStrictEqual(parse("GET /" + "a".repeat(100), { maxBytes: 64 }), { kind: "too_large" });
  deepStrictEqual(parse("\r\n".repeat(40), { maxBytes: 64 }), { kind: "too_large" });
  deepStrictEqual(parse("G", { maxBytes: 0 }), { kind: "too_large" });
});

Deno.test("nothing read, or an unfinished head at EOF, is truncated", () => {
  deepStrictEqual(parse(""), { kind: "incomplete" });
  deepStrictEqual(parse("", { atEof: true }), { kind: "truncated" });
  deepStrictEqual(parse("GET / HTTP/1.1\r\nHost: app.example.com\r\n", { atEof: true }), {
    kind: "truncated",
  });
});

// Every split

Deno.test("every prefix of a head is incomplete, or truncated at EOF; every longer input gives the request", () => {
  const heads: Array<[string, RequestHeadResult]> = [
    [CURL_HEAD, request("app.example.com", "GET", "/path", CURL_HEAD)],
    [BROWSER_HEAD, request("app.example.com", "GET", "/dashboard?tab=usage&sort=-date", BROWSER_HEAD)],
    [LF_ONLY_HEAD, request("app.example.com", "POST", "/submit", LF_ONLY_HEAD)],
    [
      ABSOLUTE_FORM_HEAD,
      request("app.example.com", "GET", "http://App.Example.com:8080/x?y=1", ABSOLUTE_FORM_HEAD),
    ],
  ];
  for (const [head, expected] of heads) {
    const bytes = bytesOf(`${head}body\r\n\r\nmore`);
    for (let length = 0; length < head.length; length++) {
      deepStrictEqual(parseRequestHead(bytes.subarray(0, length)), { kind: "incomplete" }, `${length}`);
      deepStrictEqual(parseRequestHead(bytes.subarray(0, length), { atEof: true }), { kind: "truncated" });
    }
    for (let length = head.length; length <= bytes.length; length++) {
      deepStrictEqual(parseRequestHead(bytes.subarray(0, length)), expected, `${length}`);
    }
  }
});

// Real clients

Deno.test("what curl sends is parsed: plain request with a Host header", async () => {
  const { bytes, result } = await captureRequest(
    curl(["-H", "Host: App.Example.com", "http://127.0.0.1:{port}/path?q=1"]),
  );
  const head = new TextDecoder().decode(bytes);
  ok(head.startsWith("GET /path?q=1 HTTP/1.1\r\nHost: App.Example.com\r\n"), head);
  deepStrictEqual(result, request("app.example.com", "GET", "/path?q=1", head));
});

Deno.test("what curl sends through a proxy is parsed: absolute-form target", async () => {
  const { bytes, result } = await captureRequest(
    curl(["--proxy", "http://127.0.0.1:{port}", "http://app.example.com:8080/x?y=1"]),
  );
  const head = new TextDecoder().decode(bytes);
  ok(
    head.startsWith("GET http://app.example.com:8080/x?y=1 HTTP/1.1\r\nHost: app.example.com:8080\r\n"),
    head,
  );
  deepStrictEqual(result, request("app.example.com", "GET", "http://app.example.com:8080/x?y=1", head));
});

Deno.test("what curl sends is parsed: HTTP/1.0 with an upper-case Host and a trailing dot", async () => {
  const { bytes, result } = await captureRequest(
    curl(["--http1.0", "-H", "Host: APP.Example.COM.:80", "http://127.0.0.1:{port}/"]),
  );
  const head = new TextDecoder().decode(bytes);
  ok(head.startsWith("GET / HTTP/1.0\r\n"), head);
  deepStrictEqual(result, request("app.example.com", "GET", "/", head));
});

Deno.test("what curl sends is parsed: a POST body follows the head", async () => {
  const { bytes, result } = await captureRequest(
    curl(["--data", "a=b&c=d", "-H", "Host: app.example.com", "http://127.0.0.1:{port}/form"]),
    { bodyBytes: 7 },
  );
  const text = new TextDecoder().decode(bytes);
  ok(text.endsWith("\r\n\r\na=b&c=d"), text);
  deepStrictEqual(result, request("app.example.com", "POST", "/form", text.slice(0, -"a=b&c=d".length)));
});

Deno.test("what curl sends without a Host header is refused", async () => {
  const { result } = await captureRequest(curl(["-H", "Host:", "http://127.0.0.1:{port}/"]));
  deepStrictEqual(result, badRequest("missing Host header"));
});

Deno.test("curl with HTTP/2 prior knowledge is refused at its preface", async () => {
  const { bytes, result } = await captureRequest(
    curl(["--http2-prior-knowledge", "-H", "Host: app.example.com", "http://127.0.0.1:{port}/"]),
  );
  ok(new TextDecoder().decode(bytes).startsWith("PRI * HTTP/2.0\r\n"));
  deepStrictEqual(result, badRequest("HTTP/2 prior knowledge is not supported"));
});

Deno.test("curl speaking TLS to the plain-HTTP port is refused at the first read", async () => {
  const { bytes, result } = await captureRequest(
    curl(["--insecure", "--resolve", "app.example.com:{port}:127.0.0.1", "https://app.example.com:{port}/"]),
  );
  deepStrictEqual([...bytes.subarray(0, 2)], [0x16, 0x03]);
  deepStrictEqual(result, badRequest("TLS handshake received on the plain-HTTP listener"));
});

Deno.test("what fetch() sends is parsed: its host header is lower-case and last", async () => {
  const { bytes, result } = await captureRequest(fetchFrom("localhost", "/api?q=1"));
  const head = new TextDecoder().decode(bytes);
  ok(/\r\nhost: localhost:\d+\r\n\r\n$/.test(head), head);
  deepStrictEqual(result, request("localhost", "GET", "/api?q=1", head));
});

Deno.test("what fetch() sends to an IP address is refused as an IP literal", async () => {
  const { result } = await captureRequest(fetchFrom("127.0.0.1", "/"));
  deepStrictEqual(result, badRequest("Host is an IP literal, not a routable hostname"));
});

// Properties

const TCHARS = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"];
const token = fc.string({ unit: fc.constantFrom(...TCHARS), minLength: 1, maxLength: 12 });
const visible = fc.integer({ min: 0x21, max: 0x7e }).map((code) => String.fromCharCode(code));
const ows = fc.constantFrom("", " ", "\t", " \t ");
const lineEnding = fc.constantFrom("\r\n", "\n");
const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/);
const lastLabel = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);

/** A valid request head with a random header set and exactly one Host header, and its expected result. */
const validRequest = fc.record({
  method: token,
  path: fc.array(fc.string({ unit: visible, maxLength: 8 }).map((s) => s.replaceAll("/", "")), {
    maxLength: 4,
  }),
  version: fc.constantFrom("HTTP/1.0", "HTTP/1.1"),
  labels: fc.array(label, { maxLength: 3 }),
  last: lastLabel,
  upper: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
  trailingDot: fc.boolean(),
  port: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
  hostName: fc.constantFrom("Host", "host", "HOST", "hOsT"),
  headers: fc.array(
    fc.record({
      // Host is placed below; the framing fields have their own property.
      name: token.filter((name) =>
        !["host", "content-length", "transfer-encoding"].includes(name.toLowerCase())
      ),
      value: fc.array(fc.oneof(visible, fc.constantFrom(" ", "\t", "\x80", "\xff")), { maxLength: 20 })
        .map((chars) => chars.join("").trim()),
      before: ows,
      after: ows,
    }),
    { maxLength: 8 },
  ),
  hostIndex: fc.nat(),
  endings: fc.array(lineEnding, { minLength: 11, maxLength: 11 }),
  leadingEmptyLines: fc.array(lineEnding, { maxLength: 2 }),
  body: fc.uint8Array({ maxLength: 40 }),
}).map((r) => {
  const name = [...r.labels, r.last].join(".");
  const written = [...name].map((char, i) => (r.upper[i % r.upper.length] ? char.toUpperCase() : char)).join(
    "",
  );
  const hostValue = `${written}${r.trailingDot ? "." : ""}${r.port === undefined ? "" : `:${r.port}`}`;
  const fields = r.headers.map((h) => `${h.name}:${h.before}${h.value}${h.after}`);
  fields.splice(r.hostIndex % (fields.length + 1), 0, `${r.hostName}: ${hostValue}`);
  const target = `/${r.path.join("/")}`;
  const lines = [`${r.method} ${target} ${r.version}`, ...fields, ""];
  const head = r.leadingEmptyLines.join("") +
    lines.map((line, i) => line + r.endings[i % r.endings.length]).join("");
  const expected = {
    kind: "request",
    host: name,
    method: r.method,
    target,
    headLength: head.length,
  } as const;
  const bytes = new Uint8Array(head.length + r.body.length);
  bytes.set(bytesOf(head));
  bytes.set(r.body, head.length);
  return { bytes, expected };
});

Deno.test("property: a valid request gives the same result at every split, and no verdict before its end", () => {
  fc.assert(
    fc.property(validRequest, ({ bytes, expected }) => {
      for (let length = 0; length < expected.headLength; length++) {
        deepStrictEqual(parseRequestHead(bytes.subarray(0, length)), { kind: "incomplete" });
        deepStrictEqual(parseRequestHead(bytes.subarray(0, length), { atEof: true }), { kind: "truncated" });
      }
      for (let length = expected.headLength; length <= bytes.length; length++) {
        deepStrictEqual(parseRequestHead(bytes.subarray(0, length)), expected);
      }
    }),
    { numRuns: 300 },
  );
});

// The framing rules, stated over the whole header set at once: every rule a head breaks, and no order.
const BOTH_FRAMINGS = "both Content-Length and Transfer-Encoding are present";
const NOT_DECIMAL = "Content-Length is not a decimal number";
const TOO_LARGE = "Content-Length is larger than 2^53 - 1";
const LENGTHS_DIFFER = "Content-Length values differ";
const TE_ON_HTTP10 = "Transfer-Encoding on an HTTP/1.0 request";
const EMPTY_CODING = "Transfer-Encoding has an empty coding";
const UNKNOWN_CODING = "Transfer-Encoding has a coding other than chunked, gzip, deflate or compress";
const CHUNKED_TWICE = "Transfer-Encoding applies chunked more than once";
const CHUNKED_NOT_LAST = "Transfer-Encoding does not end with chunked";
const KNOWN_CODINGS = ["chunked", "gzip", "deflate", "compress", "x-gzip", "x-compress"];
const UNDERSCORE = "framing header written with an underscore (Content_Length, Transfer_Encoding)";

/** Reference model of RFC 9112 §6 as the node applies it: the set of rules the fields break. */
function framingViolations(version: string, fields: Array<{ name: string; value: string }>): Set<string> {
  const elementsOf = (name: string) =>
    fields.filter((field) => field.name.toLowerCase() === name)
      .flatMap((field) => field.value.split(","))
      .map((element) => element.replace(/^[ \t]*/, "").replace(/[ \t]*$/, ""));
  const lengths = elementsOf("content-length");
  const codings = elementsOf("transfer-encoding").map((coding) => coding.toLowerCase());
  const hasLength = lengths.length > 0;
  const hasCodings = codings.length > 0;
  const violations = new Set<string>();
  if (hasLength && hasCodings) violations.add(BOTH_FRAMINGS);
  if (lengths.some((length) => !/^[0-9]+$/.test(length))) violations.add(NOT_DECIMAL);
  const numbers = lengths.filter((length) => /^[0-9]+$/.test(length)).map(BigInt);
  if (numbers.some((n) => n > 2n ** 53n - 1n)) violations.add(TOO_LARGE);
  if (new Set(numbers.filter((n) => n <= 2n ** 53n - 1n)).size > 1) violations.add(LENGTHS_DIFFER);
  if (hasCodings && version === "HTTP/1.0") violations.add(TE_ON_HTTP10);
  if (codings.includes("")) violations.add(EMPTY_CODING);
  if (codings.some((coding) => coding !== "" && !KNOWN_CODINGS.includes(coding))) {
    violations.add(UNKNOWN_CODING);
  }
  if (codings.filter((coding) => coding === "chunked").length > 1) violations.add(CHUNKED_TWICE);
  if (hasCodings && codings.indexOf("chunked") !== codings.length - 1) violations.add(CHUNKED_NOT_LAST);
  if (fields.some((field) => ["content_length", "transfer_encoding"].includes(field.name.toLowerCase()))) {
    violations.add(UNDERSCORE);
  }
  return violations;
}

const listSeparator = fc.constantFrom(",", ", ", " ,", "\t,\t", ",  ");
/** A comma-separated list of `element`s, one to three of them. */
const listOf = (element: fc.Arbitrary<string>) =>
  fc.tuple(fc.array(element, { minLength: 1, maxLength: 3 }), fc.array(listSeparator, { minLength: 2 }))
    .map(([elements, separators]) =>
      elements.reduce((list, element, i) => `${list}${separators[i % separators.length]}${element}`)
    );
const lengthValue = listOf(fc.oneof(
  fc.constantFrom("0", "5", "05", "6", "9007199254740991", "9007199254740992", "18446744073709551621"),
  fc.constantFrom("", "+5", "-1", "0x10", "1e3", "1 0", "5\xa0", "\xa05", "five"),
  fc.nat({ max: 20 }).map(String),
));
const codingValue = listOf(fc.constantFrom(
  "chunked",
  "Chunked",
  "CHUNKED",
  "gzip",
  "GZip",
  "x-gzip",
  "deflate",
  "compress",
  "x-compress",
  "identity",
  "xchunked",
  "chunked;q=1",
  "br",
  "",
  "chunked\xa0",
));
const framingField = fc.oneof(
  fc.record({
    name: fc.constantFrom("Content-Length", "content-length", "CONTENT-LENGTH"),
    value: lengthValue,
  }),
  fc.record({
    name: fc.constantFrom("Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING"),
    value: codingValue,
  }),
  fc.record({
    // Names that only resemble the framing fields, and values that would break the rules if they were read.
    name: fc.constantFrom("X-Content-Length", "Content-Lengths", "Transfer-Encodings", "TE", "Accept"),
    value: fc.oneof(lengthValue, codingValue),
  }),
  fc.record({
    // What CGI-style gateways would read as the framing fields.
    name: fc.constantFrom("Content_Length", "Transfer_Encoding", "transfer_encoding"),
    value: fc.oneof(lengthValue, codingValue),
  }),
);

Deno.test("property: the framing verdict equals the reference model of RFC 9112 §6", () => {
  fc.assert(
    fc.property(
      fc.constantFrom("HTTP/1.0", "HTTP/1.1"),
      fc.array(fc.record({ field: framingField, before: ows, after: ows }), { maxLength: 5 }),
      fc.nat(),
      (version, lines, hostIndex) => {
        const written = lines.map(({ field, before, after }) =>
          `${field.name}:${before}${field.value}${after}`
        );
        written.splice(hostIndex % (written.length + 1), 0, "Host: app.example.com");
        const head = `POST /upload ${version}\r\n${written.map((line) => `${line}\r\n`).join("")}\r\n`;
        const violations = framingViolations(version, lines.map(({ field }) => field));
        const result = parse(head);
        if (violations.size === 0) {
          deepStrictEqual(result, request("app.example.com", "POST", "/upload", head));
        } else {
          equal(result.kind, "bad_request", JSON.stringify(head));
          ok(
            result.kind === "bad_request" && violations.has(result.reason),
            `${result.kind}: ${JSON.stringify(head)}`,
          );
        }
      },
    ),
    { numRuns: 2000 },
  );
});

// A start of a request, then pieces of HTTP and of its mistakes, so random inputs reach every branch.
const httpSoup = fc.tuple(
  fc.constantFrom(
    "",
    "GET / HTTP/1.1\r\n",
    "POST /x HTTP/1.0\n",
    "GET http://",
    "\r\n",
    "PRI * HTTP/2.0\r\n",
  ),
  fc.array(
    fc.oneof(
      fc.constantFrom(
        "Host: app.example.com\r\n",
        "X-A: b\r\n",
        "Content-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        ", ",
        "\r\n\r\n",
        "Host: ",
        "host:",
        "app.example.com",
        "127.0.0.1",
        "[::1]",
        "@",
        ":",
        ":8080",
        "/ ",
        "HTTP/1.1",
        "\r\n",
        "\n",
        "\r",
        " ",
        "\t",
        "\x00",
        "\x16\x03",
        "\xff",
      ),
      fc.string({ maxLength: 4 }),
    ),
    { maxLength: 30 },
  ),
  fc.constantFrom("", "\r\n", "\r\n\r\n", "\n\n"),
).map(([start, pieces, end]) => bytesOf(start + pieces.join("") + end));

const anyBytes = fc.oneof(fc.uint8Array({ maxLength: 300 }), httpSoup);
const maxBytes = fc.option(fc.integer({ min: 0, max: 200 }), { nil: undefined });

Deno.test("property: arbitrary bytes never throw and give a well-formed result", () => {
  fc.assert(
    fc.property(anyBytes, fc.boolean(), maxBytes, (bytes, atEof, max) => {
      const result = parseRequestHead(bytes, { atEof, maxBytes: max });
      const limit = max ?? MAX_REQUEST_HEAD_BYTES;
      switch (result.kind) {
        case "request":
          ok(result.headLength <= bytes.length && result.headLength <= limit);
          ok(result.host.length > 0 && result.method.length > 0 && result.target.length > 0);
          break;
        case "bad_request":
          ok(result.reason.length > 0);
          break;
        case "too_large":
          ok(bytes.length > limit);
          break;
        case "truncated":
          ok(atEof && bytes.length <= limit);
          break;
        case "incomplete":
          ok(!atEof && bytes.length <= limit);
          break;
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: a verdict is final, whatever bytes arrive after it", () => {
  fc.assert(
    fc.property(anyBytes, fc.nat(), maxBytes, (bytes, split, max) => {
      const prefix = bytes.subarray(0, split % (bytes.length + 1));
      const early = parseRequestHead(prefix, { maxBytes: max });
      if (early.kind !== "incomplete") deepStrictEqual(parseRequestHead(bytes, { maxBytes: max }), early);
    }),
    { numRuns: 500 },
  );
});

Deno.test("maxBytes that is not a usable number falls back or clamps, without throwing", () => {
  deepStrictEqual(
    parse(CURL_HEAD, { maxBytes: Number.NaN }),
    request("app.example.com", "GET", "/path", CURL_HEAD),
  );
  deepStrictEqual(
    parse(CURL_HEAD, { maxBytes: Number.POSITIVE_INFINITY }),
    request("app.example.com", "GET", "/path", CURL_HEAD),
  );
  deepStrictEqual(parse(CURL_HEAD, { maxBytes: -5 }), { kind: "too_large" });
});
