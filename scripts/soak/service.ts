/**
 * The services behind the soak's agent, in a process of their own: a TLS and a plain traffic service
 * (`SEND`, `SINK`, `ECHO`, see `tests/helpers/traffic.ts`). Apart from the soak's clients, so that thousands
 * of held connections count once against each process's open-file limit, and the services' work does not
 * share an event loop with the clients that measure.
 *
 * Usage: `deno run --allow-net --allow-read scripts/soak/service.ts --cert FILE --key FILE`; prints
 * `{"tls":N,"http":N}` on one line once both listen, and runs until killed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startTrafficService } from "../../tests/helpers/traffic.ts";

/** The line the service prints once it listens. */
export interface ServicePorts {
  readonly tls: number;
  readonly http: number;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { cert: { type: "string" }, key: { type: "string" } },
    strict: true,
  });
  if (values.cert === undefined || values.key === undefined) {
    console.error("usage: service.ts --cert FILE --key FILE");
    Deno.exit(2);
  }
  const certificate = {
    certPem: Deno.readTextFileSync(values.cert),
    keyPem: Deno.readTextFileSync(values.key),
  };
  const tls = await startTrafficService({ certificate });
  const plain = await startTrafficService({ tls: false });
  const ports: ServicePorts = { tls: tls.port, http: plain.port };
  console.log(JSON.stringify(ports));
}
