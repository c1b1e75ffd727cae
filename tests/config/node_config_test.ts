/**
 * The node config: every key read into its typed value, every key's mistakes reported with the exact
 * `file:line:column: key: message`, and over arbitrary YAML (and arbitrary bytes), nothing thrown but a
 * `ConfigError`.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { stringify } from "yaml";
import { type NodeConfig, readNodeConfig } from "../../src/config/node_config.ts";
import { testCertificates } from "../helpers/certs.ts";
import { TEST_JWT_SECRET } from "../helpers/cluster.ts";
import { type ConfigDir, makeConfigDir } from "../helpers/processes.ts";
import { problemsOf, readsOrExplains as checkReadsOrExplains } from "./config_checks.ts";

const REQUIRED = [
  'backendListenAddress: ":8443"',
  'hubTlsCertFile: "hub.crt"',
  'hubTlsKeyFile: "hub.key"',
  "relayPorts: [443, 80]",
  'backendsJWTSecretFile: "backends.secret"',
];

let shared: Promise<ConfigDir> | undefined;
/** One directory of certificate and secret files for the whole file (removed by the last test). */
function configDir(): Promise<ConfigDir> {
  shared ??= makeConfigDir();
  return shared;
}

/** The problems of `lines` as the operator sees them (one line each), or "valid". */
async function problems(lines: readonly string[]): Promise<string[] | "valid"> {
  const dir = await configDir();
  return problemsOf(() => readNodeConfig(lines.join("\n") + "\n", "node.yaml", dir.path));
}

/** The required lines with line `index` replaced (or removed, for `null`), then `extra` lines. */
function withLine(index: number, line: string | null, extra: readonly string[] = []): string[] {
  const lines: string[] = [...REQUIRED];
  if (line === null) lines.splice(index, 1);
  else lines[index] = line;
  return [...lines, ...extra];
}

Deno.test("a config with every key reads into exactly these typed values", async () => {
  const dir = await configDir();
  const certs = await testCertificates();
  Deno.env.set("NEXUS_NODE_CONFIG_TEST_PEER_SECRET", "peer-secret-from-the-environment");
  const text = [
    'backendListenAddress: "127.0.0.1:9443"',
    'hubTlsCertFile: "hub.crt"',
    `hubTlsKeyFile: "${dir.path}/hub.key"`,
    "relayPorts:",
    "  - 443",
    "  - 80",
    "  - { port: 8080, protocol: http }",
    "  - { port: 8443 }",
    'relayBindAddress: "::"',
    'backendsJWTSecret: "an-inline-backends-secret"',
    "peerSecretEnv: NEXUS_NODE_CONFIG_TEST_PEER_SECRET",
    'peers: ["wss://peer-1.example.com:8443/mesh", "wss://peer-2.example.com/mesh"]',
    'peerCaFile: "ca.pem"',
    "idleTimeoutSeconds: 0",
    "drainTimeoutSeconds: 3600",
    "logLevel: debug",
    "logFormat: json",
    "admin:",
    '  listenAddress: "[::]:9100"',
    "  tokenFile: backends.secret",
    "limits:",
    "  maxConnections: 1",
    "  maxConnectionsPerIp: 10000000",
    "  maxHandshakes: 7",
    "  maxHandshakesPerIp: 3",
    "  maxBackends: 100000",
    "  maxHubHandshakes: 5",
    "  maxHubHandshakesPerIp: 2",
    "  maxStreamsPerBackend: 1000000",
    "  streamWindowBytes: 65536",
    "  streamBufferBudgetBytes: 1048576",
    "  legacyStreamBufferBytes: 65536",
    "  halfClosedTimeoutSeconds: 0",
    "handshakeTimeouts:",
    "  firstByteSeconds: 2",
    "  extendSeconds: 300",
    "  totalSeconds: 600",
    "  backendTokenSeconds: 120",
    "  hubUpgradeSeconds: 3",
    "",
  ].join("\n");
  try {
    const expected: NodeConfig = {
      hub: { hostname: "127.0.0.1", port: 9443, certPem: certs.hub.certPem, keyPem: certs.hub.keyPem },
      relay: {
        bindAddress: "::",
        ports: [
          { port: 443, protocol: "tls" },
          { port: 80, protocol: "http" },
          { port: 8080, protocol: "http" },
          { port: 8443, protocol: "tls" },
        ],
      },
      backendsJwtSecret: new TextEncoder().encode("an-inline-backends-secret"),
      previousBackendsJwtSecrets: [],
      peerSecret: new TextEncoder().encode("peer-secret-from-the-environment"),
      peers: ["wss://peer-1.example.com:8443/mesh", "wss://peer-2.example.com/mesh"],
      peerCaPem: certs.ca.certPem,
      drainTimeoutSeconds: 3600,
      idleTimeoutSeconds: 0,
      logLevel: "debug",
      logFormat: "json",
      admin: { hostname: "::", port: 9100, token: TEST_JWT_SECRET },
      limits: {
        maxConnections: 1,
        maxConnectionsPerIp: 10_000_000,
        maxHandshakes: 7,
        maxHandshakesPerIp: 3,
        maxBackends: 100_000,
        maxHubHandshakes: 5,
        maxHubHandshakesPerIp: 2,
        maxStreamsPerBackend: 1_000_000,
        streamWindowBytes: 65_536,
        streamBufferBudgetBytes: 1_048_576,
        legacyStreamBufferBytes: 65_536,
        halfClosedTimeoutSeconds: 0,
      },
      handshakeTimeouts: {
        firstByteSeconds: 2,
        extendSeconds: 300,
        totalSeconds: 600,
        backendTokenSeconds: 120,
        hubUpgradeSeconds: 3,
      },
    };
    assert.deepEqual(readNodeConfig(text, "node.yaml", dir.path), expected);
  } finally {
    Deno.env.delete("NEXUS_NODE_CONFIG_TEST_PEER_SECRET");
  }
});

