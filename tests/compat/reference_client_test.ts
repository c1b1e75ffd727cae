/**
 * The original's standalone backend client, `nexus-proxy-backend-client` v0.2.6 (docs/protocol.md
 * §7.2), run unchanged as a child process against our hub. Built by `scripts/reference_client.ts`; when
 * `go` or the module cannot be had, every test here is skipped and the reason printed once.
 *
 * The client verifies the hub's certificate against the system roots; it gets the test CA through
 * `SSL_CERT_FILE`. It signs its own tokens (`attestation.hmacSecret`) with the node's backends secret.
 *
 * @module
 */

import assert from "node:assert/strict";
import { buildReferenceClient } from "../../scripts/reference_client.ts";
import type { Backend } from "../../src/hub/hub.ts";
import { testCertificates } from "../helpers/certs.ts";
import {
  connectTls,
  startTestNode,
  TEST_JWT_SECRET,
  type TestNode,
  type TestNodeOptions,
  waitFor,
} from "../helpers/cluster.ts";
import { readExactly } from "../helpers/raw.ts";
import { concat } from "../helpers/services.ts";
import {
  echo,
  patternBytes,
  serveConnections,
  sha256Hex,
  type TestService,
  writeAll,
} from "../helpers/services.ts";

const BUILD = await buildReferenceClient();
if (!BUILD.ok) console.log(`tests/compat/reference_client_test.ts: skipped: ${BUILD.missing}`);

const MiB = 1024 * 1024;
const BACKEND_NAME = "reference-client";

/** One `backends:` entry of the client's config (its config.example.yaml). */
interface ClientBackend {
  readonly hostnames: readonly string[];
  readonly hubUrl: string;
  readonly secret?: string;
  /** Relay port (the node's `conn_port`) → `default` target and per-host overrides, all on 127.0.0.1. */
  readonly portMappings: Record<number, { default?: number; hosts?: Record<string, number> }>;
}

/** The reference client, running; its stdout and stderr collected for assertion messages. */
class ReferenceClient {
  readonly #child: Deno.ChildProcess;
  readonly #dir: string;
  readonly #readers: Promise<void>;
  #output = "";
  #status: Deno.CommandStatus | null = null;
  readonly status: Promise<Deno.CommandStatus>;

