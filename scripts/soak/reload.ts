/**
 * The `reload` scenario: many client streams moving data both ways through node and agent (child processes)
 * for the whole run, while the node and the agent are reloaded again and again, by SIGHUP and by
 * `POST /reload` in turn. Each node reload swaps the hub's certificate and changes a limit; each agent reload
 * changes its weight, so the agent re-registers on a new session at every one while the old sessions carry
 * their streams on. Every byte is checked by SHA-256 at the end.
 *
 * Beside them a small echo loop (64 bytes out, 64 back, one at a time, on a stream of its own) measures
 * latency in windows that alternate: quiet, then one node and one agent reload, then quiet again, so the two
 * kinds of window share the machine's state as evenly as they can. New connections are made all along too
 * (one echo each), to show that new streams find the re-registered sessions.
 *
 * The checks: no stream lost or corrupted a byte, none failed, every reload succeeded, no new connection
 * failed (exit code 1).
 *
 * @module
 */

import { adminPortOf, type NexusProcess } from "../../tests/helpers/processes.ts";
import { issueCertificate } from "../dev_certs.ts";
import { testCertificates } from "../../tests/helpers/certs.ts";
import { openTrafficStream, PatternStream, StreamDigest } from "../../tests/helpers/traffic.ts";
import { writeAll } from "../../tests/helpers/services.ts";
import { quantile } from "../bench/load.ts";
import { ControlClient, count } from "./clients.ts";
import type { ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { START_SECONDS } from "./streams.ts";
import { startSystem } from "./system.ts";

/** Streams open through the run unless `--connections` says otherwise. */
export const DEFAULT_RELOAD_STREAMS = 64;
/** Reload windows (each one node and one agent reload), as many quiet windows between them. */
const RELOAD_WINDOWS = 10;
/** How long each window lasts, unless `--duration` (the whole run) says otherwise. */
const DEFAULT_WINDOW_SECONDS = 2;
/** Each stream writes a piece this large, then waits `PIECE_PAUSE_MS`: about 160 KiB/s each way. */
const PIECE_BYTES = 8 * 1024;
const PIECE_PAUSE_MS = 50;
const ECHO_BYTES = 64;
/** New connections, one echo each, all through the run. */
const CONTROL_PACE = { intervalMs: 50, maxInFlight: 2 };

/** One long stream: pattern bytes out in paced pieces, the echo hashed as it comes back. */
class LongStream {
  readonly sent = new StreamDigest();
  readonly received = new StreamDigest();
  readonly done: Promise<void>;
  failure: string | null = null;
  #stopping = false;

  constructor(conn: Deno.Conn, seed: number) {
    const pattern = new PatternStream(seed);
    const writer = async () => {
      while (!this.#stopping) {
        const piece = pattern.next(PIECE_BYTES);
        this.sent.update(piece);
        await writeAll(conn, piece);
        await new Promise((resolve) => setTimeout(resolve, PIECE_PAUSE_MS));
      }
      await conn.closeWrite();
    };
    const reader = async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return;
        this.received.update(buffer.subarray(0, n));
      }
    };
    this.done = Promise.all([writer(), reader()]).then(
      () => {},
      (error) => void (this.failure = error instanceof Error ? error.message : String(error)),
    ).finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    });
  }

  stop(): void {
    this.#stopping = true;
  }
}

/** Round trips of `ECHO_BYTES` on one stream, one at a time, each timed and tagged with the window it fell in. */
class EchoLoop {
  readonly samples = { quiet: [] as number[], reloading: [] as number[] };
  window: "quiet" | "reloading" = "quiet";
  failure: string | null = null;
  readonly done: Promise<void>;
  #stopping = false;

  constructor(conn: Deno.Conn) {
    this.done = (async () => {
      const request = new Uint8Array(ECHO_BYTES);
      const answer = new Uint8Array(ECHO_BYTES);
      try {
        for (let i = 0; !this.#stopping; i++) {
          request.fill(i & 0xff);
          const window = this.window;
          const started = performance.now();
          await writeAll(conn, request);
          for (let got = 0; got < ECHO_BYTES;) {
            const n = await conn.read(answer.subarray(got));
            if (n === null) throw new Error("the echo stream ended");
            got += n;
          }
          if (!answer.every((byte) => byte === (i & 0xff))) throw new Error("other bytes echoed");
          // A round trip that straddled a change of window counts for neither.
          if (window === this.window) this.samples[window].push(performance.now() - started);
        }
        await conn.closeWrite();
      } catch (error) {
        this.failure = error instanceof Error ? error.message : String(error);
      } finally {
        conn.close();
      }
    })();
  }

