/**
 * Where a name goes: to a backend connected to this node, else to a peer node that announced it (§6.4: local
 * first, one hop only). Pure bookkeeping over two {@linkcode RouteTable}s.
 *
 * @module
 */

import { claimKey, type HostnameClaim, parseHostnameClaim } from "../hostnames/hostname.ts";
import type { StreamOpenInfo } from "../protocol/frames.ts";
import type { Duplex } from "../stream/duplex.ts";
import { RouteTable } from "./route_table.ts";

/** Anything a route can end at: a backend session or a peer link. */
export interface Upstream {
  readonly label: string;
  /** False while at its stream limit or closing; the balancer skips it. */
  readonly acceptsStreams: boolean;
  /** A new stream for one client, or null when it cannot take one after all (the client is refused). */
  openStream(info: StreamOpenInfo): Duplex | null;
}

/** Whether a route ends at this node's backends or at a peer. */
export type RouteKind = "local" | "peer";

/** Backends and peers by the names they serve. */
export class Router<U extends Upstream> {
  readonly #local = new RouteTable<U>();
  readonly #peers = new RouteTable<U>();
  /** What each backend claimed and each peer announced, so that removing one needs only the member. */
  readonly #localClaims = new Map<U, readonly HostnameClaim[]>();
  readonly #peerRoutes = new Map<U, HostnameClaim[]>();
  readonly #reserved = new Set<string>();
  readonly #onLocalChange: () => void;

  /** @param onLocalChange called whenever the set of locally served names may have changed (mesh announces). */
  constructor(onLocalChange: () => void = () => {}) {
    this.#onLocalChange = onLocalChange;
  }

  /**
   * Reserves a name for the node itself (its hub's name, whose ACME challenges it answers): no backend or peer
   * is ever picked for it, not even through a wildcard.
   */
  reserve(hostname: string): void {
    this.#reserved.add(hostname);
  }

  /** Whether a name is reserved for the node itself. */
  isReserved(hostname: string): boolean {
    return this.#reserved.has(hostname);
  }

  /** Adds a backend under its claims (adding it again replaces what it claimed). */
  addBackend(backend: U, claims: readonly HostnameClaim[], weight: number): void {
    this.#dropClaims(backend);
    for (const claim of claims) this.#local.add(claim, backend, weight);
    this.#localClaims.set(backend, claims);
    this.#onLocalChange();
  }

  /** Removes a backend from everything it claimed. */
  removeBackend(backend: U): void {
    if (!this.#localClaims.has(backend)) return;
    this.#dropClaims(backend);
    this.#onLocalChange();
  }

  #dropClaims(backend: U): void {
    for (const claim of this.#localClaims.get(backend) ?? []) this.#local.remove(claim, backend);
    this.#localClaims.delete(backend);
  }

  /** Replaces the names a peer serves (a full announcement, §6.3); invalid keys are returned, not stored. */
  setPeerRoutes(peer: U, routeKeys: readonly string[]): string[] {
    this.removePeer(peer);
    const claims: HostnameClaim[] = [];
    const rejected: string[] = [];
    for (const key of routeKeys) {
      const claim = parseHostnameClaim(key);
      if (claim.kind === "invalid") rejected.push(key);
      else claims.push(claim);
    }
    for (const claim of claims) this.#peers.add(claim, peer, 1);
    this.#peerRoutes.set(peer, claims);
    return rejected;
  }

  /** Forgets everything a peer announced (its link went down, §6.2). */
  removePeer(peer: U): void {
    for (const claim of this.#peerRoutes.get(peer) ?? []) this.#peers.remove(claim, peer);
    this.#peerRoutes.delete(peer);
  }

  /**
   * Picks where a name goes. `localOnly` serves tunnels arriving from peers, which are never forwarded again,
   * so routing loops cannot form.
   */
  route(hostname: string, options?: { localOnly?: boolean }): { kind: RouteKind; upstream: U } | undefined {
    if (this.#reserved.has(hostname)) return undefined;
    const accepts = (upstream: U) => upstream.acceptsStreams;
    const local = this.#local.pick(hostname, accepts);
    if (local !== undefined) return { kind: "local", upstream: local };
    if (options?.localOnly) return undefined;
    const peer = this.#peers.pick(hostname, accepts);
    return peer === undefined ? undefined : { kind: "peer", upstream: peer };
  }

  /**
   * Whether some backend or peer serves this name, whether or not it accepts streams right now: when
   * {@linkcode route} finds none, this tells "all full" from "nobody".
   */
  serves(hostname: string): boolean {
    if (this.#reserved.has(hostname)) return false;
    return this.#local.has(hostname) || this.#peers.has(hostname);
  }

  /** Whether some backend or peer claims exactly this name (ECH routing needs an exact claim). */
  hasExactRoute(hostname: string): boolean {
    if (this.#reserved.has(hostname)) return false;
    return this.#local.hasExact(hostname) || this.#peers.hasExact(hostname);
  }

  /** The names this node's own backends serve, as announced to peers. */
  localRouteKeys(): string[] {
    return this.#local.keys();
  }

  /** Route keys of one peer, for status output. */
  peerRouteKeys(peer: U): string[] {
    return (this.#peerRoutes.get(peer) ?? []).map(claimKey);
  }
}
