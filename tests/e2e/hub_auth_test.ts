/**
 * The backend handshake at a running node's hub (docs/protocol.md §4.2, §4.3), driven step by step by a raw
 * WebSocket client written here, not by the agent: every bad token or bad step is refused with close code 1008
 * and its exact reason, registers nothing and routes nothing; a correct two-stage handshake without a
 * subprotocol registers, and the raw client then serves a relayed client in the original frame protocol.
 */

import assert from "node:assert/strict";
import { SignJWT } from "jose";
import {
  startTestNode,
  TEST_JWT_SECRET,
  type TestNode,
  type TestNodeOptions,
  waitFor,
} from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { rawExchange, readExactly, UNRECOGNIZED_NAME_ALERT } from "../helpers/raw.ts";
import { writeAll } from "../helpers/services.ts";
import { signBackendToken } from "../../src/protocol/backend_token.ts";
import {
  decodeFrame,
  encodeControlFrame,
  encodeDataFrame,
  streamIdBytes,
  type StreamOpenInfo,
} from "../../src/protocol/frames.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";

const NAME = "auth.test.nexus";
const POLICY_VIOLATION = 1008;
/** The hub's wait for each token, lowered from the original's 10 s so the deadline cases are quick. */
const TOKEN_WAIT_SECONDS = 1;
const MESSAGE_WAIT_MS = 5_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Substrings that make the original client treat a failure as permanent and give up after five (§4.5,
 * C `categorizeError`); anything else it retries forever.
 */
const PERMANENT_FAILURE_WORDS = [
  "unauthorized",
  "invalid token",
  "invalid credential",
  "authentication failed",
  "forbidden",
  "401",
  "403",
];

function originalClientGivesUp(reason: string): boolean {
  const lower = reason.toLowerCase();
  return PERMANENT_FAILURE_WORDS.some((word) => lower.includes(word));
}

/** What a raw backend reads from its WebSocket. */
type Received =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "binary"; readonly bytes: Uint8Array }
  | { readonly kind: "close"; readonly code: number; readonly reason: string };

/** A backend's WebSocket to the hub with nothing on top: the test says every step. */
class RawBackend {
  readonly #ws: WebSocket;
  readonly #client: Deno.HttpClient;
  readonly #queue: Received[] = [];
  #wake: (() => void) | null = null;
  readonly closed: Promise<void>;

  private constructor(ws: WebSocket, client: Deno.HttpClient) {
    this.#ws = ws;
    this.#client = client;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      this.#push(
        typeof event.data === "string"
          ? { kind: "text", text: event.data }
          : { kind: "binary", bytes: new Uint8Array(event.data as ArrayBuffer) },
      );
    };
    this.closed = new Promise((resolve) => {
      ws.onclose = (event) => {
        this.#push({ kind: "close", code: event.code, reason: event.reason });
        resolve();
      };
    });
    ws.onerror = () => {};
  }

  /** Opens `wss://…/connect` offering no subprotocol, as the original client does (§4.1). */
  static async open(hubUrl: string): Promise<RawBackend> {
    const certs = await testCertificates();
    const client = Deno.createHttpClient({ caCerts: [certs.ca.certPem] });
    const ws = new WebSocket(hubUrl, { client });
    const backend = new RawBackend(ws, client);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      void backend.closed.then(() => reject(new Error("the hub closed the WebSocket before it opened")));
    });
    assert.equal(ws.protocol, "");
    return backend;
  }

  sendText(text: string): void {
    this.#ws.send(text);
  }

  sendBinary(bytes: Uint8Array): void {
    this.#ws.send(bytes);
  }

  /** The next message or the close; fails the test after `waitMs` of nothing. */
  async next(waitMs = MESSAGE_WAIT_MS): Promise<Received> {
    const deadline = Date.now() + waitMs;
    while (this.#queue.length === 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, deadline - Date.now());
      });
      clearTimeout(timer);
      this.#wake = null;
      if (this.#queue.length === 0 && Date.now() >= deadline) {
        throw new Error(`nothing from the hub within ${waitMs} ms`);
      }
    }
    return this.#queue.shift()!;
  }

  /** Reads the challenge (§4.2) and returns its nonce, checking its exact shape. */
  async challenge(): Promise<string> {
    const message = await this.next();
    assert.equal(message.kind, "text", JSON.stringify(message));
    const parsed = JSON.parse((message as { text: string }).text);
    assert.deepEqual(Object.keys(parsed), ["type", "nonce"]);
    assert.equal(parsed.type, "handshake_challenge");
    // 32 random bytes, base64url without padding.
    assert.match(parsed.nonce, /^[A-Za-z0-9_-]{43}$/);
    return parsed.nonce;
  }

  /** Closes from our side (1000) and waits for the close to complete. */
  async close(): Promise<void> {
    try {
      this.#ws.close(1000, "test done");
    } catch {
      // Already closed.
    }
    await this.closed;
    this.#client.close();
  }

  #push(received: Received): void {
    this.#queue.push(received);
    this.#wake?.();
  }
}

