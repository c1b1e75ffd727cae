/**
 * Entry point of the `nexus` program: `nexus serve`, `nexus agent`, `nexus token`, `nexus check`,
 * `nexus version`.
 *
 * @module
 */

import { runCli } from "./cli/cli.ts";

if (import.meta.main) Deno.exit(await runCli(Deno.args));
