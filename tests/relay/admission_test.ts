/**
 * The admission's limits and the sharing of its handshake pool, driven against a reference model that
 * recomputes every decision from the whole list of connections: what is refused, which handshake is shed
 * for whom, and the counters, over random sequences of admissions (from addresses, or not yet attributed),
 * re-keyings to a client's address, handshake ends and releases, under random limits.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Live } from "../../src/config/live.ts";
import { Admission, type AdmissionLimits, type AdmissionTicket } from "../../src/relay/admission.ts";

const LARGE = 1_000_000;

/** A connection as the tests hold it, with the names of the tickets shed so far. */
function harness(limits: AdmissionLimits) {
  const admission = new Admission(limits);
  const shed: string[] = [];
  const tickets = new Map<string, AdmissionTicket>();
  const admit = (ip: string, name: string) => {
    const ticket = admission.admit(ip, { shed: () => shed.push(name) });
    if (typeof ticket !== "string") tickets.set(name, ticket);
    return ticket;
  };
  return { admission, shed, admit, ticket: (name: string) => tickets.get(name)! };
}

Deno.test("the connection limits refuse, overall and per source, and a release frees the slot", () => {
  const { admission, admit, ticket } = harness({
    maxConnections: 3,
    maxConnectionsPerIp: 2,
    maxHandshakes: LARGE,
    maxHandshakesPerIp: LARGE,
  });
  admit("192.0.2.1", "a1");
  admit("192.0.2.1", "a2");
  assert.equal(admit("192.0.2.1", "a3"), "max_connections_per_ip");
  admit("192.0.2.2", "b1");
  assert.equal(admit("192.0.2.3", "c1"), "max_connections");
  assert.equal(admission.connections, 3);
  ticket("a1").release();
  ticket("a1").release();
  assert.equal(admission.connections, 2);
  assert.notEqual(typeof admit("192.0.2.1", "a4"), "string");
});

Deno.test("a full pool gives a newcomer from a lighter source the heaviest source's oldest handshake", () => {
  const { admission, shed, admit } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: 4,
    maxHandshakesPerIp: LARGE,
  });
  for (const name of ["a1", "a2", "a3"]) admit("192.0.2.1", name);
  admit("192.0.2.2", "b1");
  admit("192.0.2.3", "c1");
  assert.deepEqual(shed, ["a1"]);
  admit("192.0.2.3", "c2");
  assert.deepEqual(shed, ["a1", "a2"], "a still holds the most (2 against 1 and 1)");
  admit("192.0.2.3", "c3");
  assert.deepEqual(shed, ["a1", "a2", "c1"], "c is now among the heaviest: its own oldest goes");
  assert.equal(admission.handshakes, 4);
  assert.equal(admission.connections, 7, "shed connections count until their owners release them");
});

Deno.test("among sources holding as many, the one whose oldest handshake is oldest loses it", () => {
  const { shed, admit } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: 3,
    maxHandshakesPerIp: LARGE,
  });
  admit("192.0.2.2", "b1");
  admit("192.0.2.1", "a1");
  admit("192.0.2.3", "c1");
  admit("192.0.2.4", "d1");
  admit("192.0.2.5", "e1");
  admit("192.0.2.6", "f1");
  assert.deepEqual(shed, ["b1", "a1", "c1"], "every source holds one: the oldest of all goes first");
});

Deno.test("a source at maxHandshakesPerIp replaces its own oldest handshake; others are untouched", () => {
  const { admission, shed, admit, ticket } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: LARGE,
    maxHandshakesPerIp: 2,
  });
  admit("192.0.2.1", "a1");
  admit("198.51.100.1", "b1");
  admit("192.0.2.1", "a2");
  admit("192.0.2.1", "a3");
  admit("192.0.2.1", "a4");
  assert.deepEqual(shed, ["a1", "a2"]);
  assert.equal(admission.handshakes, 3);
  // A handshake that ended frees its place in the share.
  ticket("a3").handshakeDone();
  admit("192.0.2.1", "a5");
  assert.deepEqual(shed, ["a1", "a2"]);
});

