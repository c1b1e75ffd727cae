/**
 * Log lines in both formats (and a node child process writing JSON lines to stderr only), and the rate-limited
 * log's counts reaching whoever listens to its events.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { createLogger, formatLogLine, RateLimitedLog } from "../../src/log/logger.ts";
import { withTimeout } from "../helpers/cluster.ts";
import { makeConfigDir, nodeYaml, REPO_ROOT } from "../helpers/processes.ts";

const TS = new Date("2026-11-26T11:02:38.123Z");

Deno.test("a text line is the time, the level, the component, the message and key=value fields", () => {
  assert.equal(
    formatLogLine("text", {
      ts: TS,
      level: "warn",
      component: "relay",
      message: "connection refused: no sni",
      fields: {
        client: "192.0.2.7:4711",
        port: 443,
        ech: false,
        detail: 'a "quoted" value',
        skipped: undefined,
      },
    }),
    "2026-11-26T11:02:38.123Z WARN  relay: connection refused: no sni client=192.0.2.7:4711 port=443 ech=false " +
      'detail="a \\"quoted\\" value"',
  );
});

Deno.test("a JSON line carries ts, level, component and msg first, then the fields with their types", () => {
  const line = formatLogLine("json", {
    ts: TS,
    level: "info",
    component: "hub",
    message: "backend registered",
    fields: { name: "app-1", weight: 2, ok: true, msg: "a field named msg", skipped: undefined },
  });
  assert.equal(
    line,
    '{"ts":"2026-11-26T11:02:38.123Z","level":"info","component":"hub","msg":"backend registered",' +
      '"name":"app-1","weight":2,"ok":true,"field_msg":"a field named msg"}',
  );
});

Deno.test("property: every JSON line is one line of JSON that gives back the message and every field", () => {
  fc.assert(
    fc.property(
      fc.string(),
      fc.dictionary(fc.string({ minLength: 1 }), fc.oneof(fc.string(), fc.integer(), fc.boolean())),
      (message, fields) => {
        const line = formatLogLine("json", { ts: TS, level: "error", component: "agent", message, fields });
        assert.ok(!line.includes("\n"));
        const parsed = JSON.parse(line);
        assert.equal(parsed.msg, message);
        for (const [key, value] of Object.entries(fields)) {
          const written = ["ts", "level", "component", "msg"].includes(key) ? `field_${key}` : key;
          assert.deepEqual(parsed[written], value);
        }
      },
    ),
  );
});

Deno.test("the rate-limited log hands every event to its listener, logged or held back", () => {
  const seen: Array<[string, unknown]> = [];
  const log = new RateLimitedLog(createLogger("test"), {
    level: "debug",
    perWindow: 1,
    onEvent: (kind, fields) => seen.push([kind, fields?.port]),
  });
  for (let i = 0; i < 3; i++) log.event("no_sni", "refused", { port: 443 });
  log.event("not_tls", "refused");
  assert.deepEqual(seen, [["no_sni", 443], ["no_sni", 443], ["no_sni", 443], ["not_tls", undefined]]);
  assert.equal(log.total("no_sni"), 3);
});

Deno.test("a node with logFormat json writes only JSON lines, all to stderr, stdout stays empty", async () => {
  const dir = await makeConfigDir();
  try {
    const config = await dir.write(
      "node.yaml",
      nodeYaml({ drainTimeoutSeconds: 0, extra: "logFormat: json" }),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-read", "--allow-env", "src/main.ts", "serve", "--config", config],
      cwd: REPO_ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = new Response(child.stdout).text();
    const lines: string[] = [];
    let partial = "";
    const stderr = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
        const parts = (partial + text).split("\n");
        partial = parts.pop() ?? "";
        lines.push(...parts);
        if (parts.some((line) => line.includes('"msg":"node started"'))) child.kill("SIGTERM");
      }
    })();
    const status = await withTimeout(child.status, "the node's exit");
    await stderr;
    assert.equal(status.code, 0, lines.join("\n"));
    assert.equal(await stdout, "");
    const parsed = lines.map((line) => JSON.parse(line));
    assert.ok(parsed.length >= 4, lines.join("\n"));
    for (const line of parsed) {
      assert.deepEqual(Object.keys(line).slice(0, 4), ["ts", "level", "component", "msg"]);
      assert.ok(!Number.isNaN(Date.parse(line.ts)));
    }
    const started = parsed.find((line) => line.msg === "node started");
    assert.deepEqual([started.level, started.component, typeof started.peers], ["info", "node", "number"]);
    assert.ok(parsed.some((line) => line.msg === "stopped"));
  } finally {
    await dir.remove();
  }
});
