import { deepEqual, equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import denoConfig from "../../deno.json" with { type: "json" };
import {
  compileArgs,
  denortEnvVar,
  executableKind,
  resolveRuntime,
  RUNTIME_PERMISSIONS,
  RUNTIME_V8_FLAGS,
  TARGETS,
  writePermission,
} from "../../scripts/compile.ts";
import {
  demoCurlCommand,
  type DemoPorts,
  freePort,
  startDemoService,
  writeDemoFiles,
} from "../../scripts/demo.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SCRIPT = join(ROOT, "scripts", "compile.ts");
const VERSION = denoConfig.version;
const DENO_VERSION = Deno.version.deno;

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs scripts/compile.ts as `deno task compile` would, with only the given environment. */
async function runScript(args: string[], env: Record<string, string>): Promise<ScriptRun> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-run", "--allow-env", SCRIPT, ...args],
    cwd: ROOT,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function skipLine(target: string): string {
  const exe = target.includes("windows") ? ".exe" : "";
  return `${target}: skipped: needs the denort runtime for this target; download denort-${target}.zip from ` +
    `https://dl.deno.land/release/v${DENO_VERSION}/ on a connected machine and set ` +
    `${denortEnvVar(target as typeof TARGETS[number])}=/path/to/denort${exe}`;
}

/** A header that executableKind reads as an ELF executable for the given e_machine. */
function elfHeader(machine: number): Uint8Array {
  const head = new Uint8Array(64);
  head.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  new DataView(head.buffer).setUint16(18, machine, true);
  return head;
}

Deno.test("TARGETS lists the five release targets", () => {
  deepEqual([...TARGETS], [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
  ]);
});

Deno.test("RUNTIME_PERMISSIONS grant the network, file reads, NEXUS_* and yaml's debug switches, nothing else", () => {
  deepEqual([...RUNTIME_PERMISSIONS], [
    "--allow-net",
    "--allow-read",
    "--allow-env=NEXUS_*,LOG_TOKENS,LOG_STREAM",
  ]);
});

Deno.test("under RUNTIME_PERMISSIONS the dependencies parse YAML and sign and verify a JWT", async () => {
  // What a compiled binary is allowed, checked with `deno run` since denort is not needed for that.
  const probe = `
    import { parseDocument, stringify } from "yaml";
    import { jwtVerify, SignJWT } from "jose";
    const key = new TextEncoder().encode("k".repeat(32));
    const jwt = await new SignJWT({ sub: "agent-1" }).setProtectedHeader({ alg: "HS256" }).sign(key);
    const { payload } = await jwtVerify(jwt, key);
    console.log(JSON.stringify(parseDocument("listen: [443]").toJS()), stringify({ sub: payload.sub }).trim());
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...RUNTIME_PERMISSIONS, "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(probe));
  await writer.close();
  const output = await child.output();
  equal(new TextDecoder().decode(output.stderr), "");
  equal(new TextDecoder().decode(output.stdout), '{"listen":[443]} sub: agent-1\n');
});

Deno.test("under the binary's permissions the ACME code makes a key and CSR and writes in the state root only", async () => {
  const root = await Deno.makeTempDir({ prefix: "nexus-write-root-" });
  const outside = await Deno.makeTempDir({ prefix: "nexus-outside-" });
  const probe = `
    import { createCertificateRequest } from "./src/acme/certificate.ts";
    import { AcmeStateDir, writeFileAtomically } from "./src/acme/state_dir.ts";
    const request = await createCertificateRequest("hub.example.com");
    const state = new AcmeStateDir(${JSON.stringify(`${root}/acme`)});
    await state.prepare();
    await state.saveCertificate("hub.example.com", { certPem: "", keyPem: request.keyPem });
    let refused = "no";
    try {
      await writeFileAtomically(${JSON.stringify(`${outside}/x`)}, "x", 0o600);
    } catch (error) {
      refused = error instanceof Deno.errors.NotCapable ? "NotCapable" : String(error);
    }
    console.log(request.csrDer.length > 100, refused);
  `;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...RUNTIME_PERMISSIONS,
        writePermission("x86_64-unknown-linux-gnu", root),
        "-",
      ],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(probe));
    await writer.close();
    const output = await child.output();
    equal(new TextDecoder().decode(output.stderr), "");
    equal(new TextDecoder().decode(output.stdout), "true NotCapable\n");
    equal((await Deno.stat(`${root}/acme/hub.example.com.pem`)).mode! & 0o777, 0o600);
    deepEqual([...Deno.readDirSync(outside)], []);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("compileArgs builds each target from src/main.ts into dist with the runtime permissions and writes under the state root only", () => {
  for (const target of TARGETS) {
    const exe = target === "x86_64-pc-windows-msvc" ? ".exe" : "";
    const args = compileArgs(target, "1.2.3");
    deepEqual(args, [
      "compile",
      "--target",
      target,
      "--output",
      `dist/nexus-1.2.3-${target}${exe}`,
      "--allow-net",
      "--allow-read",
      "--allow-env=NEXUS_*,LOG_TOKENS,LOG_STREAM",
      exe ? "--allow-write=C:\\ProgramData\\nexus" : "--allow-write=/var/lib/nexus",
      "--v8-flags=--max-semi-space-size=1,--expose-gc",
      "src/main.ts",
    ]);
    for (const broad of ["-A", "--allow-all", "--allow-write", "--allow-run", "--allow-ffi", "--allow-sys"]) {
      ok(!args.some((arg) => arg === broad), `${target}: ${broad} must not be set`);
    }
    for (const never of ["--allow-run", "--allow-ffi", "--allow-sys"]) {
      ok(!args.some((arg) => arg.startsWith(`${never}=`)), `${target}: ${never} must not be set`);
    }
  }
});

Deno.test("compileArgs takes the output directory, entry point and write directory from its options", () => {
  deepEqual(
    compileArgs("aarch64-unknown-linux-gnu", VERSION, {
      outDir: "/tmp/out",
      entry: "/tmp/tiny.ts",
      writeDir: "/srv/nexus",
    }),
    [
      "compile",
      "--target",
      "aarch64-unknown-linux-gnu",
      "--output",
      `/tmp/out/nexus-${VERSION}-aarch64-unknown-linux-gnu`,
      "--allow-net",
      "--allow-read",
      "--allow-env=NEXUS_*,LOG_TOKENS,LOG_STREAM",
      "--allow-write=/srv/nexus",
      "--v8-flags=--max-semi-space-size=1,--expose-gc",
      "/tmp/tiny.ts",
    ],
  );
});

Deno.test("deno task nexus and the container run with the binaries' V8 flags", async () => {
  const flag = `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;
  ok(denoConfig.tasks.nexus.split(" ").includes(flag), `deno task nexus: ${denoConfig.tasks.nexus}`);
  const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  const entrypoint = dockerfile.replace(/\\\n\s*/g, " ").split("\n").find((l) => l.startsWith("ENTRYPOINT "));
  ok(
    entrypoint !== undefined && JSON.parse(entrypoint.slice("ENTRYPOINT ".length)).includes(flag),
    `${entrypoint}`,
  );
});

Deno.test("under RUNTIME_PERMISSIONS `src/main.ts version` prints deno.json's version", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...RUNTIME_PERMISSIONS, "src/main.ts", "version"],
    cwd: ROOT,
    stdin: "null",
  }).output();
  equal(new TextDecoder().decode(output.stderr), "");
  equal(
    new TextDecoder().decode(output.stdout),
    `nexus ${VERSION} (deno ${DENO_VERSION}, ${Deno.build.target})\n`,
  );
  equal(output.code, 0);
});

