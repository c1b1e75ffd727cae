import assert from "node:assert/strict";

const REPO = new URL("..", import.meta.url).pathname;

/** The rows every report has, in order: what the issue asks to measure, each beside direct and HAProxy. */
const ROWS = [
  "One stream, client → service",
  "One stream, service → client",
  "64 concurrent streams, aggregate (service → client)",
  "New TLS connections",
  "Requests on 16 kept-alive connections",
  "Request/response p50",
  "Request/response p99",
  "Added p50 latency vs direct",
  "Added p99 latency vs direct",
  "Proxy RSS with 10 idle connections",
  "Proxy RSS with 20 idle connections",
  "Proxy memory per idle connection, at 10",
  "Proxy memory per idle connection, at 20",
  "Agent memory per idle connection, at 20",
  "Agent RSS during the transfers, highest, above its RSS at start",
  "Agent RSS 2 s after the transfers, above its RSS at start",
  "Node RSS during the transfers, highest, above its RSS at start",
  "Node RSS 2 s after the transfers, above its RSS at start",
  "CPU per GiB moved, node (HAProxy: its process)",
  "CPU per GiB moved, agent",
  "CPU per GiB moved, node + agent",
  "CPU per 1,000 new TLS connections, node (HAProxy: its process)",
  "CPU per 1,000 new TLS connections, agent",
  "CPU per 1,000 new TLS connections, node + agent",
];

/** Rows measured on the direct connection too; the others are about proxy processes only. */
const DIRECT_ROWS = new Set(ROWS.slice(0, 7));
/** Rows with no HAProxy counterpart. */
const NEXUS_ONLY_ROWS = new Set([
  "Agent memory per idle connection, at 20",
  "Agent RSS during the transfers, highest, above its RSS at start",
  "Agent RSS 2 s after the transfers, above its RSS at start",
  "Node RSS during the transfers, highest, above its RSS at start",
  "Node RSS 2 s after the transfers, above its RSS at start",
  "CPU per GiB moved, agent",
  "CPU per 1,000 new TLS connections, agent",
]);

async function git(args: string[]): Promise<string> {
  const output = await new Deno.Command("git", { args, cwd: REPO, stdout: "piped" }).output();
  return new TextDecoder().decode(output.stdout).trim();
}

async function haproxyInstalled(): Promise<boolean> {
  try {
    return (await new Deno.Command("haproxy", { args: ["-v"], stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

Deno.test("bench --quick with tiny sizes writes a report with every row, a plot and a log entry", async () => {
  const out = await Deno.makeTempDir({ prefix: "nexus-bench-smoke-" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-run",
        "--allow-sys",
        `${REPO}scripts/bench.ts`,
        "--quick",
        "--out",
        out,
        "--label",
        "smoke",
        "--bulk-mib",
        "1",
        "--stream-kib",
        "16",
        "--seconds",
        "0.3",
        "--idle",
        "10,20",
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, `${stdout}\n${new TextDecoder().decode(run.stderr)}`);
    const withHaproxy = await haproxyInstalled();
    if (!withHaproxy) assert.match(stdout, /HAProxy is not installed: .*apt-get install haproxy/);

    const report = await Deno.readTextFile(`${out}/benchmarks.md`);
    const table = report.split("## Results")[1].split("![")[0].trim().split("\n");
    const rows = table.slice(2).map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
    assert.equal(rows.length, ROWS.length);
    const number = /^[-−+]?[\d,]+(\.\d+)?$/; // a difference may be negative
    ROWS.forEach((label, i) => {
      const [name, , direct, haproxy, nexus] = rows[i];
      assert.ok(name.startsWith(label), `row ${i + 1} is "${name}", expected "${label}..."`);
      assert.match(nexus, number, `Nexus cell of "${label}"`);
      if (DIRECT_ROWS.has(label)) assert.match(direct, number, `direct cell of "${label}"`);
      else assert.equal(direct, "—", `direct cell of "${label}"`);
      if (withHaproxy && !NEXUS_ONLY_ROWS.has(label)) {
        assert.match(haproxy, number, `HAProxy cell of "${label}"`);
      } else assert.equal(haproxy, "—", `HAProxy cell of "${label}"`);
    });
    assert.match(report, /Machine: .+, \d+ cores, Linux /);
    assert.match(report, new RegExp(`Versions: Deno ${Deno.version.deno.replaceAll(".", "\\.")} `));
    assert.match(report, /\| smoke \(quick\) \|/);
    const head = await git(["rev-parse", "--short", "HEAD"]);
    assert.match(
      report,
      // The report is formatted: a line may break between any two words.
      new RegExp(
        `measured\\s+commit\\s+${head}(\\+changes\\s+\\(the\\s+working\\s+tree\\s+had\\s+changes\\s+not\\s+committed\\))?\\.`,
      ),
      "the report names the commit it measured",
    );

    const svg = await Deno.readTextFile(`${out}/benchmarks.svg`);
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith("</svg>"));
    for (const name of ["Direct", "HAProxy", "Nexus"]) assert.ok(svg.includes(`>${name}</text>`), name);

    const history = JSON.parse(await Deno.readTextFile(`${out}/benchmarks_history.json`));
    assert.equal(history.length, 1);
    assert.equal(history[0].label, "smoke");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

/** The state of process `pid` from `/proc` (through `cat`: reading it directly needs every permission), or null. */
async function processState(pid: number): Promise<string | null> {
  const output = await new Deno.Command("cat", {
    args: [`/proc/${pid}/status`],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  return output.success ? /^State:\s+(\S)/m.exec(new TextDecoder().decode(output.stdout))?.[1] ?? null : null;
}

Deno.test("a phase that misses its deadline ends the bench with the phase's name and exit code 5, its children killed", async () => {
  const out = await Deno.makeTempDir({ prefix: "nexus-bench-smoke-" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-run",
        "--allow-sys",
        `${REPO}scripts/bench.ts`,
        "--quick",
        "--out",
        out,
        "--phase-timeout",
        "0.001",
      ],
      env: { NEXUS_BENCH_DEBUG: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 5, `${stdout}\n${stderr}`);
    assert.match(
      stderr,
      /^bench: phase "start the service": the service has not printed its port after 0\.001 s; service (alive, [\d,]+ descriptors|exited with .+)(; load generator .+)?$/m,
    );
    const pid = Number(/service started \(pid (\d+)\)/.exec(stdout)?.[1]);
    assert.ok(pid > 0, stdout);
    for (let i = 0; i < 50 && !["Z", null].includes(await processState(pid)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(["Z", null].includes(await processState(pid)), `the service (pid ${pid}) was left running`);
    // Nothing was written: the run ended before the report.
    assert.deepEqual([...Deno.readDirSync(out)], []);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
