/** The router: local backends first, then peers, tunnels never forwarded again, and reserved names for nobody. */

import assert from "node:assert/strict";
import { Router, type Upstream } from "../../src/balancer/router.ts";

function upstream(label: string, acceptsStreams = true): Upstream & { acceptsStreams: boolean } {
  return { label, acceptsStreams, openStream: () => null };
}

Deno.test("a local backend wins over a peer; localOnly never reaches a peer; none: undefined", () => {
  const router = new Router();
  const local = upstream("local");
  const peer = upstream("peer");
  router.setPeerRoutes(peer, ["app.example.com", "other.example.com"]);
  router.addBackend(local, [{ kind: "exact", name: "app.example.com" }], 1);
  assert.deepEqual(router.route("app.example.com"), { kind: "local", upstream: local });
  assert.deepEqual(router.route("other.example.com"), { kind: "peer", upstream: peer });
  assert.equal(router.route("other.example.com", { localOnly: true }), undefined);
  assert.equal(router.route("nobody.example.com"), undefined);
});

Deno.test("removing a backend needs only the backend: every name it claimed goes, and the mesh hears of it", () => {
  let changes = 0;
  const router = new Router(() => changes++);
  const backend = upstream("b");
  router.addBackend(backend, [{ kind: "exact", name: "a.example.com" }, {
    kind: "wildcard",
    suffix: "example.org",
  }], 2);
  assert.deepEqual(router.localRouteKeys(), ["*.example.org", "a.example.com"]);
  router.removeBackend(backend);
  assert.deepEqual(router.localRouteKeys(), []);
  assert.equal(changes, 2);
  // Removing it again, or a stranger, is harmless and announces nothing.
  router.removeBackend(backend);
  router.removeBackend(upstream("stranger"));
  assert.equal(changes, 2);
  // Adding a backend again replaces what it claimed.
  router.addBackend(backend, [{ kind: "exact", name: "a.example.com" }], 1);
  router.addBackend(backend, [{ kind: "exact", name: "b.example.com" }], 1);
  assert.deepEqual(router.localRouteKeys(), ["b.example.com"]);
});

Deno.test("a full announcement replaces a peer's routes, invalid keys are returned, and a lost peer takes its routes along", () => {
  const router = new Router();
  const peer = upstream("peer");
  assert.deepEqual(router.setPeerRoutes(peer, ["a.example.com", "*.com", "bad name"]), ["*.com", "bad name"]);
  assert.deepEqual(router.peerRouteKeys(peer), ["a.example.com"]);
  router.setPeerRoutes(peer, ["b.example.com"]);
  assert.equal(router.route("a.example.com"), undefined);
  assert.equal(router.route("b.example.com")?.upstream, peer);
  router.removePeer(peer);
  assert.equal(router.serves("b.example.com"), false);
});

Deno.test("all members of a name at their limit: no route, but the name is still served (refused as full, not as unknown)", () => {
  const router = new Router();
  router.addBackend(upstream("full", false), [{ kind: "exact", name: "a.example.com" }], 1);
  assert.equal(router.route("a.example.com"), undefined);
  assert.equal(router.serves("a.example.com"), true);
  assert.equal(router.hasExactRoute("a.example.com"), true);
});

Deno.test("a reserved name is routed to no backend or peer, not even through a wildcard", () => {
  const router = new Router();
  const wild = upstream("wild");
  const peer = upstream("peer");
  router.addBackend(wild, [{ kind: "wildcard", suffix: "example.com" }], 1);
  router.setPeerRoutes(peer, ["hub.example.com"]);
  router.reserve("hub.example.com");
  assert.equal(router.route("hub.example.com"), undefined);
  assert.equal(router.serves("hub.example.com"), false);
  assert.equal(router.hasExactRoute("hub.example.com"), false);
  assert.equal(router.isReserved("hub.example.com"), true);
  assert.equal(router.route("app.example.com")?.upstream, wild);
});
