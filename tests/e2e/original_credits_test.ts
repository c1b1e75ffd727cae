/**
 * The original's newer generation (the merged v0.3.14 client) as a dialect of its own: a backend written from
 * the rules of docs/protocol.md §7.3, driven frame by frame against a real node. It offers no
 * subprotocol, like the standalone client, but grants credits right after each `connect`, spends the node's
 * credits one per frame, replenishes in batches of 8 as it writes locally, and at teardown sends up to one
 * batch beyond its credits (the `KickstartAndClose` safety valve). The node must take it at its word: bound
 * its streams by the window instead of the standalone client's byte cap, never send it more than it granted,
 * and tolerate the valve.
 */

import assert from "node:assert/strict";
import {
  CREDIT_REPLENISH_BATCH,
  INITIAL_STREAM_CREDITS,
  MAX_DATA_PAYLOAD_BYTES,
} from "../../src/protocol/frames.ts";
import { startTestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { connectLegacyBackend } from "../helpers/legacy_backend.ts";
import { patternBytes, sha256Hex, writeAll } from "../helpers/services.ts";
import { samplePeak, StreamDigest } from "../helpers/traffic.ts";
import type { RawPeer } from "../helpers/ws_pair.ts";

const MiB = 1024 * 1024;
const HOSTNAME = "app.test.nexus";

/** One stream as the merged client keeps it. */
interface CreditStream {
  /** Credits the node granted us (`connect` and its `resume_stream`s), not yet spent. */
  credits: number;
  /** Frames the node sent us beyond what we granted it: must never be positive. */
  forwardOverrun: number;
  /** Frames received and not yet granted back. */
  unacknowledged: number;
  readonly received: StreamDigest;
  wake: (() => void) | null;
}

/** The merged client's flow control (§7.3) over a raw peer; `localWriteDelayMs` paces its grants back. */
function creditBackend(peer: RawPeer, options: { localWriteDelayMs?: number } = {}) {
  const streams = new Map<string, CreditStream>();
  let worstOverrun = -Infinity;
  peer.onFrame = (frame) => {
    if (frame.kind === "control" && frame.message.type === "open") {
      const { id, credits } = frame.message;
      streams.set(id, {
        credits: credits ?? 0,
        forwardOverrun: -INITIAL_STREAM_CREDITS,
        unacknowledged: 0,
        received: new StreamDigest(),
        wake: null,
      });
      // Forward credits: the whole window, right after the connect.
      peer.sendControl({ type: "resume", id, credits: INITIAL_STREAM_CREDITS });
    } else if (frame.kind === "control" && frame.message.type === "resume") {
      const stream = streams.get(frame.message.id);
      if (stream === undefined || frame.message.credits === undefined) return;
      stream.credits += frame.message.credits;
      stream.wake?.();
    } else if (frame.kind === "data") {
      const stream = streams.get(frame.id);
      if (stream === undefined) return;
      stream.received.update(frame.payload);
      stream.forwardOverrun += 1;
      worstOverrun = Math.max(worstOverrun, stream.forwardOverrun);
      stream.unacknowledged += 1;
      if (stream.unacknowledged === CREDIT_REPLENISH_BATCH) {
        stream.unacknowledged = 0;
        const grant = () => {
          stream.forwardOverrun -= CREDIT_REPLENISH_BATCH;
          peer.sendControl({ type: "resume", id: frame.id, credits: CREDIT_REPLENISH_BATCH });
        };
        if (options.localWriteDelayMs) setTimeout(grant, options.localWriteDelayMs);
        else grant();
      }
    }
  };
  return {
    streams,
    /** The largest number of frames the node ever had in flight beyond our grants (≤ 0 when it obeys). */
    get worstOverrun() {
      return worstOverrun;
    },
    /** Sends `bytes` in full frames, one credit each; the last batch goes out regardless (the valve). */
    async send(id: string, bytes: Uint8Array): Promise<void> {
      const stream = streams.get(id)!;
      const frames = Math.ceil(bytes.length / MAX_DATA_PAYLOAD_BYTES);
      for (let i = 0; i < frames; i++) {
        const kickstart = frames - i <= CREDIT_REPLENISH_BATCH;
        while (!kickstart && stream.credits === 0) {
          await new Promise<void>((resolve) => (stream.wake = resolve));
        }
        stream.credits -= 1;
        peer.sendData(id, bytes.subarray(i * MAX_DATA_PAYLOAD_BYTES, (i + 1) * MAX_DATA_PAYLOAD_BYTES));
        if (i % 64 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      peer.sendControl({ type: "close", id, reason: "normal" });
    },
  };
}

/** A plain-HTTP client through the node; the backend sees its head as the stream's first data. */
async function httpClient(port: number): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${HOSTNAME}\r\n\r\n`));
  return conn;
}

Deno.test("original with credits: a download to a slow client is bounded by the window, not the byte cap, and arrives whole", async () => {
  // A byte cap below the window: the standalone client's dialect would close this stream with buffer_full.
  const cap = MiB;
  const node = await startTestNode({ limits: { legacyStreamBufferBytes: cap } });
  const backend = await connectLegacyBackend(node.hubUrl, [HOSTNAME]);
  const flow = creditBackend(backend.peer);
  await waitFor(() => node.node.hub.backends.size === 1, "the backend's registration");
  const client = await httpClient(node.httpPort);
  try {
    await waitFor(() => flow.streams.size === 1, "the stream's connect");
    const [id] = flow.streams.keys();
    const [registered] = node.node.hub.backends;
    await waitFor(
      () => registered.session.dialect.name === "original-credits",
      "the newer generation recognised",
    );
    const payload = patternBytes(16 * MiB, 3);
    const peak = samplePeak(() => registered.session.bufferedBytes);
    const received = new StreamDigest();
    const buffer = new Uint8Array(64 * 1024);
    await withTimeout(
      Promise.all([
        flow.send(id, payload),
        (async () => {
          // A slow reader: 256 KiB, then a pause.
          let sinceNap = 0;
          while (received.bytes < payload.length) {
            const n = await client.read(buffer);
            if (n === null) throw new Error(`download ended after ${received.bytes} bytes`);
            received.update(buffer.subarray(0, n));
            sinceNap += n;
            if (sinceNap >= 256 * 1024) {
              sinceNap = 0;
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          }
        })(),
      ]),
      "the download",
    );
    const peakBytes = peak.stop();
    assert.equal(received.hex(), await sha256Hex(payload));
    // Held up to a window (plus the valve's batch), more than the byte cap would have allowed, never more.
    const window = (INITIAL_STREAM_CREDITS + CREDIT_REPLENISH_BATCH + 1) * MAX_DATA_PAYLOAD_BYTES;
    assert.ok(peakBytes <= window, `peak ${peakBytes} > ${window}`);
    assert.ok(peakBytes > cap, `peak ${peakBytes}: the slow reader should have filled more than the cap`);
    assert.equal(
      backend.peer.controls().some((m) => m.type === "close" && m.reason === "buffer_full"),
      false,
    );
  } finally {
    client.close();
    await backend.close();
    await node.close();
  }
});

Deno.test("original with credits: an upload never runs ahead of the backend's grants, however slowly it writes", async () => {
  const node = await startTestNode();
  const backend = await connectLegacyBackend(node.hubUrl, [HOSTNAME]);
  // Every batch of 8 frames is granted back only 20 ms after it arrived: a slow local service.
  const flow = creditBackend(backend.peer, { localWriteDelayMs: 20 });
  await waitFor(() => node.node.hub.backends.size === 1, "the backend's registration");
  const client = await httpClient(node.httpPort);
  try {
    await waitFor(() => flow.streams.size === 1, "the stream's connect");
    const [id] = flow.streams.keys();
    const payload = patternBytes(8 * MiB, 9);
    await writeAll(client, payload);
    const stream = flow.streams.get(id)!;
    const head = `GET / HTTP/1.1\r\nHost: ${HOSTNAME}\r\n\r\n`.length;
    await withTimeout(
      backend.peer.waitFor(() => stream.received.bytes === head + payload.length, "the upload", 60_000),
      "the upload",
    );
    assert.ok(flow.worstOverrun <= 0, `the node sent ${flow.worstOverrun} frames beyond the grants`);
  } finally {
    client.close();
    await backend.close();
    await node.close();
  }
});
