/**
 * A hub client written frame by frame, for the review of #8: a TLS WebSocket to the hub whose every frame the
 * test chooses (empty fragments, pings, messages after a close), and that reads only when told to, so it can
 * play a client that never reads or never closes.
 *
 * @module
 */

import { signBackendToken } from "../../src/protocol/backend_token.ts";
import { testCertificates } from "../helpers/certs.ts";
import { TEST_JWT_SECRET } from "../helpers/cluster.ts";

const encoder = new TextEncoder();

export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) written += await conn.write(bytes.subarray(written));
}

/** A masked client frame (RFC 6455 §5.2) with mask key 0, so the payload goes as it is. */
export function clientFrame(opcode: number, payload: Uint8Array, fin = true): Uint8Array {
  const length = payload.length;
  const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const frame = new Uint8Array(2 + lengthBytes + 4 + length);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  if (lengthBytes === 0) frame[1] = 0x80 | length;
  else if (lengthBytes === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = length >> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  frame.set(payload, 2 + lengthBytes + 4);
  return frame;
}

/** `frame` repeated `times` times, for one big write. */
export function repeated(frame: Uint8Array, times: number): Uint8Array {
  const out = new Uint8Array(frame.length * times);
  for (let i = 0; i < times; i++) out.set(frame, i * frame.length);
  return out;
}

/** Reads server frames (unmasked) one at a time. */
export class ServerFrames {
  #buffer = new Uint8Array(0);
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next frame, or null when the connection ended. */
  async next(): Promise<{ opcode: number; payload: Uint8Array } | null> {
    if (!(await this.#fill(2))) return null;
    let length = this.#buffer[1] & 0x7f;
    let header = 2;
    if (length === 126) {
      if (!(await this.#fill(4))) return null;
      length = (this.#buffer[2] << 8) | this.#buffer[3];
      header = 4;
    } else if (length === 127) {
      if (!(await this.#fill(10))) return null;
      length = Number(new DataView(this.#buffer.buffer, this.#buffer.byteOffset).getBigUint64(2));
      header = 10;
    }
    if (!(await this.#fill(header + length))) return null;
    const frame = { opcode: this.#buffer[0] & 0x0f, payload: this.#buffer.slice(header, header + length) };
    this.#buffer = this.#buffer.slice(header + length);
    return frame;
  }

  /** The next frame that is not a pong (our pings' answers and the server's acknowledgements). */
  async nextNotPong(): Promise<{ opcode: number; payload: Uint8Array } | null> {
    for (;;) {
      const frame = await this.next();
      if (frame === null || frame.opcode !== 0xa) return frame;
    }
  }

  async #fill(bytes: number): Promise<boolean> {
    while (this.#buffer.length < bytes) {
      const chunk = new Uint8Array(64 * 1024);
      let n: number | null;
      try {
        n = await this.#conn.read(chunk);
      } catch {
        return false;
      }
      if (n === null) return false;
      const joined = new Uint8Array(this.#buffer.length + n);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, n), this.#buffer.length);
      this.#buffer = joined;
    }
    return true;
  }
}

/** Opens a TLS connection to the hub and upgrades `path` by hand; the 101's head is consumed. */
export async function upgradedHubSocket(
  port: number,
  options: { path?: string; protocol?: string } = {},
): Promise<Deno.TlsConn> {
  const certs = await testCertificates();
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.ca.certPem] });
  const request = `GET ${options.path ?? "/connect"} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
    (options.protocol ? `Sec-WebSocket-Protocol: ${options.protocol}\r\n` : "") + "\r\n";
  await writeAll(conn, encoder.encode(request));
  let head = "";
  const byte = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n")) {
    const n = await conn.read(byte);
    if (n === null) throw new Error(`the hub closed during the upgrade: ${head}`);
    head += String.fromCharCode(byte[0]);
  }
  if (!head.startsWith("HTTP/1.1 101")) throw new Error(`the hub did not upgrade: ${head.split("\r\n")[0]}`);
  return conn;
}

/** A backend authenticated by hand (our subprotocol, both tokens); returns its socket and frame reader. */
export async function authenticatedRawBackend(
  port: number,
  hostnames: readonly string[],
): Promise<{ conn: Deno.TlsConn; frames: ServerFrames }> {
  const conn = await upgradedHubSocket(port, { protocol: "nexus-mux.v1" });
  const frames = new ServerFrames(conn);
  const identity = { secret: TEST_JWT_SECRET, name: "raw-backend", hostnames, weight: 1 };
  await writeAll(conn, clientFrame(0x1, encoder.encode(await signBackendToken(identity))));
  const challenge = await frames.nextNotPong();
  if (challenge === null) throw new Error("no challenge");
  const { nonce } = JSON.parse(new TextDecoder().decode(challenge.payload)) as { nonce: string };
  await writeAll(
    conn,
    clientFrame(0x1, encoder.encode(await signBackendToken({ ...identity, sessionNonce: nonce }))),
  );
  const accepted = await frames.nextNotPong();
  const text = accepted === null ? "(closed)" : new TextDecoder().decode(accepted.payload);
  if (!text.includes("handshake_accepted")) throw new Error(`not accepted: ${text}`);
  return { conn, frames };
}

/** One control frame of the multiplexer (type 0x02 and its JSON). */
export function muxControl(message: unknown): Uint8Array {
  const json = encoder.encode(JSON.stringify(message));
  const frame = new Uint8Array(1 + json.length);
  frame[0] = 0x02;
  frame.set(json, 1);
  return frame;
}

/** A batch message (type 0x03, each frame behind its 4-byte length). */
export function muxBatch(frames: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(1 + frames.reduce((sum, frame) => sum + 4 + frame.length, 0));
  const view = new DataView(out.buffer);
  out[0] = 0x03;
  let at = 1;
  for (const frame of frames) {
    view.setUint32(at, frame.length);
    out.set(frame, at + 4);
    at += 4 + frame.length;
  }
  return out;
}

/** The local ports `pid` listens on, from /proc/net/tcp matched by the inodes of its sockets. */
export async function listeningPortsOf(pid: number): Promise<number[]> {
  const listing = await new Deno.Command("ls", { args: ["-l", `/proc/${pid}/fd`], stdout: "piped" }).output();
  const inodes = new Set(
    [...new TextDecoder().decode(listing.stdout).matchAll(/socket:\[(\d+)\]/g)].map((m) => m[1]),
  );
  const tcp = await new Deno.Command("cat", { args: ["/proc/net/tcp"], stdout: "piped" }).output();
  const ports: number[] = [];
  for (const line of new TextDecoder().decode(tcp.stdout).split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 10 && fields[3] === "0A" && inodes.has(fields[9])) {
      ports.push(parseInt(fields[1].split(":")[1], 16));
    }
  }
  return ports;
}
