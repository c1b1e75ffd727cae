import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueCertificate,
  type IssuedCertificate,
  loadCertificateAuthority,
} from "../../scripts/dev_certs.ts";

const SCRIPT = new URL("../../scripts/dev_certs.ts", import.meta.url).pathname;
const DAY_S = 24 * 60 * 60;
const HOUR_S = 60 * 60;

async function commandExists(name: string, versionArgs: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(name, { args: versionArgs, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

const hasOpenssl = await commandExists("openssl", ["version"]);
const hasCurl = await commandExists("curl", ["--version"]);
if (!hasOpenssl) console.log("dev_certs_test: openssl not found, skipping the openssl checks");
if (!hasCurl) console.log("dev_certs_test: curl not found, skipping the curl check");

interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function run(command: string, args: string[], cwd?: string): Promise<CommandResult> {
  const output = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** A TLS echo server on 127.0.0.1 serving `leaf`; it answers each connection's first bytes, then closes it. */
class EchoServer implements AsyncDisposable {
  readonly port: number;
  #listener: Deno.TlsListener;
  #connections: Promise<void>[] = [];
  #acceptLoop: Promise<void>;

  constructor(leaf: IssuedCertificate) {
    this.#listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: leaf.certPem, key: leaf.keyPem });
    this.port = this.#listener.addr.port;
    this.#acceptLoop = this.#accept();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) this.#connections.push(this.#echo(conn));
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }

  async #echo(conn: Deno.TlsConn): Promise<void> {
    try {
      await conn.handshake();
      const buffer = new Uint8Array(64);
      const count = await conn.read(buffer);
      if (count !== null) await conn.write(buffer.subarray(0, count));
    } catch {
      // A client that refuses the certificate aborts the handshake: that is what those tests expect.
    } finally {
      conn.close();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#acceptLoop;
    await Promise.all(this.#connections);
  }
}

/** Sends "ping" over an established TLS connection and returns the echo. */
async function pingOver(conn: Deno.TlsConn): Promise<string> {
  try {
    await conn.handshake();
    await conn.write(new TextEncoder().encode("ping"));
    const buffer = new Uint8Array(4);
    let received = 0;
    while (received < buffer.length) {
      const count = await conn.read(buffer.subarray(received));
      if (count === null) break;
      received += count;
    }
    return new TextDecoder().decode(buffer.subarray(0, received));
  } finally {
    conn.close();
  }
}

/** Connects to 127.0.0.1:port and starts TLS for `hostname`: SNI and verification for a name DNS cannot resolve. */
async function connectAs(hostname: string, port: number, caCertPem: string): Promise<Deno.TlsConn> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  return await Deno.startTls(tcp, { hostname, caCerts: [caCertPem] });
}

async function assertHandshakeRefused(conn: Deno.TlsConn, message: string): Promise<void> {
  try {
    await assert.rejects(conn.handshake(), (error: unknown) => {
      assert.ok(error instanceof Deno.errors.InvalidData);
      assert.equal(error.message, message);
      return true;
    });
  } finally {
    conn.close();
  }
}

async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(dir, name), text);
}

function colonHex(bytes: Uint8Array): string {
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0").toUpperCase()).join(":");
}

/** SHA-1 of the public key of a PKCS#8 P-256 key: the subjectKeyIdentifier a certificate for it should carry. */
async function keyIdentifierOfKey(keyPem: string): Promise<Uint8Array> {
  const base64 = keyPem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  const key = await crypto.subtle.importKey(
    "pkcs8",
    Uint8Array.fromBase64(base64),
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const point = new Uint8Array(65);
  point[0] = 0x04;
  point.set(Uint8Array.fromBase64(jwk.x!, { alphabet: "base64url" }), 1);
  point.set(Uint8Array.fromBase64(jwk.y!, { alphabet: "base64url" }), 33);
  return new Uint8Array(await crypto.subtle.digest("SHA-1", point));
}

/** notBefore and notAfter of a certificate file, as Unix seconds, read by openssl. */
async function datesOf(certPath: string): Promise<{ notBefore: number; notAfter: number }> {
  const { stdout } = await run("openssl", [
    "x509",
    "-in",
    certPath,
    "-noout",
    "-dates",
    "-dateopt",
    "iso_8601",
  ]);
  const parse = (field: string) => {
    const match = new RegExp(`^${field}=(\\S+) (\\S+)$`, "m").exec(stdout);
    assert.ok(match, `openssl printed no ${field}: ${stdout}`);
    return Date.parse(`${match[1]}T${match[2]}`) / 1000;
  };
  return { notBefore: parse("notBefore"), notAfter: parse("notAfter") };
}

let sharedCa: Promise<CertificateAuthority> | undefined;
let sharedLeaf: Promise<IssuedCertificate> | undefined;

/** One CA and one leaf for localhost, 127.0.0.1, ::1 and *.demo.test, made once for the tests that only read them. */
async function sampleCertificates(): Promise<{ ca: CertificateAuthority; leaf: IssuedCertificate }> {
  sharedCa ??= createCertificateAuthority();
  const ca = await sharedCa;
  sharedLeaf ??= issueCertificate(ca, {
    dnsNames: ["localhost", "*.demo.test"],
    ipAddresses: ["127.0.0.1", "::1"],
  });
  return { ca, leaf: await sharedLeaf };
}

Deno.test("a leaf for localhost, 127.0.0.1 and *.demo.test serves TLS to clients that trust its CA", async () => {
  const { ca, leaf } = await sampleCertificates();
  await using server = new EchoServer(leaf);
  const viaName = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [ca.certPem] });
  assert.equal(await pingOver(viaName), "ping");
  const viaIp = await Deno.connectTls({ hostname: "127.0.0.1", port: server.port, caCerts: [ca.certPem] });
  assert.equal(await pingOver(viaIp), "ping");
  assert.equal(await pingOver(await connectAs("app.demo.test", server.port, ca.certPem)), "ping");
});

Deno.test("a client that trusts another CA refuses the leaf", async () => {
  const { leaf } = await sampleCertificates();
  const otherCa = await createCertificateAuthority();
  await using server = new EchoServer(leaf);
  await assertHandshakeRefused(
    await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [otherCa.certPem] }),
    "invalid peer certificate: UnknownIssuer",
  );
  await assertHandshakeRefused(
    await Deno.connectTls({ hostname: "localhost", port: server.port }),
    "invalid peer certificate: UnknownIssuer",
  );
});

