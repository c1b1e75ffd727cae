/**
 * Received data lives in the connection's message pool until the stream's reader is done with it. A batch
 * (one message holding several frames, as earlier versions sent them) puts several chunks in one buffer:
 * none of them may be overwritten while the reader still holds it, whatever arrives afterwards.
 */

import assert from "node:assert/strict";
import { encodeDataFrame, FRAME_BATCH, streamIdBytes } from "../../src/protocol/frames.ts";
import { MIN_POOLED_MESSAGE_BYTES } from "../../src/transport/message_pool.ts";
import { openSessionPair } from "../helpers/ws_pair.ts";

function batchOf(frames: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(1 + frames.reduce((bytes, frame) => bytes + 4 + frame.length, 0));
  out[0] = FRAME_BATCH;
  let at = 1;
  for (const frame of frames) {
    new DataView(out.buffer).setUint32(at, frame.length);
    out.set(frame, at + 4);
    at += 4 + frame.length;
  }
  return out;
}

Deno.test("a batch of data frames in one pooled message: every chunk stays intact while its reader holds it", async () => {
  const pair = await openSessionPair();
  try {
    const { local, remote } = await pair.openStream();
    const id = streamIdBytes(local.id);
    const chunkBytes = MIN_POOLED_MESSAGE_BYTES / 2 + 100;
    const frame = (fill: number) => encodeDataFrame(id, new Uint8Array(chunkBytes).fill(fill));
    // Together big enough to come from the pool.
    pair.sockets.client.sendParts([batchOf([frame(1), frame(2)])]);
    const first = await remote.read();
    assert.ok(first?.every((b) => b === 1));
    const second = await remote.read();
    assert.ok(second !== null);
    // Messages of pooled size arrive while the reader still holds the second chunk.
    const single = MIN_POOLED_MESSAGE_BYTES + 100;
    for (let fill = 3; fill < 6; fill++) {
      pair.sockets.client.sendParts([encodeDataFrame(id, new Uint8Array(single).fill(fill))]);
    }
    for (let waited = 0; remote.bufferedFrames < 3 && waited < 5_000; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(remote.bufferedFrames, 3);
    assert.ok(second.every((b) => b === 2), "the second chunk of the batch was written over");
    for (let fill = 3; fill < 6; fill++) {
      const chunk = await remote.read();
      assert.equal(chunk?.length, single);
      assert.ok(chunk.every((b) => b === fill));
    }
  } finally {
    await pair.close();
  }
});
