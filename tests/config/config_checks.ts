/**
 * What the node and agent config tests share: the problems a read reports, as the operator sees them, and the
 * property every read must hold (a typed config, or a ConfigError whose problems point into the file).
 */

import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/yaml_reader.ts";

/** The problems `read` reports (one line each, as `nexus check` prints them), or "valid". */
export function problemsOf(read: () => unknown): string[] | "valid" {
  try {
    read();
    return "valid";
  } catch (error) {
    if (error instanceof ConfigError) return error.message.split("\n");
    throw error;
  }
}

/** Reads `text` with `read`; anything thrown that is not a ConfigError fails. Problems must point into the file. */
export function readsOrExplains(text: string, read: (text: string) => unknown): void {
  try {
    read(text);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    assert.ok(error.problems.length > 0);
    const lineCount = text.split(/\r\n|\r|\n/).length;
    for (const problem of error.problems) {
      assert.ok(problem.line >= 1 && problem.line <= lineCount, `line ${problem.line} of ${lineCount}`);
      assert.ok(problem.column >= 1, `column ${problem.column}`);
      assert.ok(problem.message.length > 0);
    }
  }
}
