/**
 * A small metrics registry: counters counted at events, histograms, and families read from the objects' own
 * state at each scrape (gauges, and counters an object already keeps). Rendered by
 * {@linkcode formatExposition}.
 *
 * Labels stay bounded: each label of a family takes at most {@linkcode LABEL_VALUE_CAP} distinct values, and
 * every value past the cap is reported as {@linkcode OTHER_LABEL_VALUE}, so nothing is lost from the sums and
 * no input can grow the number of series without bound. Counters keep the values they saw first (a counter's
 * series must not move to `other` once it exists); gauges, read afresh at each scrape, keep the first values in
 * sorted order and sum the rest into `other`.
 *
 * @module
 */

import { formatExposition, type HistogramSeries, type Labels, type MetricFamily } from "./exposition.ts";

/** Distinct values one label of one family may take; past it, values are reported as `other`. */
export const LABEL_VALUE_CAP = 100;
/** The label value that stands for every value past the cap. */
export const OTHER_LABEL_VALUE = "other";

/** Label values of a family whose label names are `L`. */
export type LabelValues<L extends string> = Readonly<Record<L, string>>;

/** One series read at scrape time: its label values and value. */
export type Reading<L extends string> = readonly [LabelValues<L>, number];

/** Options of a family: its label names and their cap. */
export interface FamilyOptions<L extends string> {
  readonly labels?: readonly L[];
  /** Distinct values per label (default {@linkcode LABEL_VALUE_CAP}). */
  readonly cap?: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The values each label of one family has taken, up to a cap: the first `cap` distinct values keep their own,
 * every later one becomes `other`. A value once admitted stays admitted.
 */
export class LabelValueCap {
  readonly #cap: number;
  readonly #seen = new Map<string, Set<string>>();

  constructor(labelNames: readonly string[], cap: number) {
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`A label cap must be at least 1, got ${cap}`);
    this.#cap = cap;
    for (const name of labelNames) this.#seen.set(name, new Set());
  }

  /** The value to report for `value` of label `name`: itself, or `other` past the cap. */
  admit(name: string, value: string): string {
    const seen = this.#seen.get(name);
    if (seen === undefined) throw new Error(`Unknown label ${name}`);
    if (seen.has(value)) return value;
    if (seen.size >= this.#cap) return OTHER_LABEL_VALUE;
    seen.add(value);
    return value;
  }
}

/** Series keyed by their label values in the family's label order. */
class SeriesMap<T> {
  readonly #labelNames: readonly string[];
  readonly #series = new Map<string, { labels: Labels; value: T }>();

  constructor(labelNames: readonly string[]) {
    this.#labelNames = labelNames;
  }

