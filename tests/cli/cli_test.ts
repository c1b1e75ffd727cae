/**
 * The command line as operators run it: `deno run` of `src/main.ts` in a child process, with exactly the
 * permissions of the `nexus` task in deno.json. Exit codes, the first line of every error, the problems `check`
 * lists, the tokens `token` prints, and `serve`/`agent` started, used and stopped by signals.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import denoJson from "../../deno.json" with { type: "json" };
import { type LogLevel, setLogLevel } from "../../src/log/logger.ts";
import { verifyBackendToken } from "../../src/protocol/backend_token.ts";
import { testCertificates } from "../helpers/certs.ts";
import { connectTls, startTestAgent, startTestNode, TEST_JWT_SECRET, waitFor } from "../helpers/cluster.ts";
import { echo, patternBytes, serveConnections, sha256Hex, writeAll } from "../helpers/services.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MAIN = join(ROOT, "src", "main.ts");
/** The `nexus` task's permission flags, so the tests run the program as `deno task nexus` does. */
const PERMISSIONS = denoJson.tasks.nexus.split(/\s+/).filter((word) => word.startsWith("--allow"));
const SECRET = new TextDecoder().decode(TEST_JWT_SECRET);

// The in-process agents and nodes of these tests log as quietly as the test helpers' nodes do.
setLogLevel((Deno.env.get("NEXUS_TEST_LOG_LEVEL") as LogLevel | undefined) ?? "error");

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function nexusCommand(args: readonly string[], env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `nexus args...` to completion. */
async function nexus(args: readonly string[], env?: Record<string, string>): Promise<Run> {
  const output = await nexusCommand(args, env).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function describeRun(run: Run): string {
  return `exit code ${run.code}\n--- stdout ---\n${run.stdout}--- stderr ---\n${run.stderr}--- end ---`;
}

/** `nexus serve` or `nexus agent`, running; its output collected for waiting and for assertion messages. */
class NexusProcess {
  readonly status: Promise<Deno.CommandStatus>;
  readonly #child: Deno.ChildProcess;
  readonly #readers: Promise<void>;
  #stdout = "";
  #stderr = "";
  #exited = false;

  constructor(args: readonly string[]) {
    this.#child = nexusCommand(args).spawn();
    this.#readers = Promise.all([
      this.#collect(this.#child.stdout, (text) => (this.#stdout += text)),
      this.#collect(this.#child.stderr, (text) => (this.#stderr += text)),
    ]).then(() => {});
    this.status = this.#child.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** Waits for a line of stderr matching `pattern`; returns its match. */
  async waitForLog(pattern: RegExp, what: string, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    await waitFor(() => pattern.test(this.#stderr) || this.#exited, what, timeoutMs).catch((error) => {
      throw new Error(`${error.message}\n${this.describe()}`);
    });
    const match = this.#stderr.match(pattern);
    if (match === null) throw new Error(`exited before ${what}\n${this.describe()}`);
    return match;
  }

  signal(signal: Deno.Signal): void {
    if (!this.#exited) this.#child.kill(signal);
  }

  /** Waits for the exit; fails after `timeoutMs` (then kills it, so nothing outlives the test). */
  async exit(timeoutMs: number): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
    const status = await Promise.race([this.status, timedOut]);
    clearTimeout(timer);
    if (status === null) {
      this.signal("SIGKILL");
      await this.status;
      await this.#readers;
      throw new Error(`still running ${timeoutMs} ms later\n${this.describe()}`);
    }
    await this.#readers;
    return status;
  }

  /** Ends the process whatever its state (for `finally`). */
  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.status;
    await this.#readers;
  }

  describe(): string {
    return `--- stdout ---\n${this.#stdout}--- stderr ---\n${this.#stderr}--- end ---`;
  }

  async #collect(stream: ReadableStream<Uint8Array>, append: (text: string) => void): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) append(text);
  }
}

