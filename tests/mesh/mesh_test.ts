/**
 * The mesh end to end: two or three in-process nodes on 127.0.0.1 linked over real TLS WebSockets, real agents
 * and real TLS services behind them, real TLS clients. A node routes a client to its own backends first, then
 * to a peer that announced the name; a tunnel is served by the receiving node's own backends only (one hop).
 */

import assert from "node:assert/strict";
import {
  connectTls,
  startTestAgent,
  startTestNode,
  Teardown,
  TEST_PEER_SECRET,
  type TestNode,
  waitFor,
} from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { echo, patternBytes, readAll, serveConnections, sha256Hex, writeAll } from "../helpers/services.ts";
import {
  assertNoRoute,
  freePort,
  links,
  namedService,
  peerRouteKeys,
  peerToken,
  rawMeshUpgrade,
  rawPeerLink,
  roundTrip,
  sameList,
  silentPeer,
  sourceRequest,
  sourceSeed,
  sourceService,
  whoServes,
} from "./mesh_fixtures.ts";

const APP = "app.test.nexus";

/** Where `node`'s link to the configured peer `url` stands, as `/status` shows it. */
function peerState(node: TestNode, url: string): string | undefined {
  return node.node.mesh?.peers().find((peer) => peer.direction === "outbound" && peer.url === url)?.state;
}
const MiB = 1024 * 1024;

Deno.test("a client at A reaches the echo service behind B's agent: 8 MiB each way byte-exact, with the client's own address", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const b = teardown.add(await startTestNode());
    const agent = teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: service.port } }),
    );
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names");

    const conn = await connectTls(a.tlsPort, APP);
    // Once the handshake with the service's own certificate is complete, the agent is serving the stream.
    await conn.handshake();
    const client = conn.localAddr as Deno.NetAddr;
    assert.deepEqual(agent.streamInfos, [{
      hostname: APP,
      port: a.tlsPort,
      clientAddress: `127.0.0.1:${client.port}`,
      isTls: true,
      // What the client reached is A, not B: the tunnel carries A's view.
      relayAddress: `127.0.0.1:${a.tlsPort}`,
    }]);
    assert.equal(a.node.router.route(APP)?.kind, "peer");
    const sent = patternBytes(8 * MiB, 11);
    const [received] = await Promise.all([readAll(conn), writeAll(conn, sent).then(() => conn.closeWrite())]);
    conn.close();
    assert.equal(received.length, sent.length);
    assert.equal(await sha256Hex(received), await sha256Hex(sent));
    assert.equal(service.accepted, 1);
  } finally {
    await teardown.run();
  }
});

Deno.test("announcements: A learns B's names at link-up and as agents join and leave B, exact and wildcard alike", async () => {
  const teardown = new Teardown();
  try {
    const app = teardown.add(await namedService("app on B"));
    const late = teardown.add(await namedService("late on B"));
    const b = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: app.port } }),
    );
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names at link-up");
    assert.equal(await whoServes(a, APP), "app on B");
    await assertNoRoute(a, "late.test.nexus");
    await assertNoRoute(a, "one.wild.nexus");

    const lateAgent = await startTestAgent({
      name: "late",
      hubUrls: [b.hubUrl],
      hostnames: ["late.test.nexus", "*.wild.nexus"],
      targets: { "late.test.nexus": late.port, "*.wild.nexus": late.port },
    });
    try {
      await waitFor(
        () => sameList(peerRouteKeys(a), ["*.wild.nexus", APP, "late.test.nexus"]),
        "A to learn the late agent's names",
      );
      assert.equal(await whoServes(a, "late.test.nexus"), "late on B");
      assert.equal(await whoServes(a, "one.wild.nexus"), "late on B");
      assert.equal(await whoServes(a, "two.wild.nexus"), "late on B");
      // A wildcard covers one label only, across the mesh as at home.
      await assertNoRoute(a, "a.b.wild.nexus");
    } finally {
      await lateAgent.stop(0);
    }
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to forget the names of the agent that left B");
    await assertNoRoute(a, "late.test.nexus");
    await assertNoRoute(a, "one.wild.nexus");
    assert.equal(await whoServes(a, APP), "app on B");
    assert.equal(b.node.refusals.total("tunnel_no_backend"), 0);
  } finally {
    await teardown.run();
  }
});

