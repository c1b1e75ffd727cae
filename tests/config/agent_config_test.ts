/**
 * The agent config: every key read into its typed value, every key's mistakes reported with the exact
 * `file:line:column: key: message`, and over arbitrary YAML (and arbitrary bytes), nothing thrown but a
 * `ConfigError`.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { stringify } from "yaml";
import { type AgentConfig, readAgentConfig } from "../../src/config/agent_config.ts";
import { testCertificates } from "../helpers/certs.ts";
import { TEST_JWT_SECRET } from "../helpers/cluster.ts";
import { type ConfigDir, makeConfigDir } from "../helpers/processes.ts";
import { problemsOf, readsOrExplains as checkReadsOrExplains } from "./config_checks.ts";

const REQUIRED = [
  'hubs: ["wss://hub.example.com/connect"]',
  'hostnames: ["app.example.com"]',
  "token:",
  '  secretFile: "backends.secret"',
  "targets:",
  '  app.example.com: "127.0.0.1:8443"',
];
const TOKEN_LINE = 3;
const TARGET_LINE = 5;

let shared: Promise<ConfigDir> | undefined;
function configDir(): Promise<ConfigDir> {
  shared ??= makeConfigDir();
  return shared;
}

async function read(lines: readonly string[]): Promise<AgentConfig> {
  return readAgentConfig(lines.join("\n") + "\n", "agent.yaml", (await configDir()).path);
}

/** The problems of `lines` as the operator sees them (one line each), or "valid". */
async function problems(lines: readonly string[]): Promise<string[] | "valid"> {
  const dir = await configDir();
  return problemsOf(() => readAgentConfig(lines.join("\n") + "\n", "agent.yaml", dir.path));
}

/** The required lines with line `index` replaced by `replacement` (none: removed), then `extra` lines. */
function withLine(index: number, replacement: readonly string[], extra: readonly string[] = []): string[] {
  const lines = [...REQUIRED];
  lines.splice(index, 1, ...replacement);
  return [...lines, ...extra];
}

Deno.test("an agent config with every key reads into exactly these values", async () => {
  const certs = await testCertificates();
  const config = await read([
    'name: "home-server"',
    "hubs:",
    '  - "wss://nexus-1.example.com:8443/connect"',
    '  - "wss://nexus-2.example.com/connect"',
    'hubCaFile: "ca.pem"',
    'hostnames: ["app.example.com", "*.preview.example.com"]',
    "weight: 10000",
    "token:",
    '  secret: "an-inline-backends-secret"',
    "  ttlSeconds: 86400",
    "targets:",
    "  app.example.com:",
    '    tls: "127.0.0.1:8443"',
    '    http: "[::1]:8080"',
    '  "*.preview.example.com": ":9443"',
    '  default: "localhost:1"',
    "drainTimeoutSeconds: 0",
    "idleTimeoutSeconds: 604800",
    "logLevel: warn",
    "logFormat: json",
    "admin:",
    '  listenAddress: "localhost:0"',
    "limits:",
    "  maxStreams: 1",
    "  connectTimeoutSeconds: 300",
    "  halfClosedTimeoutSeconds: 86400",
    "  legacyStreamBufferBytes: 1073741824",
    "reconnect:",
    "  initialDelaySeconds: 3600",
    "  maxDelaySeconds: 86400",
  ]);
  const { targets, ...rest } = config;
  assert.deepEqual(rest, {
    name: "home-server",
    hubs: ["wss://nexus-1.example.com:8443/connect", "wss://nexus-2.example.com/connect"],
    hubCaPem: certs.ca.certPem,
    hostnames: ["app.example.com", "*.preview.example.com"],
    weight: 10_000,
    token: {
      kind: "secret",
      secret: new TextEncoder().encode("an-inline-backends-secret"),
      ttlSeconds: 86_400,
    },
    drainTimeoutSeconds: 0,
    idleTimeoutSeconds: 604_800,
    logLevel: "warn",
    logFormat: "json",
    admin: { hostname: "localhost", port: 0 },
    limits: {
      maxStreams: 1,
      connectTimeoutSeconds: 300,
      halfClosedTimeoutSeconds: 86_400,
      legacyStreamBufferBytes: 1_073_741_824,
    },
    reconnect: { initialDelaySeconds: 3_600, maxDelaySeconds: 86_400 },
  });
  assert.deepEqual(targets.resolve("app.example.com", true), { host: "127.0.0.1", port: 8443 });
  assert.deepEqual(targets.resolve("app.example.com", false), { host: "::1", port: 8080 });
  assert.deepEqual(targets.resolve("x.preview.example.com", true), { host: "127.0.0.1", port: 9443 });
  assert.deepEqual(targets.resolve("elsewhere.example.org", false), { host: "localhost", port: 1 });
});

