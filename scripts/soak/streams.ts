/**
 * Soak: a node and an agent as child processes (`nexus serve`, `nexus agent`), TLS and plain services behind
 * the agent, and many concurrent client streams of random sizes and pacing through the node, for a while.
 * Midway the agent is killed (SIGKILL) and started again. Every byte is checked by SHA-256.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-write --allow-env --allow-run scripts/soak.ts \
 *   --duration 60 --concurrency 200 [--max-bytes 4194304] [--kill-agent-at 0.4] [--seed 1] [--json]
 * deno run ... scripts/soak.ts --idle 1000      # node memory per idle proxied connection
 * ```
 *
 * Streams: downloads (`SEND`), uploads (`SINK`) and half-closing echoes (`ECHO`), over the TLS port (SNI) and
 * the HTTP port (`Host`), read or written fast, slowly, or with a stall of up to 2.5 s in the middle. Streams
 * open while the agent is down are cut or refused: those are expected failures, counted apart. Any other
 * failure is unexpected. A stream that ends cleanly short of its bytes, or with other bytes, lost data.
 *
 * The report: streams ok and failed by reason, bytes sent, received and verified, bytes lost on streams that
 * ended cleanly (must be 0), the node's peak RSS (VmHWM) and its open descriptors. Exit code 0 when no stream
 * lost or corrupted data and none failed unexpectedly; 1 when data was lost or corrupted; 2 for a bad flag;
 * 3 when the soak could not run; 4 when streams failed unexpectedly (nothing lost).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  agentYaml,
  type ConfigDir,
  makeConfigDir,
  memoryOf,
  type NexusProcess,
  type NodePorts,
  nodeYaml,
  openDescriptors,
  spawnAgent,
  spawnNode,
} from "../tests/helpers/processes.ts";
import {
  openTrafficStream,
  patternSha256,
  PatternStream,
  readSinkAnswer,
  startTrafficService,
  StreamDigest,
  type TrafficRoute,
  type TrafficService,
} from "../tests/helpers/traffic.ts";
import { writeAll } from "../tests/helpers/services.ts";

/** What a soak run does. */
export interface SoakOptions {
  readonly durationSeconds: number;
  readonly concurrency: number;
  /** Largest stream, in bytes; sizes are log-uniform from 1 KiB up to it. */
  readonly maxStreamBytes: number;
  /** When to kill the agent, as a fraction of the duration; a negative value never kills it. */
  readonly killAgentAt: number;
  /** How long the agent stays dead before it is started again. */
  readonly agentDownSeconds: number;
  readonly seed: number;
}

/** How one stream ended. */
type Outcome =
  | { readonly result: "ok" }
  | { readonly result: "lost"; readonly bytes: number }
  | { readonly result: "corrupted"; readonly detail: string }
  | { readonly result: "failed"; readonly reason: string };

/** The soak's findings. */
export interface SoakReport {
  readonly options: SoakOptions;
  readonly elapsedSeconds: number;
  readonly streams: {
    readonly started: number;
    readonly ok: number;
    /** Failures not explained by the agent kill, by reason. */
    readonly failedUnexpectedly: Record<string, number>;
    /** Streams open when the agent was killed, cut with it. */
    readonly cutByAgentKill: number;
    /** Streams that began while the agent was down, refused or cut. */
    readonly refusedWhileAgentDown: number;
    /** Streams that ended cleanly but short of their bytes, or with other bytes. */
    readonly lost: number;
    readonly corrupted: number;
    /** Streams started after the agent came back that completed (proves the recovery). */
    readonly okAfterAgentRestart: number;
  };
  readonly bytes: {
    readonly sent: number;
    readonly received: number;
    /** Bytes of completed streams whose SHA-256 matched. */
    readonly verified: number;
    /** Bytes missing from streams that ended cleanly: must be 0. */
    readonly lostOnCompleted: number;
  };
  readonly agent: { readonly kills: number; readonly reconnectMs: number | null };
  readonly node: {
    readonly peakRssBytes: number;
    readonly rssBytesAtEnd: number;
    readonly descriptorsAtStart: number;
    readonly descriptorsPeak: number;
    readonly descriptorsAtEnd: number;
  };
}