Deno.test("a relay port's trustedProxies are CIDR blocks or single addresses, IPv4 and IPv6", async () => {
  const dir = await configDir();
  const config = readNodeConfig(
    withLine(3, null, [
      "relayPorts:",
      '  - { port: 443, trustedProxies: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::ffff:198.51.100.0/120"] }',
      "  - 80",
    ]).join("\n"),
    "node.yaml",
    dir.path,
  );
  const [trusting, plain] = config.relay.ports;
  assert.equal(plain.trustedProxies, undefined, "a port without the key trusts no one to send a header");
  const trusted = trusting.trustedProxies!;
  const inside = [
    "10.0.0.1",
    "10.255.255.255",
    "::ffff:10.1.2.3",
    "192.0.2.7",
    "2001:db8:ffff::1",
    "198.51.100.9",
  ];
  for (const ip of inside) assert.ok(trusted.contains(ip), ip);
  for (const ip of ["11.0.0.0", "192.0.2.8", "2001:db9::1", "198.51.101.0", "::1", "localhost"]) {
    assert.ok(!trusted.contains(ip), ip);
  }
});

Deno.test("a hub key that is not the certificate's is refused, as the TLS server would refuse it at start", async () => {
  const dir = await configDir();
  const certs = await testCertificates();
  await dir.write("other.key", certs.service.keyPem);
  assert.deepEqual(await problems(withLine(2, 'hubTlsKeyFile: "other.key"')), [
    "node.yaml:3:16: hubTlsKeyFile: the private key does not belong to the certificate in hubTlsCertFile",
  ]);
  assert.equal(await problems(withLine(2, 'hubTlsKeyFile: "hub.key"')), "valid");
});

Deno.test("a secret file that holds too short a secret is reported at the key that names the file", async () => {
  const dir = await configDir();
  await dir.write("short.secret", "short\n");
  assert.deepEqual(await problems(withLine(4, 'backendsJWTSecretFile: "short.secret"')), [
    "node.yaml:5:24: backendsJWTSecretFile: the secret must be at least 16 characters long",
  ]);
});