Deno.test("a CA with the same name but another key is refused on the signature", async () => {
  const ca = await createCertificateAuthority({ commonName: "Twin CA" });
  const twin = await createCertificateAuthority({ commonName: "Twin CA" });
  const leaf = await issueCertificate(ca, { dnsNames: ["localhost"] });
  await using server = new EchoServer(leaf);
  await assertHandshakeRefused(
    await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [twin.certPem] }),
    "invalid peer certificate: BadSignature",
  );
});

Deno.test("a name outside the subjectAltName is refused, and a wildcard covers one label only", async () => {
  const { ca, leaf } = await sampleCertificates();
  await using server = new EchoServer(leaf);
  const validFor = 'DnsName("localhost"), DnsName("*.demo.test"), IpAddress(127.0.0.1) or IpAddress(0::1)';
  await assertHandshakeRefused(
    await connectAs("example.com", server.port, ca.certPem),
    `invalid peer certificate: certificate not valid for name "example.com"; certificate is only valid for ${validFor}`,
  );
  await assertHandshakeRefused(
    await connectAs("a.b.demo.test", server.port, ca.certPem),
    `invalid peer certificate: certificate not valid for name "a.b.demo.test"; certificate is only valid for ${validFor}`,
  );
});

Deno.test({
  name: "openssl verifies the leaf against the CA and shows the expected extensions",
  ignore: !hasOpenssl,
  async fn() {
    const { ca, leaf } = await sampleCertificates();
    const dir = await Deno.makeTempDir();
    try {
      await writeFiles(dir, { "ca.pem": ca.certPem, "leaf.pem": leaf.certPem });
      assert.deepEqual(
        await run("openssl", [
          "verify",
          "-x509_strict",
          "-purpose",
          "sslserver",
          "-CAfile",
          "ca.pem",
          "-verify_hostname",
          "app.demo.test",
          "-verify_ip",
          "127.0.0.1",
          "leaf.pem",
        ], dir),
        { code: 0, stdout: "leaf.pem: OK\n", stderr: "" },
      );
      const wrongName = await run("openssl", [
        "verify",
        "-CAfile",
        "ca.pem",
        "-verify_hostname",
        "x.org",
        "leaf.pem",
      ], dir);
      assert.equal(wrongName.code, 2);
      assert.match(wrongName.stderr, /^error 62 at 0 depth lookup: hostname mismatch$/m);

      const extensions = "basicConstraints,keyUsage,extendedKeyUsage,subjectAltName,authorityKeyIdentifier," +
        "subjectKeyIdentifier";
      const caText = await run("openssl", ["x509", "-in", "ca.pem", "-noout", "-ext", extensions], dir);
      assert.equal(
        caText.stdout,
        [
          "X509v3 Basic Constraints: critical",
          "    CA:TRUE, pathlen:0",
          "X509v3 Key Usage: critical",
          "    Certificate Sign, CRL Sign",
          "X509v3 Subject Key Identifier: ",
          `    ${colonHex(ca.keyIdentifier)}`,
          "",
        ].join("\n"),
      );
      const leafText = await run("openssl", ["x509", "-in", "leaf.pem", "-noout", "-ext", extensions], dir);
      assert.equal(
        leafText.stdout,
        [
          "X509v3 Basic Constraints: critical",
          "    CA:FALSE",
          "X509v3 Key Usage: critical",
          "    Digital Signature",
          "X509v3 Extended Key Usage: ",
          "    TLS Web Server Authentication, TLS Web Client Authentication",
          "X509v3 Subject Alternative Name: ",
          "    DNS:localhost, DNS:*.demo.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
          "X509v3 Authority Key Identifier: ",
          `    ${colonHex(ca.keyIdentifier)}`,
          "X509v3 Subject Key Identifier: ",
          `    ${colonHex(await keyIdentifierOfKey(leaf.keyPem))}`,
          "",
        ].join("\n"),
      );
      const subjects = await run(
        "openssl",
        ["x509", "-in", "leaf.pem", "-noout", "-subject", "-issuer"],
        dir,
      );
      assert.match(
        subjects.stdout,
        /^subject=CN = localhost\nissuer=CN = Nexus Proxy development CA [0-9a-f]{8}\n$/,
      );
      const serial = await run("openssl", ["x509", "-in", "leaf.pem", "-noout", "-serial"], dir);
      assert.match(serial.stdout, /^serial=[4-7][0-9A-F]{31}\n$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "validity starts an hour back and lasts 30 days for a leaf, 365 for a CA, never past the CA's end",
  ignore: !hasOpenssl,
  async fn() {
    const before = Math.floor(Date.now() / 1000);
    const ca = await createCertificateAuthority();
    const leaf = await issueCertificate(ca, { dnsNames: ["localhost"] });
    const shortCa = await createCertificateAuthority({ validDays: 2 });
    const cappedLeaf = await issueCertificate(shortCa, { dnsNames: ["localhost"], validDays: 10 });
    const after = Math.floor(Date.now() / 1000);
    const dir = await Deno.makeTempDir();
    try {
      await writeFiles(dir, {
        "ca.pem": ca.certPem,
        "leaf.pem": leaf.certPem,
        "short-ca.pem": shortCa.certPem,
        "capped.pem": cappedLeaf.certPem,
      });
      const caDates = await datesOf(join(dir, "ca.pem"));
      assert.ok(caDates.notBefore >= before - HOUR_S && caDates.notBefore <= after - HOUR_S);
      assert.equal(caDates.notAfter - caDates.notBefore, 365 * DAY_S + HOUR_S);
      assert.equal(caDates.notAfter * 1000, ca.notAfter.getTime());
      const leafDates = await datesOf(join(dir, "leaf.pem"));
      assert.ok(leafDates.notBefore >= before - HOUR_S && leafDates.notBefore <= after - HOUR_S);
      assert.equal(leafDates.notAfter - leafDates.notBefore, 30 * DAY_S + HOUR_S);
      assert.equal((await datesOf(join(dir, "capped.pem"))).notAfter * 1000, shortCa.notAfter.getTime());
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "curl trusting the CA fetches the body from Deno.serve with the leaf",
  ignore: !hasCurl,
  async fn() {
    const { ca, leaf } = await sampleCertificates();
    const dir = await Deno.makeTempDir();
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert: leaf.certPem, key: leaf.keyPem, onListen() {} },
      () => new Response("hello from app.demo.test\n"),
    );
    try {
      await writeFiles(dir, { "ca.pem": ca.certPem });
      const port = server.addr.port;
      const url = `https://app.demo.test:${port}/`;
      const resolve = `app.demo.test:${port}:127.0.0.1`;
      assert.deepEqual(
        await run("curl", ["--silent", "--show-error", "--cacert", "ca.pem", "--resolve", resolve, url], dir),
        { code: 0, stdout: "hello from app.demo.test\n", stderr: "" },
      );
      // Without the CA, curl's own trust store does not know it: exit code 60 is a peer certificate problem.
      const untrusted = await run("curl", ["--silent", "--resolve", resolve, url], dir);
      assert.equal(untrusted.code, 60);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a CA loaded back from its PEMs issues leaves that verify against the original CA certificate", async () => {
  const ca = await createCertificateAuthority({ commonName: "Reloaded CA" });
  const loaded = await loadCertificateAuthority(ca.certPem, ca.keyPem);
  assert.deepEqual(loaded.subjectDer, ca.subjectDer);
  assert.deepEqual(loaded.keyIdentifier, ca.keyIdentifier);
  assert.equal(loaded.notAfter.getTime(), ca.notAfter.getTime());
  assert.equal(loaded.certPem, ca.certPem);
  assert.equal(loaded.keyPem, ca.keyPem);
  const leaf = await issueCertificate(loaded, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  await using server = new EchoServer(leaf);
  const conn = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [ca.certPem] });
  assert.equal(await pingOver(conn), "ping");
  if (hasOpenssl) {
    const dir = await Deno.makeTempDir();
    try {
      await writeFiles(dir, { "ca.pem": ca.certPem, "leaf.pem": leaf.certPem });
      assert.deepEqual(
        await run("openssl", ["verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"], dir),
        { code: 0, stdout: "leaf.pem: OK\n", stderr: "" },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test({
  name: "a CA made by openssl loads and issues leaves that rustls accepts",
  ignore: !hasOpenssl,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const made = await run("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=openssl CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
      ], dir);
      assert.equal(made.code, 0, made.stderr);
      const caCertPem = await Deno.readTextFile(join(dir, "ca.pem"));
      const ca = await loadCertificateAuthority(caCertPem, await Deno.readTextFile(join(dir, "ca-key.pem")));
      const leaf = await issueCertificate(ca, { dnsNames: ["localhost"] });
      await using server = new EchoServer(leaf);
      const conn = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [caCertPem] });
      assert.equal(await pingOver(conn), "ping");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("loading a CA refuses a key of another CA, a leaf as CA, a SEC1 key and a non-PEM text", async () => {
  const { ca, leaf } = await sampleCertificates();
  const otherCa = await createCertificateAuthority();
  await assert.rejects(
    loadCertificateAuthority(ca.certPem, otherCa.keyPem),
    new TypeError("The CA key does not match the CA certificate's public key"),
  );
  await assert.rejects(
    loadCertificateAuthority(leaf.certPem, leaf.keyPem),
    new TypeError("The CA certificate is not a CA: expected basicConstraints with CA:TRUE"),
  );
  await assert.rejects(
    loadCertificateAuthority(ca.certPem, ca.keyPem.replaceAll("PRIVATE KEY", "EC PRIVATE KEY")),
    new TypeError(
      'The CA key is a SEC1 "EC PRIVATE KEY": expected PKCS#8 "PRIVATE KEY" (convert with `openssl pkcs8 -topk8 -nocrypt`)',
    ),
  );
  await assert.rejects(
    loadCertificateAuthority("not a certificate", ca.keyPem),
    new TypeError('Invalid PEM: expected a "CERTIFICATE" block'),
  );
});

Deno.test("issuing refuses an expired CA, IP addresses given as DNS names, bad addresses and no names", async () => {
  const { ca } = await sampleCertificates();
  const expired = { ...ca, notAfter: new Date("2020-01-01T00:00:00Z") };
  await assert.rejects(
    issueCertificate(expired, { dnsNames: ["localhost"] }),
    new RangeError("The CA expired on 2020-01-01T00:00:00.000Z: expected a CA still valid; create a new one"),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: ["127.0.0.1"] }),
    new TypeError('Invalid DNS name "127.0.0.1": it is an IP address; pass it in ipAddresses (--ip)'),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: ["*.test"] }),
    new TypeError('Invalid DNS name: "*.test" is not a wildcard of the form *.example.com'),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: [], ipAddresses: ["256.0.0.1"] }),
    new TypeError('Invalid IP address "256.0.0.1": expected IPv4 (127.0.0.1) or IPv6 (::1)'),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: [], ipAddresses: ["1::2::3"] }),
    new TypeError('Invalid IP address "1::2::3": expected IPv4 (127.0.0.1) or IPv6 (::1)'),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: [] }),
    new TypeError("No names given: expected at least one DNS name or IP address"),
  );
  await assert.rejects(
    issueCertificate(ca, { dnsNames: ["localhost"], validDays: 0 }),
    new RangeError("Invalid validDays 0: expected a whole number of days, at least 1"),
  );
});

