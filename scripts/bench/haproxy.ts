/**
 * HAProxy as the reference of the benchmark: SNI passthrough in `mode tcp`, the configuration operators use
 * for exactly what Nexus does on one node (read the ClientHello, route by `req.ssl_sni`, splice bytes).
 *
 * @module
 */

/** How to install HAProxy where it is missing (Debian and Ubuntu). */
export const HAPROXY_INSTALL_HINT = "apt-get install haproxy";

/** The installed HAProxy's version line, or null when `haproxy` is not on the PATH. */
export async function haproxyVersion(): Promise<string | null> {
  try {
    const output = await new Deno.Command("haproxy", { args: ["-v"], stdout: "piped", stderr: "null" })
      .output();
    if (!output.success) return null;
    const first = new TextDecoder().decode(output.stdout).split("\n")[0];
    return /version (\S+)/.exec(first)?.[1] ?? first.trim();
  } catch {
    return null;
  }
}

/** Where HAProxy listens and where it sends the one name it routes. */
export interface HaproxySettings {
  readonly listenPort: number;
  readonly servicePort: number;
  readonly serverName: string;
  readonly maxConnections: number;
}

/**
 * The configuration: wait up to 5 s for a complete ClientHello, route by its SNI, refuse anything else. The
 * thread count is left at HAProxy's default (one per CPU), as an operator would run it.
 */
export function haproxyConfig(settings: HaproxySettings): string {
  return `global
  maxconn ${settings.maxConnections}

defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m

frontend tls_in
  bind 127.0.0.1:${settings.listenPort}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend service if { req.ssl_sni -i ${settings.serverName} }
  default_backend refuse

backend service
  server service1 127.0.0.1:${settings.servicePort}

backend refuse
  tcp-request content reject
`;
}
