/**
 * The status page the admin listener serves at `/`: one static HTML file with a little script, no build step,
 * shipped inside the program as this string (so `deno compile` needs no `--include`). It reads `/status` every
 * 2 s and shows routes and backends, peers (or, on an agent, hubs), live rates computed from the counters
 * between two reads, refusals by reason and a small throughput chart. With a token set, the first read gets
 * 401 and the page asks for the token once (kept in the tab's session storage) and sends it as a bearer token.
 *
 * Every value from `/status` is written with `textContent`, never as HTML. The page's own script and style are
 * allowed by their hashes in {@linkcode STATUS_PAGE.contentSecurityPolicy}, nothing else is.
 *
 * @module
 */

import { createHash } from "node:crypto";

const STYLE = `
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6677; --line: #dde2ea; --card: #fff; --bg: #f3f5f8;
  --accent: #2563eb; --in: #2563eb; --out: #16a34a; --bad: #dc2626; --warn: #d97706; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; padding: 14px 24px;
  background: #111827; color: #f9fafb; }
header h1 { margin: 0; font-size: 18px; font-weight: 600; }
header .meta { color: #cbd5e1; font-size: 13px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.badge.ok { background: #dcfce7; color: #166534; }
.badge.bad { background: #fee2e2; color: #991b1b; }
.badge.warn { background: #fef3c7; color: #92400e; }
main, #node-sections, #agent-sections { display: grid; gap: 18px; }
main { padding: 18px 24px 32px; max-width: 1280px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
section h2 { margin: 0 0 8px; font-size: 15px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-top: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; font-size: 12px; border-top: none; }
td.num, th.num { text-align: right; }
.empty { color: var(--muted); font-style: italic; }
.grid2 { display: grid; grid-template-columns: 2fr 1fr; gap: 18px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
svg.chart { width: 100%; height: 160px; display: block; }
svg.chart .in { fill: none; stroke: var(--in); stroke-width: 2; }
svg.chart .out { fill: none; stroke: var(--out); stroke-width: 2; }
svg.chart .axis { stroke: var(--line); }
svg.chart text { fill: var(--muted); font-size: 11px; }
.legend span { margin-right: 14px; color: var(--muted); font-size: 12px; }
.legend .in::before, .legend .out::before { content: ""; display: inline-block; width: 10px; height: 3px;
  margin-right: 5px; vertical-align: middle; }
.legend .in::before { background: var(--in); } .legend .out::before { background: var(--out); }
.state-linked, .state-connected { color: #166534; font-weight: 600; }
.state-dialling, .state-connecting, .state-backing_off, .state-draining { color: var(--warn); font-weight: 600; }
.state-refused { color: var(--bad); font-weight: 600; }
.error { color: var(--bad); }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
#login { position: fixed; inset: 0; background: rgba(17,24,39,.55); display: flex; align-items: center;
  justify-content: center; }
#login[hidden] { display: none; }
#login form { background: #fff; padding: 20px 24px; border-radius: 10px; width: 360px; display: grid; gap: 10px; }
#login input { font: inherit; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; }
#login button { font: inherit; padding: 6px 12px; border: 0; border-radius: 6px; background: var(--accent);
  color: #fff; cursor: pointer; }
#problem { color: var(--bad); }
details summary { cursor: pointer; color: var(--muted); }
`;