Deno.test("targets may ask for a PROXY header, for both protocols or for each one", async () => {
  const { targets } = await read([
    ...REQUIRED.slice(0, TARGET_LINE),
    "  app.example.com:",
    '    tls: { address: "127.0.0.1:8443", proxyProtocol: v2 }',
    '    http: "127.0.0.1:8080"',
    '  "*.example.com": { address: "127.0.0.1:9443", proxyProtocol: v1 }',
    '  default: { address: "127.0.0.1:9444" }',
  ]);
  assert.deepEqual(targets.resolve("app.example.com", true), {
    host: "127.0.0.1",
    port: 8443,
    proxyProtocol: 2,
  });
  assert.deepEqual(targets.resolve("app.example.com", false), { host: "127.0.0.1", port: 8080 });
  assert.deepEqual(targets.resolve("x.example.com", false), {
    host: "127.0.0.1",
    port: 9443,
    proxyProtocol: 1,
  });
  assert.deepEqual(targets.resolve("other.test", true), { host: "127.0.0.1", port: 9444 });
});

Deno.test("an agent config with only the required keys gets every default", async () => {
  const { targets, ...rest } = await read(REQUIRED);
  assert.deepEqual(rest, {
    name: "agent",
    hubs: ["wss://hub.example.com/connect"],
    hostnames: ["app.example.com"],
    weight: 1,
    token: { kind: "secret", secret: TEST_JWT_SECRET, ttlSeconds: 30 },
    drainTimeoutSeconds: 30,
    idleTimeoutSeconds: 0,
    logLevel: "info",
    logFormat: "text",
    limits: {
      maxStreams: 10_000,
      connectTimeoutSeconds: 10,
      halfClosedTimeoutSeconds: 60,
      legacyStreamBufferBytes: 4 * 1024 * 1024,
    },
    reconnect: { initialDelaySeconds: 1, maxDelaySeconds: 60 },
  });
  assert.deepEqual(targets.resolve("app.example.com", true), { host: "127.0.0.1", port: 8443 });
});

Deno.test("a token command is read with its timeout (this test run may run programs)", async () => {
  const config = await read(
    withLine(TOKEN_LINE, ['  command: ["/usr/bin/attestor", "--stage"]', "  timeoutSeconds: 7"]),
  );
  assert.deepEqual(config.token, {
    kind: "command",
    argv: ["/usr/bin/attestor", "--stage"],
    timeoutSeconds: 7,
  });
});

