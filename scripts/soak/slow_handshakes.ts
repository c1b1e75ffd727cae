/**
 * The `slow-handshakes` scenario (slowloris): 1,100 connections from a few loopback source addresses, each
 * trickling one byte of a ClientHello every 4 s, and reconnecting a second after the node closes it, while
 * control clients from 127.0.0.1 make TLS requests through the node. Slow clients must not starve the
 * others: the control requests must succeed.
 *
 * 1,100 is more than the default `limits.maxHandshakes` (1,024), and fewer than `maxConnectionsPerIp`
 * (1,000) per source address. Node and agent run with their default config.
 *
 * @module
 */

import { buildClientHello } from "../../tests/sni/client_hello_builder.ts";
import { ControlClient, count, describeError, loopbackAddresses, RawConnection, warmUp } from "./clients.ts";
import type { ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { START_SECONDS } from "./streams.ts";
import { HOSTNAME, startSystem } from "./system.ts";

/** Slow connections unless `--connections` says otherwise. */
const DEFAULT_SLOW_CONNECTIONS = 1_100;
/** How long the slow clients go on unless `--duration` says otherwise: past the 30 s handshake total. */
const DEFAULT_SLOW_SECONDS = 40;
const SOURCE_ADDRESSES = loopbackAddresses(2, 4);
const BYTE_INTERVAL_MS = 4_000;
const RECONNECT_DELAY_MS = 1_000;
/** Control requests: one every 10 ms, at most 8 at once (each is a new TLS connection, about 50 ms). */
const CONTROL_PACE = { intervalMs: 10, maxInFlight: 8 };
/** The share of control requests that must succeed while the slow clients go on. */
const CONTROL_SUCCESS_RATE = 0.99;

/** What the scenario found. */
export interface SlowHandshakesReport {
  readonly connections: number;
  readonly sourceAddresses: readonly string[];
  readonly durationSeconds: number;
  readonly openedAtStart: number;
  /** Slow connections open at half time and at the end. */
  readonly openAt: ReadonlyArray<{ readonly atSeconds: number; readonly open: number }>;
  readonly closedByNode: number;
  readonly reconnects: number;
  readonly control: { readonly attempts: number; readonly succeeded: number; readonly successRate: number };
}

/** One slow client: a connection at a time from one source address, one byte of the hello every 4 s. */
class SlowClient {
  conn: RawConnection | null = null;
  #sent = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly source: string, readonly port: number, readonly hello: Uint8Array) {}

  /** Connects and sends the first byte; fails when the connection cannot be made. */
  async connect(): Promise<RawConnection> {
    const conn = await RawConnection.connect(this.port, this.source, 5_000);
    this.conn = conn;
    this.#sent = 0;
    this.#trickle();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.#trickle(), BYTE_INTERVAL_MS);
    return conn;
  }

  #trickle(): void {
    if (this.conn === null || !this.conn.open || this.#sent >= this.hello.length) return;
    this.conn.write(this.hello.subarray(this.#sent, this.#sent + 1));
    this.#sent += 1;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.conn?.close();
  }
}

/** Runs the scenario. */
export async function slowHandshakes({ sizes, phases, log }: ScenarioContext): Promise<ScenarioOutcome> {
  const connections = sizes.connections ?? DEFAULT_SLOW_CONNECTIONS;
  const durationSeconds = sizes.durationSeconds ?? DEFAULT_SLOW_SECONDS;
  const system = await phases.run(
    "slow-handshakes: start node and agent",
    START_SECONDS,
    () => startSystem(),
  );
  const hello = buildClientHello({ serverName: HOSTNAME });
  const clients = Array.from(
    { length: connections },
    (_, i) => new SlowClient(SOURCE_ADDRESSES[i % SOURCE_ADDRESSES.length], system.ports.tlsPort, hello),
  );
  let stopping = false;
  let closedByNode = 0;
  let reconnects = 0;
  /** Reconnects a client a second after the node closed its connection, for as long as the scenario runs. */
  const keepConnected = async (client: SlowClient, first: RawConnection): Promise<void> => {
    let conn: RawConnection | null = first;
    while (!stopping) {
      if (conn !== null) {
        await conn.closed;
        if (stopping) return;
        closedByNode += 1;
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAY_MS));
      if (stopping) return;
      // Refused or not accepted in time: try again after the delay.
      conn = await client.connect().then((next) => {
        reconnects += 1;
        return next;
      }, () => null);
    }
  };
  const keepers: Promise<void>[] = [];
  try {
    await phases.run(
      "slow-handshakes: control requests before",
      30,
      () => warmUp(system.tlsRoute, CONTROL_PACE),
    );
    const openFailures: Record<string, number> = {};
    await phases.run(
      `slow-handshakes: open ${connections} slow connections`,
      15 + connections * 0.01,
      async (context) => {
        for (let batch = 0; batch < connections && !context.signal.aborted; batch += 100) {
          await Promise.all(
            clients.slice(batch, batch + 100).map(async (client) => {
              try {
                keepers.push(keepConnected(client, await client.connect()));
              } catch (error) {
                const reason = describeError(error);
                openFailures[reason] = (openFailures[reason] ?? 0) + 1;
              }
            }),
          );
          context.progress = `${count(keepers.length)} of ${count(connections)} slow connections open`;
        }
      },
    );
    const openedAtStart = clients.filter((c) => c.conn?.open).length;
    log(`${count(openedAtStart)} slow connections open`);
    const control = new ControlClient();
    const openAt: Array<{ atSeconds: number; open: number }> = [];
    await phases.run(
      `slow-handshakes: ${durationSeconds} s of slow clients`,
      durationSeconds + 30,
      async (context) => {
        const started = performance.now();
        const stop = new AbortController();
        context.signal.addEventListener("abort", () => stop.abort());
        const controlling = control.run(system.tlsRoute, stop.signal, CONTROL_PACE);
        for (const fraction of [0.5, 1]) {
          const wait = started + durationSeconds * 1000 * fraction - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          openAt.push({
            atSeconds: durationSeconds * fraction,
            open: clients.filter((c) => c.conn?.open).length,
          });
          context.progress = `${count(control.attempts)} control requests, ${count(control.succeeded)} ok`;
        }
        stop.abort();
        await controlling;
      },
    );
    return outcome(
      {
        connections,
        sourceAddresses: SOURCE_ADDRESSES,
        durationSeconds,
        openedAtStart,
        openAt,
        closedByNode,
        reconnects,
        control: {
          attempts: control.attempts,
          succeeded: control.succeeded,
          successRate: control.successRate,
        },
      },
      control.describe(),
      openFailures,
    );
  } finally {
    stopping = true;
    for (const client of clients) client.stop();
    await system.stop();
  }
}

function outcome(
  report: SlowHandshakesReport,
  control: string,
  openFailures: Record<string, number>,
): ScenarioOutcome {
  const failed = Object.entries(openFailures).map(([reason, n]) => `${reason} ×${n}`).join(", ");
  const figures = [
    `${count(report.openedAtStart)} of ${count(report.connections)} slow connections open from ` +
    `${report.sourceAddresses.join(", ")}${
      failed === "" ? "" : ` (connects failed: ${failed})`
    }, one byte every ` +
    `${BYTE_INTERVAL_MS / 1000} s`,
    `slow connections open: ${
      report.openAt.map((o) => `${count(o.open)} after ${o.atSeconds} s`).join(", ")
    }; ` +
    `${count(report.closedByNode)} closed by the node, ${count(report.reconnects)} reconnects`,
    `control requests from 127.0.0.1 (one every ${CONTROL_PACE.intervalMs} ms, at most ${CONTROL_PACE.maxInFlight} at once): ${control}`,
  ];
  const failures: string[] = [];
  if (report.control.successRate < CONTROL_SUCCESS_RATE) {
    failures.push(
      `only ${
        (report.control.successRate * 100).toFixed(1)
      }% of control requests succeeded while slow clients ` +
        `held handshakes (at least ${CONTROL_SUCCESS_RATE * 100}% expected)`,
    );
  }
  return { scenario: "slow-handshakes", figures, failures, report };
}