Deno.test("a config with only the required keys gets every default", async () => {
  const dir = await configDir();
  const certs = await testCertificates();
  assert.deepEqual(
    readNodeConfig(REQUIRED.join("\n"), "node.yaml", dir.path),
    {
      hub: { hostname: "0.0.0.0", port: 8443, certPem: certs.hub.certPem, keyPem: certs.hub.keyPem },
      relay: {
        bindAddress: "0.0.0.0",
        ports: [{ port: 443, protocol: "tls" }, { port: 80, protocol: "http" }],
      },
      backendsJwtSecret: TEST_JWT_SECRET,
      previousBackendsJwtSecrets: [],
      peers: [],
      drainTimeoutSeconds: 30,
      idleTimeoutSeconds: 300,
      logLevel: "info",
      logFormat: "text",
      limits: {
        maxConnections: 20_000,
        maxConnectionsPerIp: 1_000,
        maxHandshakes: 1_024,
        maxHandshakesPerIp: 64,
        maxBackends: 1_000,
        maxHubHandshakes: 256,
        maxHubHandshakesPerIp: 16,
        maxStreamsPerBackend: 10_000,
        streamWindowBytes: 2 * 1024 * 1024,
        streamBufferBudgetBytes: 512 * 1024 * 1024,
        legacyStreamBufferBytes: 4 * 1024 * 1024,
        halfClosedTimeoutSeconds: 60,
      },
      handshakeTimeouts: { firstByteSeconds: 15, extendSeconds: 5, totalSeconds: 30, hubUpgradeSeconds: 10 },
    } satisfies NodeConfig,
  );
});

