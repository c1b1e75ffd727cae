/**
 * What the mesh tests share: services that say who they are or send a requested number of bytes, clients that
 * expect a refusal, the peer routes a node has learnt, and a raw `/mesh` upgrade for what a real peer would
 * never send.
 *
 * @module
 */

import { NEXUS_MUX } from "../../src/mux/dialect.ts";
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { createLogger } from "../../src/log/logger.ts";
import { waitForOpen } from "../../src/transport/inbox.ts";
import { MUX_SUBPROTOCOL, MuxSession } from "../../src/mux/session.ts";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import { connectTls, TEST_PEER_SECRET, type TestNode, waitFor } from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { readExactly, UNRECOGNIZED_NAME_ALERT } from "../helpers/raw.ts";
import { patternBytes, readAll, serveConnections, type TestService, writeAll } from "../helpers/services.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";

const decoder = new TextDecoder();

/** A TLS service (certificate for the test names) that writes `name` and a newline, then ends its side. */
export async function namedService(name: string): Promise<TestService> {
  const certs = await testCertificates();
  return serveConnections(async (conn) => {
    await writeAll(conn, new TextEncoder().encode(`${name}\n`));
    await conn.closeWrite();
    await readAll(conn);
  }, certs.service);
}

/** Asks a TLS name through `node` and returns what the service behind it says it is. */
export async function whoServes(node: TestNode, hostname: string): Promise<string> {
  const conn = await connectTls(node.tlsPort, hostname);
  try {
    await conn.closeWrite();
    return decoder.decode(await readAll(conn)).trim();
  } finally {
    conn.close();
  }
}

/** Sends a ClientHello for `hostname` to `node` and returns everything it answers before closing. */
export async function answerToHello(node: TestNode, hostname: string): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
  try {
    await writeAll(conn, buildClientHello({ serverName: hostname }));
    return await readAll(conn);
  } finally {
    conn.close();
  }
}

/** Asserts that `node` refuses `hostname` with the TLS alert unrecognized_name, and counts it as no_backend. */
export async function assertNoRoute(node: TestNode, hostname: string): Promise<void> {
  const before = node.node.refusals.total("no_backend");
  assert.deepEqual(await answerToHello(node, hostname), UNRECOGNIZED_NAME_ALERT);
  assert.equal(node.node.refusals.total("no_backend"), before + 1);
}

/** Every route key `node` learnt from its peers, over all its links, sorted and without repeats. */
export function peerRouteKeys(node: TestNode): string[] {
  const keys = new Set<string>();
  for (const link of links(node)) {
    for (const key of node.node.router.peerRouteKeys(link)) keys.add(key);
  }
  return [...keys].sort();
}

/** The node's open peer links. */
export function links(node: TestNode): MuxSession[] {
  const mesh = node.node.mesh;
  assert.ok(mesh !== null, "the node has a mesh");
  return [...mesh.links];
}

/** Whether two lists are equal element by element (for `waitFor`). */
export function sameList(actual: readonly string[], expected: readonly string[]): boolean {
  return actual.length === expected.length && actual.every((value, i) => value === expected[i]);
}

/** A free TCP port on 127.0.0.1, for a node that must come back on the same port or list its own URL. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A TLS service that reads a 4-byte big-endian count, sends that many pattern bytes, then ends its side. */
export interface SourceService extends TestService {
  /** Bytes written so far on each accepted connection, in the order they were accepted. */
  readonly written: readonly number[];
}

/** The seed of the bytes a {@linkcode sourceService} sends for a request of `length` bytes. */
export function sourceSeed(length: number): number {
  return length ^ 0x5eed;
}

/** Starts a {@linkcode SourceService}. */
export async function sourceService(): Promise<SourceService> {
  const certs = await testCertificates();
  const written: number[] = [];
  const service = serveConnections(async (conn) => {
    const index = written.push(0) - 1;
    const header = new Uint8Array(4);
    for (let have = 0; have < 4;) {
      const n = await conn.read(header.subarray(have));
      if (n === null) return;
      have += n;
    }
    const length = new DataView(header.buffer).getUint32(0);
    const bytes = patternBytes(length, sourceSeed(length));
    for (let offset = 0; offset < length;) {
      const end = Math.min(offset + 64 * 1024, length);
      await writeAll(conn, bytes.subarray(offset, end));
      written[index] = end;
      offset = end;
    }
    await conn.closeWrite();
    await readAll(conn);
  }, certs.service);
  return {
    port: service.port,
    get accepted() {
      return service.accepted;
    },
    written,
    close: () => service.close(),
  };
}

/** The 4-byte request a {@linkcode sourceService} understands. */
export function sourceRequest(length: number): Uint8Array {
  const request = new Uint8Array(4);
  new DataView(request.buffer).setUint32(0, length);
  return request;
}

