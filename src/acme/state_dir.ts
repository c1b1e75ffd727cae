/**
 * The ACME state directory: the account key and each certificate with its key, kept so that a restart reuses
 * them instead of asking the ACME server again (which counts new accounts and orders against rate limits).
 *
 * Layout: `account-key.json` (the account's private key, a JWK) and `<hostname>.pem` (the certificate's
 * private key, then its chain, leaf first). Both are written with mode 0600 and atomically (a temporary file
 * in the same directory, flushed, then renamed over the old one), so a crash leaves the old file or the new
 * one, never half of one, and a key never sits beside a certificate it does not belong to.
 *
 * @module
 */

/**
 * The one directory the released binaries may write under (baked into them by `scripts/compile.ts`, which can
 * be told another at build time): the default home of `hubAcme.stateDir`. Deno cannot grant a compiled binary
 * write access to a path known only when it runs, so it must be fixed when it is built.
 *
 * @example
 * ```ts
 * import { stateRoot } from "./state_dir.ts";
 * stateRoot("linux"); // "/var/lib/nexus"
 * ```
 */
export function stateRoot(os: typeof Deno.build.os = Deno.build.os): string {
  return os === "windows" ? "C:\\ProgramData\\nexus" : "/var/lib/nexus";
}

/** A certificate chain and its private key, as the hub serves them. */
export interface StoredCertificate {
  /** The chain, PEM, leaf first. */
  readonly certPem: string;
  /** The private key, PEM. */
  readonly keyPem: string;
}

const ACCOUNT_KEY_FILE = "account-key.json";
const PRIVATE_KEY_BLOCK =
  /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[^-]+-----END (?:[A-Z]+ )?PRIVATE KEY-----\s*/;
const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\s*/g;

/** One state directory. Nothing is read or written before a method is called. */
export class AcmeStateDir {
  readonly path: string;

  constructor(path: string) {
    this.path = path.replace(/\/+$/, "") || "/";
  }

  /**
   * Creates the directory (mode 0700) if needed and proves it writable, so that a missing permission is
   * reported at start-up, not after a certificate was paid for with a rate-limited order.
   */
  async prepare(): Promise<void> {
    try {
      await Deno.mkdir(this.path, { recursive: true, mode: 0o700 });
      await writeFileAtomically(`${this.path}/.write-test`, "", 0o600);
      await Deno.remove(`${this.path}/.write-test`);
    } catch (error) {
      throw new Error(`cannot write the ACME state directory ${this.path}: ${describe(error)}`);
    }
  }

  /** The account key pair, or `undefined` when none was saved yet. */
  async loadAccountKey(): Promise<CryptoKeyPair | undefined> {
    const file = `${this.path}/${ACCOUNT_KEY_FILE}`;
    const text = await readIfPresent(file);
    if (text === undefined) return undefined;
    try {
      const jwk = JSON.parse(text) as JsonWebKey;
      const algorithm = { name: "ECDSA", namedCurve: "P-256" };
      const privateKey = await crypto.subtle.importKey("jwk", jwk, algorithm, true, ["sign"]);
      const { d: _private, ...publicJwk } = jwk;
      const publicKey = await crypto.subtle.importKey(
        "jwk",
        { ...publicJwk, key_ops: ["verify"] },
        algorithm,
        true,
        ["verify"],
      );
      return { privateKey, publicKey };
    } catch (error) {
      // Never replaced silently: a new key is a new account, and the old one may hold authorizations.
      throw new Error(
        `${file} holds no ECDSA P-256 private key (JWK): ${
          describe(error)
        }; move it away to start a new account`,
      );
    }
  }

  /** Saves the account key pair (its private JWK), mode 0600. */
  async saveAccountKey(pair: CryptoKeyPair): Promise<void> {
    const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
    await writeFileAtomically(`${this.path}/${ACCOUNT_KEY_FILE}`, JSON.stringify(jwk) + "\n", 0o600);
  }

  /** The saved certificate for `hostname`, or `undefined` when there is none; throws when the file is broken. */
  async loadCertificate(hostname: string): Promise<StoredCertificate | undefined> {
    const file = this.certificatePath(hostname);
    const text = await readIfPresent(file);
    if (text === undefined) return undefined;
    const keyPem = PRIVATE_KEY_BLOCK.exec(text)?.[0];
    const certPem = text.match(CERTIFICATE_BLOCK)?.join("");
    if (keyPem === undefined || certPem === undefined) {
      throw new Error(`${file} does not hold a private key and a certificate chain (PEM)`);
    }
    return { certPem, keyPem };
  }

  /** Saves the certificate for `hostname`: key and chain in one file, mode 0600, replaced atomically. */
  async saveCertificate(hostname: string, certificate: StoredCertificate): Promise<void> {
    const text = `${certificate.keyPem.trim()}\n${certificate.certPem.trim()}\n`;
    await writeFileAtomically(this.certificatePath(hostname), text, 0o600);
  }

  /** Where the certificate for `hostname` is kept. */
  certificatePath(hostname: string): string {
    return `${this.path}/${hostname}.pem`;
  }
}

/**
 * Writes `text` to `path` so that readers see the old content or the new, never a part: a temporary file in
 * the same directory (so the rename stays on one file system), flushed to disk, then renamed over `path`.
 */
export async function writeFileAtomically(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    const file = await Deno.open(temporary, { write: true, createNew: true, mode });
    try {
      const bytes = new TextEncoder().encode(text);
      for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    // The mode given to open is filtered by the umask; the key files must be exactly owner-only.
    if (Deno.build.os !== "windows") await Deno.chmod(temporary, mode);
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`cannot read ${path}: ${describe(error)}`);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