  stop(): void {
    this.#stopping = true;
  }
}

/** What the scenario found. */
export interface ReloadScenarioReport {
  readonly streams: number;
  /** Streams open at the fewest, sampled while the reloads ran. */
  readonly streamsOpenAtLeast: number;
  readonly streamFailures: Record<string, number>;
  readonly bytesSent: number;
  readonly bytesVerified: number;
  readonly corrupted: number;
  readonly reloads: {
    readonly node: number;
    readonly agent: number;
    readonly failed: number;
    /** From the request (signal or POST) to the `reload done` line, in ms. */
    readonly nodeMs: { readonly p50: number; readonly max: number };
    readonly agentMs: { readonly p50: number; readonly max: number };
  };
  readonly echo: {
    readonly quiet: { readonly samples: number; readonly p50Ms: number; readonly p99Ms: number };
    readonly reloading: { readonly samples: number; readonly p50Ms: number; readonly p99Ms: number };
  };
  readonly newConnections: { readonly attempts: number; readonly succeeded: number };
}

/** Runs the scenario. */
export async function reloadUnderLoad({ sizes, phases, log }: ScenarioContext): Promise<ScenarioOutcome> {
  const streamCount = sizes.connections ?? DEFAULT_RELOAD_STREAMS;
  const windowSeconds = sizes.durationSeconds === undefined
    ? DEFAULT_WINDOW_SECONDS
    : sizes.durationSeconds / (2 * RELOAD_WINDOWS + 1);
  const system = await phases.run("reload: start node and agent", START_SECONDS, () =>
    startSystem({
      nodeExtra: `admin:\n  listenAddress: "127.0.0.1:0"`,
      agentExtra: `limits:\n  maxStreams: 100000\nadmin:\n  listenAddress: "127.0.0.1:0"`,
    }));
  const streams: LongStream[] = [];
  const control = new ControlClient();
  const stopControl = new AbortController();
  let controlDone: Promise<void> = Promise.resolve();
  let echo: EchoLoop | null = null;
  try {
    const certs = await testCertificates();
    const second = await issueCertificate(certs.ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    await system.dir.write("hub2.crt", second.certPem);
    await system.dir.write("hub2.key", second.keyPem);
    const nodeAdmin = await adminPortOf(system.node);
    const agentAdmin = await adminPortOf(system.agent);
    const nodeText = await Deno.readTextFile(`${system.dir.path}/node.yaml`);
    const agentText = await Deno.readTextFile(`${system.dir.path}/agent.yaml`);

    await phases.run(
      `reload: open ${count(streamCount)} streams`,
      30 + streamCount * 0.1,
      async (context) => {
        for (let i = 0; i < streamCount; i++) {
          const route = i % 2 === 0 ? system.tlsRoute : system.httpRoute;
          streams.push(new LongStream(await openTrafficStream(route, "ECHO"), i + 1));
          context.progress = `${i + 1} of ${streamCount} open`;
        }
      },
    );
    echo = new EchoLoop(await openTrafficStream(system.tlsRoute, "ECHO"));
    controlDone = control.run(system.tlsRoute, stopControl.signal, CONTROL_PACE);

    const nodeMs: number[] = [];
    const agentMs: number[] = [];
    let failedReloads = 0;
    let fewestOpen = streamCount;
    const openNow = () => streams.filter((stream) => stream.failure === null).length;
    const reload = async (process: NexusProcess, adminPort: number, byPost: boolean): Promise<number> => {
      const from = process.lines.length;
      const started = performance.now();
      if (byPost) {
        const response = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: "POST" });
        if (response.status !== 200) failedReloads += 1;
        await response.body?.cancel();
      } else process.kill("SIGHUP");
      const line = await process.waitForLine(/reload done|reload refused/, { from, timeoutMs: 20_000 });
      if (!/reload done trigger/.test(line) || /problems=[1-9]/.test(line)) {
        if (!byPost) failedReloads += 1;
        log(`reload: ${line}`);
      }
      return performance.now() - started;
    };
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

    await phases.run(
      `reload: ${RELOAD_WINDOWS} node and ${RELOAD_WINDOWS} agent reloads under load`,
      60 + RELOAD_WINDOWS * (2 * windowSeconds + 20),
      async (context) => {
        for (let i = 0; i < RELOAD_WINDOWS; i++) {
          echo!.window = "quiet";
          await sleep(windowSeconds * 1000);
          fewestOpen = Math.min(fewestOpen, openNow());
          echo!.window = "reloading";
          const windowStart = performance.now();
          const even = i % 2 === 0;
          await Deno.writeTextFile(
            `${system.dir.path}/node.yaml`,
            (even ? nodeText.replaceAll('"hub.', '"hub2.') : nodeText) +
              `limits:\n  maxConnectionsPerIp: ${1_000 + i}\n`,
          );
          nodeMs.push(await reload(system.node, nodeAdmin, !even));
          await Deno.writeTextFile(`${system.dir.path}/agent.yaml`, `${agentText}\nweight: ${(i % 5) + 2}\n`);
          agentMs.push(await reload(system.agent, agentAdmin, even));
          const left = windowSeconds * 1000 - (performance.now() - windowStart);
          if (left > 0) await sleep(left);
          fewestOpen = Math.min(fewestOpen, openNow());
          context.progress = `${i + 1} of ${RELOAD_WINDOWS} windows`;
        }
        echo!.window = "quiet";
        await sleep(windowSeconds * 1000);
      },
    );

    for (const stream of streams) stream.stop();
    echo.stop();
    stopControl.abort();
    await phases.run("reload: streams to their end", 60, async () => {
      await Promise.all([...streams.map((stream) => stream.done), echo!.done, controlDone]);
    });

    const streamFailures: Record<string, number> = {};
    let bytesSent = 0;
    let bytesVerified = 0;
    let corrupted = 0;
    for (const stream of streams) {
      bytesSent += stream.sent.bytes;
      if (stream.failure !== null) {
        streamFailures[stream.failure] = (streamFailures[stream.failure] ?? 0) + 1;
        continue;
      }
      const sent = stream.sent.hex();
      if (stream.received.bytes === stream.sent.bytes && stream.received.hex() === sent) {
        bytesVerified += stream.sent.bytes;
      } else corrupted += 1;
    }
    const stat = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      return { samples: sorted.length, p50Ms: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) };
    };
    const spread = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      return { p50: quantile(sorted, 0.5), max: sorted.at(-1) ?? NaN };
    };
    const report: ReloadScenarioReport = {
      streams: streamCount,
      streamsOpenAtLeast: fewestOpen,
      streamFailures,
      bytesSent,
      bytesVerified,
      corrupted,
      reloads: {
        node: nodeMs.length,
        agent: agentMs.length,
        failed: failedReloads,
        nodeMs: spread(nodeMs),
        agentMs: spread(agentMs),
      },
      echo: { quiet: stat(echo.samples.quiet), reloading: stat(echo.samples.reloading) },
      newConnections: { attempts: control.attempts, succeeded: control.succeeded },
    };
    const failures: string[] = [];
    const failed = Object.values(streamFailures).reduce((a, b) => a + b, 0);
    if (failed > 0) failures.push(`${failed} streams failed: ${JSON.stringify(streamFailures)}`);
    if (corrupted > 0) failures.push(`${corrupted} streams lost or changed bytes`);
    if (echo.failure !== null) failures.push(`the echo loop failed: ${echo.failure}`);
    if (failedReloads > 0) failures.push(`${failedReloads} reloads failed`);
    if (control.succeeded < control.attempts) failures.push(`new connections: ${control.describe()}`);
    const ms = (n: number) => n.toFixed(2);
    return {
      scenario: "reload",
      figures: [
        `${
          count(streamCount)
        } streams open through ${nodeMs.length} node and ${agentMs.length} agent reloads ` +
        `(at least ${fewestOpen} open at every check), ${failed} failed`,
        `${(bytesSent / 1024 / 1024).toFixed(1)} MiB sent each way, ${
          (bytesVerified / 1024 / 1024).toFixed(1)
        } MiB verified by SHA-256, ${corrupted} streams with bytes lost or changed`,
        `reload time: node p50 ${ms(report.reloads.nodeMs.p50)} ms (max ${ms(report.reloads.nodeMs.max)}), ` +
        `agent p50 ${ms(report.reloads.agentMs.p50)} ms (max ${
          ms(report.reloads.agentMs.max)
        }); ${failedReloads} failed`,
        `echo loop (${ECHO_BYTES} B): quiet p50 ${ms(report.echo.quiet.p50Ms)} ms p99 ${
          ms(report.echo.quiet.p99Ms)
        } ms (${report.echo.quiet.samples}); reloading p50 ${ms(report.echo.reloading.p50Ms)} ms p99 ${
          ms(report.echo.reloading.p99Ms)
        } ms (${report.echo.reloading.samples})`,
        `new connections during the run: ${control.describe()}`,
      ],
      failures,
      report,
    };
  } finally {
    for (const stream of streams) stream.stop();
    echo?.stop();
    stopControl.abort();
    await system.stop();
  }
}