/** A temporary directory with the test CA, the hub's certificate and key, and a secret file. */
async function configDir(): Promise<{ dir: string; [Symbol.asyncDispose](): Promise<void> }> {
  const certs = await testCertificates();
  const dir = await Deno.makeTempDir({ prefix: "nexus-cli-" });
  await Deno.writeTextFile(join(dir, "ca.pem"), certs.ca.certPem);
  await Deno.writeTextFile(join(dir, "hub.crt"), certs.hub.certPem);
  await Deno.writeTextFile(join(dir, "hub.key"), certs.hub.keyPem);
  await Deno.writeTextFile(join(dir, "backends.secret"), `${SECRET}\n`);
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A node config on 127.0.0.1 with free ports (read back from the "node started" line). */
function nodeConfigYaml(options: { drainTimeoutSeconds: number; tlsPort?: number }): string {
  return [
    `backendListenAddress: "127.0.0.1:0"`,
    `hubTlsCertFile: "hub.crt"`,
    `hubTlsKeyFile: "hub.key"`,
    `relayBindAddress: "127.0.0.1"`,
    `relayPorts:`,
    `  - { port: ${options.tlsPort ?? 0}, protocol: tls }`,
    `  - { port: 0, protocol: http }`,
    `backendsJWTSecretFile: "backends.secret"`,
    `drainTimeoutSeconds: ${options.drainTimeoutSeconds}`,
    "",
  ].join("\n");
}

const NODE_STARTED = /node: node started hub=127\.0\.0\.1:(\d+) relay_ports=(\d+)\/tls,(\d+)\/http/;

/** Starts `nexus serve`; resolves once it logged "node started", with its ports. */
async function startServe(
  configPath: string,
): Promise<{ serve: NexusProcess; hubPort: number; tlsPort: number }> {
  const serve = new NexusProcess(["serve", "--config", configPath]);
  try {
    const [, hub, tls] = await serve.waitForLog(NODE_STARTED, 'the "node started" line');
    return { serve, hubPort: Number(hub), tlsPort: Number(tls) };
  } catch (error) {
    await serve.kill();
    throw error;
  }
}

/** Sends `size` pattern bytes through a TLS stream to an echo service and checks what comes back. */
async function echoRoundTrip(conn: Deno.Conn, size: number, seed: number): Promise<void> {
  const sent = patternBytes(size, seed);
  const received = new Uint8Array(size);
  const reading = (async () => {
    for (let filled = 0; filled < size;) {
      const n = await conn.read(received.subarray(filled));
      if (n === null) throw new Error(`stream ended after ${filled} of ${size} bytes`);
      filled += n;
    }
  })();
  await Promise.all([reading, writeAll(conn, sent)]);
  assert.equal(await sha256Hex(received), await sha256Hex(sent));
}

/** Reads until the end or a reset. */
async function readToEnd(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    while ((await conn.read(buffer)) !== null) {
      // Discard.
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.UnexpectedEof)) {
      throw error;
    }
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

// --- version and help ---------------------------------------------------------------------------------------

Deno.test("version prints the deno.json version, the Deno version and the target", async () => {
  const run = await nexus(["version"]);
  assert.equal(run.code, 0, describeRun(run));
  assert.equal(run.stdout, `nexus ${denoJson.version} (deno ${Deno.version.deno}, ${Deno.build.target})\n`);
  assert.equal(run.stderr, "");
});

Deno.test("--help of the program and of every subcommand exits 0 with its usage on stdout", async () => {
  const cases: Array<[string[], string]> = [
    [["--help"], `Nexus Proxy ${denoJson.version}: `],
    [["help"], `Nexus Proxy ${denoJson.version}: `],
    [["serve", "--help"], "Usage: nexus serve --config FILE\n"],
    [["agent", "--help"], "Usage: nexus agent --config FILE\n"],
    [["token", "--help"], "Usage: nexus token --secret-file FILE --hostname NAME"],
    [["check", "--help"], "Usage: nexus check --config FILE\n"],
    [["version", "--help"], "Usage: nexus version\n"],
    [["help", "serve"], "Usage: nexus serve --config FILE\n"],
    [["help", "agent"], "Usage: nexus agent --config FILE\n"],
    [["help", "token"], "Usage: nexus token --secret-file FILE --hostname NAME"],
    [["help", "check"], "Usage: nexus check --config FILE\n"],
  ];
  for (const [args, start] of cases) {
    const run = await nexus(args);
    assert.equal(run.code, 0, `${args.join(" ")}: ${describeRun(run)}`);
    assert.ok(run.stdout.startsWith(start), `${args.join(" ")}: ${describeRun(run)}`);
    assert.equal(run.stderr, "", args.join(" "));
  }
});

// --- usage errors -------------------------------------------------------------------------------------------

Deno.test("bad usage exits 2 with a one-line error, then the usage, on stderr", async () => {
  const cases: Array<[string[], string, string]> = [
    [["serve", "--bogus"], "nexus: Unknown option '--bogus'", "Usage: nexus serve --config FILE"],
    [["check"], "nexus: --config FILE is required", "Usage: nexus check --config FILE"],
    [
      ["agent", "--config"],
      "nexus: Option '--config <value>' argument missing",
      "Usage: nexus agent --config FILE",
    ],
    [["frobnicate"], 'nexus: unknown command "frobnicate"', `Nexus Proxy ${denoJson.version}: `],
    [[], "nexus: a command is required", `Nexus Proxy ${denoJson.version}: `],
    [["help", "frobnicate"], 'nexus: unknown command "frobnicate"', `Nexus Proxy ${denoJson.version}: `],
    [["help", "serve", "agent"], 'nexus: unexpected argument "agent"', `Nexus Proxy ${denoJson.version}: `],
    [
      ["check", "--config", "a.yaml", "b.yaml"],
      "nexus: Unexpected argument 'b.yaml'. This command does not take positional arguments",
      "Usage: nexus check --config FILE",
    ],
    [["version", "extra"], 'nexus: unexpected argument "extra"', "Usage: nexus version"],
    [
      ["token", "--secret-file", "s.secret"],
      "nexus: at least one --hostname NAME is required",
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--hostname", "a.example"],
      "nexus: --secret-file FILE is required",
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "a.example", "--weight", "0"],
      'nexus: --weight must be an integer from 1 to 10000, got "0"',
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "a.example", "--weight", "2.5"],
      'nexus: --weight must be an integer from 1 to 10000, got "2.5"',
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "a.example", "--weight", "heavy"],
      'nexus: --weight must be an integer from 1 to 10000, got "heavy"',
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "a.example", "--ttl", "forever"],
      'nexus: --ttl must be a duration such as 30s, 5m or 1h, got "forever"',
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "a.example", "--ttl", "0s"],
      'nexus: --ttl must be a duration such as 30s, 5m or 1h, got "0s"',
      "Usage: nexus token --secret-file FILE",
    ],
    [
      ["token", "--secret-file", "s.secret", "--hostname", "*.com"],
      'nexus: --hostname: "*.com" is not a wildcard of the form *.example.com',
      "Usage: nexus token --secret-file FILE",
    ],
  ];
  for (const [args, firstLine, usage] of cases) {
    const run = await nexus(args);
    const what = `nexus ${args.join(" ")}: ${describeRun(run)}`;
    assert.equal(run.code, 2, what);
    assert.equal(run.stdout, "", what);
    const [first, ...rest] = run.stderr.split("\n");
    assert.equal(first, firstLine, what);
    assert.ok(rest.join("\n").startsWith(usage), what);
  }
});