  private constructor(child: Deno.ChildProcess, dir: string) {
    this.#child = child;
    this.#dir = dir;
    this.#readers = Promise.all([this.#collect(child.stdout), this.#collect(child.stderr)]).then(() => {});
    this.status = child.status.then((status) => (this.#status = status));
  }

  /** Writes the config and the CA beside it, and starts the client. */
  static async start(backend: ClientBackend): Promise<ReferenceClient> {
    if (!BUILD.ok) throw new Error("reference client not built");
    const certs = await testCertificates();
    const dir = await Deno.makeTempDir({ prefix: "nexus-reference-client-" });
    await Deno.writeTextFile(`${dir}/ca.pem`, certs.ca.certPem);
    await Deno.writeTextFile(`${dir}/config.yaml`, clientConfigYaml(backend));
    const child = new Deno.Command(BUILD.path, {
      args: ["-config", `${dir}/config.yaml`],
      cwd: dir,
      // Go reads its roots from SSL_CERT_FILE and SSL_CERT_DIR on Linux: only the test CA is trusted.
      env: { SSL_CERT_FILE: `${dir}/ca.pem`, SSL_CERT_DIR: dir },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ReferenceClient(child, dir);
  }

  /** Everything the client printed so far. */
  get output(): string {
    return this.#output;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#status !== null;
  }

  /** Waits until the client printed a line matching `pattern`. */
  async waitForOutput(pattern: RegExp, what: string, timeoutMs = 15_000): Promise<void> {
    await waitFor(() => pattern.test(this.#output) || this.exited, what, timeoutMs).catch((error) => {
      throw new Error(`${error.message}\n${this.describe()}`);
    });
    if (!pattern.test(this.#output)) throw new Error(`client exited before ${what}\n${this.describe()}`);
  }

  /** Sends a signal (SIGKILL for a crash). */
  kill(signal: Deno.Signal): void {
    if (!this.exited) this.#child.kill(signal);
  }

  /** For assertion messages: the client's whole output. */
  describe(): string {
    return `--- reference client output ---\n${this.#output}--- end of client output ---`;
  }

  /** Stops the client (SIGTERM, SIGKILL if it lingers), waits for it and its pipes, removes its files. */
  async stop(): Promise<void> {
    this.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.status,
      new Promise((resolve) => (timer = setTimeout(resolve, 10_000))),
    ]);
    clearTimeout(timer);
    this.kill("SIGKILL");
    await this.status;
    await this.#readers;
    await Deno.remove(this.#dir, { recursive: true });
  }

  async #collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) this.#output += text;
  }
}

function clientConfigYaml(backend: ClientBackend): string {
  const secret = backend.secret ?? new TextDecoder().decode(TEST_JWT_SECRET);
  const lines = [
    "backends:",
    `  - name: ${JSON.stringify(BACKEND_NAME)}`,
    "    hostnames:",
    ...backend.hostnames.map((name) => `      - ${JSON.stringify(name)}`),
    "    nexusAddresses:",
    `      - ${JSON.stringify(backend.hubUrl)}`,
    "    weight: 1",
    "    attestation:",
    `      hmacSecret: ${JSON.stringify(secret)}`,
    "      tokenTTLSeconds: 60",
    "    portMappings:",
  ];
  for (const [port, mapping] of Object.entries(backend.portMappings)) {
    lines.push(`      ${port}:`);
    if (mapping.default !== undefined) lines.push(`        default: "127.0.0.1:${mapping.default}"`);
    if (mapping.hosts !== undefined) {
      lines.push("        hosts:");
      for (const [host, target] of Object.entries(mapping.hosts)) {
        lines.push(`          ${JSON.stringify(host)}: "127.0.0.1:${target}"`);
      }
    }
  }
  return lines.join("\n") + "\n";
}

function registered(node: TestNode): Backend | undefined {
  return [...node.node.hub.backends].find((backend) => backend.name === BACKEND_NAME);
}

/** Waits until the client is registered at the node; returns its backend record. */
async function waitRegistered(node: TestNode, client: ReferenceClient): Promise<Backend> {
  await waitFor(
    () => registered(node) !== undefined || client.exited,
    "the reference client to register",
    15_000,
  )
    .catch((error) => {
      throw new Error(`${error.message}\n${client.describe()}`);
    });
  const backend = registered(node);
  assert.ok(backend !== undefined, `the client exited before registering\n${client.describe()}`);
  return backend;
}

/** Reads until the end or a reset; fails if that takes longer than `timeoutMs`. Returns what arrived. */
async function readUntilClosed(conn: Deno.Conn, timeoutMs: number): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, timeoutMs);
  try {
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (timedOut) throw new Error(`connection still open after ${timeoutMs} ms`);
    if (!(error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.UnexpectedEof)) {
      throw error;
    }
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) throw new Error(`connection still open after ${timeoutMs} ms`);
  return chunks;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Sends `size` pattern bytes through a fresh TLS stream to an echo service and checks what comes back. */
async function echoRoundTrip(port: number, servername: string, size: number, seed: number): Promise<void> {
  const conn = await connectTls(port, servername);
  try {
    const sent = patternBytes(size, seed);
    const [received] = await Promise.all([readExactly(conn, size), writeAll(conn, sent)]);
    assert.equal(await sha256Hex(received), await sha256Hex(sent));
  } finally {
    conn.close();
  }
}

/** A node, the client and services, torn down in the right order whatever happens. */
async function withClient(
  options: {
    node?: TestNodeOptions;
    services: readonly TestService[];
    backend: (node: TestNode) => Omit<ClientBackend, "hubUrl">;
  },
  body: (node: TestNode, client: ReferenceClient) => Promise<void>,
): Promise<void> {
  const node = await startTestNode(options.node);
  let client: ReferenceClient | undefined;
  try {
    client = await ReferenceClient.start({ ...options.backend(node), hubUrl: node.hubUrl });
    await body(node, client);
  } catch (error) {
    if (client !== undefined && error instanceof Error) error.message += `\n${client.describe()}`;
    throw error;
  } finally {
    await client?.stop();
    await node.close();
    for (const service of options.services) await service.close();
  }
}

function compatTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name: `reference client v0.2.6: ${name}`, ignore: !BUILD.ok, fn });
}

compatTest(
  "registers, and a TLS client reaches its echo service with 8 MiB each way byte-exact",
  async () => {
    const certs = await testCertificates();
    const service = serveConnections(echo, certs.service);
    await withClient({
      services: [service],
      backend: (node) => ({
        hostnames: ["app.test.nexus"],
        portMappings: { [node.tlsPort]: { default: service.port } },
      }),
    }, async (node, client) => {
      const backend = await waitRegistered(node, client);
      assert.equal(backend.session.dialect.name, "original");
      assert.deepEqual(backend.claims, [{ kind: "exact", name: "app.test.nexus" }]);
      assert.equal(backend.weight, 1);

      // The certificate is verified for app.test.nexus, which only the service's certificate carries.
      const conn = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        const sent = patternBytes(8 * MiB, 11);
        const [received] = await Promise.all([readExactly(conn, sent.length), writeAll(conn, sent)]);
        assert.equal(received.length, sent.length);
        assert.equal(await sha256Hex(received), await sha256Hex(sent), client.describe());
      } finally {
        closeQuietly(conn);
      }
      assert.equal(service.accepted, 1);
    });
  },
);

