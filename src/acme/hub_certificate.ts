/**
 * The hub's own certificate by ACME: loaded from the state directory when one is kept there and still valid,
 * otherwise obtained (HTTP-01, answered by the node itself on its HTTP relay port) before the hub starts; then
 * renewed in the background a third of its life before it expires, with backoff after failures, each failure
 * logged with the ACME server's problem document. A new certificate is saved first and then handed to the
 * hub, which keeps serving the one it has whenever anything fails.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { sleep } from "../links/reconnect.ts";
import { certificateFacts, createCertificateRequest } from "./certificate.ts";
import { AcmeClient, AcmeConnectionError } from "./client.ts";
import { Http01Responder } from "./http01.ts";
import { issueCertificate } from "./issue.ts";
import { type AccountKey, accountKey, generateAccountKeyPair } from "./jws.ts";
import { AcmeProblemError, describeProblem } from "./problem.ts";
import { RenewalSchedule, type RetryPolicy, type Validity } from "./renewal.ts";
import { AcmeStateDir, type StoredCertificate } from "./state_dir.ts";

/** The `hubAcme` block of the node config, validated. */
export interface HubAcmeSettings {
  /** The hub's public name: the certificate is for it, and the node answers its HTTP-01 challenges. */
  readonly hostname: string;
  /** Contact address given to the ACME server (expiry and policy mail), if any. */
  readonly email?: string;
  readonly directoryUrl: string;
  /** PEM of a CA to trust for the ACME server's HTTPS (a private ACME server), beside the system roots. */
  readonly caPem?: string;
  /** Where the account key and the certificate are kept. */
  readonly stateDir: string;
  /** Backoff after failed attempts. */
  readonly retry: RetryPolicy;
}

/** Where a renewed certificate goes: the node's hub (new connections get it, open sessions stay up). */
export interface HubCertificateSink {
  replaceHubCertificate(certPem: string, keyPem: string): void;
}

/** What {@linkcode HubCertificate.status} reports. */
export interface HubCertificateStatus {
  readonly hostname: string;
  /** End of the newest certificate (served, or saved for the next start when the hub could not take it). */
  readonly notAfter?: Date;
  /** Certificates obtained from the ACME server since start. */
  readonly issued: number;
  /** Failed attempts in a row. */
  readonly failures: number;
  /** Why the last attempt failed (with the server's problem document when it sent one). */
  readonly lastFailure?: string;
  /** A renewed certificate is saved but the running hub still serves the older one (restart to serve it). */
  readonly restartNeeded: boolean;
}

/** Longest single sleep: `setTimeout` cannot wait beyond 2^31 ms (24.8 days), so a longer wait is cut up. */
const MAX_SLEEP_MS = 86_400_000;

/** One hub name's certificate, from the state directory or the ACME server. */
export class HubCertificate {
  /** Answers the HTTP-01 challenges for the hub's name; the relay consults it for every HTTP request. */
  readonly responder: Http01Responder;
  readonly #settings: HubAcmeSettings;
  readonly #log: Logger;
  readonly #state: AcmeStateDir;
  readonly #schedule: RenewalSchedule;
  readonly #stopping = new AbortController();
  #accountKey: AccountKey | undefined;
  #accountKeyKept = false;
  #renewing: Promise<void> | undefined;
  #issued = 0;
  #lastFailure: string | undefined;
  #restartNeeded = false;

  constructor(settings: HubAcmeSettings, log: Logger) {
    this.#settings = settings;
    this.#log = log;
    this.responder = new Http01Responder(settings.hostname);
    this.#state = new AcmeStateDir(settings.stateDir);
    this.#schedule = new RenewalSchedule(settings.retry);
  }

  /** The hub's name. */
  get hostname(): string {
    return this.#settings.hostname;
  }

