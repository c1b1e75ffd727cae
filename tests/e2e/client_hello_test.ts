/**
 * ClientHellos through a running node: real clients (Deno's TLS, curl, openssl s_client) get the service's own
 * answer; hand-built hellos split over records and TCP writes reach the backend byte for byte; every hello the
 * relay refuses gets exactly its TLS alert, then the close, is counted by kind, and never disturbs other clients.
 */

import assert from "node:assert/strict";
import { connectTls, startTestAgent, startTestNode, type TestNode, waitFor } from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import {
  chunked,
  HANDSHAKE_FAILURE_ALERT,
  rawExchange,
  type RecordingService,
  recordingService,
  UNRECOGNIZED_NAME_ALERT,
} from "../helpers/raw.ts";
import {
  concat,
  patternBytes,
  readAll,
  serveConnections,
  type TestService,
  writeAll,
} from "../helpers/services.ts";
import type { Agent } from "../../src/agent/agent.ts";
import {
  buildClientHello,
  buildClientHelloMessage,
  toRecords,
  withLength,
} from "../sni/client_hello_builder.ts";

/** A real TLS service (certificate for `*.test.nexus`) that answers one request with a fixed response. */
const APP = "app.test.nexus";
/** A raw TCP recorder, claimed by exact name. */
const RECORDED = "rec.test.nexus";
/** A recorder claimed by exact name, for ECH hellos whose outer (public) name it is. */
const ECH_PUBLIC = "ech.test.nexus";
/** A recorder claimed only through the wildcard `*.wild.nexus`. */
const WILD_CLAIM = "*.wild.nexus";
const UNDER_WILDCARD = "outer.wild.nexus";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const APP_BODY = "served by app.test.nexus\n";
const APP_RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" +
  `Content-Length: ${APP_BODY.length}\r\nConnection: close\r\n\r\n${APP_BODY}`;
const APP_REQUEST = `GET / HTTP/1.1\r\nHost: ${APP}\r\n\r\n`;

const REFUSAL_KINDS = [
  "no_sni",
  "no_backend",
  "ech_refused",
  "not_tls",
  "malformed_client_hello",
  "client_hello_too_large",
] as const;
type RefusalKind = typeof REFUSAL_KINDS[number];

/** A client the relay must refuse: what it writes, the alert it must get back, and the counter it bumps. */
interface RefusedHello {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly alert: Uint8Array;
  readonly kind: RefusalKind;
}

function refusedHellos(): RefusedHello[] {
  const randomBytes = patternBytes(512, 4242);
  // Precondition of "random": it must not happen to start like a TLS handshake record.
  assert.notEqual(randomBytes[0], 0x16);
  const tooLarge = buildClientHello({ serverName: APP, paddingBytes: 33_000 }, 16_384);
  assert.ok(tooLarge.length > 32 * 1024);
  return [
    { name: "no SNI", bytes: buildClientHello({}), alert: UNRECOGNIZED_NAME_ALERT, kind: "no_sni" },
    {
      name: "a name no backend claims",
      bytes: buildClientHello({ serverName: "nobody.test.nexus" }),
      alert: UNRECOGNIZED_NAME_ALERT,
      kind: "no_backend",
    },
    {
      name: "ECH with an outer name only a wildcard covers",
      bytes: buildClientHello({ serverName: UNDER_WILDCARD, ech: true }),
      alert: UNRECOGNIZED_NAME_ALERT,
      kind: "ech_refused",
    },
    { name: "random bytes", bytes: randomBytes, alert: HANDSHAKE_FAILURE_ALERT, kind: "not_tls" },
    {
      name: "an HTTP request on the TLS port",
      bytes: encoder.encode(APP_REQUEST),
      alert: HANDSHAKE_FAILURE_ALERT,
      kind: "not_tls",
    },
    {
      name: "a malformed hello (session_id length 33)",
      bytes: toRecords(withLength(buildClientHelloMessage({ serverName: APP }), "session_id", 33)),
      alert: HANDSHAKE_FAILURE_ALERT,
      kind: "malformed_client_hello",
    },
    {
      name: "a hello over the 32 KiB cap",
      bytes: tooLarge,
      alert: HANDSHAKE_FAILURE_ALERT,
      kind: "client_hello_too_large",
    },
  ];
}