Deno.test("IPv6 clients share one share per /64; IPv4-mapped addresses count as their IPv4 address", () => {
  const { shed, admit } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: LARGE,
    maxHandshakesPerIp: 1,
  });
  admit("2001:db8:0:1::1", "v6 a");
  admit("2001:db8:0:1::ffff", "v6 b");
  admit("2001:db8:0:2::1", "other /64");
  admit("192.0.2.1", "v4");
  admit("::ffff:192.0.2.1", "v4 mapped");
  assert.deepEqual(shed, ["v6 a", "v4"]);
});

Deno.test("a shed ticket's handshakeDone and release are harmless, also when called from the shed callback", () => {
  const admission = new Admission({
    maxConnections: LARGE,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: 1,
    maxHandshakesPerIp: LARGE,
  });
  let first: AdmissionTicket | null = null;
  const admitted = admission.admit("192.0.2.1", {
    shed: () => {
      first!.handshakeDone();
      first!.release();
    },
  });
  assert.notEqual(typeof admitted, "string");
  first = admitted as AdmissionTicket;
  const second = admission.admit("192.0.2.2", { shed: () => assert.fail("the newcomer is not shed") });
  assert.notEqual(typeof second, "string");
  assert.equal(admission.connections, 1);
  assert.equal(admission.handshakes, 1);
  first.release();
  first.handshakeDone();
  assert.equal(admission.connections, 1);
  assert.equal(admission.handshakes, 1);
});

Deno.test("a trusted upstream's connections, not yet attributed, are sources of their own: none is shed for another", () => {
  const { admission, shed, admit } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: 1,
    maxHandshakes: 4,
    maxHandshakesPerIp: 1,
  });
  const unattributed = (name: string) => {
    const ticket = admission.admit(null, { shed: () => shed.push(name) });
    assert.notEqual(typeof ticket, "string", "no per-source limit applies before the client is known");
    return ticket as AdmissionTicket;
  };
  for (const name of ["u1", "u2", "u3"]) unattributed(name);
  assert.deepEqual(shed, []);
  assert.equal(admission.sources, 3);
  admit("192.0.2.1", "direct");
  unattributed("u4");
  assert.deepEqual(shed, ["u1"], "a full pool where every source holds one: the oldest of all goes");
});

Deno.test("rekey moves a connection to its client's source, under that source's limits", () => {
  const { admission, shed, admit } = harness({
    maxConnections: LARGE,
    maxConnectionsPerIp: 2,
    maxHandshakes: LARGE,
    maxHandshakesPerIp: 1,
  });
  const viaUpstream = (name: string) =>
    admission.admit(null, { shed: () => shed.push(name) }) as AdmissionTicket;
  admit("192.0.2.1", "direct a");
  const first = viaUpstream("proxied a1");
  // The client already holds a handshake, its share: its oldest goes, as for a newcomer from there.
  assert.equal(first.rekey("192.0.2.1"), null);
  assert.deepEqual(shed, ["direct a"]);
  assert.equal(admission.handshakes, 1);
  // Two connections of that client now: a third is refused, and stays where it was.
  const third = viaUpstream("proxied a2");
  assert.equal(third.rekey("::ffff:192.0.2.1"), "max_connections_per_ip");
  assert.equal(admission.sources, 2);
  third.release();
  // Another client of the same upstream is its own source.
  const other = viaUpstream("proxied b");
  assert.equal(other.rekey("198.51.100.7"), null);
  assert.deepEqual(shed, ["direct a"]);
  assert.equal(admission.sources, 2);
  assert.equal(admission.connections, 3);
  first.release();
  other.release();
  assert.equal(first.rekey("203.0.113.1"), null, "a released ticket moves nowhere");
  assert.equal(admission.connections, 1);
  assert.equal(admission.sources, 1);
});

Deno.test("20,000 connections from 2,000 sources: counts stay exact and the pool stays full while newcomers arrive", () => {
  const admission = new Admission({
    maxConnections: 20_000,
    maxConnectionsPerIp: LARGE,
    maxHandshakes: 1_024,
    maxHandshakesPerIp: 64,
  });
  let shedCount = 0;
  const tickets: AdmissionTicket[] = [];
  for (let i = 0; i < 20_000; i++) {
    const ip = `10.0.${(i % 2_000) >> 8}.${(i % 2_000) & 0xff}`;
    const ticket = admission.admit(ip, { shed: () => shedCount++ });
    assert.notEqual(typeof ticket, "string");
    tickets.push(ticket as AdmissionTicket);
  }
  assert.equal(admission.connections, 20_000);
  assert.equal(admission.handshakes, 1_024);
  assert.equal(shedCount, 20_000 - 1_024);
  assert.equal(admission.admit("10.1.0.1", { shed: () => {} }), "max_connections");
  for (const ticket of tickets) ticket.release();
  assert.equal(admission.connections, 0);
  assert.equal(admission.handshakes, 0);
});

