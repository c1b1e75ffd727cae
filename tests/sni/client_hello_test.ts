import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ClientHelloResult,
  MAX_CLIENT_HELLO_BYTES,
  parseClientHello,
} from "../../src/sni/client_hello.ts";
import { tlsAlert } from "../../src/sni/alerts.ts";
import { concat } from "../helpers/services.ts";
import {
  buildClientHello,
  buildClientHelloMessage,
  EXTENSION_ECH,
  EXTENSION_SERVER_NAME,
  handshakeMessageOf,
  type HelloSpec,
  type LengthField,
  lengthOf,
  toRecords,
  withLength,
  withRecordLength,
} from "./client_hello_builder.ts";

const KINDS = ["incomplete", "sni", "no_sni", "not_tls", "malformed", "too_large", "truncated"];
const CAPTURE_TIMEOUT_MS = 10_000;
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------------------
// Helpers

function malformed(reason: string): ClientHelloResult {
  return { kind: "malformed", reason };
}

/** Feeds `bytes` one byte per call, as a client writing one byte per TCP segment would; checks every prefix. */
function assertByteByByte(bytes: Uint8Array, expected: ClientHelloResult): void {
  const whole = parseClientHello(bytes);
  assert.deepEqual(whole, expected);
  // The smallest prefix that decides: everything shorter is incomplete (or truncated at EOF).
  let decidedAt = -1;
  for (let length = 0; length <= bytes.length; length++) {
    const result = parseClientHello(bytes.subarray(0, length));
    if (result.kind !== "incomplete") {
      decidedAt = length;
      assert.deepEqual(result, expected, `prefix of ${length} bytes`);
      break;
    }
    assert.deepEqual(parseClientHello(bytes.subarray(0, length), { atEof: true }), { kind: "truncated" });
  }
  assert.ok(decidedAt > 0, "the whole input decides");
}

/** Re-splits a captured hello into 1-byte records and feeds it 1 byte per call, then the original likewise. */
function assertSurvivesFragmentation(captured: Uint8Array, expected: ClientHelloResult): void {
  const message = handshakeMessageOf(captured);
  const oneByteRecords = toRecords(message, 1);
  assert.equal(oneByteRecords.length, message.length * 6);
  assertByteByByte(oneByteRecords, expected);
  assertByteByByte(captured, expected);
  // The parser needs exactly the handshake message: every strict prefix of the 1-byte records is incomplete.
  assert.deepEqual(parseClientHello(oneByteRecords.subarray(0, oneByteRecords.length - 1)), {
    kind: "incomplete",
  });
}

// ---------------------------------------------------------------------------------------------------------
// Real clients, captured on a loopback socket

/** Starts a client against `port`; returns how to stop it once the hello has been captured. */
type StartClient = (port: number) => Promise<() => Promise<void>>;

interface Capture {
  bytes: Uint8Array;
  result: ClientHelloResult;
}

function closeQuietly(closer: { close(): void } | undefined): void {
  try {
    closer?.close();
  } catch {
    // Already closed: close is best-effort here.
  }
}

/** Accepts one connection from the client and reads until the parser decides, EOF, or a bounded timeout. */
async function captureHello(startClient: StartClient): Promise<Capture> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let conn: Deno.Conn | undefined;
  const timer = setTimeout(() => {
    closeQuietly(listener);
    closeQuietly(conn);
  }, CAPTURE_TIMEOUT_MS);
  const stopClient = await startClient(listener.addr.port);
  let bytes: Uint8Array = new Uint8Array(0);
  let result: ClientHelloResult = { kind: "incomplete" };
  try {
    conn = await listener.accept();
    const buffer = new Uint8Array(16 * 1024);
    while (result.kind === "incomplete") {
      const read = await conn.read(buffer).catch(() => null);
      if (read === null) {
        result = parseClientHello(bytes, { atEof: true });
        break;
      }
      bytes = concat(bytes, buffer.subarray(0, read));
      result = parseClientHello(bytes);
    }
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
    closeQuietly(listener);
    await stopClient();
  }
  return { bytes, result };
}

