/**
 * `deno task bench:memory`: memory of node and agent under interleaved A/B runs of variants (flags of
 * `deno run` such as `--v8-flags=...`, environment such as `MALLOC_ARENA_MAX`, or another checkout's code),
 * with the speed they cost measured beside it.
 *
 * Every run of a variant starts a fresh node and agent twice, from the same files and service as
 * `deno task bench`:
 *
 * - bulk: the agent's and node's RSS once the agent is reachable ("start"), their highest RSS during a
 *   one-stream upload, a one-stream download and 64 concurrent streams (sampled every 100 ms), and their RSS
 *   2 s and 10 s after the last transfer ended; beside them MB/s of each transfer and CPU s/GiB of each process.
 * - idle: the node's and agent's RSS growth per idle proxied connection with `--idle` connections held.
 * - connections: new TLS connections through node and agent (16 at a time, full handshake, then close) for
 *   `--seconds`: connections per second and the CPU of each process per 1,000 connections.
 *
 * Variants run in rotating order, `--rounds` times each; the summary holds medians and each one's ratio to the
 * first variant.
 *
 * ```sh
 * deno task bench:memory --variant base --variant 'arena2 MALLOC_ARENA_MAX=2' \
 *   --variant 'semi1 --v8-flags=--max-semi-space-size=1' --variant 'old @/tmp/nexus-old' [--rounds 3]
 *   [--bulk-mib 256] [--stream-kib 4096] [--idle 10000] [--seconds 5]
 *   [--only bulk|idle|connections]
 * ```
 *
 * A variant is a name, then words: `--...` is a flag of `deno run`, `KEY=VALUE` an environment variable of node
 * and agent, `@DIR` runs `DIR/src/main.ts` instead of this checkout's.
 *
 * @module
 */

import { BenchChild, PeakRss, sampleProcess } from "./bench/child.ts";
import { parseFlags } from "./bench/flags.ts";
import { EXIT_DEADLINE, PhaseError, Phases } from "./bench/phase.ts";
import { reapOnExit, registeredChildren, removeOnExit } from "./bench/reaper.ts";
import {
  connectionsJob,
  DEADLINES,
  denoRun,
  freePort,
  Generator,
  median,
  REPO,
  SERVER_NAME,
  type Setup,
  sleep,
  startNexus,
  startService,
  STREAMS,
  waitReachable,
  writeConfigs,
  writeFiles,
} from "./bench.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const HOLD_CONCURRENCY = 128;
const PARTS = ["bulk", "idle", "connections"] as const;
type Part = typeof PARTS[number];
const WARM_UP_SECONDS = 2;

/** One way of running node and agent. */
interface Variant {
  readonly name: string;
  readonly denoFlags: readonly string[];
  readonly env: Record<string, string>;
  /** The checkout whose `src/main.ts` runs. */
  readonly repo: string;
}

function parseVariant(text: string): Variant {
  const [name, ...words] = text.trim().split(/\s+/);
  const denoFlags: string[] = [];
  const env: Record<string, string> = {};
  let repo = REPO;
  for (const word of words) {
    if (word.startsWith("--")) denoFlags.push(word);
    else if (word.startsWith("@")) repo = word.slice(1);
    else if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(word)) {
      const at = word.indexOf("=");
      env[word.slice(0, at)] = word.slice(at + 1);
    } else throw new Error(`variant "${name}": "${word}" is neither --flag, KEY=VALUE nor @DIR`);
  }
  return { name, denoFlags, env, repo };
}

/** Figures of one run of one variant, by name. */
type RunFigures = Record<string, number>;

/** Starts node and agent of `variant` and waits until a client reaches the service through them. */
async function startVariant(
  phases: Phases,
  setup: Setup,
  generator: Generator,
  variant: Variant,
): Promise<{ node: BenchChild; agent: BenchChild }> {
  const target = { port: setup.relayPort, serverName: SERVER_NAME };
  return await phases.run(`start ${variant.name}`, DEADLINES.start, async (context) => {
    const started = await startNexus(setup, context, {
      ...variant,
      mainScript: `${variant.repo}/src/main.ts`,
    });
    await waitReachable(generator, target, "Nexus", context);
    return started;
  });
}

