/**
 * Relay ports behind a trusted upstream (`trustedProxies`), end to end with raw sockets: the upstream's PROXY
 * header is read and kept at the node (the agent writes its own for the service), a header from anyone else,
 * a missing one and a malformed one are refused and counted, the header must arrive within the handshake
 * deadlines, and the per-IP limits count the client the header names, not the upstream: past
 * `maxConnectionsPerIp` and `maxHandshakesPerIp` for one client, while the upstream's other clients go on.
 * The upstream connects from 127.0.0.1; an untrusted client from 127.0.0.7.
 */

import assert from "node:assert/strict";
import type { Agent } from "../../src/agent/agent.ts";
import type { NodeConfig, NodeLimits } from "../../src/config/node_config.ts";
import {
  encodeProxyHeader,
  type ProxyHeader,
  type ProxyVersion,
} from "../../src/proxy_protocol/proxy_header.ts";
import {
  startTestAgent,
  startTestNode,
  Teardown,
  type TestNode,
  trustedBlocks,
  waitFor,
} from "../helpers/cluster.ts";
import { chunked, rawExchange, rawExchangeFrom, readExactly, recordingService } from "../helpers/raw.ts";
import { concat, echo, serveConnections, writeAll } from "../helpers/services.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";
import { makeConfigDir, type NexusProcess, nodeYaml, spawnNode } from "../helpers/processes.ts";

const NAME = "app.test.nexus";
const HELLO = buildClientHello({ serverName: NAME });
const REQUEST = new TextEncoder().encode(`GET /x HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`);
const REPLY = new TextEncoder().encode("recorded\n");
const UNTRUSTED = "127.0.0.7";

function proxied(
  source: string,
  sourcePort: number,
  destination = "198.51.100.1",
  destinationPort = 443,
): ProxyHeader {
  const family = source.includes(":") ? "tcp6" : "tcp4";
  return {
    command: "proxy",
    addresses: {
      family,
      source: { address: source, port: sourcePort },
      destination: { address: destination, port: destinationPort },
    },
  };
}

const header = (h: ProxyHeader, version: ProxyVersion) => encodeProxyHeader(h, version);
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

interface Fixture {
  readonly node: TestNode;
  readonly agent: Agent;
  readonly recordings: readonly Uint8Array[];
  readonly teardown: Teardown;
}

/**
 * A node whose TLS and HTTP ports trust 127.0.0.1, and an agent whose TLS target wants PROXY v1 and whose
 * HTTP target wants v2, both a recorder (so the test reads exactly what the service got).
 */
async function startFixture(
  options: { limits?: Partial<NodeLimits>; handshakeTimeouts?: NodeConfig["handshakeTimeouts"] } = {},
): Promise<Fixture> {
  const teardown = new Teardown();
  try {
    const recorder = teardown.add(recordingService(() => REPLY));
    const trustedProxies = trustedBlocks("127.0.0.1/32");
    const node = teardown.add(
      await startTestNode({
        relayPorts: [{ port: 0, protocol: "tls", trustedProxies }, {
          port: 0,
          protocol: "http",
          trustedProxies,
        }],
        ...options,
      }),
    );
    const agent = teardown.add(
      await startTestAgent({
        hubUrls: [node.hubUrl],
        hostnames: [NAME],
        targets: {
          [NAME]: {
            tls: { host: "127.0.0.1", port: recorder.port, proxyProtocol: 1 },
            http: { host: "127.0.0.1", port: recorder.port, proxyProtocol: 2 },
          },
        },
      }),
    );
    return { node, agent, recordings: recorder.recordings, teardown };
  } catch (error) {
    await teardown.run();
    throw error;
  }
}