function denoTlsClient(connect: (port: number) => Promise<Deno.TlsConn>): StartClient {
  return async (port) => {
    const conn = await connect(port);
    // The capture side closes without answering, so the handshake fails; that is expected.
    const handshake = conn.handshake().catch(() => undefined);
    return async () => {
      await handshake;
      closeQuietly(conn);
    };
  };
}

function processClient(command: string, args: (port: number) => string[]): StartClient {
  return (port) => {
    const child = new Deno.Command(command, {
      args: args(port),
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    })
      .spawn();
    return Promise.resolve(async () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has already exited (curl gives up when the server closes).
      }
      await child.status;
      await child.stdin.close().catch(() => undefined);
    });
  };
}

async function binaryExists(command: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success || command === "openssl"; // `openssl --version` is an error on 3.0; it exists anyway
  } catch {
    return false;
  }
}

const hasCurl = await binaryExists("curl");
const hasOpenssl = await binaryExists("openssl");
if (!hasCurl) console.log("skipping the curl captures: no curl binary on PATH");
if (!hasOpenssl) console.log("skipping the openssl s_client captures: no openssl binary on PATH");

const curl = (host: string) =>
  processClient("curl", (port) => [
    "--silent",
    "--insecure",
    "--max-time",
    "5",
    "--resolve",
    `${host}:${port}:127.0.0.1`,
    `https://${host}:${port}/`,
  ]);
const sClient = (...flags: string[]) =>
  processClient("openssl", (port) => ["s_client", "-connect", `127.0.0.1:${port}`, ...flags]);

const REAL_CLIENTS: ReadonlyArray<
  { name: string; ignore: boolean; start: StartClient; expected: ClientHelloResult }
> = [
  {
    name: "Deno.connectTls (rustls) to localhost sends SNI localhost",
    ignore: false,
    start: denoTlsClient((port) => Deno.connectTls({ hostname: "localhost", port })),
    expected: { kind: "sni", serverName: "localhost", echOffered: false },
  },
  {
    name: "Deno.startTls (rustls) with a mixed-case name and trailing dot gives the normalised name",
    ignore: false,
    start: denoTlsClient(async (port) =>
      Deno.startTls(await Deno.connect({ hostname: "127.0.0.1", port }), { hostname: "App.Example.TEST." })
    ),
    expected: { kind: "sni", serverName: "app.example.test", echOffered: false },
  },
  {
    name: "Deno.connectTls (rustls) to an IP address sends no SNI",
    ignore: false,
    start: denoTlsClient((port) => Deno.connectTls({ hostname: "127.0.0.1", port })),
    expected: { kind: "no_sni", echOffered: false },
  },
  {
    name: "curl --resolve sends the URL host as SNI",
    ignore: !hasCurl,
    start: curl("app.example.test"),
    expected: { kind: "sni", serverName: "app.example.test", echOffered: false },
  },
  {
    name: "curl with an upper-case URL host gives the lower-case name",
    ignore: !hasCurl,
    start: curl("APP.Example.TEST"),
    expected: { kind: "sni", serverName: "app.example.test", echOffered: false },
  },
  {
    name: "curl to an IP address sends no SNI",
    ignore: !hasCurl,
    start: processClient(
      "curl",
      (port) => ["--silent", "--insecure", "--max-time", "5", `https://127.0.0.1:${port}/`],
    ),
    expected: { kind: "no_sni", echOffered: false },
  },
  {
    name: "openssl s_client -servername -tls1_3 sends the name",
    ignore: !hasOpenssl,
    start: sClient("-servername", "app.example.test", "-tls1_3"),
    expected: { kind: "sni", serverName: "app.example.test", echOffered: false },
  },
  {
    name: "openssl s_client -servername -tls1_2 sends the name",
    ignore: !hasOpenssl,
    start: sClient("-servername", "app.example.test", "-tls1_2"),
    expected: { kind: "sni", serverName: "app.example.test", echOffered: false },
  },
  {
    name: "openssl s_client -noservername sends no SNI",
    ignore: !hasOpenssl,
    start: sClient("-noservername"),
    expected: { kind: "no_sni", echOffered: false },
  },
];

