/**
 * Builds the self-contained `nexus` binaries with `deno compile --target`, one per target, into `dist/` as
 * `nexus-<version>-<target>[.exe]`, and writes `dist/SHA256SUMS` for what it built. The version is `deno.json`'s.
 *
 * `deno compile` embeds the program into `denort`, a runtime it downloads per target from dl.deno.land and caches
 * in `$DENO_DIR/dl/release/v<deno version>/denort-<target>.zip`. Offline, the download fails (a DNS error where no
 * resolver answers, a long connect timeout where packets are dropped), so this script never lets `deno compile`
 * reach for the network unless `--download` is given. It takes the runtime, in this order, from:
 *
 * 1. `DENORT_BIN_<TARGET>` (e.g. `DENORT_BIN_AARCH64_APPLE_DARWIN`), the unzipped `denort` for that target;
 * 2. `DENORT_BIN`, for the host's own target only;
 * 3. the zip cached in `$DENO_DIR` by an earlier download;
 * 4. with `--download`, dl.deno.land itself, by `deno compile`.
 *
 * A target with none of these is skipped with one line saying what it needs; the others still build. No npm package
 * ships `denort`: the `@deno/<platform>` packages hold the full `deno` CLI, and `deno` given as `DENORT_BIN` yields a
 * binary that behaves as plain `deno` and ignores the embedded program, which this script refuses.
 *
 * Exit status: 0 when every target asked for either built or was skipped for want of a runtime, and at least
 * one built; 1 when nothing was built (a release script must not take that for success), or on a real build
 * error (a bad runtime, a failed `deno compile`, a failed `--download`); 2 on a usage error.
 *
 * @example Build what this machine can
 * ```sh
 * deno task compile
 * DENORT_BIN_AARCH64_UNKNOWN_LINUX_GNU=$HOME/denort-arm64/denort deno task compile aarch64-unknown-linux-gnu
 * ```
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import denoConfig from "../deno.json" with { type: "json" };
import { stateRoot } from "../src/acme/state_dir.ts";

/** The targets a release ships, as `deno compile --target` names them. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** One of {@linkcode TARGETS}. */
export type Target = typeof TARGETS[number];

/**
 * The permissions baked into every binary beside {@linkcode writePermission}, and no others: the network (it
 * is a proxy), reading files (its config and certificates, whose paths are known only at run time) and the
 * environment variables named `NEXUS_*` (its secrets). No run, FFI or sys permission, and writing only under
 * one fixed directory: an exploited proxy cannot start a process or write a file anywhere else. `LOG_TOKENS` and `LOG_STREAM` are the `yaml` package's debug switches, which its parser reads
 * through `process.env` on every parse; without them it throws `NotCapable` on the first config file.
 */
export const RUNTIME_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-env=NEXUS_*,LOG_TOKENS,LOG_STREAM",
] as const;

/**
 * The V8 flags baked into every binary, and given to `deno task nexus` and the container's `deno run` too:
 * a young generation of 1 MiB per semi-space instead of V8's 16 MiB. Buffers that die young (every message
 * of a transfer) are then collected a few hundred KiB after they die instead of up to 64 MiB later, so the
 * agent's RSS during and after bulk transfers stays about 35 MiB lower and an idle connection costs about
 * 1 KiB less, at no measured cost in CPU per GiB (docs/benchmarks.md, "Memory"). And `--expose-gc`, so that
 * a process that goes quiet after a burst of traffic collects what the burst left (src/system/quiet_collector.ts).
 */
export const RUNTIME_V8_FLAGS = ["--max-semi-space-size=1", "--expose-gc"] as const;

/**
 * The one directory a binary may write under: the ACME state directory's home (`hubAcme.stateDir`, by default
 * `<root>/acme`), `/var/lib/nexus` (`C:\\ProgramData\\nexus` on Windows) unless `writeDir` says otherwise. A
 * compiled binary takes no permission flags when it runs, so the directory is fixed here, at build time; the
 * node writes its ACME account key and certificates there and nothing anywhere else.
 *
 * @example
 * ```ts
 * import { equal } from "node:assert/strict";
 * equal(writePermission("aarch64-unknown-linux-gnu"), "--allow-write=/var/lib/nexus");
 * ```
 */