const HOSTNAME = "app.test.nexus";
const STREAM_DEADLINE_MS = 120_000;
/** After the agent is back, streams that began this soon after may still have raced its registration. */
const RECOVERY_GRACE_MS = 1_000;
const PIECE_BYTES = 16 * 1024;

/** A small seeded PRNG (mulberry32), so a run can be repeated. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The running system under test. */
interface System {
  readonly dir: ConfigDir;
  readonly node: NexusProcess;
  readonly ports: NodePorts;
  readonly agentConfig: string;
  agent: NexusProcess;
  readonly tlsService: TrafficService;
  readonly plainService: TrafficService;
  stop(): Promise<void>;
}

async function startSystem(nodeExtra = ""): Promise<System> {
  const tlsService = await startTrafficService();
  const plainService = await startTrafficService({ tls: false });
  const dir = await makeConfigDir();
  // Info level: the start-up lines name the bound ports; nothing is logged per stream at info.
  const { process: node, ports } = await spawnNode(
    await dir.write("node.yaml", nodeYaml({ drainTimeoutSeconds: 0, extra: nodeExtra })),
  );
  const agentConfig = await dir.write(
    "agent.yaml",
    agentYaml({
      hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
      hostnames: [HOSTNAME],
      targets: { [HOSTNAME]: { tls: tlsService.port, http: plainService.port } },
      extra: "limits:\n  maxStreams: 100000\n",
    }),
  );
  const agent = await spawnAgent(agentConfig).catch(async (error) => {
    await node.stop();
    throw error;
  });
  const system: System = {
    dir,
    node,
    ports,
    agentConfig,
    agent,
    tlsService,
    plainService,
    async stop() {
      await system.agent.stop();
      node.kill("SIGTERM");
      await node.exited;
      await tlsService.close();
      await plainService.close();
      await dir.remove();
    },
  };
  return system;
}

function describe(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.split("\n")[0].replace(/\d+/g, "N").slice(0, 120);
}

