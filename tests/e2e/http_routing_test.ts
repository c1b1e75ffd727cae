/**
 * The plain-HTTP relay port: requests are routed by `Host` to the agent's `http` target and forwarded exactly
 * as the client sent them (ACME HTTP-01 challenges and chunked uploads included); requests that cannot be
 * routed, or whose body framing is ambiguous, get the proxy's own 400, 503 or 431 with `Connection: close`,
 * and the connection ends.
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, type TestNode, waitFor } from "../helpers/cluster.ts";
import { chunked, rawExchange, type RecordingService, recordingService } from "../helpers/raw.ts";
import { concat, patternBytes } from "../helpers/services.ts";
import { makeConfigDir, nodeYaml, spawnNode } from "../helpers/processes.ts";
import { curl } from "../http/real_clients.ts";
import type { Agent } from "../../src/agent/agent.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";

/** Served by a plain HTTP service (`Deno.serve`) that says which Host and path it saw. */
const WEB = "web.test.nexus";
/** Served by a raw recorder that answers like an ACME HTTP-01 responder. */
const ACME = "acme.test.nexus";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ACME_TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const KEY_AUTHORIZATION = `${ACME_TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;
const ACME_REPLY = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" +
  `Content-Length: ${KEY_AUTHORIZATION.length}\r\nConnection: close\r\n\r\n${KEY_AUTHORIZATION}`;

interface Fixture {
  readonly node: TestNode;
  readonly recorder: RecordingService;
  /** Requests the plain HTTP service answered. */
  readonly webRequests: () => number;
  close(): Promise<void>;
}

async function startFixture(): Promise<Fixture> {
  let webRequests = 0;
  const web = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    webRequests += 1;
    const url = new URL(request.url);
    const seen = `host=${request.headers.get("host")} target=${url.pathname}${url.search}\n`;
    if (request.method !== "POST") return new Response(seen);
    // An upload is echoed with its framing, so a test can see it arrived whole and how it was sent.
    const framing = `transfer-encoding=${request.headers.get("transfer-encoding")}\n`;
    return new Response(`${seen}${framing}${await request.text()}`);
  });
  const recorder = recordingService(() => encoder.encode(ACME_REPLY));
  const node = await startTestNode();
  let agent: Agent;
  try {
    agent = await startTestAgent({
      hubUrls: [node.hubUrl],
      hostnames: [WEB, ACME],
      targets: {
        [WEB]: { http: { host: "127.0.0.1", port: web.addr.port } },
        [ACME]: { http: { host: "127.0.0.1", port: recorder.port } },
      },
    });
  } catch (error) {
    await node.close();
    await web.shutdown();
    await recorder.close();
    throw error;
  }
  return {
    node,
    recorder,
    webRequests: () => webRequests,
    async close() {
      await agent.stop(0);
      await node.close();
      await web.shutdown();
      await recorder.close();
    },
  };
}

/** The proxy's own error response, spelled out in full: status line, the five headers, a one-line body. */
function proxyError(status: string, body: string): string {
  return `HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${
      encoder.encode(body).length
    }\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n${body}`;
}

/** Splits an HTTP/1.1 response into its status line, lower-cased headers and body. */
function parseResponse(bytes: Uint8Array): { status: string; headers: Map<string, string>; body: string } {
  const text = decoder.decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end > 0, `not an HTTP response: ${JSON.stringify(text.slice(0, 200))}`);
  const [status, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Map(lines.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as [string, string];
  }));
  return { status, headers, body: text.slice(end + 4) };
}

Deno.test("a request on the HTTP port is routed by Host to the agent's http target", async () => {
  const fixture = await startFixture();
  try {
    const request = `GET /hello?x=1 HTTP/1.1\r\nHost: ${WEB}\r\nConnection: close\r\n\r\n`;
    const response = parseResponse(await rawExchange(fixture.node.httpPort, [encoder.encode(request)]));
    assert.equal(response.status, "HTTP/1.1 200 OK");
    assert.equal(response.body, `host=${WEB} target=/hello?x=1\n`);
    assert.equal(fixture.webRequests(), 1);
    assert.equal(fixture.recorder.accepted, 0);
  } finally {
    await fixture.close();
  }
});

/** Whether curl runs here; when it does not, the test says it is skipped. */
async function curlIsInstalled(t: Deno.TestContext): Promise<boolean> {
  const probe = await new Deno.Command("curl", { args: ["--version"], stdout: "null", stderr: "null" })
    .output().catch(() => null);
  if (probe?.success === true) return true;
  console.log("curl is not installed: this test is skipped");
  await t.step({ name: "curl is not installed: skipped", ignore: true, fn: () => {} });
  return false;
}

Deno.test("curl on the HTTP port reaches the service its Host names", async (t) => {
  if (!await curlIsInstalled(t)) return;
  const fixture = await startFixture();
  try {
    const port = fixture.node.httpPort;
    const output = await new Deno.Command("curl", {
      args: [
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--resolve",
        `${WEB}:${port}:127.0.0.1`,
        `http://${WEB}:${port}/from-curl`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    // curl sends the port in Host; the service sees it unchanged.
    assert.equal(decoder.decode(output.stdout), `host=${WEB}:${port} target=/from-curl\n`);
  } finally {
    await fixture.close();
  }
});

