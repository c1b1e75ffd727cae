/**
 * `deno task bench`: Nexus beside a direct connection and HAProxy, in one run, on loopback.
 *
 * It starts, each as its own child process: a TLS service (upload sink, download source, echo), a Nexus node
 * and agent (`deno run src/main.ts serve|agent --config`), HAProxy doing SNI passthrough when it is installed,
 * and one load generator that drives all three targets the same way. CPU time and memory of the node, the
 * agent and HAProxy come from `/proc/<pid>`. Results go to `docs/benchmarks.md` and `docs/benchmarks.svg`, and
 * each run is added to the log of runs (`docs/benchmarks_history.json`) under its `--label`.
 *
 * Options:
 *   --quick            a smoke run: small sizes, one repeat (about a minute)
 *   --out DIR          where the report goes (default: docs/ of this repository)
 *   --label TEXT       the run's name in the log of runs (default: the commit's subject)
 *   --repeats N        repeats of every measurement (default 3, quick 1)
 *   --bulk-mib N       bytes of each one-stream transfer, in MiB (default 256, quick 32)
 *   --stream-kib N     bytes of each of the 64 streams, in KiB (default 4096, quick 512)
 *   --seconds S        length of the timed measurements (default 3, quick 1)
 *   --idle A,B         the two counts of idle connections (default 1000,10000; quick 200,1000)
 *   --phase-timeout S  give every phase S seconds instead of the deadline scaled to its size
 *   --profile DIR      instead of the benchmark: run the node and agent under `--cpu-prof`, drive the
 *                      one-stream and 64-stream transfers through them, and list the top self-time functions
 *   --profile-load L   what the profiled run drives: "transfers" (the default) or "connections" (new TLS
 *                      connections, 16 at a time, for --seconds per repeat)
 *
 * Every step is a phase with a deadline scaled to its size (see {@linkcode DEADLINES}); holds and transfers
 * also end once their progress has stood still for 30 s. A phase that misses its deadline or fails ends the
 * run with one line naming the phase, how far it got and the state of every child process; the children are
 * killed on the way out, on Ctrl-C too. Exit codes: 0 done, 1 a phase failed, 2 a bad flag, 5 a phase missed
 * its deadline.
 *
 * Environment: NEXUS_BENCH_KEEP=1 keeps the temporary directory (configs, certificates, every child's log);
 * NEXUS_BENCH_DEBUG=1 prints each phase, each child's pid and the load generator's progress.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createCertificateAuthority, issueCertificate } from "./dev_certs.ts";
import {
  BenchChild,
  openFileLimits,
  PeakRss,
  type ProcessSample,
  sampleProcess,
  WANTED_OPEN_FILES,
} from "./bench/child.ts";
import { topFunctions } from "./bench/cpu_profile.ts";
import { RUNTIME_V8_FLAGS } from "./compile.ts";
import { HAPROXY_INSTALL_HINT, haproxyConfig, haproxyVersion } from "./bench/haproxy.ts";
import type { LoadJob, LoadProgress, LoadResult, LoadTarget } from "./bench/load.ts";
import { EXIT_DEADLINE, type PhaseContext, PhaseError, Phases } from "./bench/phase.ts";
import { keepOnExit, reapOnExit, registeredChildren, removeOnExit } from "./bench/reaper.ts";
import {
  type Figure,
  type HistoryEntry,
  markdownReport,
  NOTES_MARKER,
  type RunInfo,
  svgPlot,
  type TargetName,
} from "./bench/report.ts";

export const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const SERVER_NAME = "bench.nexus.test";
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
export const STREAMS = 64;
const CONNECT_CONCURRENCY = 16;
const REQUEST_CONNECTIONS = 16;
const REQUEST_BYTES = 64;
const LATENCY_CONNECTIONS = 8;
const LATENCY_RATE_PER_SECOND = 1_000;
const HOLD_CONCURRENCY = 128;
/** How long after the last transfer of a repeat the RSS it left behind is read. */
const BULK_SETTLE_MS = 2_000;

/**
 * Deadlines of the phases, in seconds, scaled to what each one moves. Generous (a phase that takes a tenth of
 * its deadline is slow already): they are there to turn a proxy that stopped answering into a message.
 */
export const DEADLINES = {
  /** Starting a child and waiting until it answers. */
  start: 60,
  /** Stopping children: SIGTERM, up to 10 s of grace each, then SIGKILL. */
  stop: 30,
  /** Holding idle connections: a fixed part and 30 ms per connection (Nexus takes about 3). */
  hold: (connections: number) => 15 + connections * 0.03,
  /** Moving bytes: a fixed part and the bytes at 2 MiB/s (Nexus moves about a hundred times that). */
  transfer: (bytes: number) => 15 + bytes / (2 * MIB),
  /** A measurement of fixed length: its length and 30 s to set it up. */
  timed: (seconds: number) => 30 + seconds,
  /** Writing the report, the plot and the log of runs, and formatting them. */
  report: 60,
  /** A phase whose progress (connections held, bytes moved) stands still this long ends before its deadline. */
  stall: 30,
};

/** Sizes and counts of one run. */
interface Plan {
  readonly quick: boolean;
  readonly repeats: number;
  readonly bulkBytes: number;
  readonly streamBytes: number;
  readonly seconds: number;
  readonly idleCounts: readonly [number, number];
  /** `--phase-timeout`: every phase's deadline, instead of the scaled ones. */
  readonly phaseTimeoutSeconds: number | undefined;
}