// --- check --------------------------------------------------------------------------------------------------

Deno.test("check: a valid node config and a valid agent config exit 0", async () => {
  await using files = await configDir();
  const node = join(files.dir, "node.yaml");
  await Deno.writeTextFile(node, nodeConfigYaml({ drainTimeoutSeconds: 5 }));
  const agent = join(files.dir, "agent.yaml");
  await Deno.writeTextFile(
    agent,
    [
      `hubs: ["wss://127.0.0.1:8443/connect"]`,
      `hubCaFile: "ca.pem"`,
      `hostnames: ["app.test.nexus", "*.wild.nexus"]`,
      `token:`,
      `  secretFile: "backends.secret"`,
      `targets:`,
      `  app.test.nexus: { tls: "127.0.0.1:8443", http: "127.0.0.1:8080" }`,
      `  default: "127.0.0.1:9443"`,
      "",
    ].join("\n"),
  );
  const nodeRun = await nexus(["check", "--config", node]);
  assert.equal(nodeRun.code, 0, describeRun(nodeRun));
  assert.equal(nodeRun.stdout, `${node}: valid node configuration\n`);
  assert.equal(nodeRun.stderr, "");
  const agentRun = await nexus(["check", "--config", agent]);
  assert.equal(agentRun.code, 0, describeRun(agentRun));
  assert.equal(agentRun.stdout, `${agent}: valid agent configuration\n`);
  assert.equal(agentRun.stderr, "");
});