/** Runs one stream and says how it ended, with the bytes it moved. */
async function runStream(
  route: TrafficRoute,
  kind: "download" | "upload" | "echo",
  bytes: number,
  seed: number,
  pacing: "fast" | "slow" | "stall",
  rand: () => number,
  counters: { sent: number; received: number },
): Promise<Outcome> {
  const stallAt = Math.floor(rand() * bytes);
  const stallMs = 500 + Math.floor(rand() * 2_000);
  const pause = async (done: number, previous: number) => {
    if (pacing === "slow") await sleep(2 + Math.floor(rand() * 8));
    else if (pacing === "stall" && previous <= stallAt && done > stallAt) await sleep(stallMs);
  };
  let conn: Deno.Conn;
  try {
    conn = await openTrafficStream(
      route,
      kind === "download" ? `SEND ${bytes} ${seed}` : kind === "upload" ? "SINK" : "ECHO",
    );
  } catch (error) {
    return { result: "failed", reason: `open: ${describe(error)}` };
  }
  const deadline = setTimeout(() => conn.close(), STREAM_DEADLINE_MS);
  let head = new Uint8Array(0);
  const read = async (): Promise<{ bytes: number; sha256: string }> => {
    const digest = new StreamDigest();
    const buffer = new Uint8Array(64 * 1024);
    let previous = 0;
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      if (head.length < 64) head = buffer.slice(0, Math.min(n, 64));
      digest.update(buffer.subarray(0, n));
      counters.received += n;
      if (kind === "download") {
        await pause(digest.bytes, previous);
        previous = digest.bytes;
      }
    }
    return { bytes: digest.bytes, sha256: digest.hex() };
  };
  const write = async () => {
    const pattern = new PatternStream(seed);
    for (let done = 0; done < bytes;) {
      const n = Math.min(PIECE_BYTES, bytes - done);
      await writeAll(conn, pattern.next(n));
      counters.sent += n;
      if (kind === "upload") await pause(done + n, done);
      done += n;
    }
    await conn.closeWrite();
  };
  try {
    if (kind === "upload") {
      await write();
      const answer = await readSinkAnswer(conn);
      if (answer.bytes < bytes) return { result: "lost", bytes: bytes - answer.bytes };
      if (answer.bytes !== bytes || answer.sha256 !== patternSha256(bytes, seed)) {
        return { result: "corrupted", detail: `sink got ${answer.bytes} of ${bytes} bytes, other hash` };
      }
      return { result: "ok" };
    }
    const [got] = await Promise.all([read(), kind === "echo" ? write() : Promise.resolve()]);
    const expected = patternSha256(bytes, seed);
    if (got.bytes === bytes && got.sha256 === expected) return { result: "ok" };
    if (route.protocol === "http" && new TextDecoder().decode(head).startsWith("HTTP/1.1 ")) {
      return { result: "failed", reason: `refused: ${new TextDecoder().decode(head).split("\r\n")[0]}` };
    }
    if (got.bytes < bytes) return { result: "lost", bytes: bytes - got.bytes };
    return { result: "corrupted", detail: `${got.bytes} of ${bytes} bytes, other hash` };
  } catch (error) {
    return { result: "failed", reason: describe(error) };
  } finally {
    clearTimeout(deadline);
    try {
      conn.close();
    } catch {
      // Closed by the deadline.
    }
  }
}