// --- The model ---------------------------------------------------------------------------------------------

/**
 * Addresses the sequences draw from, with the source each one counts as, written out by hand: a few spellings
 * of the same sources, and enough plain ones that the pool is often shared by many sources.
 */
const ADDRESSES: ReadonlyArray<[string, string]> = [
  ["192.0.2.1", "A"],
  ["::ffff:192.0.2.1", "A"],
  ["192.0.2.2", "B"],
  ["2001:db8::1", "D"],
  ["2001:db8:0:0:ffff:ffff:ffff:ffff", "D"],
  ["2001:DB8::abcd", "D"],
  ["2001:db8:0:1::1", "E"],
  ["::1", "F"],
  ...Array.from({ length: 12 }, (_, i): [string, string] => [`198.51.100.${i}`, `N${i}`]),
];

interface ModelConnection {
  readonly name: number;
  source: string;
  /** Order of entering its source's handshake queue. */
  seq: number;
  /** Whether its owner releases it from within the shed callback, as an owner may. */
  readonly releasesWhenShed: boolean;
  inHandshake: boolean;
  released: boolean;
  shed: boolean;
}

type Operation =
  /** `address` picks from {@linkcode ADDRESSES} by the run's weights (see `pickAddress`). */
  | { readonly kind: "admit"; readonly address: number; readonly releasesWhenShed: boolean }
  /** A trusted upstream's connection, its client not known yet. */
  | { readonly kind: "admitUnattributed"; readonly releasesWhenShed: boolean }
  /** Its PROXY header names the client: any ticket, released or shed or not. */
  | { readonly kind: "rekey"; readonly ticket: number; readonly address: number }
  | { readonly kind: "handshakeDone"; readonly ticket: number }
  | { readonly kind: "release"; readonly ticket: number };

const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("admit" as const),
      address: fc.nat(),
      releasesWhenShed: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("admitUnattributed" as const), releasesWhenShed: fc.boolean() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("rekey" as const), ticket: fc.nat(), address: fc.nat() }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("handshakeDone" as const), ticket: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("release" as const), ticket: fc.nat() }) },
);

/** A limit anywhere in its range, mostly small enough to be reached (connection limits less often). */
const limitArbitrary = (smallWeight: number) =>
  fc.oneof(
    { weight: smallWeight, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 40 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: LARGE }) },
    { weight: 2, arbitrary: fc.constant(LARGE) },
  );

const limitsArbitrary: fc.Arbitrary<AdmissionLimits> = fc.record({
  maxConnections: limitArbitrary(1),
  maxConnectionsPerIp: limitArbitrary(1),
  maxHandshakes: limitArbitrary(6),
  maxHandshakesPerIp: limitArbitrary(4),
});

/**
 * Each run weighs the addresses differently, so that runs see every shape of sharing: one source holding
 * most handshakes, a few heavy ones and many light ones, or all alike.
 */
const weightsArbitrary = fc.array(fc.integer({ min: 0, max: 20 }), {
  minLength: ADDRESSES.length,
  maxLength: ADDRESSES.length,
});

function pickAddress(weights: readonly number[], draw: number): [string, string] {
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  if (total === 0) return ADDRESSES[draw % ADDRESSES.length];
  let point = draw % total;
  for (const [i, weight] of weights.entries()) {
    if (point < weight) return ADDRESSES[i];
    point -= weight;
  }
  throw new Error("unreachable: the point lies within the total weight");
}

