/**
 * The `streams` scenario of the soak: many concurrent client streams of random sizes and pacing through the
 * node, for a while, every byte checked by SHA-256. Midway the agent is killed (SIGKILL) and started again.
 * And `--idle N`: node memory per idle proxied connection.
 *
 * Streams: downloads (`SEND`), uploads (`SINK`) and half-closing echoes (`ECHO`), over the TLS port (SNI) and
 * the HTTP port (`Host`), read or written fast, slowly, or with a stall of up to 2.5 s in the middle. Streams
 * open while the agent is down are cut or refused: those are expected failures, counted apart. Any other
 * failure is unexpected. A stream that ends cleanly short of its bytes, or with other bytes, lost data.
 *
 * The report: streams ok and failed by reason, bytes sent, received and verified, bytes lost on streams that
 * ended cleanly (must be 0), the node's peak RSS (VmHWM) and its open descriptors. The checks: no stream lost
 * or corrupted data (exit code 1), none failed unexpectedly (exit code 4).
 *
 * @module
 */

import type { PhaseContext, Phases } from "../bench/phase.ts";
import { memoryOf, openDescriptors } from "../../tests/helpers/processes.ts";
import {
  openTrafficStream,
  patternSha256,
  PatternStream,
  readSinkAnswer,
  StreamDigest,
  type TrafficRoute,
} from "../../tests/helpers/traffic.ts";
import { writeAll } from "../../tests/helpers/services.ts";
import { count } from "./clients.ts";
import type { ScenarioOutcome } from "./scenario.ts";
import { settleDescriptors, startSystem, type System } from "./system.ts";

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

function describe(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.split("\n")[0].replace(/\d+/g, "N").slice(0, 120);
}