function planFromArgs(values: Record<string, string | boolean | undefined>): Plan {
  const quick = values.quick === true;
  const number = (key: string, fallback: number) => {
    const text = values[key];
    if (typeof text !== "string") return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0) {
      throw new Error(`--${key} must be a positive number, got "${text}"`);
    }
    return value;
  };
  const idleText = typeof values.idle === "string" ? values.idle : quick ? "200,1000" : "1000,10000";
  const idle = idleText.split(",").map(Number);
  if (idle.length !== 2 || !idle.every((n) => Number.isInteger(n) && n > 0) || idle[0] >= idle[1]) {
    throw new Error(`--idle must be two increasing counts such as 1000,10000, got "${idleText}"`);
  }
  return {
    quick,
    repeats: Math.round(number("repeats", quick ? 1 : 3)),
    bulkBytes: Math.round(number("bulk-mib", quick ? 32 : 256) * MIB),
    streamBytes: Math.round(number("stream-kib", quick ? 512 : 4096) * 1024),
    seconds: number("seconds", quick ? 1 : 3),
    idleCounts: [idle[0], idle[1]],
    phaseTimeoutSeconds: values["phase-timeout"] === undefined ? undefined : number("phase-timeout", 0),
  };
}

const START_MS = Date.now();

function log(line: string): void {
  console.log(
    line.length === 0 ? line : `[${((Date.now() - START_MS) / 1000).toFixed(1).padStart(5)} s] ${line}`,
  );
}

