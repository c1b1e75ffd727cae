/**
 * A real Prometheus (Debian's `prometheus` package, which `.ci/run` installs) scrapes a node and an agent, both
 * child processes from real configs, the node's admin listener behind a bearer token. Through Prometheus's
 * query API: the bytes of a transfer show while it runs and add up exactly once it ends, at the node and at the
 * agent, and a refused connection shows up by its reason and port. `promtool check metrics` accepts both
 * outputs. Without prometheus or promtool the test says it was skipped and why.
 */

import assert from "node:assert/strict";
import { connectTls, withTimeout } from "../helpers/cluster.ts";
import { adminGet } from "../helpers/metrics.ts";
import {
  adminPortOf,
  agentYaml,
  makeConfigDir,
  nodeYaml,
  spawnAgent,
  spawnNode,
  WatchedProcess,
} from "../helpers/processes.ts";
import { writeAll } from "../helpers/services.ts";
import { openTrafficStream, patternSha256, startTrafficService, StreamDigest } from "../helpers/traffic.ts";

const APP = "app.test.nexus";
const TOKEN = "prometheus-scrapes-with-this-token";

/** Whether `command` runs; why not otherwise. */
async function missing(command: string): Promise<string | null> {
  try {
    const output = await new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return output.success ? null : `${command} --version failed`;
  } catch {
    return `${command} is not installed (Debian package prometheus; .ci/run installs it)`;
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** `promtool check metrics` on `text`: its exit code and everything it printed. */
async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const output = await child.output();
  const decoder = new TextDecoder();
  return { code: output.code, output: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

/** A Prometheus server on loopback with its own configuration and storage in `dir`. */
async function startPrometheus(dir: string, config: string) {
  await Deno.writeTextFile(`${dir}/prometheus.yml`, config);
  const port = freePort();
  const process = new WatchedProcess("prometheus", [
    `--config.file=${dir}/prometheus.yml`,
    `--storage.tsdb.path=${dir}/data`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ]);
  const api = `http://127.0.0.1:${port}`;
  await withTimeout(
    (async () => {
      for (;;) {
        if (process.exitStatus !== null) throw new Error(`prometheus exited:\n${process.lines.join("\n")}`);
        const ready = await fetch(`${api}/-/ready`).then(
          (r) => r.body?.cancel().then(() => r.ok),
          () => false,
        );
        if (ready) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })(),
    "prometheus to be ready",
  );
  /** The value of the one series `expr` selects now, or undefined while it selects none. */
  const query = async (expr: string): Promise<number | undefined> => {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = await response.json();
    assert.equal(body.status, "success", JSON.stringify(body));
    const result = body.data.result as Array<{ metric: Record<string, string>; value: [number, string] }>;
    assert.ok(result.length <= 1, `${expr} selects ${result.length} series`);
    return result.length === 0 ? undefined : Number(result[0].value[1]);
  };
  /** Waits until `expr`'s value satisfies `holds`; returns it. */
  const until = (expr: string, holds: (value: number) => boolean, what: string) =>
    withTimeout(
      (async () => {
        for (;;) {
          const value = await query(expr);
          if (value !== undefined && holds(value)) return value;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })(),
      `Prometheus to show ${what} (${expr})`,
      30_000,
    );
  return { process, query, until };
}

Deno.test("Prometheus scrapes node and agent: bytes move with a transfer, refusals by reason; promtool accepts both", async (t) => {
  for (const command of ["prometheus", "promtool"]) {
    const why = await missing(command);
    if (why !== null) {
      await t.step({ name: `skipped: ${why}`, ignore: true, fn: () => {} });
      return;
    }
  }
  const service = await startTrafficService({ tls: false });
  const dir = await makeConfigDir();
  const children: WatchedProcess[] = [];
  try {
    const tokenFile = await dir.write("admin.token", TOKEN);
    const { process: node, ports } = await spawnNode(
      await dir.write(
        "node.yaml",
        nodeYaml({ extra: 'admin:\n  listenAddress: "127.0.0.1:0"\n  tokenFile: "admin.token"' }),
      ),
    );
    children.push(node);
    const nodeAdmin = await adminPortOf(node);
    const agent = await spawnAgent(
      await dir.write(
        "agent.yaml",
        agentYaml({
          hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
          hostnames: [APP],
          targets: { [APP]: service.port },
          extra: 'admin:\n  listenAddress: "127.0.0.1:0"',
        }),
      ),
    );
    children.push(agent);
    const agentAdmin = await adminPortOf(agent);

    await t.step("promtool check metrics passes on both outputs", async () => {
      for (const [port, token] of [[nodeAdmin, TOKEN], [agentAdmin, undefined]] as const) {
        const text = (await adminGet(port, "/metrics", token)).body;
        assert.deepEqual(await promtoolCheck(text), { code: 0, output: "" });
      }
    });

    const prometheus = await startPrometheus(
      dir.path,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: node",
        "    authorization:",
        `      credentials_file: ${tokenFile}`,
        `    static_configs: [{ targets: ["127.0.0.1:${nodeAdmin}"] }]`,
        "  - job_name: agent",
        `    static_configs: [{ targets: ["127.0.0.1:${agentAdmin}"] }]`,
        "",
      ].join("\n"),
    );
    children.push(prometheus.process);
    await prometheus.until('up{job="node"}', (v) => v === 1, "the node scraped");
    await prometheus.until('up{job="agent"}', (v) => v === 1, "the agent scraped");
    const nodeOut = 'nexus_relay_bytes_total{job="node",direction="out"}';
    const agentFromService = 'nexus_agent_bytes_total{job="agent",direction="from_service"}';
    const nodeBefore = await prometheus.until(nodeOut, () => true, "the node's bytes");
    const agentBefore = await prometheus.until(agentFromService, () => true, "the agent's bytes");

    await t.step("a transfer's bytes show while it runs and add up exactly when it ends", async () => {
      const bytes = 64 * 1024 * 1024;
      const conn = await openTrafficStream(
        { port: ports.httpPort, protocol: "http", hostname: APP },
        `SEND ${bytes} 9`,
      );
      const digest = new StreamDigest();
      const buffer = new Uint8Array(64 * 1024);
      // Half, then the client holds back until Prometheus has seen the transfer under way.
      while (digest.bytes < bytes / 2) {
        const n = await conn.read(buffer.subarray(0, Math.min(buffer.length, bytes / 2 - digest.bytes)));
        if (n === null) break;
        digest.update(buffer.subarray(0, n));
      }
      const midway = await prometheus.until(nodeOut, (v) => v > nodeBefore, "the transfer under way");
      assert.ok(midway < nodeBefore + bytes, `mid-transfer ${midway} is below the whole transfer`);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        digest.update(buffer.subarray(0, n));
      }
      conn.close();
      assert.deepEqual([digest.bytes, digest.hex()], [bytes, patternSha256(bytes, 9)]);
      await prometheus.until(nodeOut, (v) => v === nodeBefore + bytes, `${bytes} more bytes out at the node`);
      await prometheus.until(
        agentFromService,
        (v) => v === agentBefore + bytes,
        `${bytes} more bytes from the service`,
      );
    });

    await t.step("a refused connection shows up by its reason and port", async () => {
      const before = await prometheus.query(`nexus_refusals_total{job="node",reason="no_backend"}`) ?? 0;
      const tls = await connectTls(ports.tlsPort, "nobody.test.nexus");
      await assert.rejects(tls.handshake(), /unrecognized ?name|UnrecognisedName|UnrecognizedName/i);
      tls.close();
      await prometheus.until(
        `nexus_refusals_total{job="node",reason="no_backend",port="${ports.tlsPort}"}`,
        (v) => v === before + 1,
        "the refusal",
      );
      const http = await Deno.connect({ hostname: "127.0.0.1", port: ports.httpPort });
      await writeAll(http, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: bad_host!\r\n\r\n"));
      await http.readable.cancel().catch(() => {});
      await prometheus.until(
        `nexus_refusals_total{job="node",reason="bad_request",port="${ports.httpPort}"}`,
        (v) => v === 1,
        "the bad request",
      );
    });
  } finally {
    await Promise.all(children.map((child) => child.stop()));
    await service.close();
    await dir.remove();
  }
});
