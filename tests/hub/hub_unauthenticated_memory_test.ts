/**
 * Review of #8, finding 6 continued: before a peer has authenticated, the hub must not let it make the node
 * hold memory far beyond what it sent or beyond the small message limit. Three ways past the 32 KiB limit,
 * each against a node child process with its default config, each measured by the node's resident memory:
 *
 * - a message made of millions of empty fragments (each stored as its own array, ~6 wire bytes each);
 * - pings from a client that never reads (every pong queued in the node's output);
 * - messages after the hub has refused the token (the WebSocket is CLOSING for 5 s, and the handshake's inbox
 *   still queues every message).
 *
 * Every load is bounded in bytes and in time; the thresholds are far above what a fixed node needs (a few MiB)
 * and far below what the node does today (hundreds of MiB).
 */

import assert from "node:assert/strict";
import { makeConfigDir, memoryOf, nodeYaml, spawnNode } from "../helpers/processes.ts";
import { withTimeout } from "../helpers/cluster.ts";
import { clientFrame, repeated, ServerFrames, upgradedHubSocket, writeAll } from "./raw_hub_client.ts";

const MiB = 1024 * 1024;

async function withNode(fn: (hubPort: number, pid: number) => Promise<void>): Promise<void> {
  const dir = await makeConfigDir();
  const { process, ports } = await spawnNode(await dir.write("node.yaml", nodeYaml()));
  try {
    await fn(ports.hubPort, process.pid);
    assert.equal(process.exitStatus, null, "the node is still running");
  } finally {
    await process.stop();
    await dir.remove();
  }
}

/** Writes `chunk` until `maxBytes` are written, `maxMs` have passed, or the node stops taking them. */
async function writeFor(
  conn: Deno.Conn,
  chunk: Uint8Array,
  maxBytes: number,
  maxMs: number,
): Promise<number> {
  const until = Date.now() + maxMs;
  let sent = 0;
  try {
    while (sent < maxBytes && Date.now() < until) {
      await writeAll(conn, chunk);
      sent += chunk.length;
    }
  } catch {
    // The node closed the connection: it stopped taking them.
  }
  return sent;
}

const rss = async (pid: number) => (await memoryOf(pid)).rssBytes;

Deno.test("unauthenticated: a message of millions of empty fragments does not grow the node by more than 48 MiB", async () => {
  await withNode(async (hubPort, pid) => {
    const conn = await upgradedHubSocket(hubPort);
    const frames = new ServerFrames(conn);
    try {
      const before = await rss(pid);
      await writeAll(conn, clientFrame(0x2, new Uint8Array(0), false));
      // 2,000,000 empty continuation frames: 12 MB on the wire, no payload byte at all.
      const chunk = repeated(clientFrame(0x0, new Uint8Array(0), false), 100_000);
      const sent = await writeFor(conn, chunk, 20 * chunk.length, 20_000);
      // The node reads in order: once it answers this ping (or closes), it has taken in everything before it.
      await writeAll(conn, clientFrame(0x9, new Uint8Array(1))).catch(() => {});
      const answer = await withTimeout(frames.next(), "the node to answer the ping or close", 30_000);
      // Each fragment counts against the 32 KiB limit for what it costs to keep: the message is refused.
      assert.equal(answer?.opcode, 0x8, "a close frame");
      assert.equal(answer === null ? 0 : (answer.payload[0] << 8) | answer.payload[1], 1009);
      const grown = (await rss(pid)) - before;
      assert.ok(
        grown < 48 * MiB,
        `${(sent / MiB).toFixed(1)} MiB of empty fragments grew the node by ${(grown / MiB).toFixed(0)} MiB`,
      );
    } finally {
      conn.close();
    }
  });
});

Deno.test("unauthenticated: pings from a client that never reads do not grow the node by more than 48 MiB", async () => {
  await withNode(async (hubPort, pid) => {
    const conn = await upgradedHubSocket(hubPort);
    try {
      const before = await rss(pid);
      const chunk = repeated(clientFrame(0x9, new Uint8Array(125)), 4_000);
      const sent = await writeFor(conn, chunk, 64 * MiB, 8_000);
      // The pings go unanswered but for one pong at a time (RFC 6455 §5.5.3): nothing piles up.
      // Let the node take in what is in flight.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const grown = (await rss(pid)) - before;
      assert.ok(
        grown < 48 * MiB,
        `${(sent / MiB).toFixed(1)} MiB of pings, never read, grew the node by ${
          (grown / MiB).toFixed(0)
        } MiB`,
      );
    } finally {
      conn.close();
    }
  });
});

Deno.test("unauthenticated: messages after a refused token are not kept; the node grows by less than 64 MiB", async () => {
  await withNode(async (hubPort, pid) => {
    const conn = await upgradedHubSocket(hubPort);
    try {
      const before = await rss(pid);
      await writeAll(conn, clientFrame(0x1, new TextEncoder().encode("not a token")));
      // The node refuses at once and starts its closing handshake; this client never answers it.
      const chunk = clientFrame(0x1, new Uint8Array(32 * 1024).fill(0x61));
      const sent = await writeFor(conn, chunk, 256 * MiB, 4_000);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const grown = (await rss(pid)) - before;
      assert.ok(
        grown < 64 * MiB,
        `${(sent / MiB).toFixed(1)} MiB sent after the refusal grew the node by ${
          (grown / MiB).toFixed(0)
        } MiB`,
      );
    } finally {
      conn.close();
    }
  });
});
