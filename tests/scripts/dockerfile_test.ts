/**
 * The Dockerfile's promises that can be checked without Docker: it exposes the hub's port beside the relay's,
 * and its HEALTHCHECK command, run as Docker runs it, passes against a live admin listener's /healthz and fails
 * when nothing answers.
 */

import assert from "node:assert/strict";
import { startTestNode } from "../helpers/cluster.ts";
import { REPO_ROOT } from "../helpers/processes.ts";

const DOCKERFILE = await Deno.readTextFile(`${REPO_ROOT}Dockerfile`);

/** The HEALTHCHECK's exec-form command (its lines joined where they end in a backslash). */
function healthCheckCommand(): string[] {
  const joined = DOCKERFILE.replace(/\\\n\s*/g, " ");
  const line = joined.split("\n").find((l) => l.startsWith("HEALTHCHECK "));
  assert.ok(line !== undefined, "a HEALTHCHECK line");
  return JSON.parse(line.slice(line.indexOf("CMD ") + 4));
}

async function runHealthCheck(url: string): Promise<number> {
  const [command, ...args] = healthCheckCommand();
  assert.equal(command, "deno");
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NEXUS_HEALTH_URL: url, NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  return output.code;
}

Deno.test("the image exposes the relay's ports and the hub's", () => {
  const exposed = DOCKERFILE.split("\n").find((line) => line.startsWith("EXPOSE "));
  assert.deepEqual(exposed?.split(/\s+/).slice(1), ["80", "443", "8443"]);
});

Deno.test("the HEALTHCHECK passes against an admin listener's /healthz and fails when nothing answers", async () => {
  const node = await startTestNode({
    admin: {
      hostname: "127.0.0.1",
      port: 0,
      token: new TextEncoder().encode("a-token-the-check-never-needs"),
    },
  });
  const port = node.node.adminAddress.port;
  try {
    assert.equal(await runHealthCheck(`http://127.0.0.1:${port}/healthz`), 0);
  } finally {
    await node.close();
  }
  assert.equal(await runHealthCheck(`http://127.0.0.1:${port}/healthz`), 1, "the node is gone");
});
