/**
 * The `admin` block of the node and agent configs: where the admin listener (health, readiness, metrics, status
 * and its page) listens, and the bearer token that guards it.
 *
 * @module
 */

import { readListenAddress, readSecret } from "./sources.ts";
import type { MapReader } from "./yaml_reader.ts";

/** The admin listener's settings; absent from a config without an `admin` block (no listener). */
export interface AdminSettings {
  readonly hostname: string;
  readonly port: number;
  /** The bearer token every route but `/healthz` and the page needs; absent: none (loopback only). */
  readonly token?: Uint8Array;
}

/** The `admin` key of both configs. */
export interface AdminKeys {
  readonly admin?: AdminSettings;
}

/**
 * Whether `hostname` reaches this machine only: `localhost`, 127.0.0.0/8 or `::1`. An empty host (":9100")
 * listens on every address, so it is not.
 */
function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * Reads `admin: { listenAddress, token | tokenFile | tokenEnv }`. A listener on an address other machines can
 * reach must have a token: without one it is a problem at `admin.listenAddress`.
 */
export function readAdminKeys(root: MapReader, configDir: string): AdminKeys {
  if (!root.has("admin")) return {};
  const map = root.map("admin");
  const address = readListenAddress(map, "listenAddress", "127.0.0.1:9100");
  const token = readSecret(map, "token", configDir, { required: false });
  const tokenGiven = ["token", "tokenFile", "tokenEnv"].some((key) => map.has(key));
  if (address === undefined) return {};
  if (!tokenGiven && !isLoopbackHost(address.hostname)) {
    map.problem(
      "listenAddress",
      `${address.hostname} is reachable from other machines: set tokenFile or tokenEnv, so that only who ` +
        "holds the token reads metrics and status, or listen on 127.0.0.1",
    );
  }
  return {
    admin: { hostname: address.hostname, port: address.port, ...(token === undefined ? {} : { token }) },
  };
}
