/**
 * The clients of the soak scenarios: raw TCP connections from a chosen loopback source address (what an
 * attacker's many addresses look like to the node), and control requests through the node whose bytes are
 * checked.
 *
 * `Deno.connect` always connects from 127.0.0.1; `node:net` can bind the local end first, and the node then
 * sees the connection as coming from that address (any of 127.0.0.0/8 works on Linux loopback).
 *
 * @module
 */

import net from "node:net";
import { quantile } from "../bench/load.ts";
import { testCertificates } from "../../tests/helpers/certs.ts";
import type { TrafficRoute } from "../../tests/helpers/traffic.ts";
import { writeAll } from "../../tests/helpers/services.ts";

/** A raw TCP connection whose far end may close it at any time. */
export class RawConnection {
  readonly #socket: net.Socket;
  /** When the connection ended (the node closed or reset it, or we did), as `performance.now()`; else null. */
  closedAtMs: number | null = null;
  /** Resolves once the connection has ended, whoever ended it. */
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.closed = new Promise((resolve) => {
      socket.once("close", () => {
        this.closedAtMs ??= performance.now();
        resolve();
      });
    });
    // An error is followed by "close"; without a listener it would be thrown.
    socket.on("error", () => {});
    // Whatever the node answers (an alert, a ServerHello) is read and dropped, so it never backs up.
    socket.on("data", () => {});
  }

  /**
   * Connects to `port` on 127.0.0.1 from `localAddress`; fails with the reason when the connection is refused
   * or not established within `timeoutMs`.
   */
  static connect(port: number, localAddress: string, timeoutMs = 10_000): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, localAddress });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection from ${localAddress} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new RawConnection(socket));
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      });
    });
  }

  /** Whether the connection is still open. */
  get open(): boolean {
    return this.closedAtMs === null;
  }

  /** Writes `bytes` unless the connection has ended. */
  write(bytes: Uint8Array): void {
    if (this.open) this.#socket.write(bytes);
  }

  /** Closes the connection at once (a reset is fine: nothing is owed to the far end). */
  close(): void {
    this.#socket.destroy();
  }
}

/** Source addresses 127.0.0.`first` onward, `count` of them. */
export function loopbackAddresses(first: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `127.0.0.${first + i}`);
}

/** How one control request ended. */
export type ControlResult = { readonly ok: true; readonly ms: number } | {
  readonly ok: false;
  readonly reason: string;
};

let requestSeed = 1;

/**
 * One control request: a new TLS connection through the node to the echo service, `bytes` random bytes out
 * and the same bytes back, within `timeoutMs`. Never throws: a failure is a result with its reason. The
 * command and the payload go in one write, with Nagle off, so the request costs round trips, not delayed ACKs.
 */
