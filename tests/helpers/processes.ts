/**
 * The program as a child process (`deno run src/main.ts serve|agent --config FILE`), with real YAML configs,
 * certificate and secret files in a temporary directory: for tests of signals, process death and restarts,
 * and for the soak script.
 *
 * @module
 */

import { testCertificates } from "./certs.ts";
import { TEST_JWT_SECRET } from "./cluster.ts";

/** The repository root, where `deno.json` and `src/main.ts` are. */
export const REPO_ROOT: string = new URL("../../", import.meta.url).pathname;

/** A temporary directory with the shared test CA, hub certificate and backends secret written out. */
export interface ConfigDir {
  readonly path: string;
  /** Writes `name` in the directory; returns its path. */
  write(name: string, text: string): Promise<string>;
  remove(): Promise<void>;
}

/** Creates a config directory holding `ca.pem`, `hub.crt`, `hub.key` and `backends.secret`. */
export async function makeConfigDir(): Promise<ConfigDir> {
  const certs = await testCertificates();
  const path = await Deno.makeTempDir({ prefix: "nexus-test-" });
  const write = async (name: string, text: string) => {
    const file = `${path}/${name}`;
    await Deno.writeTextFile(file, text);
    return file;
  };
  await write("ca.pem", certs.ca.certPem);
  await write("hub.crt", certs.hub.certPem);
  await write("hub.key", certs.hub.keyPem);
  await write("backends.secret", new TextDecoder().decode(TEST_JWT_SECRET));
  return { path, write, remove: () => Deno.remove(path, { recursive: true }) };
}

/** A node config: hub and relay on 127.0.0.1, free ports unless given; `extra` is appended verbatim. */
export function nodeYaml(
  options: { hubPort?: number; drainTimeoutSeconds?: number; extra?: string } = {},
): string {
  return [
    `backendListenAddress: "127.0.0.1:${options.hubPort ?? 0}"`,
    `hubTlsCertFile: "hub.crt"`,
    `hubTlsKeyFile: "hub.key"`,
    `relayBindAddress: "127.0.0.1"`,
    `relayPorts:`,
    `  - { port: 0, protocol: tls }`,
    `  - { port: 0, protocol: http }`,
    `backendsJWTSecretFile: "backends.secret"`,
    `drainTimeoutSeconds: ${options.drainTimeoutSeconds ?? 5}`,
    `idleTimeoutSeconds: 0`,
    `logLevel: info`,
    options.extra ?? "",
    "",
  ].join("\n");
}

/**
 * An agent config for `hubUrls`, serving `targets`: hostname rule → local port for TLS and HTTP alike, or
 * `{ tls, http }` ports.
 */
export function agentYaml(options: {
  hubUrls: readonly string[];
  hostnames: readonly string[];
  targets: Record<string, number | { tls: number; http: number }>;
  name?: string;
  drainTimeoutSeconds?: number;
  extra?: string;
}): string {
  return [
    `name: "${options.name ?? "child-agent"}"`,
    `hubs:`,
    ...options.hubUrls.map((url) => `  - "${url}"`),
    `hubCaFile: "ca.pem"`,
    `hostnames:`,
    ...options.hostnames.map((name) => `  - "${name}"`),
    `token:`,
    `  secretFile: "backends.secret"`,
    `targets:`,
    ...Object.entries(options.targets).map(([name, port]) =>
      typeof port === "number"
        ? `  "${name}": "127.0.0.1:${port}"`
        : `  "${name}": { tls: "127.0.0.1:${port.tls}", http: "127.0.0.1:${port.http}" }`
    ),
    `drainTimeoutSeconds: ${options.drainTimeoutSeconds ?? 5}`,
    `logLevel: info`,
    `reconnect:`,
    `  initialDelaySeconds: 1`,
    `  maxDelaySeconds: 8`,
    options.extra ?? "",
    "",
  ].join("\n");
}

/** A child process whose stdout and stderr are collected line by line. */
export class WatchedProcess {
  readonly child: Deno.ChildProcess;
  /** Every output line so far. */
  readonly lines: string[] = [];
  /** Resolves with the exit status once the process has exited and its output has been read. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** The exit status once the process has exited, else null. */
  exitStatus: Deno.CommandStatus | null = null;
  #waiters: Array<() => void> = [];

  constructor(
    command: string,
    args: readonly string[],
    options: { cwd?: string; env?: Record<string, string>; onSpawn?: (process: WatchedProcess) => void } = {},
  ) {
    this.child = new Deno.Command(command, {
      args: [...args],
      cwd: options.cwd ?? REPO_ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    options.onSpawn?.(this);
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      let partial = "";
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        const parts = (partial + text).split("\n");
        partial = parts.pop() ?? "";
        this.lines.push(...parts);
        this.#wake();
      }
      if (partial !== "") this.lines.push(partial);
      this.#wake();
    };
    const output = Promise.all([collect(this.child.stdout), collect(this.child.stderr)]);
    this.exited = output.then(() => this.child.status);
    void this.exited.then((status) => {
      this.exitStatus = status;
      this.#wake();
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Lines matching `pattern`. */
  matching(pattern: RegExp): string[] {
    return this.lines.filter((line) => pattern.test(line));
  }

  /** Waits for a line matching `pattern` (at index `from` or later) and returns it. */
  async waitForLine(pattern: RegExp, options: { timeoutMs?: number; from?: number } = {}): Promise<string> {
    const deadline = Date.now() + (options.timeoutMs ?? 20_000);
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const found = this.lines.slice(options.from ?? 0).find((line) => pattern.test(line));
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0 || exited) {
        throw new Error(
          `no line matching ${pattern} ${
            exited ? "before the process exited" : `within the timeout`
          }; output:\n` +
            this.lines.join("\n"),
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, Math.min(left, 200));
      });
      clearTimeout(timer);
    }
  }

