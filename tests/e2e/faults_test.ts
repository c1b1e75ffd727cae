/**
 * Faults, with the agent as a real child process: killed mid-transfer, and a node restarted on the same hub
 * port under it. Affected streams end promptly at both ends, unaffected ones never notice, the agent comes
 * back by itself with backoff and jitter, and the node releases every socket it had (its descriptors are
 * counted in /proc/self/fd; Deno's sanitizers catch leaked timers and resources).
 */

import assert from "node:assert/strict";
import { reconnectDelayMs } from "../../src/links/reconnect.ts";
import { startTestAgent, startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { agentYaml, makeConfigDir, openDescriptors, spawnAgent } from "../helpers/processes.ts";
import {
  digestToEnd,
  openTrafficStream,
  patternSha256,
  startTrafficService,
  type TrafficRoute,
  writePattern,
} from "../helpers/traffic.ts";

const MiB = 1024 * 1024;
const HANG_GUARD_MS = 30_000;

/**
 * Waits until this process has no more descriptors open than `baseline`: every socket the node, the clients
 * and the services had is released. Sockets reset by a peer are closed by the runtime a few milliseconds
 * after the close that was awaited, so this polls (bounded) rather than compares once.
 */
async function descriptorsReleased(baseline: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  let open = await openDescriptors();
  while (open > baseline) {
    if (Date.now() > deadline) throw new Error(`${open} descriptors open, ${baseline} before the test`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    open = await openDescriptors();
  }
}

/** Reads until the stream ends or is reset; returns the bytes read and how it ended. */
async function readUntilCut(
  conn: Deno.Conn,
  onChunk?: (total: number) => void,
): Promise<{ bytes: number; reset: boolean }> {
  const buffer = new Uint8Array(64 * 1024);
  let bytes = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return { bytes, reset: false };
      bytes += n;
      onChunk?.(bytes);
    }
  } catch {
    return { bytes, reset: true };
  }
}