/** Claims of a token, signed HS256 with `secret`; `iss`, `aud` and times as given (absent when undefined). */
function craftToken(
  claims: Record<string, unknown>,
  options: { secret?: Uint8Array; iss?: string; aud?: string; exp?: number; nbf?: number } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setIssuedAt(now)
    .setIssuer(options.iss ?? "authorizer").setAudience(options.aud ?? "nexus")
    .setExpirationTime(options.exp ?? now + 30);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(options.secret ?? TEST_JWT_SECRET);
}

/** A good stage-0 token for {@linkcode NAME}. */
function goodToken(
  extra: { sessionNonce?: string; hostnames?: string[]; weight?: number } = {},
): Promise<string> {
  return signBackendToken({
    secret: TEST_JWT_SECRET,
    name: "raw-backend",
    hostnames: extra.hostnames ?? [NAME],
    weight: extra.weight ?? 2,
    ...(extra.sessionNonce === undefined ? {} : { sessionNonce: extra.sessionNonce }),
  });
}

/** Expects the hub to refuse with 1008 and exactly `reason`, and to have registered and routed nothing. */
async function assertRefused(node: TestNode, backend: RawBackend, reason: string): Promise<void> {
  const message = await backend.next();
  assert.deepEqual(message, { kind: "close", code: POLICY_VIOLATION, reason });
  await backend.close();
  assert.equal(node.node.hub.backends.size, 0);
  assert.equal(node.node.router.route(NAME), undefined);
}

const now = () => Math.floor(Date.now() / 1000);

/** A refused first step: what the backend sends first, the exact reason, and whether the original gives up. */
interface Stage0Case {
  readonly name: string;
  readonly send: (backend: RawBackend) => Promise<void>;
  readonly reason: string;
  readonly permanent: boolean;
}

