/**
 * The admin listener over real sockets: its routes, the bearer token, requests it refuses, the deadline from
 * accept, and its connection pool run past its limits, with a view whose answers the tests choose.
 */

import assert from "node:assert/strict";
import { AdminListener, type AdminListenerSettings, type AdminView } from "../../src/admin/admin_listener.ts";
import { createLogger, RateLimitedLog } from "../../src/log/logger.ts";
import { readAll, writeAll } from "../helpers/services.ts";

const TOKEN = "admin-token-0123456789";

/** A view the test steers. */
function testView() {
  const state = { notReady: null as string | null, fail: false };
  const view: AdminView = {
    readiness: () => state.notReady,
    metrics: () => "# HELP nexus_up Up.\n# TYPE nexus_up gauge\nnexus_up 1\n",
    status: () => {
      if (state.fail) throw new Error("the view broke");
      return { kind: "test", answer: 42 };
    },
  };
  return { state, view };
}

function startAdmin(
  options: { token?: string; deadlineMs?: number; limits?: AdminListenerSettings["limits"] } = {},
) {
  const { state, view } = testView();
  const refusals = new RateLimitedLog(createLogger("test admin"), { level: "debug" });
  const admin = new AdminListener({
    hostname: "127.0.0.1",
    port: 0,
    ...(options.token ? { token: new TextEncoder().encode(options.token) } : {}),
    view,
    log: createLogger("test admin"),
    refusals,
    ...(options.deadlineMs ? { deadlineMs: options.deadlineMs } : {}),
    ...(options.limits ? { limits: options.limits } : {}),
  });
  admin.listen();
  return { admin, state, refusals, port: admin.address.port };
}

/** One raw exchange: writes `request`, reads to the end; returns status, headers and body. */
async function exchange(port: number, request: string) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, new TextEncoder().encode(request));
    const text = new TextDecoder().decode(await readAll(conn));
    const [head, ...body] = text.split("\r\n\r\n");
    const [statusLine, ...lines] = head.split("\r\n");
    const headers = new Map(lines.map((line) => {
      const colon = line.indexOf(":");
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()] as const;
    }));
    return { status: Number(statusLine.split(" ")[1]), headers, body: body.join("\r\n\r\n") };
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the reader.
    }
  }
}

function get(port: number, path: string, headers: Record<string, string> = {}, method = "GET") {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  return exchange(port, `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines}\r\n`);
}

