/**
 * Connection limits in one primitive: total connections, connections per source, and the pool of connections
 * still in the handshake phase (accepted, first bytes not yet read), shared out between sources so that a
 * trickle of slow handshakes from a few addresses never locks everyone else out. It knows nothing of sockets:
 * the relay's listeners and the hub's use it alike.
 *
 * A source is what one client is assumed to control ({@linkcode sourcePrefix}): an IPv4 address or an IPv6
 * /64. The rules, for a newcomer from source `s` holding `h(s)` handshakes:
 *
 * 1. Over `maxConnections`, or `s` over `maxConnectionsPerIp`: refused (those limits bound every open
 *    connection, not only handshakes).
 * 2. Otherwise it is always admitted into the handshake pool; when there is no room, the room is made by
 *    shedding one handshake, always the oldest of the source it is taken from (handshakes end within an RTT
 *    for real clients, so the oldest are the slowest):
 *    - `s` already holds `maxHandshakesPerIp`: its own oldest handshake. A source never holds more than its
 *      share, and a client behind the same address as a slow one still gets in.
 *    - the pool holds `maxHandshakes` and some source holds more than `h(s)`: the oldest handshake of the
 *      source holding the most (of those tied, the one whose oldest handshake is oldest). Newcomers from
 *      light sources take slots from heavy ones, so the pool stays shared out evenly among the sources that
 *      want it; when every source holds one, the oldest handshake of all goes.
 *    - the pool is full and `s` is itself among those holding the most: its own oldest handshake.
 *
 * So a handshake is never refused: the pool only decides whose wait ends. A handshake is shed only in
 * favour of a newcomer from its own source or from a source holding fewer; a source holding the fewest
 * handshakes loses one only to its own newcomers or when every source holds the same number. Slow clients
 * from a few sources therefore cannot keep anyone else out: a newcomer from elsewhere gets in at once and
 * keeps its slot while some source holds more than its own. To crowd others out an attacker needs as many
 * sources as the pool has slots, and must open `maxHandshakes` connections within the time a real client
 * takes to finish its handshake.
 *
 * The victim's owner is told through its `shed` callback and must end that connection; its handshake slot is
 * taken back at once, its connection slot when it releases its ticket.
 *
 * A connection whose source is not known at accept (a trusted upstream's, until its PROXY header names the
 * client) is admitted with `null` as its address: it counts as a source of its own, so it is subject to
 * `maxConnections` and the pool but to no per-source limit, and the upstream's many clients are never shed
 * as one heavy source. Once the client is known, {@linkcode AdmissionTicket.rekey} moves the connection to
 * that client's source, as if it were admitted from there now:
 *
 * 3. The client's source at `maxConnectionsPerIp`: refused (the connection stays where it was, to be closed).
 * 4. Otherwise it counts there; a handshake in progress joins that source's queue at its newest end, and when
 *    the source already holds `maxHandshakesPerIp` its oldest is shed to make room. The pool's size does not
 *    change, so nothing else is shed. Every operation is O(log n) in the
 * number of sources holding handshakes (a heap of sources by handshakes held, and a queue per source), none
 * looks at all connections.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Admission } from "./admission.ts";
 * const admission = new Admission({
 *   maxConnections: 100,
 *   maxConnectionsPerIp: 100,
 *   maxHandshakes: 2,
 *   maxHandshakesPerIp: 2,
 * });
 * const shed: string[] = [];
 * const admit = (ip: string, name: string) => admission.admit(ip, { shed: () => shed.push(name) });
 * admit("192.0.2.1", "slow 1");
 * admit("192.0.2.1", "slow 2");
 * const newcomer = admit("198.51.100.9", "newcomer");
 * assert.deepEqual(shed, ["slow 1"], "the full pool made room by shedding the heavy source's oldest");
 * assert.equal(admission.handshakes, 2);
 * assert.notEqual(typeof newcomer, "string");
 * ```
 *
 * @module
 */

import { Live } from "../config/live.ts";
import { type HeapPlace, IndexedHeap } from "./indexed_heap.ts";
import { sourcePrefix } from "./source_prefix.ts";

/** The limits; each is a count of connections. "Per IP" means per source: an IPv4 address or IPv6 /64. */
export interface AdmissionLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly maxHandshakes: number;
  readonly maxHandshakesPerIp: number;
}

