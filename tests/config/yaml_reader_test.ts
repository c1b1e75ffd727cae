import assert from "node:assert/strict";
import fc from "fast-check";
import { stringify } from "yaml";
import {
  ConfigError,
  type ConfigProblem,
  type MapReader,
  parseDurationSeconds,
  readYamlConfig,
  type ValueReader,
} from "../../src/config/yaml_reader.ts";

const PORT = { min: 1, max: 65_535 } as const;

interface RelayPort {
  port: number;
  proxyProtocol: boolean;
}

interface NodeConfig {
  name: string;
  idleTimeoutSeconds: number;
  drainTimeoutSeconds: number;
  allowedNetworks: string[];
  limits: { maxConnections: number; maxConnectionsPerIp: number | undefined };
  relayPorts: RelayPort[];
  targets: Map<string, { backend: string; weight: number }>;
}

function readRelayPort(value: ValueReader): RelayPort | undefined {
  if (value.isScalar()) {
    const port = value.asInteger(PORT);
    return port === undefined ? undefined : { port, proxyProtocol: false };
  }
  const map = value.asMap();
  return {
    port: map.integer("port", { ...PORT, required: true }),
    proxyProtocol: map.boolean("proxyProtocol", { default: false }),
  };
}

function readNode(root: MapReader): NodeConfig {
  const limits = root.map("limits");
  return {
    name: root.string("name", { required: true, nonEmpty: true }),
    idleTimeoutSeconds: root.integer("idleTimeoutSeconds", { min: 0, max: 86_400, default: 60 }),
    drainTimeoutSeconds: root.durationSeconds("drainTimeout", { min: 1, max: 3_600, default: 30 }),
    allowedNetworks: root.stringList("allowedNetworks", { default: [] }),
    limits: {
      maxConnections: limits.integer("maxConnections", { min: 1, max: 1_000_000, default: 10_000 }),
      maxConnectionsPerIp: limits.integer("maxConnectionsPerIp", { min: 1, max: 1_000_000 }),
    },
    relayPorts: root.list("relayPorts", readRelayPort, { required: true, nonEmpty: true }),
    targets: root.entries("targets", (_hostname, value) => {
      const target = value.asMap();
      return {
        backend: target.string("backend", { required: true }),
        weight: target.integer("weight", { min: 1, max: 100, default: 1 }),
      };
    }) ?? new Map(),
  };
}

/** The problems `readYamlConfig` throws for `text`; fails when it does not throw a `ConfigError`. */
function problemsOf(text: string, read: (root: MapReader) => unknown = readNode): ConfigProblem[] {
  try {
    readYamlConfig(text, "node.yaml", read);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  throw new Error("expected readYamlConfig to throw a ConfigError");
}

function problem(path: string, line: number, column: number, message: string): ConfigProblem {
  return { path, line, column, message };
}

Deno.test("reads a valid file into typed values, with defaults for missing keys", () => {
  const text = [
    "name: edge-1",
    "drainTimeout: 2m",
    "limits:",
    "  maxConnectionsPerIp: 64",
    "relayPorts:",
    "  - 443",
    "  - port: 8443",
    "    proxyProtocol: true",
    "targets:",
    '  "*.example.com": { backend: pool-a }',
    "  app.example.com:",
    "    backend: pool-b",
    "    weight: 5",
    "",
  ].join("\n");
  const config = readYamlConfig(text, "node.yaml", readNode);
  assert.deepEqual(config, {
    name: "edge-1",
    idleTimeoutSeconds: 60,
    drainTimeoutSeconds: 120,
    allowedNetworks: [],
    limits: { maxConnections: 10_000, maxConnectionsPerIp: 64 },
    relayPorts: [{ port: 443, proxyProtocol: false }, { port: 8443, proxyProtocol: true }],
    targets: new Map([
      ["*.example.com", { backend: "pool-a", weight: 1 }],
      ["app.example.com", { backend: "pool-b", weight: 5 }],
    ]),
  });
});

Deno.test("reports every YAML syntax error at its line and column, and nothing else", () => {
  const text = "name: edge-1\nlimits:\n  maxConnections: 1\n maxConnectionsPerIp: 2\nrelayPorts: [443]]\n";
  assert.deepEqual(problemsOf(text), [
    problem("", 4, 1, "invalid YAML: All mapping items must start at the same column"),
    problem("", 5, 18, 'invalid YAML: Unexpected flow-seq-end token in YAML stream: "]"'),
  ]);
});

Deno.test("reports a second YAML document as one problem where it starts", () => {
  assert.deepEqual(problemsOf("name: edge-1\nrelayPorts: [443]\n---\nname: edge-2\n"), [
    problem("", 3, 1, "expected one YAML document, found a second one"),
  ]);
});

Deno.test("reports unknown keys, with a hint when a read key is within edit distance 2 or differs by case", () => {
  const text = [
    "name: edge-1",
    "relayPorts: [443]",
    "idleTimeoutSecond: 30",
    "DrainTimeout: 10s",
    "colour: blue",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("idleTimeoutSecond", 3, 1, "unknown key; did you mean `idleTimeoutSeconds`?"),
    problem("DrainTimeout", 4, 1, "unknown key; did you mean `drainTimeout`?"),
    problem("colour", 5, 1, "unknown key"),
  ]);
});