Deno.test("each key's mistakes are reported at their line and column, with what was expected", async (t) => {
  const dir = await configDir();
  const cases: Array<[string, string[], string[]]> = [
    ["backendListenAddress missing", withLine(0, null), [
      "node.yaml:1:1: backendListenAddress: required key is missing",
    ]],
    ["backendListenAddress without a port", withLine(0, 'backendListenAddress: "8443"'), [
      'node.yaml:1:23: backendListenAddress: expected host:port, e.g. :8443, got "8443"',
    ]],
    ["backendListenAddress as a number", withLine(0, "backendListenAddress: 8443"), [
      'node.yaml:1:23: backendListenAddress: expected host:port, e.g. :8443, got "8443", which YAML reads as a ' +
      "number; quote it to make it a string",
    ]],
    ["backendListenAddress port out of range", withLine(0, 'backendListenAddress: ":70000"'), [
      "node.yaml:1:23: backendListenAddress: port 70000 is out of range 0-65535",
    ]],
    ["hubTlsCertFile holding a key", withLine(1, 'hubTlsCertFile: "hub.key"'), [
      "node.yaml:2:17: hubTlsCertFile: hub.key holds no PEM certificate",
    ]],
    ["hubTlsCertFile missing on disk", withLine(1, 'hubTlsCertFile: "nope.crt"'), [
      `node.yaml:2:17: hubTlsCertFile: cannot read nope.crt: No such file or directory (os error 2): ` +
      `readfile '${dir.path}/nope.crt'`,
    ]],
    ["hubTlsKeyFile holding a certificate", withLine(2, 'hubTlsKeyFile: "hub.crt"'), [
      "node.yaml:3:16: hubTlsKeyFile: hub.crt holds no PEM private key",
    ]],
    ["hubTlsKeyFile missing", withLine(2, null), ["node.yaml:1:1: hubTlsKeyFile: required key is missing"]],
    ["relayPorts empty", withLine(3, "relayPorts: []"), [
      "node.yaml:4:13: relayPorts: expected a non-empty list, got an empty one",
    ]],
    ["relayPorts not a list", withLine(3, "relayPorts: 443"), [
      'node.yaml:4:13: relayPorts: expected a list, got "443"',
    ]],
    ["relayPorts twice the same", withLine(3, "relayPorts: [443, 443]"), [
      "node.yaml:4:13: relayPorts: port 443 is listed twice",
    ]],
    ["relayPorts on the hub's port", withLine(3, "relayPorts: [8443]"), [
      "node.yaml:4:13: relayPorts: port 8443 is also the hub's backendListenAddress port",
    ]],
    ["relayPorts port 0 as a number", withLine(3, "relayPorts: [0]"), [
      'node.yaml:4:14: relayPorts[0]: expected an integer from 1 to 65535, got "0"',
    ]],
    ["relayPorts entry without a port", withLine(3, "relayPorts: [{ protocol: http }]"), [
      "node.yaml:4:14: relayPorts[0].port: required key is missing",
    ]],
    ["relayPorts entry with a bad protocol", withLine(3, "relayPorts: [{ port: 8080, protocol: udp }]"), [
      'node.yaml:4:38: relayPorts[0].protocol: expected tls or http, got "udp"',
    ]],
    [
      "trustedProxies with a host name, bits past the prefix, a long prefix, and empty",
      withLine(3, null, [
        "relayPorts:",
        '  - { port: 443, trustedProxies: ["lb.example.com", "10.1.0.0/8", "10.0.0.0/33", "::/129"] }',
        "  - { port: 444, trustedProxies: [] }",
      ]),
      [
        'node.yaml:6:35: relayPorts[0].trustedProxies[0]: "lb.example.com" is not an IP address or a CIDR block such as 10.0.0.0/8',
        "node.yaml:6:53: relayPorts[0].trustedProxies[1]: 10.1.0.0/8 has bits set past its /8: the block is 10.0.0.0/8",
        'node.yaml:6:67: relayPorts[0].trustedProxies[2]: "10.0.0.0/33" has a prefix length that is not 0-32',
        'node.yaml:6:82: relayPorts[0].trustedProxies[3]: "::/129" has a prefix length that is not 0-128',
        "node.yaml:7:34: relayPorts[1].trustedProxies: expected a non-empty list, got an empty one",
      ],
    ],
    ["relayPorts entry with an unknown key", withLine(3, "relayPorts: [{ port: 8080, proxy: true }]"), [
      "node.yaml:4:28: relayPorts[0].proxy: unknown key",
    ]],
    ["relayBindAddress empty", withLine(0, REQUIRED[0], ['relayBindAddress: ""']), [
      'node.yaml:6:19: relayBindAddress: expected a non-empty string, got ""',
    ]],
    ["no backends secret", withLine(4, null), [
      "node.yaml:1:1: backendsJWTSecret: one of backendsJWTSecret, backendsJWTSecretFile or " +
      "backendsJWTSecretEnv is required",
    ]],
    [
      "two forms of the backends secret",
      withLine(0, REQUIRED[0], ['backendsJWTSecret: "0123456789abcdef0"']),
      [
        "node.yaml:6:20: backendsJWTSecret: set only one of backendsJWTSecret, backendsJWTSecretFile and " +
        "backendsJWTSecretEnv",
      ],
    ],
    ["a short secret", withLine(4, "backendsJWTSecret: short"), [
      "node.yaml:5:20: backendsJWTSecret: the secret must be at least 16 characters long",
    ]],
    ["a secret variable not named NEXUS_", withLine(4, "backendsJWTSecretEnv: HOME"), [
      'node.yaml:5:23: backendsJWTSecretEnv: expected a variable named NEXUS_…, got "HOME"',
    ]],
    ["a secret variable that is not set", withLine(4, "backendsJWTSecretEnv: NEXUS_SURELY_UNSET_VARIABLE"), [
      "node.yaml:5:23: backendsJWTSecretEnv: environment variable NEXUS_SURELY_UNSET_VARIABLE is not set",
    ]],
    ["peers without a peer secret", withLine(0, REQUIRED[0], ['peers: ["wss://x.example.com/mesh"]']), [
      "node.yaml:1:1: peerSecret: one of peerSecret, peerSecretFile or peerSecretEnv is required",
    ]],
    ["a peer URL that is not wss", withLine(0, REQUIRED[0], ['peers: ["https://x.example.com/mesh"]']), [
      'node.yaml:6:9: peers[0]: "https://x.example.com/mesh" must start with wss:// (the hub only speaks TLS)',
    ]],
    [
      "a peer URL with credentials",
      withLine(0, REQUIRED[0], [
        'peers: ["wss://user:pw@x.example.com/mesh"]',
        'peerSecret: "0123456789abcdef0"',
      ]),
      ['node.yaml:6:9: peers[0]: "wss://user:pw@x.example.com/mesh" must not carry credentials'],
    ],
    ["a peer URL that is no URL", withLine(0, REQUIRED[0], ['peers: ["not a url"]']), [
      'node.yaml:6:9: peers[0]: "not a url" is not a URL',
    ]],
    ["peerCaFile holding a key", withLine(0, REQUIRED[0], ['peerCaFile: "hub.key"']), [
      "node.yaml:6:13: peerCaFile: hub.key holds no PEM certificate",
    ]],
    ["idleTimeoutSeconds negative", withLine(0, REQUIRED[0], ["idleTimeoutSeconds: -1"]), [
      'node.yaml:6:21: idleTimeoutSeconds: expected an integer from 0 to 604800, got "-1"',
    ]],
    ["drainTimeoutSeconds too long", withLine(0, REQUIRED[0], ["drainTimeoutSeconds: 3601"]), [
      'node.yaml:6:22: drainTimeoutSeconds: expected an integer from 0 to 3600, got "3601"',
    ]],
    ["logLevel unknown", withLine(0, REQUIRED[0], ["logLevel: verbose"]), [
      'node.yaml:6:11: logLevel: expected one of debug, info, warn, error, got "verbose"',
    ]],
    ["logFormat unknown", withLine(0, REQUIRED[0], ["logFormat: yaml"]), [
      'node.yaml:6:12: logFormat: expected one of text, json, got "yaml"',
    ]],
    [
      "an admin listener on every address without a token",
      withLine(0, REQUIRED[0], [
        "admin:",
        '  listenAddress: ":9100"',
      ]),
      [
        "node.yaml:7:18: admin.listenAddress: 0.0.0.0 is reachable from other machines: set tokenFile or " +
        "tokenEnv, so that only who holds the token reads metrics and status, or listen on 127.0.0.1",
      ],
    ],
    [
      "an admin listener on a public address, its token variable unset",
      withLine(0, REQUIRED[0], [
        "admin:",
        '  listenAddress: "192.0.2.10:9100"',
        "  tokenEnv: NEXUS_NODE_CONFIG_TEST_UNSET",
      ]),
      [
        "node.yaml:8:13: admin.tokenEnv: environment variable NEXUS_NODE_CONFIG_TEST_UNSET is not set",
      ],
    ],
    [
      "an admin block without an address, its token too short",
      withLine(0, REQUIRED[0], [
        "admin:",
        '  token: "short"',
        "  tokenfile: x",
      ]),
      [
        "node.yaml:7:3: admin.listenAddress: required key is missing",
        "node.yaml:7:10: admin.token: the secret must be at least 16 characters long",
        "node.yaml:8:3: admin.tokenfile: unknown key; did you mean `tokenFile`?",
      ],
    ],
    ["an admin address that is not host:port", withLine(0, REQUIRED[0], ["admin: { listenAddress: 9100 }"]), [
      'node.yaml:6:25: admin.listenAddress: expected host:port, e.g. 127.0.0.1:9100, got "9100", which YAML ' +
      "reads as a number; quote it to make it a string",
    ]],
    ["limits not a mapping", withLine(0, REQUIRED[0], ["limits: 5"]), [
      'node.yaml:6:9: limits: expected a mapping, got "5"',
    ]],
    [
      "every limit out of range, and a misspelt one",
      withLine(0, REQUIRED[0], [
        "limits:",
        "  maxConnections: 0",
        "  maxConnectionsPerIp: lots",
        "  maxHandshakes: 1.5",
        "  maxBackends: 100001",
        "  maxStreamsPerBackend: 0",
        "  legacyStreamBufferBytes: 1000",
        "  halfClosedTimeoutSeconds: -5",
        "  maxConection: 3",
        "  streamWindowBytes: 33554433",
        "  maxHandshakesPerIp: 0",
      ]),
      [
        'node.yaml:7:19: limits.maxConnections: expected an integer from 1 to 10000000, got "0"',
        'node.yaml:8:24: limits.maxConnectionsPerIp: expected an integer from 1 to 10000000, got "lots"',
        'node.yaml:9:18: limits.maxHandshakes: expected an integer from 1 to 1000000, got "1.5"',
        'node.yaml:10:16: limits.maxBackends: expected an integer from 1 to 100000, got "100001"',
        'node.yaml:11:25: limits.maxStreamsPerBackend: expected an integer from 1 to 1000000, got "0"',
        'node.yaml:12:28: limits.legacyStreamBufferBytes: expected an integer from 65536 to 1073741824, got "1000"',
        'node.yaml:13:29: limits.halfClosedTimeoutSeconds: expected an integer from 0 to 86400, got "-5"',
        "node.yaml:14:3: limits.maxConection: unknown key; did you mean `maxConnections`?",
        'node.yaml:15:22: limits.streamWindowBytes: expected an integer from 65536 to 33554432, got "33554433"',
        'node.yaml:16:23: limits.maxHandshakesPerIp: expected an integer from 1 to 1000000, got "0"',
      ],
    ],
    [
      "every handshake timeout out of range",
      withLine(0, REQUIRED[0], [
        "handshakeTimeouts:",
        "  firstByteSeconds: 0",
        "  extendSeconds: 301",
        "  totalSeconds: 601",
        "  backendTokenSeconds: 121",
      ]),
      [
        'node.yaml:7:21: handshakeTimeouts.firstByteSeconds: expected an integer from 1 to 300, got "0"',
        'node.yaml:8:18: handshakeTimeouts.extendSeconds: expected an integer from 1 to 300, got "301"',
        'node.yaml:9:17: handshakeTimeouts.totalSeconds: expected an integer from 1 to 600, got "601"',
        'node.yaml:10:24: handshakeTimeouts.backendTokenSeconds: expected an integer from 1 to 120, got "121"',
      ],
    ],
    [
      "a first-byte deadline past the total one",
      withLine(0, REQUIRED[0], [
        "handshakeTimeouts:",
        "  firstByteSeconds: 60",
        "  totalSeconds: 30",
      ]),
      ["node.yaml:7:21: handshakeTimeouts.firstByteSeconds: must not exceed totalSeconds (30)"],
    ],
    [
      "a total deadline under the default first-byte one",
      withLine(0, REQUIRED[0], [
        "handshakeTimeouts:",
        "  totalSeconds: 10",
      ]),
      ["node.yaml:7:3: handshakeTimeouts.firstByteSeconds: must not exceed totalSeconds (10)"],
    ],
    ["an unknown key, with a suggestion", withLine(0, REQUIRED[0], ["idleTimeoutSecond: 5"]), [
      "node.yaml:6:1: idleTimeoutSecond: unknown key; did you mean `idleTimeoutSeconds`?",
    ]],
    ["a key given twice", withLine(0, REQUIRED[0], ["relayPorts: [8080]"]), [
      "node.yaml:6:1: relayPorts: duplicate key (first defined at line 4)",
    ]],
    ["several mistakes at once, in file order", [
      "logLevel: loud",
      ...withLine(3, "relayPorts: [0, 70000]"),
      "drainTimeoutSeconds: soon",
    ], [
      'node.yaml:1:11: logLevel: expected one of debug, info, warn, error, got "loud"',
      'node.yaml:5:14: relayPorts[0]: expected an integer from 1 to 65535, got "0"',
      'node.yaml:5:17: relayPorts[1]: expected an integer from 1 to 65535, got "70000"',
      'node.yaml:7:22: drainTimeoutSeconds: expected an integer from 0 to 3600, got "soon"',
    ]],
  ];
  for (const [name, lines, expected] of cases) {
    await t.step(name, async () => assert.deepEqual(await problems(lines), expected));
  }
});