Deno.test("check: every problem of a node config is listed as file:line:col: key: message", async () => {
  await using files = await configDir();
  const path = join(files.dir, "node.yaml");
  const unsetVariable = `NEXUS_CLI_TEST_UNSET_${crypto.randomUUID().replaceAll("-", "").toUpperCase()}`;
  await Deno.writeTextFile(
    path,
    [
      `backendListenAddress: ":8443"`,
      `hubTlsCertFile: "missing.crt"`,
      `hubTlsKeyFile: "hub.key"`,
      `relayPort:`,
      `  - 443`,
      `idleTimeoutSeconds: "soon"`,
      `backendsJWTSecretEnv: "${unsetVariable}"`,
      `limits:`,
      `  maxConnections: 0`,
      "",
    ].join("\n"),
  );
  const run = await nexus(["check", "--config", path]);
  assert.equal(run.code, 1, describeRun(run));
  assert.equal(run.stdout, "");
  assert.equal(
    run.stderr,
    [
      "nexus: invalid configuration:",
      `${path}:1:1: relayPorts: required key is missing`,
      `${path}:2:17: hubTlsCertFile: cannot read missing.crt: No such file or directory (os error 2): ` +
      `readfile '${files.dir}/missing.crt'`,
      `${path}:4:1: relayPort: unknown key; did you mean \`relayPorts\`?`,
      `${path}:6:21: idleTimeoutSeconds: expected an integer from 0 to 604800, got the quoted string "soon"`,
      `${path}:7:23: backendsJWTSecretEnv: environment variable ${unsetVariable} is not set`,
      `${path}:9:19: limits.maxConnections: expected an integer from 1 to 10000000, got "0"`,
      "",
    ].join("\n"),
  );
});

Deno.test("check: every problem of an agent config is listed, each at its own line", async () => {
  await using files = await configDir();
  const path = join(files.dir, "agent.yaml");
  await Deno.writeTextFile(
    path,
    [
      `hubs:`,
      `  - "wss://hub-1.example.com/connect"`,
      `  - "https://hub-2.example.com/connect"`,
      `hostnames:`,
      `  - "app.example.com"`,
      `  - "unserved.example.com"`,
      `token:`,
      `  secretFile: "backends.secret"`,
      `targets:`,
      `  app.example.com: "localhost"`,
      "",
    ].join("\n"),
  );
  const run = await nexus(["check", "--config", path]);
  assert.equal(run.code, 1, describeRun(run));
  assert.equal(
    run.stderr,
    [
      "nexus: invalid configuration:",
      `${path}:3:5: hubs[1]: "https://hub-2.example.com/connect" must start with wss:// (the hub only speaks TLS)`,
      `${path}:10:3: targets: no target serves the claimed hostname unserved.example.com`,
      `${path}:10:20: targets."app.example.com": "localhost" is not host:port`,
      "",
    ].join("\n"),
  );
});

Deno.test("check: a file that is neither a node nor an agent config says so", async () => {
  await using files = await configDir();
  const path = join(files.dir, "other.yaml");
  await Deno.writeTextFile(path, "backends:\n  - name: edge\n");
  const run = await nexus(["check", "--config", path]);
  assert.equal(run.code, 1, describeRun(run));
  assert.equal(
    run.stderr,
    `nexus: ${path}: cannot tell a node config (it has backendListenAddress) from an agent config (it has hubs)\n`,
  );
});

/**
 * Copies an example config into a temporary directory, gives every `…File` key a real file beside it (a
 * certificate, a key or a secret, by the key's name) and every `…Env` key its variable, and runs `check`.
 */
async function checkExample(name: string, kind: string): Promise<void> {
  const certs = await testCertificates();
  const text = await Deno.readTextFile(join(ROOT, name));
  await using files = await configDir();
  const env: Record<string, string> = {};
  const adapted = text.replace(
    /^(\s*)(\w*(?:File|Env)):\s*"?([^"#\s]+)"?/gm,
    (_line, indent: string, key: string, value: string) => {
      if (key.endsWith("Env")) {
        env[value] = SECRET;
        return `${indent}${key}: "${value}"`;
      }
      const file = `${key}.${value.split("/").pop()}`;
      const content = /Key/.test(key)
        ? certs.hub.keyPem
        : /Secret|secret/.test(key)
        ? SECRET
        : key === "hubTlsCertFile"
        ? certs.hub.certPem
        : certs.ca.certPem;
      Deno.writeTextFileSync(join(files.dir, file), content);
      return `${indent}${key}: "${file}"`;
    },
  );
  const path = join(files.dir, name);
  await Deno.writeTextFile(path, adapted);
  const run = await nexus(["check", "--config", path], env);
  assert.equal(run.code, 0, describeRun(run));
  assert.equal(run.stdout, `${path}: valid ${kind} configuration\n`);
}

