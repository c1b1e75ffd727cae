/**
 * One-line logging to stderr, as `key=value` text or as JSON lines (`logFormat`), and rate-limited reporting for
 * events that can come in floods.
 *
 * @module
 */

/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let minimumRank = LEVEL_RANK.info;

/** Sets the lowest level that is printed (default `info`). */
export function setLogLevel(level: LogLevel): void {
  minimumRank = LEVEL_RANK[level];
}

/** How lines are written: `text` (`ts LEVEL component: message key=value ...`) or `json` (one object a line). */
export type LogFormat = "text" | "json";

let format: LogFormat = "text";

/** Sets how lines are written (default `text`). */
export function setLogFormat(next: LogFormat): void {
  format = next;
}

/** Field values printed after the message as `key=value`. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** A logger for one component (`relay`, `hub`, `agent`, ...). */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const encoder = new TextEncoder();

function formatValue(value: string | number | boolean): string {
  const text = String(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** The keys every JSON line starts with; a field of the same name is written as `field_<name>`. */
const JSON_LINE_KEYS: ReadonlySet<string> = new Set(["ts", "level", "component", "msg"]);

/** One log line as written, without its line feed. Pure. */
export function formatLogLine(
  lineFormat: LogFormat,
  line: { ts: Date; level: LogLevel; component: string; message: string; fields?: LogFields },
): string {
  const { ts, level, component, message, fields } = line;
  if (lineFormat === "json") {
    const object: Record<string, string | number | boolean> = {
      ts: ts.toISOString(),
      level,
      component,
      msg: message,
    };
    for (const [key, value] of Object.entries(fields ?? {})) {
      if (value !== undefined) object[JSON_LINE_KEYS.has(key) ? `field_${key}` : key] = value;
    }
    return JSON.stringify(object);
  }
  let text = `${ts.toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${message}`;
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value !== undefined) text += ` ${key}=${formatValue(value)}`;
  }
  return text;
}

function emit(level: LogLevel, component: string, message: string, fields?: LogFields): void {
  if (LEVEL_RANK[level] < minimumRank) return;
  const line = formatLogLine(format, { ts: new Date(), level, component, message, fields });
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // A closed stderr must never take the proxy down.
  }
}

/**
 * Creates a logger whose lines name the component.
 *
 * @example
 * ```ts
 * import { createLogger } from "./logger.ts";
 * createLogger("relay").info("listening", { port: 443 });
 * // 2026-11-26T11:02:38.123Z INFO  relay: listening port=443
 * // or, with setLogFormat("json"):
 * // {"ts":"2026-11-26T11:02:38.123Z","level":"info","component":"relay","msg":"listening","port":443}
 * ```
 */
export function createLogger(component: string): Logger {
  return {
    debug: (message, fields) => emit("debug", component, message, fields),
    info: (message, fields) => emit("info", component, message, fields),
    warn: (message, fields) => emit("warn", component, message, fields),
    error: (message, fields) => emit("error", component, message, fields),
  };
}

/**
 * Logs the first few events of each kind per window as they happen, then counts the rest and reports the count
 * once per window, so that a flood (a scan, a broken client in a loop) costs one line per window, not one per
 * event, while every event is still accounted for.
 */
export class RateLimitedLog {
  readonly #log: Logger;
  readonly #level: LogLevel;
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #windows = new Map<string, { startMs: number; logged: number; suppressed: number }>();
  readonly #totals = new Map<string, number>();
  readonly #onEvent: ((kind: string, fields: LogFields | undefined) => void) | undefined;

  /** `onEvent` sees every event, logged or not (the node counts them into its metrics there). */
  constructor(
    log: Logger,
    options: {
      level?: LogLevel;
      perWindow?: number;
      windowMs?: number;
      onEvent?: (kind: string, fields: LogFields | undefined) => void;
    } = {},
  ) {
    this.#log = log;
    this.#onEvent = options.onEvent;
    this.#level = options.level ?? "info";
    this.#perWindow = options.perWindow ?? 5;
    this.#windowMs = options.windowMs ?? 10_000;
  }

  /** Counts one event of `kind`, logging it unless its window's allowance is used up. */
  event(kind: string, message: string, fields?: LogFields): void {
    this.#totals.set(kind, (this.#totals.get(kind) ?? 0) + 1);
    this.#onEvent?.(kind, fields);
    const now = Date.now();
    let window = this.#windows.get(kind);
    if (window === undefined || now - window.startMs >= this.#windowMs) {
      if (window !== undefined && window.suppressed > 0) this.#reportSuppressed(kind, window.suppressed);
      window = { startMs: now, logged: 0, suppressed: 0 };
      this.#windows.set(kind, window);
    }
    if (window.logged < this.#perWindow) {
      window.logged += 1;
      this.#log[this.#level](message, fields);
    } else {
      window.suppressed += 1;
    }
  }

  /** Events of `kind` counted since start. */
  total(kind: string): number {
    return this.#totals.get(kind) ?? 0;
  }

  /** All counters, for status output. */
  totals(): ReadonlyMap<string, number> {
    return this.#totals;
  }

  /**
   * Reports the counts held back in windows that are over; call periodically. At shutdown pass `all`, so the
   * counts of the current windows are reported too instead of being lost.
   */
  flush(options: { all?: boolean } = {}): void {
    const now = Date.now();
    for (const [kind, window] of this.#windows) {
      if (window.suppressed > 0 && (options.all || now - window.startMs >= this.#windowMs)) {
        this.#reportSuppressed(kind, window.suppressed);
        window.suppressed = 0;
      }
    }
  }

  #reportSuppressed(kind: string, count: number): void {
    this.#log[this.#level](
      `${count} more ${kind} events in the last ${this.#windowMs / 1000}s (not logged one by one)`,
      {
        total: this.#totals.get(kind),
      },
    );
  }
}