// ---------------------------------------------------------------------------------------------------------
// Properties

/** Reads `text` as a node config: a typed config, or problems that point into the file. */
async function readsOrExplains(text: string): Promise<void> {
  const dir = await configDir();
  checkReadsOrExplains(text, (yaml) => readNodeConfig(yaml, "node.yaml", dir.path));
}

const KEYS = [
  "backendListenAddress",
  "hubTlsCertFile",
  "hubTlsKeyFile",
  "relayPorts",
  "relayBindAddress",
  "backendsJWTSecret",
  "backendsJWTSecretFile",
  "backendsJWTSecretEnv",
  "peerSecret",
  "peers",
  "peerCaFile",
  "idleTimeoutSeconds",
  "drainTimeoutSeconds",
  "logLevel",
  "logFormat",
  "admin",
  "listenAddress",
  "tokenFile",
  "limits",
  "handshakeTimeouts",
  "maxConnections",
  "firstByteSeconds",
  "port",
  "protocol",
];

/** YAML-looking text: known keys, indentation, flow collections, anchors, aliases, tags, comments. */
const yamlishText = fc.array(
  fc.tuple(
    fc.constantFrom("", "  ", "    ", "- ", "  - ", "\t"),
    fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })),
    fc.constantFrom(": ", ":", " : ", ""),
    fc.oneof(
      fc.constantFrom(
        "",
        "443",
        '":8443"',
        "[443, 80]",
        "{ port: 0 }",
        "&a 1",
        "*a",
        "!!str 5",
        "~",
        "|",
        "#c",
      ),
      fc.string({ maxLength: 12 }),
    ),
  ).map(([indent, key, colon, value]) => `${indent}${key}${colon}${value}`),
  { maxLength: 12 },
).map((lines) => lines.join("\n"));