compatTest("plain HTTP on the node's HTTP port reaches the client's mapping for that port", async () => {
  const web = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) =>
      new Response(`plain http for ${request.headers.get("host")} ${new URL(request.url).pathname}\n`),
  );
  const webService: TestService = { port: web.addr.port, accepted: 0, close: () => web.shutdown() };
  await withClient({
    services: [webService],
    backend: (node) => ({
      hostnames: ["app.test.nexus"],
      // The TLS port has no mapping for this client: only the HTTP port's mapping can answer.
      portMappings: { [node.httpPort]: { default: webService.port } },
    }),
  }, async (node, client) => {
    await waitRegistered(node, client);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: node.httpPort });
    try {
      await writeAll(
        conn,
        new TextEncoder().encode(
          "GET /.well-known/acme-challenge/token-1 HTTP/1.1\r\nHost: app.test.nexus\r\nConnection: close\r\n\r\n",
        ),
      );
      const response = new TextDecoder().decode(concat(...await readUntilClosed(conn, 15_000)));
      assert.match(response, /^HTTP\/1\.1 200 OK\r\n/, client.describe());
      assert.ok(
        response.endsWith("\r\n\r\nplain http for app.test.nexus /.well-known/acme-challenge/token-1\n"),
        `unexpected response:\n${response}`,
      );
    } finally {
      closeQuietly(conn);
    }
  });
});

compatTest(
  "a service that stops reading makes the client send pause_stream; nothing is lost and a second stream " +
    "on the same session works meanwhile",
  async () => {
    const certs = await testCertificates();
    const size = 16 * MiB;
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    // Reads nothing until the gate opens, then everything, and answers with the SHA-256 of what it read.
    const sink = serveConnections(async (conn) => {
      await gate;
      const digest = await sha256Hex(await readExactly(conn, size));
      await writeAll(conn, new TextEncoder().encode(`${digest}\n`));
    }, certs.service);
    const echoService = serveConnections(echo, certs.service);
    await withClient({
      services: [sink, echoService],
      backend: (node) => ({
        hostnames: ["app.test.nexus", "echo.test.nexus"],
        portMappings: {
          [node.tlsPort]: { default: sink.port, hosts: { "echo.test.nexus": echoService.port } },
        },
      }),
    }, async (node, client) => {
      const backend = await waitRegistered(node, client);
      const conn = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        const sent = patternBytes(size, 23);
        const writing = writeAll(conn, sent);
        await waitFor(
          () => backend.session.pausesReceived > 0,
          "the client to send pause_stream",
          20_000,
        );
        // The paused stream must not hold up its siblings on the same backend session.
        await echoRoundTrip(node.tlsPort, "echo.test.nexus", 256 * 1024, 29);
        openGate();
        await writing;
        const answer = new TextDecoder().decode(await readExactly(conn, 65));
        assert.equal(answer, `${await sha256Hex(sent)}\n`);
      } finally {
        openGate();
        closeQuietly(conn);
      }
      assert.ok(!/Write buffer full/.test(client.output), "the client had to close a stream: buffer_full");
      assert.equal(registered(node), backend, "the same session served throughout");
    });
  },
);

/** A TLS service that writes `size` pattern bytes on every connection, then waits for the client to close. */
function sourceService(size: number, seed: number, tls: { certPem: string; keyPem: string }) {
  const progress = { written: 0, finished: 0, failed: 0 };
  const service = serveConnections(async (conn) => {
    try {
      const bytes = patternBytes(size, seed);
      for (let offset = 0; offset < size; offset += 64 * 1024) {
        await writeAll(conn, bytes.subarray(offset, Math.min(offset + 64 * 1024, size)));
        progress.written += Math.min(64 * 1024, size - offset);
      }
      progress.finished += 1;
      const scratch = new Uint8Array(1024);
      while ((await conn.read(scratch)) !== null) {
        // Wait for the client to go.
      }
    } catch (error) {
      progress.failed += 1;
      throw error;
    }
  }, tls);
  return { service, progress };
}

