/**
 * No head-of-line blocking, through a real node and agent: a client (or a local service) that stops reading
 * holds back its own stream only; another stream on the same backend session goes on at full speed, and the
 * stalled one gets every byte once it reads again. The node's buffering for the stalled stream stays within
 * the credit window. With a backend of the original protocol, pause/resume is the brake, and a backend that
 * honours neither gets its stream closed at `legacyStreamBufferBytes`, alone.
 */

import assert from "node:assert/strict";
import {
  CREDIT_REPLENISH_BATCH,
  INITIAL_STREAM_CREDITS,
  MAX_DATA_PAYLOAD_BYTES,
} from "../../src/protocol/frames.ts";
import { startTestAgent, startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { connectLegacyBackend } from "../helpers/legacy_backend.ts";
import { patternBytes, sha256Hex, writeAll } from "../helpers/services.ts";
import {
  digestToEnd,
  openTrafficStream,
  patternSha256,
  readSinkAnswer,
  samplePeak,
  startTrafficService,
  StreamDigest,
  type TrafficRoute,
  waitUntilQuiet,
  writePattern,
} from "../helpers/traffic.ts";

const MiB = 1024 * 1024;
const STALLED_BYTES = 64 * MiB;
const SIBLING_BYTES = 8 * MiB;
/** What a receiver may hold for one stream: the window plus the tolerated over-send, in full-size frames. */
const STREAM_BUFFER_BOUND = (INITIAL_STREAM_CREDITS + CREDIT_REPLENISH_BATCH + 1) * MAX_DATA_PAYLOAD_BYTES;
/** A hang guard for transfers, not a speed requirement. */
const TRANSFER_TIMEOUT_MS = 60_000;

/** Echoes 8 MiB through `route` and checks every byte. */
async function echoSibling(route: TrafficRoute, seed: number): Promise<void> {
  const conn = await openTrafficStream(route, "ECHO");
  try {
    const [echoed] = await withTimeout(
      Promise.all([digestToEnd(conn), writePattern(conn, SIBLING_BYTES, seed).then(() => conn.closeWrite())]),
      "the sibling stream",
    );
    assert.deepEqual(echoed, { bytes: SIBLING_BYTES, sha256: patternSha256(SIBLING_BYTES, seed) });
  } finally {
    conn.close();
  }
}

/**
 * A node and one agent session serving two names: `app.test.nexus` (the stream to stall) and `echo.test.nexus`
 * (its sibling), each from its own traffic service.
 */
async function stalledAndSibling() {
  const stalledService = await startTrafficService();
  const echoService = await startTrafficService();
  const node = await startTestNode();
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: ["*.test.nexus"],
    targets: { "app.test.nexus": stalledService.port, "echo.test.nexus": echoService.port },
  });
  const session = [...node.node.hub.backends][0].session;
  const stalledRoute: TrafficRoute = { port: node.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const siblingRoute: TrafficRoute = { port: node.tlsPort, protocol: "tls", hostname: "echo.test.nexus" };
  return {
    stalledService,
    echoService,
    node,
    agent,
    session,
    stalledRoute,
    siblingRoute,
    async close() {
      await agent.stop(0);
      await node.close();
      await stalledService.close();
      await echoService.close();
    },
  };
}

Deno.test("download: a client that stops reading 64 MiB does not slow an 8 MiB stream on the same agent session", async () => {
  const { stalledService, session, stalledRoute, siblingRoute, close } = await stalledAndSibling();
  const stalled = await openTrafficStream(stalledRoute, `SEND ${STALLED_BYTES} 1`);
  // The session's buffer is measured while the stalled stream is its only stream: before the sibling starts
  // and while the stalled client catches up.
  let peak = samplePeak(() => session.bufferedBytes);
  try {
    const heldAt = await waitUntilQuiet(() => stalledService.bytesSent, "the stalled download");
    assert.ok(heldAt < STALLED_BYTES, "the service is held back, not done");
    assert.ok(session.bufferedBytes > 0, "the node holds the stalled stream's window");
    const peakWhileStalled = peak.stop();

    await echoSibling(siblingRoute, 2);
    assert.equal(stalledService.bytesSent, heldAt, "the stalled stream did not move meanwhile");

    // The client reads again: every byte arrives.
    peak = samplePeak(() => session.bufferedBytes);
    const received = await withTimeout(digestToEnd(stalled), "the stalled download");
    assert.deepEqual(received, { bytes: STALLED_BYTES, sha256: patternSha256(STALLED_BYTES, 1) });
    const peakBytes = Math.max(peakWhileStalled, peak.stop());
    assert.ok(
      peakBytes <= STREAM_BUFFER_BOUND,
      `the node buffered ${peakBytes} bytes for one stalled stream; the window allows ${STREAM_BUFFER_BOUND}`,
    );
  } finally {
    peak.stop();
    stalled.close();
    await close();
  }
});

