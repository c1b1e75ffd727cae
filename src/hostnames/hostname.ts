/**
 * Hostname normalisation shared by the SNI and Host routing, the backends' claims and the route table.
 *
 * Rules (docs/protocol.md §8.1): trim ASCII space and tab, drop one trailing dot, lower-case. Names on the
 * wire are ASCII (A-labels): anything else, and IP literals, are refused rather than guessed at, so a route key
 * is always a plain ASCII DNS name.
 *
 * @module
 */

/** Longest name DNS allows (RFC 1035 §2.3.4), without the trailing dot. */
const MAX_HOSTNAME_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;
// Letters, digits, hyphen; underscore too, because real service names (`_acme-challenge`, SRV-style) use it.
const LABEL_PATTERN = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;
// Only the optional whitespace of RFC 9110 §5.6.3 (SP, HTAB): String.prototype.trim() would also strip NBSP and
// the other Unicode spaces, so "\u00a0app.example.com" would route as the bare name a backend never sees.
const OWS_AROUND = /^[ \t]+|[ \t]+$/g;
// Checked before lower-casing: toLowerCase() maps some non-ASCII letters to ASCII (KELVIN SIGN U+212A to "k").
const ASCII_NAME_CHARACTERS = /^[A-Za-z0-9_.-]*$/;

/** `raw` without the ASCII spaces and tabs around it (and nothing else). */
export function trimOws(raw: string): string {
  return raw.replace(OWS_AROUND, "");
}

/**
 * Normalises a hostname for routing, or returns `null` when it cannot be a DNS name.
 *
 * @example
 * ```ts
 * import { normalizeHostname } from "./hostname.ts";
 * normalizeHostname(" Example.COM. "); // "example.com"
 * normalizeHostname("bad name"); // null
 * normalizeHostname("\u00a0example.com"); // null: only ASCII space and tab are trimmed
 * ```
 */
export function normalizeHostname(raw: string): string | null {
  let name = trimOws(raw);
  if (!ASCII_NAME_CHARACTERS.test(name)) return null;
  name = name.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (name.length === 0 || name.length > MAX_HOSTNAME_LENGTH) return null;
  const labels = name.split(".");
  for (const label of labels) {
    if (label.length > MAX_LABEL_LENGTH || !LABEL_PATTERN.test(label)) return null;
  }
  // An all-numeric last label is an IPv4 literal, never a name (RFC 3696 §2): no backend can claim it.
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return null;
  return name;
}

/** A backend's claim on a name: one exact name, or every name one label below a suffix (`*.example.com`). */
export type HostnameClaim =
  | { readonly kind: "exact"; readonly name: string }
  | { readonly kind: "wildcard"; readonly suffix: string };

/**
 * Parses a claimed hostname (`app.example.com` or `*.example.com`), or explains why it is not one.
 *
 * A wildcard covers exactly one label and needs at least two labels after it, so `*.com` is refused.
 *
 * @example
 * ```ts
 * import { parseHostnameClaim } from "./hostname.ts";
 * parseHostnameClaim("*.Example.com"); // { kind: "wildcard", suffix: "example.com" }
 * ```
 */
export function parseHostnameClaim(
  raw: string,
): HostnameClaim | { readonly kind: "invalid"; readonly reason: string } {
  const trimmed = trimOws(raw);
  if (/^(tcp|udp):/i.test(trimmed)) {
    return { kind: "invalid", reason: `"${raw}" is a port claim; this node routes by hostname only` };
  }
  if (trimmed.startsWith("*.")) {
    const suffix = normalizeHostname(trimmed.slice(2));
    if (suffix === null || !suffix.includes(".")) {
      return { kind: "invalid", reason: `"${raw}" is not a wildcard of the form *.example.com` };
    }
    return { kind: "wildcard", suffix };
  }
  const name = normalizeHostname(trimmed);
  if (name === null) return { kind: "invalid", reason: `"${raw}" is not a valid hostname` };
  return { kind: "exact", name };
}

/** The key under which a claim is stored and announced: the name itself, or `*.` plus the suffix. */
export function claimKey(claim: HostnameClaim): string {
  return claim.kind === "exact" ? claim.name : `*.${claim.suffix}`;
}

/** The wildcard suffix that could serve `name` (`a.example.com` → `example.com`), or null for a single label. */
export function wildcardSuffixOf(name: string): string | null {
  const dot = name.indexOf(".");
  return dot < 0 ? null : name.slice(dot + 1);
}
