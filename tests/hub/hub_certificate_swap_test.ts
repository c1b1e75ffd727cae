/**
 * Review of #8: the hub listener's certificate replaced again and again while clients connect, in-process
 * against a real HubListener on loopback. Every client must complete its TLS handshake and get an answer,
 * whichever certificate it sees, and the replaced loopback TLS servers must not pile up.
 */

import assert from "node:assert/strict";
import { HubListener } from "../../src/hub/hub_listener.ts";
import { createLogger, RateLimitedLog } from "../../src/log/logger.ts";
import { Admission } from "../../src/relay/admission.ts";
import { issueCertificate } from "../../scripts/dev_certs.ts";
import { testCertificates } from "../helpers/certs.ts";
import { withTimeout } from "../helpers/cluster.ts";

const CLIENTS = 8;
const REQUESTS_PER_CLIENT = 40;
const SWAP_EVERY_MS = 20;

async function healthz(port: number, caPem: string): Promise<string> {
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [caPem] });
  try {
    await conn.write(new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"));
    const buffer = new Uint8Array(512);
    let text = "";
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return text.split("\r\n")[0];
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the server already.
    }
  }
}

Deno.test("hub certificate replaced every 20 ms under 8 concurrent clients: every request answered", async () => {
  const certs = await testCertificates();
  const second = await issueCertificate(certs.ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const pairs = [certs.hub, second];
  const refusals = new RateLimitedLog(createLogger("review-refusals"));
  const listener = new HubListener({
    hostname: "127.0.0.1",
    port: 0,
    certPem: certs.hub.certPem,
    keyPem: certs.hub.keyPem,
    admission: new Admission({
      maxConnections: 1000,
      maxConnectionsPerIp: 1000,
      maxHandshakes: 256,
      maxHandshakesPerIp: 256,
    }),
    handshakes: new Admission({
      maxConnections: 1000,
      maxConnectionsPerIp: 1000,
      maxHandshakes: 256,
      maxHandshakesPerIp: 256,
    }),
    upgradeDeadlineMs: 10_000,
    proveDeadlineMs: 32_000,
    unprovenMaxMessageBytes: 32 * 1024,
    log: createLogger("review-hub"),
    refusals,
  }, (request) => request.respond(200, "ok\n"));
  listener.listen();
  const port = listener.address.port;
  let swaps = 0;
  let swapping = true;
  const swapper = (async () => {
    while (swapping) {
      const pair = pairs[swaps % 2];
      listener.replaceCertificate(pair.certPem, pair.keyPem);
      swaps += 1;
      await new Promise((resolve) => setTimeout(resolve, SWAP_EVERY_MS));
    }
  })();
  const failures: string[] = [];
  try {
    await withTimeout(
      Promise.all(Array.from({ length: CLIENTS }, async () => {
        for (let i = 0; i < REQUESTS_PER_CLIENT; i++) {
          try {
            const status = await healthz(port, certs.ca.certPem);
            if (status !== "HTTP/1.1 200 OK") failures.push(status || "(nothing)");
          } catch (error) {
            failures.push(error instanceof Error ? error.message : String(error));
          }
        }
      })),
      "the clients' requests",
      120_000,
    );
  } finally {
    swapping = false;
    await swapper;
    await listener.close();
    refusals.flush({ all: true });
  }
  assert.ok(swaps > 10, `the certificate was replaced ${swaps} times`);
  assert.deepEqual(failures, [], `${failures.length} of ${CLIENTS * REQUESTS_PER_CLIENT} requests failed`);
});