function debug(line: string): void {
  if (Deno.env.get("NEXUS_BENCH_DEBUG")) log(`  (debug) ${line}`);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export function median(values: readonly number[]): number | undefined {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (finite.length === 0) return undefined;
  const mid = Math.floor(finite.length / 2);
  return finite.length % 2 === 1 ? finite[mid] : (finite[mid - 1] + finite[mid]) / 2;
}

/** The files and ports of one benchmark setup. */
export interface Setup {
  readonly dir: string;
  readonly servicePort: number;
  readonly relayPort: number;
  readonly hubPort: number;
  readonly haproxyPort: number;
  /** HAProxy's maxconn: it needs two descriptors per connection, so at most half the open-file limit. */
  readonly haproxyMaxConnections: number;
}

/** The proxies under test; restarted between the idle-memory phase and the throughput phase. */
interface Proxies {
  node: BenchChild;
  agent: BenchChild;
  haproxy: BenchChild | null;
}

export async function writeFiles(dir: string): Promise<void> {
  const ca = await createCertificateAuthority({ commonName: "Nexus benchmark CA" });
  const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const service = await issueCertificate(ca, { dnsNames: [SERVER_NAME] });
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await Deno.writeTextFile(`${dir}/hub.pem`, hub.certPem);
  await Deno.writeTextFile(`${dir}/hub-key.pem`, hub.keyPem, { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/service.pem`, service.certPem);
  await Deno.writeTextFile(`${dir}/service-key.pem`, service.keyPem, { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/backends.secret`, crypto.randomUUID(), { mode: 0o600 });
}

export async function writeConfigs(setup: Setup): Promise<void> {
  await Deno.writeTextFile(
    `${setup.dir}/node.yaml`,
    `backendListenAddress: "127.0.0.1:${setup.hubPort}"
hubTlsCertFile: hub.pem
hubTlsKeyFile: hub-key.pem
relayBindAddress: 127.0.0.1
relayPorts:
  - { port: ${setup.relayPort}, protocol: tls }
idleTimeoutSeconds: 600
backendsJWTSecretFile: backends.secret
drainTimeoutSeconds: 0
logLevel: warn
limits:
  maxConnections: 100000
  maxConnectionsPerIp: 100000
  maxHandshakes: 10000
  maxHandshakesPerIp: 10000
  maxStreamsPerBackend: 100000
`,
  );
  await Deno.writeTextFile(
    `${setup.dir}/agent.yaml`,
    `name: bench-agent
hubs: ["wss://127.0.0.1:${setup.hubPort}/connect"]
hubCaFile: ca.pem
hostnames: [${SERVER_NAME}]
token:
  secretFile: backends.secret
targets:
  ${SERVER_NAME}: 127.0.0.1:${setup.servicePort}
drainTimeoutSeconds: 0
logLevel: warn
limits:
  maxStreams: 100000
`,
  );
  await Deno.writeTextFile(
    `${setup.dir}/haproxy.cfg`,
    haproxyConfig({
      listenPort: setup.haproxyPort,
      servicePort: setup.servicePort,
      serverName: SERVER_NAME,
      maxConnections: setup.haproxyMaxConnections,
    }),
  );
}

export function denoRun(
  permissions: readonly string[],
  script: string,
  args: readonly string[],
  extra: readonly string[] = [],
): string[] {
  return [Deno.execPath(), "run", ...permissions, ...extra, script, ...args];
}

const NEXUS_PERMISSIONS = ["--allow-net", "--allow-read", "--allow-env"];
/** Node and agent run with the V8 flags the binaries are built with, so the figures are what ships. */
const SHIPPED_V8_FLAGS = [`--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`];

/** The TLS echo and transfer service every target leads to, with the files of {@linkcode writeFiles}. */
export function startService(dir: string): BenchChild {
  return new BenchChild(
    "service",
    denoRun(["--allow-net", "--allow-read"], `${REPO}/scripts/bench/service.ts`, [
      "--cert",
      `${dir}/service.pem`,
      "--key",
      `${dir}/service-key.pem`,
    ]),
    { logFile: `${dir}/service.log` },
  );
}

/** How node and agent are run: extra flags of `deno run` (such as `--v8-flags=...`), environment, profiling. */
export interface NexusRunOptions {
  /** Where `--cpu-prof` writes the profiles of node and agent; no profiling without it. */
  readonly profileDir?: string;
  readonly denoFlags?: readonly string[];
  readonly env?: Record<string, string>;
  /** The `src/main.ts` to run (default: this checkout's), to measure another build beside this one. */
  readonly mainScript?: string;
}

/**
 * Starts the node, waits for its hub to accept connections, then starts the agent (no reconnect delay). The
 * wait is bounded by the phase it runs in.
 */
export async function startNexus(
  setup: Setup,
  context: PhaseContext,
  options: NexusRunOptions = {},
): Promise<{ node: BenchChild; agent: BenchChild }> {
  const { profileDir, denoFlags = [], env, mainScript = `${REPO}/src/main.ts` } = options;
  const profile = (name: string) => [
    ...denoFlags,
    ...(profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}/${name}`]),
  ];
  const main = mainScript;
  const node = new BenchChild(
    "node",
    denoRun(NEXUS_PERMISSIONS, main, ["serve", "--config", `${setup.dir}/node.yaml`], profile("node")),
    { logFile: `${setup.dir}/node.log`, env },
  );
  context.progress = "the node's hub does not accept connections yet";
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: setup.hubPort })).close();
      break;
    } catch (error) {
      if (node.exited || context.signal.aborted) {
        await node.stop();
        throw new Error(`the node did not start (see ${setup.dir}/node.log): ${String(error)}`);
      }
      await sleep(50);
    }
  }
  debug(`node hub up (pid ${node.pid})`);
  const agent = new BenchChild(
    "agent",
    denoRun(NEXUS_PERMISSIONS, main, ["agent", "--config", `${setup.dir}/agent.yaml`], profile("agent")),
    { logFile: `${setup.dir}/agent.log`, env },
  );
  debug(`agent started (pid ${agent.pid})`);
  return { node, agent };
}

function startHaproxy(setup: Setup): BenchChild {
  return new BenchChild("haproxy", ["haproxy", "-db", "-f", `${setup.dir}/haproxy.cfg`], {
    logFile: `${setup.dir}/haproxy.log`,
  });
}

/** The load generator, with one job in flight at a time. */
export class Generator {
  readonly child: BenchChild;

  constructor(child: BenchChild) {
    this.child = child;
  }

  /** Runs `job`; the generator's progress lines go to `context`, whose phase bounds the wait. */
  async run(job: LoadJob, context?: PhaseContext): Promise<LoadResult> {
    await this.child.writeLine(JSON.stringify(job));
    for (;;) {
      const line = JSON.parse(await this.child.readLine()) as LoadResult | LoadProgress;
      if (typeof line.progress === "string") {
        if (context !== undefined) context.progress = line.progress;
        debug(`${job.op}: ${line.progress}`);
        continue;
      }
      const result = line as LoadResult;
      if (typeof result.error === "string") throw new Error(`${job.op}: ${result.error}`);
      return result;
    }
  }
}

/** Waits until a connection through `target` reaches the service; the phase of `context` bounds the wait. */
export async function waitReachable(
  generator: Generator,
  target: LoadTarget,
  what: string,
  context: PhaseContext,
): Promise<void> {
  for (;;) {
    try {
      await generator.run({ op: "probe", target });
      return;
    } catch (error) {
      context.progress = `${what} not reachable yet: ${
        error instanceof Error ? error.message : String(error)
      }`;
      debug(context.progress);
      if (context.signal.aborted) return;
      await sleep(200);
    }
  }
}

async function sumSamples(children: readonly BenchChild[]): Promise<ProcessSample> {
  let cpuSeconds = 0;
  let rssBytes = 0;
  for (const child of children) {
    const sample = await sampleProcess(child.pid);
    cpuSeconds += sample.cpuSeconds;
    rssBytes += sample.rssBytes;
  }
  return { cpuSeconds, rssBytes };
}

/** Raw values of every repeat, by figure key and target. */
class Samples {
  readonly #values = new Map<string, Map<TargetName, number[]>>();

  add(key: string, target: TargetName, value: number): void {
    let byTarget = this.#values.get(key);
    if (byTarget === undefined) this.#values.set(key, byTarget = new Map());
    let list = byTarget.get(target);
    if (list === undefined) byTarget.set(target, list = []);
    list.push(value);
  }

  medians(key: string): Partial<Record<TargetName, number>> {
    const out: Partial<Record<TargetName, number>> = {};
    for (const [target, list] of this.#values.get(key) ?? []) {
      const m = median(list);
      if (m !== undefined) out[target] = m;
    }
    return out;
  }
}

interface Targets {
  readonly list: readonly TargetName[];
  readonly load: Record<TargetName, LoadTarget>;
}

/** The idle-connection phases: memory of each proxy with the two counts of idle proxied connections held. */
async function measureIdle(
  phases: Phases,
  newGenerator: (name: string) => Generator,
  targets: Targets,
  proxies: Proxies,
  plan: Plan,
  samples: Samples,
  limits: { readonly hard: number; readonly haproxyIdle: number; readonly notes: string[] },
): Promise<void> {
  const small = plan.idleCounts[0];
  for (const target of targets.list) {
    if (target === "direct") continue;
    // A generator of its own, stopped to let go of the connections all at once: closing thousands of TLS
    // connections one by one stalls a Deno process for seconds afterwards.
    const generator = newGenerator(`idle connection holder (${target})`);
    const watched = target === "haproxy" ? [proxies.haproxy!] : [proxies.node];
    // HAProxy holds two descriptors per connection: under a low open-file limit it holds fewer.
    const large = target === "haproxy"
      ? Math.min(plan.idleCounts[1], limits.haproxyIdle)
      : plan.idleCounts[1];
    if (large < plan.idleCounts[1]) {
      limits.notes.push(
        `HAProxy held ${large.toLocaleString("en-US")} idle connections, not ${
          plan.idleCounts[1].toLocaleString("en-US")
        }: two descriptors each and an open-file limit of ${
          limits.hard.toLocaleString("en-US")
        } (its figures are for ${large.toLocaleString("en-US")}).`,
      );
    }
    const hold = (upTo: number, before: number) =>
      phases.run(`idle connections, ${target}, ${upTo}`, DEADLINES.hold(upTo - before), async (context) => {
        const result = await generator.run({
          op: "hold",
          target: targets.load[target],
          upTo,
          concurrency: HOLD_CONCURRENCY,
        }, context);
        await sleep(1_000);
        return { seconds: Number(result.seconds), sample: await sumSamples(watched) };
      }, { stallSeconds: DEADLINES.stall });
    await sleep(500);
    const base = await sumSamples(watched);
    const agentBase = target === "nexus" ? await sampleProcess(proxies.agent.pid) : null;
    const first = await hold(small, 0);
    const second = await hold(large, small);
    const atSmall = first.sample;
    const atLarge = second.sample;
    samples.add("rss_small", target, atSmall.rssBytes / MIB);
    samples.add("rss_large", target, atLarge.rssBytes / MIB);
    samples.add("per_idle_small", target, (atSmall.rssBytes - base.rssBytes) / small / 1024);
    samples.add("node_per_idle", target, (atLarge.rssBytes - base.rssBytes) / large / 1024);
    if (agentBase !== null) {
      const agentLarge = await sampleProcess(proxies.agent.pid);
      samples.add("agent_per_idle", target, (agentLarge.rssBytes - agentBase.rssBytes) / large / 1024);
    }
    log(
      `  idle ${target}: ${small} held in ${first.seconds.toFixed(1)} s, ${large} in ${
        (first.seconds + second.seconds).toFixed(1)
      } s; RSS ${(base.rssBytes / MIB).toFixed(1)} -> ${(atSmall.rssBytes / MIB).toFixed(1)} -> ${
        (atLarge.rssBytes / MIB).toFixed(1)
      } MiB`,
    );
    await phases.run(`idle connections, ${target}, release`, DEADLINES.stop, () => generator.child.stop());
    log(`  idle ${target}: released`);
  }
}

/** CPU spent by the proxy processes of a target, per GiB moved, accumulated over the transfer jobs. */
class CpuPerGib {
  readonly #seconds = new Map<string, number>();
  #bytes = 0;

  add(part: string, seconds: number): void {
    this.#seconds.set(part, (this.#seconds.get(part) ?? 0) + seconds);
  }

  moved(bytes: number): void {
    this.#bytes += bytes;
  }

  perGib(part: string): number {
    return (this.#seconds.get(part) ?? 0) / (this.#bytes / GIB);
  }
}

/** One repeat of every timed measurement, for every target, rotating the order between repeats. */
async function measureRepeat(
  phases: Phases,
  generator: Generator,
  targets: Targets,
  proxies: Proxies,
  plan: Plan,
  samples: Samples,
  repeat: number,
  generatorLoad: Map<TargetName, number>,
  startRss: { readonly node: number; readonly agent: number },
): Promise<void> {
  const order = targets.list.map((_, i) => targets.list[(i + repeat) % targets.list.length]);
  const cpu = new Map<TargetName, CpuPerGib>(order.map((t) => [t, new CpuPerGib()]));
  const watchedFor = (target: TargetName): Array<[string, BenchChild]> =>
    target === "nexus"
      ? [["node", proxies.node], ["agent", proxies.agent]]
      : target === "haproxy"
      ? [["node", proxies.haproxy!]]
      : [];
  const phase = (what: string, target: TargetName, timeoutSeconds: number, job: LoadJob) =>
    phases.run(
      `repeat ${repeat + 1}, ${what}, ${target}`,
      timeoutSeconds,
      (context) => generator.run(job, context),
      { stallSeconds: DEADLINES.stall },
    );

  // Highest RSS of node and agent during this repeat's Nexus transfers.
  const nexusPeaks = { node: 0, agent: 0 };
  const transfer = async (key: string, target: TargetName, job: LoadJob, bytes: number) => {
    const watched = watchedFor(target);
    const before = await Promise.all(watched.map(([, child]) => sampleProcess(child.pid)));
    const generatorBefore = await sampleProcess(generator.child.pid);
    const peaks = target === "nexus" ? new PeakRss([proxies.node.pid, proxies.agent.pid]) : null;
    const result = await phase(key, target, DEADLINES.transfer(bytes), job);
    if (peaks !== null) {
      const [node, agent] = await peaks.stop();
      nexusPeaks.node = Math.max(nexusPeaks.node, node);
      nexusPeaks.agent = Math.max(nexusPeaks.agent, agent);
    }
    const generatorAfter = await sampleProcess(generator.child.pid);
    const after = await Promise.all(watched.map(([, child]) => sampleProcess(child.pid)));
    const seconds = Number(result.seconds);
    samples.add(key, target, Number(result.bytes) / MIB / seconds);
    const tracker = cpu.get(target)!;
    tracker.moved(Number(result.bytes));
    watched.forEach(([part], i) => tracker.add(part, after[i].cpuSeconds - before[i].cpuSeconds));
    const share = (generatorAfter.cpuSeconds - generatorBefore.cpuSeconds) / seconds;
    generatorLoad.set(target, Math.max(generatorLoad.get(target) ?? 0, share));
  };

  for (const target of order) {
    const job: LoadJob = { op: "upload", target: targets.load[target], bytes: plan.bulkBytes };
    await transfer("bulk_up", target, job, plan.bulkBytes);
  }
  for (const target of order) {
    const job: LoadJob = { op: "download", target: targets.load[target], bytes: plan.bulkBytes };
    await transfer("bulk_down", target, job, plan.bulkBytes);
  }
  for (const target of order) {
    const job: LoadJob = {
      op: "streams",
      target: targets.load[target],
      streams: STREAMS,
      bytesEach: plan.streamBytes,
    };
    await transfer("streams", target, job, STREAMS * plan.streamBytes);
  }
  if (order.includes("nexus")) {
    // What the transfers left behind once they are over: the agent's RSS against its RSS at start.
    await sleep(BULK_SETTLE_MS);
    const [node, agent] = await Promise.all([
      sampleProcess(proxies.node.pid),
      sampleProcess(proxies.agent.pid),
    ]);
    samples.add("agent_bulk_peak", "nexus", (nexusPeaks.agent - startRss.agent) / MIB);
    samples.add("agent_bulk_after", "nexus", (agent.rssBytes - startRss.agent) / MIB);
    samples.add("node_bulk_peak", "nexus", (nexusPeaks.node - startRss.node) / MIB);
    samples.add("node_bulk_after", "nexus", (node.rssBytes - startRss.node) / MIB);
  }
  log("  transfers done");
  const timed = DEADLINES.timed(plan.seconds);
  for (const target of order) {
    const watched = watchedFor(target);
    const before = await Promise.all(watched.map(([, child]) => sampleProcess(child.pid)));
    const result = await phase(
      "connections",
      target,
      timed,
      connectionsJob(targets.load[target], plan.seconds),
    );
    const after = await Promise.all(watched.map(([, child]) => sampleProcess(child.pid)));
    const connections = Number(result.connections);
    samples.add("connections", target, connections / Number(result.seconds));
    // CPU per connection, in ms per 1,000: what a new connection costs, whatever the rate it reached.
    const perThousand = (i: number) => (after[i].cpuSeconds - before[i].cpuSeconds) * 1e6 / connections;
    watched.forEach(([part], i) => samples.add(`connection_cpu_${part}`, target, perThousand(i)));
    if (watched.length > 0) {
      samples.add("connection_cpu_total", target, watched.reduce((sum, _, i) => sum + perThousand(i), 0));
    }
  }
  for (const target of order) {
    const result = await phase("requests", target, timed, {
      op: "requests",
      target: targets.load[target],
      connections: REQUEST_CONNECTIONS,
      seconds: plan.seconds,
      requestBytes: REQUEST_BYTES,
    });
    samples.add("requests", target, Number(result.requests) / Number(result.seconds));
  }
  for (const target of order) {
    const result = await phase("latency", target, timed, {
      op: "latency",
      target: targets.load[target],
      connections: LATENCY_CONNECTIONS,
      ratePerSecond: LATENCY_RATE_PER_SECOND,
      seconds: plan.seconds,
      requestBytes: REQUEST_BYTES,
    });
    samples.add("latency_p50", target, Number(result.p50Ms));
    samples.add("latency_p99", target, Number(result.p99Ms));
  }
  for (const target of order) {
    if (target === "direct") continue;
    const tracker = cpu.get(target)!;
    if (target === "nexus") {
      samples.add("cpu_node", target, tracker.perGib("node"));
      samples.add("cpu_agent", target, tracker.perGib("agent"));
      samples.add("cpu_total", target, tracker.perGib("node") + tracker.perGib("agent"));
    } else {
      samples.add("cpu_node", target, tracker.perGib("node"));
      samples.add("cpu_total", target, tracker.perGib("node"));
    }
  }
}

function buildFigures(samples: Samples, plan: Plan): Figure[] {
  const m = (key: string) => samples.medians(key);
  const p50 = m("latency_p50");
  const p99 = m("latency_p99");
  const added = (values: Partial<Record<TargetName, number>>) => {
    const out: Partial<Record<TargetName, number>> = {};
    if (values.direct === undefined) return out;
    if (values.haproxy !== undefined) out.haproxy = values.haproxy - values.direct;
    if (values.nexus !== undefined) out.nexus = values.nexus - values.direct;
    return out;
  };
  const [small, large] = plan.idleCounts.map((n) => n.toLocaleString("en-US"));
  const throughput = (key: string, label: string, goal?: number): Figure => ({
    key,
    label,
    unit: "MB/s",
    better: "higher",
    compare: "ratio",
    values: m(key),
    ...(goal === undefined ? {} : { goal: { kind: "ratio_vs_haproxy" as const, atLeast: goal } }),
  });
  return [
    throughput("bulk_up", "One stream, client → service", 0.5),
    throughput("bulk_down", "One stream, service → client", 0.5),
    throughput("streams", `${STREAMS} concurrent streams, aggregate (service → client)`, 0.5),
    {
      key: "connections",
      label: `New TLS connections (${CONNECT_CONCURRENCY} at a time; full handshake, then close)`,
      unit: "conn/s",
      better: "higher",
      compare: "ratio",
      values: m("connections"),
      goal: { kind: "ratio_vs_haproxy", atLeast: 0.6 },
    },
    {
      key: "requests",
      label: `Requests on ${REQUEST_CONNECTIONS} kept-alive connections (${REQUEST_BYTES} B echo)`,
      unit: "req/s",
      better: "higher",
      compare: "ratio",
      values: m("requests"),
    },
    {
      key: "latency_p50",
      label:
        `Request/response p50 at ${LATENCY_RATE_PER_SECOND} req/s over ${LATENCY_CONNECTIONS} connections`,
      unit: "ms",
      better: "lower",
      compare: "ratio",
      values: p50,
    },
    {
      key: "latency_p99",
      label:
        `Request/response p99 at ${LATENCY_RATE_PER_SECOND} req/s over ${LATENCY_CONNECTIONS} connections`,
      unit: "ms",
      better: "lower",
      compare: "ratio",
      values: p99,
    },
    {
      key: "added_p50",
      label: "Added p50 latency vs direct",
      unit: "ms",
      better: "lower",
      compare: "difference",
      values: added(p50),
    },
    {
      key: "added_p99",
      label: "Added p99 latency vs direct",
      unit: "ms",
      better: "lower",
      compare: "difference",
      values: added(p99),
      goal: { kind: "difference_vs_haproxy", atMost: 2 },
    },
    {
      key: "rss_small",
      label: `Proxy RSS with ${small} idle connections (Nexus: node)`,
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("rss_small"),
    },
    {
      key: "rss_large",
      label: `Proxy RSS with ${large} idle connections (Nexus: node)`,
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("rss_large"),
    },
    {
      key: "per_idle_small",
      label: `Proxy memory per idle connection, at ${small} (Nexus: node)`,
      unit: "KiB",
      better: "lower",
      compare: "ratio",
      values: m("per_idle_small"),
    },
    {
      key: "node_per_idle",
      label: `Proxy memory per idle connection, at ${large} (Nexus: node)`,
      unit: "KiB",
      better: "lower",
      compare: "ratio",
      values: m("node_per_idle"),
      goal: { kind: "below", value: 8 },
    },
    {
      key: "agent_per_idle",
      label: `Agent memory per idle connection, at ${large}`,
      unit: "KiB",
      better: "lower",
      compare: "ratio",
      values: m("agent_per_idle"),
    },
    {
      key: "agent_bulk_peak",
      label: "Agent RSS during the transfers, highest, above its RSS at start",
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("agent_bulk_peak"),
      goal: { kind: "below", value: 96 },
    },
    {
      key: "agent_bulk_after",
      label: `Agent RSS ${BULK_SETTLE_MS / 1000} s after the transfers, above its RSS at start`,
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("agent_bulk_after"),
      goal: { kind: "below", value: 24 },
    },
    {
      key: "node_bulk_peak",
      label: "Node RSS during the transfers, highest, above its RSS at start",
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("node_bulk_peak"),
    },
    {
      key: "node_bulk_after",
      label: `Node RSS ${BULK_SETTLE_MS / 1000} s after the transfers, above its RSS at start`,
      unit: "MiB",
      better: "lower",
      compare: "ratio",
      values: m("node_bulk_after"),
    },
    {
      key: "cpu_node",
      label: "CPU per GiB moved, node (HAProxy: its process)",
      unit: "s/GiB",
      better: "lower",
      compare: "ratio",
      values: m("cpu_node"),
      goal: { kind: "cost_vs_haproxy", atMost: 2 },
    },
    {
      key: "cpu_agent",
      label: "CPU per GiB moved, agent",
      unit: "s/GiB",
      better: "lower",
      compare: "ratio",
      values: m("cpu_agent"),
    },
    {
      key: "cpu_total",
      label: "CPU per GiB moved, node + agent (HAProxy: its process)",
      unit: "s/GiB",
      better: "lower",
      compare: "ratio",
      values: m("cpu_total"),
      goal: { kind: "cost_vs_haproxy", atMost: 3.5 },
    },
    {
      key: "connection_cpu_node",
      label: "CPU per 1,000 new TLS connections, node (HAProxy: its process)",
      unit: "ms",
      better: "lower",
      compare: "ratio",
      values: m("connection_cpu_node"),
      goal: { kind: "cost_vs_haproxy", atMost: 1.5 },
    },
    {
      key: "connection_cpu_agent",
      label: "CPU per 1,000 new TLS connections, agent",
      unit: "ms",
      better: "lower",
      compare: "ratio",
      values: m("connection_cpu_agent"),
    },
    {
      key: "connection_cpu_total",
      label: "CPU per 1,000 new TLS connections, node + agent (HAProxy: its process)",
      unit: "ms",
      better: "lower",
      compare: "ratio",
      values: m("connection_cpu_total"),
    },
  ];
}

async function commandOutput(command: string, args: string[]): Promise<string> {
  try {
    const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "null", cwd: REPO })
      .output();
    return output.success ? new TextDecoder().decode(output.stdout).trim() : "";
  } catch {
    return "";
  }
}

/**
 * The commit measured, `git rev-parse --short HEAD`, with `+changes` when the tree differs from it (untracked
 * files included, the report's own files not: every run rewrites them).
 */
async function measuredCommit(): Promise<string> {
  const commit = await commandOutput("git", ["rev-parse", "--short", "HEAD"]) || "unknown";
  const changes = await commandOutput("git", [
    "status",
    "--porcelain",
    "--",
    ".",
    ":(exclude)docs/benchmarks.md",
    ":(exclude)docs/benchmarks.svg",
    ":(exclude)docs/benchmarks_history.json",
  ]);
  return changes === "" ? commit : `${commit}+changes`;
}

async function machineInfo(): Promise<RunInfo["machine"]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown CPU";
  const memKib = Number(
    /^MemTotal:\s+(\d+)/m.exec(await Deno.readTextFile("/proc/meminfo").catch(() => ""))?.[1] ?? 0,
  );
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    memory: `${(memKib / MIB).toFixed(1)} GiB`,
  };
}

/** The hand-written part of an existing report, kept across runs. */
async function keptNotes(path: string): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const at = text.indexOf(NOTES_MARKER);
  return at < 0 ? "\n" : text.slice(at + NOTES_MARKER.length + 1);
}

async function profileRun(
  phases: Phases,
  setup: Setup,
  generator: Generator,
  plan: Plan,
  profileDir: string,
  load: ProfileLoad,
): Promise<void> {
  await Deno.mkdir(profileDir, { recursive: true });
  const target = { port: setup.relayPort, serverName: SERVER_NAME };
  const { node, agent } = await phases.run(
    "start Nexus under the profiler",
    DEADLINES.start,
    async (context) => {
      const started = await startNexus(setup, context, { profileDir, denoFlags: SHIPPED_V8_FLAGS });
      await waitReachable(generator, target, "Nexus", context);
      return started;
    },
  );
  try {
    for (let r = 0; r < plan.repeats; r++) {
      if (load === "connections") {
        const result = await phases.run(
          `profile ${r + 1}, connections`,
          DEADLINES.timed(plan.seconds),
          (c) => generator.run(connectionsJob(target, plan.seconds), c),
        );
        log(`profile ${r + 1}: ${result.connections} connections in ${Number(result.seconds).toFixed(1)} s`);
        continue;
      }
      const job = (what: string, bytes: number, work: LoadJob) =>
        phases.run(`profile ${r + 1}, ${what}`, DEADLINES.transfer(bytes), (c) => generator.run(work, c));
      await job("upload", plan.bulkBytes, { op: "upload", target, bytes: plan.bulkBytes });
      await job("download", plan.bulkBytes, { op: "download", target, bytes: plan.bulkBytes });
      await job("streams", STREAMS * plan.streamBytes, {
        op: "streams",
        target,
        streams: STREAMS,
        bytesEach: plan.streamBytes,
      });
    }
  } finally {
    // SIGTERM first: a profiled process writes its profile on the way out.
    await phases.run(
      "stop Nexus and write the profiles",
      DEADLINES.stop,
      () => Promise.all([node.stop(), agent.stop()]),
    );
  }
  const lines: string[] = [];
  for (const name of ["node", "agent"]) {
    for await (const entry of Deno.readDir(`${profileDir}/${name}`)) {
      if (!entry.name.endsWith(".cpuprofile")) continue;
      lines.push(
        `${name} (${entry.name}):`,
        ...(await topFunctions(`${profileDir}/${name}/${entry.name}`, 30)).map((l) => `  ${l}`),
      );
    }
  }
  await Deno.writeTextFile(`${profileDir}/top.txt`, lines.join("\n") + "\n");
  log(lines.join("\n"));
  log(`profiles and top.txt are in ${profileDir}`);
}

/** The new-connections load every bench runs: TLS connections, CONNECT_CONCURRENCY at a time, for `seconds`. */
export function connectionsJob(target: LoadTarget, seconds: number): LoadJob {
  return { op: "connections", target, concurrency: CONNECT_CONCURRENCY, seconds };
}

/** What a profiled run drives through the node and agent. */
type ProfileLoad = "transfers" | "connections";
const PROFILE_LOADS: readonly ProfileLoad[] = ["transfers", "connections"];

const USAGE = `Usage: deno task bench [--quick] [--label TEXT] [--out DIR] [--profile DIR] [--profile-load L]
                       [--repeats N] [--bulk-mib N] [--stream-kib N] [--seconds N] [--idle N,N] [--phase-timeout S]`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        quick: { type: "boolean" },
        out: { type: "string" },
        label: { type: "string" },
        repeats: { type: "string" },
        "bulk-mib": { type: "string" },
        "stream-kib": { type: "string" },
        seconds: { type: "string" },
        idle: { type: "string" },
        "phase-timeout": { type: "string" },
        profile: { type: "string" },
        "profile-load": { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    console.error(
      `bench: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}\n${USAGE}`,
    );
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let plan: Plan;
  try {
    plan = planFromArgs(values);
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return 2;
  }
  const profileLoad = values["profile-load"] ?? "transfers";
  if (!PROFILE_LOADS.includes(profileLoad as ProfileLoad)) {
    console.error(
      `bench: --profile-load must be one of ${PROFILE_LOADS.join(", ")}, got "${profileLoad}"\n${USAGE}`,
    );
    return 2;
  }
  const outDir = values.out ?? `${REPO}/docs`;
  const startedMs = Date.now();
  // Taken before anything runs: what is measured is the tree as it was when the run began.
  const commit = await measuredCommit();
  reapOnExit("bench");
  const dir = await Deno.makeTempDir({ prefix: "nexus-bench-" });
  const keep = Deno.env.get("NEXUS_BENCH_KEEP") !== undefined;
  if (!keep) removeOnExit(dir);
  const phases = new Phases({
    watched: registeredChildren,
    timeoutOverrideSeconds: plan.phaseTimeoutSeconds,
    log: debug,
  });
  const hardLimit = (await openFileLimits(Deno.pid)).hard;
  const haproxyMaxConnections = Math.min(
    30_000,
    Math.floor(Math.min(hardLimit, WANTED_OPEN_FILES) / 2) - 100,
  );
  const fdBudget = { hard: hardLimit, haproxyIdle: haproxyMaxConnections - 100, notes: [] as string[] };
  const setup: Setup = {
    haproxyMaxConnections,
    dir,
    servicePort: 0,
    relayPort: freePort(),
    hubPort: freePort(),
    haproxyPort: freePort(),
  };
  await writeFiles(dir);
  const children: BenchChild[] = [];
  const proxies: Partial<Proxies> = {};
  try {
    const service = startService(dir);
    children.push(service);
    debug(`service started (pid ${service.pid})`);
    const servicePort = await phases.run("start the service", DEADLINES.start, async (context) => {
      context.progress = "the service has not printed its port";
      return (JSON.parse(await service.readLine()) as { port: number }).port;
    });
    Object.assign(setup, { servicePort });
    await writeConfigs(setup);
    const newGenerator = (name: string) =>
      new Generator(
        new BenchChild(
          name,
          denoRun(["--allow-net", "--allow-read"], `${REPO}/scripts/bench/load.ts`, [
            "--ca",
            `${dir}/ca.pem`,
          ]),
          { logFile: `${dir}/load.log`, stdin: true },
        ),
      );
    const generator = newGenerator("load generator");
    children.push(generator.child);
    debug(`load generator started (pid ${generator.child.pid})`);

    if (values.profile !== undefined) {
      await profileRun(phases, setup, generator, plan, values.profile, profileLoad as ProfileLoad);
      return 0;
    }

    const haproxy = await haproxyVersion();
    if (haproxy === null) {
      log(`HAProxy is not installed: its column is skipped. Install it with: ${HAPROXY_INSTALL_HINT}`);
    }
    const targets: Targets = {
      list: haproxy === null ? ["direct", "nexus"] : ["direct", "haproxy", "nexus"],
      load: {
        direct: { port: servicePort, serverName: SERVER_NAME },
        haproxy: { port: setup.haproxyPort, serverName: SERVER_NAME },
        nexus: { port: setup.relayPort, serverName: SERVER_NAME },
      },
    };
    const startProxies = (what: string) =>
      phases.run(what, DEADLINES.start, async (context) => {
        Object.assign(proxies, await startNexus(setup, context, { denoFlags: SHIPPED_V8_FLAGS }), {
          haproxy: haproxy === null ? null : startHaproxy(setup),
        });
        if (proxies.haproxy) debug(`haproxy started (pid ${proxies.haproxy.pid})`);
        for (const target of targets.list) {
          await waitReachable(generator, targets.load[target], TARGET_NAMES[target], context);
          log(`  ${TARGET_NAMES[target]} reachable`);
        }
      });
    const stopProxies = () =>
      phases.run("stop the proxies", DEADLINES.stop, async () => {
        await Promise.all([proxies.node?.stop(), proxies.agent?.stop(), proxies.haproxy?.stop()]);
      });
    await startProxies("start the proxies");
    const limits = await Promise.all(
      [service, generator.child, proxies.node!, proxies.agent!, ...(proxies.haproxy ? [proxies.haproxy] : [])]
        .map(
          async (child) => `${child.name} ${(await openFileLimits(child.pid)).soft}`,
        ),
    );
    log(`open-file limits: ${limits.join(", ")}`);

    const samples = new Samples();
    log(`idle connections (${plan.idleCounts.join(" and ")}):`);
    await measureIdle(phases, newGenerator, targets, proxies as Proxies, plan, samples, fdBudget);
    // Fresh proxies for the timed part, so the heap left by thousands of closed connections does not count.
    await stopProxies();
    log("proxies stopped");
    await startProxies("restart the proxies");
    log("proxies restarted");

    await sleep(500);
    const [nodeStart, agentStart] = await Promise.all([
      sampleProcess(proxies.node!.pid),
      sampleProcess(proxies.agent!.pid),
    ]);
    const startRss = { node: nodeStart.rssBytes, agent: agentStart.rssBytes };
    const generatorLoad = new Map<TargetName, number>();
    for (let repeat = 0; repeat < plan.repeats; repeat++) {
      log(`repeat ${repeat + 1} of ${plan.repeats}`);
      await measureRepeat(
        phases,
        generator,
        targets,
        proxies as Proxies,
        plan,
        samples,
        repeat,
        generatorLoad,
        startRss,
      );
    }
    await stopProxies();

    const figures = buildFigures(samples, plan);
    const info: RunInfo = {
      date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      label: values.label ?? (await commandOutput("git", ["log", "-1", "--format=%s"]) || "unlabelled"),
      commit,
      quick: plan.quick,
      machine: await machineInfo(),
      versions: { deno: Deno.version.deno, v8: Deno.version.v8, haproxy },
      settings: [
        `Sizes: one-stream transfers of ${plan.bulkBytes / MIB} MiB; ${STREAMS} streams of ${
          plan.streamBytes / 1024
        } KiB each; timed measurements of ${plan.seconds} s; idle counts ${
          plan.idleCounts.join(" and ")
        }; ${plan.repeats} repeat(s), median shown.`,
        `Every connection is TLS 1.3 from the generator to the service (ECDSA P-256 certificate), with SNI ${SERVER_NAME}; Nexus and HAProxy pass it through without decrypting. Between node and agent, Nexus adds its own TLS WebSocket (the hub link).`,
        `HAProxy ${
          haproxy ?? "(absent)"
        }: mode tcp, tcp-request inspect-delay 5s, use_backend on req.ssl_sni, default thread count (one per CPU). ${
          haproxy === null ? `Install it with \`${HAPROXY_INSTALL_HINT}\`.` : ""
        }`,
        `Open-file limit: every child is started through \`sh -c 'ulimit -n ${WANTED_OPEN_FILES}'\` (falling back to the hard limit); limits in effect: ${
          limits.join(", ")
        }.`,
        `Memory is VmRSS from /proc/<pid>/status; "per idle connection" is the RSS growth from the idle baseline divided by the connections held (each a completed TLS handshake with one echo, then idle). Agent and node RSS during the transfers: the highest of samples every 100 ms through each repeat's Nexus transfers, and one sample ${
          BULK_SETTLE_MS / 1000
        } s after them, both against the RSS of the freshly started process. CPU is utime+stime from /proc/<pid>/stat over the one-stream and ${STREAMS}-stream transfers.`,
        `Whole run took ${((Date.now() - startedMs) / 1000).toFixed(0)} s.`,
      ],
      notes: [
        `Load generator CPU, busiest transfer: ${
          [...generatorLoad].map(([t, share]) => `${TARGET_NAMES[t]} ${(share * 100).toFixed(0)}%`).join(", ")
        } of one core (it is one process for all targets; the direct column is what the generator and the service can do alone on this machine).`,
        ...fdBudget.notes,
        `Latency is measured at a fixed offered load of ${LATENCY_RATE_PER_SECOND} requests/s spread over ${LATENCY_CONNECTIONS} connections, so every target gets the same moderate load; "added" subtracts the direct median.`,
      ],
    };
    await phases.run("write the report", DEADLINES.report, () => writeReport(outDir, info, figures));
    log(`report: ${outDir}/benchmarks.md, plot: ${outDir}/benchmarks.svg`);
    return 0;
  } finally {
    await Promise.all([proxies.node?.stop(), proxies.agent?.stop(), proxies.haproxy?.stop()]);
    for (const child of children) await child.stop();
    if (keep) log(`kept ${dir}`);
    else {
      await Deno.remove(dir, { recursive: true });
      keepOnExit(dir);
    }
  }
}