Deno.test("hints a read key an unknown one abbreviates, or is a few edits from when it is long", () => {
  const text = [
    "name: edge-1",
    "relayPorts: [443]",
    "idleTimeoutSecs: 30",
    "idleTimeout: 30",
    "drain: 10s",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("idleTimeoutSecs", 3, 1, "unknown key; did you mean `idleTimeoutSeconds`?"),
    problem("idleTimeout", 4, 1, "unknown key; did you mean `idleTimeoutSeconds`?"),
    // Five characters are too few to be sure of an abbreviation.
    problem("drain", 5, 1, "unknown key"),
  ]);
});

Deno.test("hints the closest read key", () => {
  const problems = problemsOf("host: a\nhots: b\n", (root) => {
    root.string("host");
    root.stringList("hosts");
  });
  assert.deepEqual(problems, [problem("hots", 2, 1, "unknown key; did you mean `hosts`?")]);
});

Deno.test("reports a duplicate key at its second occurrence, even in a mapping nobody reads", () => {
  const text = [
    "name: edge-1",
    "relayPorts: [443]",
    "name: edge-2",
    "targets:",
    "  app.example.com: { backend: a, backend: b }",
    "extra:",
    "  x: 1",
    "  x: 2",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("name", 3, 1, "duplicate key (first defined at line 1)"),
    problem('targets."app.example.com".backend', 5, 34, "duplicate key (first defined at line 5)"),
    problem("extra", 6, 1, "unknown key"),
    problem("extra.x", 8, 3, "duplicate key (first defined at line 7)"),
  ]);
});

Deno.test("reports a key that is not a plain scalar", () => {
  assert.deepEqual(problemsOf("name: edge-1\nrelayPorts: [443]\n? [a, b]\n: 1\n"), [
    problem("", 3, 3, "expected a plain key, got a list"),
  ]);
});

Deno.test("reports a wrong type for each reader, quoting what was written", () => {
  const text = [
    "name: 443", // 1
    "idleTimeoutSeconds: '30'", // 2
    "drainTimeout: soon", // 3
    "allowedNetworks: 10.0.0.0/8", // 4
    "limits: [1, 2]", // 5
    "relayPorts:", // 6
    "  - 443.5", // 7
    "  - true", // 8
    "  - port: { number: 1 }", // 9
    "    proxyProtocol: yes", // 10
    "targets: [a, b]", // 11
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem(
      "name",
      1,
      7,
      'expected a non-empty string, got "443", which YAML reads as a number; quote it to make it a string',
    ),
    problem("idleTimeoutSeconds", 2, 21, 'expected an integer from 0 to 86400, got the quoted string "30"'),
    problem(
      "drainTimeout",
      3,
      15,
      'expected a duration from 1 to 3600 seconds (such as 90, 30s, 5m, 1h or 2d), got "soon"',
    ),
    problem("allowedNetworks", 4, 18, 'expected a list, got "10.0.0.0/8"'),
    problem("limits", 5, 9, "expected a mapping, got a list"),
    problem("relayPorts[0]", 7, 5, 'expected an integer from 1 to 65535, got "443.5"'),
    problem("relayPorts[1]", 8, 5, 'expected an integer from 1 to 65535, got "true"'),
    problem("relayPorts[2].port", 9, 11, "expected an integer from 1 to 65535, got a mapping"),
    problem("relayPorts[2].proxyProtocol", 10, 20, 'expected true or false, got "yes"'),
    problem("targets", 11, 10, "expected a mapping, got a list"),
  ]);
});