export async function controlRequest(
  route: TrafficRoute,
  bytes = 64,
  timeoutMs = 5_000,
): Promise<ControlResult> {
  const started = performance.now();
  const payload = new Uint8Array(bytes).map((_, i) => (i * 31 + requestSeed) & 0xff);
  requestSeed += 1;
  let conn: Deno.Conn | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exchange = async (): Promise<ControlResult> => {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: route.port });
    conn = tcp;
    tcp.setNoDelay(true);
    conn = await Deno.startTls(tcp, {
      hostname: route.hostname,
      caCerts: [(await testCertificates()).ca.certPem],
    });
    const command = new TextEncoder().encode("ECHO\n");
    const request = new Uint8Array(command.length + bytes);
    request.set(command);
    request.set(payload, command.length);
    await writeAll(conn, request);
    const answer = new Uint8Array(bytes);
    for (let got = 0; got < bytes;) {
      const n = await conn.read(answer.subarray(got));
      if (n === null) return { ok: false, reason: `closed after ${got} of ${bytes} echoed bytes` };
      got += n;
    }
    if (!answer.every((byte, i) => byte === payload[i])) return { ok: false, reason: "other bytes echoed" };
    return { ok: true, ms: performance.now() - started };
  };
  try {
    return await Promise.race([
      exchange(),
      new Promise<ControlResult>((resolve) => {
        timer = setTimeout(
          () => resolve({ ok: false, reason: `no echo within ${timeoutMs / 1000} s` }),
          timeoutMs,
        );
      }),
    ]);
  } catch (error) {
    return { ok: false, reason: describeError(error) };
  } finally {
    clearTimeout(timer);
    try {
      (conn as Deno.Conn | null)?.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * Control requests started on a schedule, one every `intervalMs`, with at most `maxInFlight` open at once (a
 * request waits for a free place rather than piling up), until a signal aborts; their tally.
 */
export class ControlClient {
  attempts = 0;
  succeeded = 0;
  readonly failures = new Map<string, number>();
  readonly #latencies: number[] = [];

  /** Runs until `signal` aborts; resolves once the requests in flight have ended. */
  async run(
    route: TrafficRoute,
    signal: AbortSignal,
    options: { intervalMs: number; maxInFlight: number },
  ): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    while (!signal.aborted) {
      if (inFlight.size >= options.maxInFlight) {
        await Promise.race(inFlight);
        continue;
      }
      const request: Promise<void> = controlRequest(route).then((result) => {
        inFlight.delete(request);
        // A request cut short by the end of the measurement is not counted.
        if (signal.aborted && !result.ok) return;
        this.attempts += 1;
        if (result.ok) {
          this.succeeded += 1;
          this.#latencies.push(result.ms);
        } else this.failures.set(result.reason, (this.failures.get(result.reason) ?? 0) + 1);
      });
      inFlight.add(request);
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs));
    }
    await Promise.all(inFlight);
  }

  /** Succeeded over attempted (1 when nothing was attempted). */
  get successRate(): number {
    return this.attempts === 0 ? 1 : this.succeeded / this.attempts;
  }

  /** The `q` quantile of the successful requests' times, in ms (nearest rank). */
  latencyMs(q: number): number {
    return quantile([...this.#latencies].sort((a, b) => a - b), q);
  }

  /** "1,234 of 1,250 ok (98.7%), p50 4.1 ms, p99 30.2 ms; failures: no echo within 5 s ×16". */
  describe(): string {
    const failures = [...this.failures].sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([reason, n]) => `${reason} ×${n}`);
    const latency = this.succeeded === 0
      ? ""
      : `, p50 ${this.latencyMs(0.5).toFixed(1)} ms, p99 ${this.latencyMs(0.99).toFixed(1)} ms`;
    return `${count(this.succeeded)} of ${count(this.attempts)} ok (${
      (this.successRate * 100).toFixed(1)
    }%)` +
      latency + (failures.length === 0 ? "" : `; failures: ${failures.join(", ")}`);
  }
}

/**
 * Control requests for `seconds` before a scenario's load, to warm up the code paths and prove the path
 * works; throws when none succeeded.
 */
export async function warmUp(
  route: TrafficRoute,
  pace: { intervalMs: number; maxInFlight: number },
  seconds = 1,
): Promise<void> {
  const control = new ControlClient();
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), seconds * 1000);
  try {
    await control.run(route, stop.signal, pace);
  } finally {
    clearTimeout(timer);
  }
  if (control.succeeded === 0) {
    throw new Error(`the relay does not work even before the load: ${control.describe()}`);
  }
}

/** A thousands-separated count. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** The first line of an error, numbers kept. */
export function describeError(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.split("\n")[0].slice(0, 160);
}

/**
 * Whether the hub answers `GET /healthz` with `ok` over TLS (verified against `caPem`) within `timeoutMs`;
 * never throws: a failure is a result with its reason.
 */
export async function hubHealthy(port: number, caPem: string, timeoutMs = 5_000): Promise<ControlResult> {
  const started = performance.now();
  let conn: Deno.TlsConn | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ask = async (): Promise<ControlResult> => {
    conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [caPem] });
    await writeAll(
      conn,
      new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    );
    let answer = "";
    const buffer = new Uint8Array(4096);
    for (let n = await conn.read(buffer); n !== null && answer.length < 65_536; n = await conn.read(buffer)) {
      answer += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return /^HTTP\/1\.1 200 /.test(answer) && answer.endsWith("ok\n")
      ? { ok: true, ms: performance.now() - started }
      : { ok: false, reason: `answered ${JSON.stringify(answer.split("\r\n")[0])}` };
  };
  try {
    return await Promise.race([
      ask(),
      new Promise<ControlResult>((resolve) => {
        timer = setTimeout(
          () => resolve({ ok: false, reason: `no answer within ${timeoutMs / 1000} s` }),
          timeoutMs,
        );
      }),
    ]);
  } catch (error) {
    return { ok: false, reason: describeError(error) };
  } finally {
    clearTimeout(timer);
    try {
      (conn as Deno.TlsConn | null)?.close();
    } catch {
      // Already closed.
    }
  }
}