/** Why a connection was refused at the door. */
export type AdmissionRefusal = "max_connections" | "max_connections_per_ip";

/** What the admission needs from the owner of a connection. */
export interface AdmitOptions {
  /**
   * Called at most once, synchronously from another connection's `admit`, when this connection's handshake
   * is shed to make room: end the connection (and still release its ticket). It must not call `admit`.
   */
  readonly shed: () => void;
}

/** A granted connection; release it exactly once when the connection ends. */
export interface AdmissionTicket {
  /** The connection left the handshake phase (routed or refused). Idempotent; nothing once shed. */
  handshakeDone(): void;
  /** The connection closed. Idempotent; also ends the handshake phase. */
  release(): void;
  /**
   * The connection turned out to come from `ip` (a trusted upstream's PROXY header said so): it counts as
   * that source's from now on, or the per-source limit refuses it and nothing changes (rules 3 and 4). May
   * shed that source's oldest handshake. Nothing once released.
   */
  rekey(ip: string): AdmissionRefusal | null;
}

/** What the tickets need of their admission: one object per admission, shared by all its tickets. */
interface TicketOwner {
  leave(handshake: Handshake): void;
  /** The connection of `handshake` closed. */
  drop(handshake: Handshake): void;
  rekey(handshake: Handshake, prefix: string): AdmissionRefusal | null;
}

/**
 * One connection: its ticket, and its place in the handshake pool (its source's queue from oldest to newest)
 * while it is in the handshake phase. One object with methods rather than a ticket of closures: every open
 * connection holds one for its whole life.
 */
class Handshake implements AdmissionTicket {
  /** Order of entering its source's queue: lower is older. */
  seq = 0;
  older: Handshake | null = null;
  newer: Handshake | null = null;
  inPool = false;
  readonly #owner: TicketOwner;
  source: Source;
  /** How to shed it, while it can be shed (dropped once its handshake is done, so nothing it holds stays). */
  shed: (() => void) | null;
  #released = false;

  constructor(owner: TicketOwner, source: Source, shed: () => void) {
    this.#owner = owner;
    this.source = source;
    this.shed = shed;
  }

  handshakeDone(): void {
    if (this.inPool) this.#owner.leave(this);
    this.shed = null;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.handshakeDone();
    this.#owner.drop(this);
  }

  rekey(ip: string): AdmissionRefusal | null {
    return this.#released ? null : this.#owner.rekey(this, sourcePrefix(ip));
  }
}

/** The connections and handshakes of one source; in the heap of sources exactly while it holds handshakes. */
interface Source extends HeapPlace {
  readonly prefix: string;
  connections: number;
  handshakes: number;
  oldest: Handshake | null;
  newest: Handshake | null;
}

/** Counts connections, refuses those over a connection limit, and shares the handshake pool out. */
export class Admission {
  readonly #limits: Live<AdmissionLimits>;
  readonly #sources = new Map<string, Source>();
  /** Sources holding handshakes, the one to shed from first at the top. */
  readonly #heaviest = new IndexedHeap<Source>(heavier);
  #connections = 0;
  #handshakes = 0;
  #nextSeq = 0;
  #unattributed = 0;