for (const client of REAL_CLIENTS) {
  Deno.test({
    name: `real client: ${client.name}`,
    ignore: client.ignore,
    fn: async (t) => {
      const { bytes, result } = await captureHello(client.start);
      assert.deepEqual(result, client.expected);
      await t.step(
        "the same hello re-split into 1-byte records and fed 1 byte per call parses the same",
        () => {
          assertSurvivesFragmentation(bytes, client.expected);
        },
      );
    },
  });
}

Deno.test("real client: rustls keeps the case of the name on the wire; the parser lower-cases it", async () => {
  const { bytes, result } = await captureHello(
    denoTlsClient(async (port) =>
      Deno.startTls(await Deno.connect({ hostname: "127.0.0.1", port }), { hostname: "Mixed.Example.TEST" })
    ),
  );
  assert.ok(new TextDecoder().decode(bytes).includes("Mixed.Example.TEST"));
  assert.deepEqual(result, { kind: "sni", serverName: "mixed.example.test", echOffered: false });
});

// ---------------------------------------------------------------------------------------------------------
// Built hellos: the valid shapes

Deno.test("a built hello with SNI gives the name", () => {
  assert.deepEqual(parseClientHello(buildClientHello({ serverName: "app.example.com" })), {
    kind: "sni",
    serverName: "app.example.com",
    echOffered: false,
  });
});

Deno.test("a built hello without server_name gives no_sni", () => {
  assert.deepEqual(parseClientHello(buildClientHello()), { kind: "no_sni", echOffered: false });
});

Deno.test("ECH with an outer SNI gives the public name and echOffered", () => {
  assert.deepEqual(parseClientHello(buildClientHello({ serverName: "public.example.net", ech: true })), {
    kind: "sni",
    serverName: "public.example.net",
    echOffered: true,
  });
});

Deno.test("ECH without SNI gives no_sni with echOffered", () => {
  assert.deepEqual(parseClientHello(buildClientHello({ ech: true })), { kind: "no_sni", echOffered: true });
});

Deno.test("a post-quantum hello (1,216-byte X25519MLKEM768 share) still gives the SNI, in one record or two", () => {
  const spec: HelloSpec = { serverName: "pq.example.com", postQuantumShareBytes: 1216, ech: true };
  const { message } = buildClientHelloMessage(spec);
  assert.ok(message.length > 1500);
  const expected = { kind: "sni", serverName: "pq.example.com", echOffered: true };
  assert.deepEqual(parseClientHello(toRecords(message)), expected);
  assert.deepEqual(parseClientHello(toRecords(message, [1000])), expected);
});

Deno.test("the name is normalised: upper case and one trailing dot", () => {
  assert.deepEqual(parseClientHello(buildClientHello({ serverName: "WWW.Example.COM." })), {
    kind: "sni",
    serverName: "www.example.com",
    echOffered: false,
  });
});

Deno.test("an SSLv3-style hello without an extensions block gives no_sni", () => {
  assert.deepEqual(parseClientHello(buildClientHello({ omitExtensions: true, legacyVersion: 0x0300 })), {
    kind: "no_sni",
    echOffered: false,
  });
});

Deno.test("an empty extensions block gives no_sni", () => {
  const built = buildClientHelloMessage({ omitExtensions: true });
  const message = concat(built.message, Uint8Array.of(0, 0));
  message[3] += 2; // handshake length, small enough not to carry
  assert.deepEqual(parseClientHello(toRecords(message)), { kind: "no_sni", echOffered: false });
});

Deno.test("record versions 0x0300 and 0x0304 are accepted", () => {
  for (const minor of [0, 4]) {
    const bytes = buildClientHello({ serverName: "a.example" });
    bytes[2] = minor;
    assert.deepEqual(parseClientHello(bytes), { kind: "sni", serverName: "a.example", echOffered: false });
  }
});

