/**
 * Descriptors are a budget: the process's open-file limit, shared out between the listeners at start, so
 * that one of them running out (a flood on a relay port) never leaves another (the hub) without any. Each
 * listener then refuses at its own cap, with a reason, instead of the process failing to accept.
 *
 * @module
 */

/** Descriptors kept free for what opens after start: certificate and ACME files, DNS, log pipes, reloads. */
export const RESERVED_DESCRIPTORS = 32;
/** A hub connection holds three: the public socket and both ends of its loopback leg (see hub_listener.ts). */
export const DESCRIPTORS_PER_HUB_CONNECTION = 3;
/** When the limit cannot hold everything, the hub's share of what is left: at most this fraction. */
const HUB_SHARE_WHEN_SHORT = 0.25;

/** Most descriptors a probe opens: beyond this the limit is taken to be large enough. */
const MAX_PROBE_DESCRIPTORS = 131_072;
let probed: { upTo: number; free: number } | null = null;

/**
 * How many descriptors this process can still open, counted up to `upTo` by opening `/dev/null` until the
 * open-file limit refuses (then all are closed again). Deno lets no process read its own limit (`/proc/self`
 * needs every permission), so it is measured: about 13 µs a descriptor on a 2-core machine, 0.3 s for the
 * default caps. Once per process; a later, larger `upTo` probes again. Beyond 131,072 free it stops and
 * answers `Infinity` (large enough for any configuration it was asked about). Null where there is no such
 * limit to find (Windows) or `/dev/null` cannot be opened.
 */
export function countFreeDescriptors(upTo: number): number | null {
  if (Deno.build.os === "windows") return null;
  const wanted = Math.min(upTo, MAX_PROBE_DESCRIPTORS);
  if (probed !== null && (probed.upTo >= wanted || probed.free < probed.upTo)) {
    return atProbeCeiling(Math.min(probed.free, wanted), upTo);
  }
  const files: Deno.FsFile[] = [];
  try {
    while (files.length < wanted) files.push(Deno.openSync("/dev/null"));
  } catch (error) {
    if (files.length === 0 && !isOutOfDescriptors(error)) return null;
  } finally {
    for (const file of files) file.close();
  }
  probed = { upTo: wanted, free: files.length };
  return atProbeCeiling(files.length, upTo);
}

/** A count that reached the probe's ceiling says only "at least that many": the limit is then large enough. */
function atProbeCeiling(free: number, upTo: number): number {
  return free === MAX_PROBE_DESCRIPTORS && upTo > MAX_PROBE_DESCRIPTORS ? Infinity : free;
}

function isOutOfDescriptors(error: unknown): boolean {
  return error instanceof Error && /os error 24|Too many open files/.test(error.message);
}

/** What a node's configuration asks for. */
export interface DescriptorDemand {
  /** `limits.maxConnections`: one descriptor each. */
  readonly relayConnections: number;
  /** Backends, handshakes and peer links on the hub port: three each. */
  readonly hubConnections: number;
  /** Peer links this node dials: one each. */
  readonly dialledLinks: number;
}

/** How many connections each listener may hold under the limit. */
export interface DescriptorPlan {
  readonly relayConnections: number;
  readonly hubConnections: number;
  /** Whether the limit was too small for the demand, so the caps above are lower than configured. */
  readonly reduced: boolean;
  /** Descriptors the configuration would need. */
  readonly needed: number;
}

/**
 * Shares `free` descriptors (see {@linkcode countFreeDescriptors}) between the relay and the hub. Enough for
 * everything: the demand as it is.
 * Otherwise the hub keeps what it needs up to a quarter of what is left and the relay gets the rest, each at
 * least one connection, so that a full relay can never starve the agents' and peers' port, nor the reverse.
 *
 * @example
 * ```ts
 * import { planDescriptors } from "./descriptors.ts";
 * planDescriptors(1024, { relayConnections: 20_000, hubConnections: 1_512, dialledLinks: 2 });
 * // { relayConnections: 744, hubConnections: 82, reduced: true, needed: 24570 }
 * ```
 */
export function planDescriptors(free: number, demand: DescriptorDemand): DescriptorPlan {
  const needed = descriptorsNeeded(demand);
  if (needed <= free) {
    return {
      relayConnections: demand.relayConnections,
      hubConnections: demand.hubConnections,
      reduced: false,
      needed,
    };
  }
  const available = Math.max(0, free - RESERVED_DESCRIPTORS - demand.dialledLinks);
  const hubConnections = Math.max(
    1,
    Math.min(
      demand.hubConnections,
      Math.floor((available * HUB_SHARE_WHEN_SHORT) / DESCRIPTORS_PER_HUB_CONNECTION),
    ),
  );
  const relayConnections = Math.max(
    1,
    Math.min(demand.relayConnections, available - DESCRIPTORS_PER_HUB_CONNECTION * hubConnections),
  );
  return { relayConnections, hubConnections, reduced: true, needed };
}

/** Descriptors a configuration needs at full load, the reserve included. */
export function descriptorsNeeded(demand: DescriptorDemand): number {
  return RESERVED_DESCRIPTORS + demand.dialledLinks + demand.relayConnections +
    DESCRIPTORS_PER_HUB_CONNECTION * demand.hubConnections;
}