Deno.test("upload: a service that stops reading 64 MiB does not slow an 8 MiB stream on the same agent session", async () => {
  const { stalledService, agent, session, stalledRoute, siblingRoute, close } = await stalledAndSibling();
  stalledService.pauseReading();
  const stalled = await openTrafficStream(stalledRoute, "SINK");
  let written = 0;
  const upload = writePattern(stalled, STALLED_BYTES, 3, { beforePiece: (done) => void (written = done) })
    .then(() => stalled.closeWrite());
  upload.catch(() => {});
  let agentPeak = samplePeak(() => agent.bufferedBytes);
  const nodePeak = samplePeak(() => session.bufferedBytes);
  try {
    const heldAt = await waitUntilQuiet(() => written, "the stalled upload");
    assert.ok(heldAt < STALLED_BYTES, "the client is held back, not done");
    assert.ok(agent.bufferedBytes > 0, "the agent holds the stalled stream's window");
    const agentPeakWhileStalled = agentPeak.stop();

    await echoSibling(siblingRoute, 4);
    assert.equal(written, heldAt, "the stalled stream did not move meanwhile");

    // The service reads again: every byte arrives.
    agentPeak = samplePeak(() => agent.bufferedBytes);
    stalledService.resumeReading();
    await withTimeout(upload, "the stalled upload");
    const answer = await withTimeout(readSinkAnswer(stalled), "the sink's answer");
    assert.deepEqual(answer, { bytes: STALLED_BYTES, sha256: patternSha256(STALLED_BYTES, 3) });
    const agentPeakBytes = Math.max(agentPeakWhileStalled, agentPeak.stop());
    assert.ok(
      agentPeakBytes <= STREAM_BUFFER_BOUND,
      `the agent buffered ${agentPeakBytes} bytes for one stalled stream; the window allows ${STREAM_BUFFER_BOUND}`,
    );
    // Nothing flows from the agent to the node for an upload but the sink's short answer (and the echo of
    // the sibling, which is read as it arrives).
    assert.ok(nodePeak.stop() <= STREAM_BUFFER_BOUND);
  } finally {
    agentPeak.stop();
    nodePeak.stop();
    stalled.close();
    await close();
  }
});

Deno.test("limits.streamWindowBytes bounds what the node holds for a stalled download, and nothing is lost", async () => {
  const windowBytes = 256 * 1024;
  const service = await startTrafficService();
  const node = await startTestNode({ limits: { streamWindowBytes: windowBytes } });
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  const session = [...node.node.hub.backends][0].session;
  const route: TrafficRoute = { port: node.tlsPort, protocol: "tls", hostname: "app.test.nexus" };
  const stalled = await openTrafficStream(route, `SEND ${16 * MiB} 9`);
  const peak = samplePeak(() => session.bufferedBytes);
  try {
    await waitUntilQuiet(() => service.bytesSent, "the stalled download");
    assert.ok(session.bufferedBytes > 0);
    const received = await withTimeout(digestToEnd(stalled), "the stalled download");
    assert.deepEqual(received, { bytes: 16 * MiB, sha256: patternSha256(16 * MiB, 9) });
    const bound = windowBytes + (CREDIT_REPLENISH_BATCH + 1) * MAX_DATA_PAYLOAD_BYTES;
    const peakBytes = peak.stop();
    assert.ok(peakBytes <= bound, `the node buffered ${peakBytes} bytes; the window allows ${bound}`);
  } finally {
    peak.stop();
    stalled.close();
    await agent.stop(0);
    await node.close();
    await service.close();
  }
});

