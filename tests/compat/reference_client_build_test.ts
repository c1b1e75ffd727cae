/**
 * `scripts/reference_client.ts` against stand-ins for `go`: each way of failing says in one line what is missing,
 * a build lands in the cache, and a cached binary is used without asking for `go` at all.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildReferenceClient,
  REFERENCE_CLIENT_MODULE,
  REFERENCE_CLIENT_VERSION,
} from "../../scripts/reference_client.ts";

const MODULE = `${REFERENCE_CLIENT_MODULE}@${REFERENCE_CLIENT_VERSION}`;
const BINARY_NAME = `nexus-reference-client-${REFERENCE_CLIENT_VERSION}`;

/** A temporary directory holding a fake `go` made of `script` (a POSIX shell body). */
async function fakeGo(script: string): Promise<{ dir: string; go: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "nexus-fake-go-" });
  const go = join(dir, "go");
  await Deno.writeTextFile(go, `#!/bin/sh\n${script}\n`);
  await Deno.chmod(go, 0o755);
  return { dir, go, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

const unix = Deno.build.os !== "windows";

Deno.test("without go, it says the Go toolchain is missing", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    const build = await buildReferenceClient({ cacheDir, goBinary: join(cacheDir, "no-such-go") });
    assert.deepEqual(build, {
      ok: false,
      missing: `the Go toolchain is needed to build the reference client ${MODULE}: ` +
        `"${join(cacheDir, "no-such-go")}" is not installed (not found on the PATH)`,
    });
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test({
  name: "when the module cannot be downloaded, it says so with go's own reason",
  ignore: !unix,
  fn: async () => {
    await using fake = await fakeGo(
      `case "$1" in
  version) echo "go version go1.26 fake" ;;
  mod) printf '{\\n\\t"Path": "${REFERENCE_CLIENT_MODULE}",\\n\\t"Error": "module lookup disabled by GOPROXY=off"\\n}\\n'; exit 1 ;;
esac`,
    );
    const build = await buildReferenceClient({ cacheDir: join(fake.dir, "cache"), goBinary: fake.go });
    assert.deepEqual(build, {
      ok: false,
      missing: `the Go module ${MODULE} cannot be downloaded: module lookup disabled by GOPROXY=off`,
    });
  },
});

Deno.test({
  name: "when the build fails, it says so with the compiler's first lines and leaves nothing in the cache",
  ignore: !unix,
  fn: async () => {
    await using fake = await fakeGo(
      `case "$1" in
  version) echo "go version go1.26 fake" ;;
  mod) printf '{"Dir": "%s"}\\n' "$(dirname "$0")" ;;
  build) echo "cmd/client/main.go:3:2: no required module provides package x" >&2; exit 1 ;;
esac`,
    );
    const cacheDir = join(fake.dir, "cache");
    const build = await buildReferenceClient({ cacheDir, goBinary: fake.go });
    assert.deepEqual(build, {
      ok: false,
      missing: `building ${MODULE} failed: cmd/client/main.go:3:2: no required module provides package x`,
    });
    assert.deepEqual([...Deno.readDirSync(cacheDir)], []);
  },
});

Deno.test({
  name: "a successful build lands in the cache, and the cached binary is used without go",
  ignore: !unix,
  fn: async () => {
    await using fake = await fakeGo(
      `case "$1" in
  version) echo "go version go1.26 fake" ;;
  mod) printf '{"Dir": "%s"}\\n' "$(dirname "$0")" ;;
  build) while [ "$1" != "-o" ]; do shift; done; printf 'binary' > "$2" ;;
esac`,
    );
    const cacheDir = join(fake.dir, "cache");
    const built = await buildReferenceClient({ cacheDir, goBinary: fake.go });
    assert.deepEqual(built, { ok: true, path: join(cacheDir, BINARY_NAME), cached: false });
    assert.equal(await Deno.readTextFile(join(cacheDir, BINARY_NAME)), "binary");
    const cached = await buildReferenceClient({ cacheDir, goBinary: join(fake.dir, "no-such-go") });
    assert.deepEqual(cached, { ok: true, path: join(cacheDir, BINARY_NAME), cached: true });
  },
});
