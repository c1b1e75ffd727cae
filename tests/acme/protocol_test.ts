/**
 * The pure parts of the ACME client on recorded JSON (RFC 8555's own examples and what Pebble sends): problem
 * documents, resources, key authorizations, `Retry-After`, the JWS, the HTTP-01 responder, the CSR and the
 * state directory's files.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { calculateJwkThumbprint, decodeProtectedHeader, flattenedVerify, importJWK } from "jose";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { certificateFacts, createCertificateRequest } from "../../src/acme/certificate.ts";
import { challengeToken, Http01Responder } from "../../src/acme/http01.ts";
import { accountKey, generateAccountKeyPair, signRequest } from "../../src/acme/jws.ts";
import {
  keyAuthorization,
  parseAuthorization,
  parseDirectory,
  parseOrder,
  parseRetryAfter,
} from "../../src/acme/messages.ts";
import {
  AcmeProblemError,
  AcmeProtocolError,
  describeProblem,
  parseProblem,
} from "../../src/acme/problem.ts";
import { AcmeStateDir } from "../../src/acme/state_dir.ts";
import { testCertificates } from "../helpers/certs.ts";

const decoder = new TextDecoder();

Deno.test("a problem document becomes a typed error with its type, detail, status and sub-problems", () => {
  // RFC 8555 §6.7.1's example.
  const problem = parseProblem({
    type: "urn:ietf:params:acme:error:malformed",
    detail: "Some of the identifiers requested were rejected",
    subproblems: [
      {
        type: "urn:ietf:params:acme:error:malformed",
        detail: 'Invalid underscore in DNS name "_example.org"',
        identifier: { type: "dns", value: "_example.org" },
      },
      {
        type: "urn:ietf:params:acme:error:rejectedIdentifier",
        detail: 'This CA will not issue for "example.net"',
        identifier: { type: "dns", value: "example.net" },
      },
    ],
  }, 403);
  assert.equal(
    describeProblem(problem),
    "malformed (403): Some of the identifiers requested were rejected; dns:_example.org: malformed (403): Invalid " +
      'underscore in DNS name "_example.org"; dns:example.net: rejectedIdentifier (403): This CA will not issue ' +
      'for "example.net"',
  );
  const limited = new AcmeProblemError(
    parseProblem({ type: "urn:ietf:params:acme:error:rateLimited", detail: "too many certificates" }, 429),
    "https://ca/new-order",
    3_600_000,
  );
  assert.ok(limited.is("rateLimited"));
  assert.ok(!limited.is("badNonce"));
  assert.equal(limited.retryAfterMs, 3_600_000);
  assert.equal(
    limited.message,
    "the ACME server refused https://ca/new-order: rateLimited (429): too many certificates",
  );
  // A proxy's HTML page is no problem document: the status still says what happened.
  assert.deepEqual(parseProblem("<html>Bad gateway</html>", 502), {
    type: "about:blank",
    detail: "HTTP 502 without a problem document",
    status: 502,
  });
});

Deno.test("resources parse from recorded JSON, and what is not RFC 8555 is refused with what was wrong", () => {
  assert.deepEqual(
    parseDirectory({
      newNonce: "https://example.com/acme/new-nonce",
      newAccount: "https://example.com/acme/new-account",
      newOrder: "https://example.com/acme/new-order",
      revokeCert: "https://example.com/acme/revoke-cert",
      keyChange: "https://example.com/acme/key-change",
      meta: { termsOfService: "https://example.com/acme/terms/2017-5-30", externalAccountRequired: false },
    }),
    {
      newNonce: "https://example.com/acme/new-nonce",
      newAccount: "https://example.com/acme/new-account",
      newOrder: "https://example.com/acme/new-order",
      termsOfService: "https://example.com/acme/terms/2017-5-30",
    },
  );
  assert.deepEqual(
    parseOrder({
      status: "invalid",
      expires: "2016-01-05T14:09:07.99Z",
      identifiers: [{ type: "dns", value: "www.example.org" }],
      authorizations: ["https://example.com/acme/authz/PAniVnsZcis"],
      finalize: "https://example.com/acme/order/TOlocE8rfgo/finalize",
      error: { type: "urn:ietf:params:acme:error:unauthorized", detail: "no", status: 403 },
    }),
    {
      status: "invalid",
      authorizations: ["https://example.com/acme/authz/PAniVnsZcis"],
      finalize: "https://example.com/acme/order/TOlocE8rfgo/finalize",
      error: { type: "urn:ietf:params:acme:error:unauthorized", detail: "no", status: 403 },
    },
  );
  // What Pebble answered for a failed HTTP-01 validation.
  const authorization = parseAuthorization({
    status: "invalid",
    identifier: { type: "dns", value: "localhost" },
    challenges: [{
      type: "http-01",
      url: "https://localhost:14000/chalZ/FYe0xNUjbZ0Jf46_Gls2w9133NszlBaySHGIupsKabU",
      token: "tPTmwxHg1sxcRN8clEOqkVaZu0Zsn4aDrACPtq-uJwY",
      status: "invalid",
      validated: "2026-12-02T00:02:19Z",
      error: {
        type: "urn:ietf:params:acme:error:connection",
        detail: "dial tcp 127.0.0.1:45963: connect: connection refused",
        status: 400,
      },
    }],
    expires: "2026-12-02T01:02:19Z",
  });
  assert.equal(authorization.identifier, "localhost");
  assert.equal(
    describeProblem(authorization.challenges[0].error!),
    "connection (400): dial tcp 127.0.0.1:45963: connect: connection refused",
  );
  for (
    const [bad, message] of [
      [[], "the directory is not a JSON object"],
      [
        { newNonce: "ftp://x", newAccount: "https://a", newOrder: "https://o" },
        "the directory's newNonce is not",
      ],
    ] as const
  ) {
    assert.throws(
      () => parseDirectory(bad),
      (error: Error) => error instanceof AcmeProtocolError && error.message.startsWith(message),
    );
  }
  assert.throws(
    () => parseOrder({ status: "done", authorizations: [], finalize: "https://f" }),
    /status "done" is none of/,
  );
  assert.throws(
    () =>
      parseAuthorization({
        status: "pending",
        identifier: { type: "dns", value: "a.example" },
        challenges: [{ type: "http-01", url: "https://c", status: "pending", token: "../../etc/passwd" }],
      }),
    /token is not base64url/,
  );
});

Deno.test("property: the parsers throw nothing but AcmeProtocolError on arbitrary JSON", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (json) => {
      for (const parse of [parseDirectory, parseOrder, parseAuthorization]) {
        try {
          parse(json);
        } catch (error) {
          assert.ok(error instanceof AcmeProtocolError, String(error));
        }
      }
      parseProblem(json, 400);
    }),
    { numRuns: 1_000 },
  );
});

Deno.test("Retry-After in seconds or as a date; the key authorization is token.thumbprint", () => {
  assert.equal(parseRetryAfter("120", 0), 120_000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", Date.parse("2015-10-21T07:27:00Z")), 60_000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", Date.parse("2016-01-01T00:00:00Z")), 0);
  assert.equal(parseRetryAfter("soon", 0), undefined);
  assert.equal(parseRetryAfter(null, 0), undefined);
  // RFC 8555 §8.1 / RFC 7638 §3.1: the thumbprint of the RFC's example key.
  assert.equal(
    keyAuthorization(
      "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
      "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
    ),
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
  );
});

Deno.test("a request JWS is ES256 over the payload with nonce and url, and jwk before the account or kid after", async () => {
  const key = await accountKey(await generateAccountKeyPair());
  assert.equal(key.thumbprint, await calculateJwkThumbprint(key.publicJwk));
  assert.deepEqual(Object.keys(key.publicJwk).sort(), ["crv", "kty", "x", "y"]);
  const verifyKey = await importJWK(key.publicJwk, "ES256");

  const created = JSON.parse(
    await signRequest(key, { url: "https://ca/new-acct", nonce: "n1" }, { termsOfServiceAgreed: true }),
  );
  assert.deepEqual(decodeProtectedHeader(created), {
    alg: "ES256",
    nonce: "n1",
    url: "https://ca/new-acct",
    jwk: key.publicJwk,
  });
  const verified = await flattenedVerify(created, verifyKey);
  assert.deepEqual(JSON.parse(decoder.decode(verified.payload)), { termsOfServiceAgreed: true });

  const get = JSON.parse(
    await signRequest(key, { url: "https://ca/order/1", nonce: "n2", kid: "https://ca/acct/7" }, undefined),
  );
  assert.deepEqual(decodeProtectedHeader(get), {
    alg: "ES256",
    nonce: "n2",
    url: "https://ca/order/1",
    kid: "https://ca/acct/7",
  });
  assert.equal(get.payload, "", "POST-as-GET has an empty payload");
  await flattenedVerify(get, verifyKey);
});

Deno.test("the HTTP-01 responder answers only its name: the key authorization while in flight, 404 for the rest", () => {
  const token = "tPTmwxHg1sxcRN8clEOqkVaZu0Zsn4aDrACPtq-uJwY";
  const responder = new Http01Responder("hub.example.com");
  const ask = (host: string, target: string, method = "GET") => {
    const answer = responder.answer({ host, method, target });
    return answer === undefined ? undefined : decoder.decode(answer);
  };
  const path = `/.well-known/acme-challenge/${token}`;
  assert.equal(ask("app.example.com", path), undefined, "another name is routed as usual");
  assert.match(ask("hub.example.com", path)!, /^HTTP\/1\.1 404 Not Found\r\n[^]*no ACME challenge in flight/);
  responder.publish(token, `${token}.thumb`);
  const ok = ask("hub.example.com", path)!;
  assert.match(ok, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(ok.endsWith(`\r\n\r\n${token}.thumb`), "the body is exactly the key authorization");
  assert.match(ask("hub.example.com", `http://hub.example.com${path}`)!, /^HTTP\/1\.1 200 OK/);
  assert.match(ask("hub.example.com", path, "POST")!, /^HTTP\/1\.1 404/);
  assert.match(ask("hub.example.com", "/")!, /^HTTP\/1\.1 404[^]*only ACME challenges/);
  responder.withdraw(token);
  assert.match(ask("hub.example.com", path)!, /^HTTP\/1\.1 404/);
  assert.equal(challengeToken("/.well-known/acme-challenge/abc?x=1"), "abc");
  assert.equal(challengeToken("/.well-known/acme-challenge/../x"), null);
  assert.equal(challengeToken("/.well-known/acme-challenge/"), null);
});

Deno.test("the CSR asks for exactly the one name with the new key; a chain's leaf tells its names and validity", async () => {
  const request = await createCertificateRequest("hub.example.com");
  const csr = new x509.Pkcs10CertificateRequest(request.csrDer);
  assert.ok(await csr.verify());
  assert.equal(csr.subject, "CN=hub.example.com");
  const san = csr.extensions.find((extension) => extension instanceof x509.SubjectAlternativeNameExtension);
  assert.ok(san instanceof x509.SubjectAlternativeNameExtension);
  assert.deepEqual(san.names.items.map((name) => [name.type, name.value]), [["dns", "hub.example.com"]]);
  assert.match(request.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);

  const certs = await testCertificates();
  const facts = certificateFacts(certs.service.certPem + certs.ca.certPem);
  assert.deepEqual(facts.dnsNames, ["app.test.nexus", "*.test.nexus", "*.wild.nexus", "localhost"]);
  assert.ok(facts.notBefore < new Date() && facts.notAfter > new Date());
  assert.throws(() => certificateFacts("no pem here"), /holds no PEM certificate/);
});

Deno.test("the state directory keeps the account key and certificates owner-only, and refuses broken files", async () => {
  const path = await Deno.makeTempDir({ prefix: "nexus-acme-state-" });
  try {
    const state = new AcmeStateDir(`${path}/acme/`);
    await state.prepare();
    assert.equal((await Deno.stat(`${path}/acme`)).mode! & 0o777, 0o700);
    assert.equal(await state.loadAccountKey(), undefined);
    assert.equal(await state.loadCertificate("hub.example.com"), undefined);

    const pair = await generateAccountKeyPair();
    await state.saveAccountKey(pair);
    const loaded = await state.loadAccountKey();
    assert.equal((await accountKey(loaded!)).thumbprint, (await accountKey(pair)).thumbprint);
    assert.equal((await Deno.stat(`${path}/acme/account-key.json`)).mode! & 0o777, 0o600);

    const certs = await testCertificates();
    const stored = { certPem: certs.service.certPem + certs.ca.certPem, keyPem: certs.service.keyPem };
    await state.saveCertificate("hub.example.com", stored);
    const back = await state.loadCertificate("hub.example.com");
    assert.equal(back?.keyPem.trim(), stored.keyPem.trim());
    assert.equal(back?.certPem.replace(/\s+/g, ""), stored.certPem.replace(/\s+/g, ""));
    assert.equal((await Deno.stat(state.certificatePath("hub.example.com"))).mode! & 0o777, 0o600);
    // Replaced atomically: no temporary file is left beside it.
    await state.saveCertificate("hub.example.com", stored);
    assert.deepEqual([...Deno.readDirSync(`${path}/acme`)].map((entry) => entry.name).sort(), [
      "account-key.json",
      "hub.example.com.pem",
    ]);

    await Deno.writeTextFile(`${path}/acme/account-key.json`, "{not json");
    await assert.rejects(
      state.loadAccountKey(),
      /account-key\.json holds no ECDSA P-256 private key .*move it away/,
    );
    await Deno.writeTextFile(state.certificatePath("hub.example.com"), certs.ca.certPem);
    await assert.rejects(
      state.loadCertificate("hub.example.com"),
      /does not hold a private key and a certificate chain/,
    );

    await Deno.chmod(`${path}/acme`, 0o500);
    if (Deno.uid() !== 0) {
      await assert.rejects(
        new AcmeStateDir(`${path}/acme`).prepare(),
        /cannot write the ACME state directory/,
      );
    }
  } finally {
    await Deno.chmod(`${path}/acme`, 0o700).catch(() => {});
    await Deno.remove(path, { recursive: true });
  }
});
