/**
 * A backend that speaks only the original protocol, driven frame by frame: it offers no subprotocol, sends
 * the two tokens of the original handshake (§4.2), and then does exactly what a test tells it, so it can
 * ignore credits the way the original's standalone client does (§7.2).
 *
 * @module
 */

import { signBackendToken } from "../../src/protocol/backend_token.ts";
import { testCertificates } from "./certs.ts";
import { TEST_JWT_SECRET } from "./cluster.ts";
import { RawPeer, whenClosed } from "./ws_pair.ts";
import { waitForOpen } from "../../src/transport/inbox.ts";

/** A connected original-protocol backend. */
export interface LegacyBackend {
  readonly peer: RawPeer;
  close(): Promise<void>;
}

/** Connects to a hub as the original client would and completes its handshake. */
export async function connectLegacyBackend(
  hubUrl: string,
  hostnames: readonly string[],
): Promise<LegacyBackend> {
  const certs = await testCertificates();
  const client = Deno.createHttpClient({ caCerts: [certs.ca.certPem] });
  const ws = new WebSocket(hubUrl, { client });
  const peer = new RawPeer(ws);
  const close = async () => {
    try {
      ws.close(1000, "test over");
    } catch {
      // Already closed.
    }
    await whenClosed(ws);
    client.close();
  };
  try {
    const openError = await waitForOpen(ws, 5_000);
    if (openError !== null) throw new Error(`legacy backend could not connect: ${openError}`);
    const identity = { secret: TEST_JWT_SECRET, name: "legacy-backend", hostnames, weight: 1 };
    ws.send(await signBackendToken(identity));
    await peer.waitFor(() => peer.texts.length > 0, "the handshake challenge");
    const challenge = JSON.parse(peer.texts[0]) as { type: string; nonce: string };
    if (challenge.type !== "handshake_challenge") throw new Error(`unexpected ${peer.texts[0]}`);
    ws.send(await signBackendToken({ ...identity, sessionNonce: challenge.nonce }));
  } catch (error) {
    await close();
    throw error;
  }
  return { peer, close };
}