Deno.test("reports wrong list items and the other scalar shapes", () => {
  const text = [
    "tags: [edge, 7, { a: 1 }]",
    "enabled: 1",
    "label: { a: b }",
    "count: 0x10",
    "big: 99999999999999999999",
    "motd: |",
    "  12",
    "",
  ].join("\n");
  const problems = problemsOf(text, (root) => {
    root.stringList("tags");
    root.boolean("enabled");
    root.string("label");
    root.integer("count", { min: 0, max: 10 });
    root.integer("big", { min: 0, max: Number.MAX_SAFE_INTEGER });
    root.integer("motd", { min: 0, max: 100 });
  });
  assert.deepEqual(problems, [
    problem(
      "tags[1]",
      1,
      14,
      'expected a string, got "7", which YAML reads as a number; quote it to make it a string',
    ),
    problem("tags[2]", 1, 17, "expected a string, got a mapping"),
    problem("enabled", 2, 10, 'expected true or false, got "1"'),
    problem("label", 3, 8, "expected a string, got a mapping"),
    problem("count", 4, 8, 'expected an integer from 0 to 10, got "0x10"'),
    problem("big", 5, 6, 'expected an integer from 0 to 9007199254740991, got "99999999999999999999"'),
    problem("motd", 6, 7, "expected an integer from 0 to 100, got a block string"),
  ]);
});

Deno.test("reports out-of-range integers and durations with the range", () => {
  const text = [
    "name: edge-1",
    "idleTimeoutSeconds: -1",
    "drainTimeout: 2h",
    "limits:",
    "  maxConnections: 1000001",
    "relayPorts: [0, 65535, 65536]",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("idleTimeoutSeconds", 2, 21, 'expected an integer from 0 to 86400, got "-1"'),
    problem(
      "drainTimeout",
      3,
      15,
      'expected a duration from 1 to 3600 seconds (such as 90, 30s, 5m, 1h or 2d), got "2h"',
    ),
    problem("limits.maxConnections", 5, 19, 'expected an integer from 1 to 1000000, got "1000001"'),
    problem("relayPorts[0]", 6, 14, 'expected an integer from 1 to 65535, got "0"'),
    problem("relayPorts[2]", 6, 24, 'expected an integer from 1 to 65535, got "65536"'),
  ]);
});

Deno.test("names nested keys by path: list indexes and quoted free-form keys", () => {
  const text = [
    "name: edge-1",
    "relayPorts:",
    "  - 443",
    "  - port: 8443",
    "  - port: http",
    "targets:",
    '  "*.example.com":',
    "    weight: 500",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("relayPorts[2].port", 5, 11, 'expected an integer from 1 to 65535, got "http"'),
    problem('targets."*.example.com".backend', 8, 5, "required key is missing"),
    problem('targets."*.example.com".weight', 8, 13, 'expected an integer from 1 to 100, got "500"'),
  ]);
});