Deno.test("local backends win over peers; several peers serving a name take turns (round robin)", async () => {
  const teardown = new Teardown();
  try {
    const onA = teardown.add(await namedService("A"));
    const onB = teardown.add(await namedService("B"));
    const onC = teardown.add(await namedService("C"));
    const b = teardown.add(await startTestNode());
    const c = teardown.add(await startTestNode());
    for (const [node, service] of [[b, onB], [c, onC]] as const) {
      teardown.add(
        await startTestAgent({
          hubUrls: [node.hubUrl],
          hostnames: [APP, "shared.test.nexus"],
          targets: { [APP]: service.port, "shared.test.nexus": service.port },
        }),
      );
    }
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl, c.meshUrl] }));
    const localAgent = await startTestAgent({
      name: "local",
      hubUrls: [a.hubUrl],
      hostnames: [APP],
      targets: { [APP]: onA.port },
    });
    try {
      await waitFor(
        () =>
          links(a).length === 2 &&
          links(a).every((link) => sameList(a.node.router.peerRouteKeys(link), [APP, "shared.test.nexus"])),
        "A to learn the names of B and C",
      );
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push(await whoServes(a, APP));
      assert.deepEqual(answers, ["A", "A", "A", "A"]);
      const shared = [];
      for (let i = 0; i < 4; i++) shared.push(await whoServes(a, "shared.test.nexus"));
      assert.deepEqual(shared.toSorted(), ["B", "B", "C", "C"]);
      assert.notEqual(shared[0], shared[1]);
      assert.notEqual(shared[2], shared[3]);
    } finally {
      await localAgent.stop(0);
    }
    // Without its own backend, A tunnels the name to the peers.
    await waitFor(() => a.node.router.route(APP)?.kind === "peer", "A's own backend to be gone");
    const answers = [await whoServes(a, APP), await whoServes(a, APP)];
    assert.deepEqual(answers.toSorted(), ["B", "C"]);
    assert.equal(onA.accepted, 4);
  } finally {
    await teardown.run();
  }
});

Deno.test("a peer with the wrong secret is refused with 403 at the upgrade, logged and counted, and learns nothing", async () => {
  const teardown = new Teardown();
  try {
    const app = teardown.add(await namedService("app on B"));
    const b = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: app.port } }),
    );
    const a = teardown.add(
      await startTestNode({
        peers: [b.meshUrl],
        peerSecret: new TextEncoder().encode("another-secret-0123456789abcdef!"),
      }),
    );
    await waitFor(() => b.node.refusals.total("peer_rejected") >= 1, "B to refuse A");
    assert.equal(links(a).length, 0);
    assert.equal(links(b).length, 0);
    assert.equal(peerState(a, b.meshUrl), "dialling");
    assert.deepEqual(peerRouteKeys(a), []);
    await assertNoRoute(a, APP);

    // What A was told, by hand: the status and the reason, never a silent close.
    const rejectedBefore = b.node.refusals.total("peer_rejected");
    const wrongSecret = await rawMeshUpgrade(
      b,
      `Bearer ${await peerToken(new TextEncoder().encode("another-secret-0123456789abcdef!"))}`,
    );
    assert.deepEqual(wrongSecret, {
      status: 403,
      body: "peer token refused: signature verification failed\n",
    });
    assert.deepEqual(await rawMeshUpgrade(b, null), { status: 403, body: "peer sent no token\n" });
    assert.deepEqual(await rawMeshUpgrade(b, "Bearer not-a-token"), {
      status: 403,
      body: "peer token refused: Invalid Compact JWS\n",
    });
    assert.ok(b.node.refusals.total("peer_rejected") >= rejectedBefore + 3);
  } finally {
    await teardown.run();
  }
});

Deno.test("a peer whose clock runs a few seconds ahead is still accepted", async () => {
  const teardown = new Teardown();
  try {
    const b = teardown.add(await startTestNode());
    const answer = await rawMeshUpgrade(b, `Bearer ${await peerToken(TEST_PEER_SECRET, 10)}`);
    assert.equal(answer.status, 101);
    assert.equal(b.node.refusals.total("peer_rejected"), 0);
  } finally {
    await teardown.run();
  }
});

Deno.test("a node listed among its own peers notices (the token's jti) and never dials itself again", async () => {
  const teardown = new Teardown();
  try {
    const app = teardown.add(await namedService("app on B"));
    const b = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: app.port } }),
    );
    const hubPort = freePort();
    const ownUrl = `wss://127.0.0.1:${hubPort}/mesh`;
    const a = teardown.add(await startTestNode({ hubPort, peers: [ownUrl, b.meshUrl] }));
    await waitFor(() => peerState(a, ownUrl) === "this node", "A to notice its own URL");
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names");
    assert.equal(peerState(a, b.meshUrl), "linked");
    assert.equal(a.node.refusals.total("peer_rejected"), 1);
    assert.equal(links(a).length, 1);
    assert.equal(await whoServes(a, APP), "app on B");
  } finally {
    await teardown.run();
  }
});