Deno.test("bytes after the hello belong to the stream and are ignored", () => {
  const message = buildClientHelloMessage({ serverName: "app.example.com" }).message;
  const earlyData = Uint8Array.of(23, 3, 3, 0, 3, 1, 2, 3);
  const expected = { kind: "sni", serverName: "app.example.com", echOffered: false };
  assert.deepEqual(parseClientHello(toRecords(message, 16384, earlyData)), expected);
  assert.deepEqual(parseClientHello(toRecords(message, 16384, encoder.encode("garbage"))), expected);
  // The last record may carry more than the hello, and need not have fully arrived.
  const records = toRecords(concat(message, Uint8Array.of(2, 0, 0, 0)));
  assert.deepEqual(parseClientHello(records.subarray(0, records.length - 2)), expected);
});

Deno.test("a hello exactly maxBytes long parses; one byte more is too_large", () => {
  const bytes = buildClientHello({ serverName: "app.example.com" }, [100]);
  const expected = { kind: "sni", serverName: "app.example.com", echOffered: false };
  assert.deepEqual(parseClientHello(bytes, { maxBytes: bytes.length }), expected);
  assert.deepEqual(parseClientHello(bytes, { maxBytes: bytes.length - 1 }), { kind: "too_large" });
  assert.deepEqual(parseClientHello(bytes.subarray(0, 10), { maxBytes: bytes.length - 1 }), {
    kind: "too_large",
  });
});

