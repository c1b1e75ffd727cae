/**
 * What the admin listener costs the node: CPU time and memory of a node child process during a fixed transfer
 * (downloads through its HTTP relay port, from a service behind an agent), with and without an admin listener
 * scraped for `/metrics` every second. Runs alternate (without, with, without, ...) so that the noise of a
 * shared machine falls on both; the report gives medians and every run. It also prints a `/metrics` excerpt
 * taken in the middle of a transfer.
 *
 * ```sh
 * deno run --allow-all scripts/admin_cost.ts [--runs 5] [--streams 8] [--mib 256] [--idle SECONDS]
 * ```
 *
 * `--idle S` replaces the transfer by S seconds of an idle node (still scraped every second, with the admin
 * listener): what the scrapes themselves cost, without the transfer's noise.
 *
 * @module
 */

import { createCertificateAuthority, issueCertificate } from "./dev_certs.ts";
import { BenchChild, sampleProcess } from "./bench/child.ts";
import { reapOnExit } from "./bench/reaper.ts";
import { freePort } from "./bench.ts";
import { parseFlags } from "./bench/flags.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const HOST = "cost.nexus.test";
const TOKEN = "admin-cost-token-0123456789";
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-env"];
const encoder = new TextEncoder();
const USAGE =
  "Usage: deno run --allow-all scripts/admin_cost.ts [--runs N] [--streams N] [--mib N] [--idle SECONDS]";

interface RunResult {
  readonly admin: boolean;
  readonly cpuSeconds: number;
  readonly peakRssMiB: number;
  readonly seconds: number;
  readonly scrapes: number;
}

/** A service that answers `SEND <n>` (after an HTTP head) with n bytes, then closes. */
function startService(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const block = new Uint8Array(256 * 1024).fill(0x5a);
  (async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          let text = "";
          const buffer = new Uint8Array(4096);
          while (!/\r\n\r\nSEND \d+\n/.test(text)) {
            const n = await conn.read(buffer);
            if (n === null) return;
            text += new TextDecoder().decode(buffer.subarray(0, n));
          }
          let left = Number(/SEND (\d+)\n/.exec(text)![1]);
          while (left > 0) {
            const piece = block.subarray(0, Math.min(block.length, left));
            for (let written = 0; written < piece.length;) {
              written += await conn.write(piece.subarray(written));
            }
            left -= piece.length;
          }
        } finally {
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        }
      })();
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

async function download(
  port: number,
  bytes: number,
  onBytes: (n: number) => void = () => {},
): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\nSEND ${bytes}\n`));
  const buffer = new Uint8Array(256 * 1024);
  let received = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    received += n;
    onBytes(n);
  }
  conn.close();
  return received;
}

async function peakRssBytes(pid: number): Promise<number> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" }).output();
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(new TextDecoder().decode(output.stdout))?.[1] ?? NaN) * 1024;
}

async function waitFor(condition: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function run(
  dir: string,
  servicePort: number,
  admin: boolean,
  options: { streams: number; bytes: number; idleSeconds: number },
  onMidway: (metrics: string) => void,
): Promise<RunResult> {
  const hubPort = freePort();
  const relayPort = freePort();
  const adminPort = freePort();
  await Deno.writeTextFile(
    `${dir}/node.yaml`,
    `backendListenAddress: "127.0.0.1:${hubPort}"
hubTlsCertFile: hub.pem
hubTlsKeyFile: hub-key.pem
relayBindAddress: 127.0.0.1
relayPorts: [{ port: ${relayPort}, protocol: http }]
backendsJWTSecretFile: backends.secret
drainTimeoutSeconds: 0
logLevel: warn
${admin ? `admin:\n  listenAddress: "127.0.0.1:${adminPort}"\n  tokenFile: admin.token\n` : ""}`,
  );
  await Deno.writeTextFile(
    `${dir}/agent.yaml`,
    `name: cost-agent
hubs: ["wss://127.0.0.1:${hubPort}/connect"]
hubCaFile: ca.pem
hostnames: [${HOST}]
token:
  secretFile: backends.secret
targets:
  ${HOST}: 127.0.0.1:${servicePort}