Deno.test("without a token every route answers; readiness says why not; the page comes with its CSP", async () => {
  const { admin, state, port } = await startAdmin();
  try {
    assert.deepEqual({ ...(await get(port, "/healthz")), headers: undefined }, {
      status: 200,
      headers: undefined,
      body: "ok\n",
    });
    assert.equal((await get(port, "/readyz")).body, "ready\n");
    state.notReady = "draining";
    assert.deepEqual([(await get(port, "/readyz")).status, (await get(port, "/readyz")).body], [
      503,
      "not ready: draining\n",
    ]);
    const metrics = await get(port, "/metrics");
    assert.equal(metrics.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.equal(metrics.body, "# HELP nexus_up Up.\n# TYPE nexus_up gauge\nnexus_up 1\n");
    const status = await get(port, "/status?x=1");
    assert.equal(status.headers.get("content-type"), "application/json; charset=utf-8");
    assert.deepEqual(JSON.parse(status.body), { kind: "test", answer: 42 });
    assert.equal(status.headers.get("connection"), "close");
    assert.equal(status.headers.get("cache-control"), "no-store");
    const page = await get(port, "/");
    assert.match(page.body, /^<!doctype html>/);
    assert.match(
      page.headers.get("content-security-policy") ?? "",
      /^default-src 'none'; script-src 'sha256-/,
    );
    assert.equal((await get(port, "/nothing")).status, 404);
    const post = await get(port, "/status", {}, "POST");
    assert.deepEqual([post.status, post.headers.get("allow")], [405, "GET, HEAD"]);
    const head = await get(port, "/metrics", {}, "HEAD");
    assert.deepEqual([head.status, head.body, head.headers.get("content-length")], [200, "", "53"]);
    // A real client, keeping nothing open afterwards.
    const response = await fetch(`http://127.0.0.1:${port}/status`);
    assert.deepEqual(await response.json(), { kind: "test", answer: 42 });
  } finally {
    await admin.close();
  }
});

Deno.test("with a token, only /healthz and the page answer without it; a wrong one is refused", async () => {
  const { admin, port } = await startAdmin({ token: TOKEN });
  try {
    assert.equal((await get(port, "/healthz")).status, 200);
    assert.equal((await get(port, "/")).status, 200);
    for (const path of ["/readyz", "/metrics", "/status"]) {
      const missing = await get(port, path);
      assert.deepEqual([missing.status, missing.body], [
        401,
        "this admin listener needs Authorization: Bearer <token>\n",
      ]);
      assert.equal(missing.headers.get("www-authenticate"), 'Bearer realm="nexus admin"');
      for (const wrong of ["x", TOKEN.slice(0, -1) + "X", TOKEN + "0"]) {
        const refused = await get(port, path, { Authorization: `Bearer ${wrong}` });
        assert.deepEqual([refused.status, refused.body], [401, "wrong token\n"]);
      }
      assert.equal((await get(port, path, { Authorization: `Basic ${btoa(TOKEN)}` })).status, 401);
      assert.equal((await get(port, path, { Authorization: `Bearer ${TOKEN}` })).status, 200);
      assert.equal((await get(port, path, { authorization: `bearer ${TOKEN}` })).status, 200);
    }
    const twice = await exchange(
      port,
      `GET /status HTTP/1.1\r\nAuthorization: Bearer ${TOKEN}\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`,
    );
    assert.equal(twice.status, 401, "a repeated Authorization header is no authorization");
  } finally {
    await admin.close();
  }
});

Deno.test("requests the strict parser refuses get 400 or 431 with the reason, and a failing view 500", async () => {
  const { admin, state, port } = await startAdmin();
  try {
    const old = await exchange(port, "GET /healthz HTTP/1.0\r\n\r\n");
    assert.deepEqual([old.status, old.body], [
      400,
      "request line is not: method, origin-form path, HTTP/1.1\n",
    ]);
    assert.equal((await exchange(port, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")).status, 400);
    const huge = await exchange(port, `GET /healthz HTTP/1.1\r\nX: ${"a".repeat(9000)}\r\n\r\n`);
    assert.equal(huge.status, 431);
    state.fail = true;
    assert.deepEqual([(await get(port, "/status")).status, (await get(port, "/status")).body], [
      500,
      "internal error\n",
    ]);
    assert.equal((await get(port, "/healthz")).status, 200, "the listener goes on");
  } finally {
    await admin.close();
  }
});

Deno.test("a connection that sends no complete request is closed at its deadline", async () => {
  const { admin, port } = await startAdmin({ deadlineMs: 300 });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("GET /healthz HTTP/1.1\r\n"));
    const startedMs = Date.now();
    assert.deepEqual(await readAll(conn), new Uint8Array(0), "closed without an answer");
    assert.ok(Date.now() - startedMs >= 250, "not before its deadline");
    conn.close();
  } finally {
    await admin.close();
  }
});

Deno.test("past its pool the oldest waiting connection is shed, past its cap a newcomer is refused", async () => {
  const pooled = await startAdmin({
    limits: { maxConnections: 8, maxConnectionsPerIp: 8, maxHandshakes: 2, maxHandshakesPerIp: 2 },
  });
  const capped = await startAdmin({
    limits: { maxConnections: 2, maxConnectionsPerIp: 2, maxHandshakes: 2, maxHandshakesPerIp: 2 },
  });
  const silent: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2; i++) silent.push(await Deno.connect({ hostname: "127.0.0.1", port: pooled.port }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    // A scraper's request takes the oldest silent connection's slot, and is answered.
    assert.equal((await get(pooled.port, "/healthz")).status, 200);
    assert.deepEqual(await readAll(silent.shift()!), new Uint8Array(0), "the oldest was closed");
    assert.equal(pooled.refusals.total("admin_shed"), 1);

    for (let i = 0; i < 2; i++) silent.push(await Deno.connect({ hostname: "127.0.0.1", port: capped.port }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await Deno.connect({ hostname: "127.0.0.1", port: capped.port });
    assert.deepEqual(await readAll(refused), new Uint8Array(0), "closed at once");
    refused.close();
    assert.equal(capped.refusals.total("admin_max_connections"), 1);
    assert.equal(capped.refusals.total("admin_shed"), 0);
  } finally {
    for (const conn of silent) conn.close();
    await pooled.admin.close();
    await capped.admin.close();
  }
});

Deno.test("close ends open connections and frees the port", async () => {
  const { admin, port } = await startAdmin();
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  await new Promise((resolve) => setTimeout(resolve, 50));
  await admin.close();
  assert.deepEqual(await readAll(silent), new Uint8Array(0));
  silent.close();
  const again = Deno.listen({ hostname: "127.0.0.1", port });
  again.close();
});
