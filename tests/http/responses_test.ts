import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { proxyErrorResponse } from "../../src/http/responses.ts";
import { curl, fetchFrom, respondTo } from "./real_clients.ts";

const decoder = new TextDecoder();

function expectedResponse(statusLine: string, body: string): string {
  return `HTTP/1.1 ${statusLine}\r\n` +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${new TextEncoder().encode(body).length}\r\n` +
    "Connection: close\r\n" +
    "Cache-Control: no-store\r\n" +
    "\r\n" +
    body;
}

Deno.test("each status gets its standard reason phrase, in the status line and as the body", () => {
  const cases: Array<[400 | 408 | 421 | 502 | 503, string]> = [
    [400, "Bad Request"],
    [408, "Request Timeout"],
    [421, "Misdirected Request"],
    [502, "Bad Gateway"],
    [503, "Service Unavailable"],
  ];
  for (const [status, reason] of cases) {
    equal(decoder.decode(proxyErrorResponse(status)), expectedResponse(`${status} ${reason}`, `${reason}\n`));
  }
});

Deno.test("a detail follows the reason phrase in the body, and Content-Length counts its bytes", () => {
  equal(
    decoder.decode(proxyErrorResponse(421, "no route for app.example.com")),
    "HTTP/1.1 421 Misdirected Request\r\n" +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      "Content-Length: 50\r\n" +
      "Connection: close\r\n" +
      "Cache-Control: no-store\r\n" +
      "\r\n" +
      "Misdirected Request: no route for app.example.com\n",
  );
  const unicode = proxyErrorResponse(503, "café ✓");
  equal(
    decoder.decode(unicode),
    expectedResponse("503 Service Unavailable", "Service Unavailable: café ✓\n"),
  );
  ok(decoder.decode(unicode).includes("Content-Length: 31\r\n"));
});

Deno.test("control characters in a detail become spaces, so the body stays one line", () => {
  equal(
    decoder.decode(proxyErrorResponse(400, "a\r\nX-Injected: 1\tb\x00")),
    expectedResponse("400 Bad Request", "Bad Request: a  X-Injected: 1 b \n"),
  );
});

Deno.test("an empty detail is the same as none", () => {
  deepStrictEqual(proxyErrorResponse(502, ""), proxyErrorResponse(502));
});

Deno.test("curl reads the 400 the proxy sends for a request without a Host header", async () => {
  const { captured, client } = await respondTo(
    curl(["--include", "-H", "Host:", "http://127.0.0.1:{port}/"]),
    ({ result }) => proxyErrorResponse(400, result.kind === "bad_request" ? result.reason : "unexpected"),
  );
  deepStrictEqual(captured.result, { kind: "bad_request", reason: "missing Host header" });
  equal(client.code, 0);
  equal(
    decoder.decode(client.stdout),
    expectedResponse("400 Bad Request", "Bad Request: missing Host header\n"),
  );
});

Deno.test("curl reads a 421 with its status code and body", async () => {
  const { client } = await respondTo(
    curl(["--write-out", "%{http_code}", "-H", "Host: app.example.com", "http://127.0.0.1:{port}/"]),
    () => proxyErrorResponse(421, "no route for app.example.com"),
  );
  equal(decoder.decode(client.stdout), "Misdirected Request: no route for app.example.com\n421");
});

Deno.test("fetch() reads a 503 with its headers and body", async () => {
  const { client } = await respondTo(fetchFrom("localhost", "/"), () => proxyErrorResponse(503));
  equal(client.status, 503);
  equal(client.body, "Service Unavailable\n");
  deepStrictEqual([...client.headers], [
    ["cache-control", "no-store"],
    ["connection", "close"],
    ["content-length", "20"],
    ["content-type", "text/plain; charset=utf-8"],
  ]);
});