for (const [name, kind] of [["config.example.yaml", "node"], ["agent.example.yaml", "agent"]]) {
  const exists = await Deno.stat(join(ROOT, name)).then(() => true, () => false);
  if (!exists) {
    console.log(`tests/cli/cli_test.ts: ${name} skipped: it does not exist at the repository's top`);
  }
  Deno.test({
    name: `check: ${name} is a valid ${kind} config once the files it names exist`,
    ignore: !exists,
    fn: () => checkExample(name, kind),
  });
}

// --- token --------------------------------------------------------------------------------------------------

Deno.test("token prints a JWT the hub accepts, with the hostname, weight and lifetime asked for", async () => {
  await using files = await configDir();
  const args = [
    "token",
    "--secret-file",
    join(files.dir, "backends.secret"),
    "--hostname",
    "a.example",
    "--weight",
    "3",
    "--ttl",
    "5m",
  ];
  const run = await nexus(args);
  assert.equal(run.code, 0, describeRun(run));
  assert.equal(run.stderr, "");
  assert.match(run.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/);
  const token = run.stdout.trim();
  const verdict = await verifyBackendToken(token, TEST_JWT_SECRET);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  assert.deepEqual(verdict.claims, {
    name: "backend",
    hostnames: [{ kind: "exact", name: "a.example" }],
    weight: 3,
    weightClaimed: true,
    ignoredPortClaims: false,
  });
  const payload = JSON.parse(
    new TextDecoder().decode(Uint8Array.fromBase64(token.split(".")[1], { alphabet: "base64url" })),
  );
  assert.equal(payload.exp - payload.iat, 300);
  assert.equal(payload.session_nonce, undefined);
  const wrongSecret = await verifyBackendToken(token, new TextEncoder().encode("another-secret-0123456789"));
  assert.equal(wrongSecret.ok, false);

  const withNonce = await nexus(args, { NEXUS_SESSION_NONCE: "nonce-from-the-hub-0123456789" });
  assert.equal(withNonce.code, 0, describeRun(withNonce));
  const stage1 = await verifyBackendToken(withNonce.stdout.trim(), TEST_JWT_SECRET);
  assert.ok(stage1.ok, JSON.stringify(stage1));
  assert.equal(stage1.claims.sessionNonce, "nonce-from-the-hub-0123456789");
});

// --- serve --------------------------------------------------------------------------------------------------

/** `nexus serve` as a child with a config in `dir`, an in-process agent, and a TLS echo service behind it. */
async function serveWithAgent(dir: string, drainTimeoutSeconds: number) {
  const certs = await testCertificates();
  const path = join(dir, "node.yaml");
  await Deno.writeTextFile(path, nodeConfigYaml({ drainTimeoutSeconds }));
  const service = serveConnections(echo, certs.service);
  const { serve, hubPort, tlsPort } = await startServe(path);
  const agent = await startTestAgent({
    hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  }).catch(async (error) => {
    await serve.kill();
    await service.close();
    throw new Error(`${error.message}\n${serve.describe()}`);
  });
  return { serve, agent, service, hubPort, tlsPort };
}