  readonly #owner: TicketOwner = {
    leave: (handshake) => this.#leave(handshake),
    drop: (handshake) => {
      this.#connections -= 1;
      this.#dropConnection(handshake.source);
    },
    rekey: (handshake, prefix) => this.#rekey(handshake, prefix),
  };

  constructor(limits: AdmissionLimits | Live<AdmissionLimits>) {
    this.#limits = Live.of(limits);
  }

  /** Open connections. */
  get connections(): number {
    return this.#connections;
  }

  /** Connections in the handshake phase. */
  get handshakes(): number {
    return this.#handshakes;
  }

  /** Sources with open connections: what the per-source state costs. */
  get sources(): number {
    return this.#sources.size;
  }

  /**
   * Admits a connection from `ip`, shedding another connection's handshake if the pool has no room for it
   * (see the module's rules), or says which connection limit refuses it. `null`: the source is not known
   * yet; the connection is a source of its own until {@linkcode AdmissionTicket.rekey}.
   */
  admit(ip: string | null, options: AdmitOptions): AdmissionTicket | AdmissionRefusal {
    if (this.#connections >= this.#limits.current.maxConnections) return "max_connections";
    // Never an address's prefix (those are addresses or end in /64), so it is no one else's source.
    const prefix = ip === null ? `unattributed #${this.#unattributed++}` : sourcePrefix(ip);
    const held = this.#sources.get(prefix);
    if (held !== undefined && held.connections >= this.#limits.current.maxConnectionsPerIp) {
      return "max_connections_per_ip";
    }
    const victim = this.#victimFor(held);
    if (victim !== null) {
      this.#leave(victim);
      // Its owner may release it right here, which can remove its source: look the newcomer's up afterwards.
      victim.shed?.();
    }
    const source = this.#sourceOf(prefix);
    source.connections += 1;
    this.#connections += 1;
    const handshake = new Handshake(this.#owner, source, options.shed);
    this.#enter(handshake);
    return handshake;
  }

  /** Rules 3 and 4: `handshake`'s connection moves to the source `prefix`, or is refused there. */
  #rekey(handshake: Handshake, prefix: string): AdmissionRefusal | null {
    const from = handshake.source;
    if (from.prefix === prefix) return null;
    const held = this.#sources.get(prefix);
    if (held !== undefined && held.connections >= this.#limits.current.maxConnectionsPerIp) {
      return "max_connections_per_ip";
    }
    const inPool = handshake.inPool;
    if (inPool) this.#leave(handshake);
    if (inPool && held !== undefined && held.handshakes >= this.#limits.current.maxHandshakesPerIp) {
      const victim = held.oldest!;
      this.#leave(victim);
      // Its owner may release it right here, which can remove its source: look it up afterwards.
      victim.shed?.();
    }
    const to = this.#sourceOf(prefix);
    to.connections += 1;
    handshake.source = to;
    this.#dropConnection(from);
    if (inPool) this.#enter(handshake);
    return null;
  }

  /** The source of `prefix`, made when it holds nothing yet. */
  #sourceOf(prefix: string): Source {
    let source = this.#sources.get(prefix);
    if (source === undefined) {
      source = { prefix, connections: 0, handshakes: 0, oldest: null, newest: null, heapIndex: -1 };
      this.#sources.set(prefix, source);
    }
    return source;
  }

  /** One connection of `source` less; a source without connections is forgotten. */
  #dropConnection(source: Source): void {
    source.connections -= 1;
    if (source.connections === 0) this.#sources.delete(source.prefix);
  }

  /** The handshake to shed so a newcomer from `source` fits, or null when there is room. */
  #victimFor(source: Source | undefined): Handshake | null {
    const own = source?.handshakes ?? 0;
    if (source !== undefined && own >= this.#limits.current.maxHandshakesPerIp) return source.oldest;
    if (this.#handshakes < this.#limits.current.maxHandshakes) return null;
    const heaviest = this.#heaviest.peek()!;
    // The pool is full, so some source holds a handshake; the newcomer's own holds one if it is the heaviest.
    return own < heaviest.handshakes ? heaviest.oldest : source!.oldest;
  }

  /** Puts `handshake` at the newest end of its source's queue. */
  #enter(handshake: Handshake): void {
    const source = handshake.source;
    handshake.inPool = true;
    handshake.seq = this.#nextSeq++;
    handshake.older = source.newest;
    if (source.newest === null) source.oldest = handshake;
    else source.newest.newer = handshake;
    source.newest = handshake;
    source.handshakes += 1;
    this.#handshakes += 1;
    if (source.heapIndex < 0) this.#heaviest.push(source);
    else this.#heaviest.update(source);
  }

  /** Takes `handshake` out of the pool. */
  #leave(handshake: Handshake): void {
    const source = handshake.source;
    handshake.inPool = false;
    if (handshake.older === null) source.oldest = handshake.newer;
    else handshake.older.newer = handshake.newer;
    if (handshake.newer === null) source.newest = handshake.older;
    else handshake.newer.older = handshake.older;
    handshake.older = null;
    handshake.newer = null;
    source.handshakes -= 1;
    this.#handshakes -= 1;
    if (source.handshakes === 0) this.#heaviest.remove(source);
    else this.#heaviest.update(source);
  }
}

/** Whether `a` is shed from before `b`: it holds more handshakes, or as many and an older one. */
function heavier(a: Source, b: Source): boolean {
  if (a.handshakes !== b.handshakes) return a.handshakes > b.handshakes;
  return a.oldest!.seq < b.oldest!.seq;
}