  /** The series for `labels` (already capped), created with `create` the first time. */
  get(labels: Labels, create: () => T): T {
    const key = JSON.stringify(this.#labelNames.map((name) => labels[name]));
    let entry = this.#series.get(key);
    if (entry === undefined) {
      entry = { labels, value: create() };
      this.#series.set(key, entry);
    }
    return entry.value;
  }

  entries(): Array<{ labels: Labels; value: T }> {
    return [...this.#series.values()];
  }
}

function checkNames(name: string, labelNames: readonly string[]): void {
  if (!METRIC_NAME.test(name)) throw new Error(`Invalid metric name ${JSON.stringify(name)}`);
  for (const label of labelNames) {
    if (!LABEL_NAME.test(label) || label.startsWith("__") || label === "le") {
      throw new Error(`Invalid label name ${JSON.stringify(label)} of ${name}`);
    }
  }
  if (new Set(labelNames).size !== labelNames.length) throw new Error(`Repeated label name in ${name}`);
}

/** Capped labels in the family's label order; every label name must be given. */
function capLabels(cap: LabelValueCap, labelNames: readonly string[], values: Labels): Labels {
  const labels: Record<string, string> = {};
  for (const name of labelNames) {
    const value = values[name];
    if (value === undefined) throw new Error(`Label ${name} has no value`);
    labels[name] = cap.admit(name, value);
  }
  return labels;
}

/** A counter counted at events. */
export class Counter<L extends string = never> {
  readonly name: string;
  readonly #help: string;
  readonly #labelNames: readonly L[];
  readonly #cap: LabelValueCap;
  readonly #series: SeriesMap<{ value: number }>;

  constructor(name: string, help: string, options: FamilyOptions<L> = {}) {
    const labelNames = options.labels ?? [];
    checkNames(name, labelNames);
    if (!name.endsWith("_total")) throw new Error(`A counter's name must end in _total: ${name}`);
    this.name = name;
    this.#help = help;
    this.#labelNames = labelNames;
    this.#cap = new LabelValueCap(labelNames, options.cap ?? LABEL_VALUE_CAP);
    this.#series = new SeriesMap(labelNames);
  }

  /** Adds `amount` (at least 0) to the series of `labels`. */
  inc(labels: LabelValues<L>, amount = 1): void {
    if (!(amount >= 0)) throw new RangeError(`A counter only goes up; got ${amount} for ${this.name}`);
    this.#series.get(capLabels(this.#cap, this.#labelNames, labels), () => ({ value: 0 })).value += amount;
  }

  /** The family as exposed, series in the order they first counted. */
  family(): MetricFamily {
    return {
      type: "counter",
      name: this.name,
      help: this.#help,
      samples: this.#series.entries().map(({ labels, value }) => ({ labels, value: value.value })),
    };
  }
}

/** A histogram: observations counted into fixed buckets, with their sum. */
export class Histogram<L extends string = never> {
  readonly name: string;
  readonly #help: string;
  readonly #bounds: readonly number[];
  readonly #labelNames: readonly L[];
  readonly #cap: LabelValueCap;
  readonly #series: SeriesMap<{ bucketCounts: number[]; sum: number; count: number }>;

  constructor(
    name: string,
    help: string,
    options: FamilyOptions<L> & { readonly bounds: readonly number[] },
  ) {
    const labelNames = options.labels ?? [];
    checkNames(name, labelNames);
    const bounds = options.bounds;
    if (
      bounds.length === 0 ||
      bounds.some((bound, i) => !Number.isFinite(bound) || bound <= (bounds[i - 1] ?? -Infinity))
    ) {
      throw new Error(`The buckets of ${name} must be finite and ascending`);
    }
    this.name = name;
    this.#help = help;
    this.#bounds = bounds;
    this.#labelNames = labelNames;
    this.#cap = new LabelValueCap(labelNames, options.cap ?? LABEL_VALUE_CAP);
    this.#series = new SeriesMap(labelNames);
  }

  /** Counts `value` into the first bucket whose bound is at least `value` (or only into `+Inf`). */
  observe(labels: LabelValues<L>, value: number): void {
    const series = this.#series.get(
      capLabels(this.#cap, this.#labelNames, labels),
      () => ({ bucketCounts: this.#bounds.map(() => 0), sum: 0, count: 0 }),
    );
    const bucket = this.#bounds.findIndex((bound) => value <= bound);
    if (bucket >= 0) series.bucketCounts[bucket] += 1;
    series.sum += value;
    series.count += 1;
  }

  family(): MetricFamily {
    return {
      type: "histogram",
      name: this.name,
      help: this.#help,
      bounds: this.#bounds,
      series: this.#series.entries().map(({ labels, value }): HistogramSeries => ({
        labels,
        bucketCounts: [...value.bucketCounts],
        sum: value.sum,
        count: value.count,
      })),
    };
  }
}

/**
 * Applies a label cap to gauge readings of one scrape: for each label, the first `cap` distinct values in
 * sorted order keep their own series, the others are summed into `other`. Pure.
 *
 * @example
 * ```ts
 * import { capGaugeReadings } from "./registry.ts";
 * capGaugeReadings([[{ route: "b" }, 1], [{ route: "a" }, 2], [{ route: "c" }, 3]], ["route"], 2);
 * // [[{ route: "a" }, 2], [{ route: "b" }, 1], [{ route: "other" }, 3]]
 * ```
 */
export function capGaugeReadings<L extends string>(
  readings: Iterable<Reading<L>>,
  labelNames: readonly L[],
  cap: number,
): Reading<L>[] {
  const all = [...readings];
  const kept = new Map<L, Set<string>>();
  for (const name of labelNames) {
    const values = [...new Set(all.map(([labels]) => labels[name]))].sort();
    kept.set(name, new Set(values.slice(0, cap)));
  }
  const summed = new Map<string, [Record<L, string>, number]>();
  for (const [labels, value] of all) {
    const capped = {} as Record<L, string>;
    for (const name of labelNames) {
      capped[name] = kept.get(name)!.has(labels[name]) ? labels[name] : OTHER_LABEL_VALUE;
    }
    const key = JSON.stringify(labelNames.map((name) => capped[name]));
    const entry = summed.get(key);
    if (entry === undefined) summed.set(key, [capped, value]);
    else entry[1] += value;
  }
  return [...summed.values()].sort(([a], [b]) => compareLabels(a, b, labelNames));
}

function compareLabels<L extends string>(a: LabelValues<L>, b: LabelValues<L>, names: readonly L[]): number {
  for (const name of names) {
    if (a[name] !== b[name]) {
      // `other` last, so a reader sees the named series first.
      if (a[name] === OTHER_LABEL_VALUE) return 1;
      if (b[name] === OTHER_LABEL_VALUE) return -1;
      return a[name] < b[name] ? -1 : 1;
    }
  }
  return 0;
}

/**
 * The metrics of one process: families in the order they were registered, rendered in the text exposition
 * format at each scrape.
 *
 * @example
 * ```ts
 * import { MetricsRegistry } from "./registry.ts";
 * const registry = new MetricsRegistry();
 * const refused = registry.counter("nexus_refusals_total", "Refused connections.", { labels: ["reason"] });
 * registry.gauge("nexus_streams_open", "Streams open.", [], () => [[{}, 2]]);
 * refused.inc({ reason: "no_sni" });
 * registry.render().includes('nexus_refusals_total{reason="no_sni"} 1'); // true
 * ```
 */
export class MetricsRegistry {
  readonly #families: Array<() => MetricFamily> = [];
  readonly #names = new Set<string>();

