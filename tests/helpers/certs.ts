/**
 * Test certificates: one private CA per test process, a hub certificate for 127.0.0.1/localhost and service
 * certificates for the test names. Made once and shared, since key generation is the slow part.
 *
 * @module
 */

import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueCertificate,
  type IssuedCertificate,
} from "../../scripts/dev_certs.ts";

/** Everything a test needs to run TLS on loopback. */
export interface TestCertificates {
  readonly ca: CertificateAuthority;
  /** For the hub (and peer hubs): `localhost`, `127.0.0.1`. */
  readonly hub: IssuedCertificate;
  /** For services behind agents: `*.test.nexus`, `app.test.nexus`, `localhost`. */
  readonly service: IssuedCertificate;
}

let shared: Promise<TestCertificates> | undefined;

/** The shared test certificates. */
export function testCertificates(): Promise<TestCertificates> {
  shared ??= (async () => {
    const ca = await createCertificateAuthority({ commonName: "Nexus test CA" });
    const hub = await issueCertificate(ca, { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    const service = await issueCertificate(ca, {
      dnsNames: ["app.test.nexus", "*.test.nexus", "*.wild.nexus", "localhost"],
    });
    return { ca, hub, service };
  })();
  return shared;
}