Deno.test("an ACME HTTP-01 challenge request reaches the backend with exactly the bytes the client sent", async () => {
  const fixture = await startFixture();
  try {
    const request = encoder.encode(
      `GET /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\n` +
        `Host: ${ACME}\r\n` +
        "User-Agent: Mozilla/5.0 (compatible; Let's Encrypt validation server; +https://www.letsencrypt.org)\r\n" +
        "Accept: */*\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    const reply = await rawExchange(fixture.node.httpPort, [request], { halfClose: true });
    assert.equal(decoder.decode(reply), ACME_REPLY);
    assert.deepEqual(fixture.recorder.recordings, [request]);
  } finally {
    await fixture.close();
  }
});

Deno.test("a request with a 100 KiB body, written in odd pieces, reaches the backend byte for byte", async () => {
  const fixture = await startFixture();
  try {
    const body = patternBytes(100 * 1024 + 3, 21);
    const head = encoder.encode(
      `POST /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\nHost: ${ACME}\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    const sent = concat(head, body);
    const reply = await rawExchange(fixture.node.httpPort, chunked(sent, [1, 17, 3, 9_001, 65_537]), {
      halfClose: true,
    });
    assert.equal(decoder.decode(reply), ACME_REPLY);
    assert.equal(fixture.recorder.recordings.length, 1);
    assert.equal(fixture.recorder.recordings[0].length, sent.length);
    assert.deepEqual(fixture.recorder.recordings[0], sent);
  } finally {
    await fixture.close();
  }
});

Deno.test("a Host with a port, upper case or a trailing dot is normalised for routing and forwarded unchanged", async (t) => {
  const fixture = await startFixture();
  try {
    const hosts = [
      "acme.test.nexus:8080",
      "ACME.TEST.NEXUS",
      "Acme.Test.Nexus.",
      "acme.test.nexus.:80",
    ];
    for (const host of hosts) {
      await t.step(`Host: ${host}`, async () => {
        const request = encoder.encode(
          `GET /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\nHost: ${host}\r\n\r\n`,
        );
        const before = fixture.recorder.recordings.length;
        const reply = await rawExchange(fixture.node.httpPort, [request], { halfClose: true });
        assert.equal(decoder.decode(reply), ACME_REPLY);
        assert.equal(fixture.recorder.recordings.length, before + 1);
        assert.deepEqual(fixture.recorder.recordings[before], request);
      });
    }
    await t.step("the absolute-form target's host routes, the Host header is forwarded as sent", async () => {
      const request = encoder.encode(
        `GET http://ACME.test.nexus./x HTTP/1.1\r\nHost: ACME.test.nexus.\r\n\r\n`,
      );
      const reply = await rawExchange(fixture.node.httpPort, [request], { halfClose: true });
      assert.equal(decoder.decode(reply), ACME_REPLY);
      assert.deepEqual(fixture.recorder.recordings.at(-1), request);
    });
    assert.equal(fixture.recorder.recordings.length, hosts.length + 1);
    assert.equal(fixture.node.node.refusals.total("bad_request"), 0);
  } finally {
    await fixture.close();
  }
});