/** Wire constants of the peer token (what a real peer signs), for hand-made upgrades. */
const PEER_TOKEN_ISSUER = "nexus-peer";
const PEER_TOKEN_AUDIENCE = "nexus-mesh";

/** A peer token as a node signs it, with `iat` shifted by `clockAheadSeconds` (a peer whose clock runs ahead). */
export function peerToken(secret: Uint8Array, clockAheadSeconds = 0): Promise<string> {
  const nowSeconds = Math.floor(Date.now() / 1000) + clockAheadSeconds;
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(PEER_TOKEN_ISSUER)
    .setAudience(PEER_TOKEN_AUDIENCE)
    .setJti(crypto.randomUUID())
    .setIssuedAt(nowSeconds)
    .setExpirationTime(nowSeconds + 60)
    .sign(secret);
}

/** The status code and body of the answer to a hand-made `/mesh` WebSocket upgrade. */
export interface UpgradeAnswer {
  readonly status: number;
  readonly body: string;
}

/** Sends a WebSocket upgrade for `/mesh` over TLS, by hand, and reads the answer's status line and body. */
export async function rawMeshUpgrade(node: TestNode, authorization: string | null): Promise<UpgradeAnswer> {
  const certs = await testCertificates();
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: node.node.hubAddress.port,
    caCerts: [certs.ca.certPem],
  });
  try {
    const request = [
      "GET /mesh HTTP/1.1",
      `Host: 127.0.0.1:${node.node.hubAddress.port}`,
      "Connection: Upgrade",
      "Upgrade: websocket",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Protocol: nexus-mux.v1",
      ...(authorization === null ? [] : [`Authorization: ${authorization}`]),
      "",
      "",
    ].join("\r\n");
    await writeAll(conn, new TextEncoder().encode(request));
    let text = "";
    const buffer = new Uint8Array(4096);
    for (;;) {
      const headEnd = text.indexOf("\r\n\r\n");
      if (headEnd >= 0) {
        const head = text.slice(0, headEnd);
        const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? "0");
        const body = text.slice(headEnd + 4);
        if (status === 101 || body.length >= length) return { status, body: body.slice(0, length) };
      }
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`connection ended before a full answer: ${JSON.stringify(text)}`);
      text += decoder.decode(buffer.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}

/** A hand-held peer link to a node: what it announced, and a session to open tunnels on. */
export interface RawPeerLink {
  readonly link: MuxSession;
  /** Route lists the node announced, in order. */
  readonly announced: readonly (readonly string[])[];
  close(): Promise<void>;
}

/** Links to `node` as a peer would (a token signed with the test peer secret) and waits for its first announcement. */
export async function rawPeerLink(node: TestNode): Promise<RawPeerLink> {
  const certs = await testCertificates();
  const ws = new WebSocketClient(node.meshUrl, {
    protocols: [MUX_SUBPROTOCOL],
    headers: { authorization: `Bearer ${await peerToken(TEST_PEER_SECRET)}` },
    caCerts: [certs.ca.certPem],
  });
  const openError = await waitForOpen(ws, 5_000);
  if (openError !== null) {
    throw new Error(`peer link to ${node.meshUrl} did not open: ${openError}`);
  }
  const announced: string[][] = [];
  const link = new MuxSession(ws, {
    label: "test peer",
    dialect: NEXUS_MUX,
    log: createLogger("test peer"),
    maxStreams: 100,
    legacyStreamBufferBytes: 0,
    onAnnounce: (_version, routes) => announced.push([...routes]),
  });
  await waitFor(() => announced.length > 0, "the node's first announcement");
  const closed = new Promise<void>((resolve) => ws.addEventListener("close", () => resolve()));
  return {
    link,
    announced,
    async close() {
      link.close(1000, "test over");
      await closed;
    },
  };
}

/** A TCP listener that accepts connections and never answers: a peer that does not respond. */
export interface SilentPeer {
  readonly url: string;
  readonly accepted: number;
  /** Connections the dialler has closed (we read to their end). */
  readonly ended: number;
  close(): Promise<void>;
}

/** Starts a {@linkcode SilentPeer}. */
export function silentPeer(): SilentPeer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const readers: Promise<void>[] = [];
  let accepted = 0;
  let ended = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      accepted += 1;
      conns.add(conn);
      readers.push(readAll(conn).then(() => {}, () => {}).finally(() => (ended += 1)));
    }
  })();
  return {
    url: `wss://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/mesh`,
    get accepted() {
      return accepted;
    },
    get ended() {
      return ended;
    },
    async close() {
      listener.close();
      await loop.catch(() => {});
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.all(readers);
    },
  };
}

/** Writes `sent` and reads as many bytes back (an echo), concurrently. */
export async function roundTrip(conn: Deno.Conn, sent: Uint8Array): Promise<Uint8Array> {
  const [received] = await Promise.all([readExactly(conn, sent.length), writeAll(conn, sent)]);
  return received;
}