/** Opens a plain-HTTP client through the node; the head is the first data the backend sees. */
async function httpClient(port: number): Promise<{ conn: Deno.Conn; head: Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: app.test.nexus\r\n\r\n");
  await writeAll(conn, head);
  return { conn, head };
}

Deno.test("original protocol: a backend that ignores credits has only its stalled stream closed, at legacyStreamBufferBytes", async () => {
  // The default cap; the sibling moves less than the cap in total, so it can never overflow, however the
  // scheduler batches its frames.
  const cap = 4 * MiB;
  const node = await startTestNode({ limits: { legacyStreamBufferBytes: cap } });
  const backend = await connectLegacyBackend(node.hubUrl, ["app.test.nexus"]);
  const { peer } = backend;
  const opens = () => peer.controls().flatMap((m) => m.type === "open" ? [m.id] : []);
  const closes = () => peer.controls().flatMap((m) => m.type === "close" ? [m] : []);
  let stalledId = "";
  let siblingId = "";
  // The sibling's data is echoed at once, as a backend serving it normally would.
  peer.onFrame = (frame) => {
    if (frame.kind === "data" && frame.id === siblingId) peer.sendData(siblingId, frame.payload);
  };
  try {
    await waitFor(() => node.node.hub.backends.size === 1, "the legacy backend's registration");
    const stalled = await httpClient(node.httpPort);
    await peer.waitFor(() => opens().length === 1, "the stalled stream's connect");
    stalledId = opens()[0];

    // The backend floods the stalled stream without waiting for anything, as the original client does.
    const flood = (async () => {
      const piece = patternBytes(16 * 1024, 5);
      for (
        let sent = 0;
        sent < 256 * MiB && !closes().some((c) => c.id === stalledId);
        sent += piece.length
      ) {
        peer.sendData(stalledId, piece);
        if (sent % MiB === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    await withTimeout(
      peer.waitFor(
        () => closes().some((c) => c.id === stalledId),
        "the stalled stream's close",
        TRANSFER_TIMEOUT_MS,
      ),
      "the overflow",
    );
    await flood;
    assert.deepEqual(closes(), [{ type: "close", id: stalledId, reason: "buffer_full" }]);

    // The session and its other streams carry on.
    const sibling = await httpClient(node.httpPort);
    await peer.waitFor(() => opens().length === 2, "the sibling stream's connect");
    siblingId = opens()[1];
    // The head reached the backend before siblingId was known: echo it by hand.
    const headFrame = peer.received.find((f) => f.kind === "data" && f.id === siblingId);
    if (headFrame?.kind === "data") peer.sendData(siblingId, headFrame.payload);
    const payload = patternBytes(2 * MiB, 6);
    const echoed = new StreamDigest();
    const buffer = new Uint8Array(64 * 1024);
    await withTimeout(
      Promise.all([
        writeAll(sibling.conn, payload),
        (async () => {
          while (echoed.bytes < sibling.head.length + payload.length) {
            const n = await sibling.conn.read(buffer);
            if (n === null) throw new Error(`sibling ended after ${echoed.bytes} bytes`);
            echoed.update(buffer.subarray(0, n));
          }
        })(),
      ]),
      "the sibling stream",
    );
    const expected = new Uint8Array(sibling.head.length + payload.length);
    expected.set(sibling.head);
    expected.set(payload, sibling.head.length);
    assert.equal(echoed.hex(), await sha256Hex(expected));
    assert.equal(node.node.hub.backends.size, 1, "the backend session is still up");
    sibling.conn.close();
    // The stalled client's connection was closed by the node.
    const tail = new Uint8Array(64 * 1024);
    await withTimeout(
      (async () => {
        try {
          while ((await stalled.conn.read(tail)) !== null) {
            // Drain what was delivered before the close.
          }
        } catch {
          // A reset is a close too.
        }
      })(),
      "the stalled client's close",
    );
    stalled.conn.close();
  } finally {
    await backend.close();
    await node.close();
  }
});

Deno.test("original protocol: pause_stream holds back only its own client's upload; resume_stream delivers the rest", async () => {
  const node = await startTestNode();
  const backend = await connectLegacyBackend(node.hubUrl, ["app.test.nexus"]);
  const { peer } = backend;
  const opens = () => peer.controls().flatMap((m) => m.type === "open" ? [m.id] : []);
  const received = new Map<string, StreamDigest>();
  let paused = "";
  let siblingId = "";
  peer.onFrame = (frame) => {
    if (frame.kind !== "data") return;
    let digest = received.get(frame.id);
    if (digest === undefined) received.set(frame.id, digest = new StreamDigest());
    digest.update(frame.payload);
    if (frame.id === siblingId) peer.sendData(siblingId, frame.payload);
  };
  const framesOf = (id: string) => peer.received.filter((f) => f.kind === "data" && f.id === id).length;
  try {
    await waitFor(() => node.node.hub.backends.size === 1, "the legacy backend's registration");
    const uploader = await httpClient(node.httpPort);
    await peer.waitFor(() => opens().length === 1, "the uploading stream's connect");
    paused = opens()[0];
    // The original client pauses at 48 queued frames (§7.2); here, at once.
    peer.sendControl({ type: "pause", id: paused });
    await peer.barrier();
    const framesAtPause = framesOf(paused);
    const payload = patternBytes(8 * MiB, 7);
    let written = 0;
    const upload = (async () => {
      for (let offset = 0; offset < payload.length; offset += 64 * 1024) {
        await writeAll(uploader.conn, payload.subarray(offset, offset + 64 * 1024));
        written = offset + 64 * 1024;
      }
    })();
    upload.catch(() => {});
    const heldAt = await waitUntilQuiet(() => written, "the paused upload");
    assert.ok(heldAt < payload.length, "the client is held back, not done");
    await peer.barrier();
    assert.equal(framesOf(paused), framesAtPause, "not one frame of a paused stream after the pause");

    // A sibling on the same backend is not held back.
    const sibling = await httpClient(node.httpPort);
    await peer.waitFor(() => opens().length === 2, "the sibling stream's connect");
    siblingId = opens()[1];
    const head = received.get(siblingId);
    const headBytes = head?.bytes ?? 0;
    if (headBytes > 0) peer.sendData(siblingId, sibling.head);
    const echoedBytes = 2 * MiB;
    const siblingPayload = patternBytes(echoedBytes, 8);
    const buffer = new Uint8Array(64 * 1024);
    let got = 0;
    await withTimeout(
      Promise.all([
        writeAll(sibling.conn, siblingPayload),
        (async () => {
          while (got < headBytes + echoedBytes) {
            const n = await sibling.conn.read(buffer);
            if (n === null) throw new Error(`sibling ended after ${got} bytes`);
            got += n;
          }
        })(),
      ]),
      "the sibling stream",
    );
    assert.equal(got, sibling.head.length + echoedBytes);
    assert.equal(framesOf(paused), framesAtPause, "the paused stream stayed paused");
    sibling.conn.close();

    // Resume: the rest of the upload arrives, byte-exact.
    peer.sendControl({ type: "resume", id: paused });
    await withTimeout(upload, "the resumed upload");
    const total = uploader.head.length + payload.length;
    await withTimeout(
      peer.waitFor(
        () => (received.get(paused)?.bytes ?? 0) >= total,
        "the whole upload",
        TRANSFER_TIMEOUT_MS,
      ),
      "the resumed upload",
    );
    const expected = new Uint8Array(total);
    expected.set(uploader.head);
    expected.set(payload, uploader.head.length);
    assert.equal(received.get(paused)?.bytes, total);
    assert.equal(received.get(paused)?.hex(), await sha256Hex(expected));
    peer.sendControl({ type: "close", id: paused, reason: "normal" });
    uploader.conn.close();
  } finally {
    await backend.close();
    await node.close();
  }
});