/** Runs a soak and reports; never throws for stream failures (they are the findings). */
export async function runSoak(
  options: SoakOptions,
  log: (line: string) => void = () => {},
): Promise<SoakReport> {
  const system = await startSystem();
  const startMs = Date.now();
  const endMs = startMs + options.durationSeconds * 1000;
  const counters = { sent: 0, received: 0 };
  const downWindows: Array<{ from: number; to: number }> = [];
  const failures: Record<string, number> = {};
  const stats = {
    started: 0,
    ok: 0,
    cut: 0,
    refusedDown: 0,
    lost: 0,
    corrupted: 0,
    okAfter: 0,
    verified: 0,
    lostBytes: 0,
  };
  let kills = 0;
  let reconnectMs: number | null = null;
  const descriptorsAtStart = await openDescriptors(system.node.pid);
  let descriptorsPeak = descriptorsAtStart;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      descriptorsPeak = Math.max(descriptorsPeak, await openDescriptors(system.node.pid).catch(() => 0));
      await sleep(1_000);
    }
  })();

  const killer = (async () => {
    if (options.killAgentAt < 0) return;
    await sleep(options.durationSeconds * 1000 * options.killAgentAt);
    const from = Date.now();
    downWindows.push({ from, to: Infinity });
    system.agent.kill("SIGKILL");
    await system.agent.exited;
    kills += 1;
    log(`agent killed at ${((from - startMs) / 1000).toFixed(1)} s`);
    await sleep(options.agentDownSeconds * 1000);
    system.agent = await spawnAgent(system.agentConfig);
    const back = Date.now();
    downWindows[downWindows.length - 1] = { from, to: back + RECOVERY_GRACE_MS };
    reconnectMs = back - from;
    log(`agent back after ${reconnectMs} ms`);
  })();

  const affected = (from: number, to: number): "cut" | "refused" | null => {
    for (const window of downWindows) {
      if (from < window.from && to >= window.from) return "cut";
      if (from >= window.from && from <= window.to) return "refused";
    }
    return null;
  };

  const worker = async (index: number) => {
    const own = random(options.seed * 7919 + index);
    while (Date.now() < endMs) {
      const kind = (["download", "upload", "echo"] as const)[Math.floor(own() * 3)];
      const pacing = (["fast", "fast", "slow", "stall"] as const)[Math.floor(own() * 4)];
      const protocol = own() < 0.5 ? "tls" : "http";
      const route: TrafficRoute = {
        port: protocol === "tls" ? system.ports.tlsPort : system.ports.httpPort,
        protocol,
        hostname: HOSTNAME,
      };
      const bytes = Math.round(
        Math.exp(Math.log(1024) + own() * (Math.log(options.maxStreamBytes) - Math.log(1024))),
      );
      const seed = 1 + Math.floor(own() * 1_000_000);
      stats.started += 1;
      const began = Date.now();
      const outcome = await runStream(route, kind, bytes, seed, pacing, own, counters);
      const ended = Date.now();
      const hit = affected(began, ended);
      switch (outcome.result) {
        case "ok": {
          stats.ok += 1;
          stats.verified += kind === "echo" ? 2 * bytes : bytes;
          const window = downWindows.at(-1);
          if (window !== undefined && window.to !== Infinity && began > window.to) stats.okAfter += 1;
          break;
        }
        case "lost":
          if (hit === "cut") stats.cut += 1;
          else if (hit === "refused") stats.refusedDown += 1;
          else {
            stats.lost += 1;
            stats.lostBytes += outcome.bytes;
            log(`LOST ${outcome.bytes} of ${bytes} bytes: ${kind} over ${protocol}, ${pacing}`);
          }
          break;
        case "corrupted":
          if (hit === "cut") stats.cut += 1;
          else if (hit === "refused") stats.refusedDown += 1;
          else {
            stats.corrupted += 1;
            log(`CORRUPTED: ${kind} over ${protocol}, ${pacing}: ${outcome.detail}`);
          }
          break;
        case "failed":
          if (hit === "cut") stats.cut += 1;
          else if (hit === "refused") stats.refusedDown += 1;
          else {
            const reason = `${kind}/${protocol}: ${outcome.reason}`;
            failures[reason] = (failures[reason] ?? 0) + 1;
            log(`FAILED ${reason}`);
          }
          break;
      }
      // A client whose stream failed waits a little before the next one, as a real one would.
      if (outcome.result !== "ok") await sleep(50 + Math.floor(own() * 100));
    }
  };

  try {
    await Promise.all([killer, ...Array.from({ length: options.concurrency }, (_, i) => worker(i))]);
    // Let the node settle (sockets closing gracefully linger up to 2 s), then look at what it still holds.
    sampling = false;
    await sampler;
    let descriptorsAtEnd = await openDescriptors(system.node.pid);
    for (
      const settleBy = Date.now() + 10_000;
      descriptorsAtEnd > descriptorsAtStart && Date.now() < settleBy;
    ) {
      await sleep(200);
      descriptorsAtEnd = await openDescriptors(system.node.pid);
    }
    const memory = await memoryOf(system.node.pid);
    return {
      options,
      elapsedSeconds: Math.round((Date.now() - startMs) / 100) / 10,
      streams: {
        started: stats.started,
        ok: stats.ok,
        failedUnexpectedly: failures,
        cutByAgentKill: stats.cut,
        refusedWhileAgentDown: stats.refusedDown,
        lost: stats.lost,
        corrupted: stats.corrupted,
        okAfterAgentRestart: stats.okAfter,
      },
      bytes: {
        sent: counters.sent,
        received: counters.received,
        verified: stats.verified,
        lostOnCompleted: stats.lostBytes,
      },
      agent: { kills, reconnectMs },
      node: {
        peakRssBytes: memory.peakRssBytes,
        rssBytesAtEnd: memory.rssBytes,
        descriptorsAtStart,
        descriptorsPeak,
        descriptorsAtEnd,
      },
    };
  } finally {
    sampling = false;
    await system.stop();
  }
}

