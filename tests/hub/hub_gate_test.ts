/**
 * Review of #8: what the hub's gate (a TCP gate in front of a TLS server on loopback) still holds after it
 * should have let go, against a node child process with its default config.
 *
 * - A proven connection whose WebSocket the hub has ended: the gate half-closes the public socket and then
 *   waits for the peer's FIN with no deadline, so a peer that never closes (a frozen process, a paused
 *   container, a client that ignores the close) keeps two descriptors and its admission slot for good.
 * - Connections to the loopback TLS server that no gate made: logged and "closed" after 1 s, but the runtime
 *   keeps the socket of a TLS connection whose handshake never started until the peer leaves, so any local
 *   process can hold the node's descriptors, outside every cap and budget.
 * - An authenticated backend that sends `connect` frames (which only the node may send) makes one WARN line
 *   per frame: thousands per message, with no rate limit.
 */

import assert from "node:assert/strict";
import { makeConfigDir, type NodePorts, nodeYaml, openDescriptors, spawnNode } from "../helpers/processes.ts";
import type { NexusProcess } from "../helpers/processes.ts";
import { testCertificates } from "../helpers/certs.ts";
import { withTimeout } from "../helpers/cluster.ts";
import {
  authenticatedRawBackend,
  clientFrame,
  listeningPortsOf,
  muxBatch,
  muxControl,
  writeAll,
} from "./raw_hub_client.ts";

async function withNode(fn: (process: NexusProcess, ports: NodePorts) => Promise<void>): Promise<void> {
  const dir = await makeConfigDir();
  const { process, ports } = await spawnNode(await dir.write("node.yaml", nodeYaml()));
  try {
    await fn(process, ports);
  } finally {
    await process.stop();
    await dir.remove();
  }
}

/** Polls the node's descriptors until at most `limit`, or `timeoutMs`; returns the last count. */
async function descriptorsSettle(pid: number, limit: number, timeoutMs: number): Promise<number> {
  const until = Date.now() + timeoutMs;
  let now = await openDescriptors(pid);
  while (now > limit && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    now = await openDescriptors(pid);
  }
  return now;
}

Deno.test("a proven hub connection the hub has ended is released although its peer never closes its side", async () => {
  await withNode(async (process, ports) => {
    const baseline = await openDescriptors(process.pid);
    const { conn } = await authenticatedRawBackend(ports.hubPort, ["raw.test.nexus"]);
    try {
      // The header of a message over the protocol's largest: the hub ends the session (1009) at once. Only
      // the header: bytes still in flight would make the gate fail on its write and so end it anyway.
      await writeAll(conn, clientFrame(0x2, new Uint8Array(400 * 1024)).subarray(0, 14));
      // Never read again, never answer, never close: a frozen peer (its kernel still acknowledges). A TLS
      // client that reads the hub's close_notify answers it, and that would end the gate's wait by itself.
      await withTimeout(
        (async () => {
          while (process.matching(/backend left/).length === 0) {
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })(),
        "the hub to end the session",
        20_000,
      );
      assert.ok(process.matching(/message too big|larger than the protocol allows/).length > 0);
      const left = await descriptorsSettle(process.pid, baseline + 1, 10_000);
      assert.ok(
        left <= baseline + 1,
        `10 s after the hub ended the session the node still holds ${
          left - baseline
        } descriptors more than before`,
      );
    } finally {
      conn.close();
    }
  });
});

Deno.test("a local connection to the hub's loopback TLS server, not from the gate, is never served and is said once", async () => {
  // Deno's TLS server keeps the socket of a handshake that never comes until the client lets go (README,
  // Limitations): only local processes can reach this port, and the node gives them nothing.
  await withNode(async (process, ports) => {
    const known = new Set([ports.hubPort, ports.tlsPort, ports.httpPort]);
    const loopbackTls = (await listeningPortsOf(process.pid)).filter((port) => !known.has(port));
    assert.equal(loopbackTls.length, 1, `the node listens on one more port: ${loopbackTls}`);
    const strays: Deno.TlsConn[] = [];
    try {
      const certs = await testCertificates();
      // Complete TLS handshakes and upgrade requests: were the gate not checked, each would get an answer.
      for (let i = 0; i < 20; i++) {
        const tls = await Deno.connectTls({
          hostname: "localhost",
          port: loopbackTls[0],
          caCerts: [certs.ca.certPem],
        });
        await tls.write(new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"));
        strays.push(tls);
      }
      const answers = await Promise.all(strays.map(async (tls) => {
        try {
          return await tls.read(new Uint8Array(100));
        } catch {
          return null;
        }
      }));
      assert.deepEqual(answers, strays.map(() => null), "no stray got an answer");
      await withTimeout(
        (async () => {
          while (process.matching(/not from the gate/).length === 0) {
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })(),
        "the node to say it closed them",
        10_000,
      );
      // Rate-limited: a few lines, not one per connection.
      assert.ok(process.matching(/not from the gate/).length <= 5);
    } finally {
      for (const stray of strays) stray.close();
    }
  });
});

Deno.test("an authenticated backend's connect frames are refused without one log line each", async () => {
  await withNode(async (process, ports) => {
    const { conn } = await authenticatedRawBackend(ports.hubPort, ["raw.test.nexus"]);
    try {
      const linesBefore = process.lines.length;
      const connects = Array.from(
        { length: 2_000 },
        () =>
          muxControl({
            event: "connect",
            client_id: crypto.randomUUID(),
            conn_port: 443,
            hostname: "raw.test.nexus",
            transport: "tcp",
          }),
      );
      await writeAll(conn, clientFrame(0x2, muxBatch(connects)));
      // A ping after them: once the hub answers it, it has handled all 2,000.
      await writeAll(conn, clientFrame(0x2, muxBatch([muxControl({ event: "ping" })])));
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const lines = process.lines.length - linesBefore;
      assert.ok(lines < 50, `2,000 connect frames from one backend wrote ${lines} log lines`);
    } finally {
      conn.close();
    }
  });
});