Deno.test("one hop only: a name served only on C is unreachable from A through B, reachable over a direct link", async () => {
  const teardown = new Teardown();
  try {
    const onB = teardown.add(await namedService("B"));
    const onC = teardown.add(await namedService("C"));
    const c = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({
        hubUrls: [c.hubUrl],
        hostnames: ["c.test.nexus"],
        targets: { "c.test.nexus": onC.port },
      }),
    );
    const b = teardown.add(await startTestNode({ peers: [c.meshUrl] }));
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: onB.port } }),
    );
    await waitFor(() => sameList(peerRouteKeys(b), ["c.test.nexus"]), "B to learn C's names");
    assert.equal(await whoServes(b, "c.test.nexus"), "C");

    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    // B announces its own names only: A learns APP, never C's name.
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's own names");
    assert.equal(await whoServes(a, APP), "B");
    await assertNoRoute(a, "c.test.nexus");

    // Even a peer that asks B for C's name outright gets no second hop: B refuses the tunnel.
    const peer = await rawPeerLink(b);
    try {
      const refusedBefore = b.node.refusals.total("tunnel_no_backend");
      const tunnel = peer.link.openStream({
        hostname: "c.test.nexus",
        port: 443,
        clientAddress: "192.0.2.7:40000",
        isTls: true,
      });
      assert.ok(tunnel !== null);
      assert.equal(await tunnel.read(), null);
      assert.equal(b.node.refusals.total("tunnel_no_backend"), refusedBefore + 1);
      assert.deepEqual(peer.announced, [[APP]]);
    } finally {
      await peer.close();
    }
    assert.equal(onC.accepted, 1);

    const direct = teardown.add(await startTestNode({ peers: [b.meshUrl, c.meshUrl] }));
    await waitFor(
      () => sameList(peerRouteKeys(direct), [APP, "c.test.nexus"]),
      "A' to learn B's and C's names",
    );
    assert.equal(await whoServes(direct, "c.test.nexus"), "C");
    assert.equal(onC.accepted, 2);
  } finally {
    await teardown.run();
  }
});

Deno.test("peer restart (node.close()): A's open tunnel ends, B's routes go, and A redials B by itself when it is back on its port", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const hubPort = freePort();
    let b = await startTestNode({ hubPort });
    let bClosed = false;
    teardown.add({ close: () => bClosed ? Promise.resolve() : b.close() });
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: service.port } }),
    );
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names");

    const conn = await connectTls(a.tlsPort, APP);
    try {
      const sent = patternBytes(64 * 1024, 3);
      assert.deepEqual(await roundTrip(conn, sent), sent);
      // B goes away with the stream open: A's client sees its stream end instead of hanging.
      await b.close();
      bClosed = true;
      const buffer = new Uint8Array(1024);
      // B ended the tunnel: A ends the client's connection, without the service's close_notify.
      const end = await conn.read(buffer).then((n) => n, (error: Error) => error.name);
      assert.equal(end, "UnexpectedEof");
    } finally {
      conn.close();
    }
    // Dropped from the route table itself, not merely skipped as a closed link.
    await waitFor(() => links(a).length === 0 && !a.node.router.hasExactRoute(APP), "A to drop B's routes");
    assert.deepEqual(peerRouteKeys(a), []);
    await assertNoRoute(a, APP);

    // B comes back on the same port; its agent reconnects by itself and A redials by itself.
    b = await startTestNode({ hubPort });
    bClosed = false;
    await waitFor(
      () => sameList(peerRouteKeys(a), [APP]),
      "A to relink to B and learn its names again",
      15_000,
    );
    const again = await connectTls(a.tlsPort, APP);
    try {
      const sent = patternBytes(256 * 1024, 4);
      assert.deepEqual(await roundTrip(again, sent), sent);
    } finally {
      again.close();
    }
    assert.equal(peerState(a, b.meshUrl), "linked");
  } finally {
    await teardown.run();
  }
});

Deno.test("flow control across the mesh: a client that stops reading a 32 MiB download does not block a second tunnel on the same link", async () => {
  const teardown = new Teardown();
  try {
    const source = teardown.add(await sourceService());
    const b = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: source.port } }),
    );
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names");
    assert.equal(links(a).length, 1);

    const stalledLength = 32 * MiB;
    const stalled = await connectTls(a.tlsPort, APP);
    try {
      await writeAll(stalled, sourceRequest(stalledLength));
      // The source writes until every buffer on the way is full, then waits for the stalled client.
      await waitFor(
        () => source.written.length === 1 && source.written[0] > 0,
        "the source to start sending",
      );

      const movingLength = 4 * MiB;
      const moving = await connectTls(a.tlsPort, APP);
      try {
        await writeAll(moving, sourceRequest(movingLength));
        await moving.closeWrite();
        const received = await readAll(moving);
        assert.equal(received.length, movingLength);
        assert.equal(
          await sha256Hex(received),
          await sha256Hex(patternBytes(movingLength, sourceSeed(movingLength))),
        );
      } finally {
        moving.close();
      }
      assert.equal(links(a).length, 1, "both tunnels shared one link");
      assert.ok(
        source.written[0] < stalledLength,
        `the stalled download was held back at ${source.written[0]} bytes`,
      );

      await stalled.closeWrite();
      const received = await readAll(stalled);
      assert.equal(received.length, stalledLength);
      assert.equal(
        await sha256Hex(received),
        await sha256Hex(patternBytes(stalledLength, sourceSeed(stalledLength))),
      );
    } finally {
      stalled.close();
    }
  } finally {
    await teardown.run();
  }
});