/** The required lines with the hub's certificate files replaced by `hubAcme` lines. */
function withAcme(acme: readonly string[], extra: readonly string[] = []): string[] {
  return [REQUIRED[0], ...acme, ...REQUIRED.slice(3), ...extra];
}

Deno.test("hubAcme reads into the hub's ACME settings, relative paths from the config's directory", async () => {
  const dir = await configDir();
  const certs = await testCertificates();
  const config = readNodeConfig(
    withAcme([
      "hubAcme:",
      "  hostname: Hub.Example.COM.",
      "  email: ops@example.com",
      '  directoryUrl: "https://localhost:14000/dir"',
      '  caFile: "ca.pem"',
      '  stateDir: "acme-state"',
    ]).join("\n"),
    "node.yaml",
    dir.path,
  );
  assert.deepEqual(config.hubAcme, {
    hostname: "hub.example.com",
    email: "ops@example.com",
    directoryUrl: "https://localhost:14000/dir",
    caPem: certs.ca.certPem,
    stateDir: `${dir.path}/acme-state`,
    retry: { initialDelayMs: 60_000, maxDelayMs: 6 * 3_600_000 },
  });
  assert.equal(config.hub.certPem, "");
  assert.equal(config.hub.keyPem, "");
});

Deno.test("hubAcme defaults to Let's Encrypt's production directory and a state directory under /var/lib/nexus", async () => {
  const dir = await configDir();
  const config = readNodeConfig(
    withAcme(["hubAcme: { hostname: hub.example.com }"]).join("\n"),
    "n.yaml",
    dir.path,
  );
  assert.deepEqual(config.hubAcme, {
    hostname: "hub.example.com",
    directoryUrl: "https://acme-v02.api.letsencrypt.org/directory",
    stateDir: "/var/lib/nexus/acme",
    retry: { initialDelayMs: 60_000, maxDelayMs: 6 * 3_600_000 },
  });
});

