/**
 * The reaper of the benchmark and the soak (`scripts/bench/reaper.ts`): a program that registered a child and
 * a directory leaves neither behind, whether it exits by `Deno.exit` or is interrupted by SIGINT or SIGTERM.
 * Each case runs a real program that starts a real `sleep` child.
 */

import assert from "node:assert/strict";
import { REPO_ROOT } from "../helpers/processes.ts";

/** A program that registers a `sleep` child and a directory, prints both, then exits or waits to be signalled. */
function fixture(ending: "exit" | "wait"): string {
  return `
import { killOnExit, reapOnExit, removeOnExit } from "${REPO_ROOT}scripts/bench/reaper.ts";
reapOnExit("fixture");
const dir = await Deno.makeTempDir({ prefix: "nexus-reaper-test-" });
removeOnExit(dir);
const child = new Deno.Command("sleep", { args: ["60"], stdin: "null", stdout: "null", stderr: "null" }).spawn();
let exitStatus = null;
child.status.then((status) => (exitStatus = status));
killOnExit({ name: "sleeper", pid: child.pid, get exitStatus() { return exitStatus; }, kill: (s) => child.kill(s) });
console.log(JSON.stringify({ pid: child.pid, dir }));
${ending === "exit" ? "Deno.exit(3);" : "setInterval(() => {}, 1000);"}
`;
}

/**
 * The status of process `pid`, or null once it has gone. Read through `cat`: Deno reads another process's
 * `/proc` entry only with every permission at once.
 */
async function procStatus(pid: number): Promise<string | null> {
  const output = await new Deno.Command("cat", {
    args: [`/proc/${pid}/status`],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  return output.success ? new TextDecoder().decode(output.stdout) : null;
}

/** Whether process `pid` has gone (or is a zombie waiting for init to reap it: dead all the same). */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const status = await procStatus(pid);
    if (status === null || /^State:\s+Z/m.test(status)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function run(ending: "exit" | "wait", signal?: Deno.Signal) {
  const file = await Deno.makeTempFile({ prefix: "nexus-reaper-fixture-", suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, fixture(ending));
    const program = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-run", "--allow-read", "--allow-write", file],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = program.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const started = JSON.parse(text) as { pid: number; dir: string };
    assert.ok((await procStatus(started.pid)) !== null, "the child is running before the program ends");
    if (signal !== undefined) program.kill(signal);
    const [status, stderr] = await Promise.all([
      program.status,
      new Response(program.stderr).text(),
      reader.cancel(),
    ]);
    return { ...started, code: status.code, stderr };
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("a program that calls Deno.exit kills its registered children and removes its directories", async () => {
  const ended = await run("exit");
  assert.equal(ended.code, 3);
  assert.ok(await gone(ended.pid), `the sleep child ${ended.pid} was left running`);
  assert.equal(await exists(ended.dir), false);
});

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  Deno.test(`${signal} kills the registered children, removes the directories, says so and exits with ${code}`, async () => {
    const ended = await run("wait", signal);
    assert.equal(ended.code, code);
    assert.equal(ended.stderr, `fixture: interrupted by ${signal}; 1 child process(es) killed\n`);
    assert.ok(await gone(ended.pid), `the sleep child ${ended.pid} was left running`);
    assert.equal(await exists(ended.dir), false);
  });
}
