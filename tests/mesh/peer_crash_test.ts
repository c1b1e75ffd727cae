/**
 * A peer that dies without a word: node B runs as a child process (`deno run src/main.ts serve`) and is killed
 * with SIGKILL, so it withdraws nothing and closes nothing. Node A must notice the link loss by itself.
 */

import assert from "node:assert/strict";
import {
  connectTls,
  startTestAgent,
  startTestNode,
  Teardown,
  TEST_PEER_SECRET,
  waitFor,
} from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { makeConfigDir, nodeYaml, spawnNode } from "../helpers/processes.ts";
import { echo, patternBytes, serveConnections } from "../helpers/services.ts";
import { assertNoRoute, freePort, links, peerRouteKeys, roundTrip, sameList } from "./mesh_fixtures.ts";

const APP = "app.test.nexus";

Deno.test("peer crash (SIGKILL, no withdrawal): A ends the open tunnel, drops B's routes at once, relinks to B restarted", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const configDir = await makeConfigDir();
    teardown.add({ close: () => configDir.remove() });
    await configDir.write("peer.secret", new TextDecoder().decode(TEST_PEER_SECRET));
    const hubPort = freePort();
    const config = await configDir.write(
      "b.yaml",
      nodeYaml({ hubPort, extra: `peerSecretFile: "peer.secret"` }),
    );
    let b = await spawnNode(config);
    teardown.add({ close: async () => void (await b.process.stop()) });
    teardown.add(
      await startTestAgent({
        hubUrls: [`wss://127.0.0.1:${hubPort}/connect`],
        hostnames: [APP],
        targets: { [APP]: service.port },
      }),
    );
    const a = teardown.add(await startTestNode({ peers: [`wss://127.0.0.1:${hubPort}/mesh`] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn the names of B (a child process)");

    const conn = await connectTls(a.tlsPort, APP);
    try {
      const sent = patternBytes(64 * 1024, 8);
      assert.deepEqual(await roundTrip(conn, sent), sent);
      b.process.kill("SIGKILL");
      assert.equal((await b.process.exited).signal, "SIGKILL");
      // The link died under the tunnel: A closes the client's connection.
      const end = await conn.read(new Uint8Array(1024)).then((n) => n, (error: Error) => error.name);
      assert.equal(end, "UnexpectedEof");
    } finally {
      conn.close();
    }
    // B withdrew nothing: the routes go because the link went.
    await waitFor(() => links(a).length === 0 && !a.node.router.hasExactRoute(APP), "A to drop B's routes");
    await assertNoRoute(a, APP);

    b = await spawnNode(config);
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to relink to the restarted B", 15_000);
    const again = await connectTls(a.tlsPort, APP);
    try {
      const sent = patternBytes(256 * 1024, 9);
      assert.deepEqual(await roundTrip(again, sent), sent);
    } finally {
      again.close();
    }
  } finally {
    await teardown.run();
  }
});