Deno.test("denortEnvVar names the variable after the target in upper snake case", () => {
  deepEqual(TARGETS.map(denortEnvVar), [
    "DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU",
    "DENORT_BIN_AARCH64_UNKNOWN_LINUX_GNU",
    "DENORT_BIN_X86_64_APPLE_DARWIN",
    "DENORT_BIN_AARCH64_APPLE_DARWIN",
    "DENORT_BIN_X86_64_PC_WINDOWS_MSVC",
  ]);
});

Deno.test("resolveRuntime prefers the target's variable, uses DENORT_BIN for the host only, then the cache", () => {
  const host = "x86_64-unknown-linux-gnu";
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  const both = env({ DENORT_BIN: "/any", DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU: "/x86" });
  deepEqual(resolveRuntime(host, { hostTarget: host, env: both, download: false }), {
    kind: "env",
    variable: "DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU",
    path: "/x86",
  });
  deepEqual(resolveRuntime(host, { hostTarget: host, env: env({ DENORT_BIN: "/any" }), download: false }), {
    kind: "env",
    variable: "DENORT_BIN",
    path: "/any",
  });
  deepEqual(
    resolveRuntime("aarch64-apple-darwin", {
      hostTarget: host,
      env: env({ DENORT_BIN: "/any" }),
      download: false,
    }),
    { kind: "missing" },
  );
  const cached = { hostTarget: host, env: env({}), cachedZip: "/cache/denort.zip", download: true };
  deepEqual(resolveRuntime("aarch64-apple-darwin", cached), { kind: "cache", path: "/cache/denort.zip" });
  deepEqual(resolveRuntime("aarch64-apple-darwin", { hostTarget: host, env: env({}), download: true }), {
    kind: "download",
  });
});

