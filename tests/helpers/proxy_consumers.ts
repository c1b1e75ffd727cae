/**
 * Real consumers and producers of the PROXY protocol for tests, from Debian's packages, as child processes on
 * loopback with their configs in a temporary directory: nginx (`listen … proxy_protocol`) and HAProxy
 * (`accept-proxy`) answering every HTTP request, over TLS or plain, with the source and destination the
 * PROXY header told them; HAProxy as a TCP load balancer in front of a node (`send-proxy`,
 * `send-proxy-v2`). And a client that connects from a chosen loopback address, so that the address a
 * service reports can be checked against the client socket's own.
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { testCertificates } from "./certs.ts";
import { WatchedProcess } from "./processes.ts";
import { concat } from "./services.ts";
import { freePort } from "../mesh/mesh_fixtures.ts";

export const NGINX = "/usr/sbin/nginx";
export const HAPROXY = "/usr/sbin/haproxy";

/** Why `program` cannot run here (not installed, with the Debian package and where .ci/run gets it), or null. */
export function programMissing(program: string, debianPackage: string): string | null {
  try {
    Deno.statSync(program);
    return null;
  } catch {
    return `${program} is not installed (Debian package ${debianPackage}; .ci/run installs it)`;
  }
}

/** A running consumer: one plain HTTP and one HTTPS listener, both expecting a PROXY header first. */
export interface ProxyConsumer {
  readonly name: string;
  readonly httpPort: number;
  readonly tlsPort: number;
  readonly process: WatchedProcess;
  stop(): Promise<void>;
}

/**
 * Starts nginx answering `<$proxy_protocol_addr>:<$proxy_protocol_port> <server addr>:<server port>` (the
 * header's source and destination) on both listeners, with its own `$remote_addr:$remote_port` (set from the
 * header by the realip module) in an `X-Remote` header; the TLS one serves the test service certificate.
 */
export async function startNginxConsumer(): Promise<ProxyConsumer> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-nginx-" });
  const certs = await testCertificates();
  await Deno.writeTextFile(`${dir}/service.crt`, certs.service.certPem);
  await Deno.writeTextFile(`${dir}/service.key`, certs.service.keyPem);
  const httpPort = freePort();
  const tlsPort = freePort();
  const answer =
    "$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port";
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    [
      "daemon off;",
      "master_process off;",
      `pid ${dir}/nginx.pid;`,
      "error_log stderr warn;",
      "events { worker_connections 256; }",
      "http {",
      "  access_log off;",
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) =>
        `  ${kind}_temp_path ${dir}/${kind};`
      ),
      "  server {",
      `    listen 127.0.0.1:${httpPort} proxy_protocol;`,
      `    listen 127.0.0.1:${tlsPort} ssl proxy_protocol;`,
      `    ssl_certificate ${dir}/service.crt;`,
      `    ssl_certificate_key ${dir}/service.key;`,
      // The README's advice: with it, nginx's own $remote_addr (its logs, its access rules) is the client.
      "    set_real_ip_from 127.0.0.1;",
      "    real_ip_header proxy_protocol;",
      '    add_header X-Remote "$remote_addr:$remote_port" always;',
      "    default_type text/plain;",
      `    location / { return 200 "${answer}"; }`,
      "  }",
      "}",
      "",
    ].join("\n"),
  );
  const process = new WatchedProcess(NGINX, ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", "stderr"]);
  return await consumerStarted("nginx", process, dir, httpPort, tlsPort);
}

/**
 * Starts HAProxy answering `%[src]:%[src_port] %[dst]:%[dst_port]` on both listeners (`accept-proxy`), and the
 * source again in an `X-Remote` header.
 */
export async function startHaproxyConsumer(): Promise<ProxyConsumer> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-haproxy-" });
  const certs = await testCertificates();
  await Deno.writeTextFile(`${dir}/service.pem`, certs.service.certPem + certs.service.keyPem);
  const httpPort = freePort();
  const tlsPort = freePort();
  const answer =
    'http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]" ' +
    'hdr X-Remote "%[src]:%[src_port]"';
  await Deno.writeTextFile(
    `${dir}/haproxy.cfg`,
    [
      "global",
      "  maxconn 256",
      "defaults",
      "  mode http",
      "  timeout connect 5s",
      "  timeout client 30s",
      "  timeout server 30s",
      "frontend plain",
      `  bind 127.0.0.1:${httpPort} accept-proxy`,
      `  ${answer}`,
      "frontend secure",
      `  bind 127.0.0.1:${tlsPort} accept-proxy ssl crt ${dir}/service.pem`,
      `  ${answer}`,
      "",
    ].join("\n"),
  );
  const process = new WatchedProcess(HAPROXY, ["-db", "-f", `${dir}/haproxy.cfg`]);
  return await consumerStarted("HAProxy", process, dir, httpPort, tlsPort);
}