Deno.test("each agent key's mistakes are reported at their line and column, with what was expected", async (t) => {
  const cases: Array<[string, string[], string[]]> = [
    ["hubs missing", withLine(0, []), ["agent.yaml:1:1: hubs: required key is missing"]],
    ["hubs empty", withLine(0, ["hubs: []"]), [
      "agent.yaml:1:7: hubs: expected a non-empty list, got an empty one",
    ]],
    ["hubs not a list", withLine(0, ["hubs: wss://x.example.com/connect"]), [
      'agent.yaml:1:7: hubs: expected a list, got "wss://x.example.com/connect"',
    ]],
    ["a hub that is not wss", withLine(0, ['hubs: ["http://x.example.com/connect"]']), [
      'agent.yaml:1:8: hubs[0]: "http://x.example.com/connect" must start with wss:// (the hub only speaks TLS)',
    ]],
    ["hostnames missing", withLine(1, []), ["agent.yaml:1:1: hostnames: required key is missing"]],
    ["a wildcard of a top-level domain", withLine(1, ['hostnames: ["*.com"]']), [
      'agent.yaml:2:13: hostnames[0]: "*.com" is not a wildcard of the form *.example.com',
    ]],
    ["an IP and a name with a space", withLine(1, ['hostnames: ["10.0.0.1", "a b"]']), [
      'agent.yaml:2:13: hostnames[0]: "10.0.0.1" is not a valid hostname',
      'agent.yaml:2:25: hostnames[1]: "a b" is not a valid hostname',
    ]],
    ["a claimed name no target serves", withLine(1, ['hostnames: ["other.example.com"]']), [
      "agent.yaml:6:3: targets: no target serves the claimed hostname other.example.com",
    ]],
    ["token missing", [...REQUIRED.slice(0, 2), ...REQUIRED.slice(4)], [
      "agent.yaml:1:1: token: required key is missing",
    ]],
    ["a short token secret", withLine(TOKEN_LINE, ['  secret: "short"']), [
      "agent.yaml:4:11: token.secret: the secret must be at least 16 characters long",
    ]],
    ["neither command nor secret", withLine(TOKEN_LINE, ["  ttlSeconds: 5"]), [
      "agent.yaml:4:3: token.secret: one of secret, secretFile or secretEnv is required",
    ]],
    ["an empty command", withLine(TOKEN_LINE, ["  command: []"]), [
      "agent.yaml:4:12: token.command: expected a non-empty list, got an empty one",
    ]],
    [
      "a command and a secret",
      withLine(TOKEN_LINE, ['  command: ["/bin/true"]', '  secret: "0123456789abcdef0"']),
      [
        "agent.yaml:4:12: token.command: set either command or a secret, not both",
      ],
    ],
    ["a lifetime for a command", withLine(TOKEN_LINE, ['  command: ["/bin/true"]', "  ttlSeconds: 5"]), [
      "agent.yaml:5:15: token.ttlSeconds: applies to tokens signed from a secret, not to a command",
    ]],
    [
      "a timeout for a secret",
      withLine(TOKEN_LINE, ['  secretFile: "backends.secret"', "  timeoutSeconds: 5"]),
      [
        "agent.yaml:5:19: token.timeoutSeconds: applies to a token command, not to a secret",
      ],
    ],
    ["a token lifetime of 0", withLine(TOKEN_LINE, ['  secretFile: "backends.secret"', "  ttlSeconds: 0"]), [
      'agent.yaml:5:15: token.ttlSeconds: expected an integer from 1 to 86400, got "0"',
    ]],
    ["a target without a port", withLine(TARGET_LINE, ['  app.example.com: "127.0.0.1"']), [
      'agent.yaml:6:20: targets."app.example.com": "127.0.0.1" is not host:port',
    ]],
    ["a target on port 0", withLine(TARGET_LINE, ['  app.example.com: "127.0.0.1:0"']), [
      'agent.yaml:6:20: targets."app.example.com": port 0 in "127.0.0.1:0" is out of range 1-65535',
    ]],
    ["a target rule with neither tls nor http", withLine(TARGET_LINE, ["  app.example.com: {}"]), [
      'agent.yaml:6:20: targets."app.example.com".tls: give tls, http or both (or address for both)',
    ]],
    ["a bad http target", withLine(TARGET_LINE, ['  app.example.com: { tls: ":8443", http: "x" }']), [
      'agent.yaml:6:42: targets."app.example.com".http: "x" is not host:port',
    ]],
    [
      "an unknown key in a target rule",
      withLine(TARGET_LINE, ['  app.example.com: { tls: ":8443", udp: ":1" }']),
      [
        'agent.yaml:6:36: targets."app.example.com".udp: unknown key',
      ],
    ],
    [
      "proxyProtocol that is not v1 or v2",
      withLine(TARGET_LINE, ['  app.example.com: { address: ":8443", proxyProtocol: v3 }']),
      ['agent.yaml:6:55: targets."app.example.com".proxyProtocol: expected v1 or v2, got "v3"'],
    ],
    [
      "proxyProtocol without an address",
      withLine(TARGET_LINE, ["  app.example.com: { tls: { proxyProtocol: v2 } }"]),
      ['agent.yaml:6:27: targets."app.example.com".tls.address: give the target\'s address as host:port'],
    ],
    [
      "address beside tls",
      withLine(TARGET_LINE, ['  app.example.com: { address: ":8443", tls: ":8444" }']),
      ['agent.yaml:6:40: targets."app.example.com".tls: unknown key'],
    ],
    ["a target key that is no name", withLine(TARGET_LINE, ['  "bad name": "127.0.0.1:1"']), [
      "agent.yaml:6:3: targets: no target serves the claimed hostname app.example.com",
      'agent.yaml:6:15: targets."bad name": "bad name" is neither a hostname, a *.wildcard nor "default"',
    ]],
    ["no targets", withLine(TARGET_LINE - 1, ["targets: {}"]).slice(0, -1), [
      "agent.yaml:5:10: targets: expected a non-empty mapping, got an empty one",
      "agent.yaml:5:10: targets: no target serves the claimed hostname app.example.com",
    ]],
    ["an empty name", withLine(0, [REQUIRED[0]], ['name: ""']), [
      'agent.yaml:7:7: name: expected a non-empty string, got ""',
    ]],
    ["weight 0", withLine(0, [REQUIRED[0]], ["weight: 0"]), [
      'agent.yaml:7:9: weight: expected an integer from 1 to 10000, got "0"',
    ]],
    ["hubCaFile holding a key", withLine(0, [REQUIRED[0]], ['hubCaFile: "hub.key"']), [
      "agent.yaml:7:12: hubCaFile: hub.key holds no PEM certificate",
    ]],
    ["drainTimeoutSeconds negative", withLine(0, [REQUIRED[0]], ["drainTimeoutSeconds: -1"]), [
      'agent.yaml:7:22: drainTimeoutSeconds: expected an integer from 0 to 3600, got "-1"',
    ]],
    ["idleTimeoutSeconds too long", withLine(0, [REQUIRED[0]], ["idleTimeoutSeconds: 604801"]), [
      'agent.yaml:7:21: idleTimeoutSeconds: expected an integer from 0 to 604800, got "604801"',
    ]],
    ["logLevel unknown", withLine(0, [REQUIRED[0]], ["logLevel: loud"]), [
      'agent.yaml:7:11: logLevel: expected one of debug, info, warn, error, got "loud"',
    ]],
    ["logFormat unknown", withLine(0, [REQUIRED[0]], ["logFormat: JSON"]), [
      'agent.yaml:7:12: logFormat: expected one of text, json, got "JSON"',
    ]],
    [
      "an admin listener on a public IPv6 address without a token",
      withLine(0, [REQUIRED[0]], [
        'admin: { listenAddress: "[2001:db8::1]:9100" }',
      ]),
      [
        "agent.yaml:7:25: admin.listenAddress: 2001:db8::1 is reachable from other machines: set tokenFile or " +
        "tokenEnv, so that only who holds the token reads metrics and status, or listen on 127.0.0.1",
      ],
    ],
    [
      "every limit out of range, and a misspelt one",
      withLine(0, [REQUIRED[0]], [
        "limits:",
        "  maxStreams: 0",
        "  connectTimeoutSeconds: 301",
        "  halfClosedTimeoutSeconds: 86401",
        "  legacyStreamBufferBytes: 1",
        "  maxStream: 1",
      ]),
      [
        'agent.yaml:8:15: limits.maxStreams: expected an integer from 1 to 1000000, got "0"',
        'agent.yaml:9:26: limits.connectTimeoutSeconds: expected an integer from 1 to 300, got "301"',
        'agent.yaml:10:29: limits.halfClosedTimeoutSeconds: expected an integer from 0 to 86400, got "86401"',
        'agent.yaml:11:28: limits.legacyStreamBufferBytes: expected an integer from 65536 to 1073741824, got "1"',
        "agent.yaml:12:3: limits.maxStream: unknown key; did you mean `maxStreams`?",
      ],
    ],
    [
      "reconnect delays out of range",
      withLine(0, [REQUIRED[0]], [
        "reconnect:",
        "  initialDelaySeconds: 0",
        "  maxDelaySeconds: 86401",
      ]),
      [
        'agent.yaml:8:24: reconnect.initialDelaySeconds: expected an integer from 1 to 3600, got "0"',
        'agent.yaml:9:20: reconnect.maxDelaySeconds: expected an integer from 1 to 86400, got "86401"',
      ],
    ],
    [
      "a maximum delay under the initial one",
      withLine(0, [REQUIRED[0]], [
        "reconnect:",
        "  initialDelaySeconds: 30",
        "  maxDelaySeconds: 10",
      ]),
      ["agent.yaml:9:20: reconnect.maxDelaySeconds: must be at least initialDelaySeconds (30)"],
    ],
    [
      "an initial delay over the default maximum",
      withLine(0, [REQUIRED[0]], [
        "reconnect:",
        "  initialDelaySeconds: 120",
      ]),
      ["agent.yaml:8:3: reconnect.maxDelaySeconds: must be at least initialDelaySeconds (120)"],
    ],
    ["the original client's key, with a suggestion", withLine(0, [REQUIRED[0]], ["hostname: x"]), [
      "agent.yaml:7:1: hostname: unknown key; did you mean `hostnames`?",
    ]],
  ];
  for (const [name, lines, expected] of cases) {
    await t.step(name, async () => assert.deepEqual(await problems(lines), expected));
  }
});

