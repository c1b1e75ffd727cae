/**
 * Pebble, Let's Encrypt's ACME test server, as a child process on loopback with `pebble-challtestsrv` as its
 * DNS (every name resolves to 127.0.0.1), both from Debian's `pebble` package. Its HTTP-01 validation really
 * connects to the port given as `httpPort` (the node's HTTP relay port); nothing is faked
 * (`PEBBLE_VA_ALWAYS_VALID` is never set). Nonces are never rejected at random and validation does not sleep,
 * so the tests are quick and repeatable, and authorizations are never reused, so every order is validated.
 *
 * @module
 */

import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueCertificate,
  type IssuedCertificate,
} from "../../scripts/dev_certs.ts";
import { freePort } from "../mesh/mesh_fixtures.ts";
import { WatchedProcess } from "./processes.ts";

const PEBBLE = "/usr/bin/pebble";
const CHALLTESTSRV = "/usr/bin/pebble-challtestsrv";

/** Why tests that need Pebble cannot run here, or `null` when they can. */
export function pebbleMissing(): string | null {
  for (const program of [PEBBLE, CHALLTESTSRV]) {
    try {
      Deno.statSync(program);
    } catch {
      return `${program} is not installed (Debian package pebble; .ci/run installs it)`;
    }
  }
  return null;
}

/** A running Pebble with its DNS. */
export interface Pebble {
  readonly directoryUrl: string;
  /** The CA of Pebble's own HTTPS listener, PEM (what `hubAcme.caFile` names), and the file holding it. */
  readonly listenerCaPem: string;
  readonly listenerCaFile: string;
  /** Everything Pebble logged so far. */
  readonly lines: readonly string[];
  /** Orders placed so far (Pebble logs each one). */
  orders(): number;
  /** HTTP-01 validation requests Pebble made so far. */
  validations(): number;
  /** The root that Pebble's certificates chain to (new at each start), PEM. */
  issuingRoot(): Promise<string>;
  /** Stops both processes; idempotent. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startPebble}. */
export interface PebbleOptions {
  /** The port Pebble validates HTTP-01 on: the node's HTTP relay port. */
  readonly httpPort: number;
  /** Lifetime of the certificates it issues (default Pebble's, five years). */
  readonly certificateValiditySeconds?: number;
  /** Pebble's ACME port; a free one unless given (so a restarted Pebble can come back on the same URL). */
  readonly port?: number;
  /** Percentage of good nonces Pebble rejects as `badNonce` anyway (default 0). */
  readonly nonceRejectPercent?: number;
}

let sharedListener: Promise<{ ca: CertificateAuthority; listener: IssuedCertificate }> | undefined;

/** The certificate of Pebble's HTTPS listener, the same for every Pebble of a test process (a restarted one too). */
function listenerCertificates(): Promise<{ ca: CertificateAuthority; listener: IssuedCertificate }> {
  sharedListener ??= (async () => {
    const ca = await createCertificateAuthority({ commonName: "Pebble listener test CA" });
    const listener = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    return { ca, listener };
  })();
  return sharedListener;
}

/** Starts challtestsrv and Pebble and waits until Pebble serves its directory. */
export async function startPebble(options: PebbleOptions): Promise<Pebble> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-pebble-" });
  const { ca, listener } = await listenerCertificates();
  const listenerCaFile = `${dir}/listener-ca.pem`;
  await Deno.writeTextFile(listenerCaFile, ca.certPem);
  await Deno.writeTextFile(`${dir}/cert.pem`, listener.certPem);
  await Deno.writeTextFile(`${dir}/key.pem`, listener.keyPem);
  const acmePort = options.port ?? freePort();
  const managementPort = freePort();
  const dnsPort = freePort();
  await Deno.writeTextFile(
    `${dir}/pebble.json`,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: `${dir}/cert.pem`,
        privateKey: `${dir}/key.pem`,
        httpPort: options.httpPort,
        tlsPort: freePort(),
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        ...(options.certificateValiditySeconds === undefined
          ? {}
          : { certificateValidityPeriod: options.certificateValiditySeconds }),
      },
    }),
  );
  const dns = new WatchedProcess(CHALLTESTSRV, [
    "-dns01",
    `127.0.0.1:${dnsPort}`,
    "-http01",
    "",
    "-https01",
    "",
    "-tlsalpn01",
    "",
    "-management",
    `127.0.0.1:${freePort()}`,
    "-defaultIPv4",
    "127.0.0.1",
    "-defaultIPv6",
    "",
  ], { cwd: dir });
  let pebble: WatchedProcess | undefined;
  const stop = async () => {
    await Promise.all([dns.stop(), pebble?.stop()]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await dns.waitForLine(/Starting management server/, { timeoutMs: 10_000 });
    pebble = new WatchedProcess(PEBBLE, [
      "-config",
      `${dir}/pebble.json`,
      "-dnsserver",
      `127.0.0.1:${dnsPort}`,
      "-strict=false",
    ], {
      cwd: dir,
      env: {
        PEBBLE_VA_NOSLEEP: "1",
        PEBBLE_WFE_NONCEREJECT: String(options.nonceRejectPercent ?? 0),
        PEBBLE_AUTHZREUSE: "0",
      },
    });
    await pebble.waitForLine(/ACME directory available/, { timeoutMs: 10_000 });
  } catch (error) {
    await stop();
    throw error;
  }
  const running = pebble;
  const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
  let stopped: Promise<void> | undefined;
  return {
    directoryUrl: `https://localhost:${acmePort}/dir`,
    listenerCaPem: ca.certPem,
    listenerCaFile,
    get lines() {
      return running.lines;
    },
    orders: () => running.matching(/Added order /).length,
    validations: () => running.matching(/Attempting to validate w\/ HTTP/).length,
    async issuingRoot() {
      const response = await fetch(`https://localhost:${managementPort}/roots/0`, { client });
      return await response.text();
    },
    stop() {
      stopped ??= (async () => {
        client.close();
        await stop();
      })();
      return stopped;
    },
  };
}