Deno.test("a trusted upstream's header names the client; it stays at the node, and the service gets the agent's own", async () => {
  const { node, recordings, teardown } = await startFixture();
  try {
    // v2 from the upstream, cut anywhere (inside the header, across its end), in front of a ClientHello.
    const sent = concat(header(proxied("192.0.2.1", 50_000), 2), HELLO);
    assert.deepEqual(
      await rawExchange(node.tlsPort, chunked(sent, [1, 5, 13, 7]), { halfClose: true }),
      REPLY,
    );
    assert.equal(text(recordings[0].subarray(0, 45)), "PROXY TCP4 192.0.2.1 198.51.100.1 50000 443\r\n");
    assert.deepEqual(recordings[0], concat(header(proxied("192.0.2.1", 50_000), 1), HELLO));
    // v1 from the upstream, with IPv6 addresses, on the HTTP port; the service wants v2.
    const v6 = proxied("2001:db8::7", 40_000, "2001:db8::1", 80);
    assert.deepEqual(
      await rawExchange(node.httpPort, [concat(header(v6, 1), REQUEST)], { halfClose: true }),
      REPLY,
    );
    assert.deepEqual(recordings[1], concat(header(v6, 2), REQUEST));
    // LOCAL (the upstream's own health check): the socket's own ends, as if there were no upstream.
    assert.deepEqual(
      await rawExchange(node.tlsPort, [header({ command: "local" }, 2), HELLO], { halfClose: true }),
      REPLY,
    );
    const local = new RegExp(`^PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 \\d+ ${node.tlsPort}\r\n$`);
    assert.match(text(recordings[2].subarray(0, recordings[2].length - HELLO.length)), local);
    assert.deepEqual(recordings[2].subarray(recordings[2].length - HELLO.length), HELLO);
    // An untrusted client that sends no header is a client like any other, at its own address.
    assert.deepEqual(await rawExchangeFrom(UNTRUSTED, node.tlsPort, [HELLO], { halfClose: true }), REPLY);
    assert.match(
      text(recordings[3]),
      new RegExp(`^PROXY TCP4 127\\.0\\.0\\.7 127\\.0\\.0\\.1 \\d+ ${node.tlsPort}\r\n`),
    );
  } finally {
    await teardown.run();
  }
});

Deno.test("refused and counted: a header from an untrusted address, none from a trusted upstream, a malformed or cut one", async () => {
  const { node, recordings, teardown } = await startFixture();
  try {
    const refusals = node.node.refusals;
    const cases: Array<[string, () => Promise<Uint8Array>]> = [
      [
        "proxy_header_untrusted",
        () => rawExchangeFrom(UNTRUSTED, node.tlsPort, [header(proxied("192.0.2.1", 1), 1), HELLO]),
      ],
      [
        "proxy_header_untrusted",
        () => rawExchangeFrom(UNTRUSTED, node.httpPort, [header(proxied("192.0.2.1", 1), 2), REQUEST]),
      ],
      ["proxy_header_missing", () => rawExchange(node.tlsPort, [HELLO])],
      ["proxy_header_missing", () => rawExchange(node.httpPort, [REQUEST])],
      [
        "proxy_header_malformed",
        () => rawExchange(node.tlsPort, [new TextEncoder().encode("PROXY TCP4 192.0.2.1\n"), HELLO]),
      ],
      [
        "proxy_header_malformed",
        () =>
          rawExchange(node.tlsPort, [
            Uint8Array.of(...header(proxied("192.0.2.1", 1), 2).subarray(0, 12), 0x21, 0x12, 0, 0),
          ]),
      ],
      [
        "proxy_header_truncated",
        () => rawExchange(node.tlsPort, [new TextEncoder().encode("PROXY TCP4 192.0")], { halfClose: true }),
      ],
    ];
    for (const [kind, exchange] of cases) {
      const before = refusals.total(kind);
      assert.deepEqual(await exchange(), new Uint8Array(), `${kind}: closed without an answer`);
      await waitFor(() => refusals.total(kind) === before + 1, `${kind} to be counted`);
    }
    assert.equal(recordings.length, 0, "nothing reached the service");
    assert.equal(node.node.connections, 0);
  } finally {
    await teardown.run();
  }
});

Deno.test("the header counts against the handshake deadlines: none, one trickled too slowly, or no ClientHello after it", async () => {
  const { node, recordings, teardown } = await startFixture({
    handshakeTimeouts: { firstByteSeconds: 1, extendSeconds: 1, totalSeconds: 2, hubUpgradeSeconds: 10 },
  });
  try {
    const timeouts = () => node.node.refusals.total("handshake_timeout");
    const sent = header(proxied("192.0.2.1", 50_000), 2);
    // Nothing at all from the upstream: closed after firstByteSeconds.
    assert.deepEqual(await rawExchange(node.tlsPort, []), new Uint8Array());
    assert.equal(timeouts(), 1);
    // A byte every 0.4 s keeps each read within extendSeconds, but the whole header (28 bytes) would take
    // 11 s: the connection ends at totalSeconds, before the header is complete.
    const trickled = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
    const startedMs = Date.now();
    try {
      for (const byte of sent) {
        await writeAll(trickled, Uint8Array.of(byte));
        await new Promise((resolve) => setTimeout(resolve, 400));
        if (timeouts() === 2) break;
      }
      assert.equal(await trickled.read(new Uint8Array(1)), null);
    } catch (error) {
      if (!(error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset)) {
        throw error;
      }
    } finally {
      trickled.close();
    }
    assert.equal(timeouts(), 2);
    assert.ok(Date.now() - startedMs < sent.length * 400, "ended by the total deadline, not by the client");
    // A header, then no ClientHello: the same deadline goes on.
    assert.deepEqual(await rawExchange(node.tlsPort, [sent]), new Uint8Array());
    assert.equal(timeouts(), 3);
    assert.equal(recordings.length, 0);
  } finally {
    await teardown.run();
  }
});

