/**
 * The status page in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run` installs), driven
 * over the DevTools protocol, loads the page from a node's admin listener, is asked for the token once and
 * given it by keyboard, shows the same routes, backends and peers as `/status`, shows a backend that joins
 * while it is open within 5 s, and is photographed under traffic. The screenshot goes to a temporary file, or
 * to `$NEXUS_SCREENSHOT` (`NEXUS_SCREENSHOT=docs/status-page.png` refreshes the README's). Without Chromium
 * the test says it was skipped and why.
 */

import assert from "node:assert/strict";
import type { Agent } from "../../src/agent/agent.ts";
import type { NodeStatus } from "../../src/admin/node_view.ts";
import { Chromium, chromiumMissing } from "../helpers/chromium.ts";
import { startTestAgent, startTestNode, type TestNode, waitFor, withTimeout } from "../helpers/cluster.ts";
import { adminGet } from "../helpers/metrics.ts";
import {
  adminPortOf,
  agentYaml,
  makeConfigDir,
  type NexusProcess,
  spawnAgent,
} from "../helpers/processes.ts";
import { readAll, writeAll } from "../helpers/services.ts";
import {
  digestToEnd,
  openTrafficStream,
  readSinkAnswer,
  startTrafficService,
  writePattern,
} from "../helpers/traffic.ts";

const TOKEN = "status-page-token-0123456789";

/** What the page shows, read from its DOM: the fields that do not move while it is open. */
const READ_PAGE = `(() => {
  const cells = (tr) => [...tr.cells].map((td) => td.textContent);
  return {
    routes: [...new Set([...document.querySelectorAll("#routes tr[data-route]")].map((tr) => tr.dataset.route))],
    backends: [...document.querySelectorAll("#routes tr[data-backend]")].map((tr) => {
      const c = cells(tr);
      return { route: tr.dataset.route, name: c[1], address: c[2], weight: Number(c[3]), protocol: c[5] };
    }),
    peers: [...document.querySelectorAll("#peers tr[data-peer]")].map((tr) => {
      const c = cells(tr);
      return { url: c[0], direction: c[1], state: c[2], names: c[3] };
    }),
  };
})()`;

type PageView = {
  routes: string[];
  backends: Array<{ route: string; name: string; address: string; weight: number; protocol: string }>;
  peers: Array<{ url: string; direction: string; state: string; names: string }>;
};

/** The same fields from `/status`. */
function expectedView(status: NodeStatus): PageView {
  return {
    routes: status.routes.map((route) => route.route),
    backends: status.routes.flatMap((route) =>
      route.backends.map((b) => ({
        route: route.route,
        name: b.name,
        address: b.address,
        weight: b.weight,
        protocol: b.protocol,
      }))
    ),
    peers: status.peers.map((peer) => ({
      url: peer.url,
      direction: peer.direction,
      state: peer.state,
      names: peer.names.join(", "),
    })),
  };
}

async function nodeStatus(node: TestNode): Promise<NodeStatus> {
  return JSON.parse((await adminGet(node.node.adminAddress.port, "/status", TOKEN)).body);
}