/** What the rules say should happen to a newcomer from `source`, recomputed from every connection. */
function modelDecision(
  limits: AdmissionLimits,
  connections: readonly ModelConnection[],
  source: string,
): { refused: string } | { victim: ModelConnection | null } {
  const open = connections.filter((c) => !c.released);
  if (open.length >= limits.maxConnections) return { refused: "max_connections" };
  if (open.filter((c) => c.source === source).length >= limits.maxConnectionsPerIp) {
    return { refused: "max_connections_per_ip" };
  }
  const handshakes = open.filter((c) => c.inHandshake);
  const oldestOf = (from: readonly ModelConnection[]) =>
    from.reduce<ModelConnection | null>(
      (oldest, c) => (oldest === null || c.seq < oldest.seq ? c : oldest),
      null,
    );
  const own = handshakes.filter((c) => c.source === source);
  if (own.length >= limits.maxHandshakesPerIp) return { victim: oldestOf(own) };
  if (handshakes.length < limits.maxHandshakes) return { victim: null };
  const held = new Map<string, number>();
  for (const c of handshakes) held.set(c.source, (held.get(c.source) ?? 0) + 1);
  const most = Math.max(...held.values());
  if (own.length === most) return { victim: oldestOf(own) };
  return { victim: oldestOf(handshakes.filter((c) => held.get(c.source) === most)) };
}

function countBySource(connections: readonly ModelConnection[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const c of connections) counts.set(c.source, (counts.get(c.source) ?? 0) + 1);
  return counts;
}

/** What the rules say should happen when `moving` turns out to come from `source` (rules 3 and 4). */
function modelRekey(
  limits: AdmissionLimits,
  connections: readonly ModelConnection[],
  moving: ModelConnection,
  source: string,
): { refused: string } | { victim: ModelConnection | null } {
  if (moving.released || moving.source === source) return { victim: null };
  const there = connections.filter((c) => !c.released && c.source === source);
  if (there.length >= limits.maxConnectionsPerIp) return { refused: "max_connections_per_ip" };
  const handshakes = there.filter((c) => c.inHandshake);
  if (!moving.inHandshake || handshakes.length < limits.maxHandshakesPerIp) return { victim: null };
  return { victim: handshakes.reduce((oldest, c) => (c.seq < oldest.seq ? c : oldest)) };
}