export function writePermission(target: Target, writeDir?: string): string {
  return `--allow-write=${writeDir ?? stateRoot(target.includes("windows") ? "windows" : "linux")}`;
}

/** Where {@linkcode compileArgs} reads the program from and writes the binary to. */
export interface CompileArgsOptions {
  /** The directory the binary is written to; `dist` by default. */
  outDir?: string;
  /** The program's entry point; `src/main.ts` by default. */
  entry?: string;
  /** The one directory the binary may write under (see {@linkcode writePermission}). */
  writeDir?: string;
}

/**
 * The arguments to `deno` that build the binary for one target. Type-checking stays on: a release binary must
 * come from code that checks, and after the first target the check cache makes it cost nothing.
 *
 * @example
 * ```ts
 * import { assertEquals } from "node:assert/strict";
 * assertEquals(compileArgs("x86_64-pc-windows-msvc", "1.2.3").slice(0, 5), [
 *   "compile", "--target", "x86_64-pc-windows-msvc", "--output", "dist/nexus-1.2.3-x86_64-pc-windows-msvc.exe",
 * ]);
 * ```
 */
export function compileArgs(target: Target, version: string, options: CompileArgsOptions = {}): string[] {
  const { outDir = "dist", entry = "src/main.ts" } = options;
  return [
    "compile",
    "--target",
    target,
    "--output",
    join(outDir, binaryName(target, version)),
    ...RUNTIME_PERMISSIONS,
    writePermission(target, options.writeDir),
    `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`,
    entry,
  ];
}

