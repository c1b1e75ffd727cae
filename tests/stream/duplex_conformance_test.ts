/**
 * The shared stream conformance suite, run against each implementation of the data path's `Duplex`: a
 * socket, and a stream multiplexed over a session on a real WebSocket (as between a hub and its agent).
 */

import { INITIAL_STREAM_CREDITS } from "../../src/protocol/frames.ts";
import { SocketDuplex } from "../../src/stream/socket_duplex.ts";
import { runDuplexConformance } from "../helpers/duplex_conformance.ts";
import { openSessionPair } from "../helpers/ws_pair.ts";

runDuplexConformance("SocketDuplex over loopback TCP", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
    listener.accept(),
  ]);
  listener.close();
  const a = new SocketDuplex(client, "client");
  const b = new SocketDuplex(server, "server");
  return {
    a,
    b,
    async close() {
      await a.close("test over");
      await b.close("test over");
    },
  };
}, {
  // Loopback socket buffers autotune to a few MiB each way; anything near 48 MiB would mean no backpressure.
  maxBufferedBytes: 32 * 1024 * 1024,
});

runDuplexConformance("MuxStream over a credits session", async () => {
  const sessions = await openSessionPair();
  const { local, remote } = await sessions.openStream();
  return {
    a: local,
    b: remote,
    async close() {
      await local.close("test over");
      await remote.close("test over");
      await sessions.close();
    },
  };
}, {
  // One credit per 16 KiB write: the receiver's initial window, and not a byte more.
  maxBufferedBytes: INITIAL_STREAM_CREDITS * 16 * 1024,
});