Deno.test("an invalid maxBytes is a programming error and throws RangeError", () => {
  for (const maxBytes of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => parseClientHello(new Uint8Array(0), { maxBytes }), RangeError);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Record layer and early verdicts

Deno.test("not_tls is decided from the first byte, or from the second when the first is 0x16", () => {
  assert.deepEqual(parseClientHello(encoder.encode("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")), {
    kind: "not_tls",
  });
  assert.deepEqual(parseClientHello(encoder.encode("G")), { kind: "not_tls" });
  assert.deepEqual(parseClientHello(Uint8Array.of(0x16, 0x04)), { kind: "not_tls" });
  assert.deepEqual(parseClientHello(Uint8Array.of(0x80, 0x2e, 0x01, 0x03, 0x01)), { kind: "not_tls" }); // SSLv2
  assert.deepEqual(parseClientHello(Uint8Array.of(0x00, 0x01, 0x02, 0xff, 0x16)), { kind: "not_tls" });
});

Deno.test("an alert record first is not_tls", () => {
  assert.deepEqual(parseClientHello(tlsAlert("handshake_failure")), { kind: "not_tls" });
});

Deno.test("nothing, or a lone 0x16, is incomplete; truncated at EOF", () => {
  assert.deepEqual(parseClientHello(new Uint8Array(0)), { kind: "incomplete" });
  assert.deepEqual(parseClientHello(Uint8Array.of(0x16)), { kind: "incomplete" });
  assert.deepEqual(parseClientHello(Uint8Array.of(0x16, 0x03)), { kind: "incomplete" });
  assert.deepEqual(parseClientHello(new Uint8Array(0), { atEof: true }), { kind: "truncated" });
  assert.deepEqual(parseClientHello(Uint8Array.of(0x16), { atEof: true }), { kind: "truncated" });
});

Deno.test("record version 0x0305 is malformed as soon as its third byte arrives", () => {
  assert.deepEqual(
    parseClientHello(Uint8Array.of(0x16, 0x03, 0x05)),
    malformed("record at byte 0 has version 0x0305, expected 0x0300..0x0304"),
  );
});

Deno.test("record length 0 or above 16384 is malformed (RFC 8446 §5.1)", () => {
  const bytes = buildClientHello({ serverName: "a.example" }, [50]);
  assert.deepEqual(
    parseClientHello(withRecordLength(bytes, 0, 0)),
    malformed("record at byte 0 has length 0, expected 1..16384"),
  );
  assert.deepEqual(
    parseClientHello(withRecordLength(bytes, 0, 16385)),
    malformed("record at byte 0 has length 16385, expected 1..16384"),
  );
  assert.deepEqual(
    parseClientHello(withRecordLength(bytes, 1, 0)),
    malformed("record at byte 55 has length 0, expected 1..16384"),
  );
  // A record header alone decides: the bytes of the record are not awaited.
  assert.deepEqual(
    parseClientHello(Uint8Array.of(0x16, 0x03, 0x01, 0x40, 0x01)),
    malformed("record at byte 0 has length 16385, expected 1..16384"),
  );
});

Deno.test("a record longer than the hello is fine; a shorter one makes the next byte a bogus record header", () => {
  const bytes = buildClientHello({ serverName: "a.example" });
  const longer = withRecordLength(bytes, 0, bytes.length - 5 + 1);
  assert.deepEqual(parseClientHello(longer), { kind: "sni", serverName: "a.example", echOffered: false });
  assert.deepEqual(parseClientHello(longer, { atEof: true }), {
    kind: "sni",
    serverName: "a.example",
    echOffered: false,
  });
  const shorter = withRecordLength(bytes, 0, bytes.length - 5 - 1);
  const lastByte = bytes[bytes.length - 1];
  assert.deepEqual(
    parseClientHello(shorter),
    malformed(`record at byte ${bytes.length - 1} has content type ${lastByte}, expected handshake (22)`),
  );
});

Deno.test("a non-handshake record before the hello is complete is malformed", () => {
  const records = buildClientHello({ serverName: "a.example" }, [40]);
  const firstRecord = records.subarray(0, 45);
  assert.deepEqual(
    parseClientHello(concat(firstRecord, tlsAlert("internal_error"))),
    malformed("record at byte 45 has content type 21, expected handshake (22)"),
  );
  assert.deepEqual(
    parseClientHello(concat(firstRecord, Uint8Array.of(20, 3, 3, 0, 1, 1))),
    malformed("record at byte 45 has content type 20, expected handshake (22)"),
  );
  assert.deepEqual(
    parseClientHello(concat(firstRecord, Uint8Array.of(22, 2))),
    malformed("record at byte 45 has version major 2, expected 3"),
  );
});

Deno.test("a handshake message other than ClientHello is malformed from its first byte", () => {
  assert.deepEqual(
    parseClientHello(Uint8Array.of(0x16, 0x03, 0x03, 0x00, 0x30, 2)),
    malformed("handshake type is 2, expected ClientHello (1)"),
  );
});

Deno.test("too_large is decided from the handshake length, before the bytes arrive", () => {
  const { message } = buildClientHelloMessage({ serverName: "big.example.com", paddingBytes: 33 * 1024 });
  const bytes = toRecords(message);
  assert.ok(bytes.length > MAX_CLIENT_HELLO_BYTES);
  assert.deepEqual(parseClientHello(bytes), { kind: "too_large" });
  assert.deepEqual(parseClientHello(bytes.subarray(0, 9)), { kind: "too_large" });
  assert.deepEqual(parseClientHello(bytes.subarray(0, 8)), { kind: "incomplete" });
  // The same hello is fine under a larger cap.
  assert.deepEqual(parseClientHello(bytes, { maxBytes: 64 * 1024 }), {
    kind: "sni",
    serverName: "big.example.com",
    echOffered: false,
  });
});

Deno.test("too_large counts the record headers a hello in many small records costs", () => {
  // 1,000 bytes of message in 1-byte records need 6,000 bytes on the wire.
  const message = buildClientHelloMessage({ serverName: "a.example", paddingBytes: 1000 - 200 }).message;
  const records = toRecords(message, 1);
  assert.deepEqual(parseClientHello(records, { maxBytes: records.length - 1 }), { kind: "too_large" });
  assert.equal(parseClientHello(records, { maxBytes: records.length }).kind, "sni");
});

// ---------------------------------------------------------------------------------------------------------
// Lying lengths, one layer at a time

Deno.test("lying lengths in each field are malformed and say which field", () => {
  const built = buildClientHelloMessage({ serverName: "app.example.com", ech: true });
  // Each case: the field, the lie told about its true length, and the verdict.
  const plus = (delta: number) => (truth: number) => truth + delta;
  const claim = (value: number) => () => value;
  const cases: Array<[LengthField, (truth: number) => number, ClientHelloResult]> = [
    ["handshake", plus(-1), malformed("extensions length exceeds the message")],
    ["handshake", plus(-40), malformed("extensions length exceeds the message")],
    ["session_id", plus(1), malformed("session_id length is 33, expected at most 32")],
    ["session_id", plus(-1), malformed("cipher_suites length exceeds the message")],
    ["session_id", claim(232), malformed("session_id length is 232, expected at most 32")],
    ["cipher_suites", plus(1), malformed("cipher_suites length is 9, expected an even number of at least 2")],
    [
      "cipher_suites",
      plus(-8),
      malformed("cipher_suites length is 0, expected an even number of at least 2"),
    ],
    ["cipher_suites", claim(0xff00), malformed("cipher_suites length exceeds the message")],
    ["compression_methods", plus(-1), malformed("compression_methods is empty")],
    ["compression_methods", plus(1), malformed("extensions length exceeds the message")],
    ["extensions", plus(1), malformed("extensions length exceeds the message")],
    ["extensions", plus(-1), malformed("extensions length is shorter than the message")],
    ["first_extension", plus(1), malformed("server_name list length does not match the extension")],
    ["first_extension", claim(0xffff), malformed("extension 0x0000 length exceeds the extensions block")],
    ["first_extension", plus(-1), malformed("server_name list length does not match the extension")],
    ["server_name_list", plus(1), malformed("server_name list length does not match the extension")],
    ["server_name_list", plus(-1), malformed("server_name list length does not match the extension")],
    ["host_name", plus(1), malformed("server_name entry length exceeds the list")],
    ["host_name", plus(-1), malformed("server_name entry length does not match the list")],
  ];
  for (const [field, lie, expected] of cases) {
    const value = lie(lengthOf(built, field));
    const message = withLength(built, field, value);
    assert.deepEqual(parseClientHello(toRecords(message)), expected, `${field} claiming ${value}`);
  }
});

Deno.test("a handshake length larger than the records is incomplete, then truncated at EOF", () => {
  const built = buildClientHelloMessage({ serverName: "app.example.com" });
  const bytes = toRecords(withLength(built, "handshake", lengthOf(built, "handshake") + 1));
  assert.deepEqual(parseClientHello(bytes), { kind: "incomplete" });
  assert.deepEqual(parseClientHello(bytes, { atEof: true }), { kind: "truncated" });
});

Deno.test("a body too short for its fields names the first missing one", () => {
  const hello = (body: number[]) => toRecords(Uint8Array.of(1, 0, 0, body.length, ...body));
  assert.deepEqual(parseClientHello(hello([])), malformed("legacy_version is truncated"));
  assert.deepEqual(parseClientHello(hello([3, 3, 1, 2])), malformed("random is truncated"));
  assert.deepEqual(
    parseClientHello(hello([2, 0, ...new Array(32).fill(0), 0, 0, 2, 0, 0x2f, 1, 0])),
    malformed("legacy_version is 0x0200, expected 0x03xx"),
  );
  assert.deepEqual(
    parseClientHello(hello([3, 3, ...new Array(32).fill(0), 0, 0, 2, 0, 0x2f, 1, 0, 0])),
    malformed("extensions length exceeds the message"),
  );
});

Deno.test("odd or empty cipher_suites and empty compression_methods are malformed", () => {
  assert.deepEqual(
    parseClientHello(buildClientHello({ cipherSuites: Uint8Array.of(0x13, 0x01, 0x13) })),
    malformed("cipher_suites length is 3, expected an even number of at least 2"),
  );
  assert.deepEqual(
    parseClientHello(buildClientHello({ compressionMethods: new Uint8Array(0) })),
    malformed("compression_methods is empty"),
  );
});

// ---------------------------------------------------------------------------------------------------------
// Hostile server names and extensions

const hostileNames: Array<[string, HelloSpec, ClientHelloResult]> = [
  ["a zero-length host_name", { serverName: "" }, malformed("server_name host_name is empty")],
  ["an empty server_name list", { serverNameEntries: [] }, malformed("server_name list is empty")],
  ["an IPv4 literal", { serverName: "192.0.2.1" }, malformed("server_name host_name is an IP literal")],
  [
    "an IPv4 literal with a dot",
    { serverName: "10.0.0.1." },
    malformed("server_name host_name is an IP literal"),
  ],
  ["an IPv6 literal", { serverName: "2001:db8::1" }, malformed("server_name host_name is an IP literal")],
  ["a bracketed IPv6 literal", { serverName: "[::1]" }, malformed("server_name host_name is an IP literal")],
  [
    "a UTF-8 (non-ASCII) name",
    { serverName: "bücher.example" },
    malformed("server_name host_name has non-ASCII bytes"),
  ],
  [
    "a NUL byte",
    { serverName: "a\u0000.example" },
    malformed("server_name host_name has control characters"),
  ],
  [
    "a DEL byte",
    { serverName: "a\u007f.example" },
    malformed("server_name host_name has control characters"),
  ],
  ["a trailing space", { serverName: "a.example " }, malformed("server_name host_name has spaces")],
  [
    "an empty label",
    { serverName: "a..example" },
    malformed("server_name host_name is not a valid hostname"),
  ],
  [
    "two trailing dots",
    { serverName: "a.example.." },
    malformed("server_name host_name is not a valid hostname"),
  ],
  ["a label of 64 bytes", { serverName: `${"a".repeat(64)}.example` }, {
    kind: "malformed",
    reason: "server_name host_name is not a valid hostname",
  }],
  [
    "two host_name entries",
    {
      serverNameEntries: [
        { nameType: 0, name: encoder.encode("a.example") },
        { nameType: 0, name: encoder.encode("b.example") },
      ],
    },
    malformed("server_name list holds more than one entry"),
  ],
  [
    "a name_type other than host_name",
    { serverNameEntries: [{ nameType: 1, name: encoder.encode("a.example") }] },
    malformed("server_name entry has name_type 1, expected 0"),
  ],
  [
    "a duplicated server_name extension",
    {
      serverName: "a.example",
      extraExtensions: [{
        type: EXTENSION_SERVER_NAME,
        data: Uint8Array.of(0, 12, 0, 0, 9, ...encoder.encode("b.example")),
      }],
    },
    malformed("extension 0x0000 appears twice"),
  ],
  [
    "a duplicated supported_groups extension",
    { serverName: "a.example", extraExtensions: [{ type: 0x000a, data: Uint8Array.of(0, 2, 0, 0x1d) }] },
    malformed("extension 0x000a appears twice"),
  ],
  [
    "a duplicated ECH extension",
    { ech: true, extraExtensions: [{ type: EXTENSION_ECH, data: Uint8Array.of(1) }] },
    malformed("extension 0xfe0d appears twice"),
  ],
];

for (const [what, spec, expected] of hostileNames) {
  Deno.test(`hostile hello: ${what} is ${expected.kind}`, () => {
    assert.deepEqual(parseClientHello(buildClientHello(spec)), expected);
  });
}

Deno.test("hostile hello: random bytes are not_tls, or a verdict, never a throw", () => {
  // A fixed linear congruential sequence: reproducible "random" bytes.
  let state = 12345;
  const next = () => (state = (state * 1103515245 + 12345) & 0x7fffffff) >> 16;
  const bytes = Uint8Array.from({ length: 4096 }, () => next() & 0xff);
  assert.equal(bytes[0] === 0x16, false);
  assert.deepEqual(parseClientHello(bytes), { kind: "not_tls" });
  bytes[0] = 0x16;
  bytes[1] = 0x03;
  assert.equal(parseClientHello(bytes).kind, "malformed");
});

// ---------------------------------------------------------------------------------------------------------
// Properties

// Valid names by construction (labels of [a-z0-9-] not starting or ending with "-", an alphabetic TLD);
// built from character units because fc.stringMatching is two orders of magnitude slower.
const LETTERS = [..."abcdefghijklmnopqrstuvwxyz"];
const labelArbitrary = fc
  .string({ unit: fc.constantFrom(...LETTERS, ..."0123456789-"), minLength: 1, maxLength: 16 })
  .map((label) => label.replace(/^-|-$/g, "x"));
const hostnameArbitrary = fc
  .tuple(
    fc.array(labelArbitrary, { maxLength: 3 }),
    fc.string({ unit: fc.constantFrom(...LETTERS), minLength: 1, maxLength: 7 }),
  )
  .map(([labels, tld]) => [...labels, tld].join("."));

const specArbitrary: fc.Arbitrary<HelloSpec> = fc.record({
  serverName: fc.option(hostnameArbitrary, { nil: undefined }),
  ech: fc.boolean(),
  paddingBytes: fc.option(fc.integer({ min: 0, max: 3000 }), { nil: undefined }),
  postQuantumShareBytes: fc.option(fc.constant(1216), { nil: undefined }),
  sessionIdBytes: fc.integer({ min: 0, max: 32 }),
});

function expectedFor(spec: HelloSpec): ClientHelloResult {
  const echOffered = spec.ech ?? false;
  return spec.serverName === undefined
    ? { kind: "no_sni", echOffered }
    : { kind: "sni", serverName: spec.serverName, echOffered };
}

const recordSizesArbitrary = fc.array(
  fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 16384 })),
  { minLength: 1, maxLength: 16 },
);