function binaryName(target: Target, version: string): string {
  return `nexus-${version}-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/**
 * The environment variable naming the `denort` runtime for one target.
 *
 * @example
 * ```ts
 * import { equal } from "node:assert/strict";
 * equal(denortEnvVar("aarch64-apple-darwin"), "DENORT_BIN_AARCH64_APPLE_DARWIN");
 * ```
 */
export function denortEnvVar(target: Target): string {
  return `DENORT_BIN_${target.toUpperCase().replaceAll("-", "_")}`;
}

/** Where the runtime for a target comes from; see {@linkcode resolveRuntime}. */
export type RuntimeSource =
  | { kind: "env"; variable: string; path: string }
  | { kind: "cache"; path: string }
  | { kind: "download" }
  | { kind: "missing" };

/** What {@linkcode resolveRuntime} knows of the machine. */
export interface RuntimeLookup {
  /** The target of the `deno` running this script (`Deno.build.target`). */
  hostTarget: string;
  /** Reads an environment variable. */
  env: (name: string) => string | undefined;
  /** The path of the runtime zip in `$DENO_DIR`, when it is there. */
  cachedZip?: string;
  /** Whether `deno compile` may download the runtime itself. */
  download: boolean;
}

/**
 * Picks the runtime for one target: `DENORT_BIN_<TARGET>`, then `DENORT_BIN` for the host's target only (a
 * runtime is for one target, and the plain variable cannot say which), then the cached zip, then a download
 * if allowed.
 *
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * const lookup = { hostTarget: "x86_64-unknown-linux-gnu", env: () => "/opt/denort", download: false };
 * deepEqual(resolveRuntime("x86_64-unknown-linux-gnu", lookup), {
 *   kind: "env", variable: "DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU", path: "/opt/denort",
 * });
 * ```
 */
export function resolveRuntime(target: Target, lookup: RuntimeLookup): RuntimeSource {
  for (const variable of [denortEnvVar(target), ...(target === lookup.hostTarget ? ["DENORT_BIN"] : [])]) {
    const path = lookup.env(variable);
    if (path) return { kind: "env", variable, path };
  }
  if (lookup.cachedZip !== undefined) return { kind: "cache", path: lookup.cachedZip };
  return lookup.download ? { kind: "download" } : { kind: "missing" };
}

/** The operating system and architecture an executable was built for, as far as its header says. */
export interface ExecutableKind {
  os: "linux" | "darwin" | "windows";
  arch: "x86_64" | "aarch64";
}

/**
 * Reads the kind of executable from its first bytes (ELF, 64-bit Mach-O or PE), or `undefined` when they are
 * none of these for x86_64 or aarch64. `deno compile` itself rejects a runtime of the wrong format for macOS and
 * Windows, but happily embeds into an ELF of the wrong architecture.
 *
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * const elf = new Uint8Array(64);
 * elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
 * elf.set([0xb7, 0x00], 18);
 * deepEqual(executableKind(elf), { os: "linux", arch: "aarch64" });
 * ```
 */
export function executableKind(head: Uint8Array): ExecutableKind | undefined {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const u16 = (at: number) => at >= 0 && at + 2 <= view.byteLength ? view.getUint16(at, true) : -1;
  const u32 = (at: number) => at >= 0 && at + 4 <= view.byteLength ? view.getUint32(at, true) : -1;
  const kind = (os: ExecutableKind["os"], machine: number, x86_64: number, aarch64: number) =>
    machine === x86_64
      ? { os, arch: "x86_64" } as const
      : machine === aarch64
      ? { os, arch: "aarch64" } as const
      : undefined;
  // ELF: "\x7fELF", then e_machine at 18 (little-endian on both architectures).
  if (u32(0) === 0x464c457f) return kind("linux", u16(18), 0x3e, 0xb7);
  // 64-bit Mach-O: MH_MAGIC_64, then cputype.
  if (u32(0) === 0xfeedfacf) return kind("darwin", u32(4), 0x01000007, 0x0100000c);
  // PE: "MZ", the offset of "PE\0\0" at 0x3c, then the COFF machine.
  if (u16(0) === 0x5a4d && u32(u32(0x3c)) === 0x00004550) {
    return kind("windows", u16(u32(0x3c) + 4), 0x8664, 0xaa64);
  }
  return undefined;
}

function expectedKind(target: Target): ExecutableKind {
  const arch = target.startsWith("aarch64") ? "aarch64" : "x86_64";
  const os = target.includes("linux") ? "linux" : target.includes("darwin") ? "darwin" : "windows";
  return { os, arch };
}

function skipLine(target: Target, denoVersion: string): string {
  const exe = target.includes("windows") ? ".exe" : "";
  return `${target}: skipped: needs the denort runtime for this target; download denort-${target}.zip from ` +
    `https://dl.deno.land/release/v${denoVersion}/ on a connected machine and set ` +
    `${denortEnvVar(target)}=/path/to/denort${exe}`;
}

class BuildError extends Error {}

/** Checks a runtime given by path before `deno compile` embeds a program into it. */
async function checkRuntime(target: Target, source: { variable: string; path: string }): Promise<void> {
  const named = `${source.variable}=${source.path}`;
  let head: Uint8Array;
  try {
    using file = await Deno.open(source.path);
    const buffer = new Uint8Array(4096);
    head = buffer.subarray(0, (await file.read(buffer)) ?? 0);
  } catch (error) {
    throw new BuildError(`${named} cannot be read: ${(error as Error).message}`);
  }
  const kind = executableKind(head);
  const expected = expectedKind(target);
  if (!kind) {
    const zip = head[0] === 0x50 && head[1] === 0x4b; // "PK"
    throw new BuildError(
      `${named} is not an x86_64 or aarch64 executable${
        zip ? " but a zip: unzip it and name the denort inside" : ""
      }`,
    );
  }
  if (kind.os !== expected.os || kind.arch !== expected.arch) {
    throw new BuildError(
      `${named} is a ${kind.os} ${kind.arch} executable; ${target} needs a ${expected.os} ` +
        `${expected.arch} denort`,
    );
  }
  if (target !== Deno.build.target) return;
  // The deno CLI answers --version; denort, holding no program, fails instead.
  const probe = await new Deno.Command(source.path, {
    args: ["--version"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    signal: AbortSignal.timeout(10_000),
  }).output().catch(() => undefined);
  if (probe && new TextDecoder().decode(probe.stdout).startsWith("deno ")) {
    throw new BuildError(`${named} is the deno CLI, not denort: the binary would run as plain deno`);
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

async function denoDir(): Promise<string | undefined> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdin: "null",
    stderr: "null",
  });
  const info = await command.output();
  if (!info.success) return undefined;
  return (JSON.parse(new TextDecoder().decode(info.stdout)) as { denoDir?: string }).denoDir;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

const USAGE = `Usage: deno task compile [--download] [--out-dir DIR] [--entry FILE] [TARGET...]

Builds nexus-<version>-<target>[.exe] for each TARGET (default: all) and DIR/SHA256SUMS.
Targets: ${TARGETS.join(", ")}

  --out-dir DIR    where the binaries go (default: dist)
  --entry FILE     the program's entry point (default: src/main.ts)
  --write-dir DIR  the one directory the binaries may write under, for the ACME state
                   (default: /var/lib/nexus, C:\\ProgramData\\nexus for Windows)
  --download     let deno compile download a missing denort runtime from dl.deno.land
The runtime for each target comes from DENORT_BIN_<TARGET>, DENORT_BIN (host target only),
or the zip cached in $DENO_DIR by an earlier download.`;

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        "out-dir": { type: "string" },
        entry: { type: "string" },
        "write-dir": { type: "string" },
        download: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  const unknown = parsed.positionals.filter((name) => !(TARGETS as readonly string[]).includes(name));
  if (unknown.length > 0) {
    console.error(`Unknown target ${JSON.stringify(unknown[0])}; expected one of: ${TARGETS.join(", ")}`);
    return 2;
  }
  const targets = parsed.positionals.length > 0 ? [...new Set(parsed.positionals as Target[])] : [...TARGETS];

  const root = fileURLToPath(new URL("..", import.meta.url));
  const outDir = parsed.values["out-dir"] ?? "dist";
  const outDirPath = resolve(parsed.values["out-dir"] === undefined ? root : Deno.cwd(), outDir);
  const options: CompileArgsOptions = {
    outDir: parsed.values["out-dir"] === undefined ? undefined : outDirPath,
    entry: parsed.values.entry === undefined ? undefined : resolve(Deno.cwd(), parsed.values.entry),
    writeDir: parsed.values["write-dir"],
  };
  const version = denoConfig.version;
  const denoVersion = Deno.version.deno;
  const cacheDir = await denoDir();
  const sumsPath = join(outDirPath, "SHA256SUMS");
  await Deno.mkdir(outDirPath, { recursive: true });
  await Deno.remove(sumsPath).catch(() => {}); // it describes the last run only

  const inheritedEnv = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("DENORT_BIN")),
  );
  const built: string[] = [];
  let failed = 0;
  for (const target of targets) {
    const cachedZip = cacheDir === undefined
      ? undefined
      : join(cacheDir, "dl", "release", `v${denoVersion}`, `denort-${target}.zip`);
    const source = resolveRuntime(target, {
      hostTarget: Deno.build.target,
      env: (name) => Deno.env.get(name),
      cachedZip: cachedZip !== undefined && await isFile(cachedZip) ? cachedZip : undefined,
      download: parsed.values.download,
    });
    if (source.kind === "missing") {
      console.log(skipLine(target, denoVersion));
      continue;
    }
    try {
      if (source.kind === "env") await checkRuntime(target, source);
      const output = await new Deno.Command(Deno.execPath(), {
        args: compileArgs(target, version, options),
        cwd: root,
        clearEnv: true,
        env: {
          ...inheritedEnv,
          NO_COLOR: "1",
          ...(source.kind === "env" ? { DENORT_BIN: source.path } : {}),
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!output.success) {
        const log = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
        console.error(log.trimEnd());
        throw new BuildError(
          log.includes("Setting up base binary")
            ? `deno compile could not get the denort runtime (its output is above)`
            : `deno compile exited with code ${output.code} (its output is above)`,
        );
      }
      const binary = join(outDirPath, binaryName(target, version));
      const size = (await Deno.stat(binary)).size;
      built.push(binary);
      console.log(`${target}: built ${join(outDir, basename(binary))} (${(size / 2 ** 20).toFixed(1)} MiB)`);
    } catch (error) {
      if (!(error instanceof BuildError)) throw error;
      failed++;
      console.log(`${target}: error: ${error.message}`);
    }
  }

  if (built.length > 0) {
    const lines = [];
    for (const binary of built) lines.push(`${await sha256File(binary)}  ${basename(binary)}\n`);
    await Deno.writeTextFile(sumsPath, lines.join(""));
    console.log(`wrote ${join(outDir, "SHA256SUMS")} for ${built.length} of ${targets.length} targets`);
  } else if (failed === 0) {
    console.log("nothing built: no denort runtime was available for any target; see the lines above");
  }
  return failed > 0 || built.length === 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
