/**
 * `deno task bench:proxy-header`: what the agent's PROXY header costs new connections through node and agent.
 *
 * One node, one agent and one nginx (TLS, with a plain listener and a `proxy_protocol` one), each its own
 * child process on loopback. The agent serves three names: `plain.bench.test` to the plain listener (no
 * header), `v1.bench.test` and `v2.bench.test` to the `proxy_protocol` listener with `proxyProtocol: v1` and
 * `v2`. This process is the load: 16 clients at a time open TLS connections through the node's relay port
 * (full handshake with the service, then close) for `--seconds`, one name per run. Runs are interleaved
 * (plain, v1, v2, then v1, v2, plain, ...) for `--rounds` rounds, so drift on a noisy machine spreads over all
 * three; the report gives each variant's median of connections per second and of node and agent CPU per
 * connection (from `/proc/<pid>/stat`), and the median of each round's ratio to its run without a header. Before measuring, one request per proxied name checks that nginx saw
 * the client's address from the header.
 *
 * Options: --rounds N (default 7), --seconds S (default 3). Every connection must finish within 10 s and
 * every run stops after 200,000 connections, so a stuck proxy ends the run with a message, not a hang.
 *
 * @module
 */

import { parseFlags } from "./bench/flags.ts";
import { BenchChild, sampleProcess } from "./bench/child.ts";
import { reapOnExit, removeOnExit } from "./bench/reaper.ts";
import { freePort } from "./bench.ts";
import { createCertificateAuthority, issueCertificate } from "./dev_certs.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const NGINX = "/usr/sbin/nginx";
const CONCURRENCY = 16;
const CONNECTION_TIMEOUT_MS = 10_000;
const MAX_CONNECTIONS_PER_RUN = 200_000;
const VARIANTS = ["plain", "v1", "v2"] as const;
const USAGE = "Usage: deno task bench:proxy-header [--rounds N] [--seconds S]";
type Variant = typeof VARIANTS[number];

interface RunResult {
  readonly connectionsPerSecond: number;
  readonly nodeCpuMicrosPerConnection: number;
  readonly agentCpuMicrosPerConnection: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Resolves as `promise` does, or rejects with `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((
      _,
      reject,
    ) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function waitForPort(port: number, child: BenchChild, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (child.exited || Date.now() > deadline) throw new Error(`${what} did not start (see its log)`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function writeSetup(dir: string) {
  const ca = await createCertificateAuthority({ commonName: "Nexus PROXY header benchmark CA" });
  const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const service = await issueCertificate(ca, { dnsNames: ["*.bench.test"] });
  const files: Record<string, string> = {
    "ca.pem": ca.certPem,
    "hub.pem": hub.certPem,
    "hub-key.pem": hub.keyPem,
    "service.pem": service.certPem,
    "service-key.pem": service.keyPem,
    "backends.secret": crypto.randomUUID(),
  };
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(`${dir}/${name}`, text);
  const ports = { hub: freePort(), relay: freePort(), plain: freePort(), proxied: freePort() };
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
${
      ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) =>
        `  ${kind}_temp_path ${dir}/${kind};`
      ).join("\n")
    }
  ssl_certificate ${dir}/service.pem;
  ssl_certificate_key ${dir}/service-key.pem;
  ssl_session_tickets off;
  server { listen 127.0.0.1:${ports.plain} ssl; return 200 "$remote_addr"; }
  server { listen 127.0.0.1:${ports.proxied} ssl proxy_protocol; return 200 "$proxy_protocol_addr"; }
}
`,
  );
  await Deno.writeTextFile(
    `${dir}/node.yaml`,
    `backendListenAddress: "127.0.0.1:${ports.hub}"
hubTlsCertFile: hub.pem
hubTlsKeyFile: hub-key.pem
relayBindAddress: 127.0.0.1
relayPorts: [{ port: ${ports.relay}, protocol: tls }]
backendsJWTSecretFile: backends.secret
drainTimeoutSeconds: 0
logLevel: warn
limits: { maxConnections: 100000, maxConnectionsPerIp: 100000, maxHandshakes: 10000, maxHandshakesPerIp: 10000 }
`,
  );
  await Deno.writeTextFile(
    `${dir}/agent.yaml`,
    `name: bench-agent
hubs: ["wss://127.0.0.1:${ports.hub}/connect"]
hubCaFile: ca.pem
hostnames: [plain.bench.test, v1.bench.test, v2.bench.test]
token: { secretFile: backends.secret }
targets:
  plain.bench.test: "127.0.0.1:${ports.plain}"
  v1.bench.test: { address: "127.0.0.1:${ports.proxied}", proxyProtocol: v1 }
  v2.bench.test: { address: "127.0.0.1:${ports.proxied}", proxyProtocol: v2 }
drainTimeoutSeconds: 0
logLevel: info
`,
  );
  return { caPem: ca.certPem, ports };
}

