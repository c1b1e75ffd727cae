/**
 * `deno task demo`: a node, an agent and a sample HTTPS service on loopback, with demo-only certificates,
 * then a `curl` line to paste. The page is served end to end through the node, with the service's own
 * certificate: the node never sees inside the TLS.
 *
 * Everything it writes goes to one temporary directory: certificates, and the node and agent configs, which are
 * real config files loaded the same way `nexus serve` and `nexus agent` load them. Ctrl-C stops it.
 *
 * Ports (override with NEXUS_DEMO_TLS_PORT, NEXUS_DEMO_HTTP_PORT, NEXUS_DEMO_HUB_PORT; 0 picks a free one):
 * 8443 for TLS clients, 8080 for plain HTTP, 9443 for the hub.
 *
 * @module
 */

import { Agent } from "../src/agent/agent.ts";
import { agentSettings } from "../src/cli/cli.ts";
import { readAgentConfig } from "../src/config/agent_config.ts";
import { readNodeConfig } from "../src/config/node_config.ts";
import { createLogger } from "../src/log/logger.ts";
import { Node } from "../src/node.ts";
import { createCertificateAuthority, issueCertificate } from "./dev_certs.ts";

/** The name the demo service answers to. */
const DEMO_HOSTNAME = "app.demo.test";

/** The ports of a demo: the node's relay and hub ports, and the sample service's TLS and plain-HTTP ports. */
export interface DemoPorts {
  readonly tls: number;
  readonly http: number;
  readonly hub: number;
  readonly serviceTls: number;
  readonly serviceHttp: number;
}

/** What {@linkcode writeDemoFiles} wrote. */
export interface DemoFiles {
  readonly nodeConfig: string;
  readonly agentConfig: string;
  readonly caFile: string;
  /** The sample service's certificate for {@linkcode DEMO_HOSTNAME}. */
  readonly service: { readonly certPem: string; readonly keyPem: string };
}

/**
 * Writes a demo's certificates, secret and configs into `dir`: what `nexus serve --config node.yaml` and
 * `nexus agent --config agent.yaml` need, for the in-process demo and for a compiled binary alike.
 */