// ---------------------------------------------------------------------------------------------------------
// Properties

/** Reads `text` as an agent config: a typed config, or problems that point into the file. */
async function readsOrExplains(text: string): Promise<void> {
  const dir = await configDir();
  checkReadsOrExplains(text, (yaml) => readAgentConfig(yaml, "agent.yaml", dir.path));
}

const KEYS = [
  "name",
  "hubs",
  "hubCaFile",
  "hostnames",
  "weight",
  "token",
  "secret",
  "secretFile",
  "command",
  "ttlSeconds",
  "targets",
  "tls",
  "http",
  "default",
  "app.example.com",
  "limits",
  "maxStreams",
  "reconnect",
  "initialDelaySeconds",
  "logLevel",
  "logFormat",
  "admin",
  "listenAddress",
];

Deno.test("property: arbitrary text never throws anything but a ConfigError", async () => {
  const yamlish = fc.array(
    fc.tuple(
      fc.constantFrom("", "  ", "    ", "- ", "  - "),
      fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })),
      fc.constantFrom(": ", ":", ""),
      fc.oneof(
        fc.constantFrom("", '"127.0.0.1:1"', "[a.example.com]", "{ tls: ':1' }", "&a x", "*a", "~", "|"),
        fc.string({ maxLength: 12 }),
      ),
    ).map((parts) => parts.join("")),
    { maxLength: 12 },
  ).map((lines) => lines.join("\n"));
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(yamlish, fc.string({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 200 })),
      readsOrExplains,
    ),
    { numRuns: 1_000 },
  );
});

