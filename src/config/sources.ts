/**
 * Reading what a config refers to: secrets given inline, in a file or in an environment variable, and PEM
 * files. Problems are reported at the key that named them, with its line and column.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import type { MapReader } from "./yaml_reader.ts";

/** Environment variables a secret may come from: the compiled binary may read only `NEXUS_*` variables. */
const SECRET_ENV_PATTERN = /^NEXUS_[A-Z0-9_]+$/;

const ADDRESS_PATTERN = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):[0-9]{1,5}$/;

/** Resolves a path from the config relative to the config file's directory. */
export function resolvePath(configDir: string, path: string): string {
  return path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path) ? path : `${configDir}/${path}`;
}

/**
 * Reads a secret given as `key` (inline), `keyFile` (a file, trimmed) or `keyEnv` (an environment variable
 * named `NEXUS_…`). At most one may be set; `required` demands exactly one. Returns the secret's bytes.
 */
export function readSecret(
  map: MapReader,
  key: string,
  configDir: string,
  options: { required: boolean },
): Uint8Array | undefined {
  const inline = map.string(key, { nonEmpty: true });
  const file = map.string(`${key}File`, { nonEmpty: true });
  const env = map.string(`${key}Env`, {
    pattern: SECRET_ENV_PATTERN,
    patternHint: "a variable named NEXUS_…",
  });
  // Counted by presence: a form that is set but wrong has been reported, and is not also "missing".
  const given = [key, `${key}File`, `${key}Env`].filter((k) => map.has(k)).length;
  if (given > 1) {
    map.problem(key, `set only one of ${key}, ${key}File and ${key}Env`);
    return undefined;
  }
  if (given === 0) {
    if (options.required) map.problem(key, `one of ${key}, ${key}File or ${key}Env is required`);
    return undefined;
  }
  if (inline === undefined && file === undefined && env === undefined) return undefined;
  let secret: string | undefined = inline;
  if (file !== undefined) {
    try {
      secret = Deno.readTextFileSync(resolvePath(configDir, file)).trim();
    } catch (error) {
      map.problem(`${key}File`, `cannot read the secret file: ${describe(error)}`);
      return undefined;
    }
  } else if (env !== undefined) {
    try {
      secret = Deno.env.get(env);
    } catch (error) {
      map.problem(`${key}Env`, `cannot read environment variable ${env}: ${describe(error)}`);
      return undefined;
    }
    if (secret === undefined) {
      map.problem(`${key}Env`, `environment variable ${env} is not set`);
      return undefined;
    }
  }
  if (secret === undefined || secret.length < 16) {
    // Reported at the key that was given, so the line points at the file or variable that holds it.
    const givenKey = file !== undefined ? `${key}File` : env !== undefined ? `${key}Env` : key;
    map.problem(givenKey, "the secret must be at least 16 characters long");
    return undefined;
  }
  return new TextEncoder().encode(secret);
}

/** Reads a PEM file named by `key`, checking that it holds the expected kind of block. */
export function readPemFile(
  map: MapReader,
  key: string,
  configDir: string,
  expect: "certificate" | "private key",
  options: { required: boolean },
): string | undefined {
  const path = options.required ? map.string(key, { required: true, nonEmpty: true }) : map.string(key);
  if (path === undefined || path === "") return undefined;
  let text: string;
  try {
    text = Deno.readTextFileSync(resolvePath(configDir, path));
  } catch (error) {
    map.problem(key, `cannot read ${path}: ${describe(error)}`);
    return undefined;
  }
  const marker = expect === "certificate"
    ? /-----BEGIN CERTIFICATE-----/
    : /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/;
  if (!marker.test(text)) {
    map.problem(key, `${path} holds no PEM ${expect}`);
    return undefined;
  }
  return text;
}

/**
 * Why a certificate and a private key cannot serve together (the key is not the certificate's, or either
 * cannot be parsed), or null when they can.
 */
export function keyPairProblem(certPem: string, keyPem: string): string | null {
  try {
    const certificate = new X509Certificate(certPem);
    const key = createPrivateKey(keyPem);
    return certificate.checkPrivateKey(key) ? null : "the private key does not belong to the certificate";
  } catch (error) {
    return `cannot use the certificate and key together: ${describe(error)}`;
  }
}

/** Reads `key` as `host:port`, `:port` or `[v6]:port`; an empty host means every address. */
export function readListenAddress(
  map: MapReader,
  key: string,
  example = ":8443",
): { hostname: string; port: number } | undefined {
  const text = map.string(key, {
    required: true,
    pattern: ADDRESS_PATTERN,
    patternHint: `host:port, e.g. ${example}`,
  });
  if (!ADDRESS_PATTERN.test(text)) return undefined;
  const colon = text.lastIndexOf(":");
  const port = Number(text.slice(colon + 1));
  if (port > 65_535) {
    map.problem(key, `port ${port} is out of range 0-65535`);
    return undefined;
  }
  const host = text.slice(0, colon).replace(/^\[|\]$/g, "");
  return { hostname: host === "" ? "0.0.0.0" : host, port };
}

/**
 * Reads a list of `wss://` URLs; each bad one is reported at its own item (`hubs[1]`, its line and column) and
 * left out.
 */
export function readWebSocketUrls(
  map: MapReader,
  key: string,
  options: { required: true; nonEmpty: true } | { default: readonly string[] },
): string[] {
  return map.list(key, (value) => {
    const text = value.asString();
    if (text === undefined) return undefined;
    const problem = checkWebSocketUrl(text);
    if (problem === null) return text;
    value.problem(problem);
    return undefined;
  }, options);
}

/** Checks a `wss://host[:port]/path` URL; returns an error text or null. */
function checkWebSocketUrl(text: string): string | null {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `"${text}" is not a URL`;
  }
  if (url.protocol !== "wss:") return `"${text}" must start with wss:// (the hub only speaks TLS)`;
  if (url.username || url.password) return `"${text}" must not carry credentials`;
  return null;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
