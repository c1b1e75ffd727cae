/**
 * The command line of a script: `--help` prints the usage and exits 0; an unknown flag, a missing value or a
 * stray argument prints what was wrong and the usage, and exits 2 (never an uncaught error).
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** What {@linkcode parseFlags} returns for `O`: the values of its options. */
export type FlagValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ options: O; strict: true; allowPositionals: false }>
>["values"];

/** Parses `args` against `options` (plus `--help`), or exits as described above. */
export function parseFlags<const O extends ParseArgsOptionsConfig>(
  program: string,
  usage: string,
  args: readonly string[],
  options: O,
): FlagValues<O> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: { ...options, help: { type: "boolean" } } as O & { help: { type: "boolean" } },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    console.error(
      `${program}: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}\n${usage}`,
    );
    Deno.exit(2);
  }
  if ((parsed.values as Record<string, unknown>).help === true) {
    console.log(usage);
    Deno.exit(0);
  }
  return parsed.values;
}
