/**
 * Reads a V8 `.cpuprofile` (what `deno run --cpu-prof` writes) and lists the functions with the most self
 * time. The profile is a tree of call-frame nodes with hit counts, plus the sequence of sampled node ids and
 * the time between samples; a function's self time is the time of the samples that landed in it.
 *
 * Usage: `deno run --allow-read scripts/bench/cpu_profile.ts FILE.cpuprofile [--top N]`.
 *
 * @module
 */

import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly hitCount?: number;
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples?: readonly number[];
  readonly timeDeltas?: readonly number[];
}

/** One function's share of the profile. */
export interface SelfTime {
  /** `name (file:line)`, the file shortened to its path inside the repository or its last parts. */
  readonly name: string;
  readonly selfMs: number;
  /** Share of the busy time (everything but `(idle)`), in percent. */
  readonly percent: number;
}

/** The profile's busy time and its functions by self time, highest first. */
function selfTimes(profile: CpuProfile): { busyMs: number; functions: SelfTime[] } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const microsById = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0 && deltas.length === samples.length) {
    // timeDeltas[i] is the time before sample i; it is the duration of the previous sample.
    for (let i = 0; i < samples.length; i++) {
      const duration = i + 1 < deltas.length ? deltas[i + 1] : 0;
      microsById.set(samples[i], (microsById.get(samples[i]) ?? 0) + Math.max(0, duration));
    }
  } else {
    const total = profile.endTime - profile.startTime;
    const hits = profile.nodes.reduce((sum, node) => sum + (node.hitCount ?? 0), 0);
    for (const node of profile.nodes) microsById.set(node.id, ((node.hitCount ?? 0) * total) / (hits || 1));
  }
  const byName = new Map<string, number>();
  let busyMicros = 0;
  for (const [id, micros] of microsById) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || frame.functionName === "(idle)") continue;
    busyMicros += micros;
    const name = describeFrame(frame);
    byName.set(name, (byName.get(name) ?? 0) + micros);
  }
  const functions = [...byName]
    .map(([name, micros]) => ({ name, selfMs: micros / 1000, percent: (100 * micros) / (busyMicros || 1) }))
    .sort((a, b) => b.selfMs - a.selfMs);
  return { busyMs: busyMicros / 1000, functions };
}

function describeFrame(frame: ProfileNode["callFrame"]): string {
  const name = frame.functionName || "(anonymous)";
  if (frame.url === "") return name;
  const inRepo = /\/(src|scripts|tests)\/.+$/.exec(frame.url)?.[0].slice(1);
  const file = inRepo ?? frame.url.split("/").slice(-2).join("/");
  return `${name} (${file}:${frame.lineNumber + 1})`;
}

/** Reads a `.cpuprofile` file and formats its top `count` functions as text lines. */
export async function topFunctions(path: string, count: number): Promise<string[]> {
  const profile = JSON.parse(await Deno.readTextFile(path)) as CpuProfile;
  const { busyMs, functions } = selfTimes(profile);
  return [
    `busy ${busyMs.toFixed(0)} ms`,
    ...functions.slice(0, count).map((f) =>
      `${f.percent.toFixed(1).padStart(5)}%  ${f.selfMs.toFixed(0).padStart(7)} ms  ${f.name}`
    ),
  ];
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { top: { type: "string", default: "25" } },
    allowPositionals: true,
  });
  if (positionals.length === 0) {
    console.error("usage: cpu_profile.ts FILE.cpuprofile [FILE...] [--top N]");
    Deno.exit(2);
  }
  for (const path of positionals) {
    console.log(`${path}:`);
    for (const line of await topFunctions(path, Number(values.top))) console.log(`  ${line}`);
  }
}
