/**
 * Keys that the node and the agent configs share, read the same way in both.
 *
 * @module
 */

import type { LogFormat, LogLevel } from "../log/logger.ts";
import type { MapReader } from "./yaml_reader.ts";

/** Log levels accepted by `logLevel`. */
const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
/** Line formats accepted by `logFormat`. */
const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** `drainTimeoutSeconds`, `idleTimeoutSeconds`, `logLevel` and `logFormat`. */
export interface OperationKeys {
  readonly drainTimeoutSeconds: number;
  readonly idleTimeoutSeconds: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
}

/** Reads the top-level operation keys; the idle timeout's default differs between node and agent. */
export function readOperationKeys(root: MapReader, defaults: { idleTimeoutSeconds: number }): OperationKeys {
  const level = root.string("logLevel", { default: "info" });
  const known = (LOG_LEVELS as readonly string[]).includes(level);
  if (!known) root.problem("logLevel", `expected one of ${LOG_LEVELS.join(", ")}, got "${level}"`);
  const format = root.string("logFormat", { default: "text" });
  const knownFormat = (LOG_FORMATS as readonly string[]).includes(format);
  if (!knownFormat) root.problem("logFormat", `expected one of ${LOG_FORMATS.join(", ")}, got "${format}"`);
  return {
    drainTimeoutSeconds: root.integer("drainTimeoutSeconds", { min: 0, max: 3_600, default: 30 }),
    idleTimeoutSeconds: root.integer("idleTimeoutSeconds", {
      min: 0,
      max: 7 * 86_400,
      default: defaults.idleTimeoutSeconds,
    }),
    logLevel: known ? level as LogLevel : "info",
    logFormat: knownFormat ? format as LogFormat : "text",
  };
}

/** `limits.legacyStreamBufferBytes` and `limits.halfClosedTimeoutSeconds`. */
export interface StreamLimitKeys {
  readonly legacyStreamBufferBytes: number;
  readonly halfClosedTimeoutSeconds: number;
}

/** Reads the per-stream limits both sides apply. */
export function readStreamLimitKeys(limits: MapReader): StreamLimitKeys {
  return {
    legacyStreamBufferBytes: limits.integer("legacyStreamBufferBytes", {
      min: 64 * 1024,
      max: 1024 * 1024 * 1024,
      default: 4 * 1024 * 1024,
    }),
    halfClosedTimeoutSeconds: limits.integer("halfClosedTimeoutSeconds", {
      min: 0,
      max: 86_400,
      default: 60,
    }),
  };
}