Deno.test("an agent killed mid-transfer: its streams end at both ends, another agent's stream goes on byte-exact, the backend leaves the pool", async () => {
  const descriptorsBefore = await openDescriptors();
  const killedService = await startTrafficService();
  const otherService = await startTrafficService();
  const test = await startTestNode();
  const dir = await makeConfigDir();
  const config = await dir.write(
    "agent.yaml",
    agentYaml({
      hubUrls: [test.hubUrl],
      hostnames: ["app.test.nexus"],
      targets: { "app.test.nexus": killedService.port },
    }),
  );
  const child = await spawnAgent(config);
  const other = await startTestAgent({
    hubUrls: [test.hubUrl],
    hostnames: ["echo.test.nexus"],
    targets: { "echo.test.nexus": otherService.port },
  });
  const killedRoute: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const otherRoute: TrafficRoute = { port: test.tlsPort, protocol: "tls", hostname: "echo.test.nexus" };
  try {
    await waitFor(() => test.node.hub.backends.size === 2, "both backends registered");
    // Two streams on the doomed agent, one each way, and one on the other agent.
    const download = await openTrafficStream(killedRoute, `SEND ${256 * MiB} 1`);
    const upload = await openTrafficStream(killedRoute, "SINK");
    const uploading = writePattern(upload, 256 * MiB, 2).catch(() => "cut");
    const sibling = await openTrafficStream(otherRoute, "ECHO");
    let siblingWritten = 0;
    const siblingDone = Promise.all([
      digestToEnd(sibling),
      writePattern(sibling, 16 * MiB, 3, {
        pieceBytes: 64 * 1024,
        // Paced, so the transfer is still going when the agent dies.
        beforePiece: async (done) => {
          siblingWritten = done;
          if (done % MiB === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        },
      }).then(() => sibling.closeWrite()),
    ]);

    let downloaded = 0;
    const cut = readUntilCut(download, (total) => (downloaded = total));
    await waitFor(
      () => downloaded >= 4 * MiB && killedService.bytesReceived >= 4 * MiB,
      "both transfers under way",
      20_000,
    );
    assert.equal(killedService.open, 2);
    assert.ok(siblingWritten < 16 * MiB, "the sibling is still transferring when the agent dies");
    child.kill("SIGKILL");
    await child.exited;

    // The affected clients see their streams end (not hang), short of what was asked for.
    const ended = await withTimeout(cut, "the download's end");
    assert.ok(ended.bytes < 256 * MiB);
    assert.equal(await withTimeout(uploading, "the upload's end"), "cut");
    // The service side of the dead agent's streams is closed too (by the kernel, with the process).
    await withTimeout(
      waitFor(() => killedService.open === 0, "the service's connections closed", HANG_GUARD_MS),
      "the service side",
    );
    // The backend left the pool: the name is refused now, and counted.
    await waitFor(() => test.node.hub.backends.size === 1, "the dead backend's removal");
    await assert.rejects(openTrafficStream(killedRoute, "ECHO"));
    assert.equal(test.node.refusals.total("no_backend"), 1);

    // The other agent's stream never noticed.
    const [echoed] = await withTimeout(siblingDone, "the sibling stream");
    assert.deepEqual(echoed, { bytes: 16 * MiB, sha256: patternSha256(16 * MiB, 3) });
    download.close();
    upload.close();
    sibling.close();
  } finally {
    await child.stop();
    await other.stop(0);
    await test.close();
    await killedService.close();
    await otherService.close();
    await dir.remove();
  }
  // Every socket the node, the agent's sessions and the clients had is released.
  await descriptorsReleased(descriptorsBefore);
});

/** The `retry_in_ms` values of the agent's reconnect lines, in order. */
function retryDelays(lines: readonly string[]): number[] {
  return lines.flatMap((line) => {
    const match = /(?:reconnecting|retrying) .*retry_in_ms=(\d+)/.exec(line);
    return match === null ? [] : [Number(match[1])];
  });
}

Deno.test("a node restarted on the same hub port: open streams end at both ends, the agent comes back by itself with backoff and jitter", async () => {
  const descriptorsBefore = await openDescriptors();
  const service = await startTrafficService();
  const first = await startTestNode();
  const hubPort = first.node.hubAddress.port;
  const dir = await makeConfigDir();
  const config = await dir.write(
    "agent.yaml",
    agentYaml({
      hubUrls: [first.hubUrl],
      hostnames: ["app.test.nexus"],
      targets: { "app.test.nexus": service.port },
    }),
  );
  const child = await spawnAgent(config);
  let second: Awaited<ReturnType<typeof startTestNode>> | null = null;
  try {
    await waitFor(() => first.node.hub.backends.size === 1, "the agent's registration");
    const route: TrafficRoute = { port: first.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
    const open = await openTrafficStream(route, `SEND ${256 * MiB} 4`);
    let received = 0;
    const cut = readUntilCut(open, (total) => (received = total));
    await waitFor(() => received >= MiB, "the download under way");
    const linesBefore = child.lines.length;

    await first.close();
    // The client's stream ends with the node, and the service's end of it with the agent's session.
    const ended = await withTimeout(cut, "the client's end");
    assert.ok(ended.bytes < 256 * MiB);
    open.close();
    await withTimeout(
      waitFor(() => service.open === 0, "the service side closed", HANG_GUARD_MS),
      "the service side",
    );
    await child.waitForLine(/hub session ended; reconnecting/, { from: linesBefore });

    // The node stays down for three failed attempts: the delays grow as the backoff says, each within its
    // jitter range ([ceiling/2, ceiling], ceilings 1 s, 2 s, 4 s, 8 s for initialDelaySeconds 1).
    await waitFor(
      () => child.matching(/cannot connect to hub; retrying/).length >= 2,
      "two failed attempts",
      20_000,
    );
    second = await startTestNode({ hubPort });
    await child.waitForLine(/connected to hub/, { from: linesBefore, timeoutMs: 20_000 });
    const delays = retryDelays(child.lines.slice(linesBefore));
    assert.ok(delays.length >= 3, child.lines.join("\n"));
    delays.forEach((delay, attempt) => {
      const ceiling = Math.min(8_000, 1_000 * 2 ** attempt);
      assert.ok(
        delay >= ceiling / 2 && delay <= ceiling,
        `attempt ${attempt}: ${delay} ms outside [${ceiling / 2}, ${ceiling}]`,
      );
      assert.equal(
        reconnectDelayMs(attempt, 1_000, 8_000, () => (delay - ceiling / 2) / (ceiling / 2)),
        delay,
      );
    });

    // It serves again, byte-exact, on the restarted node.
    await waitFor(
      () => second!.node.hub.backends.size === 1,
      "the agent's registration at the restarted node",
    );
    const again = await openTrafficStream(
      { port: second.tlsPort, protocol: "tls", hostname: "app.test.nexus" },
      `SEND ${8 * MiB} 5`,
    );
    const got = await withTimeout(digestToEnd(again), "the transfer through the restarted node");
    again.close();
    assert.deepEqual(got, { bytes: 8 * MiB, sha256: patternSha256(8 * MiB, 5) });
  } finally {
    await child.stop();
    await second?.close();
    await first.close();
    await service.close();
    await dir.remove();
  }
  await descriptorsReleased(descriptorsBefore);
});