Deno.test("the status page asks for the token once, matches /status, and shows a backend that joins within 5 s", async (t) => {
  const why = await chromiumMissing();
  if (why !== null) {
    await t.step({ name: `skipped: ${why}`, ignore: true, fn: () => {} });
    return;
  }
  const service = await startTrafficService({ tls: false });
  const peer = await startTestNode();
  const node = await startTestNode({
    peers: [peer.meshUrl],
    admin: { hostname: "127.0.0.1", port: 0, token: new TextEncoder().encode(TOKEN) },
  });
  const agents: Agent[] = [];
  let browser: Chromium | undefined;
  try {
    const agent = (name: string, at: TestNode, hostnames: string[], weight = 1) =>
      startTestAgent({ hubUrls: [at.hubUrl], name, hostnames, weight, targets: { default: service.port } })
        .then((started) => agents.push(started));
    await agent("shop-1", node, ["shop.test.nexus"], 3);
    await agent("shop-2", node, ["shop.test.nexus"], 1);
    await agent("api-1", node, ["api.test.nexus", "*.preview.test.nexus"], 2);
    await agent("blog-1", peer, ["blog.test.nexus"]);
    await waitFor(
      () => node.node.router.route("blog.test.nexus")?.kind === "peer",
      "the peer's announcement",
    );

    browser = await Chromium.launch();
    const page = await browser.newPage();
    const url = `http://127.0.0.1:${node.node.adminAddress.port}/`;
    await page.navigate(url);

    await t.step("it asks for the token, takes it from the keyboard, and does not ask again", async () => {
      await page.waitFor('!document.getElementById("login").hidden', "the token form");
      await page.evaluate('document.getElementById("token").focus()');
      await page.type(TOKEN);
      await page.waitFor('document.querySelectorAll("#routes tr[data-backend]").length > 0', "the routes");
      await page.navigate(url);
      await page.waitFor(
        'document.querySelectorAll("#routes tr[data-backend]").length > 0',
        "the routes again",
      );
      assert.equal(await page.evaluate('document.getElementById("login").hidden'), true, "asked only once");
    });

    await t.step("routes, backends and peers are those of /status", async () => {
      const expected = expectedView(await nodeStatus(node));
      assert.deepEqual(expected.routes, [
        "*.preview.test.nexus",
        "api.test.nexus",
        "blog.test.nexus",
        "shop.test.nexus",
      ]);
      assert.deepEqual(expected.peers, [{
        url: peer.meshUrl,
        direction: "outbound",
        state: "linked",
        names: "blog.test.nexus",
      }]);
      await withTimeout(
        (async () => {
          while (JSON.stringify(await page.evaluate<PageView>(READ_PAGE)) !== JSON.stringify(expected)) {
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })(),
        "the page to match /status",
        10_000,
      ).catch(async (error) => {
        assert.deepEqual(await page.evaluate<PageView>(READ_PAGE), expected, String(error));
      });
    });

    await t.step("a backend that joins while the page is open appears within 5 s", async () => {
      await agent("late-1", node, ["late.test.nexus"]);
      const joinedMs = Date.now();
      await page.waitFor(
        'document.querySelector("#routes tr[data-backend^=\\"late-1 \\"]") !== null',
        "the late backend",
        5_000,
      );
      const shown = (await page.evaluate<PageView>(READ_PAGE)).backends.find((b) => b.name === "late-1");
      const expected = expectedView(await nodeStatus(node)).backends.find((b) => b.name === "late-1");
      assert.deepEqual(shown, expected);
      assert.ok(Date.now() - joinedMs <= 5_000);
    });

    await t.step("a screenshot under traffic", async () => {
      // Two long streams (one through the peer) stay open meanwhile, so the streams and tunnels show.
      const held = await Promise.all(
        ["shop.test.nexus", "blog.test.nexus"].map((hostname) =>
          openTrafficStream({ port: node.httpPort, protocol: "http", hostname }, "ECHO")
        ),
      );
      for (const host of ["nobody.test.nexus", "gone.test.nexus", "nobody.test.nexus"]) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: node.httpPort });
        await writeAll(conn, new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
        await readAll(conn);
        conn.close();
      }
      // Bounded traffic: downloads and uploads, at most 200 transfers and 30 s, until the page has drawn its chart.
      let drawn = false;
      const stopAt = Date.now() + 30_000;
      const transfers = (async () => {
        for (let i = 0; i < 200 && Date.now() < stopAt && !drawn; i++) {
          const hostname = ["shop.test.nexus", "api.test.nexus", "blog.test.nexus"][i % 3];
          const route = { port: node.httpPort, protocol: "http", hostname } as const;
          const bytes = (1 + (i % 4)) * 1024 * 1024;
          if (i % 2 === 0) {
            const conn = await openTrafficStream(route, `SEND ${bytes} ${i}`);
            await digestToEnd(conn);
            conn.close();
          } else {
            const conn = await openTrafficStream(route, "SINK");
            await writePattern(conn, bytes / 2, i);
            await conn.closeWrite();
            await readSinkAnswer(conn);
            conn.close();
          }
          await new Promise((resolve) => setTimeout(resolve, 150));
        }
      })();
      try {
        await page.waitFor(
          'document.getElementById("chart-in").points.length >= 8',
          "a chart of eight points",
          30_000,
        );
        await page.waitFor(
          'document.querySelector("#refusals tr[data-reason=no_backend]") !== null',
          "the refusals",
        );
        const png = await page.screenshot();
        assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG");
        assert.equal(new DataView(png.buffer, png.byteOffset).getUint32(16), 1280, "as wide as the page");
        const target = Deno.env.get("NEXUS_SCREENSHOT") ??
          `${await Deno.makeTempDir({ prefix: "nexus-page-" })}/status-page.png`;
        await Deno.writeFile(target, png);
        console.log(`status page screenshot: ${target}`);
      } finally {
        drawn = true;
        await transfers;
        for (const conn of held) conn.close();
      }
    });
  } finally {
    await browser?.close();
    await Promise.all(agents.map((agent) => agent.stop(0)));
    await node.close();
    await peer.close();
    await service.close();
  }
});

Deno.test("an agent's status page shows its hubs and the names it serves", async (t) => {
  const why = await chromiumMissing();
  if (why !== null) {
    await t.step({ name: `skipped: ${why}`, ignore: true, fn: () => {} });
    return;
  }
  const node = await startTestNode();
  const dir = await makeConfigDir();
  let agent: NexusProcess | undefined;
  let browser: Chromium | undefined;
  try {
    const config = await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [node.hubUrl],
        name: "home-server",
        hostnames: ["app.test.nexus", "*.preview.test.nexus"],
        targets: { default: 9 },
        extra: 'admin:\n  listenAddress: "127.0.0.1:0"',
      }),
    );
    agent = await spawnAgent(config);
    const port = await adminPortOf(agent);
    browser = await Chromium.launch();
    const page = await browser.newPage();
    await page.navigate(`http://127.0.0.1:${port}/`);
    const hubs = await page.waitFor<string[][]>(
      `(() => { const rows = [...document.querySelectorAll("#hubs tr[data-hub]")];
        return rows.length > 0 && rows.map((tr) => [...tr.cells].slice(0, 3).map((td) => td.textContent)); })()`,
      "the hubs",
    );
    assert.deepEqual(hubs, [[node.hubUrl, "connected", "nexus-mux.v1"]]);
    assert.equal(
      await page.evaluate('document.getElementById("title").textContent'),
      "Nexus agent home-server",
    );
    assert.equal(
      await page.evaluate('document.getElementById("hostnames").textContent'),
      "app.test.nexus, *.preview.test.nexus",
    );
    assert.equal(
      await page.evaluate('document.getElementById("login").hidden'),
      true,
      "no token, no question",
    );
  } finally {
    await browser?.close();
    await agent?.stop();
    await node.close();
    await dir.remove();
  }
});
