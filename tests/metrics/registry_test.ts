/**
 * The metrics registry and the exposition format: exact output for known families, and models driven by
 * fast-check over the whole range of the label cap: every count lands in exactly one series, no label takes more
 * than its cap plus `other`, counters keep the values they saw first, gauges the first in sorted order, and the
 * text parses back to the same series whatever the label values hold.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { formatExposition, type MetricFamily } from "../../src/metrics/exposition.ts";
import {
  capGaugeReadings,
  Counter,
  Histogram,
  LABEL_VALUE_CAP,
  MetricsRegistry,
  OTHER_LABEL_VALUE,
} from "../../src/metrics/registry.ts";
import { parseExposition } from "../helpers/metrics.ts";

Deno.test("the exposition format has HELP and TYPE lines, escaped label values and cumulative buckets", () => {
  const families: MetricFamily[] = [
    {
      type: "counter",
      name: "nexus_refusals_total",
      help: "Refused \\ connections\nby reason.",
      samples: [
        { labels: { reason: "no_sni", port: "443" }, value: 3 },
        { labels: { reason: 'a "quoted"\\ value\n', port: "80" }, value: 1 },
      ],
    },
    { type: "gauge", name: "nexus_draining", help: "1 while draining.", samples: [{ labels: {}, value: 0 }] },
    { type: "gauge", name: "nexus_empty", help: "No series yet.", samples: [] },
    {
      type: "histogram",
      name: "nexus_sniff_duration_seconds",
      help: "Sniffing time.",
      bounds: [0.001, 0.01],
      series: [{ labels: { port: "443" }, bucketCounts: [2, 1], sum: 0.0125, count: 4 }],
    },
  ];
  assert.equal(
    formatExposition(families),
    [
      "# HELP nexus_refusals_total Refused \\\\ connections\\nby reason.",
      "# TYPE nexus_refusals_total counter",
      'nexus_refusals_total{reason="no_sni",port="443"} 3',
      'nexus_refusals_total{reason="a \\"quoted\\"\\\\ value\\n",port="80"} 1',
      "# HELP nexus_draining 1 while draining.",
      "# TYPE nexus_draining gauge",
      "nexus_draining 0",
      "# HELP nexus_empty No series yet.",
      "# TYPE nexus_empty gauge",
      "# HELP nexus_sniff_duration_seconds Sniffing time.",
      "# TYPE nexus_sniff_duration_seconds histogram",
      'nexus_sniff_duration_seconds_bucket{port="443",le="0.001"} 2',
      'nexus_sniff_duration_seconds_bucket{port="443",le="0.01"} 3',
      'nexus_sniff_duration_seconds_bucket{port="443",le="+Inf"} 4',
      'nexus_sniff_duration_seconds_sum{port="443"} 0.0125',
      'nexus_sniff_duration_seconds_count{port="443"} 4',
      "",
    ].join("\n"),
  );
});

Deno.test("the registry refuses names the format or the conventions do not allow", () => {
  const registry = new MetricsRegistry();
  assert.throws(() => registry.counter("nexus_refusals", "no _total"), /must end in _total/);
  assert.throws(() => registry.counter("nexus-bad_total", "dash"), /Invalid metric name/);
  assert.throws(() => registry.counter("nexus_x_total", "le", { labels: ["le"] }), /Invalid label name/);
  assert.throws(
    () => registry.counter("nexus_y_total", "reserved", { labels: ["__x"] }),
    /Invalid label name/,
  );
  assert.throws(() => registry.histogram("nexus_h", "unsorted", { bounds: [1, 1] }), /ascending/);
  registry.counter("nexus_z_total", "once");
  assert.throws(() => registry.counter("nexus_z_total", "twice"), /registered twice/);
  const counter = new Counter("nexus_c_total", "c");
  assert.throws(() => counter.inc({}, -1), /only goes up/);
});

Deno.test("a histogram counts a value into the first bucket whose bound holds it, past the last into +Inf only", () => {
  const histogram = new Histogram("nexus_h_seconds", "h", { bounds: [0.1, 1] });
  for (const value of [0.1, 0.05, 0.5, 1, 7]) histogram.observe({}, value);
  const family = histogram.family();
  assert.equal(family.type, "histogram");
  if (family.type !== "histogram") return;
  assert.deepEqual(family.series, [{ labels: {}, bucketCounts: [2, 2], sum: 8.65, count: 5 }]);
});

/** Label values drawn from a pool larger than the cap, so runs go past it. */
const labelValue = fc.integer({ min: 0, max: 12 }).map((n) => `v${n}`);

