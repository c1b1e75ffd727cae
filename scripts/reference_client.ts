/**
 * Builds the original's standalone backend client, `AtDexters-Lab/nexus-proxy-backend-client` v0.2.6
 * (docs/protocol.md §7.2), so the compatibility tests can run the real thing against our hub.
 *
 * `go install …@v0.2.6` does not work (the module proxy refuses the version list), so the module is fetched
 * with `go mod download -json` and its `cmd/client` built from the downloaded directory. The binary is cached in
 * `.cache/reference-client/` (git-ignored); a cached binary is used without asking for `go` at all.
 *
 * When `go` or the module cannot be had, {@linkcode buildReferenceClient} says in one line what is missing.
 *
 * @example Build (or find) the client from the command line
 * ```sh
 * deno run --allow-run --allow-read --allow-write --allow-env scripts/reference_client.ts
 * # prints the binary's path; exit status 1 and one line on stderr saying what is missing otherwise
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The module and the tag of the client docs/protocol.md §7.2 describes (v0.2.6, commit 9cd435d). */
export const REFERENCE_CLIENT_MODULE = "github.com/AtDexters-Lab/nexus-proxy-backend-client";
/** The last tag of the standalone client. */
export const REFERENCE_CLIENT_VERSION = "v0.2.6";

/** Where built binaries are cached: `.cache/reference-client/` at the repository's top. */
export const REFERENCE_CLIENT_CACHE_DIR: string = fileURLToPath(
  new URL("../.cache/reference-client/", import.meta.url),
);

/** The outcome of {@linkcode buildReferenceClient}. */
export type ReferenceClientBuild =
  | { readonly ok: true; readonly path: string; readonly cached: boolean }
  | { readonly ok: false; readonly missing: string };

/** Options of {@linkcode buildReferenceClient}. */
export interface BuildReferenceClientOptions {
  /** Directory of the cached binary; {@linkcode REFERENCE_CLIENT_CACHE_DIR} by default. */
  readonly cacheDir?: string;
  /** The `go` program; `go` on the PATH by default. */
  readonly goBinary?: string;
}

/**
 * Returns the path of the reference client's binary, building it first when it is not cached. Never throws:
 * a failure comes back as `{ ok: false, missing }`, one line saying what is missing.
 *
 * @example
 * ```ts
 * const build = await buildReferenceClient();
 * if (!build.ok) console.log(`skipped: ${build.missing}`);
 * ```
 */
export async function buildReferenceClient(
  options: BuildReferenceClientOptions = {},
): Promise<ReferenceClientBuild> {
  const cacheDir = options.cacheDir ?? REFERENCE_CLIENT_CACHE_DIR;
  const go = options.goBinary ?? "go";
  const binary = join(cacheDir, `nexus-reference-client-${REFERENCE_CLIENT_VERSION}`);
  if (await isFile(binary)) return { ok: true, path: binary, cached: true };

  const module = `${REFERENCE_CLIENT_MODULE}@${REFERENCE_CLIENT_VERSION}`;
  try {
    await Deno.mkdir(cacheDir, { recursive: true });
  } catch (error) {
    return { ok: false, missing: `cannot create the cache directory ${cacheDir}: ${describe(error)}` };
  }
  const version = await run(go, ["version"], cacheDir);
  if (typeof version === "string") {
    return {
      ok: false,
      missing: `the Go toolchain is needed to build the reference client ${module}: ${version}`,
    };
  }
  const download = await run(go, ["mod", "download", "-json", module], cacheDir);
  if (typeof download === "string" || download.code !== 0) {
    return {
      ok: false,
      missing: `the Go module ${module} cannot be downloaded: ${
        typeof download === "string" ? download : goError(download)
      }`,
    };
  }
  let dir: string | undefined;
  try {
    dir = (JSON.parse(download.stdout) as { Dir?: string }).Dir;
  } catch {
    // Reported below.
  }
  if (dir === undefined) {
    return { ok: false, missing: `"go mod download -json ${module}" named no module directory` };
  }
  // Build beside the final name, then rename: concurrent test processes never see a half-written binary.
  const partial = `${binary}.${Deno.pid}.partial`;
  const build = await run(go, ["build", "-buildvcs=false", "-o", partial, "./cmd/client"], dir, {
    GOWORK: "off",
    GOFLAGS: "-mod=readonly",
  });
  if (typeof build === "string" || build.code !== 0) {
    await Deno.remove(partial).catch(() => {});
    return {
      ok: false,
      missing: `building ${module} failed: ${typeof build === "string" ? build : goError(build)}`,
    };
  }
  try {
    await Deno.rename(partial, binary);
  } catch (error) {
    return { ok: false, missing: `cannot store the built reference client at ${binary}: ${describe(error)}` };
  }
  return { ok: true, path: binary, cached: false };
}

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Longest a go command may take. Offline, `go mod download` can wait on connect timeouts for minutes; the tests
 * that need the client would rather be skipped with a reason than hang.
 */
const GO_COMMAND_TIMEOUT_MS = 180_000;

/**
 * Runs a program to completion; a string says why it could not be started (not installed, no permission) or
 * did not finish in time.
 */
async function run(
  program: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<RunResult | string> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), GO_COMMAND_TIMEOUT_MS);
  try {
    const output = await new Deno.Command(program, {
      args,
      cwd,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    if (abort.signal.aborted) {
      return `"${program} ${args.join(" ")}" did not finish within ${GO_COMMAND_TIMEOUT_MS / 1000} s`;
    }
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `"${program}" is not installed (not found on the PATH)`;
    return `cannot run "${program}": ${describe(error)}`;
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

/** The gist of a failed go command, on one line. */
function goError(result: RunResult): string {
  const json = /"Error":\s*"((?:[^"\\]|\\.)*)"/.exec(result.stdout);
  const text = json ? JSON.parse(`"${json[1]}"`) as string : result.stderr.trim();
  const line = text.split("\n").map((l) => l.trim()).filter((l) => l !== "").slice(0, 2).join("; ");
  return line === "" ? `exit status ${result.code}` : line;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const build = await buildReferenceClient();
  if (build.ok) {
    console.log(build.path);
  } else {
    console.error(`reference client unavailable: ${build.missing}`);
    Deno.exit(1);
  }
}