Deno.test("executableKind reads the OS and architecture from ELF, Mach-O and PE headers", async () => {
  deepEqual(executableKind(elfHeader(0x3e)), { os: "linux", arch: "x86_64" });
  deepEqual(executableKind(elfHeader(0xb7)), { os: "linux", arch: "aarch64" });
  equal(executableKind(elfHeader(0x28)), undefined, "32-bit ARM is not a target");

  const macho = new Uint8Array(32);
  new DataView(macho.buffer).setUint32(0, 0xfeedfacf, true);
  new DataView(macho.buffer).setUint32(4, 0x0100000c, true);
  deepEqual(executableKind(macho), { os: "darwin", arch: "aarch64" });

  const pe = new Uint8Array(256);
  const peView = new DataView(pe.buffer);
  pe.set([0x4d, 0x5a]);
  peView.setUint32(0x3c, 0x80, true);
  pe.set([0x50, 0x45, 0, 0], 0x80);
  peView.setUint16(0x84, 0x8664, true);
  deepEqual(executableKind(pe), { os: "windows", arch: "x86_64" });

  equal(executableKind(new Uint8Array([0x50, 0x4b, 3, 4])), undefined, "a zip is not an executable");
  equal(executableKind(new Uint8Array([0x4d, 0x5a])), undefined, "a truncated PE is not read past its end");

  const deno = await Deno.open(Deno.execPath());
  const head = new Uint8Array(4096);
  await deno.read(head);
  deno.close();
  deepEqual(
    executableKind(head),
    { os: Deno.build.os, arch: Deno.build.arch },
    "the running deno is the host's",
  );
});