/** What the idle-connection measurement found. */
export interface IdleReport {
  readonly connections: number;
  readonly nodeRssBeforeBytes: number;
  readonly nodeRssAfterBytes: number;
  readonly nodeRssPerConnectionBytes: number;
  readonly agentRssPerConnectionBytes: number;
  readonly nodeDescriptorsBefore: number;
  readonly nodeDescriptorsWithConnections: number;
  readonly nodeDescriptorsAfterClose: number;
}

/** Opens `count` idle proxied TLS connections (each echoed one byte end to end) and measures the node. */
export async function measureIdle(
  count: number,
  log: (line: string) => void = () => {},
): Promise<IdleReport> {
  const system = await startSystem(`limits:\n  maxConnectionsPerIp: ${count + 100}\n`);
  const route: TrafficRoute = { port: system.ports.tlsPort, protocol: "tls", hostname: HOSTNAME };
  const conns: Deno.Conn[] = [];
  const echoOne = async (conn: Deno.Conn) => {
    await writeAll(conn, Uint8Array.of(7));
    const one = new Uint8Array(1);
    if ((await conn.read(one)) !== 1) throw new Error("no echo");
  };
  try {
    // Warm up the code paths, so the baseline is not mostly compilation.
    for (let i = 0; i < 20; i++) {
      const conn = await openTrafficStream(route, "ECHO");
      await echoOne(conn);
      conn.close();
    }
    await sleep(1_500);
    const before = await memoryOf(system.node.pid);
    const agentBefore = await memoryOf(system.agent.pid);
    const descriptorsBefore = await openDescriptors(system.node.pid);
    for (let batch = 0; batch < count; batch += 50) {
      const opened = await Promise.all(
        Array.from({ length: Math.min(50, count - batch) }, async () => {
          const conn = await openTrafficStream(route, "ECHO");
          await echoOne(conn);
          return conn;
        }),
      );
      conns.push(...opened);
    }
    log(`${conns.length} idle connections open`);
    await sleep(2_000);
    const after = await memoryOf(system.node.pid);
    const agentAfter = await memoryOf(system.agent.pid);
    const descriptorsWith = await openDescriptors(system.node.pid);
    for (const conn of conns.splice(0)) conn.close();
    let descriptorsAfter = await openDescriptors(system.node.pid);
    for (
      const settleBy = Date.now() + 10_000;
      descriptorsAfter > descriptorsBefore && Date.now() < settleBy;
    ) {
      await sleep(200);
      descriptorsAfter = await openDescriptors(system.node.pid);
    }
    return {
      connections: count,
      nodeRssBeforeBytes: before.rssBytes,
      nodeRssAfterBytes: after.rssBytes,
      nodeRssPerConnectionBytes: Math.round((after.rssBytes - before.rssBytes) / count),
      agentRssPerConnectionBytes: Math.round((agentAfter.rssBytes - agentBefore.rssBytes) / count),
      nodeDescriptorsBefore: descriptorsBefore,
      nodeDescriptorsWithConnections: descriptorsWith,
      nodeDescriptorsAfterClose: descriptorsAfter,
    };
  } finally {
    for (const conn of conns) conn.close();
    await system.stop();
  }
}

const MiB = 1024 * 1024;

