/**
 * The phases of the benchmark and the soak (`scripts/bench/phase.ts`): a phase returns what its work returns
 * within its deadline; past it, or when the work throws, it fails with one message naming the phase, how far
 * it got and the state of the watched child processes.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { describeProcesses, PhaseError, Phases, type WatchedProcess } from "../../scripts/bench/phase.ts";

/** A real child process (`sleep`) to watch, stopped by the test. */
function sleeper(): WatchedProcess & { stop(): Promise<void> } {
  const child = new Deno.Command("sleep", { args: ["60"], stdin: "null", stdout: "null", stderr: "null" })
    .spawn();
  let exitStatus: Deno.CommandStatus | null = null;
  const status = child.status.then((s) => (exitStatus = s));
  return {
    name: "sleeper",
    pid: child.pid,
    get exitStatus() {
      return exitStatus;
    },
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await status;
    },
  };
}

const never = () => new Promise<never>(() => {});

Deno.test("a phase that finishes within its deadline returns its work's value", async () => {
  const phases = new Phases({ watched: () => [] });
  assert.equal(await phases.run("quick", 10, () => Promise.resolve(42)), 42);
});

Deno.test("a phase past its deadline names itself, its progress and each watched process, and aborts its signal", async () => {
  const child = sleeper();
  try {
    const phases = new Phases({ watched: () => [child] });
    let signal: AbortSignal | undefined;
    const error = await phases.run("idle connections, nexus, 1000", 0.05, (context) => {
      signal = context.signal;
      context.progress = "412 of 1000 connections established";
      return never();
    }).then(() => assert.fail("the phase did not fail"), (e) => e);
    assert.ok(error instanceof PhaseError);
    assert.equal(error.kind, "deadline");
    assert.equal(error.phase, "idle connections, nexus, 1000");
    assert.match(
      error.message,
      /^phase "idle connections, nexus, 1000": 412 of 1000 connections established after 0\.05 s; sleeper alive, \d+ descriptors$/,
    );
    assert.equal(signal?.aborted, true);
  } finally {
    await child.stop();
  }
});

Deno.test("a phase whose work throws fails with the phase's name, the error and the state of the processes", async () => {
  const child = sleeper();
  await child.stop();
  const phases = new Phases({ watched: () => [child] });
  const error = await phases.run("start the service", 10, () => Promise.reject(new Error("port in use")))
    .then(() => assert.fail("the phase did not fail"), (e) => e);
  assert.ok(error instanceof PhaseError);
  assert.equal(error.kind, "failed");
  assert.match(
    error.message,
    /^phase "start the service" failed after [\d.]+ s: port in use; sleeper exited with signal SIGKILL$/,
  );
});

Deno.test("a phase whose progress stands still for its stall limit ends before its deadline, saying so", async () => {
  const phases = new Phases({ watched: () => [] });
  const error = await phases.run("hold", 3_600, (context) => {
    context.progress = "256 of 1000 connections established";
    return never();
  }, { stallSeconds: 0.5 }).then(() => assert.fail("the phase did not fail"), (e) => e);
  assert.equal(error.kind, "deadline");
  assert.match(
    error.message,
    /^phase "hold": 256 of 1000 connections established and no progress for 0\.[5-9]\d* s, after [\d.]+ s of its 3600 s; no child processes$/,
  );
});

Deno.test("a phase whose progress keeps moving is not ended by its stall limit", async () => {
  const phases = new Phases({ watched: () => [] });
  const value = await phases.run("moving", 10, async (context) => {
    for (let i = 0; i < 12; i++) {
      context.progress = `${i} of 12`;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return "done";
  }, { stallSeconds: 2 });
  assert.equal(value, "done");
});

Deno.test("--phase-timeout replaces every phase's own deadline", async () => {
  const phases = new Phases({ watched: () => [], timeoutOverrideSeconds: 0.02 });
  const error = await phases.run("long", 3_600, never).then(
    () => assert.fail("the phase did not fail"),
    (e) => e,
  );
  assert.equal(error.kind, "deadline");
  assert.equal(error.message, 'phase "long": not finished after 0.02 s; no child processes');
});

Deno.test("describeProcesses says which children are alive with how many descriptors, and how the others exited", async () => {
  const alive = sleeper();
  const dead = { name: "node", pid: 1, exitStatus: { success: false, code: 1, signal: null } };
  try {
    assert.match(
      await describeProcesses([alive, dead]),
      /^sleeper alive, \d+ descriptors; node exited with code 1$/,
    );
  } finally {
    await alive.stop();
  }
});

Deno.test("model: a phase ends as its work does when the work ends well within the deadline, else by the deadline", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 40, max: 80 }),
      fc.oneof(
        fc.record({
          kind: fc.constant("resolve" as const),
          afterMs: fc.integer({ min: 0, max: 10 }),
          value: fc.integer(),
        }),
        fc.record({
          kind: fc.constant("throw" as const),
          afterMs: fc.integer({ min: 0, max: 10 }),
          message: fc.string({ minLength: 1, maxLength: 20 }),
        }),
        fc.record({ kind: fc.constant("hang" as const) }),
      ),
      fc.string({ maxLength: 30 }),
      async (deadlineMs, work, progress) => {
        const phases = new Phases({ watched: () => [] });
        const result = await phases.run("model", deadlineMs / 1000, (context) => {
          context.progress = progress;
          if (work.kind === "hang") return never();
          return new Promise<number>((resolve, reject) =>
            setTimeout(
              () => work.kind === "resolve" ? resolve(work.value) : reject(new Error(work.message)),
              work.afterMs,
            )
          );
        }).then((value) => ({ value }), (error: PhaseError) => ({ error }));
        if (work.kind === "resolve") assert.deepEqual(result, { value: work.value });
        else {
          assert.ok("error" in result);
          assert.equal(result.error.kind, work.kind === "throw" ? "failed" : "deadline");
          assert.equal(result.error.phase, "model");
          if (work.kind === "throw") assert.ok(result.error.message.includes(work.message));
          else {
            assert.equal(
              result.error.message,
              `phase "model": ${progress === "" ? "not finished" : progress} after ${
                deadlineMs / 1000
              } s; no child processes`,
            );
          }
        }
      },
    ),
    { numRuns: 30 },
  );
});