const stage0Cases: Stage0Case[] = [
  {
    name: "a token signed with another secret",
    send: async (b) => b.sendText(await goodTokenWith({ secret: encoder.encode("not-the-backends-secret") })),
    reason: "authentication failed: token signature does not match the backends secret",
    permanent: true,
  },
  {
    name: "a wrong iss",
    send: async (b) => b.sendText(await craftToken({ hostnames: [NAME] }, { iss: "someone-else" })),
    reason: 'authentication failed: token issuer must be "authorizer"',
    permanent: true,
  },
  {
    name: "a wrong aud",
    send: async (b) => b.sendText(await craftToken({ hostnames: [NAME] }, { aud: "not-nexus" })),
    reason: 'authentication failed: token audience must include "nexus"',
    permanent: true,
  },
  {
    name: "text that is not a JWT",
    send: (b) => Promise.resolve(b.sendText("hello, hub")),
    reason: "authentication failed: not a well-formed JWT",
    permanent: true,
  },
  {
    name: "an expired token",
    send: async (b) => b.sendText(await craftToken({ hostnames: [NAME] }, { exp: now() - 60 })),
    reason: "token expired",
    permanent: false,
  },
  {
    name: "a token not yet valid (nbf)",
    send: async (b) => b.sendText(await craftToken({ hostnames: [NAME] }, { nbf: now() + 3600 })),
    reason: "token not yet valid",
    permanent: false,
  },
  {
    name: "no hostnames claim",
    send: async (b) => b.sendText(await craftToken({ weight: 1 })),
    reason: "forbidden: token claims no hostnames",
    permanent: true,
  },
  {
    name: "an empty hostnames claim",
    send: async (b) => b.sendText(await craftToken({ hostnames: [] })),
    reason: "forbidden: token claims no hostnames",
    permanent: true,
  },
  {
    name: "an invalid hostname",
    send: async (b) => b.sendText(await craftToken({ hostnames: [NAME, "bad host!"] })),
    reason: 'forbidden: "bad host!" is not a valid hostname',
    permanent: true,
  },
  {
    name: "a tcp: port claim as a hostname",
    send: async (b) => b.sendText(await craftToken({ hostnames: ["tcp:22"] })),
    reason: 'forbidden: "tcp:22" is a port claim; this node routes by hostname only',
    permanent: true,
  },
  {
    name: "only tcp_ports claims",
    send: async (b) => b.sendText(await craftToken({ tcp_ports: [22] })),
    reason: "forbidden: token claims only ports; this node routes by hostname",
    permanent: true,
  },
  {
    name: "a binary frame instead of the token",
    send: (b) => Promise.resolve(b.sendBinary(Uint8Array.of(1, 2, 3))),
    reason: "expected the first token as a text frame, got a binary frame",
    permanent: false,
  },
  {
    name: "no token within the deadline",
    send: () => Promise.resolve(),
    reason: `no first token within ${TOKEN_WAIT_SECONDS}s`,
    permanent: false,
  },
];

function goodTokenWith(options: { secret: Uint8Array }): Promise<string> {
  return signBackendToken({ secret: options.secret, name: "raw-backend", hostnames: [NAME], weight: 2 });
}

/** A refused second step: what the backend answers to the challenge. */
interface Stage1Case {
  readonly name: string;
  readonly answer: (backend: RawBackend, nonce: string) => Promise<void>;
  readonly reason: string;
  readonly permanent: boolean;
}

const stage1Cases: Stage1Case[] = [
  {
    name: "a second token without the nonce",
    answer: async (b) => b.sendText(await goodToken()),
    reason: "handshake mismatch: second token does not carry the challenge nonce",
    permanent: false,
  },
  {
    name: "a second token with another nonce",
    answer: async (b, nonce) => b.sendText(await goodToken({ sessionNonce: nonce.slice(1) + "A" })),
    reason: "handshake mismatch: second token does not carry the challenge nonce",
    permanent: false,
  },
  {
    name: "a second token claiming other hostnames",
    answer: async (b, nonce) =>
      b.sendText(await goodToken({ sessionNonce: nonce, hostnames: [NAME, "other.test.nexus"] })),
    reason: "handshake mismatch: second token claims other hostnames",
    permanent: false,
  },
  {
    name: "a second token claiming another weight",
    answer: async (b, nonce) => b.sendText(await goodToken({ sessionNonce: nonce, weight: 3 })),
    reason: "handshake mismatch: second token claims another weight",
    permanent: false,
  },
  {
    name: "an expired second token",
    answer: async (b, nonce) =>
      b.sendText(
        await craftToken({ hostnames: [NAME], weight: 2, session_nonce: nonce }, { exp: now() - 60 }),
      ),
    reason: "token expired",
    permanent: false,
  },
  {
    name: "a second token signed with another secret",
    answer: async (b, nonce) =>
      b.sendText(
        await craftToken({ hostnames: [NAME], session_nonce: nonce }, { secret: encoder.encode("nope") }),
      ),
    reason: "authentication failed: token signature does not match the backends secret",
    permanent: true,
  },
  {
    name: "a binary frame instead of the second token",
    answer: (b) => Promise.resolve(b.sendBinary(Uint8Array.of(2))),
    reason: "expected the second token as a text frame, got a binary frame",
    permanent: false,
  },
  {
    name: "no second token within the deadline",
    answer: () => Promise.resolve(),
    reason: `no second token within ${TOKEN_WAIT_SECONDS}s`,
    permanent: false,
  },
];