Deno.test("hubAcme's mistakes are reported at their line and column", async (t) => {
  const cases: Array<[string, string[], string[]]> = [
    ["both files and hubAcme", [...REQUIRED, "hubAcme: { hostname: hub.example.com }"], [
      "node.yaml:2:17: hubTlsCertFile: set either hubTlsCertFile and hubTlsKeyFile, or hubAcme, not both",
    ]],
    ["neither", [REQUIRED[0], ...REQUIRED.slice(3)], [
      "node.yaml:1:1: hubTlsCertFile: required key is missing",
      "node.yaml:1:1: hubTlsKeyFile: required key is missing",
    ]],
    ["no hostname", withAcme(["hubAcme: { email: ops@example.com }"]), [
      "node.yaml:2:10: hubAcme.hostname: required key is missing",
    ]],
    ["a wildcard hostname", withAcme(['hubAcme: { hostname: "*.example.com" }']), [
      'node.yaml:2:22: hubAcme.hostname: "*.example.com" is not a DNS name (no wildcard, no IP address)',
    ]],
    ["an IP address", withAcme(['hubAcme: { hostname: "192.0.2.1" }']), [
      'node.yaml:2:22: hubAcme.hostname: "192.0.2.1" is not a DNS name (no wildcard, no IP address)',
    ]],
    ["a bad email", withAcme(["hubAcme: { hostname: h.example.com, email: ops }"]), [
      'node.yaml:2:44: hubAcme.email: expected an address such as ops@example.com, got "ops"',
    ]],
    [
      "a plain-http directory",
      withAcme(['hubAcme: { hostname: h.example.com, directoryUrl: "http://ca/dir" }']),
      [
        'node.yaml:2:51: hubAcme.directoryUrl: expected an https:// URL (RFC 8555 §6.1), got "http://ca/dir"',
      ],
    ],
    ["a caFile holding a key", withAcme(['hubAcme: { hostname: h.example.com, caFile: "hub.key" }']), [
      "node.yaml:2:45: hubAcme.caFile: hub.key holds no PEM certificate",
    ]],
    ["an unknown key", withAcme(["hubAcme: { hostname: h.example.com, renew: true }"]), [
      "node.yaml:2:37: hubAcme.renew: unknown key",
    ]],
    ["no HTTP relay port", [
      REQUIRED[0],
      "hubAcme: { hostname: h.example.com }",
      "relayPorts: [443]",
      REQUIRED[4],
    ], [
      "node.yaml:2:10: hubAcme: needs an HTTP relay port (80) to answer the ACME HTTP-01 challenge on",
    ]],
  ];
  for (const [name, lines, expected] of cases) {
    await t.step(name, async () => {
      assert.deepEqual(await problems(lines), expected);
    });
  }
});

