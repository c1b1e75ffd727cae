/**
 * The measuring scripts' command lines, run as child processes: `--help` prints the usage and exits 0, an
 * unknown flag or a bad value names what was wrong, prints the usage and exits 2, and none of them starts
 * anything first.
 */

import assert from "node:assert/strict";

const SCRIPTS = ["admin_cost.ts", "bench_proxy_header.ts", "bench_memory.ts", "bench.ts", "soak.ts"];
const decoder = new TextDecoder();

async function run(script: string, args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(`../../scripts/${script}`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

for (const script of SCRIPTS) {
  Deno.test(`scripts/${script}: --help prints the usage, an unknown flag is refused with it`, async () => {
    const help = await run(script, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage:/);
    const bogus = await run(script, ["--no-such-flag"]);
    assert.equal(bogus.code, 2, bogus.stderr);
    assert.match(bogus.stderr, /no-such-flag/);
    assert.match(bogus.stderr, /Usage:/);
  });
}

Deno.test("scripts/bench_memory.ts: --only takes bulk, idle or connections", async () => {
  const result = await run("bench_memory.ts", ["--only", "everything"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--only takes bulk, idle, connections, not "everything"/);
});
