/**
 * The program's version, from `deno.json` (the one place it is kept).
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };

/** The version, as `nexus version` prints it and `nexus_build_info` exposes it. */
export const VERSION: string = denoJson.version;