function startNode(limits: TestNodeOptions["limits"] = {}): Promise<TestNode> {
  return startTestNode({
    limits,
    handshakeTimeouts: {
      firstByteSeconds: 15,
      extendSeconds: 5,
      totalSeconds: 30,
      backendTokenSeconds: TOKEN_WAIT_SECONDS,
      hubUpgradeSeconds: 10,
    },
  });
}

Deno.test("every refused first token closes with 1008 and its exact reason, and registers and routes nothing", async (t) => {
  const node = await startNode();
  try {
    for (const [i, testCase] of stage0Cases.entries()) {
      await t.step(testCase.name, async () => {
        const backend = await RawBackend.open(node.hubUrl);
        await testCase.send(backend);
        await assertRefused(node, backend, testCase.reason);
        assert.equal(node.node.refusals.total("backend_rejected"), i + 1);
      });
    }
    assert.deepEqual(
      await rawExchange(node.tlsPort, [buildClientHello({ serverName: NAME })]),
      UNRECOGNIZED_NAME_ALERT,
    );
  } finally {
    await node.close();
  }
});

Deno.test("every refused second token closes with 1008 and its exact reason, and registers and routes nothing", async (t) => {
  const node = await startNode();
  try {
    for (const [i, testCase] of stage1Cases.entries()) {
      await t.step(testCase.name, async () => {
        const backend = await RawBackend.open(node.hubUrl);
        backend.sendText(await goodToken());
        const nonce = await backend.challenge();
        await testCase.answer(backend, nonce);
        await assertRefused(node, backend, testCase.reason);
        assert.equal(node.node.refusals.total("backend_rejected"), i + 1);
      });
    }
    assert.deepEqual(
      await rawExchange(node.tlsPort, [buildClientHello({ serverName: NAME })]),
      UNRECOGNIZED_NAME_ALERT,
    );
  } finally {
    await node.close();
  }
});

Deno.test("reasons of permanent refusals say 'authentication failed' or 'forbidden', so the original client gives up; transient ones do not", () => {
  for (const testCase of [...stage0Cases, ...stage1Cases]) {
    assert.equal(
      originalClientGivesUp(testCase.reason),
      testCase.permanent,
      `${testCase.name}: ${testCase.reason}`,
    );
    if (testCase.permanent) assert.match(testCase.reason, /^(authentication failed|forbidden): /);
  }
  // The wording must fit a WebSocket close reason (123 bytes), or the close frame itself fails.
  for (const testCase of [...stage0Cases, ...stage1Cases]) {
    assert.ok(encoder.encode(testCase.reason).length <= 123);
  }
});

/** A stream the raw backend was asked to open: the `connect` as it came on the wire, and decoded. */
interface OpenedStream {
  readonly wire: string;
  readonly id: string;
  readonly info: StreamOpenInfo;
  readonly credits: number | undefined;
}