Deno.test("a state directory the process may not write to is reported, with what may be written", async () => {
  const dir = await configDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-read",
      "--allow-env",
      "src/main.ts",
      "check",
      "--config",
      `${dir.path}/acme.yaml`,
    ],
    cwd: new URL("../../", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  await dir.write(
    "acme.yaml",
    withAcme(["hubAcme:", "  hostname: hub.example.com", '  stateDir: "/srv/acme"']).join("\n"),
  );
  const output = await child.output();
  assert.equal(output.code, 1);
  assert.equal(
    new TextDecoder().decode(output.stderr),
    "nexus: invalid configuration:\n" +
      `${dir.path}/acme.yaml:4:13: hubAcme.stateDir: this process may not write to /srv/acme: the released binary ` +
      "may write only under /var/lib/nexus (fixed when it is built: scripts/compile.ts --write-dir); from " +
      "source, run with --allow-write=/srv/acme\n",
  );
});

Deno.test("property: arbitrary text and YAML-looking text never throw anything but a ConfigError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(yamlishText, fc.string({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 200 })),
      readsOrExplains,
    ),
    { numRuns: 1_000 },
  );
});

Deno.test("property: documents of the right keys with values of any shape never throw anything but a ConfigError", async () => {
  const anyValue = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.constantFrom("hub.crt", "hub.key", "ca.pem", "backends.secret", ":8443", "wss://p.example.com/mesh"),
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

Deno.test("property: a valid config with one line's value replaced by anything is read or explained", async () => {
  const valid = [...REQUIRED, "limits:", "  maxConnections: 10", "handshakeTimeouts:", "  totalSeconds: 40"];
  await fc.assert(
    fc.asyncProperty(
      fc.nat({ max: valid.length - 1 }),
      fc.oneof(fc.string({ maxLength: 30 }), fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v))),
      async (index, value) => {
        const lines = [...valid];
        const colon = lines[index].indexOf(":");
        lines[index] = `${lines[index].slice(0, colon + 1)} ${value}`;
        await readsOrExplains(lines.join("\n"));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("hostile YAML is explained, not thrown: alias bombs, deep nesting, tags, merge keys, tabs", async () => {
  const bomb = [
    'a: &a ["x","x","x","x","x","x","x","x","x"]',
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]",
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]",
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]",
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]",
    "peers: *f",
    "relayPorts: *f",
  ].join("\n");
  for (
    const text of [
      bomb,
      `relayPorts: ${"[".repeat(5_000)}${"]".repeat(5_000)}`,
      `limits: ${"{a: ".repeat(2_000)}1${"}".repeat(2_000)}`,
      "!!binary aGVsbG8=",
      "a: !!js/function 'x'\n",
      "<<: {relayPorts: [1]}\n",
      "? [a, b]\n: c\n",
      "relayPorts: [&x 1, *x, *y]\n",
      "\t\tfoo\n",
      "%YAML 1.1\n---\nfoo: yes\n",
      "---\n...\n",
      "\uFEFF" + REQUIRED.join("\n"),
      REQUIRED.join("\r\n"),
      "x".repeat(100_000),
    ]
  ) {
    await readsOrExplains(text);
  }
  // The last test of the file removes the shared directory.
  await (await configDir()).remove();
});
