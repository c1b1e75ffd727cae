/**
 * Stream windows at their limits, through a real node and agent: the smallest window the config accepts, and
 * more open streams than the buffer budget covers (new streams then get the minimum window). Both must still
 * move every byte; before credits were returned in batches that fit the window, both stalled for good.
 */

import assert from "node:assert/strict";
import { MAX_DATA_PAYLOAD_BYTES } from "../../src/protocol/frames.ts";
import { startTestAgent, startTestNode, type TestNodeOptions, withTimeout } from "../helpers/cluster.ts";
import {
  digestToEnd,
  openTrafficStream,
  patternSha256,
  startTrafficService,
  type TrafficRoute,
  writePattern,
} from "../helpers/traffic.ts";

const MiB = 1024 * 1024;
const HOSTNAME = "app.test.nexus";

/** A node with `limits`, one agent and one traffic service; returns the route and a cleanup. */
async function cluster(limits: TestNodeOptions["limits"]) {
  const service = await startTrafficService();
  const node = await startTestNode({ limits });
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: [HOSTNAME],
    targets: { [HOSTNAME]: service.port },
  });
  const route: TrafficRoute = { port: node.tlsPort, protocol: "tls", hostname: HOSTNAME };
  return {
    route,
    async close() {
      await agent.stop(0);
      await node.close();
      await service.close();
    },
  };
}

/** Downloads `bytes` from the service and echoes `bytes` through it; checks every byte of both. */
async function downloadAndEcho(
  route: TrafficRoute,
  bytes: number,
  seed: number,
  what: string,
): Promise<void> {
  const download = await openTrafficStream(route, `SEND ${bytes} ${seed}`);
  try {
    await download.closeWrite();
    const received = await withTimeout(digestToEnd(download), `${what}: the download`, 30_000);
    assert.deepEqual(received, { bytes, sha256: patternSha256(bytes, seed) }, `${what}: download`);
  } finally {
    download.close();
  }
  const echo = await openTrafficStream(route, "ECHO");
  try {
    const [echoed] = await withTimeout(
      Promise.all([digestToEnd(echo), writePattern(echo, bytes, seed + 1).then(() => echo.closeWrite())]),
      `${what}: the echo`,
      30_000,
    );
    assert.deepEqual(echoed, { bytes, sha256: patternSha256(bytes, seed + 1) }, `${what}: echo`);
  } finally {
    echo.close();
  }
}

Deno.test("the smallest stream window the config accepts (2 frames, 64 KiB) moves 4 MiB both ways byte-exact", async () => {
  const { route, close } = await cluster({ streamWindowBytes: 2 * MAX_DATA_PAYLOAD_BYTES });
  try {
    await downloadAndEcho(route, 4 * MiB, 1, "64 KiB window");
  } finally {
    await close();
  }
});

Deno.test("with more idle streams held than the buffer budget covers, new streams still move data byte-exact", async () => {
  // Four 8-frame windows cover the budget; 40 idle streams overdraw it tenfold, so new streams get the minimum.
  const windowBytes = 8 * MAX_DATA_PAYLOAD_BYTES;
  const { route, close } = await cluster({
    streamWindowBytes: windowBytes,
    streamBufferBudgetBytes: 4 * windowBytes,
  });
  const idle: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 40; i++) idle.push(await openTrafficStream(route, "ECHO"));
    await downloadAndEcho(route, 4 * MiB, 7, "past the budget");
    // The held streams still work too, each with whatever window it got.
    const [first] = idle;
    const [echoed] = await withTimeout(
      Promise.all([digestToEnd(first), writePattern(first, MiB, 9).then(() => first.closeWrite())]),
      "an idle stream's echo",
      30_000,
    );
    assert.deepEqual(echoed, { bytes: MiB, sha256: patternSha256(MiB, 9) });
  } finally {
    for (const conn of idle) conn.close();
    await close();
  }
});
