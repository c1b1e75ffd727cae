/**
 * The node-wide receive budget: windows reserved from it when streams open, smaller windows once it runs low
 * (never below the minimum), and reservations returned when streams go, checked on the wire of a real
 * WebSocket (the credits each `connect` grants).
 */

import { NEXUS_MUX, ORIGINAL } from "../../src/mux/dialect.ts";
import assert from "node:assert/strict";
import { BufferBudget } from "../../src/mux/flow_control.ts";
import { MuxSession } from "../../src/mux/session.ts";
import { MIN_RECEIVE_WINDOW_FRAMES } from "../../src/mux/flow_control.ts";
import { MAX_DATA_PAYLOAD_BYTES } from "../../src/protocol/frames.ts";
import {
  openWebSocketPair,
  RawPeer,
  sessionOptions,
  TEST_OPEN_INFO,
  whenClosed,
} from "../helpers/ws_pair.ts";

const FRAME = MAX_DATA_PAYLOAD_BYTES;

Deno.test("budget: reserves what is wanted while it lasts, then the minimum; releases give it back", () => {
  const budget = new BufferBudget(10 * FRAME, FRAME);
  assert.equal(budget.reserve(8, 2), 8);
  assert.equal(budget.reserve(8, 2), 2);
  assert.equal(budget.availableBytes, 0);
  assert.equal(budget.reserve(8, 2), 2, "a spent budget still grants the minimum");
  assert.equal(budget.availableBytes, -2 * FRAME);
  budget.release(2);
  budget.release(8);
  assert.equal(budget.reserve(8, 2), 8);
});

Deno.test("session: windows granted in connect shrink as the budget runs low and recover when streams close", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const budget = new BufferBudget(12 * FRAME, FRAME);
  const session = new MuxSession(
    sockets.client,
    sessionOptions({ dialect: NEXUS_MUX, receiveWindowFrames: 8, receiveBudget: budget }),
  );
  try {
    const first = session.openStream(TEST_OPEN_INFO)!;
    const second = session.openStream(TEST_OPEN_INFO)!;
    const third = session.openStream(TEST_OPEN_INFO)!;
    await peer.waitFor(() => peer.controls().length === 3, "three connects");
    const granted = () =>
      peer.controls().flatMap((message) => message.type === "open" ? [message.credits] : []);
    assert.deepEqual(granted(), [8, 4, MIN_RECEIVE_WINDOW_FRAMES]);

    // The peer closing one stream and this side closing another both give their windows back.
    peer.sendControl({ type: "close", id: first.id, reason: "normal" });
    await peer.barrier();
    await second.close("done");
    assert.equal(budget.availableBytes, (12 - 8 - 4 + 8 + 4 - MIN_RECEIVE_WINDOW_FRAMES) * FRAME);
    session.openStream(TEST_OPEN_INFO);
    await peer.waitFor(() => granted().length === 4, "a fourth connect");
    assert.equal(granted()[3], 8);
    await third.close("done");
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await whenClosed(sockets.server);
    await sockets.close();
  }
  assert.equal(budget.availableBytes, 12 * FRAME, "a closed session returns every reservation");
});

Deno.test("session: a session of the original protocol takes nothing from the budget", async () => {
  const sockets = await openWebSocketPair();
  const peer = new RawPeer(sockets.server);
  const budget = new BufferBudget(4 * FRAME, FRAME);
  const session = new MuxSession(
    sockets.client,
    sessionOptions({ dialect: ORIGINAL, receiveWindowFrames: 8, receiveBudget: budget }),
  );
  try {
    session.openStream(TEST_OPEN_INFO);
    await peer.waitFor(() => peer.controls().length === 1, "a connect");
    assert.equal(budget.availableBytes, 4 * FRAME);
  } finally {
    session.close(1000, "test over");
    await session.closed;
    await whenClosed(sockets.server);
    await sockets.close();
  }
});