Deno.test("reports every problem of a file at once, in source order, one per line in the message", () => {
  const text = [
    "relayPorts: []", // 1
    "idleTimeoutSeconds: forever", // 2
    "limits:", // 3
    "  maxConnections: lots", // 4
    "  maxConections: 5", // 5
    "name: ''", // 6
    "",
  ].join("\n");
  let thrown: unknown;
  try {
    readYamlConfig(text, "node.yaml", readNode);
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof ConfigError);
  assert.equal(thrown.fileName, "node.yaml");
  assert.deepEqual(thrown.problems, [
    problem("relayPorts", 1, 13, "expected a non-empty list, got an empty one"),
    problem("idleTimeoutSeconds", 2, 21, 'expected an integer from 0 to 86400, got "forever"'),
    problem("limits.maxConnections", 4, 19, 'expected an integer from 1 to 1000000, got "lots"'),
    problem("limits.maxConections", 5, 3, "unknown key; did you mean `maxConnections`?"),
    problem("name", 6, 7, 'expected a non-empty string, got ""'),
  ]);
  assert.equal(
    thrown.message,
    [
      "node.yaml:1:13: relayPorts: expected a non-empty list, got an empty one",
      'node.yaml:2:21: idleTimeoutSeconds: expected an integer from 0 to 86400, got "forever"',
      'node.yaml:4:19: limits.maxConnections: expected an integer from 1 to 1000000, got "lots"',
      "node.yaml:5:3: limits.maxConections: unknown key; did you mean `maxConnections`?",
      'node.yaml:6:7: name: expected a non-empty string, got ""',
    ].join("\n"),
  );
});

Deno.test("reports a missing required key at the mapping that should hold it", () => {
  const text = [
    "# edge node",
    "idleTimeoutSeconds: 5",
    "relayPorts:",
    "  - proxyProtocol: true",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("name", 2, 1, "required key is missing"),
    problem("relayPorts[0].port", 4, 5, "required key is missing"),
  ]);
});

Deno.test("reports required keys of a missing optional mapping at its parent, and a missing required mapping once", () => {
  const problems = problemsOf("name: edge-1\nhub:\n  url: wss://hub\n", (root) => {
    const hub = root.map("hub");
    hub.string("url", { required: true });
    hub.map("auth").string("token", { required: true });
    root.map("tls", { required: true }).string("certFile", { required: true });
    root.string("name");
  });
  assert.deepEqual(problems, [
    problem("tls", 1, 1, "required key is missing"),
    problem("hub.auth.token", 3, 3, "required key is missing"),
  ]);
});

Deno.test("reports unknown keys in nested mappings, list items and free-form entry values", () => {
  const text = [
    "name: edge-1",
    "limits:",
    "  maxConnections: 5",
    "  burst: 3",
    "relayPorts:",
    "  - port: 443",
    "    proxy: true",
    "targets:",
    "  app.example.com: { backend: a, weigth: 2 }",
    "",
  ].join("\n");
  assert.deepEqual(problemsOf(text), [
    problem("limits.burst", 4, 3, "unknown key"),
    problem("relayPorts[0].proxy", 7, 5, "unknown key"),
    problem('targets."app.example.com".weigth', 9, 34, "unknown key; did you mean `weight`?"),
  ]);
});

Deno.test("reports an empty file, a comment-only file and a top level that is not a mapping", () => {
  const notAMapping = "expected a mapping of settings at the top level";
  assert.deepEqual(problemsOf(""), [problem("", 1, 1, `${notAMapping}, got an empty file`)]);
  assert.deepEqual(problemsOf("# nothing yet\n"), [problem("", 1, 1, `${notAMapping}, got an empty file`)]);
  assert.deepEqual(problemsOf("# nodes\n- a\n- b\n"), [problem("", 2, 1, `${notAMapping}, got a list`)]);
  assert.deepEqual(problemsOf("edge-1\n"), [problem("", 1, 1, `${notAMapping}, got "edge-1"`)]);
});

Deno.test("checks strings against nonEmpty and a pattern, naming the pattern's hint", () => {
  const text = 'a: ""\nb: "bad name"\nc: bad name\nd: good.example.com\n';
  const hostname = { pattern: /^[a-z0-9.-]+$/, patternHint: "a hostname such as app.example.com" };
  const problems = problemsOf(text, (root) => {
    root.string("a", { nonEmpty: true });
    root.string("b", hostname);
    root.string("c", { pattern: /^[a-z]+$/ });
    root.string("d", hostname);
  });
  assert.deepEqual(problems, [
    problem("a", 1, 4, 'expected a non-empty string, got ""'),
    problem("b", 2, 4, 'expected a hostname such as app.example.com, got "bad name"'),
    problem("c", 3, 4, 'expected a string matching /^[a-z]+$/, got "bad name"'),
  ]);
});