Deno.test("model: a counter keeps its first `cap` values per label, counts the rest as other and loses nothing", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.tuple(labelValue, labelValue, fc.integer({ min: 0, max: 1000 })), { maxLength: 200 }),
      (cap, events) => {
        const counter = new Counter<"a" | "b">("nexus_model_total", "model", { labels: ["a", "b"], cap });
        const admitted = { a: [] as string[], b: [] as string[] };
        const expected = new Map<string, number>();
        const admit = (name: "a" | "b", value: string) => {
          if (admitted[name].includes(value)) return value;
          if (admitted[name].length >= cap) return OTHER_LABEL_VALUE;
          admitted[name].push(value);
          return value;
        };
        for (const [a, b, amount] of events) {
          counter.inc({ a, b }, amount);
          const key = `${admit("a", a)} ${admit("b", b)}`;
          expected.set(key, (expected.get(key) ?? 0) + amount);
        }
        const family = counter.family();
        if (family.type === "histogram") throw new Error("a counter");
        const actual = new Map(family.samples.map((s) => [`${s.labels.a} ${s.labels.b}`, s.value]));
        assert.deepEqual(actual, expected);
        for (const name of ["a", "b"]) {
          const values = new Set(
            family.samples.map((s) => s.labels[name]).filter((v) => v !== OTHER_LABEL_VALUE),
          );
          assert.ok(values.size <= cap);
        }
      },
    ),
  );
});

Deno.test("model: gauge readings keep the first `cap` sorted values per label and sum the rest into other", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.tuple(labelValue, fc.integer({ min: 0, max: 1000 })), { maxLength: 60 }),
      (cap, readings) => {
        const capped = capGaugeReadings(readings.map(([route, value]) => [{ route }, value] as const), [
          "route",
        ], cap);
        const kept = [...new Set(readings.map(([route]) => route))].sort().slice(0, cap);
        const expected = new Map<string, number>();
        for (const [route, value] of readings) {
          const label = kept.includes(route) ? route : OTHER_LABEL_VALUE;
          expected.set(label, (expected.get(label) ?? 0) + value);
        }
        assert.deepEqual(new Map(capped.map(([labels, value]) => [labels.route, value])), expected);
        assert.equal(capped.length, expected.size, "one series per capped label set");
        if (capped.length > 0 && expected.has(OTHER_LABEL_VALUE)) {
          assert.equal(capped.at(-1)![0].route, OTHER_LABEL_VALUE, "other comes last");
        }
      },
    ),
  );
});

Deno.test("property: the text parses back to the same series whatever the label values hold", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.string({ unit: "grapheme", maxLength: 12 }), fc.nat()), { maxLength: 20 }),
      (events) => {
        const registry = new MetricsRegistry();
        const counter = registry.counter("nexus_any_total", "Any\nvalue \\ at all.", {
          labels: ["value"],
          cap: LABEL_VALUE_CAP,
        });
        const expected = new Map<string, number>();
        for (const [value, amount] of events) {
          counter.inc({ value }, amount);
          expected.set(value, (expected.get(value) ?? 0) + amount);
        }
        const parsed = parseExposition(registry.render());
        assert.ok(parsed.every((sample) => sample.name === "nexus_any_total"));
        assert.deepEqual(new Map(parsed.map((sample) => [sample.labels.value, sample.value])), expected);
      },
    ),
  );
});

Deno.test("gauges and counters read at scrape time are read afresh at each render", () => {
  const registry = new MetricsRegistry();
  let open = 2;
  let bytes = 10;
  registry.gauge("nexus_streams_open", "Open.", [], () => [[{}, open]]);
  registry.countedBy("nexus_bytes_total", "Bytes.", ["direction"], () => [[{ direction: "in" }, bytes]]);
  assert.match(registry.render(), /^nexus_streams_open 2$/m);
  open = 5;
  bytes = 25;
  const text = registry.render();
  assert.match(text, /^nexus_streams_open 5$/m);
  assert.match(text, /^nexus_bytes_total\{direction="in"\} 25$/m);
});
