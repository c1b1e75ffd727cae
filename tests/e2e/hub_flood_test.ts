/**
 * The hub port under abuse, with the node as a child process: a flood of connections that never start TLS is
 * shed by deadlines and per-source caps while the relay keeps serving and new agents still register; a node
 * short of descriptors refuses at its caps instead of dying, and recovers by itself; an unauthenticated
 * WebSocket may not send large messages.
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { WebSocketClient } from "../../src/transport/websocket_client.ts";
import { startTestAgent, waitFor, withTimeout } from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { makeConfigDir, type NodePorts, nodeYaml, openDescriptors, spawnNode } from "../helpers/processes.ts";
import { openTrafficStream, startTrafficService, type TrafficService } from "../helpers/traffic.ts";

const HOSTNAME = "app.test.nexus";
/** Source addresses of the flood: the node sees each as its own client (see `net.connect`'s localAddress). */
const FLOOD_SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"];

/** Opens `count` TCP connections to `port` that never send a byte; counts those the node closes. */
function flood(port: number, count: number) {
  const sockets: net.Socket[] = [];
  let closedByNode = 0;
  let connected = 0;
  for (let i = 0; i < count; i++) {
    const socket = net.connect({
      host: "127.0.0.1",
      port,
      localAddress: FLOOD_SOURCES[i % FLOOD_SOURCES.length],
    });
    socket.on("connect", () => connected++);
    socket.on("error", () => {});
    socket.on("close", () => closedByNode++);
    socket.resume();
    sockets.push(socket);
  }
  return {
    get connected() {
      return connected;
    },
    get closedByNode() {
      return closedByNode;
    },
    close() {
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** One echo through the relay and the agent: the control request. */
async function controlRequest(tlsPort: number): Promise<boolean> {
  try {
    const conn = await openTrafficStream({ port: tlsPort, protocol: "tls", hostname: HOSTNAME }, "ECHO");
    try {
      const bytes = new TextEncoder().encode("ping");
      await conn.write(bytes);
      const buffer = new Uint8Array(4);
      let got = 0;
      while (got < 4) {
        const n = await conn.read(buffer.subarray(got));
        if (n === null) return false;
        got += n;
      }
      return new TextDecoder().decode(buffer) === "ping";
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

async function agentFor(ports: NodePorts, service: TrafficService, name: string) {
  return await startTestAgent({
    hubUrls: [`wss://127.0.0.1:${ports.hubPort}/connect`],
    hostnames: [HOSTNAME],
    targets: { [HOSTNAME]: service.port },
    name,
  });
}

Deno.test("a flood of connections that never start TLS on the hub port is shed; the relay serves and agents register meanwhile", async () => {
  const dir = await makeConfigDir();
  const service = await startTrafficService();
  const config = await dir.write(
    "node.yaml",
    nodeYaml({ extra: "handshakeTimeouts:\n  hubUpgradeSeconds: 2" }),
  );
  const { process, ports } = await spawnNode(config);
  const agents = [];
  let attack: ReturnType<typeof flood> | null = null;
  try {
    agents.push(await agentFor(ports, service, "before-the-flood"));
    assert.equal(await controlRequest(ports.tlsPort), true);
    const baseline = await openDescriptors(process.pid);

    attack = flood(ports.hubPort, 2_000);
    const during = attack;
    await waitFor(() => during.connected + during.closedByNode >= 2_000, "the flood to connect", 20_000);
    // While the flood is on: a new agent registers and every control request is served.
    agents.push(await agentFor(ports, service, "during-the-flood"));
    const results = await Promise.all(Array.from({ length: 20 }, () => controlRequest(ports.tlsPort)));
    assert.equal(results.filter(Boolean).length, 20, "control requests served during the flood");
    // Per-source caps and the upgrade deadline (2 s) end every flood connection the node accepted, while the
    // flood keeps its sockets open: what the flood held comes back (the second agent's session holds three).
    // Connections the kernel could not queue for accept never reached the node and cost it nothing.
    await withTimeout(
      (async () => {
        while ((await openDescriptors(process.pid)) > baseline + 10) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })(),
      "the node's descriptors to return to their baseline",
      10_000,
    );
    assert.ok(during.closedByNode > 0);
    assert.ok(process.matching(/hub_handshake_shed|hub connection shed|deadline passed/).length > 0);
  } finally {
    attack?.close();
    for (const agent of agents) await agent.stop(0);
    await process.stop();
    await service.close();
    await dir.remove();
  }
});

Deno.test("short of descriptors, the node refuses at its caps, keeps the hub for agents, and recovers by itself", async () => {
  const dir = await makeConfigDir();
  const service = await startTrafficService();
  // Sources may hold as many handshakes as they like here: the limit under test is the descriptors.
  const config = await dir.write("node.yaml", nodeYaml({ extra: "limits:\n  maxHandshakesPerIp: 100000" }));
  const { process, ports } = await spawnNode(config, { openFileLimit: 400 });
  const agents = [];
  const idle: Deno.Conn[] = [];
  try {
    assert.ok(
      process.matching(/open-file limit is too small/).length === 1,
      "the node says its caps were lowered",
    );
    // Fill the relay well past its share: the node refuses the excess, it does not run out.
    for (let i = 0; i < 600; i++) {
      try {
        idle.push(await Deno.connect({ hostname: "127.0.0.1", port: ports.tlsPort }));
      } catch {
        break;
      }
    }
    await waitFor(
      () => process.matching(/max_connections/).length > 0,
      "relay connections refused at the lowered cap",
      10_000,
    );
    // The hub's share is intact: an agent registers while the relay is full.
    agents.push(await agentFor(ports, service, "while-relay-full"));
    // A hub flood on top does not end the process either.
    const attack = flood(ports.hubPort, 300);
    await waitFor(() => attack.connected + attack.closedByNode >= 300, "the hub flood to connect", 20_000);
    attack.close();
    for (const conn of idle.splice(0)) conn.close();
    // Descriptors back: clients are served again and another agent registers; the node never stopped.
    assert.equal(
      await withTimeout(controlRequest(ports.tlsPort), "a control request after the load", 20_000),
      true,
    );
    agents.push(await agentFor(ports, service, "after-the-load"));
    assert.equal(await controlRequest(ports.tlsPort), true);
    const status = await Promise.race([
      process.exited,
      new Promise((resolve) => setTimeout(resolve, 100, "alive")),
    ]);
    assert.equal(status, "alive");
    // A reload that leaves the lowered caps as they were does not say it again.
    const from = process.lines.length;
    process.kill("SIGHUP");
    await process.waitForLine(/reload done/, { from, timeoutMs: 20_000 });
    assert.equal(process.matching(/open-file limit is too small/).length, 1, "the warning came once");
  } finally {
    for (const conn of idle) conn.close();
    for (const agent of agents) await agent.stop(0);
    await process.stop();
    await service.close();
    await dir.remove();
  }
});

Deno.test("before authenticating, a WebSocket on the hub may not send more than one frame's worth", async () => {
  const dir = await makeConfigDir();
  const config = await dir.write("node.yaml", nodeYaml());
  const { process, ports } = await spawnNode(config);
  try {
    const certs = await testCertificates();
    const ws = new WebSocketClient(`wss://127.0.0.1:${ports.hubPort}/connect`, {
      caCerts: [certs.ca.certPem],
    });
    const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
    await new Promise((resolve) => ws.addEventListener("open", resolve));
    // A "token" of 16 MiB: refused at the first frame header, not read and parsed.
    ws.send("x".repeat(16 * 1024 * 1024));
    const event = await withTimeout(closed, "the hub to close the WebSocket");
    assert.equal(event.code, 1009, `closed with ${event.code} ${event.reason}`);
  } finally {
    await process.stop();
    await dir.remove();
  }
});
