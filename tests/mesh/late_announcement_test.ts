/**
 * A link that this node has closed must not act on what its peer still sends during the WebSocket closing
 * handshake: an announcement arriving then would re-add routes for a link the router has already dropped. Our
 * WebSocket drops such messages itself; the session does not rely on that (a message handed to it after its
 * close, as the runtime's WebSocket would deliver one, is ignored too).
 */

import { NEXUS_MUX } from "../../src/mux/dialect.ts";
import assert from "node:assert/strict";
import { createLogger } from "../../src/log/logger.ts";
import { waitForOpen } from "../../src/transport/inbox.ts";
import { MUX_SUBPROTOCOL, MuxSession } from "../../src/mux/session.ts";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import { encodeControlFrame } from "../../src/protocol/frames.ts";

Deno.test("a closed link ignores an announcement that arrives during its closing handshake", async () => {
  let serverSide: Promise<void> = Promise.resolve();
  // The peer answers our first frame with an announcement; our close frame follows that first frame, so the
  // announcement reaches us after we closed and before the peer's close reply.
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request, { protocol: MUX_SUBPROTOCOL });
    socket.onmessage = () => {
      socket.send(encodeControlFrame({ type: "announce", version: 7, routes: ["late.test.nexus"] }));
    };
    serverSide = new Promise((resolve) => (socket.onclose = () => resolve()));
    return response;
  });
  try {
    const ws = new WebSocketClient(`ws://127.0.0.1:${server.addr.port}/mesh`, {
      protocols: [MUX_SUBPROTOCOL],
    });
    assert.equal(await waitForOpen(ws, 5_000), null);
    const announced: string[][] = [];
    const link = new MuxSession(ws, {
      label: "peer under test",
      dialect: NEXUS_MUX,
      log: createLogger("test"),
      maxStreams: 10,
      legacyStreamBufferBytes: 0,
      onAnnounce: (_version, routes) => announced.push([...routes]),
    });
    let messagesAfterClose = 0;
    const closed = new Promise<void>((resolve) => ws.addEventListener("close", () => resolve()));
    link.announce(1, []);
    link.close(1000, "test over");
    // Messages go to `onmessage` alone (our WebSocket has no message listeners): count them on the way in.
    const sessionHandler = ws.onmessage;
    ws.onmessage = (event) => {
      messagesAfterClose += 1;
      sessionHandler?.(event);
    };
    await closed;
    await serverSide;
    assert.equal(messagesAfterClose, 0, "our WebSocket drops what arrives after it sent its close");
    sessionHandler?.(
      new MessageEvent("message", {
        data: encodeControlFrame({ type: "announce", version: 8, routes: ["later.test.nexus"] }),
      }),
    );
    assert.deepEqual(announced, []);
    assert.deepEqual(await link.closed, { reason: "test over", local: true });
  } finally {
    await server.shutdown();
  }
});
