/**
 * An announcement too big for one frame (docs/protocol.md §6.3): 5,000 names are far more than the 32 KiB
 * control frame a peer accepts, so the announcing node splits them into parts, each under the cap, and the
 * peer applies them as one full-state announcement once the last part is in.
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, Teardown, waitFor } from "../helpers/cluster.ts";
import { encodeControlFrame, MAX_MESSAGE_BYTES } from "../../src/protocol/frames.ts";
import { namedService, peerRouteKeys, whoServes } from "./mesh_fixtures.ts";

const NAMES = Array.from({ length: 5_000 }, (_, i) => `n${String(i).padStart(4, "0")}.test.nexus`);
/** Names per agent: a backend's token must fit the hub's first message, 32 KiB. */
const NAMES_PER_AGENT = 1_000;

Deno.test("a node serving 5,000 names announces them all to its peer, which routes a client to the last of them", async () => {
  // The premise: the names in one frame would be refused by the peer's decoder.
  const oneFrame = encodeControlFrame({ type: "announce", version: 1, routes: NAMES });
  assert.ok(oneFrame.length > MAX_MESSAGE_BYTES, `${oneFrame.length} bytes fit one frame`);
  const teardown = new Teardown();
  try {
    const service = teardown.add(await namedService("the last name on B"));
    const b = teardown.add(await startTestNode());
    for (let first = 0; first < NAMES.length; first += NAMES_PER_AGENT) {
      teardown.add(
        await startTestAgent({
          hubUrls: [b.hubUrl],
          name: `agent-${first}`,
          hostnames: NAMES.slice(first, first + NAMES_PER_AGENT),
          targets: { default: service.port },
        }),
      );
    }
    await waitFor(() => b.node.router.localRouteKeys().length === NAMES.length, "B to serve every name");
    const a = teardown.add(await startTestNode({ peers: [b.meshUrl] }));
    await waitFor(() => peerRouteKeys(a).length === NAMES.length, "A to learn all of B's names", 15_000);
    assert.deepEqual(peerRouteKeys(a), NAMES);
    const last = NAMES[NAMES.length - 1];
    assert.equal(a.node.router.route(last)?.kind, "peer");
    assert.equal(await whoServes(a, last), "the last name on B");
  } finally {
    await teardown.run();
  }
});