function printSoak(report: SoakReport): void {
  const { streams, bytes, node, agent } = report;
  const lines = [
    `soak: ${report.elapsedSeconds} s, ${report.options.concurrency} concurrent streams, up to ${
      (report.options.maxStreamBytes / MiB).toFixed(1)
    } MiB each`,
    `streams: ${streams.started} started, ${streams.ok} ok, ${streams.cutByAgentKill} cut by the agent kill, ` +
    `${streams.refusedWhileAgentDown} refused while it was down, ${streams.okAfterAgentRestart} ok after it came back`,
    `unexpected failures: ${JSON.stringify(streams.failedUnexpectedly)}`,
    `data: ${(bytes.sent / MiB).toFixed(1)} MiB sent, ${(bytes.received / MiB).toFixed(1)} MiB received, ` +
    `${(bytes.verified / MiB).toFixed(1)} MiB verified by SHA-256, ${bytes.lostOnCompleted} bytes lost on ` +
    `${streams.lost} streams that ended cleanly, ${streams.corrupted} corrupted`,
    `agent: killed ${agent.kills} time(s), back after ${agent.reconnectMs ?? "-"} ms`,
    `node: peak RSS ${(node.peakRssBytes / MiB).toFixed(1)} MiB, ${
      (node.rssBytesAtEnd / MiB).toFixed(1)
    } MiB at ` +
    `the end; descriptors ${node.descriptorsAtStart} at start, ${node.descriptorsPeak} at peak, ` +
    `${node.descriptorsAtEnd} at the end`,
  ];
  console.error(lines.join("\n"));
}

const USAGE = `Usage: deno task soak [--duration S] [--concurrency N] [--max-bytes B] [--kill-agent-at F]
                      [--agent-down S] [--seed N] [--json]
       deno task soak --idle N [--json]     node memory per idle proxied connection`;

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        duration: { type: "string", default: "60" },
        concurrency: { type: "string", default: "200" },
        "max-bytes": { type: "string", default: String(4 * MiB) },
        "kill-agent-at": { type: "string", default: "0.4" },
        "agent-down": { type: "string", default: "1" },
        seed: { type: "string", default: String(Date.now() % 1_000_000) },
        idle: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    console.error(`soak: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}\n${USAGE}`);
    Deno.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const number = (name: string, text: string | undefined, min: number) => {
    const value = Number(text);
    if (!Number.isFinite(value) || value < min) {
      console.error(`soak: --${name} must be a number of at least ${min}, got "${text}"\n${USAGE}`);
      Deno.exit(2);
    }
    return value;
  };
  const log = (line: string) => console.error(`soak: ${line}`);
  try {
    if (values.idle !== undefined) {
      const report = await measureIdle(number("idle", values.idle, 1), log);
      if (values.json) console.log(JSON.stringify(report));
      else {
        console.error(
          `idle: ${report.connections} connections; node RSS ${
            (report.nodeRssBeforeBytes / MiB).toFixed(1)
          } → ${(report.nodeRssAfterBytes / MiB).toFixed(1)} MiB, ${
            (report.nodeRssPerConnectionBytes / 1024).toFixed(1)
          } KiB per connection (agent ${
            (report.agentRssPerConnectionBytes / 1024).toFixed(1)
          } KiB); descriptors ${report.nodeDescriptorsBefore} → ${report.nodeDescriptorsWithConnections} → ${report.nodeDescriptorsAfterClose}`,
        );
      }
      Deno.exit(0);
    }
    const options: SoakOptions = {
      durationSeconds: number("duration", values.duration, 1),
      concurrency: Math.floor(number("concurrency", values.concurrency, 1)),
      maxStreamBytes: Math.floor(number("max-bytes", values["max-bytes"], 1024)),
      killAgentAt: Number(values["kill-agent-at"]),
      agentDownSeconds: number("agent-down", values["agent-down"], 0),
      seed: Math.floor(number("seed", values.seed, 0)),
    };
    log(`seed ${options.seed}`);
    const report = await runSoak(options, log);
    if (values.json) console.log(JSON.stringify(report));
    printSoak(report);
    const unexpected = Object.values(report.streams.failedUnexpectedly).reduce((a, b) => a + b, 0);
    Deno.exit(report.streams.lost > 0 || report.streams.corrupted > 0 ? 1 : unexpected > 0 ? 4 : 0);
  } catch (error) {
    console.error(`soak: could not run: ${error instanceof Error ? error.stack : String(error)}`);
    Deno.exit(3);
  }
}
