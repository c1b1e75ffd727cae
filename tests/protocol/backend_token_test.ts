/**
 * Backend tokens (docs/protocol.md §4.3): the exact verdict for each kind of bad token, and over arbitrary
 * strings and arbitrary claim payloads signed with the right key, never a throw and never `ok` with claims
 * that break the rules.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseHostnameClaim } from "../../src/hostnames/hostname.ts";
import {
  MAX_WEIGHT,
  signBackendToken,
  type TokenVerdict,
  verifyBackendToken,
} from "../../src/protocol/backend_token.ts";

const SECRET = new TextEncoder().encode("test-backends-secret-0123456789");
const OTHER_SECRET = new TextEncoder().encode("another-backends-secret-98765");
const encoder = new TextEncoder();
const BASE64URL = { alphabet: "base64url", omitPadding: true } as const;
const HASHES = { HS256: "SHA-256", HS384: "SHA-384", HS512: "SHA-512" } as const;

function b64(value: unknown): string {
  return encoder.encode(typeof value === "string" ? value : JSON.stringify(value)).toBase64(BASE64URL);
}

/** A JWT built by hand, so a test can put anything in its header and payload; signed with HMAC. */
async function rawToken(
  payload: unknown,
  options: { alg?: keyof typeof HASHES; header?: Record<string, unknown>; secret?: Uint8Array } = {},
): Promise<string> {
  const alg = options.alg ?? "HS256";
  const input = `${b64({ alg, typ: "JWT", ...options.header })}.${b64(payload)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    (options.secret ?? SECRET) as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: HASHES[alg] },
    false,
    ["sign"],
  );
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(input)));
  return `${input}.${signature.toBase64(BASE64URL)}`;
}

const now = () => Math.floor(Date.now() / 1000);
/** A payload the hub accepts; cases change one thing. */
const good = () => ({
  iss: "authorizer",
  aud: "nexus",
  sub: "app-1",
  hostnames: ["app.example.com"],
  exp: now() + 60,
});

function refused(reason: string): TokenVerdict {
  return { ok: false, reason };
}

Deno.test("tokens signed by signBackendToken, and HS384/HS512 ones, are accepted with their claims", async () => {
  const token = await signBackendToken({
    secret: SECRET,
    name: "app-1",
    hostnames: ["App.Example.com.", "*.preview.example.com", "app.example.com"],
    weight: 5,
    sessionNonce: "n0nce",
  });
  assert.deepEqual(await verifyBackendToken(token, SECRET), {
    ok: true,
    claims: {
      name: "app-1",
      hostnames: [
        { kind: "exact", name: "app.example.com" },
        { kind: "wildcard", suffix: "preview.example.com" },
      ],
      weight: 5,
      weightClaimed: true,
      sessionNonce: "n0nce",
      ignoredPortClaims: false,
    },
  });
  for (const alg of ["HS384", "HS512"] as const) {
    const verdict = await verifyBackendToken(await rawToken(good(), { alg }), SECRET);
    assert.equal(verdict.ok, true, alg);
  }
  // Surrounding whitespace (a token read from a file or a command) is not part of the token.
  assert.equal((await verifyBackendToken(` ${await rawToken(good())}\n`, SECRET)).ok, true);
});

Deno.test("each bad token gets its exact reason; permanent ones say authentication failed or forbidden", async () => {
  const cases: Array<[string, string | Promise<string>, TokenVerdict]> = [
    [
      "wrong secret",
      rawToken(good(), { secret: OTHER_SECRET }),
      refused(
        "authentication failed: token signature does not match the backends secret",
      ),
    ],
    [
      "alg none",
      `${b64({ alg: "none" })}.${b64(good())}.`,
      refused(
        "authentication failed: token must be signed with HS256, HS384 or HS512",
      ),
    ],
    [
      "alg RS256",
      rawToken(good(), { header: { alg: "RS256" } }),
      refused(
        "authentication failed: token must be signed with HS256, HS384 or HS512",
      ),
    ],
    ["expired", rawToken({ ...good(), exp: now() - 60 }), refused("token expired")],
    ["not yet valid", rawToken({ ...good(), nbf: now() + 600 }), refused("token not yet valid")],
    [
      "malformed nbf",
      rawToken({ ...good(), nbf: "tomorrow" }),
      refused(
        "authentication failed: token claim nbf rejected",
      ),
    ],
    [
      "malformed exp",
      rawToken({ ...good(), exp: "soon" }),
      refused(
        "authentication failed: token claim exp rejected",
      ),
    ],
    [
      "wrong issuer",
      rawToken({ ...good(), iss: "someone" }),
      refused(
        'authentication failed: token issuer must be "authorizer"',
      ),
    ],
    [
      "no issuer",
      rawToken({ ...good(), iss: undefined }),
      refused(
        'authentication failed: token issuer must be "authorizer"',
      ),
    ],
    [
      "wrong audience",
      rawToken({ ...good(), aud: ["other"] }),
      refused(
        'authentication failed: token audience must include "nexus"',
      ),
    ],
    [
      "no audience",
      rawToken({ ...good(), aud: undefined }),
      refused(
        'authentication failed: token audience must include "nexus"',
      ),
    ],
    ["empty string", "", refused("authentication failed: not a well-formed JWT")],
    ["three dots", "..", refused("authentication failed: not a well-formed JWT")],
    ["not base64", "a!.b!.c!", refused("authentication failed: not a well-formed JWT")],
    [
      "header not JSON",
      `${b64("nope")}.${b64(good())}.x`,
      refused("authentication failed: not a well-formed JWT"),
    ],
    ["payload an array", rawToken([1, 2]), refused("authentication failed: not a well-formed JWT")],
    [
      "critical header",
      rawToken(good(), { header: { crit: ["x"], x: 1 } }),
      refused(
        "authentication failed: not a well-formed JWT",
      ),
    ],
    [
      "hostnames not a list",
      rawToken({ ...good(), hostnames: "app.example.com" }),
      refused(
        "forbidden: hostnames claim must be a list of names",
      ),
    ],
    [
      "hostnames with a number",
      rawToken({ ...good(), hostnames: ["a.example.com", 7] }),
      refused(
        "forbidden: hostnames claim must be a list of names",
      ),
    ],
    ["no hostnames", rawToken({ ...good(), hostnames: [] }), refused("forbidden: token claims no hostnames")],
    [
      "only ports",
      rawToken({ ...good(), hostnames: undefined, tcp_ports: [22] }),
      refused(
        "forbidden: token claims only ports; this node routes by hostname",
      ),
    ],
    [
      "weight too big",
      rawToken({ ...good(), weight: MAX_WEIGHT + 1 }),
      refused(
        `forbidden: weight must be an integer up to ${MAX_WEIGHT}`,
      ),
    ],
    [
      "weight fractional",
      rawToken({ ...good(), weight: 1.5 }),
      refused(
        `forbidden: weight must be an integer up to ${MAX_WEIGHT}`,
      ),
    ],
    [
      "weight a string",
      rawToken({ ...good(), weight: "3" }),
      refused(
        `forbidden: weight must be an integer up to ${MAX_WEIGHT}`,
      ),
    ],
    [
      "nonce a number",
      rawToken({ ...good(), session_nonce: 5 }),
      refused(
        "forbidden: session_nonce must be a string",
      ),
    ],
  ];
  for (const [name, token, expected] of cases) {
    assert.deepEqual(await verifyBackendToken(await token, SECRET), expected, name);
  }
  for (const bad of ["192.168.1.1", "bad name.example.com", "*.com", "tcp:22"]) {
    const verdict = await verifyBackendToken(await rawToken({ ...good(), hostnames: [bad] }), SECRET);
    assert.equal(verdict.ok, false, bad);
    if (!verdict.ok) assert.match(verdict.reason, /^forbidden: /, bad);
  }
});

Deno.test("a weight of zero or less reads as 1, unclaimed (§4.3); a long subject is cut to 100 characters", async () => {
  const verdict = await verifyBackendToken(
    await rawToken({ ...good(), weight: -4, sub: "x".repeat(300) }),
    SECRET,
  );
  assert.ok(verdict.ok);
  assert.equal(verdict.claims.weight, 1);
  assert.equal(verdict.claims.weightClaimed, false);
  assert.equal(verdict.claims.name, "x".repeat(100));
});

// ---------------------------------------------------------------------------------------------------------
// Properties

/** What must hold of every accepted token, checked against the payload it came from. */
function assertSound(verdict: TokenVerdict, payload: unknown): void {
  if (!verdict.ok) {
    assert.equal(typeof verdict.reason, "string");
    assert.ok(verdict.reason.length > 0);
    return;
  }
  assert.ok(
    typeof payload === "object" && payload !== null && !Array.isArray(payload),
    "payload is an object",
  );
  const fields = payload as Record<string, unknown>;
  assert.equal(fields.iss, "authorizer");
  const aud = Array.isArray(fields.aud) ? fields.aud : [fields.aud];
  assert.ok(aud.includes("nexus"), "audience includes nexus");
  if (fields.exp !== undefined) {
    assert.ok(typeof fields.exp === "number" && fields.exp > now() - 5, "not expired");
  }
  if (fields.nbf !== undefined) {
    assert.ok(typeof fields.nbf === "number" && fields.nbf <= now() + 5, "valid now");
  }
  const { claims } = verdict;
  assert.ok(claims.hostnames.length > 0, "at least one hostname");
  assert.ok(Array.isArray(fields.hostnames));
  for (const claim of claims.hostnames) assert.notEqual(claim.kind, "invalid");
  for (const raw of fields.hostnames as unknown[]) {
    assert.equal(typeof raw, "string");
    assert.notEqual(parseHostnameClaim(raw as string).kind, "invalid", `accepted an invalid name ${raw}`);
  }
  assert.ok(Number.isInteger(claims.weight) && claims.weight >= 1 && claims.weight <= MAX_WEIGHT);
  assert.equal(claims.weightClaimed, Number.isInteger(fields.weight) && (fields.weight as number) > 0);
  if (claims.weightClaimed) assert.equal(claims.weight, fields.weight);
  assert.equal(typeof claims.name, "string");
  assert.ok(claims.name.length <= 100);
  assert.equal(claims.sessionNonce, fields.session_nonce);
}

Deno.test("property: arbitrary strings never make verification throw and are never accepted", async () => {
  const segment = fc.string({ unit: fc.constantFrom(..."ABCabc019-_+/=.".split("")), maxLength: 60 });
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.string({ maxLength: 300 }),
        fc.string({ unit: "binary", maxLength: 300 }),
        fc.tuple(segment, segment, segment).map((parts) => parts.join(".")),
      ),
      async (text) => {
        const verdict = await verifyBackendToken(text, SECRET);
        assert.equal(verdict.ok, false);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("property: any JSON payload signed with the right key never throws, and is accepted only with valid claims", async () => {
  // Each field is mostly well-formed (else nearly every token is refused and the accepting path goes
  // untested), sometimes any JSON value, sometimes absent.
  const name = fc.oneof(
    { arbitrary: fc.constantFrom("app.example.com", "*.example.com", "Example.COM.", "a.b.c"), weight: 6 },
    { arbitrary: fc.domain(), weight: 3 },
    { arbitrary: fc.constantFrom("*.com", "tcp:22", "10.0.0.1", "", "a..b", "*.*.x.y"), weight: 1 },
    { arbitrary: fc.string({ maxLength: 30 }), weight: 1 },
  );
  const maybe = <T>(value: fc.Arbitrary<T>) =>
    fc.oneof(
      { arbitrary: value, weight: 16 },
      { arbitrary: fc.jsonValue(), weight: 1 },
      { arbitrary: fc.constant(undefined), weight: 1 },
    );
  const claimSet = fc.record(
    {
      iss: maybe(fc.oneof({ arbitrary: fc.constant("authorizer"), weight: 9 }, fc.constant("someone"))),
      aud: maybe(
        fc.oneof(
          { arbitrary: fc.constantFrom<unknown>("nexus", ["x", "nexus"]), weight: 9 },
          fc.constantFrom("other", []),
        ),
      ),
      sub: maybe(fc.string({ maxLength: 200 })),
      exp: maybe(fc.integer({ min: now() - 100, max: now() + 1_000 })),
      nbf: maybe(fc.integer({ min: now() - 1_000, max: now() + 100 })),
      iat: maybe(fc.integer({ min: now() - 1_000, max: now() + 1_000 })),
      hostnames: maybe(fc.array(name, { maxLength: 4 })),
      weight: maybe(fc.integer({ min: -5, max: MAX_WEIGHT + 5 })),
      session_nonce: maybe(fc.string({ maxLength: 50 })),
      tcp_ports: fc.option(fc.array(fc.integer({ min: 0, max: 70_000 }), { maxLength: 3 }), {
        nil: undefined,
      }),
      udp_routes: fc.option(fc.array(fc.jsonValue(), { maxLength: 2 }), { nil: undefined }),
    },
    { requiredKeys: [] },
  );
  let accepted = 0;
  let refusedCount = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof({ arbitrary: claimSet, weight: 4 }, { arbitrary: fc.jsonValue(), weight: 1 }),
      fc.constantFrom("HS256" as const, "HS384" as const, "HS512" as const),
      async (payload, alg) => {
        // JSON round trip: what a signer would actually put on the wire (undefined fields vanish).
        const wire = JSON.parse(JSON.stringify(payload ?? null));
        const verdict = await verifyBackendToken(await rawToken(wire, { alg }), SECRET);
        assertSound(verdict, wire);
        if (verdict.ok) accepted += 1;
        else refusedCount += 1;
      },
    ),
    { numRuns: 600 },
  );
  // The generator reaches the accepting path often enough for the property to mean something.
  assert.ok(accepted >= 10, `only ${accepted} of 600 payloads were accepted`);
  assert.ok(refusedCount >= 10, `only ${refusedCount} of 600 payloads were refused`);
});
