/**
 * The benchmark's report: the results table in Markdown, with ratios against a direct connection and HAProxy,
 * the targets of this round, the log of earlier runs (one row per labelled run, so every optimisation keeps its
 * before and after), and a plot as a plain SVG string.
 *
 * @module
 */

/** The three ways the load generator reaches the service. */
export type TargetName = "direct" | "haproxy" | "nexus";

/** Display names, in table order. */
const TARGET_LABELS: Record<TargetName, string> = {
  direct: "Direct",
  haproxy: "HAProxy",
  nexus: "Nexus",
};

/** What a figure's target asks of Nexus. */
export type Goal =
  | { readonly kind: "ratio_vs_haproxy"; readonly atLeast: number }
  | { readonly kind: "difference_vs_haproxy"; readonly atMost: number }
  /** A cost (CPU) that may be at most this multiple of HAProxy's. */
  | { readonly kind: "cost_vs_haproxy"; readonly atMost: number }
  | { readonly kind: "below"; readonly value: number };

/** One row of the table: the median of each target, where it applies. */
export interface Figure {
  readonly key: string;
  readonly label: string;
  readonly unit: string;
  readonly better: "higher" | "lower";
  /** Ratios for throughput-like figures; differences for added latency. */
  readonly compare: "ratio" | "difference";
  readonly values: Partial<Record<TargetName, number>>;
  readonly goal?: Goal;
}

/** Everything a report says about where and how the numbers were taken. */
export interface RunInfo {
  readonly date: string;
  readonly label: string;
  /** `git rev-parse --short HEAD` when the run began, `+changes` appended when the tree differed from it. */
  readonly commit: string;
  readonly quick: boolean;
  readonly machine: { readonly cpu: string; readonly cores: number; readonly kernel: string; memory: string };
  readonly versions: { readonly deno: string; readonly v8: string; readonly haproxy: string | null };
  readonly settings: readonly string[];
  readonly notes: readonly string[];
}

/** One run in the log: its info and its figures' medians. */
export interface HistoryEntry {
  readonly label: string;
  readonly commit: string;
  readonly date: string;
  readonly quick: boolean;
  readonly values: Record<string, Partial<Record<TargetName, number>>>;
}

/** The marker after which hand-written notes in `benchmarks.md` are kept when the report is regenerated. */
export const NOTES_MARKER =
  "<!-- Everything below this line is written by hand and kept when the report is rewritten. -->";

function formatNumber(value: number | undefined, unit: string): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  const digits = unit === "ms"
    ? (Math.abs(value) < 10 ? 2 : 1)
    : Math.abs(value) >= 100
    ? 0
    : Math.abs(value) >= 10
    ? 1
    : 2;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function formatComparison(figure: Figure, of: TargetName, against: TargetName): string {
  const a = figure.values[of];
  const b = figure.values[against];
  if (a === undefined || b === undefined) return "—";
  if (figure.compare === "difference") {
    const d = a - b;
    return `${d >= 0 ? "+" : "−"}${formatNumber(Math.abs(d), figure.unit)} ms`;
  }
  const r = ratio(a, b);
  return r === undefined ? "—" : `${r.toFixed(2)}×`;
}

/** Whether a figure meets its goal: true, false, or null when it cannot be told (HAProxy missing). */
function goalMet(figure: Figure): boolean | null {
  const goal = figure.goal;
  const nexus = figure.values.nexus;
  if (goal === undefined || nexus === undefined) return null;
  const haproxy = figure.values.haproxy;
  switch (goal.kind) {
    case "ratio_vs_haproxy":
      return haproxy === undefined ? null : nexus / haproxy >= goal.atLeast;
    case "difference_vs_haproxy":
      return haproxy === undefined ? null : nexus - haproxy <= goal.atMost;
    case "cost_vs_haproxy":
      return haproxy === undefined ? null : nexus / haproxy <= goal.atMost;
    case "below":
      return nexus < goal.value;
  }
}

function describeGoal(goal: Goal, unit: string): string {
  switch (goal.kind) {
    case "ratio_vs_haproxy":
      return `≥ ${Math.round(goal.atLeast * 100)}% of HAProxy`;
    case "difference_vs_haproxy":
      return `≤ HAProxy + ${goal.atMost} ${unit}`;
    case "cost_vs_haproxy":
      return `≤ ${goal.atMost}× HAProxy`;
    case "below":
      return `< ${goal.value} ${unit}`;
  }
}