/** Serves streams in the original frame protocol: echoes every data frame back, records the control events. */
async function echoStreams(
  backend: RawBackend,
  events: { opened: OpenedStream[]; closed: string[] },
): Promise<void> {
  for (;;) {
    // Streams come when the test sends clients; the close ends the loop.
    const received = await backend.next(60_000);
    if (received.kind === "close") return;
    if (received.kind !== "binary") continue;
    const frame = decodeFrame(received.bytes);
    if (frame.kind === "data") {
      backend.sendBinary(encodeDataFrame(streamIdBytes(frame.id), frame.payload));
    } else if (frame.kind === "control" && frame.message.type === "open") {
      const { id, info, credits } = frame.message;
      events.opened.push({ wire: decoder.decode(received.bytes.subarray(1)), id, info, credits });
    } else if (frame.kind === "control" && frame.message.type === "close") {
      events.closed.push(frame.message.id);
    }
  }
}

Deno.test("a correct two-stage handshake without a subprotocol registers; relayed clients are then served in the original frame protocol", async (t) => {
  // No half-close in the original protocol (§7.2): a client's FIN ends its stream after this timeout at the
  // latest.
  const node = await startNode({ halfClosedTimeoutSeconds: 1 });
  const backend = await RawBackend.open(node.hubUrl);
  const events = { opened: [] as OpenedStream[], closed: [] as string[] };
  let serving: Promise<void> | undefined;
  try {
    backend.sendText(await goodToken());
    const nonce = await backend.challenge();
    backend.sendText(await goodToken({ sessionNonce: nonce }));
    // No acknowledgement is sent to a client of the original protocol (§4.2): registration shows at the node.
    await waitFor(() => node.node.hub.backends.size === 1, "the raw backend to be registered");
    const [registered] = node.node.hub.backends;
    assert.equal(registered.name, "raw-backend");
    assert.equal(registered.weight, 2);
    assert.deepEqual(registered.claims, [{ kind: "exact", name: NAME }]);
    assert.equal(registered.session.dialect.name, "original");
    assert.equal(node.node.refusals.total("backend_rejected"), 0);
    serving = echoStreams(backend, events);
    const hello = buildClientHello({ serverName: NAME });

    await t.step(
      "the connect names the client exactly as the original does, and data is echoed",
      async () => {
        const client = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
        const clientPort = (client.localAddr as Deno.NetAddr).port;
        try {
          await writeAll(client, hello);
          assert.deepEqual(await readExactly(client, hello.length), hello);
          await writeAll(client, encoder.encode("ping"));
          assert.equal(decoder.decode(await readExactly(client, 4)), "ping");

          assert.equal(events.opened.length, 1);
          const [{ wire, id, info, credits }] = events.opened;
          assert.deepEqual(info, {
            hostname: NAME,
            port: node.tlsPort,
            clientAddress: `127.0.0.1:${clientPort}`,
            isTls: true,
            relayAddress: `127.0.0.1:${node.tlsPort}`,
          });
          assert.equal(credits, 64);
          // §3.1: the original's field names and order, exactly; our relay_addr after them, which it ignores.
          assert.equal(
            wire,
            `{"event":"connect","client_id":"${id}","conn_port":${node.tlsPort},` +
              `"client_ip":"127.0.0.1:${clientPort}","transport":"tcp","hostname":"${NAME}","is_tls":true,"credits":64,` +
              `"relay_addr":"127.0.0.1:${node.tlsPort}"}`,
          );

          // The backend ends the stream: the relayed client reads the end.
          backend.sendBinary(encodeControlFrame({ type: "close", id, reason: "normal" }));
          assert.equal(await client.read(new Uint8Array(1)), null);
        } finally {
          client.close();
        }
      },
    );

    await t.step("a relayed client's close reaches the backend as the stream's disconnect", async () => {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
      try {
        await writeAll(client, hello);
        assert.deepEqual(await readExactly(client, hello.length), hello);
      } finally {
        client.close();
      }
      assert.equal(events.opened.length, 2);
      const { id } = events.opened[1];
      await waitFor(() => events.closed.includes(id), "the disconnect for the relayed stream");
    });
  } finally {
    await backend.close();
    await serving;
    await waitFor(() => node.node.hub.backends.size === 0, "the raw backend to leave");
    await node.close();
  }
});