const SCRIPT = `
"use strict";
const REFRESH_MS = 2000;
const HISTORY = 90;
const TOKEN_KEY = "nexus-admin-token";
const $ = (id) => document.getElementById(id);
let previous = null;
const history = [];

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}
function num(value) { return el("td", value, "num"); }
function fill(body, rows, columns, emptyText) {
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el("td", emptyText, "empty");
    td.colSpan = columns;
    body.append(row([td]));
  }
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}
function rate(n) { return n < 10 ? n.toFixed(1) : String(Math.round(n)); }
function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}
function since(iso) { const td = el("td", ago(iso)); if (iso) td.title = iso; return td; }
function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24, m = Math.floor(seconds / 60) % 60;
  return d > 0 ? d + "d " + h + "h" : h > 0 ? h + "h " + m + "m" : m + "m " + (seconds % 60) + "s";
}
function stateCell(state) { return el("td", state, "state-" + String(state).replaceAll(" ", "_")); }

function askToken(message) {
  $("login").hidden = false;
  $("problem").textContent = message || "";
  $("token").focus();
}
$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("login").hidden = true;
  refresh();
});

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const response = await fetch("/status", { headers, cache: "no-store" });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? "That token was refused." : "");
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    $("stale").hidden = true;
  } catch (error) {
    $("stale").hidden = false;
    $("stale").textContent = "cannot reach /status: " + error.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function totals(status) {
  const c = status.counters;
  return {
    at: Date.parse(status.now),
    accepted: c.connectionsAccepted ?? c.streamsServed ?? 0,
    in: c.bytesIn ?? c.bytesFromService ?? 0,
    out: c.bytesOut ?? c.bytesToService ?? 0,
    refusals: c.refusals ?? {},
  };
}

function render(status) {
  const now = totals(status);
  const seconds = previous ? Math.max(0.001, (now.at - previous.at) / 1000) : 0;
  const perSecond = (key) => (previous ? Math.max(0, now[key] - previous[key]) / seconds : 0);
  const refusalRates = {};
  let refusalsPerSecond = 0;
  for (const [reason, count] of Object.entries(now.refusals)) {
    refusalRates[reason] = previous ? Math.max(0, count - (previous.refusals[reason] ?? 0)) / seconds : 0;
    refusalsPerSecond += refusalRates[reason];
  }
  if (previous) {
    history.push({ in: perSecond("in"), out: perSecond("out") });
    if (history.length > HISTORY) history.shift();
  }

  document.title = (status.kind === "node" ? "Nexus node" : "Nexus agent " + status.name) + " status";
  $("title").textContent = status.kind === "node" ? "Nexus node" : "Nexus agent " + status.name;
  $("meta").textContent = "version " + status.version + " · deno " + status.deno + " · up " +
    duration(status.uptimeSeconds);
  const badge = $("ready");
  badge.textContent = status.draining ? "draining" : status.ready ? "ready" : "not ready: " + status.notReady;
  badge.className = "badge " + (status.draining ? "warn" : status.ready ? "ok" : "bad");

  const cards = status.kind === "node"
    ? [
      ["connections/s", rate(perSecond("accepted"))],
      ["in/s", bytes(perSecond("in"))],
      ["out/s", bytes(perSecond("out"))],
      ["open connections", status.gauges.connectionsOpen],
      ["open streams", status.gauges.streamsOpen],
      ["tunnels in / out", status.gauges.tunnelsIn + " / " + status.gauges.tunnelsOut],
      ["refusals/s", rate(refusalsPerSecond)],
      ["budget used of " + bytes(status.gauges.bufferBudgetBytes), bytes(status.gauges.bufferBudgetReservedBytes)],
    ]
    : [
      ["streams/s", rate(perSecond("accepted"))],
      ["from service/s", bytes(perSecond("in"))],
      ["to service/s", bytes(perSecond("out"))],
      ["open streams", status.gauges.streamsOpen],
      ["hub sessions", status.hubs.filter((hub) => hub.state === "connected").length + " of " + status.hubs.length],
      ["dial failures", Object.values(status.counters.dialFailures).reduce((a, b) => a + b, 0)],
    ];
  $("cards").replaceChildren(...cards.map(([label, value]) => {
    const card = el("div", undefined, "card");
    card.append(el("div", label, "label"), el("div", value, "value"));
    return card;
  }));

  drawChart();
  fill($("refusals"), Object.entries(now.refusals).sort((a, b) => b[1] - a[1]).map(([reason, count]) =>
    row([el("td", reason), num(count), num(rate(refusalRates[reason]))], { "data-reason": reason })
  ), 3, "none");

  $("node-sections").hidden = status.kind !== "node";
  $("agent-sections").hidden = status.kind !== "agent";
  if (status.kind === "node") {
    const routeRows = [];
    for (const route of status.routes) {
      const backends = route.backends.length > 0 ? route.backends : [null];
      backends.forEach((backend, i) => {
        const first = el("td", i === 0 ? route.route : "");
        if (i === 0) first.append(el("div", route.peers.length > 0 ? "also via " + route.peers.join(", ") : "", "meta"));
        const cells = backend === null
          ? [first, el("td", "no local backend", "empty"), el("td", ""), num(""), num(""), el("td", ""), el("td", "")]
          : [first, el("td", backend.name), el("td", backend.address), num(backend.weight), num(backend.streams),
            el("td", backend.protocol), since(backend.connectedAt)];
        routeRows.push(row(cells, backend === null
          ? { "data-route": route.route }
          : { "data-route": route.route, "data-backend": backend.name + " " + backend.address }));
      });
    }
    fill($("routes"), routeRows, 7, "no routes: no backend is registered and no peer announced a name");
    fill($("peers"), status.peers.map((peer) =>
      row([el("td", peer.url), el("td", peer.direction), stateCell(peer.state), el("td", peer.names.join(", ")),
        since(peer.since), el("td", peer.lastError ?? "", "error")], { "data-peer": peer.url })
    ), 6, "no peers");
  } else {
    fill($("hubs"), status.hubs.map((hub) =>
      row([el("td", hub.url), stateCell(hub.state), el("td", hub.protocol ?? ""), since(hub.since),
        num(hub.reconnects), el("td", hub.lastError ?? "", "error")], { "data-hub": hub.url })
    ), 6, "no hubs");
    $("hostnames").textContent = status.hostnames.join(", ");
  }
  $("limits").textContent = JSON.stringify(status.limits, null, 2);
  previous = now;
}

function drawChart() {
  const svg = $("chart");
  const width = svg.clientWidth || 600, height = 160, pad = 28;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const peak = Math.max(1, ...history.map((p) => Math.max(p.in, p.out)));
  // Until the window is full, what there is spreads over the whole width.
  const x = (i) => pad + (width - pad - 4) * (history.length <= 1 ? 1 : i / (history.length - 1));
  const y = (v) => height - 18 - (height - 30) * (v / peak);
  const line = (key) => history.map((p, i) => x(i).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
  $("chart-in").setAttribute("points", line("in"));
  $("chart-out").setAttribute("points", line("out"));
  $("chart-peak").textContent = bytes(peak) + "/s";
  $("chart-axis").setAttribute("x1", pad); $("chart-axis").setAttribute("x2", width - 4);
  $("chart-axis").setAttribute("y1", height - 18); $("chart-axis").setAttribute("y2", height - 18);
}

refresh();
`;

