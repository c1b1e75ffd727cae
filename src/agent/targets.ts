/**
 * Where the agent sends each stream: local `host:port` targets chosen by hostname (exact, then single-label
 * wildcard, then `default`) and by whether the client speaks TLS (SNI-routed) or plain HTTP (port 80, where
 * ACME HTTP-01 challenges arrive). Pure.
 *
 * @module
 */

import { parseHostnameClaim, wildcardSuffixOf } from "../hostnames/hostname.ts";
import type { ProxyVersion } from "../proxy_protocol/proxy_header.ts";

/** A local service address. */
export interface Target {
  readonly host: string;
  readonly port: number;
  /** Prepend a PROXY protocol header of this version, carrying the client's address (unset: none). */
  readonly proxyProtocol?: ProxyVersion;
}

/** Targets for one name: TLS streams and plain-HTTP streams may go to different local ports. */
export interface TargetRule {
  readonly tls?: Target;
  readonly http?: Target;
}

/** The key of the catch-all rule. */
export const DEFAULT_TARGET_KEY = "default";

/**
 * Parses `host:port`, `[v6]:port` or `:port` (meaning 127.0.0.1), or explains what is wrong.
 *
 * @example
 * ```ts
 * import { parseTarget } from "./targets.ts";
 * parseTarget("127.0.0.1:8443"); // { host: "127.0.0.1", port: 8443 }
 * ```
 */
export function parseTarget(text: string): Target | string {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s\[\]]*)):([0-9]{1,5})$/.exec(text.trim());
  if (match === null) return `"${text}" is not host:port`;
  const port = Number(match[3]);
  if (port < 1 || port > 65_535) return `port ${port} in "${text}" is out of range 1-65535`;
  return { host: match[1] ?? (match[2] || "127.0.0.1"), port };
}

/** Hostname rules to targets. */
export class TargetMap {
  readonly #exact = new Map<string, TargetRule>();
  readonly #wildcard = new Map<string, TargetRule>();
  readonly #default: TargetRule | undefined;
  /** The rules as given, for {@linkcode toString}. */
  readonly #rules: ReadonlyMap<string, TargetRule>;

  /** @param rules keys are hostnames, `*.suffix` wildcards or `default`; keys must already be valid. */
  constructor(rules: ReadonlyMap<string, TargetRule>) {
    this.#rules = rules;
    let fallback: TargetRule | undefined;
    for (const [key, rule] of rules) {
      if (key === DEFAULT_TARGET_KEY) {
        fallback = rule;
        continue;
      }
      const claim = parseHostnameClaim(key);
      if (claim.kind === "exact") this.#exact.set(claim.name, rule);
      else if (claim.kind === "wildcard") this.#wildcard.set(claim.suffix, rule);
      else throw new RangeError(claim.reason);
    }
    this.#default = fallback;
  }

  /**
   * The rules as text, sorted by key (`app.example.com: tls 127.0.0.1:8443 v2, http 127.0.0.1:8080`): what a
   * reload compares and logs.
   */
  toString(): string {
    const target = (t: Target) => `${t.host}:${t.port}${t.proxyProtocol ? ` v${t.proxyProtocol}` : ""}`;
    return [...this.#rules].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, rule]) =>
      `${key}: ${
        [rule.tls && `tls ${target(rule.tls)}`, rule.http && `http ${target(rule.http)}`].filter(Boolean)
          .join(", ")
      }`
    ).join("; ");
  }

  /** The target for a stream, or undefined when no rule has one for its protocol. */
  resolve(hostname: string, isTls: boolean): Target | undefined {
    const pick = (rule: TargetRule | undefined) => (isTls ? rule?.tls : rule?.http);
    const exact = pick(this.#exact.get(hostname));
    if (exact !== undefined) return exact;
    const suffix = wildcardSuffixOf(hostname);
    const wildcard = suffix === null ? undefined : pick(this.#wildcard.get(suffix));
    return wildcard ?? pick(this.#default);
  }
}
