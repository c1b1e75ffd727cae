/**
 * `deno task demo`: a node, an agent and a sample HTTPS service on loopback, with demo-only certificates,
 * then a `curl` line to paste. The page is served end to end through the node, with the service's own
 * certificate: the node never sees inside the TLS.
 *
 * Everything it writes goes to one temporary directory (certificates, the node and agent configs, which are
 * real config files loaded the same way `nexus serve` and `nexus agent` load them). Ctrl-C stops it.
 *
 * Ports (override with NEXUS_DEMO_TLS_PORT, NEXUS_DEMO_HTTP_PORT, NEXUS_DEMO_HUB_PORT): 8443 for TLS clients,
 * 8080 for plain HTTP, 9443 for the hub.
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
export const DEMO_HOSTNAME = "app.demo.test";

/** A running demo: what a user (or a test) needs to reach it, and how to stop it. */
export interface Demo {
  readonly dir: string;
  readonly tlsPort: number;
  readonly httpPort: number;
  readonly curlCommand: string;
  stop(): Promise<void>;
}

function portFromEnv(name: string, fallback: number): number {
  const value = Deno.env.get(name);
  return value === undefined ? fallback : Number(value);
}

/** Starts the demo; ports 0 pick free ports (the tests do that). */
export async function startDemo(ports: { tls: number; http: number; hub: number }): Promise<Demo> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-demo-" });
  const ca = await createCertificateAuthority({ commonName: "Nexus demo CA" });
  const hubCert = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const serviceCert = await issueCertificate(ca, { dnsNames: [DEMO_HOSTNAME] });
  const secret = crypto.randomUUID();
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await Deno.writeTextFile(`${dir}/hub.pem`, hubCert.certPem);
  await Deno.writeTextFile(`${dir}/hub-key.pem`, hubCert.keyPem, { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/backends.secret`, secret, { mode: 0o600 });

  // The sample service: HTTPS with its own certificate, and plain HTTP for ACME-style challenges.
  const service = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: serviceCert.certPem,
      key: serviceCert.keyPem,
      onListen: () => {},
    },
    (request) =>
      new Response(
        `Hello from the demo service behind Nexus Proxy.\n` +
          `You asked for ${new URL(request.url).pathname} on ${new URL(request.url).host}.\n` +
          `TLS ended here, at the service: the node only forwarded encrypted bytes.\n`,
      ),
  );
  const challenges = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => new Response(`plain HTTP reached the service: ${new URL(request.url).pathname}\n`),
  );

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
  const node = new Node(readNodeConfig(await Deno.readTextFile(`${dir}/node.yaml`), `${dir}/node.yaml`, dir));
  const tlsPort = node.relay.ports[0].port;
  const httpPort = node.relay.ports[1].port;

  await Deno.writeTextFile(
    `${dir}/agent.yaml`,
    `# Demo agent: serves ${DEMO_HOSTNAME} from the local sample service.
name: demo-agent
hubs: ["wss://127.0.0.1:${node.hubAddress.port}/connect"]
hubCaFile: ca.pem
hostnames: [${DEMO_HOSTNAME}]
token:
  secretFile: backends.secret
targets:
  ${DEMO_HOSTNAME}:
    tls: 127.0.0.1:${service.addr.port}
    http: 127.0.0.1:${challenges.addr.port}
drainTimeoutSeconds: 1
`,
  );
  const agentConfig = readAgentConfig(await Deno.readTextFile(`${dir}/agent.yaml`), `${dir}/agent.yaml`, dir);
  const agent = new Agent(agentSettings(agentConfig), createLogger("agent"));
  agent.start();
  if (!(await agent.whenConnected(10_000))) throw new Error("the demo agent could not connect to the node");

  return {
    dir,
    tlsPort,
    httpPort,
    curlCommand: `curl --cacert ${dir}/ca.pem --resolve ${DEMO_HOSTNAME}:${tlsPort}:127.0.0.1 ` +
      `https://${DEMO_HOSTNAME}:${tlsPort}/`,
    async stop() {
      await agent.stop(0);
      await node.shutdown(0);
      await service.shutdown();
      await challenges.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

if (import.meta.main) {
  const demo = await startDemo({
    tls: portFromEnv("NEXUS_DEMO_TLS_PORT", 8443),
    http: portFromEnv("NEXUS_DEMO_HTTP_PORT", 8080),
    hub: portFromEnv("NEXUS_DEMO_HUB_PORT", 9443),
  });
  console.log(`
Nexus demo is running (files in ${demo.dir}).

Through the node, over TLS that only the service can decrypt:
  ${demo.curlCommand}

Plain HTTP on the Host port (how ACME HTTP-01 challenges reach a backend):
  curl --resolve ${DEMO_HOSTNAME}:${demo.httpPort}:127.0.0.1 http://${DEMO_HOSTNAME}:${demo.httpPort}/.well-known/acme-challenge/test

Press Ctrl-C to stop.`);
  await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
  await demo.stop();
}