Deno.test({
  name: "IPv6 addresses in every written form land in the subjectAltName as 16 bytes",
  ignore: !hasOpenssl,
  async fn() {
    const { ca } = await sampleCertificates();
    const leaf = await issueCertificate(ca, {
      dnsNames: [],
      ipAddresses: ["[::1]", "fe80::1:2", "2001:db8:0:0:0:0:0:ff", "::ffff:192.0.2.1", "10.0.0.1"],
    });
    const dir = await Deno.makeTempDir();
    try {
      await writeFiles(dir, { "leaf.pem": leaf.certPem });
      const text = await run("openssl", ["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"], dir);
      assert.equal(
        text.stdout,
        "X509v3 Subject Alternative Name: \n    IP Address:0:0:0:0:0:0:0:1, IP Address:FE80:0:0:0:0:0:1:2, " +
          "IP Address:2001:DB8:0:0:0:0:0:FF, IP Address:0:0:0:0:0:FFFF:C000:201, IP Address:10.0.0.1\n",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the command writes the CA and the leaf with private key modes, then reuses the CA", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = join(dir, "certs");
    const first = await run(Deno.execPath(), [
      "run",
      "--allow-read",
      "--allow-write",
      SCRIPT,
      "--out",
      out,
      "--name",
      "app.demo.test",
      "--name",
      "*.demo.test",
      "--ip",
      "127.0.0.1",
    ]);
    assert.deepEqual(first, {
      code: 0,
      stdout: [
        `Created CA     ${out}/ca.pem (key ${out}/ca-key.pem)`,
        `Wrote cert     ${out}/app.demo.test.pem for app.demo.test, *.demo.test, 127.0.0.1`,
        `Wrote key      ${out}/app.demo.test-key.pem`,
        `Trust the CA:  curl --cacert ${out}/ca.pem https://app.demo.test/`,
        "",
      ].join("\n"),
      stderr: "",
    });
    const modes = async (names: string[]) =>
      await Promise.all(names.map(async (name) => ((await Deno.stat(join(out, name))).mode ?? 0) & 0o777));
    assert.deepEqual(
      await modes(["ca.pem", "ca-key.pem", "app.demo.test.pem", "app.demo.test-key.pem"]),
      [0o644, 0o600, 0o644, 0o600],
    );
    const caPem = await Deno.readTextFile(join(out, "ca.pem"));

    const second = await run(Deno.execPath(), [
      "run",
      "--allow-read",
      "--allow-write",
      SCRIPT,
      "--out",
      out,
      "--name",
      "*.Demo.test",
    ]);
    assert.deepEqual(second, {
      code: 0,
      stdout: [
        `Reused CA      ${out}/ca.pem (key ${out}/ca-key.pem)`,
        `Wrote cert     ${out}/_wildcard.demo.test.pem for *.demo.test`,
        `Wrote key      ${out}/_wildcard.demo.test-key.pem`,
        `Trust the CA:  curl --cacert ${out}/ca.pem https://app.demo.test/`,
        "",
      ].join("\n"),
      stderr: "",
    });
    assert.equal(await Deno.readTextFile(join(out, "ca.pem")), caPem);
    assert.deepEqual(await modes(["_wildcard.demo.test-key.pem"]), [0o600]);

    // The reused CA really signed the new leaf: a TLS client trusting the first run's ca.pem accepts it.
    const wildcard = {
      certPem: await Deno.readTextFile(join(out, "_wildcard.demo.test.pem")),
      keyPem: await Deno.readTextFile(join(out, "_wildcard.demo.test-key.pem")),
    };
    await using server = new EchoServer(wildcard);
    assert.equal(await pingOver(await connectAs("api.demo.test", server.port, caPem)), "ping");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the command refuses half a CA instead of overwriting it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "ca.pem"), "kept");
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-read",
      "--allow-write",
      SCRIPT,
      "--out",
      dir,
      "--name",
      "localhost",
    ]);
    assert.deepEqual(result, {
      code: 1,
      stdout: "",
      stderr:
        `dev_certs: Found ${dir}/ca.pem but not ${dir}/ca-key.pem: restore it, or delete ${dir}/ca.pem ` +
        "to create a new CA\n",
    });
    assert.equal(await Deno.readTextFile(join(dir, "ca.pem")), "kept");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the command exits 2 with a one-line error and the usage on bad flags, 0 with the usage on --help", async () => {
  const script = ["run", "--allow-read", "--allow-write", SCRIPT];
  const help = await run(Deno.execPath(), [...script, "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: deno run --allow-read --allow-write scripts\/dev_certs\.ts --out DIR/);
  assert.equal(help.stderr, "");

  const cases: [string[], string][] = [
    [["--out", "x", "--name", "a.test", "--bogus"], "dev_certs: Unknown option '--bogus'"],
    [["--name", "a.test"], "dev_certs: Missing --out DIR"],
    [["--out", "x"], "dev_certs: Missing --name NAME: expected at least one DNS name"],
    [
      ["--out", "x", "--name", "a.test", "extra"],
      "dev_certs: Unexpected argument 'extra'. This command does not take positional arguments",
    ],
    [
      ["--out", "x", "--name", "a.test", "--ip", "localhost"],
      'dev_certs: Invalid IP address "localhost": expected IPv4 (127.0.0.1) or IPv6 (::1)',
    ],
  ];
  for (const [args, firstLine] of cases) {
    const result = await run(Deno.execPath(), [...script, ...args]);
    assert.equal(result.code, 2, args.join(" "));
    assert.equal(result.stdout, "");
    const [line, ...usage] = result.stderr.split("\n");
    assert.equal(line, firstLine);
    assert.equal(usage.join("\n"), `${help.stdout}`);
  }
});