Deno.test("places the caller's semantic problems at the key's value, or at the mapping when the key is missing", () => {
  const text = "listen:\n  port: 443\n  tlsPort: 443\nname: x\n";
  const problems = problemsOf(text, (root) => {
    const listen = root.map("listen");
    const port = listen.integer("port", PORT);
    const tlsPort = listen.integer("tlsPort", PORT);
    if (port === tlsPort) listen.problem("tlsPort", `must differ from port ${port}`);
    listen.problem("certFile", "is required when tlsPort is set");
    root.value("name")?.problem("must be at least 2 characters");
  });
  assert.deepEqual(problems, [
    problem("listen.certFile", 2, 3, "is required when tlsPort is set"),
    problem("listen.tlsPort", 3, 12, "must differ from port 443"),
    problem("name", 4, 7, "must be at least 2 characters"),
  ]);
});

Deno.test("reads an empty value as an empty mapping or list, but refuses it where a scalar is expected", () => {
  const text = "name: edge-1\nrelayPorts: [443]\nlimits:\nallowedNetworks:\nidleTimeoutSeconds:\n";
  assert.deepEqual(problemsOf(text), [
    problem("idleTimeoutSeconds", 5, 1, "expected an integer from 0 to 86400, got an empty value"),
  ]);
  const config = readYamlConfig(
    "name: edge-1\nrelayPorts: [443]\nlimits:\nallowedNetworks:\n",
    "n.yaml",
    readNode,
  );
  assert.deepEqual(config.limits, { maxConnections: 10_000, maxConnectionsPerIp: undefined });
  assert.deepEqual(config.allowedNetworks, []);
});

Deno.test("reads through aliases and reports an alias to no anchor", () => {
  const text = [
    "defaults: &defaults { backend: pool-a }",
    "targets:",
    "  a.example.com: *defaults",
    "  b.example.com: *missing",
    "",
  ].join("\n");
  const read = (root: MapReader) => {
    root.map("defaults").string("backend");
    root.value("targets")?.asEntries((_name, value) => value.asMap()); // read twice: reported once
    return root.entries("targets", (_name, value) => value.asMap().string("backend", { required: true }));
  };
  assert.deepEqual(problemsOf(text, read), [
    problem('targets."b.example.com"', 4, 18, "alias *missing refers to no anchor"),
  ]);
  const valid = text.replace("*missing", "*defaults");
  assert.deepEqual(
    readYamlConfig(valid, "n.yaml", read),
    new Map([["a.example.com", "pool-a"], ["b.example.com", "pool-a"]]),
  );
});

Deno.test("reports an unresolved tag as a problem", () => {
  assert.deepEqual(problemsOf("name: !secret edge\n", (root) => root.string("name")), [
    problem("", 1, 7, "Unresolved tag: !secret"),
  ]);
});

Deno.test("gives each caller its own copy of a list default", () => {
  const fallback: readonly string[] = ["a"];
  const read = (root: MapReader) => root.stringList("tags", { default: fallback });
  const first = readYamlConfig("x: 1\n", "n.yaml", (root) => {
    root.integer("x", PORT);
    return read(root);
  });
  first.push("b");
  assert.deepEqual(fallback, ["a"]);
});

Deno.test("refuses a reader used after readYamlConfig returned", () => {
  let escaped: MapReader | undefined;
  readYamlConfig("a: 1\n", "n.yaml", (root) => {
    escaped = root;
    return root.integer("a", PORT);
  });
  assert.throws(() => escaped?.integer("a", PORT), {
    message: "A config reader was used after readYamlConfig returned",
  });
});

Deno.test("parseDurationSeconds reads s, m, h, d and plain seconds, and refuses anything else", () => {
  const cases: [string, number | null][] = [
    ["90", 90],
    ["0", 0],
    ["30s", 30],
    ["5m", 300],
    ["1h", 3_600],
    ["2d", 172_800],
    ["", null],
    ["s", null],
    ["1.5h", null],
    ["-5s", null],
    ["5 m", null],
    [" 5m", null],
    ["5M", null],
    ["1w", null],
    ["1h30m", null],
    ["99999999999999999d", null],
  ];
  for (const [text, expected] of cases) assert.equal(parseDurationSeconds(text), expected, text);
});