  /** Sends a signal unless the process has already exited. */
  kill(signal: Deno.Signal): void {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
  }

  /** Kills (SIGKILL) if still running and waits for the exit; for `finally` blocks. */
  async stop(): Promise<Deno.CommandStatus> {
    this.kill("SIGKILL");
    return await this.exited;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/**
 * A running `nexus` child process (`deno run src/main.ts …`) with the permissions of the released binary;
 * `allowWrite` adds write access to one directory (the ACME state directory).
 */
/** How to start a `nexus` child process. */
export interface NexusProcessOptions {
  /** A directory the program may write (`--allow-write=DIR`). */
  readonly allowWrite?: string;
  /**
   * The open-file limit (`ulimit -n`) to run it under; absent: the one this process has. The program is then
   * started through `sh -c 'ulimit -n N && exec ...'`, so the pid is still the program's own.
   */
  readonly openFileLimit?: number;
  /** Called as soon as the process exists, before any wait: a program that may exit early registers it here. */
  readonly onSpawn?: (process: NexusProcess) => void;
}

/** A `nexus` child process run from source with the released binary's permissions. */
export class NexusProcess extends WatchedProcess {
  constructor(args: readonly string[], options: NexusProcessOptions = {}) {
    const argv = [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      ...(options.allowWrite === undefined ? [] : [`--allow-write=${options.allowWrite}`]),
      "src/main.ts",
      ...args,
    ];
    const [command, ...commandArgs] = options.openFileLimit === undefined
      ? argv
      : ["sh", "-c", `ulimit -n ${options.openFileLimit} && exec "$@"`, "sh", ...argv];
    const onSpawn = options.onSpawn;
    // The hook runs inside the base constructor, on this very object.
    super(command, commandArgs, onSpawn ? { onSpawn: (process) => onSpawn(process as NexusProcess) } : {});
  }
}

/** Ports a child node bound, read from its start-up log lines. */
export interface NodePorts {
  readonly hubPort: number;
  readonly tlsPort: number;
  readonly httpPort: number;
}

/** Starts `nexus serve --config FILE` and waits until it has started; returns the process and its ports. */
export async function spawnNode(
  configPath: string,
  options: NexusProcessOptions = {},
): Promise<{ process: NexusProcess; ports: NodePorts }> {
  const process = new NexusProcess(["serve", "--config", configPath], options);
  try {
    const started = await process.waitForLine(/node started/);
    const relay = process.matching(/relay listening/);
    const portOf = (protocol: string) => {
      const line = relay.find((l) => l.includes(`protocol=${protocol}`)) ?? "";
      return Number(/address=[^ ]*:(\d+)/.exec(line)?.[1] ?? 0);
    };
    return {
      process,
      ports: {
        hubPort: Number(/hub=[^ ]*:(\d+)/.exec(started)?.[1] ?? 0),
        tlsPort: portOf("tls"),
        httpPort: portOf("http"),
      },
    };
  } catch (error) {
    await process.stop();
    throw error;
  }
}

/** The port of a child's admin listener, from its `admin listening` log line. */
export async function adminPortOf(process: WatchedProcess): Promise<number> {
  const line = await process.waitForLine(/admin listening/);
  return Number(/address=[^ ]*:(\d+)/.exec(line)?.[1]);
}

/** Starts `nexus agent --config FILE`; waits for its first hub session unless `waitConnected` is false. */
export async function spawnAgent(
  configPath: string,
  options: NexusProcessOptions & { waitConnected?: boolean } = {},
): Promise<NexusProcess> {
  const process = new NexusProcess(["agent", "--config", configPath], options);
  if (options.waitConnected === false) return process;
  try {
    await process.waitForLine(/connected to hub/);
    return process;
  } catch (error) {
    await process.stop();
    throw error;
  }
}

/**
 * Runs a small command and returns its stdout. Reading `/proc/<pid>/...` from Deno itself needs every
 * permission at once (`--allow-all`), so the test tasks' permissions go through `ls` and `cat` instead.
 */
async function procText(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" })
    .output();
  if (!output.success) throw new Error(`${command} ${args.join(" ")} failed with code ${output.code}`);
  return new TextDecoder().decode(output.stdout);
}

/**
 * Open file descriptors of a process (this one by default), from `/proc/<pid>/fd`. Counted while `ls` runs,
 * so this process's pipe to it is included; compare counts taken the same way.
 */
export async function openDescriptors(pid: number = Deno.pid): Promise<number> {
  return (await procText("ls", ["-1", `/proc/${pid}/fd`])).split("\n").filter((line) => line !== "").length;
}

/** Peak and current resident set size of a process in bytes, from `/proc/<pid>/status` (VmHWM, VmRSS). */
export async function memoryOf(pid: number = Deno.pid): Promise<{ peakRssBytes: number; rssBytes: number }> {
  const status = await procText("cat", [`/proc/${pid}/status`]);
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { peakRssBytes: kib("VmHWM"), rssBytes: kib("VmRSS") };
}