/** Writes the report, the plot and the log of runs into `outDir`, formatted, and prints the table. */
async function writeReport(outDir: string, info: RunInfo, figures: readonly Figure[]): Promise<void> {
  await Deno.mkdir(outDir, { recursive: true });
  const historyPath = `${outDir}/benchmarks_history.json`;
  const history = JSON.parse(await Deno.readTextFile(historyPath).catch(() => "[]")) as HistoryEntry[];
  history.push({
    label: info.label,
    commit: info.commit,
    date: info.date,
    quick: info.quick,
    values: Object.fromEntries(figures.map((f) => [f.key, f.values])),
  });
  await Deno.writeTextFile(historyPath, JSON.stringify(history, null, 2) + "\n");
  const notes = await keptNotes(`${outDir}/benchmarks.md`);
  await Deno.writeTextFile(`${outDir}/benchmarks.md`, markdownReport(info, figures, history, notes));
  await Deno.writeTextFile(
    `${outDir}/benchmarks.svg`,
    svgPlot(
      figures,
      `Nexus ${info.commit} beside HAProxy and a direct connection (${info.machine.cores} cores)`,
    ),
  );
  // The report lives in the repository, whose check runs `deno fmt --check`: write it formatted.
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", `${outDir}/benchmarks.md`, `${outDir}/benchmarks.svg`, historyPath],
    cwd: REPO,
    stdout: "null",
    stderr: "null",
  }).output();
  console.log(
    `\n${
      (await Deno.readTextFile(`${outDir}/benchmarks.md`)).split("## Results")[1].split("![")[0].trim()
    }\n`,
  );
}

const TARGET_NAMES: Record<TargetName, string> = { direct: "direct", haproxy: "HAProxy", nexus: "Nexus" };

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(error instanceof PhaseError && error.kind === "deadline" ? EXIT_DEADLINE : 1);
  }
}