const yamlishText = fc.array(
  fc.oneof(
    fc.constantFrom(
      "a",
      "name",
      "relayPorts",
      "limits",
      ":",
      ": ",
      " ",
      "  ",
      "\n",
      "\t",
      "- ",
      "[",
      "]",
      "{",
      "}",
      ",",
      "'",
      '"',
      "&x ",
      "*x",
      "*y",
      "!!int ",
      "!tag ",
      "? ",
      "# c",
      "|",
      ">",
      "---",
      "...",
      "%YAML 1.2",
      "443",
      "0x1F",
      "1.5",
      "~",
      "true",
      "<<: ",
    ),
    fc.string({ maxLength: 4 }),
  ),
  { maxLength: 40 },
).map((parts) => parts.join(""));

/** Reads `text` with `read`: returns, or throws a `ConfigError` whose problems lie in the file, in source order. */
function readsOrReportsProblems(text: string, read: (root: MapReader) => unknown): void {
  try {
    readYamlConfig(text, "fuzz.yaml", read);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const lineCount = text.split(/\r\n|\r|\n/).length;
    assert.ok(error.problems.length > 0);
    for (const p of error.problems) {
      assert.ok(p.line >= 1 && p.line <= lineCount && p.column >= 1, JSON.stringify(p));
    }
    const positions = error.problems.map((p) => p.line * 1e6 + p.column);
    assert.deepEqual(positions, positions.toSorted((a, b) => a - b));
  }
}

Deno.test("never throws anything but a ConfigError for arbitrary text", () => {
  fc.assert(
    fc.property(fc.oneof(yamlishText, fc.string({ unit: "binary", maxLength: 200 })), (text) => {
      readsOrReportsProblems(text, readNode);
    }),
    { numRuns: 300 },
  );
});

const ALL_READERS = (root: MapReader) => {
  const item = (
    v: ValueReader,
  ) => (v.isMap() ? v.asMap().string("x") : v.isList() ? v.asList(() => 1) : v.asString());
  return [
    root.string("s", { required: true, nonEmpty: true, pattern: /^a/ }),
    root.integer("i", { min: -5, max: 5, required: true }),
    root.boolean("b", { default: true }),
    root.durationSeconds("d", { min: 0, max: 100 }),
    root.stringList("l", { nonEmpty: true }),
    root.map("m").integer("n", { min: 0, max: 1, required: true }),
    root.list("v", item),
    root.entries("e", (key, v) => `${key}=${v.asBoolean()}`),
  ];
};

Deno.test("never crashes a reader for arbitrary JSON values under its keys", () => {
  const keys = ["s", "i", "b", "d", "l", "m", "v", "e", "extra"];
  const config = fc.dictionary(fc.constantFrom(...keys), fc.jsonValue({ maxDepth: 3 }), {
    maxKeys: keys.length,
  });
  fc.assert(
    fc.property(config, fc.boolean(), (values, flow) => {
      const text = flow ? JSON.stringify(values) : stringify(values);
      readsOrReportsProblems(text, ALL_READERS);
    }),
    { numRuns: 300 },
  );
});

Deno.test("reads back any valid config written as YAML", () => {
  const validConfig = fc.record({
    name: fc.string({ minLength: 1, maxLength: 20 }),
    idleTimeoutSeconds: fc.integer({ min: 0, max: 86_400 }),
    allowedNetworks: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
    relayPorts: fc.array(fc.integer({ min: 1, max: 65_535 }), { minLength: 1, maxLength: 4 }),
  });
  fc.assert(
    fc.property(validConfig, (written) => {
      const read = readYamlConfig(stringify(written), "n.yaml", (root) => ({
        name: root.string("name", { required: true }),
        idleTimeoutSeconds: root.integer("idleTimeoutSeconds", { min: 0, max: 86_400, required: true }),
        allowedNetworks: root.stringList("allowedNetworks", { required: true }),
        relayPorts: root.list("relayPorts", (v) => v.asInteger(PORT), { required: true }),
      }));
      assert.deepEqual(read, { ...written });
    }),
    { numRuns: 300 },
  );
});
