/**
 * A short soak (`scripts/soak.ts`, run as it would be from the command line): a node and an agent as child
 * processes, a few hundred streams of random sizes and pacing (stalls, half-closes), and the agent killed and
 * started again in the middle. Nothing may be lost or corrupted, nothing may fail but what the kill explains,
 * the agent must come back, and the node must end with the descriptors it started with.
 */

import assert from "node:assert/strict";
import type { IdleReport, SoakReport } from "../scripts/soak/streams.ts";
import { REPO_ROOT } from "./helpers/processes.ts";

Deno.test("soak: 15 s of concurrent streams with an agent kill lose no byte and leak no descriptor", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "scripts/soak.ts",
      "--duration",
      "15",
      "--concurrency",
      "20",
      "--max-bytes",
      String(1024 * 1024),
      "--kill-agent-at",
      "0.4",
      "--seed",
      "42",
      "--json",
    ],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  const report: SoakReport = JSON.parse(new TextDecoder().decode(output.stdout)).report;
  const { streams, bytes, agent, node } = report;
  assert.deepEqual(streams.failedUnexpectedly, {}, stderr);
  assert.equal(streams.lost, 0);
  assert.equal(streams.corrupted, 0);
  assert.equal(bytes.lostOnCompleted, 0);
  assert.equal(agent.kills, 1);
  assert.ok(streams.ok >= 100, `only ${streams.ok} streams completed`);
  assert.ok(streams.okAfterAgentRestart > 0, "no stream completed after the agent came back");
  assert.equal(
    streams.started,
    streams.ok + streams.cutByAgentKill + streams.refusedWhileAgentDown,
    "every stream is accounted for",
  );
  assert.ok(bytes.verified > 0);
  // At most as many as at the start: a descriptor of the start-up (the agent's first handshake) may be gone.
  assert.ok(
    node.descriptorsAtEnd <= node.descriptorsAtStart,
    `the node released every socket: ${node.descriptorsAtEnd} open at the end, ${node.descriptorsAtStart} at the start`,
  );
});

Deno.test("idle measurement: each idle proxied connection holds exactly one descriptor at the node, released at close", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "scripts/soak.ts",
      "--idle",
      "200",
      "--json",
    ],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const report: IdleReport = JSON.parse(new TextDecoder().decode(output.stdout));
  assert.equal(report.connections, 200);
  assert.equal(report.nodeDescriptorsWithConnections, report.nodeDescriptorsBefore + 200);
  assert.equal(report.nodeDescriptorsAfterClose, report.nodeDescriptorsBefore);
});
