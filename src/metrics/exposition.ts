/**
 * The Prometheus text exposition format (version 0.0.4) as a pure function from metric families to text: what
 * `/metrics` answers. No state, no I/O; the registry ({@linkcode MetricsRegistry}) builds the families.
 *
 * @module
 */

/** Label names to values of one series. */
export type Labels = Readonly<Record<string, string>>;

/** One series of a counter or gauge. */
export interface Sample {
  readonly labels: Labels;
  readonly value: number;
}

/** One series of a histogram: per-bucket counts (not cumulative), in the order of the family's bounds. */
export interface HistogramSeries {
  readonly labels: Labels;
  readonly bucketCounts: readonly number[];
  readonly sum: number;
  readonly count: number;
}

/** A metric family as it is exposed: name, help, type and its series. */
export type MetricFamily =
  | {
    readonly type: "counter" | "gauge";
    readonly name: string;
    readonly help: string;
    readonly samples: readonly Sample[];
  }
  | {
    readonly type: "histogram";
    readonly name: string;
    readonly help: string;
    /** Upper bounds of the buckets, ascending, without `+Inf` (always added). */
    readonly bounds: readonly number[];
    readonly series: readonly HistogramSeries[];
  };

/** The content type of the format, for the `Content-Type` of a `/metrics` answer. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Formats families in the text exposition format: for each, a `# HELP` and a `# TYPE` line, then one line per
 * series (for a histogram: cumulative `_bucket` lines up to `le="+Inf"`, then `_sum` and `_count`). Families
 * without a series still get their HELP and TYPE lines, so a scraper learns they exist.
 *
 * @example
 * ```ts
 * import { formatExposition } from "./exposition.ts";
 * formatExposition([{
 *   type: "counter",
 *   name: "nexus_refusals_total",
 *   help: "Refused connections.",
 *   samples: [{ labels: { reason: "no_sni" }, value: 3 }],
 * }]);
 * // # HELP nexus_refusals_total Refused connections.
 * // # TYPE nexus_refusals_total counter
 * // nexus_refusals_total{reason="no_sni"} 3
 * ```
 */
export function formatExposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
    if (family.type !== "histogram") {
      for (const sample of family.samples) {
        lines.push(`${family.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
      }
      continue;
    }
    for (const series of family.series) {
      let cumulative = 0;
      family.bounds.forEach((bound, i) => {
        cumulative += series.bucketCounts[i] ?? 0;
        lines.push(
          `${family.name}_bucket${formatLabels(series.labels, ["le", formatValue(bound)])} ${cumulative}`,
        );
      });
      lines.push(`${family.name}_bucket${formatLabels(series.labels, ["le", "+Inf"])} ${series.count}`);
      lines.push(`${family.name}_sum${formatLabels(series.labels)} ${formatValue(series.sum)}`);
      lines.push(`${family.name}_count${formatLabels(series.labels)} ${series.count}`);
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/** `{a="1",b="2"}`, or nothing without labels; `extra` (the histogram's `le`) goes last. */
function formatLabels(labels: Labels, extra?: readonly [string, string]): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`);
  if (extra !== undefined) pairs.push(`${extra[0]}="${extra[1]}"`);
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
}

/** Label values escape backslash, double quote and line feed (the format's only escapes). */
function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** HELP text escapes backslash and line feed. */
function escapeHelp(help: string): string {
  return help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** Integers as integers, infinities and NaN as the format spells them. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
