/**
 * The end of a stream whose two directions both ended with `close_write` (§5.3 of docs/protocol.md): each
 * side lets go of it without a `disconnect`, since both already know it is over; a stream closed with a
 * direction still open tells the peer, as before. Real sessions over a real WebSocket on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { MUX_SUBPROTOCOL, MuxSession } from "../../src/mux/session.ts";
import {
  openSessionPair,
  openWebSocketPair,
  RawPeer,
  sessionOptions,
  TEST_OPEN_INFO,
} from "../helpers/ws_pair.ts";

/** A session opening streams towards a raw peer that records every frame it sends, on a real WebSocket. */
async function withRawPeer(run: (session: MuxSession, peer: RawPeer) => Promise<void>): Promise<void> {
  const sockets = await openWebSocketPair(MUX_SUBPROTOCOL);
  const session = new MuxSession(sockets.client, sessionOptions({ label: "opener" }));
  try {
    await run(session, new RawPeer(sockets.server));
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await sockets.close();
  }
}

Deno.test("both directions ended with close_write: the stream is closed without a disconnect", () =>
  withRawPeer(async (session, peer) => {
    const stream = session.openStream(TEST_OPEN_INFO);
    assert.ok(stream !== null);
    await peer.waitFor(() => peer.controls().some((m) => m.type === "open"), "the connect");
    peer.sendControl({ type: "close_write", id: stream.id });
    assert.equal(await stream.read(), null);
    await stream.closeWrite();
    await stream.close("completed", { graceful: true });
    await peer.barrier();
    const types = peer.controls().filter((m) => "id" in m && m.id === stream.id).map((m) => m.type);
    assert.deepEqual(types, ["open", "close_write"]);
    assert.equal(session.streamCount, 0);
  }));

Deno.test("a stream closed with its peer's direction still open tells the peer", () =>
  withRawPeer(async (session, peer) => {
    const stream = session.openStream(TEST_OPEN_INFO);
    assert.ok(stream !== null);
    await stream.closeWrite();
    await stream.close("completed", { graceful: true });
    await peer.barrier();
    const sent = peer.controls().filter((m) => "id" in m && m.id === stream.id);
    assert.deepEqual(sent.map((m) => m.type), ["open", "close_write", "close"]);
  }));

Deno.test("two sessions: after both half-closes each side forgets the stream, and many streams leave none behind", async () => {
  const pair = await openSessionPair();
  try {
    for (let i = 0; i < 200; i++) {
      const { local, remote } = await pair.openStream();
      await local.write(new Uint8Array([i & 0xff]));
      await local.closeWrite();
      assert.deepEqual(await remote.read(), new Uint8Array([i & 0xff]));
      assert.equal(await remote.read(), null);
      await remote.closeWrite();
      assert.equal(await local.read(), null);
      await Promise.all([
        local.close("completed", { graceful: true }),
        remote.close("completed", { graceful: true }),
      ]);
    }
    assert.equal(pair.opener.streamCount, 0);
    assert.equal(pair.acceptor.streamCount, 0);
  } finally {
    await pair.close();
  }
});
