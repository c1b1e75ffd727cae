/**
 * Where the agent's tokens come from: signed locally from a shared secret, or produced by an external command
 * (the original client's attestation contract, §4.4).
 *
 * @module
 */

import { signBackendToken } from "../protocol/backend_token.ts";

/** Handshake stages, named as in the original's `NEXUS_ATTESTATION_STAGE` (§4.4). */
export type TokenStage = "handshake" | "attest" | "reauth";

/** Produces a token for a stage; `nonce` is the hub's challenge for `attest` and `reauth`. */
export interface TokenSource {
  token(stage: TokenStage, nonce?: string): Promise<string>;
}

/** What the agent claims, for either kind of source. */
export interface BackendIdentity {
  readonly name: string;
  readonly hostnames: readonly string[];
  readonly weight: number;
}

/** Signs HS256 tokens locally with the backends secret. */
export function secretTokenSource(
  identity: BackendIdentity,
  secret: Uint8Array,
  ttlSeconds: number,
): TokenSource {
  return {
    token: (_stage, nonce) =>
      signBackendToken({
        secret,
        ...identity,
        ttlSeconds,
        ...(nonce !== undefined ? { sessionNonce: nonce } : {}),
      }),
  };
}

/** Default time a token command may run (§4.4: 15 s). */
const TOKEN_COMMAND_TIMEOUT_MS = 15_000;

/**
 * Runs a command per token, with the original's environment (§4.4). Its output is a bare JWT on the first
 * line, or JSON `{"token": "..."}`. Needs permission to run the command.
 */
export function commandTokenSource(
  identity: BackendIdentity,
  argv: readonly string[],
  timeoutMs = TOKEN_COMMAND_TIMEOUT_MS,
): TokenSource {
  return {
    async token(stage, nonce) {
      const [program, ...args] = argv;
      const output = await new Deno.Command(program, {
        args,
        env: {
          NEXUS_ATTESTATION_STAGE: stage,
          NEXUS_SESSION_NONCE: nonce ?? "",
          NEXUS_BACKEND_NAME: identity.name,
          NEXUS_HOSTNAMES: identity.hostnames.join(","),
          NEXUS_WEIGHT: String(identity.weight),
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(timeoutMs),
      }).output();
      const stdout = new TextDecoder().decode(output.stdout).trim();
      if (!output.success) {
        const stderr = new TextDecoder().decode(output.stderr).trim().split("\n")[0] ?? "";
        throw new Error(`token command exited with code ${output.code}: ${stderr.slice(0, 200)}`);
      }
      return parseTokenOutput(stdout);
    },
  };
}

/** A bare JWT on the first line, or JSON with a `token` field (§4.4). */
function parseTokenOutput(stdout: string): string {
  const first = stdout.split("\n")[0].trim();
  if (first.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(stdout);
      if (
        typeof parsed === "object" && parsed !== null &&
        typeof (parsed as { token?: unknown }).token === "string"
      ) {
        return (parsed as { token: string }).token.trim();
      }
    } catch {
      // Fall through to the error below.
    }
    throw new Error("token command printed JSON without a string token field");
  }
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(first)) {
    throw new Error("token command did not print a JWT");
  }
  return first;
}