interface Fixture {
  readonly node: TestNode;
  readonly app: TestService;
  readonly recorder: RecordingService;
  close(): Promise<void>;
}

/** One node, one agent claiming the test names, the TLS app service and one recorder behind it. */
async function startFixture(): Promise<Fixture> {
  const certs = await testCertificates();
  const app = serveConnections(answerOneRequest, certs.service);
  const recorder = recordingService(() => encoder.encode("recorded\n"));
  const node = await startTestNode();
  let agent: Agent;
  try {
    agent = await startTestAgent({
      hubUrls: [node.hubUrl],
      hostnames: [APP, RECORDED, ECH_PUBLIC, WILD_CLAIM],
      targets: {
        [APP]: app.port,
        [RECORDED]: recorder.port,
        [ECH_PUBLIC]: recorder.port,
        [WILD_CLAIM]: recorder.port,
      },
    });
  } catch (error) {
    await node.close();
    await app.close();
    await recorder.close();
    throw error;
  }
  return {
    node,
    app,
    recorder,
    async close() {
      await agent.stop(0);
      await node.close();
      await app.close();
      await recorder.close();
    },
  };
}

/** Reads one request head, answers {@linkcode APP_RESPONSE}, and ends the TLS session. */
async function answerOneRequest(conn: Deno.Conn): Promise<void> {
  let head = "";
  const buffer = new Uint8Array(4096);
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return;
    head += decoder.decode(buffer.subarray(0, n));
  }
  await writeAll(conn, encoder.encode(APP_RESPONSE));
  await conn.closeWrite();
}

/** A good client: Deno's TLS to the app service, one request, the whole response. */
async function goodClient(port: number): Promise<string> {
  const conn = await connectTls(port, APP);
  try {
    await writeAll(conn, encoder.encode(APP_REQUEST));
    return decoder.decode(await readAll(conn));
  } finally {
    conn.close();
  }
}

function refusalCounts(node: TestNode): Record<RefusalKind, number> {
  return Object.fromEntries(REFUSAL_KINDS.map((kind) => [kind, node.node.refusals.total(kind)])) as Record<
    RefusalKind,
    number
  >;
}

function zeroCounts(): Record<RefusalKind, number> {
  return Object.fromEntries(REFUSAL_KINDS.map((kind) => [kind, 0])) as Record<RefusalKind, number>;
}

/**
 * Runs an external client against a fresh fixture with the test CA in a file, or skips (saying why) when
 * the command is not installed. `run` returns what the client printed on stdout and stderr, and its exit code.
 */