Deno.test("graceful shutdown of B withdraws its routes at A first, then lets B's open tunnels finish", async () => {
  const certs = await testCertificates();
  const teardown = new Teardown();
  try {
    const service = teardown.add(serveConnections(echo, certs.service));
    const b = teardown.add(await startTestNode());
    teardown.add(
      await startTestAgent({ hubUrls: [b.hubUrl], hostnames: [APP], targets: { [APP]: service.port } }),
    );
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => sameList(peerRouteKeys(a), [APP]), "A to learn B's names");

    const conn = await connectTls(a.tlsPort, APP);
    let stopped = false;
    let stopping: Promise<void> | undefined;
    try {
      const first = patternBytes(64 * 1024, 5);
      assert.deepEqual(await roundTrip(conn, first), first);

      stopping = b.node.shutdown(60_000).then(() => void (stopped = true));
      await waitFor(() => a.node.router.route(APP) === undefined, "A to see B withdraw its routes");
      assert.equal(links(a).length, 1, "the link stays up while B drains");
      await assertNoRoute(a, APP);

      // The stream opened before the shutdown still works both ways, and B waits for it.
      const second = patternBytes(1 * MiB, 6);
      assert.deepEqual(await roundTrip(conn, second), second);
      assert.equal(stopped, false);
      await conn.closeWrite();
      assert.deepEqual(await readAll(conn), new Uint8Array(0));
    } finally {
      conn.close();
    }
    await stopping;
    assert.equal(stopped, true);
    await waitFor(() => links(a).length === 0, "B's link to close after its drain");
  } finally {
    await teardown.run();
  }
});

Deno.test("two nodes that list each other link both ways and tunnel both ways", async () => {
  const teardown = new Teardown();
  try {
    const onA = teardown.add(await namedService("A"));
    const onB = teardown.add(await namedService("B"));
    const aHubPort = freePort();
    const aUrl = `wss://127.0.0.1:${aHubPort}/mesh`;
    const b = teardown.add(await startTestNode({ peers: [aUrl] }));
    const a = teardown.add(await startTestNode({ hubPort: aHubPort, peers: [b.meshUrl] }));
    teardown.add(
      await startTestAgent({
        hubUrls: [a.hubUrl],
        hostnames: ["a.test.nexus"],
        targets: { "a.test.nexus": onA.port },
      }),
    );
    teardown.add(
      await startTestAgent({
        hubUrls: [b.hubUrl],
        hostnames: ["b.test.nexus"],
        targets: { "b.test.nexus": onB.port },
      }),
    );
    await waitFor(
      () =>
        links(a).length === 2 && links(b).length === 2 &&
        links(a).every((link) => sameList(a.node.router.peerRouteKeys(link), ["b.test.nexus"])) &&
        links(b).every((link) => sameList(b.node.router.peerRouteKeys(link), ["a.test.nexus"])),
      "both links up with both announcements",
    );
    assert.deepEqual([await whoServes(a, "b.test.nexus"), await whoServes(a, "b.test.nexus")], ["B", "B"]);
    assert.deepEqual([await whoServes(b, "a.test.nexus"), await whoServes(b, "a.test.nexus")], ["A", "A"]);
    assert.deepEqual([await whoServes(a, "a.test.nexus"), await whoServes(b, "b.test.nexus")], ["A", "B"]);
  } finally {
    await teardown.run();
  }
});

Deno.test("a node that shuts down does not wait for a dial its peer never answers", async () => {
  const teardown = new Teardown();
  try {
    const silent = teardown.add(silentPeer());
    const a = await startTestNode({ peers: [silent.url] });
    try {
      await waitFor(() => silent.accepted === 1, "A to dial the silent peer");
      assert.equal(peerState(a, silent.url), "dialling");
    } finally {
      // Returns without an answer from the peer (waiting for it would take the 15 s connect timeout).
      await a.close();
    }
    assert.equal(silent.accepted, 1);
    // Deno 2.9 keeps the socket of a TLS handshake still waiting for the server's first flight until the server
    // closes it (src/transport/websocket_client.ts): the silent peer closing it releases it, and the test sanitizers
    // check that nothing is left behind.
  } finally {
    await teardown.run();
  }
});
