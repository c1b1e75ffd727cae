import assert from "node:assert/strict";
import { connectTls, startTestAgent, startTestNode } from "../helpers/cluster.ts";
import { testCertificates } from "../helpers/certs.ts";
import { echo, patternBytes, readAll, serveConnections, sha256Hex, writeAll } from "../helpers/services.ts";

Deno.test("a TLS client reaches the service behind the agent; 8 MiB each way arrive byte-exact", async () => {
  const certs = await testCertificates();
  const service = serveConnections(echo, certs.service);
  const node = await startTestNode();
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.port },
  });
  try {
    // The certificate is verified for app.test.nexus: only the service's certificate carries that name (the
    // hub's is for localhost), so a successful handshake proves the node did not terminate TLS.
    const conn = await connectTls(node.tlsPort, "app.test.nexus");
    const sent = patternBytes(8 * 1024 * 1024, 7);
    const [received] = await Promise.all([
      readAll(conn),
      writeAll(conn, sent).then(() => conn.closeWrite()),
    ]);
    conn.close();
    assert.equal(received.length, sent.length);
    assert.equal(await sha256Hex(received), await sha256Hex(sent));
  } finally {
    await agent.stop(0);
    await node.close();
    await service.close();
  }
});

Deno.test("curl sees the service's certificate, not the hub's, through the node", async (t) => {
  if (
    (await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output().catch(() => null)) ===
      null
  ) {
    t.step({ name: "curl is not installed: skipped", ignore: true, fn: () => {} });
    return;
  }
  const certs = await testCertificates();
  const service = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: certs.service.certPem,
      key: certs.service.keyPem,
      onListen: () => {},
    },
    () => new Response("served by the service\n"),
  );
  const node = await startTestNode();
  const agent = await startTestAgent({
    hubUrls: [node.hubUrl],
    hostnames: ["app.test.nexus"],
    targets: { "app.test.nexus": service.addr.port },
  });
  const caFile = await Deno.makeTempFile({ suffix: ".pem" });
  try {
    await Deno.writeTextFile(caFile, certs.ca.certPem);
    const url = `https://app.test.nexus:${node.tlsPort}/`;
    const output = await new Deno.Command("curl", {
      args: [
        "-sS",
        "-v",
        "--max-time",
        "10",
        "--cacert",
        caFile,
        "--resolve",
        `app.test.nexus:${node.tlsPort}:127.0.0.1`,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    assert.equal(new TextDecoder().decode(output.stdout), "served by the service\n");
    assert.match(stderr, /subject: CN=app\.test\.nexus/);
  } finally {
    await Deno.remove(caFile);
    await agent.stop(0);
    await node.close();
    await service.shutdown();
  }
});
