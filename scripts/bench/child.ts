/**
 * A child process of the benchmark, started through `sh` so that its open-file limit can be raised first
 * (10,000 idle connections need more than most default limits), and measured from `/proc/<pid>`: CPU time and
 * resident memory. `exec` keeps the pid the program's own, so `/proc/<pid>` is the program, not the shell.
 *
 * @module
 */

import { killOnExit } from "./reaper.ts";

/** The open-file limit asked for; where it cannot be had, the hard limit is used. */
export const WANTED_OPEN_FILES = 65_536;

const RAISE_LIMIT_AND_EXEC = `ulimit -n ${WANTED_OPEN_FILES} 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$@" 2>>"$BENCH_CHILD_LOG"`;

/** CPU time and memory of a process at one moment. */
export interface ProcessSample {
  /** User plus system CPU time, all threads, in seconds. */
  readonly cpuSeconds: number;
  /** Resident set size in bytes. */
  readonly rssBytes: number;
}

let clockTicks: number | undefined;

/** `CLK_TCK`, the unit of the CPU times in `/proc/<pid>/stat`. */
async function clockTicksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    const output = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output()
      .catch(() => null);
    const value = output === null ? NaN : Number(new TextDecoder().decode(output.stdout).trim());
    clockTicks = Number.isFinite(value) && value > 0 ? value : 100;
  }
  return clockTicks;
}

/**
 * Reads `/proc/<pid>/...` files through `cat`: Deno lets a program read `/proc` of other processes only with
 * every permission, and the benchmark asks for no more than it uses.
 */
async function readProc(pid: number, files: readonly string[]): Promise<string> {
  const output = await new Deno.Command("cat", {
    args: files.map((file) => `/proc/${pid}/${file}`),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`cannot read /proc/${pid}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return new TextDecoder().decode(output.stdout);
}

/** Reads utime + stime (fields 14 and 15 of `/proc/<pid>/stat`) and VmRSS of `/proc/<pid>/status`. */
export async function sampleProcess(pid: number): Promise<ProcessSample> {
  const ticks = await clockTicksPerSecond();
  const text = await readProc(pid, ["stat", "status"]);
  const stat = text.slice(0, text.indexOf("\n"));
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / ticks;
  const rssKib = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(text)?.[1] ?? NaN);
  return { cpuSeconds, rssBytes: rssKib * 1024 };
}

/** The highest RSS of each of some processes while it runs, sampled every 100 ms from `/proc`. */
export class PeakRss {
  readonly #peaks: number[];
  readonly #done: Promise<void>;
  #running = true;

  constructor(pids: readonly number[], intervalMs = 100) {
    this.#peaks = pids.map(() => 0);
    this.#done = (async () => {
      while (this.#running) {
        const samples = await Promise.all(pids.map((pid) => sampleProcess(pid)));
        samples.forEach((sample, i) => this.#peaks[i] = Math.max(this.#peaks[i], sample.rssBytes));
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    })();
  }

  /** Stops sampling; the peak of each process, in bytes, in the order given. */
  async stop(): Promise<number[]> {
    this.#running = false;
    await this.#done;
    return this.#peaks;
  }
}

/** The soft and hard open-file limits of a process, from `/proc/<pid>/limits`. */
export async function openFileLimits(pid: number): Promise<{ soft: number; hard: number }> {
  const limits = await readProc(pid, ["limits"]);
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(limits);
  const value = (text: string | undefined) => text === "unlimited" ? Infinity : Number(text ?? NaN);
  return { soft: value(match?.[1]), hard: value(match?.[2]) };
}

/** How to start a child. */
export interface ChildOptions {
  /** Where the child's stderr goes (appended). */
  readonly logFile: string;
  /** Whether the benchmark writes lines to the child's stdin. */
  readonly stdin?: boolean;
  readonly env?: Record<string, string>;
}

/** A running child; its stdout is read line by line. It is killed when the program ends, however it ends. */
export class BenchChild {
  readonly name: string;
  readonly pid: number;
  readonly #process: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #forget: () => void;
  #exitStatus: Deno.CommandStatus | null = null;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(name: string, argv: readonly string[], options: ChildOptions) {
    this.name = name;
    this.#process = new Deno.Command("sh", {
      args: ["-c", RAISE_LIMIT_AND_EXEC, "sh", ...argv],
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "null",
      env: { ...options.env, BENCH_CHILD_LOG: options.logFile },
    }).spawn();
    this.pid = this.#process.pid;
    this.#lines = this.#process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())
      .getReader();
    this.#writer = options.stdin ? this.#process.stdin.getWriter() : null;
    this.#forget = killOnExit(this);
    this.status = this.#process.status.then((status) => {
      this.#exitStatus = status;
      return status;
    });
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exitStatus !== null;
  }

  /** The exit status once the process has exited, else null. */
  get exitStatus(): Deno.CommandStatus | null {
    return this.#exitStatus;
  }

  /** The next line the child prints; fails when it exits first. Deadlines are the caller's phase's. */
  async readLine(): Promise<string> {
    const { value, done } = await this.#lines.read();
    if (done) throw new Error(`${this.name} exited (see its log)`);
    return value;
  }

  /** Sends `signal` unless the process has exited. */
  kill(signal: Deno.Signal): void {
    try {
      this.#process.kill(signal);
    } catch {
      // Already exited.
    }
  }

  /** Writes one line to the child's stdin. */
  async writeLine(line: string): Promise<void> {
    if (this.#writer === null) throw new Error(`${this.name} was started without stdin`);
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  /** Sends SIGTERM and waits up to `graceMs` for the exit, then SIGKILL. Idempotent. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.#exitStatus === null) {
      this.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.kill("SIGKILL");
          resolve();
        }, graceMs);
      });
      await Promise.race([this.status, killed]);
      clearTimeout(timer);
    }
    await this.status;
    this.#forget();
    await this.#writer?.close().catch(() => {});
    await this.#lines.cancel().catch(() => {});
  }
}

function splitLines(): TransformStream<string, string> {
  let pending = "";
  return new TransformStream({
    transform(chunk, controller) {
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        controller.enqueue(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    },
    flush(controller) {
      if (pending.length > 0) controller.enqueue(pending);
    },
  });
}