Deno.test("serve: starts, serves the hub and a TLS client through an agent, and on SIGTERM drains and exits 0", async () => {
  const certs = await testCertificates();
  await using files = await configDir();
  const { serve, agent, service, hubPort, tlsPort } = await serveWithAgent(files.dir, 1);
  let conn: Deno.TlsConn | undefined;
  try {
    const client = Deno.createHttpClient({ caCerts: [certs.ca.certPem] });
    try {
      const response = await fetch(`https://127.0.0.1:${hubPort}/healthz`, { client });
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "ok\n");
    } finally {
      client.close();
    }
    conn = await connectTls(tlsPort, "app.test.nexus");
    await echoRoundTrip(conn, 1024 * 1024, 5);

    // The stream stays open: the node waits drainTimeoutSeconds for it, then closes it and exits.
    serve.signal("SIGTERM");
    await readToEnd(conn);
    const status = await serve.exit(15_000);
    assert.equal(status.code, 0, serve.describe());
    assert.match(serve.stderr, /node: shutting down: no longer accepting .*drain_ms=1000/);
    assert.match(serve.stderr, /node: drain time over; closing remaining connections connections=1/);
    assert.match(serve.stderr, /node: stopped\n$/);
  } finally {
    if (conn !== undefined) closeQuietly(conn);
    await serve.kill();
    await agent.stop(0);
    await service.close();
  }
});

Deno.test("serve: a second signal during a long drain exits at once with code 1", async () => {
  await using files = await configDir();
  const { serve, agent, service, tlsPort } = await serveWithAgent(files.dir, 600);
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await connectTls(tlsPort, "app.test.nexus");
    await echoRoundTrip(conn, 64 * 1024, 6);
    serve.signal("SIGTERM");
    await serve.waitForLog(
      /node: shutting down: no longer accepting open_streams=1 .*drain_ms=600000/,
      "the drain",
    );
    serve.signal("SIGTERM");
    // Far less than the 600 s drain: only the second signal can end it this soon.
    const status = await serve.exit(15_000);
    assert.equal(status.code, 1, serve.describe());
    assert.match(serve.stderr, /\nnexus: second signal: exiting now\n/);
  } finally {
    if (conn !== undefined) closeQuietly(conn);
    await serve.kill();
    await agent.stop(0);
    await service.close();
  }
});

Deno.test("serve: a relay port already in use exits 1 with one line naming the address", async () => {
  await using files = await configDir();
  using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  const path = join(files.dir, "node.yaml");
  await Deno.writeTextFile(path, nodeConfigYaml({ drainTimeoutSeconds: 1, tlsPort: port }));
  const run = await nexus(["serve", "--config", path]);
  assert.equal(run.code, 1, describeRun(run));
  assert.equal(run.stdout, "");
  // Log lines (a warning about this machine's open-file limit, say) may come first; the error is one line.
  const errorLines = run.stderr.split("\n").filter((line) => line !== "" && !/^\d{4}-\d\d-\d\dT/.test(line));
  assert.equal(errorLines.length, 1, run.stderr);
  assert.match(errorLines[0], new RegExp(`^nexus: Cannot listen on 127\\.0\\.0\\.1:${port} \\(tls\\): .+$`));
  assert.match(run.stderr, /Address already in use/);
});

// --- agent --------------------------------------------------------------------------------------------------

Deno.test("agent: registers at a node, serves a TLS client, and exits 0 on SIGTERM", async () => {
  const certs = await testCertificates();
  await using files = await configDir();
  const service = serveConnections(echo, certs.service);
  const node = await startTestNode();
  const path = join(files.dir, "agent.yaml");
  await Deno.writeTextFile(
    path,
    [
      `name: "cli-agent"`,
      `hubs: ["${node.hubUrl}"]`,
      `hubCaFile: "ca.pem"`,
      `hostnames: ["app.test.nexus"]`,
      `token:`,
      `  secretFile: "backends.secret"`,
      `targets:`,
      `  app.test.nexus: "127.0.0.1:${service.port}"`,
      `drainTimeoutSeconds: 1`,
      "",
    ].join("\n"),
  );
  const agent = new NexusProcess(["agent", "--config", path]);
  try {
    const registered = () => [...node.node.hub.backends].some((backend) => backend.name === "cli-agent");
    await waitFor(registered, "the agent to register", 15_000).catch((error) => {
      throw new Error(`${error.message}\n${agent.describe()}`);
    });
    const conn = await connectTls(node.tlsPort, "app.test.nexus");
    try {
      await echoRoundTrip(conn, 1024 * 1024, 8);
    } finally {
      conn.close();
    }
    agent.signal("SIGTERM");
    const status = await agent.exit(15_000);
    assert.equal(status.code, 0, agent.describe());
    await waitFor(() => node.node.hub.backends.size === 0, "the agent's backend to leave the pool");
  } finally {
    await agent.kill();
    await node.close();
    await service.close();
  }
});