Deno.test("property: documents of the right keys with values of any shape never throw anything but a ConfigError", async () => {
  const anyValue = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.constantFrom(
      "backends.secret",
      "ca.pem",
      "127.0.0.1:8443",
      "wss://h.example.com/connect",
      "*.example.com",
    ),
  );
  const document = fc.dictionary(
    fc.oneof({ arbitrary: fc.constantFrom(...KEYS), weight: 4 }, fc.string({ maxLength: 10 })),
    fc.oneof(anyValue, fc.dictionary(fc.constantFrom(...KEYS), anyValue, { maxKeys: 4 })),
    { maxKeys: 10 },
  );
  await fc.assert(
    fc.asyncProperty(document, fc.boolean(), async (value, flow) => {
      await readsOrExplains(stringify(value, { collectionStyle: flow ? "flow" : "block" }));
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: a valid agent config with one line's value replaced by anything is read or explained", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.nat({ max: REQUIRED.length - 1 }),
      fc.oneof(fc.string({ maxLength: 30 }), fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v))),
      async (index, value) => {
        const lines = [...REQUIRED];
        const colon = lines[index].indexOf(":");
        lines[index] = `${lines[index].slice(0, colon + 1)} ${value}`;
        await readsOrExplains(lines.join("\n"));
      },
    ),
    { numRuns: 500 },
  );
  await (await configDir()).remove();
});