drainTimeoutSeconds: 0
logLevel: warn
reconnect: { initialDelaySeconds: 1, maxDelaySeconds: 1 }
`,
  );
  const main = `${REPO}/src/main.ts`;
  const node = new BenchChild("node", [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    main,
    "serve",
    "--config",
    `${dir}/node.yaml`,
  ], {
    logFile: `${dir}/node.log`,
  });
  let agent: BenchChild | undefined;
  let scraping = true;
  let scrapes = 0;
  try {
    await waitFor(
      () =>
        Deno.connect({ hostname: "127.0.0.1", port: hubPort }).then((c) => (c.close(), true), () => false),
      "the node's hub",
    );
    agent = new BenchChild("agent", [
      Deno.execPath(),
      "run",
      ...PERMISSIONS,
      main,
      "agent",
      "--config",
      `${dir}/agent.yaml`,
    ], {
      logFile: `${dir}/agent.log`,
    });
    await waitFor(
      () => download(relayPort, 1).then((n) => n === 1, () => false),
      "a route through the agent",
    );
    const scraper = admin
      ? (async () => {
        while (scraping) {
          const started = Date.now();
          const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`, {
            headers: { Authorization: `Bearer ${TOKEN}` },
          });
          await response.text();
          scrapes += 1;
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1_000 - (Date.now() - started))));
        }
      })()
      : Promise.resolve();
    const before = await sampleProcess(node.pid);
    const startedMs = performance.now();
    // The same few refusals in every run, so that the excerpt shows some.
    for (const request of ["GET / HTTP/1.1\r\nHost: nobody.nexus.test\r\n\r\n", "GET / HTTP/1.0\r\n\r\n"]) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: relayPort });
      await conn.write(encoder.encode(request));
      await conn.readable.cancel().catch(() => {});
    }
    const total = options.streams * options.bytes;
    let received = 0;
    let midway: Promise<void> = Promise.resolve();
    // --idle: no transfer, only the scrapes (so their own cost shows without the transfer's noise).
    const transfers = Array.from({ length: options.idleSeconds > 0 ? 0 : options.streams }, async () => {
      const got = await download(relayPort, options.bytes, (n) => {
        const crossed = received < total / 2 && received + n >= total / 2;
        received += n;
        if (crossed && admin) {
          midway = fetch(`http://127.0.0.1:${adminPort}/metrics`, {
            headers: { Authorization: `Bearer ${TOKEN}` },
          })
            .then((r) => r.text()).then(onMidway);
        }
      });
      if (got !== options.bytes) throw new Error(`received ${got} of ${options.bytes} bytes`);
    });
    await Promise.all(transfers);
    await new Promise((resolve) => setTimeout(resolve, options.idleSeconds * 1000));
    await midway;
    const seconds = (performance.now() - startedMs) / 1000;
    const after = await sampleProcess(node.pid);
    scraping = false;
    await scraper;
    return {
      admin,
      cpuSeconds: after.cpuSeconds - before.cpuSeconds,
      peakRssMiB: (await peakRssBytes(node.pid)) / 2 ** 20,
      seconds,
      scrapes,
    };
  } finally {
    scraping = false;
    agent?.kill("SIGKILL");
    node.kill("SIGKILL");
    await Promise.all([agent?.status, node.status]);
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main(): Promise<void> {
  const values = parseFlags("admin_cost", USAGE, Deno.args, {
    runs: { type: "string", default: "5" },
    streams: { type: "string", default: "8" },
    mib: { type: "string", default: "256" },
    idle: { type: "string", default: "0" },
  });
  reapOnExit("admin_cost");
  const runs = Number(values.runs);
  const options = {
    streams: Number(values.streams),
    bytes: Number(values.mib) * 2 ** 20,
    idleSeconds: Number(values.idle),
  };
  const dir = await Deno.makeTempDir({ prefix: "nexus-admin-cost-" });
  const ca = await createCertificateAuthority({ commonName: "Nexus admin cost CA" });
  const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await Deno.writeTextFile(`${dir}/hub.pem`, hub.certPem);
  await Deno.writeTextFile(`${dir}/hub-key.pem`, hub.keyPem);
  await Deno.writeTextFile(`${dir}/backends.secret`, crypto.randomUUID());
  await Deno.writeTextFile(`${dir}/admin.token`, TOKEN);
  const service = startService();
  const results: RunResult[] = [];
  let excerpt = "";
  try {
    for (let i = 0; i < runs; i++) {
      for (const admin of [false, true]) {
        const result = await run(dir, service.port, admin, options, (text) => (excerpt ||= text));
        results.push(result);
        console.error(
          `run ${i + 1} ${admin ? "with admin + scraper" : "without admin   "}: node CPU ${
            result.cpuSeconds.toFixed(2)
          } s, ` +
            `peak RSS ${result.peakRssMiB.toFixed(1)} MiB, ${
              result.seconds.toFixed(2)
            } s, ${result.scrapes} scrapes`,
        );
      }
    }
  } finally {
    service.close();
    await Deno.remove(dir, { recursive: true });
  }
  const gib = options.idleSeconds > 0 ? 0 : (options.streams * options.bytes) / 2 ** 30;
  for (const admin of [false, true]) {
    const of = results.filter((r) => r.admin === admin);
    console.log(
      `${admin ? "with admin listener, /metrics every 1 s" : "without admin listener               "}: ` +
        `node CPU median ${median(of.map((r) => r.cpuSeconds)).toFixed(3)} s for ${
          options.idleSeconds > 0 ? `${options.idleSeconds} s idle` : `${gib} GiB`
        } ` +
        `(runs: ${of.map((r) => r.cpuSeconds.toFixed(3)).join(", ")}), ` +
        `peak RSS median ${median(of.map((r) => r.peakRssMiB)).toFixed(1)} MiB ` +
        `(runs: ${of.map((r) => r.peakRssMiB.toFixed(1)).join(", ")}), ` +
        `wall median ${median(of.map((r) => r.seconds)).toFixed(2)} s`,
    );
  }
  console.log("\n/metrics in the middle of a transfer:\n" + excerpt);
}

if (import.meta.main) await main();