export async function writeDemoFiles(dir: string, ports: DemoPorts): Promise<DemoFiles> {
  const ca = await createCertificateAuthority({ commonName: "Nexus demo CA" });
  const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const service = await issueCertificate(ca, { dnsNames: [DEMO_HOSTNAME] });
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await Deno.writeTextFile(`${dir}/hub.pem`, hub.certPem);
  await Deno.writeTextFile(`${dir}/hub-key.pem`, hub.keyPem, { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/backends.secret`, crypto.randomUUID(), { mode: 0o600 });
  await Deno.writeTextFile(
    `${dir}/node.yaml`,
    `# Demo node: loopback only.
backendListenAddress: "127.0.0.1:${ports.hub}"
hubTlsCertFile: hub.pem
hubTlsKeyFile: hub-key.pem
relayBindAddress: 127.0.0.1
relayPorts:
  - { port: ${ports.tls}, protocol: tls }
  - { port: ${ports.http}, protocol: http }
idleTimeoutSeconds: 60
backendsJWTSecretFile: backends.secret
drainTimeoutSeconds: 1
`,
  );
  await Deno.writeTextFile(
    `${dir}/agent.yaml`,
    `# Demo agent: serves ${DEMO_HOSTNAME} from the local sample service.
name: demo-agent
hubs: ["wss://127.0.0.1:${ports.hub}/connect"]
hubCaFile: ca.pem
hostnames: [${DEMO_HOSTNAME}]
token:
  secretFile: backends.secret
targets:
  ${DEMO_HOSTNAME}:
    tls: 127.0.0.1:${ports.serviceTls}
    http: 127.0.0.1:${ports.serviceHttp}
drainTimeoutSeconds: 1
`,
  );
  return {
    nodeConfig: `${dir}/node.yaml`,
    agentConfig: `${dir}/agent.yaml`,
    caFile: `${dir}/ca.pem`,
    service,
  };
}

/** The sample HTTPS service's page. */
function demoPage(request: Request): Response {
  const url = new URL(request.url);
  return new Response(
    `Hello from the demo service behind Nexus Proxy.\n` +
      `You asked for ${url.pathname} on ${url.host}.\n` +
      `TLS ended here, at the service: the node only forwarded encrypted bytes.\n`,
  );
}

/** The sample service's plain-HTTP side, where ACME HTTP-01 challenges would arrive. */
function challengePage(request: Request): Response {
  return new Response(`plain HTTP reached the service: ${new URL(request.url).pathname}\n`);
}

/** Starts the sample service on the demo's service ports. */
export function startDemoService(files: DemoFiles, ports: DemoPorts): Deno.HttpServer<Deno.NetAddr>[] {
  return [
    Deno.serve({
      hostname: "127.0.0.1",
      port: ports.serviceTls,
      cert: files.service.certPem,
      key: files.service.keyPem,
      onListen: () => {},
    }, demoPage),
    Deno.serve({ hostname: "127.0.0.1", port: ports.serviceHttp, onListen: () => {} }, challengePage),
  ];
}

/** A free TCP port on 127.0.0.1 right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** The curl command that fetches the demo page through the node's TLS port. */
export function demoCurlCommand(caFile: string, tlsPort: number): string {
  return `curl --cacert ${caFile} --resolve ${DEMO_HOSTNAME}:${tlsPort}:127.0.0.1 https://${DEMO_HOSTNAME}:${tlsPort}/`;
}

/** A running in-process demo. */
export interface Demo {
  readonly dir: string;
  readonly ports: DemoPorts;
  readonly curlCommand: string;
  stop(): Promise<void>;
}

/** Starts the demo in this process; a port of 0 picks a free one. */
async function startDemo(ports: { tls: number; http: number; hub: number }): Promise<Demo> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-demo-" });
  const chosen: DemoPorts = {
    tls: ports.tls || freePort(),
    http: ports.http || freePort(),
    hub: ports.hub || freePort(),
    serviceTls: freePort(),
    serviceHttp: freePort(),
  };
  const files = await writeDemoFiles(dir, chosen);
  const servers = startDemoService(files, chosen);
  const node = new Node(readNodeConfig(await Deno.readTextFile(files.nodeConfig), files.nodeConfig, dir));
  const agentConfig = readAgentConfig(await Deno.readTextFile(files.agentConfig), files.agentConfig, dir);
  const agent = new Agent(agentSettings(agentConfig), createLogger("agent"));
  agent.start();
  if (!(await agent.whenConnected(10_000))) throw new Error("the demo agent could not connect to the node");
  return {
    dir,
    ports: chosen,
    curlCommand: demoCurlCommand(files.caFile, chosen.tls),
    async stop() {
      await agent.stop(0);
      await node.shutdown(0);
      await Promise.all(servers.map((server) => server.shutdown()));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

if (import.meta.main) {
  const port = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
  const demo = await startDemo({
    tls: port("NEXUS_DEMO_TLS_PORT", 8443),
    http: port("NEXUS_DEMO_HTTP_PORT", 8080),
    hub: port("NEXUS_DEMO_HUB_PORT", 9443),
  });
  const http = demo.ports.http;
  console.log(`
Nexus demo is running (files in ${demo.dir}).

Through the node, over TLS that only the service can decrypt:
  ${demo.curlCommand}

Plain HTTP on the Host port (how ACME HTTP-01 challenges reach a backend):
  curl --resolve ${DEMO_HOSTNAME}:${http}:127.0.0.1 http://${DEMO_HOSTNAME}:${http}/.well-known/acme-challenge/test

Press Ctrl-C to stop.`);
  // The demo's node and agent run in this process from configs it made up, not from files it could re-read:
  // a SIGHUP (which would end the process and leave the files behind) is answered with a word instead.
  Deno.addSignalListener("SIGHUP", () => {
    console.log(
      "The demo does not reload: start `nexus serve --config FILE` to try a reload. Ctrl-C stops it.",
    );
  });
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", () => resolve());
    Deno.addSignalListener("SIGTERM", () => resolve());
  });
  await demo.stop();
}