/** A connection through the upstream for `client`, established to an echo service, held open. */
async function holdThroughUpstream(port: number, client: string, clientPort: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, concat(header(proxied(client, clientPort), 2), HELLO));
  return conn;
}

Deno.test("the per-IP limits count the client a trusted header names, past their limits, and never the upstream", async () => {
  const teardown = new Teardown();
  const held: Deno.TcpConn[] = [];
  try {
    const echoService = teardown.add(serveConnections(echo));
    const node = teardown.add(
      await startTestNode({
        relayPorts: [{ port: 0, protocol: "tls", trustedProxies: trustedBlocks("127.0.0.1") }],
        limits: { maxConnectionsPerIp: 2, maxHandshakesPerIp: 1, maxHandshakes: 64 },
      }),
    );
    teardown.add(
      await startTestAgent({
        hubUrls: [node.hubUrl],
        hostnames: [NAME],
        targets: { [NAME]: echoService.port },
      }),
    );
    const refusals = node.node.refusals;

    // maxConnectionsPerIp 2: the client's third connection is refused; another client of the same upstream is not.
    for (const port of [1, 2]) {
      const conn = await holdThroughUpstream(node.tlsPort, "192.0.2.1", port);
      held.push(conn);
      assert.deepEqual(await readExactly(conn, HELLO.length), HELLO, "echoed: the stream is up");
    }
    const third = await holdThroughUpstream(node.tlsPort, "192.0.2.1", 3);
    assert.equal(await third.read(new Uint8Array(1)), null, "closed");
    third.close();
    assert.equal(refusals.total("max_connections_per_ip"), 1);
    const other = await holdThroughUpstream(node.tlsPort, "192.0.2.2", 1);
    held.push(other);
    assert.deepEqual(await readExactly(other, HELLO.length), HELLO);

    // maxHandshakesPerIp 1: a second handshake of one client sheds its first, once the header names it.
    const first = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
    await writeAll(first, header(proxied("192.0.2.3", 1), 1));
    await waitFor(() => node.node.connections === 4, "the first handshake to be admitted");
    const second = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
    held.push(first, second);
    await writeAll(second, header(proxied("192.0.2.3", 2), 1));
    assert.equal(await first.read(new Uint8Array(1)), null, "the client's older handshake was shed");
    assert.equal(refusals.total("handshake_shed"), 1);

    // Many clients of the one upstream, each in its handshake (headers but no ClientHello yet), and more
    // connections of it whose header has not come: none is shed, though all come from 127.0.0.1.
    for (let i = 0; i < 20; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: node.tlsPort });
      held.push(conn);
      if (i % 2 === 0) await writeAll(conn, header(proxied(`198.51.100.${i}`, 1000 + i), 2));
    }
    await waitFor(() => node.node.connections === 4 + 20, "every handshake to be admitted");
    assert.equal(refusals.total("handshake_shed"), 1, "the upstream's clients are not one source");
    // And they all go on: the second 192.0.2.3 handshake and the others finish and are echoed.
    await writeAll(second, HELLO);
    assert.deepEqual(await readExactly(second, HELLO.length), HELLO);
  } finally {
    for (const conn of held) {
      try {
        conn.close();
      } catch {
        // Closed by the node.
      }
    }
    await teardown.run();
  }
});

Deno.test("the node says in its log why it refused, as configured from YAML (nexus serve)", async () => {
  const dir = await makeConfigDir();
  let node: NexusProcess | null = null;
  try {
    const config = await dir.write(
      "node.yaml",
      nodeYaml().replace(
        "  - { port: 0, protocol: tls }",
        '  - { port: 0, protocol: tls, trustedProxies: ["127.0.0.1/32", "2001:db8::/32"] }',
      ),
    );
    const started = await spawnNode(config);
    node = started.process;
    const port = started.ports.tlsPort;
    await rawExchangeFrom(UNTRUSTED, port, [header(proxied("192.0.2.1", 1), 1), HELLO]);
    await rawExchange(port, [HELLO]);
    await rawExchange(port, [new TextEncoder().encode("PROXY TCP4 192.0.2.1 198.51.100.1 1 99999\r\n")]);
    const untrusted = await node.waitForLine(/connection refused: proxy header untrusted/);
    assert.match(untrusted, /upstream=127\.0\.0\.7:\d+ trusted=false/);
    assert.match(
      await node.waitForLine(/connection refused: proxy header missing/),
      /upstream=127\.0\.0\.1:\d+ trusted=true/,
    );
    assert.match(
      await node.waitForLine(/connection refused: proxy header malformed/),
      /detail="v1 destination port \\"99999\\" is not a port number \(0-65535\)"/,
    );
  } finally {
    await node?.stop();
    await dir.remove();
  }
});
