/**
 * `idleTimeoutSeconds` on a running node: a stream that moves no byte either way is closed, while streams
 * that move a byte every 200 ms survive, whether the bytes go both ways, only to the client or only from it
 * (idleness must look at both directions: the original once closed streams whose bytes flowed only to the
 * client).
 */

import assert from "node:assert/strict";
import { startTestAgent, startTestNode, waitFor } from "../helpers/cluster.ts";
import { namedEchoService, readExactly, readLine } from "../helpers/raw.ts";
import { readAll, serveConnections, writeAll } from "../helpers/services.ts";
import { buildClientHello } from "../sni/client_hello_builder.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const TICKS = 15;
const TICK_MS = 200;
/** Far above the 1 s timeout plus the 1 s sweep; only bounds the wait for a close that must come. */
const CLOSE_WAIT_MS = 10_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sends its name, then one byte every 200 ms, then, once the client has half-closed, `end`. */
async function ticker(conn: Deno.Conn): Promise<void> {
  await writeAll(conn, encoder.encode("ticker\n"));
  for (let i = 0; i < TICKS; i++) {
    await sleep(TICK_MS);
    await writeAll(conn, Uint8Array.of(i));
  }
  await readAll(conn);
  await writeAll(conn, encoder.encode("end\n"));
  await conn.closeWrite();
}

/** Sends its name, reads to the end without answering, then says how many bytes it got. */
async function sink(conn: Deno.Conn): Promise<void> {
  await writeAll(conn, encoder.encode("sink\n"));
  const received = await readAll(conn);
  await writeAll(conn, encoder.encode(`${received.length}\n`));
  await conn.closeWrite();
}

/** A raw client that has sent its ClientHello and read the service's name line. */
async function connect(port: number, servername: string): Promise<{ conn: Deno.Conn; served: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  await writeAll(conn, buildClientHello({ serverName: servername }));
  return { conn, served: await readLine(conn) };
}

/** How a read on an idle client ended: `eof` or the error's name; fails the test if it does not end. */
async function readEnd(conn: Deno.Conn): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ended = (async () => {
    try {
      const n = await conn.read(new Uint8Array(1));
      return n === null ? "eof" : "data";
    } catch (error) {
      return error instanceof Error ? error.name : String(error);
    }
  })();
  const timeout = new Promise<string>((
    resolve,
  ) => (timer = setTimeout(() => resolve("still open"), CLOSE_WAIT_MS)));
  try {
    return await Promise.race([ended, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("with idleTimeoutSeconds 1, idle streams are closed while streams moving a byte every 200 ms either way survive", async () => {
  const echo = namedEchoService("echo");
  const tick = serveConnections(ticker);
  const drain = serveConnections(sink);
  const node = await startTestNode({ idleTimeoutSeconds: 1 });
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: ["echo.test.nexus", "ticker.test.nexus", "sink.test.nexus"],
    targets: { "echo.test.nexus": echo.port, "ticker.test.nexus": tick.port, "sink.test.nexus": drain.port },
  });
  const port = node.tlsPort;
  const hello = buildClientHello({ serverName: "echo.test.nexus" });
  try {
    const idle = async (): Promise<string> => {
      const { conn, served } = await connect(port, "echo.test.nexus");
      try {
        assert.equal(served, "echo");
        assert.deepEqual(await readExactly(conn, hello.length), hello);
        return await readEnd(conn);
      } finally {
        conn.close();
      }
    };
    const bothWays = async (): Promise<string> => {
      const { conn } = await connect(port, "echo.test.nexus");
      try {
        assert.deepEqual(await readExactly(conn, hello.length), hello);
        for (let i = 0; i < TICKS; i++) {
          await sleep(TICK_MS);
          await writeAll(conn, Uint8Array.of(i));
          assert.deepEqual(await readExactly(conn, 1), Uint8Array.of(i));
        }
        await conn.closeWrite();
        assert.equal((await readAll(conn)).length, 0);
        return "survived";
      } finally {
        conn.close();
      }
    };
    const toClientOnly = async (): Promise<string> => {
      const { conn, served } = await connect(port, "ticker.test.nexus");
      try {
        assert.equal(served, "ticker");
        assert.deepEqual(await readExactly(conn, TICKS), Uint8Array.from({ length: TICKS }, (_, i) => i));
        await conn.closeWrite();
        assert.equal(decoder.decode(await readAll(conn)), "end\n");
        return "survived";
      } finally {
        conn.close();
      }
    };
    const fromClientOnly = async (): Promise<string> => {
      const { conn, served } = await connect(port, "sink.test.nexus");
      try {
        assert.equal(served, "sink");
        for (let i = 0; i < TICKS; i++) {
          await sleep(TICK_MS);
          await writeAll(conn, Uint8Array.of(i));
        }
        await conn.closeWrite();
        // The sink counts the hello too.
        assert.equal(
          decoder.decode(await readAll(conn)),
          `${buildClientHello({ serverName: "sink.test.nexus" }).length + TICKS}\n`,
        );
        return "survived";
      } finally {
        conn.close();
      }
    };

    const [idleEnds, busyEnds] = await Promise.all([
      Promise.all([idle(), idle(), idle()]),
      Promise.all([bothWays(), bothWays(), bothWays(), toClientOnly(), fromClientOnly()]),
    ]);
    for (const end of idleEnds) assert.ok(end === "eof" || end === "ConnectionReset", `idle stream: ${end}`);
    assert.equal(idleEnds.length, 3);
    assert.deepEqual(busyEnds, ["survived", "survived", "survived", "survived", "survived"]);
    assert.equal(echo.accepted, 6);
    assert.equal(tick.accepted, 1);
    assert.equal(drain.accepted, 1);
    await waitFor(() => node.node.relay.activeStreams === 0, "every relay stream to end");
  } finally {
    await agent.stop(0);
    await node.close();
    await echo.close();
    await tick.close();
    await drain.close();
  }
});