  /** A counter counted at events. */
  counter<L extends string = never>(name: string, help: string, options: FamilyOptions<L> = {}): Counter<L> {
    const counter = new Counter(name, help, options);
    this.#register(name, () => counter.family());
    return counter;
  }

  /** A histogram with the given bucket bounds. */
  histogram<L extends string = never>(
    name: string,
    help: string,
    options: FamilyOptions<L> & { readonly bounds: readonly number[] },
  ): Histogram<L> {
    const histogram = new Histogram(name, help, options);
    this.#register(name, () => histogram.family());
    return histogram;
  }

  /** A gauge read at each scrape; its labels are capped per scrape ({@linkcode capGaugeReadings}). */
  gauge<L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: () => Iterable<Reading<L>>,
    cap = LABEL_VALUE_CAP,
  ): void {
    checkNames(name, labelNames);
    this.#register(name, () => ({
      type: "gauge",
      name,
      help,
      samples: capGaugeReadings(read(), labelNames, cap).map(([labels, value]) => ({ labels, value })),
    }));
  }

  /**
   * A counter an object already keeps, read at each scrape (`read` must never go down for the same labels).
   * Its labels are capped like an event counter's: the values seen first keep their series.
   */
  countedBy<L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: () => Iterable<Reading<L>>,
    cap = LABEL_VALUE_CAP,
  ): void {
    checkNames(name, labelNames);
    if (!name.endsWith("_total")) throw new Error(`A counter's name must end in _total: ${name}`);
    const labelCap = new LabelValueCap(labelNames, cap);
    this.#register(name, () => {
      const series = new SeriesMap<{ value: number }>(labelNames);
      for (const [labels, value] of read()) {
        series.get(capLabels(labelCap, labelNames, labels), () => ({ value: 0 })).value += value;
      }
      return {
        type: "counter",
        name,
        help,
        samples: series.entries().map(({ labels, value }) => ({ labels, value: value.value })),
      };
    });
  }

  /** Every family, in the text exposition format. */
  render(): string {
    return formatExposition(this.#families.map((family) => family()));
  }

  #register(name: string, family: () => MetricFamily): void {
    if (this.#names.has(name)) throw new Error(`Metric ${name} is registered twice`);
    this.#names.add(name);
    this.#families.push(family);
  }
}