Deno.test("without a runtime the script skips every target in one line each and exits 1: nothing was built", async () => {
  const temp = await Deno.makeTempDir({ prefix: "nexus_compile_test_" });
  try {
    // An empty DENO_DIR holds no cached runtime, and no DENORT_BIN* variable is passed.
    const run = await runScript(["--out-dir", join(temp, "dist"), "--entry", join(temp, "tiny.ts")], {
      DENO_DIR: join(temp, "deno_dir"),
    });
    equal(run.stderr, "");
    deepEqual(run.stdout.split("\n"), [
      ...TARGETS.map(skipLine),
      "nothing built: no denort runtime was available for any target; see the lines above",
      "",
    ]);
    equal(run.code, 1, "a release script must not take an empty dist/ for success");
    deepEqual([...Deno.readDirSync(join(temp, "dist"))], [], "nothing is written, not even SHA256SUMS");
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("a runtime for the wrong architecture fails its target only, and the script exits 1", async () => {
  const temp = await Deno.makeTempDir({ prefix: "nexus_compile_test_" });
  try {
    const runtime = join(temp, "denort");
    await Deno.writeFile(runtime, elfHeader(0x3e));
    const run = await runScript(
      [
        "--out-dir",
        join(temp, "dist"),
        "--entry",
        join(temp, "tiny.ts"),
        "x86_64-apple-darwin",
        "aarch64-unknown-linux-gnu",
      ],
      { DENO_DIR: join(temp, "deno_dir"), DENORT_BIN_AARCH64_UNKNOWN_LINUX_GNU: runtime },
    );
    deepEqual(run.stdout.split("\n"), [
      skipLine("x86_64-apple-darwin"),
      `aarch64-unknown-linux-gnu: error: DENORT_BIN_AARCH64_UNKNOWN_LINUX_GNU=${runtime} is a linux x86_64 ` +
      "executable; aarch64-unknown-linux-gnu needs a linux aarch64 denort",
      "",
    ]);
    equal(run.code, 1);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("the script refuses an unknown target with status 2 and builds nothing", async () => {
  const run = await runScript(["x86_64-unknown-linux-musl"], {});
  equal(run.code, 2);
  equal(run.stdout, "");
  ok(
    run.stderr.startsWith(
      'Unknown target "x86_64-unknown-linux-musl"; expected one of: x86_64-unknown-linux-gnu',
    ),
  );
});

Deno.test("with DENORT_BIN the host binary builds, prints deno.json's version and serves the demo", async (t) => {
  const host = TARGETS.find((target) => target === Deno.build.target);
  const denort = (host && Deno.env.get(denortEnvVar(host))) || Deno.env.get("DENORT_BIN");
  if (!host || !denort) {
    const reason = !host
      ? `${Deno.build.target} is not a release target`
      : `neither DENORT_BIN nor ${denortEnvVar(host)} is set, so there is no denort runtime to build with`;
    await t.step({ name: `skipped: ${reason}`, ignore: true, fn: () => {} });
    return;
  }
  const temp = await Deno.makeTempDir({ prefix: "nexus_compile_test_" });
  try {
    const run = await runScript(["--out-dir", temp, host], {
      DENORT_BIN: denort,
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
    });
    equal(run.code, 0, `${run.stdout}${run.stderr}`);
    const binary = join(temp, `nexus-${VERSION}-${host}`);
    const sums = await Deno.readTextFile(join(temp, "SHA256SUMS"));
    ok(new RegExp(`^[0-9a-f]{64}  nexus-${VERSION}-${host}\n$`).test(sums), sums);

    const version = await new Deno.Command(binary, { args: ["version"], stdin: "null" }).output();
    equal(version.code, 0, new TextDecoder().decode(version.stderr));
    equal(new TextDecoder().decode(version.stdout), `nexus ${VERSION} (deno ${DENO_VERSION}, ${host})\n`);
    await serveDemoWith(binary, temp);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

/** Runs the demo's node and agent as the compiled binary, with the demo's files, and fetches its page. */
async function serveDemoWith(binary: string, dir: string): Promise<void> {
  const ports: DemoPorts = {
    tls: freePort(),
    http: freePort(),
    hub: freePort(),
    serviceTls: freePort(),
    serviceHttp: freePort(),
  };
  const files = await writeDemoFiles(dir, ports);
  const servers = startDemoService(files, ports);
  const start = (args: string[]) =>
    new Deno.Command(binary, { args, stdin: "null", stdout: "null", stderr: "piped" }).spawn();
  const node = start(["serve", "--config", files.nodeConfig]);
  const agent = start(["agent", "--config", files.agentConfig]);
  try {
    let body = "";
    for (let attempt = 0; attempt < 100 && !body.startsWith("Hello"); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const [curl, ...args] = demoCurlCommand(files.caFile, ports.tls).split(" ");
      const page = await new Deno.Command(curl, { args: ["-sS", "--max-time", "5", ...args] }).output();
      body = new TextDecoder().decode(page.stdout);
    }
    ok(body.startsWith("Hello from the demo service behind Nexus Proxy."), body);
  } finally {
    for (const child of [agent, node]) {
      child.kill("SIGTERM");
      await child.status;
      await child.stderr.cancel();
    }
    await Promise.all(servers.map((server) => server.shutdown()));
  }
}
