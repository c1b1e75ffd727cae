/**
 * What the admin listener shows of an agent: its hub sessions, streams, bytes and dial failures, read at scrape
 * time from what the agent keeps; its status document; and its readiness (at least one hub session registered
 * and taking streams, and not stopping).
 *
 * @module
 */

import type { Agent, HubSessionState } from "../agent/agent.ts";
import type { AgentConfig } from "../config/agent_config.ts";
import type { LogFields } from "../log/logger.ts";
import { type Counter, MetricsRegistry } from "../metrics/registry.ts";
import { VERSION } from "../version.ts";
import type { AdminView } from "./admin_listener.ts";
import type { Reloader, ReloadReport } from "../config/reloader.ts";
import {
  registerProcessFamilies,
  registerReloadFamilies,
  type ReloadStatus,
  reloadStatus,
} from "./process_families.ts";

const HUB_STATES: readonly HubSessionState[] = [
  "connecting",
  "connected",
  "draining",
  "backing_off",
  "refused",
];

/** The agent's metrics, status and readiness, for its admin listener. */
export class AgentView implements AdminView {
  readonly registry = new MetricsRegistry();
  readonly #agent: Agent;
  readonly #reloads: Reloader<AgentConfig>;
  readonly #startedMs = Date.now();
  readonly #refusals: Counter<"reason">;

  /** `reloads` holds the config in force and re-reads it (`POST /reload`). */
  constructor(agent: Agent, reloads: Reloader<AgentConfig>) {
    this.#agent = agent;
    this.#reloads = reloads;
    const r = this.registry;
    registerProcessFamilies(r, {
      kind: "agent",
      startedMs: this.#startedMs,
      draining: () => agent.draining,
      ready: () => this.readiness() === null,
      windowStalls: () => agent.windowStalls.count,
    });
    registerReloadFamilies(r, () => reloads);
    r.gauge(
      "nexus_agent_hub_sessions",
      "Each hub's session by state: 1 for the state it is in, 0 for the others.",
      ["hub", "state"],
      () =>
        agent.hubs.flatMap((hub) =>
          HUB_STATES.map((state) => [{ hub: hub.url, state }, hub.state === state ? 1 : 0] as const)
        ),
    );
    r.countedBy(
      "nexus_agent_reconnects_total",
      "Attempts to (re)connect to a hub after the first.",
      ["hub"],
      () => agent.hubs.map((hub) => [{ hub: hub.url }, hub.reconnects] as const),
    );
    r.gauge("nexus_agent_streams_open", "Streams being served.", [], () => [[{}, agent.activeStreams]]);
    r.countedBy(
      "nexus_agent_streams_total",
      "Streams the hubs opened.",
      [],
      () => [[{}, agent.streamsOpened]],
    );
    r.countedBy(
      "nexus_agent_dial_failures_total",
      "Streams that could not reach their local service, by target (none: no target for the name).",
      ["target"],
      () => [...agent.dialFailures].map(([target, count]) => [{ target }, count] as const),
    );
    r.countedBy(
      "nexus_agent_bytes_total",
      "Bytes to and from the local services, open streams included.",
      ["direction"],
      () => {
        const bytes = agent.byteCounts();
        return [[{ direction: "to_service" }, bytes.toServices], [
          { direction: "from_service" },
          bytes.fromServices,
        ]];
      },
    );
    r.gauge(
      "nexus_agent_buffered_bytes",
      "Bytes from hubs the local services have not taken yet.",
      [],
      () => [
        [{}, agent.bufferedBytes],
      ],
    );
    this.#refusals = r.counter("nexus_refusals_total", "Refused admin connections, by reason.", {
      labels: ["reason"],
    });
  }

  /** Counts an event of the agent's refusal log (its admin listener's). */
  refusal(kind: string, _fields: LogFields | undefined): void {
    this.#refusals.inc({ reason: kind });
  }

  readiness(): string | null {
    if (this.#agent.draining) return "draining: the agent is stopping";
    const hubs = this.#agent.hubs;
    if (hubs.some((hub) => hub.state === "connected")) return null;
    return `no hub session registered and taking streams (${
      hubs.map((hub) => `${hub.url}: ${hub.state}${hub.lastError === null ? "" : `, ${hub.lastError}`}`).join(
        "; ",
      )
    })`;
  }

  /** `POST /reload`. */
  reload(): Promise<ReloadReport> {
    return this.#reloads.reload("POST /reload");
  }

  metrics(): string {
    return this.registry.render();
  }

  status(): AgentStatus {
    const agent = this.#agent;
    const bytes = agent.byteCounts();
    const config = this.#reloads.inForce;
    return {
      kind: "agent",
      name: config.name,
      version: VERSION,
      deno: Deno.version.deno,
      now: new Date().toISOString(),
      startedAt: new Date(this.#startedMs).toISOString(),
      uptimeSeconds: Math.floor((Date.now() - this.#startedMs) / 1000),
      ready: this.readiness() === null,
      notReady: this.readiness(),
      draining: agent.draining,
      hostnames: config.hostnames,
      weight: config.weight,
      hubs: agent.hubs.map((hub) => ({
        url: hub.url,
        state: hub.state,
        protocol: hub.protocol,
        since: new Date(hub.sinceMs).toISOString(),
        lastError: hub.lastError,
        reconnects: hub.reconnects,
        reregistrationPending: hub.reregistrationPending,
      })),
      counters: {
        streamsServed: agent.streamsOpened,
        bytesToService: bytes.toServices,
        bytesFromService: bytes.fromServices,
        dialFailures: Object.fromEntries(agent.dialFailures),
      },
      gauges: { streamsOpen: agent.activeStreams, bufferedBytes: agent.bufferedBytes },
      limits: {
        ...config.limits,
        idleTimeoutSeconds: config.idleTimeoutSeconds,
        drainTimeoutSeconds: config.drainTimeoutSeconds,
        reconnect: config.reconnect,
      },
      reload: reloadStatus(this.#reloads),
    };
  }
}

/** The agent's `/status` document. */
export interface AgentStatus {
  readonly kind: "agent";
  readonly name: string;
  readonly version: string;
  readonly deno: string;
  readonly now: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly ready: boolean;
  readonly notReady: string | null;
  readonly draining: boolean;
  readonly hostnames: readonly string[];
  readonly weight: number;
  readonly hubs: ReadonlyArray<{
    url: string;
    state: HubSessionState;
    protocol: string | null;
    since: string;
    lastError: string | null;
    reconnects: number;
    reregistrationPending: boolean;
  }>;
  readonly counters: {
    readonly streamsServed: number;
    readonly bytesToService: number;
    readonly bytesFromService: number;
    readonly dialFailures: Readonly<Record<string, number>>;
  };
  readonly gauges: Readonly<Record<string, number>>;
  readonly limits: Readonly<Record<string, unknown>>;
  /** Reloads of the config file, and the last one. */
  readonly reload: ReloadStatus;
}