/** Runs one stream and says how it ended, with the bytes it moved. */
export async function runStream(
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

/** Deadline of starting the system, in seconds. */
export const START_SECONDS = 60;

/**
 * Runs the streams soak and reports; never throws for stream failures (they are the findings), only when a
 * phase fails or misses its deadline.
 */
async function runSoak(
  options: SoakOptions,
  phases: Phases,
  log: (line: string) => void = () => {},
): Promise<SoakReport> {
  // Every client comes from 127.0.0.1: one source, so its share of the handshake pool must be all of it.
  const system = await phases.run(
    "streams: start node and agent",
    START_SECONDS,
    () => startSystem({ nodeExtra: "limits:\n  maxHandshakesPerIp: 1024\n" }),
  );
  try {
    // Every stream ends by its own deadline after the duration; the phase allows that and a little more.
    const deadlineSeconds = options.durationSeconds + STREAM_DEADLINE_MS / 1000 + 30;
    return await phases.run(
      `streams: ${options.durationSeconds} s of ${options.concurrency} concurrent streams`,
      deadlineSeconds,
      (context) => soakStreams(system, options, context, log),
    );
  } finally {
    await system.stop();
  }
}

async function soakStreams(
  system: System,
  options: SoakOptions,
  context: PhaseContext,
  log: (line: string) => void,
): Promise<SoakReport> {
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
  const running = () => Date.now() < endMs && !context.signal.aborted;
  const descriptorsAtStart = await openDescriptors(system.node.pid);
  let descriptorsPeak = descriptorsAtStart;
  let sampling = true;
  const sampler = (async () => {
    while (sampling && !context.signal.aborted) {
      descriptorsPeak = Math.max(descriptorsPeak, await openDescriptors(system.node.pid).catch(() => 0));
      context.progress = `${count(stats.started)} streams started, ${count(stats.ok)} ok, ${
        ((Date.now() - startMs) / 1000).toFixed(0)
      } s of ${options.durationSeconds} s`;
      await sleep(1_000);
    }
  })();

  const killer = (async () => {
    if (options.killAgentAt < 0) return;
    await sleep(options.durationSeconds * 1000 * options.killAgentAt);
    const from = Date.now();
    downWindows.push({ from, to: Infinity });
    await system.killAgent();
    kills += 1;
    log(`agent killed at ${((from - startMs) / 1000).toFixed(1)} s`);
    await sleep(options.agentDownSeconds * 1000);
    await system.restartAgent();
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
    while (running()) {
      const kind = (["download", "upload", "echo"] as const)[Math.floor(own() * 3)];
      const pacing = (["fast", "fast", "slow", "stall"] as const)[Math.floor(own() * 4)];
      const protocol = own() < 0.5 ? "tls" : "http";
      const route = protocol === "tls" ? system.tlsRoute : system.httpRoute;
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
  } finally {
    sampling = false;
    await sampler;
  }
  // Let the node settle (sockets closing gracefully linger up to 2 s), then look at what it still holds.
  context.progress = "waiting for the node's descriptors to settle";
  const { descriptors: descriptorsAtEnd } = await settleDescriptors(
    system.node.pid,
    descriptorsAtStart,
    10_000,
    context.signal,
  );
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
}

const MiB = 1024 * 1024;

/** The streams soak as a scenario: its report, its figures and its checks. */
export async function streamsScenario(
  options: SoakOptions,
  phases: Phases,
  log: (line: string) => void,
): Promise<ScenarioOutcome> {
  const report = await runSoak(options, phases, log);
  const { streams, bytes, node, agent } = report;
  const figures = [
    `${report.elapsedSeconds} s, ${report.options.concurrency} concurrent streams, up to ${
      (report.options.maxStreamBytes / MiB).toFixed(1)
    } MiB each, seed ${report.options.seed}`,
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
  const unexpected = Object.values(streams.failedUnexpectedly).reduce((a, b) => a + b, 0);
  const failures: string[] = [];
  if (streams.lost > 0) {
    failures.push(
      `${streams.lost} streams ended cleanly short of their bytes (${bytes.lostOnCompleted} bytes lost)`,
    );
  }
  if (streams.corrupted > 0) failures.push(`${streams.corrupted} streams delivered other bytes`);
  if (unexpected > 0) {
    failures.push(`${unexpected} streams failed for reasons the agent kill does not explain`);
  }
  return {
    scenario: "streams",
    figures,
    failures,
    failureExitCode: streams.lost > 0 || streams.corrupted > 0 ? 1 : 4,
    report,
  };
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

/** An echo stream through the node that has answered one byte, proving the whole path is up. */
export async function openEcho(route: TrafficRoute): Promise<Deno.Conn> {
  const conn = await openTrafficStream(route, "ECHO");
  try {
    await writeAll(conn, Uint8Array.of(7));
    const one = new Uint8Array(1);
    if ((await conn.read(one)) !== 1) {
      throw new Error("the echo stream ended before its first byte came back");
    }
    return conn;
  } catch (error) {
    conn.close();
    throw error;
  }
}

/**
 * Opens echo streams through `route` until `conns` holds `upTo`, `concurrency` at a time, saying how far it got
 * in `context.progress`; stops early when the phase's deadline passes.
 */
export async function holdEchoStreams(
  route: TrafficRoute,
  conns: Deno.Conn[],
  upTo: number,
  context: PhaseContext,
  concurrency = 50,
): Promise<void> {
  let next = conns.length;
  const say = () => (context.progress = `${count(conns.length)} of ${count(upTo)} connections established`);
  say();
  const worker = async () => {
    while (next < upTo && !context.signal.aborted) {
      next += 1;
      const conn = await openEcho(route);
      if (context.signal.aborted) conn.close();
      else conns.push(conn);
      say();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(0, upTo - next)) }, worker));
}

/**
 * Deadline of holding `connections` idle connections, in seconds: a fixed part and 20 ms per connection (the
 * node takes about 3).
 */
export function holdSeconds(connections: number): number {
  return 15 + connections * 0.02;
}

/** A hold or transfer whose count stands still this long ends before its deadline. */
export const STALL_SECONDS = 30;

/** Opens `connections` idle proxied TLS connections (each echoed one byte end to end) and measures the node. */
export async function measureIdle(
  connections: number,
  phases: Phases,
  log: (line: string) => void = () => {},
): Promise<IdleReport> {
  const system = await phases.run(
    "idle: start node and agent",
    START_SECONDS,
    () =>
      startSystem({
        nodeExtra: `limits:\n  maxConnectionsPerIp: ${connections + 100}\n  maxHandshakesPerIp: 1024\n`,
      }),
  );
  const conns: Deno.Conn[] = [];
  try {
    // Warm up the code paths, so the baseline is not mostly compilation.
    await phases.run("idle: warm up", 30, async () => {
      for (let i = 0; i < 20; i++) (await openEcho(system.tlsRoute)).close();
      await sleep(1_500);
    });
    const before = await memoryOf(system.node.pid);
    const agentBefore = await memoryOf(system.agent.pid);
    const descriptorsBefore = await openDescriptors(system.node.pid);
    await phases.run(
      `idle: hold ${connections} connections`,
      holdSeconds(connections),
      (context) => holdEchoStreams(system.tlsRoute, conns, connections, context),
      { stallSeconds: STALL_SECONDS },
    );
    log(`${conns.length} idle connections open`);
    await sleep(2_000);
    const after = await memoryOf(system.node.pid);
    const agentAfter = await memoryOf(system.agent.pid);
    const descriptorsWith = await openDescriptors(system.node.pid);
    for (const conn of conns.splice(0)) conn.close();
    const settled = await settleDescriptors(system.node.pid, descriptorsBefore, 10_000);
    return {
      connections,
      nodeRssBeforeBytes: before.rssBytes,
      nodeRssAfterBytes: after.rssBytes,
      nodeRssPerConnectionBytes: Math.round((after.rssBytes - before.rssBytes) / connections),
      agentRssPerConnectionBytes: Math.round((agentAfter.rssBytes - agentBefore.rssBytes) / connections),
      nodeDescriptorsBefore: descriptorsBefore,
      nodeDescriptorsWithConnections: descriptorsWith,
      nodeDescriptorsAfterClose: settled.descriptors,
    };
  } finally {
    for (const conn of conns) conn.close();
    await system.stop();
  }
}