/** The results table. */
function resultsTable(figures: readonly Figure[]): string {
  const lines = [
    "| Figure | Unit | Direct | HAProxy | Nexus | Nexus vs direct | Nexus vs HAProxy | HAProxy vs direct | Target |",
    "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | :--- |",
  ];
  for (const figure of figures) {
    const met = goalMet(figure);
    const target = figure.goal === undefined
      ? ""
      : `${describeGoal(figure.goal, figure.unit)}: ${
        met === null ? "n/a" : met ? "**met**" : "**not met**"
      }`;
    lines.push(
      `| ${figure.label} | ${figure.unit} | ${formatNumber(figure.values.direct, figure.unit)} | ${
        formatNumber(figure.values.haproxy, figure.unit)
      } | ${formatNumber(figure.values.nexus, figure.unit)} | ${
        formatComparison(figure, "nexus", "direct")
      } | ${formatComparison(figure, "nexus", "haproxy")} | ${
        formatComparison(figure, "haproxy", "direct")
      } | ${target} |`,
    );
  }
  return lines.join("\n");
}

/** Figures shown in the log of runs, by key, with a short heading. */
const HISTORY_COLUMNS: ReadonlyArray<{ key: string; heading: string }> = [
  { key: "bulk_up", heading: "1 stream up MB/s" },
  { key: "bulk_down", heading: "1 stream down MB/s" },
  { key: "streams", heading: "64 streams MB/s" },
  { key: "connections", heading: "new TLS conn/s" },
  { key: "requests", heading: "req/s kept-alive" },
  { key: "added_p99", heading: "added p99 ms" },
  { key: "node_per_idle", heading: "node KiB/idle conn" },
  { key: "agent_bulk_after", heading: "agent MiB after bulk" },
  { key: "cpu_node", heading: "node CPU s/GiB" },
  { key: "cpu_total", heading: "node+agent CPU s/GiB" },
  { key: "connection_cpu_node", heading: "node CPU ms/1k conn" },
];