Deno.test("a missing or bad Host gets 400 with Connection: close, and the connection ends", async (t) => {
  const fixture = await startFixture();
  const cases: Array<{ name: string; request: Uint8Array; reason: string }> = [
    { name: "no Host", request: encoder.encode("GET / HTTP/1.1\r\n\r\n"), reason: "missing Host header" },
    {
      name: "an empty Host",
      request: encoder.encode("GET / HTTP/1.1\r\nHost: \r\n\r\n"),
      reason: "Host is empty",
    },
    {
      name: "two Hosts",
      request: encoder.encode(`GET / HTTP/1.1\r\nHost: ${ACME}\r\nHost: ${WEB}\r\n\r\n`),
      reason: "more than one Host header",
    },
    {
      name: "a Host that is not a hostname",
      request: encoder.encode("GET / HTTP/1.1\r\nHost: bad!name.test.nexus\r\n\r\n"),
      reason: "Host is not a routable hostname",
    },
    {
      name: "an IP literal",
      request: encoder.encode("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
      reason: "Host is an IP literal, not a routable hostname",
    },
    {
      name: "a Host with a bad port",
      request: encoder.encode(`GET / HTTP/1.1\r\nHost: ${ACME}:http\r\n\r\n`),
      reason: "Host has an invalid port; expected 1 to 5 digits, at most 65535",
    },
    {
      name: "a TLS ClientHello",
      request: buildClientHello({ serverName: ACME }),
      reason: "TLS handshake received on the plain-HTTP listener",
    },
  ];
  try {
    for (const [i, { name, request, reason }] of cases.entries()) {
      await t.step(name, async () => {
        const reply = await rawExchange(fixture.node.httpPort, [request]);
        assert.equal(decoder.decode(reply), proxyError("400 Bad Request", `Bad Request: ${reason}\n`));
        assert.equal(fixture.node.node.refusals.total("bad_request"), i + 1);
      });
    }
    assert.equal(fixture.recorder.accepted, 0);
    assert.equal(fixture.webRequests(), 0);
  } finally {
    await fixture.close();
  }
});

Deno.test("a request for a name no backend claims gets 503 with Connection: close", async () => {
  const fixture = await startFixture();
  try {
    const request = encoder.encode("GET / HTTP/1.1\r\nHost: Nobody.Test.Nexus:8080\r\n\r\n");
    const reply = await rawExchange(fixture.node.httpPort, [request]);
    assert.equal(
      decoder.decode(reply),
      proxyError(
        "503 Service Unavailable",
        "Service Unavailable: no backend available for nobody.test.nexus\n",
      ),
    );
    assert.equal(fixture.node.node.refusals.total("no_backend"), 1);
    // The relay keeps serving.
    const ok = encoder.encode(
      `GET /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\nHost: ${ACME}\r\n\r\n`,
    );
    assert.equal(
      decoder.decode(await rawExchange(fixture.node.httpPort, [ok], { halfClose: true })),
      ACME_REPLY,
    );
  } finally {
    await fixture.close();
  }
});

Deno.test("a request head of exactly 32 KiB is routed; one byte more gets 431 and the connection ends", async () => {
  const fixture = await startFixture();
  try {
    const headOf = (length: number) => {
      const start = `GET /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\nHost: ${ACME}\r\nX-Fill: `;
      const fill = "a".repeat(length - start.length - "\r\n\r\n".length);
      const head = encoder.encode(`${start}${fill}\r\n\r\n`);
      assert.equal(head.length, length);
      return head;
    };
    const atLimit = headOf(32 * 1024);
    assert.equal(
      decoder.decode(await rawExchange(fixture.node.httpPort, chunked(atLimit, [1000]), { halfClose: true })),
      ACME_REPLY,
    );
    assert.deepEqual(fixture.recorder.recordings, [atLimit]);

    const overLimit = headOf(32 * 1024 + 1);
    const reply = await rawExchange(fixture.node.httpPort, [overLimit]);
    assert.equal(
      decoder.decode(reply),
      proxyError("431 Request Header Fields Too Large", "Request Header Fields Too Large\n"),
    );
    assert.equal(fixture.node.node.refusals.total("request_head_too_large"), 1);
    assert.equal(fixture.recorder.recordings.length, 1);
    await waitFor(() => fixture.node.node.connections === 0, "every relay connection to close");
  } finally {
    await fixture.close();
  }
});

Deno.test("a request with ambiguous body framing gets 400 with Connection: close and never reaches a backend", async (t) => {
  const fixture = await startFixture();
  // What a smuggler puts after the head: a chunked body that ends early, then a second request.
  const smuggled = "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
  const cases: Array<{ name: string; fields: string[]; version?: string; reason: string }> = [
    {
      name: "Content-Length then Transfer-Encoding",
      fields: [`Content-Length: ${smuggled.length}`, "Transfer-Encoding: chunked"],
      reason: "both Content-Length and Transfer-Encoding are present",
    },
    {
      name: "Transfer-Encoding then Content-Length",
      fields: ["Transfer-Encoding: chunked", "Content-Length: 3"],
      reason: "both Content-Length and Transfer-Encoding are present",
    },
    {
      name: "two Content-Length lines that differ",
      fields: ["Content-Length: 3", `Content-Length: ${smuggled.length}`],
      reason: "Content-Length values differ",
    },
    {
      name: "a Content-Length list that differs",
      fields: [`Content-Length: 3, ${smuggled.length}`],
      reason: "Content-Length values differ",
    },
    ...["+5", "0x10", "1e3", "", "1 0"].map((value) => ({
      name: `Content-Length: ${JSON.stringify(value)}`,
      fields: [`Content-Length: ${value}`],
      reason: "Content-Length is not a decimal number",
    })),
    {
      name: "a Content-Length past 2^53",
      fields: ["Content-Length: 9007199254740993"],
      reason: "Content-Length is larger than 2^53 - 1",
    },
    {
      name: "Transfer-Encoding: xchunked",
      fields: ["Transfer-Encoding: xchunked"],
      reason: "Transfer-Encoding has a coding other than chunked, gzip, deflate or compress",
    },
    {
      name: "Transfer-Encoding: identity",
      fields: ["Transfer-Encoding: identity"],
      reason: "Transfer-Encoding has a coding other than chunked, gzip, deflate or compress",
    },
    {
      name: "Transfer-Encoding: chunked, gzip",
      fields: ["Transfer-Encoding: chunked, gzip"],
      reason: "Transfer-Encoding does not end with chunked",
    },
    {
      name: "Transfer-Encoding: gzip alone",
      fields: ["Transfer-Encoding: gzip"],
      reason: "Transfer-Encoding does not end with chunked",
    },
    {
      name: "chunked in two lines",
      fields: ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
      reason: "Transfer-Encoding applies chunked more than once",
    },
    {
      name: "an empty Transfer-Encoding",
      fields: ["Transfer-Encoding:"],
      reason: "Transfer-Encoding has an empty coding",
    },
    {
      name: "Transfer-Encoding on HTTP/1.0",
      fields: ["Transfer-Encoding: chunked"],
      version: "HTTP/1.0",
      reason: "Transfer-Encoding on an HTTP/1.0 request",
    },
    {
      name: "Transfer-Encoding folded onto a second line",
      fields: ["Transfer-Encoding: gzip", " chunked"],
      reason: "header line starts with whitespace (obsolete line folding is not accepted)",
    },
    {
      name: "whitespace before the colon of Transfer-Encoding",
      fields: ["Transfer-Encoding : chunked"],
      reason: "whitespace between header field name and colon",
    },
  ];
  try {
    for (const [i, { name, fields, version, reason }] of cases.entries()) {
      await t.step(name, async () => {
        // Half of them to each service: the raw recorder would record any byte, the HTTP service any request.
        const host = i % 2 === 0 ? ACME : WEB;
        const request = encoder.encode(
          `POST /upload ${version ?? "HTTP/1.1"}\r\nHost: ${host}\r\n` +
            fields.map((field) => `${field}\r\n`).join("") + `\r\n${smuggled}`,
        );
        // Half-closed, so a request that was forwarded after all gets the backend's answer, not a hang.
        const reply = await rawExchange(fixture.node.httpPort, [request], { halfClose: true });
        assert.equal(decoder.decode(reply), proxyError("400 Bad Request", `Bad Request: ${reason}\n`));
        assert.equal(parseResponse(reply).headers.get("connection"), "close");
        assert.equal(fixture.node.node.refusals.total("bad_request"), i + 1);
      });
    }
    assert.equal(fixture.recorder.accepted, 0);
    assert.equal(fixture.webRequests(), 0);
    await waitFor(() => fixture.node.node.connections === 0, "every relay connection to close");
  } finally {
    await fixture.close();
  }
});

Deno.test("a node logs a framing refusal as a bad request, with the rule that was broken", async () => {
  const dir = await makeConfigDir();
  try {
    const { process, ports } = await spawnNode(
      await dir.write("node.yaml", nodeYaml({ drainTimeoutSeconds: 0 })),
    );
    try {
      const request =
        `POST / HTTP/1.1\r\nHost: ${WEB}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`;
      const reply = await rawExchange(ports.httpPort, [encoder.encode(request)], { halfClose: true });
      assert.match(decoder.decode(reply), /^HTTP\/1\.1 400 Bad Request\r\n/);
      const line = await process.waitForLine(/connection refused: bad request/);
      assert.match(line, / client=127\.0\.0\.1:\d+ /);
      assert.match(line, / detail="both Content-Length and Transfer-Encoding are present"/);
    } finally {
      await process.stop();
    }
  } finally {
    await dir.remove();
  }
});

Deno.test("chunked uploads and repeated equal Content-Lengths reach the backend byte for byte", async (t) => {
  const fixture = await startFixture();
  const body = "5\r\nhello\r\n1a\r\n, a chunked body in parts.\r\n0\r\n\r\n";
  const cases: Array<{ name: string; fields: string[]; body: string }> = [
    { name: "Transfer-Encoding: chunked", fields: ["Transfer-Encoding: chunked"], body },
    { name: "Transfer-Encoding: CHUNKED", fields: ["Transfer-Encoding:  \tCHUNKED\t"], body },
    { name: "Transfer-Encoding: gzip, chunked", fields: ["Transfer-Encoding: gzip , Chunked"], body },
    {
      name: "gzip and chunked in two lines",
      fields: ["Transfer-Encoding: gzip", "transfer-encoding: chunked"],
      body,
    },
    { name: "Content-Length: 5, 5", fields: ["Content-Length: 5, 5", "content-length: 5"], body: "hello" },
  ];
  try {
    for (const [i, { name, fields, body }] of cases.entries()) {
      await t.step(name, async () => {
        const sent = encoder.encode(
          `POST /.well-known/acme-challenge/${ACME_TOKEN} HTTP/1.1\r\nHost: ${ACME}\r\n` +
            fields.map((field) => `${field}\r\n`).join("") + `\r\n${body}`,
        );
        const reply = await rawExchange(fixture.node.httpPort, chunked(sent, [7, 1, 30]), {
          halfClose: true,
        });
        assert.equal(decoder.decode(reply), ACME_REPLY);
        assert.equal(fixture.recorder.recordings.length, i + 1);
        assert.deepEqual(fixture.recorder.recordings[i], sent);
      });
    }
    assert.equal(fixture.node.node.refusals.total("bad_request"), 0);
  } finally {
    await fixture.close();
  }
});

Deno.test("a chunked upload from curl reaches the service whole", async (t) => {
  if (!await curlIsInstalled(t)) return;
  const fixture = await startFixture();
  const upload = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    const text = Array.from({ length: 2_000 }, (_, i) => `line ${i} of a chunked upload\n`).join("");
    await Deno.writeTextFile(upload, text);
    const port = fixture.node.httpPort;
    const output = await curl([
      "--show-error",
      "--resolve",
      `${WEB}:{port}:127.0.0.1`,
      "--header",
      "Transfer-Encoding: chunked",
      "--data-binary",
      `@${upload}`,
      `http://${WEB}:{port}/upload`,
    ])(port, AbortSignal.timeout(15_000));
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    assert.equal(
      decoder.decode(output.stdout),
      `host=${WEB}:${port} target=/upload\ntransfer-encoding=chunked\n${text}`,
    );
    assert.equal(fixture.webRequests(), 1);
    assert.equal(fixture.node.node.refusals.total("bad_request"), 0);
  } finally {
    await Deno.remove(upload);
    await fixture.close();
  }
});