/** One run: the admission and the model side by side, each step checked against the other. */
class ModelRun {
  readonly admission: Admission;
  readonly model: ModelConnection[] = [];
  #limits: AdmissionLimits;
  readonly #live: Live<AdmissionLimits>;
  /**
   * What each count may reach: its limit, or what it stood at when the limits last changed (a reload), if
   * more. Nothing open is closed for a lower cap, so a count above a lowered limit may stay there (a newcomer
   * to a full handshake pool takes the place of one it sheds) but never grows.
   */
  #ceilings = {
    connections: 0,
    handshakes: 0,
    perSource: new Map<string, number>(),
    handshakesPerSource: new Map<string, number>(),
  };
  readonly #tickets: AdmissionTicket[] = [];
  readonly #shedCalls: number[] = [];
  /** Entering a handshake queue, as the admission counts it. */
  #seq = 0;

  constructor(limits: AdmissionLimits) {
    this.#limits = limits;
    this.#live = new Live(limits);
    this.admission = new Admission(this.#live);
  }

  /** A reload: the limits change while connections are open; what comes next is decided by the new ones. */
  setLimits(limits: AdmissionLimits): void {
    this.#limits = limits;
    this.#live.set(limits);
    const open = this.model.filter((c) => !c.released);
    const handshakes = open.filter((c) => c.inHandshake);
    this.#ceilings = {
      connections: Math.max(limits.maxConnections, open.length),
      handshakes: Math.max(limits.maxHandshakes, handshakes.length),
      perSource: countBySource(open),
      handshakesPerSource: countBySource(handshakes),
    };
    this.#check();
  }

  /** `ip` null: not attributed yet, a source of its own (`source` must then be unique to it). */
  admit(ip: string | null, source: string, releasesWhenShed: boolean): void {
    const expected = modelDecision(this.#limits, this.model, source);
    const heldBefore = countBySource(this.model.filter((c) => !c.released && c.inHandshake));
    const name = this.model.length;
    const shedBefore = this.#shedCalls.length;
    const result = this.admission.admit(ip, {
      shed: () => {
        this.#shedCalls.push(name);
        if (releasesWhenShed) this.#tickets[name].release();
      },
    });
    if ("refused" in expected) {
      assert.equal(result, expected.refused);
      assert.equal(this.#shedCalls.length, shedBefore, "a refusal sheds nothing");
      return this.#check();
    }
    assert.notEqual(typeof result, "string", "only the connection limits refuse");
    const victim = expected.victim;
    assert.deepEqual(this.#shedCalls.slice(shedBefore), victim === null ? [] : [victim.name]);
    if (victim !== null) {
      // Fairness: a handshake goes only to its own source's newcomer or to one from a lighter source.
      const own = heldBefore.get(source) ?? 0;
      assert.ok(victim.source === source || heldBefore.get(victim.source)! > own);
      this.#shedInModel(victim);
    }
    this.#tickets.push(result as AdmissionTicket);
    this.model.push({
      name,
      source,
      seq: this.#seq++,
      releasesWhenShed,
      inHandshake: true,
      released: false,
      shed: false,
    });
    this.#check();
  }

  rekey(target: ModelConnection, ip: string, source: string): void {
    const expected = modelRekey(this.#limits, this.model, target, source);
    const shedBefore = this.#shedCalls.length;
    const result = this.#tickets[target.name].rekey(ip);
    if ("refused" in expected) {
      assert.equal(result, expected.refused);
      assert.equal(this.#shedCalls.length, shedBefore, "a refusal sheds nothing");
      return this.#check();
    }
    assert.equal(result, null);
    const victim = expected.victim;
    assert.deepEqual(this.#shedCalls.slice(shedBefore), victim === null ? [] : [victim.name]);
    if (victim !== null) this.#shedInModel(victim);
    if (!target.released && target.source !== source) {
      target.source = source;
      if (target.inHandshake) target.seq = this.#seq++;
    }
    this.#check();
  }

  #shedInModel(victim: ModelConnection): void {
    victim.inHandshake = false;
    victim.shed = true;
    if (victim.releasesWhenShed) victim.released = true;
  }

  handshakeDone(target: ModelConnection): void {
    this.#tickets[target.name].handshakeDone();
    target.inHandshake = false;
    this.#check();
  }

  release(target: ModelConnection): void {
    this.#tickets[target.name].release();
    target.inHandshake = false;
    target.released = true;
    this.#check();
  }

  releaseAll(): void {
    for (const ticket of this.#tickets) ticket.release();
  }

  #check(): void {
    const open = this.model.filter((c) => !c.released);
    const handshakes = open.filter((c) => c.inHandshake);
    const admission = this.admission;
    assert.equal(admission.connections, open.length);
    assert.equal(admission.handshakes, handshakes.length);
    assert.equal(admission.sources, countBySource(open).size, "state is kept only for open connections");
    // Each count is within its limit, or within what it stood at above a lowered limit; and that allowance
    // shrinks as the count does, so a count above its limit never grows again.
    const ceilings = this.#ceilings;
    const within = (count: number, limit: number, ceiling: number) => {
      assert.ok(count <= Math.max(limit, ceiling), `${count} within ${limit} (or ${ceiling} above it)`);
      return Math.min(ceiling, count);
    };
    ceilings.connections = within(admission.connections, this.#limits.maxConnections, ceilings.connections);
    ceilings.handshakes = within(admission.handshakes, this.#limits.maxHandshakes, ceilings.handshakes);
    const perSource = (counts: Map<string, number>, limit: number, bySource: Map<string, number>) => {
      for (const [source, count] of counts) within(count, limit, bySource.get(source) ?? 0);
      for (const [source, ceiling] of bySource) {
        bySource.set(source, Math.min(ceiling, counts.get(source) ?? 0));
      }
    };
    perSource(countBySource(open), this.#limits.maxConnectionsPerIp, ceilings.perSource);
    perSource(countBySource(handshakes), this.#limits.maxHandshakesPerIp, ceilings.handshakesPerSource);
    assert.equal(new Set(this.#shedCalls).size, this.#shedCalls.length, "each ticket is shed at most once");
  }
}

Deno.test("property: the admission decides as the reference model does, and its invariants hold throughout", () => {
  fc.assert(
    fc.property(
      limitsArbitrary,
      weightsArbitrary,
      fc.array(operationArbitrary, { maxLength: 400, size: "max" }),
      (
        limits,
        weights,
        operations,
      ) => {
        const run = new ModelRun(limits);
        for (const operation of operations) {
          if (operation.kind === "admit") {
            const [ip, source] = pickAddress(weights, operation.address);
            run.admit(ip, source, operation.releasesWhenShed);
          } else if (operation.kind === "admitUnattributed") {
            run.admit(null, `unattributed ${run.model.length}`, operation.releasesWhenShed);
          } else if (run.model.length > 0) {
            const target = run.model[operation.ticket % run.model.length];
            if (operation.kind === "rekey") {
              const [ip, source] = pickAddress(weights, operation.address);
              run.rekey(target, ip, source);
            } else if (operation.kind === "handshakeDone") run.handshakeDone(target);
            else run.release(target);
          }
        }
        // Then newcomers from new sources, each done at once: a full pool gives up its handshakes one by one,
        // heaviest source first, so the order in which the admission keeps its sources is checked throughout.
        for (let i = 0; i < Math.min(limits.maxHandshakes, 64); i++) {
          run.admit(`203.0.113.${i}`, `drain ${i}`, false);
          const newcomer = run.model[run.model.length - 1];
          if (newcomer.source === `drain ${i}` && newcomer.inHandshake) run.handshakeDone(newcomer);
        }
        // Everything released: nothing is left counted.
        run.releaseAll();
        assert.equal(run.admission.connections, 0);
        assert.equal(run.admission.handshakes, 0);
        assert.equal(run.admission.sources, 0);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("property: limits changed while connections are open (a reload) decide what comes next as the model does", () => {
  fc.assert(
    fc.property(
      fc.array(limitsArbitrary, { minLength: 2, maxLength: 4 }),
      weightsArbitrary,
      fc.array(operationArbitrary, { maxLength: 300, size: "max" }),
      (limitsInTurn, weights, operations) => {
        const run = new ModelRun(limitsInTurn[0]);
        const changeEvery = Math.max(1, Math.floor(operations.length / limitsInTurn.length));
        operations.forEach((operation, i) => {
          if (i > 0 && i % changeEvery === 0) {
            run.setLimits(limitsInTurn[Math.min(limitsInTurn.length - 1, i / changeEvery)]);
          }
          if (operation.kind === "admit") {
            const [ip, source] = pickAddress(weights, operation.address);
            run.admit(ip, source, operation.releasesWhenShed);
          } else if (operation.kind === "admitUnattributed") {
            run.admit(null, `unattributed ${run.model.length}`, operation.releasesWhenShed);
          } else if (run.model.length > 0) {
            const target = run.model[operation.ticket % run.model.length];
            if (operation.kind === "rekey") {
              const [ip, source] = pickAddress(weights, operation.address);
              run.rekey(target, ip, source);
            } else if (operation.kind === "handshakeDone") run.handshakeDone(target);
            else run.release(target);
          }
        });
        run.releaseAll();
        assert.equal(run.admission.connections, 0);
        assert.equal(run.admission.handshakes, 0);
        assert.equal(run.admission.sources, 0);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("property: slow handshakes from fewer sources than the pool has slots never keep another client out", () => {
  // Whatever the attackers' sources hold, a newcomer from another source is admitted; and while they come
  // from at most maxHandshakes - 2 sources, some attacker source always holds more than the newcomer's one
  // handshake when the pool is full, so none of the attackers' later newcomers takes its place.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 64 }),
      fc.array(fc.nat({ max: 5 }), { minLength: 1, maxLength: 400, size: "max" }),
      (maxHandshakes, maxHandshakesPerIp, attackerSources) => {
        const admission = new Admission({
          maxConnections: LARGE,
          maxConnectionsPerIp: LARGE,
          maxHandshakes,
          maxHandshakesPerIp,
        });
        const attack = () => {
          for (const attacker of attackerSources) admission.admit(`192.0.2.${attacker}`, { shed: () => {} });
        };
        attack();
        let controlShed = false;
        const control = admission.admit("198.51.100.1", { shed: () => (controlShed = true) });
        assert.notEqual(typeof control, "string");
        attack();
        if (new Set(attackerSources).size <= maxHandshakes - 2) assert.equal(controlShed, false);
      },
    ),
    { numRuns: 300 },
  );
});