  /** What `/status` shows of the certificate. */
  get status(): HubCertificateStatus {
    const notAfterMs = this.#schedule.validity?.notAfterMs;
    return {
      hostname: this.hostname,
      ...(notAfterMs === undefined ? {} : { notAfter: new Date(notAfterMs) }),
      issued: this.#issued,
      failures: this.#schedule.failures,
      ...(this.#lastFailure === undefined ? {} : { lastFailure: this.#lastFailure }),
      restartNeeded: this.#restartNeeded,
    };
  }

  /**
   * Prepares the state directory (throws when it cannot be written) and loads the account key, then returns
   * the kept certificate when it is for the hub's name and not yet expired; a kept certificate past its
   * renewal time is served and renewed at once.
   */
  async loadKept(): Promise<StoredCertificate | undefined> {
    await this.#state.prepare();
    await this.#loadAccountKey();
    let kept: StoredCertificate | undefined;
    try {
      kept = await this.#state.loadCertificate(this.hostname);
    } catch (error) {
      this.#log.warn("kept hub certificate unusable; a new one will be requested", { why: describe(error) });
      return undefined;
    }
    if (kept === undefined) return undefined;
    const validity = this.#usableValidity(kept);
    if (validity === undefined) return undefined;
    this.#schedule.served(validity);
    this.#log.info("hub certificate loaded from the state directory", {
      hostname: this.hostname,
      file: this.#state.certificatePath(this.hostname),
      not_after: new Date(validity.notAfterMs).toISOString(),
    });
    return kept;
  }

  /**
   * Obtains the first certificate, trying again with backoff until it succeeds; each failure is logged with
   * why the hub cannot start yet. Resolves `undefined` when {@linkcode stop} is called first.
   */
  async obtainFirst(): Promise<StoredCertificate | undefined> {
    const signal = this.#stopping.signal;
    while (!signal.aborted) {
      try {
        return await this.#obtain();
      } catch (error) {
        if (signal.aborted) break;
        const delayMs = this.#schedule.failed(Date.now(), retryAfterOf(error));
        const fields = this.#failed(error);
        this.#log.error(`cannot start the hub: no certificate for ${this.hostname}`, {
          ...fields,
          retry_in_s: Math.round(delayMs / 1000),
        });
        await sleep(delayMs, signal);
      }
    }
    return undefined;
  }

  /** From now on renews in the background when due and hands each new certificate to `sink`. */
  startRenewing(sink: HubCertificateSink): void {
    this.#renewing ??= this.#renewLoop(sink);
  }

  /** Stops renewing; an attempt in flight is abandoned. Idempotent. */
  async stop(): Promise<void> {
    this.#stopping.abort(new Error("stopped"));
    await this.#renewing;
  }

  async #renewLoop(sink: HubCertificateSink): Promise<void> {
    const signal = this.#stopping.signal;
    while (!signal.aborted) {
      const waitMs = this.#schedule.nextAttemptMs(Date.now()) - Date.now();
      if (waitMs > 0) {
        await sleep(Math.min(waitMs, MAX_SLEEP_MS), signal);
        continue;
      }
      let renewed: StoredCertificate;
      const servedUntil = this.#schedule.validity?.notAfterMs;
      try {
        renewed = await this.#obtain();
      } catch (error) {
        if (signal.aborted) return;
        const delayMs = this.#schedule.failed(Date.now(), retryAfterOf(error));
        const fields = this.#failed(error);
        this.#log.warn("hub certificate renewal failed; the hub keeps serving its current certificate", {
          ...fields,
          expires: servedUntil === undefined ? undefined : new Date(servedUntil).toISOString(),
          retry_in_s: Math.round(delayMs / 1000),
        });
        continue;
      }
      try {
        sink.replaceHubCertificate(renewed.certPem, renewed.keyPem);
        this.#restartNeeded = false;
        this.#log.info("hub now serves the renewed certificate to new connections", {
          hostname: this.hostname,
        });
      } catch (error) {
        this.#restartNeeded = true;
        this.#log.warn(
          "renewed hub certificate saved, but the running hub cannot take it: restart the node",
          {
            file: this.#state.certificatePath(this.hostname),
            restart_before: servedUntil === undefined ? undefined : new Date(servedUntil).toISOString(),
            why: describe(error),
          },
        );
      }
    }
  }

  /** One attempt: account, order, HTTP-01, finalize, download, save. Marks the new certificate served. */
  async #obtain(): Promise<StoredCertificate> {
    const startedMs = Date.now();
    const key = await this.#loadAccountKey();
    this.#log.info("requesting a hub certificate", {
      hostname: this.hostname,
      directory: this.#settings.directoryUrl,
    });
    const client = new AcmeClient({
      directoryUrl: this.#settings.directoryUrl,
      accountKey: key,
      ...(this.#settings.caPem ? { caCerts: [this.#settings.caPem] } : {}),
      signal: this.#stopping.signal,
    });
    try {
      await client.account({
        existingKey: this.#accountKeyKept,
        ...(this.#settings.email ? { email: this.#settings.email } : {}),
      });
      this.#accountKeyKept = true;
      const request = await createCertificateRequest(this.hostname);
      const certPem = await issueCertificate(client, {
        hostname: this.hostname,
        csrDer: request.csrDer,
        responder: this.responder,
        signal: this.#stopping.signal,
      });
      const certificate = { certPem, keyPem: request.keyPem };
      const validity = this.#usableValidity(certificate);
      if (validity === undefined) {
        throw new Error("the ACME server issued a certificate that is not for the hub");
      }
      await this.#state.saveCertificate(this.hostname, certificate);
      this.#schedule.served(validity);
      this.#issued += 1;
      this.#lastFailure = undefined;
      this.#log.info("hub certificate obtained", {
        hostname: this.hostname,
        not_after: new Date(validity.notAfterMs).toISOString(),
        file: this.#state.certificatePath(this.hostname),
        took_ms: Date.now() - startedMs,
      });
      return certificate;
    } finally {
      client.close();
    }
  }

  /** Records a failed attempt; returns its log fields. */
  #failed(error: unknown): Record<string, string | number | undefined> {
    const fields = failureFields(error);
    this.#lastFailure = [fields.why, fields.problem].filter((part) => part !== undefined).join(": ");
    return fields;
  }

  /** The account key: kept in the state directory, or made now and saved before its first use. */
  async #loadAccountKey(): Promise<AccountKey> {
    if (this.#accountKey !== undefined) return this.#accountKey;
    let pair = await this.#state.loadAccountKey();
    this.#accountKeyKept = pair !== undefined;
    if (pair === undefined) {
      pair = await generateAccountKeyPair();
      await this.#state.saveAccountKey(pair);
    }
    this.#accountKey = await accountKey(pair);
    return this.#accountKey;
  }

  /** The certificate's validity when it names the hub and has not expired; logs why not otherwise. */
  #usableValidity(certificate: StoredCertificate): Validity | undefined {
    let facts;
    try {
      facts = certificateFacts(certificate.certPem);
    } catch (error) {
      this.#log.warn("hub certificate unreadable", { why: describe(error) });
      return undefined;
    }
    if (!facts.dnsNames.includes(this.hostname)) {
      this.#log.warn("kept hub certificate is for other names; a new one will be requested", {
        hostname: this.hostname,
        names: facts.dnsNames.join(","),
      });
      return undefined;
    }
    if (facts.notAfter.getTime() <= Date.now()) {
      this.#log.info("kept hub certificate has expired; a new one will be requested", {
        not_after: facts.notAfter.toISOString(),
      });
      return undefined;
    }
    return { notBeforeMs: facts.notBefore.getTime(), notAfterMs: facts.notAfter.getTime() };
  }
}

/** Log fields saying why an attempt failed: the problem document when the server sent one. */
function failureFields(error: unknown): Record<string, string | number | undefined> {
  if (error instanceof AcmeProblemError) {
    return {
      why: "the ACME server refused",
      problem: describeProblem(error.problem),
      url: error.url,
      retry_after_s: error.retryAfterMs === undefined ? undefined : Math.ceil(error.retryAfterMs / 1000),
    };
  }
  if (error instanceof AcmeConnectionError) return { why: error.message };
  return { why: describe(error) };
}

function retryAfterOf(error: unknown): number | undefined {
  return error instanceof AcmeProblemError ? error.retryAfterMs : undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
