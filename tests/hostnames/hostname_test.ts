/**
 * Hostname normalisation (docs/protocol.md §8.1): only ASCII space and tab around a name are trimmed (the OWS
 * of RFC 9110 §5.6.3); every other space, and every non-ASCII character, makes the name invalid, so a name
 * that is not exactly what a backend claimed can never route as if it were.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { normalizeHostname, parseHostnameClaim, trimOws } from "../../src/hostnames/hostname.ts";

/** What String.prototype.trim() strips (ECMA-262 WhiteSpace and LineTerminator) besides SP and HTAB. */
const NON_OWS_SPACES = [
  "\n",
  "\v",
  "\f",
  "\r",
  "\u00a0",
  "\u1680",
  ..."\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a",
  "\u2028",
  "\u2029",
  "\u202f",
  "\u205f",
  "\u3000",
  "\ufeff",
];

const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?$/);
/** A valid lower-case name of 2 to 4 labels whose last label is not all digits. */
const validName = fc
  .tuple(fc.array(label, { minLength: 1, maxLength: 3 }), fc.stringMatching(/^[a-z][a-z0-9]{0,9}$/))
  .map(([labels, top]) => [...labels, top].join("."));
const ows = fc.string({ unit: fc.constantFrom(" ", "\t"), maxLength: 4 });
const nonOwsSpace = fc.constantFrom(...NON_OWS_SPACES);

Deno.test("the spaces trim() strips besides SP and HTAB are really stripped by trim()", () => {
  // Guards the list above: each one is a character the old trim()-based code let through.
  for (const space of NON_OWS_SPACES) assert.equal(`${space}a${space}`.trim(), "a", JSON.stringify(space));
});

Deno.test("property: ASCII space and tab around a name are trimmed, and case and one trailing dot dropped", () => {
  fc.assert(
    fc.property(validName, ows, ows, fc.boolean(), fc.boolean(), (name, before, after, dot, upper) => {
      const written = upper ? name.toUpperCase() : name;
      assert.equal(normalizeHostname(`${before}${written}${dot ? "." : ""}${after}`), name);
    }),
  );
});

Deno.test("property: any other space before, after or inside a name makes it invalid", () => {
  fc.assert(
    fc.property(validName, nonOwsSpace, fc.nat(), ows, (name, space, at, padding) => {
      const position = at % (name.length + 1);
      const spaced = `${name.slice(0, position)}${space}${name.slice(position)}`;
      assert.equal(normalizeHostname(`${padding}${spaced}${padding}`), null, JSON.stringify(spaced));
      assert.equal(parseHostnameClaim(spaced).kind, "invalid", JSON.stringify(spaced));
      assert.equal(parseHostnameClaim(`*.${spaced}`).kind, "invalid", JSON.stringify(spaced));
    }),
  );
});

Deno.test("property: a name with any non-ASCII character is invalid, even one that lower-cases to ASCII", () => {
  // KELVIN SIGN lower-cases to "k" and LATIN CAPITAL I WITH DOT to "i" plus a combining dot.
  assert.equal("\u212a".toLowerCase(), "k");
  assert.equal(normalizeHostname("\u212aube.example.com"), null);
  assert.equal(normalizeHostname("\u0130nfo.example.com"), null);
  fc.assert(
    fc.property(
      validName,
      fc.integer({ min: 0x80, max: 0x10ffff }).filter((code) => code < 0xd800 || code > 0xdfff),
      fc.nat(),
      (name, code, at) => {
        const position = at % (name.length + 1);
        const text = `${name.slice(0, position)}${String.fromCodePoint(code)}${name.slice(position)}`;
        assert.equal(normalizeHostname(text), null, JSON.stringify(text));
      },
    ),
  );
});

Deno.test("property: over any string, a result is a lower-case ASCII name that normalises to itself", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: "binary", maxLength: 80 }), validName),
      (raw) => {
        const name = normalizeHostname(raw);
        if (name === null) return;
        assert.match(name, /^[a-z0-9_.-]{1,253}$/);
        assert.equal(normalizeHostname(name), name);
        // Nothing but SP and HTAB was removed from the ends, besides one trailing dot.
        assert.equal(trimOws(raw).toLowerCase().replace(/\.$/, ""), name);
      },
    ),
  );
});

Deno.test("trimOws removes ASCII space and tab at both ends only", () => {
  assert.equal(trimOws(" \t a b \t "), "a b");
  assert.equal(trimOws("\u00a0a\u00a0"), "\u00a0a\u00a0");
  assert.equal(trimOws("\r\na"), "\r\na");
});