/** The log of runs: Nexus's figure with its ratio to HAProxy (or HAProxy's figure) in each cell. */
function historyTable(entries: readonly HistoryEntry[]): string {
  const lines = [
    `| Run | Commit | Date | ${HISTORY_COLUMNS.map((c) => c.heading).join(" | ")} |`,
    `| :--- | :--- | :--- | ${HISTORY_COLUMNS.map(() => "---:").join(" | ")} |`,
  ];
  for (const entry of entries) {
    const cells = HISTORY_COLUMNS.map(({ key }) => {
      const values = entry.values[key] ?? {};
      const unit = key.startsWith("added") ? "ms" : "";
      const nexus = formatNumber(values.nexus, unit);
      if (values.haproxy === undefined || values.nexus === undefined) return nexus;
      if (key.startsWith("added")) return `${nexus} (HAProxy ${formatNumber(values.haproxy, unit)})`;
      return `${nexus} (${(values.nexus / values.haproxy).toFixed(2)}× HAProxy)`;
    });
    lines.push(
      `| ${entry.label}${entry.quick ? " (quick)" : ""} | ${entry.commit} | ${entry.date.slice(0, 16)} | ${
        cells.join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** The whole Markdown report; `notes` is the hand-written part kept from the previous file. */
export function markdownReport(
  info: RunInfo,
  figures: readonly Figure[],
  history: readonly HistoryEntry[],
  notes: string,
): string {
  const targetLines = figures.filter((f) => f.goal !== undefined).map((figure) => {
    const met = goalMet(figure);
    const verdict = met === null ? "cannot be judged (HAProxy not measured)" : met ? "met" : "not met";
    return `- ${figure.label}: ${describeGoal(figure.goal!, figure.unit)} — ${verdict} (Nexus ${
      formatNumber(figure.values.nexus, figure.unit)
    } ${figure.unit}, HAProxy ${formatNumber(figure.values.haproxy, figure.unit)} ${figure.unit}).`;
  });
  return `# Benchmarks

Generated by \`deno task bench\`${
    info.quick ? " --quick (smoke run: small sizes, one repeat)" : ""
  } on ${info.date}.
Run label: ${info.label}; measured commit ${info.commit}${
    info.commit.endsWith("+changes") ? " (the working tree had changes not committed)" : ""
  }.

- Machine: ${info.machine.cpu}, ${info.machine.cores} cores, Linux ${info.machine.kernel}, ${info.machine.memory} RAM.
- Versions: Deno ${info.versions.deno} (V8 ${info.versions.v8}), HAProxy ${
    info.versions.haproxy ?? "not installed"
  }.
${info.settings.map((s) => `- ${s}`).join("\n")}

Every figure is the median of the repeats. Every process (service, load generator, node, agent, HAProxy) is a
separate child of the script on the same machine, so they all share its cores: what the proxy spends in CPU is
taken from the generator and the service, exactly as on a busy host.

## Results

${resultsTable(figures)}

![Throughput and latency of direct, HAProxy and Nexus](benchmarks.svg)

## Targets of this round

${targetLines.join("\n")}

## Notes on this run

${info.notes.map((n) => `- ${n}`).join("\n")}

## Log of runs (before and after each change)

Each row is one full run of \`deno task bench --label ...\` on this machine, under the same conditions; the cell
holds Nexus's median and its ratio to HAProxy measured in the same run.

${historyTable(history)}

${NOTES_MARKER}
${notes}`;
}

const COLORS: Record<TargetName, string> = { direct: "#8c8c8c", haproxy: "#3b75af", nexus: "#ef8636" };

/**
 * A plot of throughput and latency with one group of bars per figure and one bar per target, each panel with
 * its own scale. Plain SVG, no dependency.
 */
export function svgPlot(figures: readonly Figure[], title: string): string {
  const panels = [
    { title: "Throughput, MB/s (higher is better)", keys: ["bulk_up", "bulk_down", "streams"] },
    { title: "New TLS connections/s", keys: ["connections"] },
    { title: "Kept-alive requests/s", keys: ["requests"] },
    { title: "Latency, ms (lower is better)", keys: ["latency_p50", "latency_p99"] },
  ];
  const targets: TargetName[] = ["direct", "haproxy", "nexus"];
  const width = 1200;
  // Each panel is as wide as its groups of bars need (plus a margin's worth).
  const units = panels.reduce((sum, panel) => sum + panel.keys.length + 0.6, 0);
  const panelWidths = panels.map((panel) => (width * (panel.keys.length + 0.6)) / units);
  const height = 420;
  const top = 70;
  const bottom = 330;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${
      escapeXml(title)
    }</text>`,
  ];
  targets.forEach((target, i) => {
    const x = width / 2 - 150 + i * 110;
    parts.push(`<rect x="${x}" y="34" width="12" height="12" fill="${COLORS[target]}"/>`);
    parts.push(`<text x="${x + 17}" y="45">${TARGET_LABELS[target]}</text>`);
  });
  panels.forEach((panel, p) => {
    const x0 = panelWidths.slice(0, p).reduce((sum, w) => sum + w, 0) + 30;
    const innerWidth = panelWidths[p] - 45;
    const shown = panel.keys.map((key) => figures.find((f) => f.key === key)).filter((f) => f !== undefined);
    const max = Math.max(1e-9, ...shown.flatMap((f) => targets.map((t) => f.values[t] ?? 0)));
    parts.push(
      `<text x="${x0 + innerWidth / 2}" y="${top - 8}" text-anchor="middle" font-weight="bold">${
        escapeXml(panel.title)
      }</text>`,
    );
    parts.push(`<line x1="${x0}" y1="${bottom}" x2="${x0 + innerWidth}" y2="${bottom}" stroke="#333"/>`);
    const groupWidth = innerWidth / Math.max(1, shown.length);
    const barWidth = (groupWidth - 16) / targets.length;
    shown.forEach((figure, g) => {
      const gx = x0 + g * groupWidth + 8;
      targets.forEach((target, t) => {
        const value = figure.values[target];
        if (value === undefined) return;
        const h = ((bottom - top - 20) * value) / max;
        const bx = gx + t * barWidth;
        parts.push(
          `<rect x="${bx.toFixed(1)}" y="${(bottom - h).toFixed(1)}" width="${
            (barWidth - 2).toFixed(1)
          }" height="${h.toFixed(1)}" fill="${COLORS[target]}"/>`,
        );
        parts.push(
          `<text x="${(bx + barWidth / 2).toFixed(1)}" y="${
            (bottom - h - 4).toFixed(1)
          }" text-anchor="middle" font-size="10">${formatNumber(value, figure.unit)}</text>`,
        );
      });
      const label = shortLabel(figure);
      parts.push(
        `<text x="${(gx + (groupWidth - 16) / 2).toFixed(1)}" y="${bottom + 16}" text-anchor="middle">${
          escapeXml(label)
        }</text>`,
      );
    });
  });
  parts.push(
    `<text x="10" y="${
      height - 10
    }" font-size="10" fill="#555">Medians of the repeats; each panel has its own scale. Generated by deno task bench.</text>`,
  );
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function shortLabel(figure: Figure): string {
  const labels: Record<string, string> = {
    bulk_up: "1 stream up",
    bulk_down: "1 stream down",
    streams: "64 streams",
    connections: "new TLS conn/s",
    requests: "req/s kept-alive",
    latency_p50: "p50",
    latency_p99: "p99",
  };
  return labels[figure.key] ?? figure.key;
}

function escapeXml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