async function withExternalClient(
  t: Deno.TestContext,
  command: string,
  run: (port: number, caFile: string) => Promise<Deno.CommandOutput>,
): Promise<{ output: Deno.CommandOutput; fixture: Fixture } | null> {
  const probe = await new Deno.Command(command, { args: ["version"], stdout: "null", stderr: "null" })
    .output().catch(() => null);
  if (probe === null) {
    console.log(`${command} is not installed: this test is skipped`);
    await t.step({ name: `${command} is not installed: skipped`, ignore: true, fn: () => {} });
    return null;
  }
  const certs = await testCertificates();
  const fixture = await startFixture();
  const caFile = await Deno.makeTempFile({ suffix: ".pem" });
  try {
    await Deno.writeTextFile(caFile, certs.ca.certPem);
    return { output: await run(fixture.node.tlsPort, caFile), fixture };
  } finally {
    await Deno.remove(caFile);
    await fixture.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Real clients

Deno.test("Deno's TLS client gets the service's answer through the node, verified for the service's name", async () => {
  const fixture = await startFixture();
  try {
    assert.equal(await goodClient(fixture.node.tlsPort), APP_RESPONSE);
    assert.equal(fixture.app.accepted, 1);
    assert.deepEqual(refusalCounts(fixture.node), zeroCounts());
  } finally {
    await fixture.close();
  }
});

Deno.test("curl's ClientHello is routed by SNI and curl gets the service's answer", async (t) => {
  const ran = await withExternalClient(t, "curl", (port, caFile) =>
    new Deno.Command("curl", {
      args: [
        "--silent",
        "--show-error",
        "--http1.1",
        "--max-time",
        "10",
        "--cacert",
        caFile,
        "--resolve",
        `${APP}:${port}:127.0.0.1`,
        `https://${APP}:${port}/`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output());
  if (ran === null) return;
  const { output, fixture } = ran;
  assert.equal(output.code, 0, decoder.decode(output.stderr));
  assert.equal(decoder.decode(output.stdout), APP_BODY);
  assert.equal(fixture.app.accepted, 1);
  assert.deepEqual(refusalCounts(fixture.node), zeroCounts());
});

Deno.test("openssl s_client's ClientHello is routed by SNI and it gets the service's answer", async (t) => {
  const ran = await withExternalClient(t, "openssl", async (port, caFile) => {
    const child = new Deno.Command("openssl", {
      args: [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        APP,
        "-CAfile",
        caFile,
        "-verify_hostname",
        APP,
        "-verify_return_error",
        "-quiet",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(10_000),
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(APP_REQUEST));
    await writer.close();
    return await child.output();
  });
  if (ran === null) return;
  const { output, fixture } = ran;
  const stderr = decoder.decode(output.stderr);
  assert.equal(decoder.decode(output.stdout), APP_RESPONSE, stderr);
  assert.equal(output.code, 0, stderr);
  assert.equal(fixture.app.accepted, 1);
  assert.deepEqual(refusalCounts(fixture.node), zeroCounts());
});

// ---------------------------------------------------------------------------------------------------------
// Hellos split over records and TCP writes: the backend gets exactly the client's bytes

Deno.test("a ClientHello over 1-byte records, written one byte per TCP write, reaches the backend byte for byte", async () => {
  const fixture = await startFixture();
  try {
    const hello = toRecords(buildClientHelloMessage({ serverName: RECORDED }).message, 1);
    const reply = await rawExchange(fixture.node.tlsPort, chunked(hello, [1]), { halfClose: true });
    assert.equal(decoder.decode(reply), "recorded\n");
    assert.equal(fixture.recorder.recordings.length, 1);
    assert.deepEqual(fixture.recorder.recordings[0], hello);
  } finally {
    await fixture.close();
  }
});

Deno.test("a large ClientHello over odd-sized records, in odd-sized TCP writes, then more bytes, reaches the backend byte for byte", async () => {
  const fixture = await startFixture();
  try {
    // Chrome-sized: a post-quantum key share makes the hello about 1.5 KiB.
    const message = buildClientHelloMessage({ serverName: RECORDED, postQuantumShareBytes: 1216 }).message;
    const hello = toRecords(message, [517, 3, 1, 250]);
    const after = patternBytes(70_001, 17);
    const sent = concat(hello, after);
    const reply = await rawExchange(fixture.node.tlsPort, chunked(sent, [7, 1, 331, 2, 4099]), {
      halfClose: true,
    });
    assert.equal(decoder.decode(reply), "recorded\n");
    assert.equal(fixture.recorder.recordings.length, 1);
    assert.equal(fixture.recorder.recordings[0].length, sent.length);
    assert.deepEqual(fixture.recorder.recordings[0], sent);
  } finally {
    await fixture.close();
  }
});

Deno.test("a ClientHello offering ECH reaches the backend that claims exactly its outer name, byte for byte", async () => {
  const fixture = await startFixture();
  try {
    const hello = buildClientHello({ serverName: ECH_PUBLIC, ech: true }, [100, 1000]);
    const reply = await rawExchange(fixture.node.tlsPort, chunked(hello, [13]), { halfClose: true });
    assert.equal(decoder.decode(reply), "recorded\n");
    assert.deepEqual(fixture.recorder.recordings, [hello]);
    assert.equal(fixture.node.node.refusals.total("ech_refused"), 0);
  } finally {
    await fixture.close();
  }
});

Deno.test("a name covered only by a wildcard is served without ECH and refused with ECH", async () => {
  const fixture = await startFixture();
  try {
    const plain = buildClientHello({ serverName: UNDER_WILDCARD });
    assert.equal(
      decoder.decode(await rawExchange(fixture.node.tlsPort, [plain], { halfClose: true })),
      "recorded\n",
    );
    assert.deepEqual(fixture.recorder.recordings, [plain]);
    const withEch = buildClientHello({ serverName: UNDER_WILDCARD, ech: true });
    assert.deepEqual(await rawExchange(fixture.node.tlsPort, [withEch]), UNRECOGNIZED_NAME_ALERT);
    assert.equal(fixture.recorder.recordings.length, 1);
    assert.equal(fixture.node.node.refusals.total("ech_refused"), 1);
  } finally {
    await fixture.close();
  }
});

// ---------------------------------------------------------------------------------------------------------
// Refusals

Deno.test("each refused ClientHello gets exactly its TLS alert then the close, is counted by kind, and a good client succeeds after it", async (t) => {
  const fixture = await startFixture();
  try {
    const expected = zeroCounts();
    for (const refused of refusedHellos()) {
      await t.step(`${refused.name}: ${refused.kind}`, async () => {
        const reply = await rawExchange(fixture.node.tlsPort, [refused.bytes]);
        assert.deepEqual(reply, refused.alert);
        expected[refused.kind] += 1;
        assert.deepEqual(refusalCounts(fixture.node), expected);
        assert.equal(await goodClient(fixture.node.tlsPort), APP_RESPONSE);
      });
    }
    assert.deepEqual(expected, {
      no_sni: 1,
      no_backend: 1,
      ech_refused: 1,
      not_tls: 2,
      malformed_client_hello: 1,
      client_hello_too_large: 1,
    });
    assert.equal(fixture.recorder.recordings.length, 0);
    assert.equal(fixture.app.accepted, REFUSAL_KINDS.length + 1);
    await waitFor(() => fixture.node.node.connections === 0, "every relay connection to close");
  } finally {
    await fixture.close();
  }
});

Deno.test("refused ClientHellos written in pieces get the same alert as whole ones", async () => {
  const fixture = await startFixture();
  try {
    for (const refused of refusedHellos()) {
      const reply = await rawExchange(fixture.node.tlsPort, chunked(refused.bytes, [1, 2, 3, 5, 8, 13, 21]));
      assert.deepEqual(reply, refused.alert, refused.name);
    }
    const counts = refusalCounts(fixture.node);
    assert.deepEqual(counts, {
      no_sni: 1,
      no_backend: 1,
      ech_refused: 1,
      not_tls: 2,
      malformed_client_hello: 1,
      client_hello_too_large: 1,
    });
  } finally {
    await fixture.close();
  }
});

Deno.test("refused ClientHellos do not disturb good clients connecting at the same time", async () => {
  const fixture = await startFixture();
  const rounds = 4;
  const goodPerRound = 5;
  try {
    const refused = refusedHellos();
    const results = await Promise.all(
      Array.from({ length: rounds }, () => [
        ...refused.map(async (hello) => ({
          hello,
          reply: await rawExchange(fixture.node.tlsPort, [hello.bytes]),
        })),
        ...Array.from({ length: goodPerRound }, () => goodClient(fixture.node.tlsPort)),
      ]).flat(),
    );
    let good = 0;
    for (const result of results) {
      if (typeof result === "string") {
        assert.equal(result, APP_RESPONSE);
        good += 1;
      } else {
        assert.deepEqual(result.reply, result.hello.alert, result.hello.name);
      }
    }
    assert.equal(good, rounds * goodPerRound);
    assert.equal(fixture.app.accepted, rounds * goodPerRound);
    assert.deepEqual(refusalCounts(fixture.node), {
      no_sni: rounds,
      no_backend: rounds,
      ech_refused: rounds,
      not_tls: 2 * rounds,
      malformed_client_hello: rounds,
      client_hello_too_large: rounds,
    });
    await waitFor(() => fixture.node.node.connections === 0, "every relay connection to close");
  } finally {
    await fixture.close();
  }
});
