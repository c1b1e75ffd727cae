import assert from "node:assert/strict";
import { tlsAlert } from "../../src/sni/alerts.ts";
import { parseClientHello } from "../../src/sni/client_hello.ts";

Deno.test("tlsAlert gives a 7-byte fatal alert record with the RFC 8446 §6 code", () => {
  assert.deepEqual(tlsAlert("handshake_failure"), Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40));
  assert.deepEqual(tlsAlert("protocol_version"), Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70));
  assert.deepEqual(tlsAlert("internal_error"), Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80));
  assert.deepEqual(tlsAlert("unrecognized_name"), Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112));
});

Deno.test("tlsAlert returns a fresh array each call, so a caller may reuse or mutate it", () => {
  const first = tlsAlert("unrecognized_name");
  first[6] = 0;
  assert.equal(tlsAlert("unrecognized_name")[6], 112);
});

Deno.test("an alert record is never mistaken for a ClientHello", () => {
  assert.deepEqual(parseClientHello(tlsAlert("handshake_failure")), { kind: "not_tls" });
});

Deno.test("a real TLS client reports the alert description it receives", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = Deno.connectTls({ hostname: "localhost", port: listener.addr.port });
  const server = await listener.accept();
  const hello = new Uint8Array(4096);
  assert.notEqual(await server.read(hello), null);
  await server.write(tlsAlert("unrecognized_name"));
  const conn = await client;
  // rustls spells it the British way.
  await assert.rejects(conn.handshake(), /received fatal alert: UnrecognisedName/);
  conn.close();
  server.close();
});