async function bulkRun(
  phases: Phases,
  setup: Setup,
  generator: Generator,
  variant: Variant,
  sizes: { bulkBytes: number; streamBytes: number },
): Promise<RunFigures> {
  const target = { port: setup.relayPort, serverName: SERVER_NAME };
  const { node, agent } = await startVariant(phases, setup, generator, variant);
  try {
    await sleep(500);
    const [nodeStart, agentStart] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    const figures: RunFigures = {
      node_start: nodeStart.rssBytes / MIB,
      agent_start: agentStart.rssBytes / MIB,
    };
    const sampler = new PeakRss([node.pid, agent.pid]);
    let nodeCpu = 0;
    let agentCpu = 0;
    let moved = 0;
    const transfer = async (key: string, job: Parameters<Generator["run"]>[0], bytes: number) => {
      const before = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
      const result = await phases.run(
        `${variant.name}, ${key}`,
        DEADLINES.transfer(bytes),
        (context) => generator.run(job, context),
        { stallSeconds: DEADLINES.stall },
      );
      const after = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
      nodeCpu += after[0].cpuSeconds - before[0].cpuSeconds;
      agentCpu += after[1].cpuSeconds - before[1].cpuSeconds;
      moved += Number(result.bytes);
      figures[key] = Number(result.bytes) / MIB / Number(result.seconds);
    };
    await transfer("up_mbs", { op: "upload", target, bytes: sizes.bulkBytes }, sizes.bulkBytes);
    await transfer("down_mbs", { op: "download", target, bytes: sizes.bulkBytes }, sizes.bulkBytes);
    await transfer(
      "streams_mbs",
      { op: "streams", target, streams: STREAMS, bytesEach: sizes.streamBytes },
      STREAMS * sizes.streamBytes,
    );
    const [nodePeak, agentPeak] = await sampler.stop();
    await sleep(2_000);
    const [node2, agent2] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    await sleep(8_000);
    const [node10, agent10] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    return {
      ...figures,
      node_peak: nodePeak / MIB,
      agent_peak: agentPeak / MIB,
      node_after2: node2.rssBytes / MIB,
      agent_after2: agent2.rssBytes / MIB,
      node_after10: node10.rssBytes / MIB,
      agent_after10: agent10.rssBytes / MIB,
      agent_peak_over_start: (agentPeak - agentStart.rssBytes) / MIB,
      agent_after10_over_start: (agent10.rssBytes - agentStart.rssBytes) / MIB,
      node_peak_over_start: (nodePeak - nodeStart.rssBytes) / MIB,
      node_after10_over_start: (node10.rssBytes - nodeStart.rssBytes) / MIB,
      cpu_node: nodeCpu / (moved / GIB),
      cpu_agent: agentCpu / (moved / GIB),
      cpu_total: (nodeCpu + agentCpu) / (moved / GIB),
    };
  } finally {
    await phases.run(`stop ${variant.name}`, DEADLINES.stop, () => Promise.all([node.stop(), agent.stop()]));
  }
}

async function idleRun(
  phases: Phases,
  setup: Setup,
  probe: Generator,
  newGenerator: () => Generator,
  variant: Variant,
  connections: number,
): Promise<RunFigures> {
  const target = { port: setup.relayPort, serverName: SERVER_NAME };
  const { node, agent } = await startVariant(phases, setup, probe, variant);
  const holder = newGenerator();
  try {
    await sleep(500);
    const [nodeBase, agentBase] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    await phases.run(
      `${variant.name}, hold ${connections}`,
      DEADLINES.hold(connections),
      (context) =>
        holder.run({ op: "hold", target, upTo: connections, concurrency: HOLD_CONCURRENCY }, context),
      {
        stallSeconds: DEADLINES.stall,
      },
    );
    await sleep(1_000);
    const [nodeHeld, agentHeld] = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    return {
      idle_node_base: nodeBase.rssBytes / MIB,
      idle_node_held: nodeHeld.rssBytes / MIB,
      idle_node_kib_per_conn: (nodeHeld.rssBytes - nodeBase.rssBytes) / connections / 1024,
      idle_agent_kib_per_conn: (agentHeld.rssBytes - agentBase.rssBytes) / connections / 1024,
    };
  } finally {
    await phases.run(`release ${variant.name}`, DEADLINES.stop, () => holder.child.stop());
    await phases.run(`stop ${variant.name}`, DEADLINES.stop, () => Promise.all([node.stop(), agent.stop()]));
  }
}

async function connectionsRun(
  phases: Phases,
  setup: Setup,
  generator: Generator,
  variant: Variant,
  seconds: number,
): Promise<RunFigures> {
  const target = { port: setup.relayPort, serverName: SERVER_NAME };
  const { node, agent } = await startVariant(phases, setup, generator, variant);
  try {
    const run = (what: string, forSeconds: number) =>
      phases.run(
        `${variant.name}, ${what}`,
        DEADLINES.timed(forSeconds),
        (context) => generator.run(connectionsJob(target, forSeconds), context),
      );
    // A first round unmeasured, so the code is compiled and the pools are warm, as after the bench's transfers.
    await run("connections warm-up", WARM_UP_SECONDS);
    const before = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    const result = await run("connections", seconds);
    const after = await Promise.all([sampleProcess(node.pid), sampleProcess(agent.pid)]);
    const connections = Number(result.connections);
    const perThousand = (i: number) => (after[i].cpuSeconds - before[i].cpuSeconds) * 1e6 / connections;
    return {
      conn_per_s: connections / Number(result.seconds),
      conn_cpu_ms_node: perThousand(0),
      conn_cpu_ms_agent: perThousand(1),
      conn_cpu_ms_total: perThousand(0) + perThousand(1),
    };
  } finally {
    await phases.run(`stop ${variant.name}`, DEADLINES.stop, () => Promise.all([node.stop(), agent.stop()]));
  }
}