/** One TLS connection through the relay to `name`, handshake complete; optionally one request's body. */
async function connectOnce(port: number, name: string, caPem: string, request = false): Promise<string> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  let conn: Deno.Conn = tcp;
  try {
    tcp.setNoDelay(true);
    const tls = await Deno.startTls(tcp, { hostname: name, caCerts: [caPem] });
    conn = tls;
    await tls.handshake();
    if (!request) return "";
    await tls.write(new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`));
    const chunks: string[] = [];
    const buffer = new Uint8Array(4096);
    for (let n = await tls.read(buffer); n !== null; n = await tls.read(buffer)) {
      chunks.push(new TextDecoder().decode(buffer.subarray(0, n)));
    }
    return chunks.join("").split("\r\n\r\n").slice(1).join("\r\n\r\n");
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

async function measure(
  variant: Variant,
  seconds: number,
  relayPort: number,
  caPem: string,
  node: BenchChild,
  agent: BenchChild,
): Promise<RunResult> {
  const name = `${variant}.bench.test`;
  const [nodeBefore, agentBefore] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let completed = 0;
  const worker = async () => {
    while (performance.now() < deadline && completed < MAX_CONNECTIONS_PER_RUN) {
      await within(connectOnce(relayPort, name, caPem), CONNECTION_TIMEOUT_MS, `a connection to ${name}`);
      completed += 1;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const elapsed = (performance.now() - started) / 1000;
  const [nodeAfter, agentAfter] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
  return {
    connectionsPerSecond: completed / elapsed,
    nodeCpuMicrosPerConnection: ((nodeAfter.cpuSeconds - nodeBefore.cpuSeconds) * 1e6) / completed,
    agentCpuMicrosPerConnection: ((agentAfter.cpuSeconds - agentBefore.cpuSeconds) * 1e6) / completed,
  };
}

async function main(): Promise<void> {
  const values = parseFlags("bench:proxy-header", USAGE, Deno.args, {
    rounds: { type: "string", default: "7" },
    seconds: { type: "string", default: "3" },
  });
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  if (!Number.isInteger(rounds) || rounds < 1 || !(seconds > 0)) {
    console.error(
      `bench:proxy-header: --rounds must be a whole number of at least 1 and --seconds above 0\n${USAGE}`,
    );
    Deno.exit(2);
  }
  try {
    Deno.statSync(NGINX);
  } catch {
    console.error(`${NGINX} is not installed (apt-get install nginx)`);
    Deno.exit(2);
  }
  reapOnExit("bench_proxy_header");
  const dir = await Deno.makeTempDir({ prefix: "nexus-bench-proxy-" });
  removeOnExit(dir);
  const { caPem, ports } = await writeSetup(dir);
  const nginx = new BenchChild("nginx", [NGINX, "-p", dir, "-c", `${dir}/nginx.conf`, "-e", "stderr"], {
    logFile: `${dir}/nginx.log`,
  });
  await waitForPort(ports.proxied, nginx, "nginx");
  const nexus = (role: string, config: string) =>
    new BenchChild(role, [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      `${REPO}/src/main.ts`,
      role === "node" ? "serve" : "agent",
      "--config",
      `${dir}/${config}`,
    ], { logFile: `${dir}/${role}.log` });
  const node = nexus("node", "node.yaml");
  await waitForPort(ports.hub, node, "the node");
  const agent = nexus("agent", "agent.yaml");
  // Ready once the agent is registered (before that, handshakes fail with unrecognized_name, and a failed
  // handshake of Deno's TLS client can leave its promise unsettled); then nginx must name this client from the
  // header of each version.
  const agentLog = `${dir}/agent.log`;
  for (
    const deadline = Date.now() + 30_000;
    !(await Deno.readTextFile(agentLog).catch(() => "")).includes("connected to hub");
  ) {
    if (agent.exited || Date.now() > deadline) throw new Error(`the agent did not connect (see ${agentLog})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const variant of ["v1", "v2"]) {
    const seen = await within(
      connectOnce(ports.relay, `${variant}.bench.test`, caPem, true),
      CONNECTION_TIMEOUT_MS,
      "the check",
    );
    if (seen !== "127.0.0.1") throw new Error(`nginx saw "${seen}" through ${variant}, not the client`);
  }
  // A warm-up run, not counted: the first connections pay for compilation.
  await measure("plain", 1, ports.relay, caPem, node, agent);
  const results = new Map<Variant, RunResult[]>(VARIANTS.map((variant) => [variant, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < VARIANTS.length; i++) {
      const variant = VARIANTS[(round + i) % VARIANTS.length];
      const result = await measure(variant, seconds, ports.relay, caPem, node, agent);
      results.get(variant)!.push(result);
      console.log(
        `round ${round + 1} ${variant.padEnd(5)} ${
          result.connectionsPerSecond.toFixed(0).padStart(5)
        } conn/s, ` +
          `node ${result.nodeCpuMicrosPerConnection.toFixed(0)} µs, agent ${
            result.agentCpuMicrosPerConnection.toFixed(0)
          } µs CPU per connection`,
      );
    }
  }
  // Besides the medians, each proxied run against the run without a header of the same round: on a shared
  // machine the load drifts from minute to minute, and a round's three runs see about the same load.
  const base = results.get("plain")!;
  const pairedChange = (runs: readonly RunResult[], metric: (r: RunResult) => number) =>
    `${((median(runs.map((r, round) => metric(r) / metric(base[round]))) - 1) * 100).toFixed(1)}%`;
  console.log(
    `\nmedians of ${rounds} interleaved runs of ${seconds} s, ${CONCURRENCY} connections at a time ` +
      "(changes: median of each round's ratio to its run without a header):",
  );
  console.log("| variant | conn/s | change | node CPU µs/conn | change | agent CPU µs/conn | change |");
  console.log("| ------- | -----: | -----: | ---------------: | -----: | ----------------: | -----: |");
  for (const [variant, runs] of results) {
    const rate = (r: RunResult) => r.connectionsPerSecond;
    const nodeCpu = (r: RunResult) => r.nodeCpuMicrosPerConnection;
    const agentCpu = (r: RunResult) => r.agentCpuMicrosPerConnection;
    const cells = [rate, nodeCpu, agentCpu].flatMap((metric) => [
      median(runs.map(metric)).toFixed(0),
      variant === "plain" ? "" : pairedChange(runs, metric),
    ]);
    console.log(`| ${variant === "plain" ? "no header" : `PROXY ${variant}`} | ${cells.join(" | ")} |`);
  }
  for (const child of [agent, node, nginx]) {
    child.kill("SIGTERM");
    await within(child.status, 10_000, `${child.name} stopping`).catch(() => child.kill("SIGKILL"));
  }
}

if (import.meta.main) await main();