Deno.test("property: arbitrary bytes never throw and give one of the kinds", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, atEof) => {
      const result = parseClientHello(bytes, { atEof });
      assert.ok(KINDS.includes(result.kind));
      if (bytes.length > 0 && bytes[0] !== 0x16) assert.deepEqual(result, { kind: "not_tls" });
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: a valid hello with bytes overwritten or cut never throws", () => {
  fc.assert(
    fc.property(
      specArbitrary,
      recordSizesArbitrary,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
      fc.nat(),
      fc.boolean(),
      (spec, recordSizes, edits, cut, atEof) => {
        const bytes = buildClientHello(spec, recordSizes);
        for (const [position, value] of edits) bytes[position % bytes.length] = value;
        const result = parseClientHello(bytes.subarray(0, cut % (bytes.length + 1)), { atEof });
        assert.ok(KINDS.includes(result.kind));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("property: any record split and any call boundaries give the result of the whole hello", () => {
  fc.assert(
    fc.property(
      specArbitrary,
      recordSizesArbitrary,
      fc.array(fc.nat(), { maxLength: 20 }),
      fc.uint8Array({ maxLength: 64 }),
      (spec, recordSizes, cuts, trailing) => {
        const expected = expectedFor(spec);
        const { message } = buildClientHelloMessage(spec);
        assert.deepEqual(parseClientHello(toRecords(message)), expected);
        const bytes = toRecords(message, recordSizes);
        const helloEnd = bytes.length;
        const stream = concat(bytes, trailing);
        const boundaries = [...new Set(cuts.map((cut) => cut % (helloEnd + 1)))].sort((a, b) => a - b);
        for (const boundary of boundaries) {
          const result = parseClientHello(stream.subarray(0, boundary));
          assert.deepEqual(result, boundary < helloEnd ? { kind: "incomplete" } : expected);
        }
        assert.deepEqual(parseClientHello(stream), expected);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("property: any strict prefix of a valid hello is incomplete, and truncated at EOF", () => {
  fc.assert(
    fc.property(specArbitrary, recordSizesArbitrary, fc.nat(), (spec, recordSizes, cut) => {
      const bytes = buildClientHello(spec, recordSizes);
      const prefix = bytes.subarray(0, cut % bytes.length);
      assert.deepEqual(parseClientHello(prefix), { kind: "incomplete" });
      assert.deepEqual(parseClientHello(prefix, { atEof: true }), { kind: "truncated" });
    }),
    { numRuns: 500 },
  );
});