const BODY = `
<header>
  <h1 id="title">Nexus</h1>
  <span id="ready" class="badge warn">loading</span>
  <span id="meta" class="meta"></span>
  <span id="stale" class="badge bad" hidden></span>
</header>
<main>
  <div id="cards" class="cards"></div>
  <div class="grid2">
    <section>
      <h2>Throughput</h2>
      <div class="legend"><span class="in" id="legend-in">in (from clients)</span><span class="out" id="legend-out">out (to clients)</span></div>
      <svg id="chart" class="chart" role="img" aria-label="bytes per second in and out">
        <line id="chart-axis" class="axis"></line>
        <text id="chart-peak" x="2" y="12"></text>
        <polyline id="chart-in" class="in"></polyline>
        <polyline id="chart-out" class="out"></polyline>
      </svg>
    </section>
    <section>
      <h2>Refusals</h2>
      <table><thead><tr><th>reason</th><th class="num">total</th><th class="num">per s</th></tr></thead>
        <tbody id="refusals"></tbody></table>
    </section>
  </div>
  <div id="node-sections">
    <section>
      <h2>Routes and backends</h2>
      <table><thead><tr><th>route</th><th>backend</th><th>address</th><th class="num">weight</th>
        <th class="num">streams</th><th>protocol</th><th>connected</th></tr></thead>
        <tbody id="routes"></tbody></table>
    </section>
    <section>
      <h2>Peers</h2>
      <table><thead><tr><th>peer</th><th>direction</th><th>state</th><th>names announced</th><th>since</th>
        <th>last error</th></tr></thead><tbody id="peers"></tbody></table>
    </section>
  </div>
  <div id="agent-sections" hidden>
    <section>
      <h2>Hubs</h2>
      <p>Serving <span id="hostnames"></span></p>
      <table><thead><tr><th>hub</th><th>state</th><th>protocol</th><th>since</th><th class="num">reconnects</th>
        <th>last error</th></tr></thead><tbody id="hubs"></tbody></table>
    </section>
  </div>
  <section>
    <details><summary>Limits in force</summary><pre><code id="limits"></code></pre></details>
  </section>
</main>
<div id="login" hidden>
  <form id="login-form">
    <strong>This admin listener needs its token</strong>
    <label for="token">Bearer token (admin.tokenFile or admin.tokenEnv)</label>
    <input id="token" type="password" autocomplete="current-password" required>
    <div id="problem"></div>
    <button type="submit">Show status</button>
  </form>
</div>
`;

function cspHash(text: string): string {
  return `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
}

/** The page and the Content-Security-Policy that allows its own script and style, and nothing else. */
export const STATUS_PAGE: { readonly html: string; readonly contentSecurityPolicy: string } = {
  html: `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nexus status</title>
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`,
  contentSecurityPolicy: `default-src 'none'; script-src ${cspHash(SCRIPT)}; style-src ${cspHash(STYLE)}; ` +
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};
