/**
 * Review of #8: the agent's stream cap under a low open-file limit counts one hub, but the cap applies to each
 * hub session: with two hubs the agent may open twice the streams its descriptors allow, and runs out.
 */

import assert from "node:assert/strict";
import { buildClientHello } from "../sni/client_hello_builder.ts";
import { agentYaml, makeConfigDir, nodeYaml, spawnAgent, spawnNode } from "../helpers/processes.ts";
import { echo, serveConnections } from "../helpers/services.ts";
import { withTimeout } from "../helpers/cluster.ts";

const OPEN_FILES = 200;
const STREAMS_PER_NODE = 150;

Deno.test("an agent with two hubs under a low open-file limit refuses streams at its cap instead of running out", async () => {
  const dir = await makeConfigDir();
  const a = await spawnNode(await dir.write("a.yaml", nodeYaml()));
  const b = await spawnNode(await dir.write("b.yaml", nodeYaml()));
  const service = serveConnections(echo);
  const clients: Deno.TcpConn[] = [];
  const agent = await spawnAgent(
    await dir.write(
      "agent.yaml",
      agentYaml({
        hubUrls: [`wss://127.0.0.1:${a.ports.hubPort}/connect`, `wss://127.0.0.1:${b.ports.hubPort}/connect`],
        hostnames: ["app.test.nexus"],
        targets: { "app.test.nexus": service.port },
      }),
    ),
    { openFileLimit: OPEN_FILES, waitConnected: false },
  );
  try {
    await withTimeout(
      (async () => {
        while (agent.matching(/connected to hub/).length < 2) await new Promise((r) => setTimeout(r, 100));
      })(),
      "the agent's two hub sessions",
      20_000,
    );
    assert.equal(agent.matching(/cap lowered/).length, 1, "the agent says it lowered its stream cap");
    const hello = buildClientHello({ serverName: "app.test.nexus" });
    for (const node of [a, b]) {
      for (let i = 0; i < STREAMS_PER_NODE; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: node.ports.tlsPort });
        clients.push(conn);
        await conn.write(hello);
      }
    }
    // Every stream has been answered once the service has it or the agent has refused it (bounded wait).
    const until = Date.now() + 15_000;
    while (
      service.accepted + agent.matching(/stream refused/).length < 2 * STREAMS_PER_NODE && Date.now() < until
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const outOfDescriptors = agent.matching(/os error 24|Too many open files/);
    assert.equal(
      outOfDescriptors.length,
      0,
      `the agent ran out of descriptors ${outOfDescriptors.length} times: ${outOfDescriptors[0]}`,
    );
  } finally {
    for (const conn of clients) conn.close();
    await agent.stop();
    await a.process.stop();
    await b.process.stop();
    await service.close();
    await dir.remove();
  }
});