compatTest(
  "a TLS client that stops reading while the service sends 16 MiB: the hub holds the client's unbounded " +
    "sending, a second stream works meanwhile, and nothing is lost once the client reads again",
  async () => {
    const certs = await testCertificates();
    const size = 16 * MiB;
    const { service: source, progress } = sourceService(size, 31, certs.service);
    const echoService = serveConnections(echo, certs.service);
    await withClient({
      // The client ignores credits (§7.2): everything it sends must fit the per-stream budget.
      node: { limits: { legacyStreamBufferBytes: 32 * MiB } },
      services: [source, echoService],
      backend: (node) => ({
        hostnames: ["app.test.nexus", "echo.test.nexus"],
        portMappings: {
          [node.tlsPort]: { default: source.port, hosts: { "echo.test.nexus": echoService.port } },
        },
      }),
    }, async (node, client) => {
      await waitRegistered(node, client);
      const conn = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        // A zero-length read completes the TLS handshake without consuming data.
        await conn.handshake();
        await waitFor(() => progress.finished === 1, "the service to have sent all 16 MiB", 30_000);
        await echoRoundTrip(node.tlsPort, "echo.test.nexus", 256 * 1024, 37);
        const received = await readExactly(conn, size);
        assert.equal(await sha256Hex(received), await sha256Hex(patternBytes(size, 31)));
      } finally {
        closeQuietly(conn);
      }
    });
  },
);

compatTest(
  "over the per-stream budget only that stream is closed; the session and its other streams carry on",
  async () => {
    const certs = await testCertificates();
    const size = 16 * MiB;
    const { service: source, progress } = sourceService(size, 41, certs.service);
    const echoService = serveConnections(echo, certs.service);
    await withClient({
      node: { limits: { legacyStreamBufferBytes: 1 * MiB } },
      services: [source, echoService],
      backend: (node) => ({
        hostnames: ["app.test.nexus", "echo.test.nexus"],
        portMappings: {
          [node.tlsPort]: { default: source.port, hosts: { "echo.test.nexus": echoService.port } },
        },
      }),
    }, async (node, client) => {
      const backend = await waitRegistered(node, client);
      const conn = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        await conn.handshake();
        // The hub closes the stream, the client closes its local connection, the service's writes fail.
        await waitFor(() => progress.failed === 1, "the service's connection to be closed", 30_000);
        const received = concat(...await readUntilClosed(conn, 15_000));
        assert.ok(received.length < size, `received all ${size} bytes although the budget is 1 MiB`);
        assert.equal(
          await sha256Hex(received),
          await sha256Hex(patternBytes(size, 41).subarray(0, received.length)),
          "what arrived is a byte-exact prefix",
        );
      } finally {
        closeQuietly(conn);
      }
      await echoRoundTrip(node.tlsPort, "echo.test.nexus", 256 * 1024, 43);
      assert.equal(registered(node), backend, "the same session is still registered");
    });
  },
);

compatTest("a wrong secret is refused with 1008 and the client is not registered", async () => {
  await withClient({
    services: [],
    backend: (node) => ({
      hostnames: ["app.test.nexus"],
      secret: "not-the-backends-secret-at-all",
      portMappings: { [node.tlsPort]: { default: 9 } },
    }),
  }, async (node, client) => {
    await client.waitForOutput(/close 1008 \(policy violation\)/, "the client to report the 1008 close");
    assert.match(client.output, /token signature does not match the backends secret/);
    assert.equal(node.node.hub.backends.size, 0, client.describe());
    assert.ok(node.node.refusals.total("backend_rejected") >= 1);
  });
});

compatTest(
  "SIGKILL mid-transfer: the client's streams close promptly and the backend leaves the pool",
  async () => {
    const certs = await testCertificates();
    const size = 256 * MiB;
    const { service: source } = sourceService(size, 47, certs.service);
    await withClient({
      node: { limits: { legacyStreamBufferBytes: 4 * MiB } },
      services: [source],
      backend: (node) => ({
        hostnames: ["app.test.nexus"],
        portMappings: { [node.tlsPort]: { default: source.port } },
      }),
    }, async (node, client) => {
      await waitRegistered(node, client);
      const conn = await connectTls(node.tlsPort, "app.test.nexus");
      try {
        const head = await readExactly(conn, 1 * MiB);
        assert.equal(await sha256Hex(head), await sha256Hex(patternBytes(1 * MiB, 47)));
        client.kill("SIGKILL");
        await client.status;
        // Bounded by far less than any idle timeout: only the session's end can close it this soon.
        const rest = concat(...await readUntilClosed(conn, 10_000));
        assert.ok(head.length + rest.length < size, "the transfer was cut");
        await waitFor(() => node.node.hub.backends.size === 0, "the backend to leave the pool", 10_000);
        assert.equal(node.node.router.route("app.test.nexus"), undefined);
        await waitFor(() => node.node.connections === 0, "the relay to close the client connection", 10_000);
      } finally {
        closeQuietly(conn);
      }
    });
  },
);