/** A load balancer in front of a node: each listener forwards to its node port with a PROXY header. */
export interface LoadBalancer {
  /** Listener port by name, as given to {@linkcode startHaproxyBalancer}. */
  readonly ports: Readonly<Record<string, number>>;
  readonly process: WatchedProcess;
  stop(): Promise<void>;
}

/** HAProxy in TCP mode: for each route, a listener that forwards to `127.0.0.1:nodePort` with `send-proxy(-v2)`. */
export async function startHaproxyBalancer(
  routes: Readonly<Record<string, { nodePort: number; version: 1 | 2 }>>,
): Promise<LoadBalancer> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-haproxy-lb-" });
  const ports: Record<string, number> = {};
  const lines = [
    "global",
    "  maxconn 256",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 30s",
    "  timeout server 30s",
  ];
  for (const [name, { nodePort, version }] of Object.entries(routes)) {
    ports[name] = freePort();
    lines.push(
      `listen ${name}`,
      `  bind 127.0.0.1:${ports[name]}`,
      `  server node 127.0.0.1:${nodePort} ${version === 1 ? "send-proxy" : "send-proxy-v2"}`,
    );
  }
  await Deno.writeTextFile(`${dir}/haproxy.cfg`, lines.join("\n") + "\n");
  const process = new WatchedProcess(HAPROXY, ["-db", "-f", `${dir}/haproxy.cfg`]);
  const stop = async () => {
    await process.stop();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    for (const port of Object.values(ports)) await waitListening(process, port);
  } catch (error) {
    await stop();
    throw error;
  }
  return { ports, process, stop };
}

async function consumerStarted(
  name: string,
  process: WatchedProcess,
  dir: string,
  httpPort: number,
  tlsPort: number,
): Promise<ProxyConsumer> {
  const stop = async () => {
    await process.stop();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await waitListening(process, httpPort);
    await waitListening(process, tlsPort);
  } catch (error) {
    await stop();
    throw error;
  }
  return { name, httpPort, tlsPort, process, stop };
}

/** Waits until something accepts connections on `port` (a probe that sends nothing and closes at once). */
async function waitListening(process: WatchedProcess, port: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (process.exitStatus !== null) {
      throw new Error(
        `the process exited (${process.exitStatus.code}) before listening:\n${process.lines.join("\n")}`,
      );
    }
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
    }
    if (Date.now() > deadline) {
      throw new Error(`nothing listened on port ${port}:\n${process.lines.join("\n")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** What a client saw of one request: its own socket's address, and the response's body. */
export interface ClientExchange {
  /** The client socket's own `ip:port`, as the service should report it. */
  readonly local: string;
  readonly status: number;
  /** Response header values by lower-case name. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: string;
}

/**
 * Sends `GET /` with `Host: hostname` to `127.0.0.1:port` from `localAddress` (any 127.x.y.z is this host's),
 * over TLS with SNI `hostname` (trusting the test CA) or plain, and reads the response to its end.
 */
export async function requestFrom(
  localAddress: string,
  port: number,
  options: { hostname: string; tls: boolean },
): Promise<ClientExchange> {
  const certs = await testCertificates();
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const local = `${socket.localAddress}:${socket.localPort}`;
  const stream: net.Socket = options.tls
    ? tls.connect({ socket, servername: options.hostname, ca: certs.ca.certPem })
    : socket;
  const response = await new Promise<string>((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    stream.once("error", reject);
    stream.once("end", () => resolve(new TextDecoder().decode(concat(...chunks))));
    stream.write(`GET / HTTP/1.1\r\nHost: ${options.hostname}\r\nConnection: close\r\n\r\n`);
  }).finally(() => stream.destroy());
  const [head, ...rest] = response.split("\r\n\r\n");
  const [statusLine, ...headerLines] = head.split("\r\n");
  const headers = new Map(headerLines.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
  }));
  return {
    local,
    status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0),
    headers,
    body: rest.join("\r\n\r\n"),
  };
}
