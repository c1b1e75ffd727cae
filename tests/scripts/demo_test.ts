import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Reads lines from a child's stdout until one matches; gives up after `timeoutMs`. */
async function readUntil(
  lines: AsyncIterator<string>,
  pattern: RegExp,
  timeoutMs: number,
): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const next = await Promise.race([
      lines.next(),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), Math.max(0, deadline - Date.now()))),
    ]);
    if (next === null || next.done) break;
    seen.push(next.value);
    if (pattern.test(next.value)) return seen;
  }
  throw new Error(`no line matching ${pattern} within ${timeoutMs} ms; got:\n${seen.join("\n")}`);
}

async function* splitLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    rest += text;
    const parts = rest.split("\n");
    rest = parts.pop() ?? "";
    yield* parts;
  }
  if (rest) yield rest;
}

Deno.test("`deno task demo` prints a curl line that fetches the service's page through the node, outlives a SIGHUP, and Ctrl-C cleans up", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "demo"],
    cwd: ROOT,
    env: { NEXUS_DEMO_TLS_PORT: "0", NEXUS_DEMO_HTTP_PORT: "0", NEXUS_DEMO_HUB_PORT: "0", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = splitLines(child.stdout);
  let exited = false;
  try {
    const seen = await readUntil(lines, /Press Ctrl-C to stop/, 60_000);
    const curlLine = seen.find((line) => line.trim().startsWith("curl --cacert"))?.trim();
    assert.ok(curlLine, seen.join("\n"));
    const httpLine = seen.find((line) => line.trim().startsWith("curl --resolve"))?.trim();
    assert.ok(httpLine, seen.join("\n"));
    const dir = /files in (\S+)\)/.exec(seen.join("\n"))?.[1];
    assert.ok(dir);

    // The printed command, run as printed (split on spaces: the demo's paths have none).
    const [curl, ...args] = curlLine.split(" ");
    const page = await new Deno.Command(curl, { args: ["-sS", "--max-time", "10", ...args] }).output();
    assert.equal(page.code, 0, new TextDecoder().decode(page.stderr));
    assert.match(
      new TextDecoder().decode(page.stdout),
      /^Hello from the demo service behind Nexus Proxy\.\n/,
    );

    const [curl2, ...args2] = httpLine.split(" ");
    const challenge = await new Deno.Command(curl2, { args: ["-sS", "--max-time", "10", ...args2] }).output();
    assert.equal(
      new TextDecoder().decode(challenge.stdout),
      "plain HTTP reached the service: /.well-known/acme-challenge/test\n",
    );

    // A SIGHUP (an operator trying a reload) is answered, and the demo goes on serving.
    child.kill("SIGHUP");
    await readUntil(lines, /The demo does not reload/, 10_000);
    const again = await new Deno.Command(curl, { args: ["-sS", "--max-time", "10", ...args] }).output();
    assert.equal(again.code, 0, new TextDecoder().decode(again.stderr));

    child.kill("SIGINT");
    const status = await child.status;
    exited = true;
    assert.equal(status.code, 0, await stderr);
    await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
  } finally {
    if (!exited) {
      child.kill("SIGKILL");
      await child.status;
    }
    await stderr;
    await lines.return?.(undefined);
  }
});