const USAGE =
  `Usage: deno task bench:memory --variant 'NAME [--deno-flag] [KEY=VALUE] [@DIR]' ... [--rounds N]
                              [--bulk-mib N] [--stream-kib N] [--idle N] [--seconds N]
                              [--only bulk|idle|connections]`;

async function main(): Promise<number> {
  const values = parseFlags("bench:memory", USAGE, Deno.args, {
    variant: { type: "string", multiple: true },
    rounds: { type: "string", default: "3" },
    "bulk-mib": { type: "string", default: "256" },
    "stream-kib": { type: "string", default: "4096" },
    idle: { type: "string", default: "10000" },
    seconds: { type: "string", default: "5" },
    only: { type: "string" },
  });
  const variants = (values.variant ?? ["base"]).map(parseVariant);
  const rounds = Number(values.rounds);
  const sizes = {
    bulkBytes: Number(values["bulk-mib"]) * MIB,
    streamBytes: Number(values["stream-kib"]) * 1024,
  };
  const idleConnections = Number(values.idle);
  const seconds = Number(values.seconds);
  if (values.only !== undefined && !PARTS.includes(values.only as Part)) {
    console.error(`bench:memory: --only takes ${PARTS.join(", ")}, not "${values.only}"\n${USAGE}`);
    return 2;
  }
  // The connections part is asked for by name: the memory parts are what this bench is for.
  const parts: readonly Part[] = values.only === undefined ? ["bulk", "idle"] : [values.only as Part];
  reapOnExit("bench:memory");
  const dir = await Deno.makeTempDir({ prefix: "nexus-bench-memory-" });
  removeOnExit(dir);
  const phases = new Phases({ watched: registeredChildren, log: () => {} });
  const setup: Setup = {
    dir,
    servicePort: 0,
    relayPort: freePort(),
    hubPort: freePort(),
    haproxyPort: freePort(),
    haproxyMaxConnections: 1,
  };
  await writeFiles(dir);
  const service = startService(dir);
  const newGenerator = () =>
    new Generator(
      new BenchChild(
        "load generator",
        denoRun(["--allow-net", "--allow-read"], `${REPO}/scripts/bench/load.ts`, ["--ca", `${dir}/ca.pem`]),
        { logFile: `${dir}/load.log`, stdin: true },
      ),
    );
  const generator = newGenerator();
  try {
    const servicePort = await phases.run("start the service", DEADLINES.start, async () => {
      return (JSON.parse(await service.readLine()) as { port: number }).port;
    });
    Object.assign(setup, { servicePort });
    await writeConfigs(setup);
    const results = new Map<string, RunFigures[]>(variants.map((v) => [v.name, []]));
    for (let round = 0; round < rounds; round++) {
      const order = variants.map((_, i) => variants[(i + round) % variants.length]);
      for (const variant of order) {
        const figures: RunFigures = {};
        if (parts.includes("bulk")) {
          Object.assign(figures, await bulkRun(phases, setup, generator, variant, sizes));
        }
        if (parts.includes("idle")) {
          Object.assign(
            figures,
            await idleRun(phases, setup, generator, newGenerator, variant, idleConnections),
          );
        }
        if (parts.includes("connections")) {
          Object.assign(figures, await connectionsRun(phases, setup, generator, variant, seconds));
        }
        results.get(variant.name)!.push(figures);
        console.log(
          `round ${round + 1} ${variant.name}: ${
            Object.entries(figures).map(([k, v]) => `${k}=${v.toFixed(k.startsWith("cpu") ? 2 : 1)}`).join(
              " ",
            )
          }`,
        );
      }
    }
    const keys = Object.keys(results.get(variants[0].name)![0]);
    const medians = new Map(
      variants.map((
        v,
      ) => [
        v.name,
        Object.fromEntries(keys.map((k) => [k, median(results.get(v.name)!.map((f) => f[k]))!])),
      ]),
    );
    const first = medians.get(variants[0].name)!;
    console.log(`\nmedians of ${rounds} round(s); ratio to ${variants[0].name}`);
    console.log(["figure", ...variants.map((v) => v.name)].join("\t"));
    for (const key of keys) {
      const cells = variants.map((v) => {
        const value = medians.get(v.name)![key];
        const ratio = v === variants[0] || first[key] === 0 ? "" : ` (${(value / first[key]).toFixed(2)}×)`;
        return `${value.toFixed(key.startsWith("cpu") ? 2 : 1)}${ratio}`;
      });
      console.log([key, ...cells].join("\t"));
    }
    return 0;
  } finally {
    await generator.child.stop();
    await service.stop();
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`bench:memory: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(error instanceof PhaseError && error.kind === "deadline" ? EXIT_DEADLINE : 1);
  }
}
