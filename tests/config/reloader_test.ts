import assert from "node:assert/strict";
import fc from "fast-check";
import type { KeySpec } from "../../src/config/reload_plan.ts";
import { Reloader } from "../../src/config/reloader.ts";
import { ConfigError } from "../../src/config/yaml_reader.ts";
import { LinkRenewal } from "../../src/links/link.ts";
import type { Logger } from "../../src/log/logger.ts";

/** A two-key config: `live` applies, `fixed` needs a restart. */
interface Toy {
  readonly live: number;
  readonly fixed: number;
}

const SPECS: readonly KeySpec<Toy>[] = [
  { key: "live", read: (c) => String(c.live), write: (c, from) => ({ ...c, live: from.live }) },
  {
    key: "fixed",
    read: (c) => String(c.fixed),
    write: (c, from) => ({ ...c, fixed: from.fixed }),
    restartNeeded: () => "needs a restart",
  },
];

/** What the file holds at a reload: a valid config, an invalid one, or a valid one the process cannot apply. */
type FileState =
  | { readonly kind: "valid"; readonly config: Toy }
  | { readonly kind: "invalid"; readonly problems: number }
  | { readonly kind: "unappliable"; readonly config: Toy };

const toy = fc.record({ live: fc.integer({ min: 0, max: 3 }), fixed: fc.integer({ min: 0, max: 3 }) })
  .map(({ live, fixed }): Toy => ({ live, fixed }));
const fileState: fc.Arbitrary<FileState> = fc.oneof(
  toy.map((config) => ({ kind: "valid" as const, config })),
  fc.integer({ min: 1, max: 4 }).map((problems) => ({ kind: "invalid" as const, problems })),
  toy.map((config) => ({ kind: "unappliable" as const, config })),
);

function recordingLog(lines: string[]): Logger {
  const record = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  return {
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
  } as Logger;
}

Deno.test("reloader: the model of counts, the config in force and the log over any sequence of file states", async () => {
  await fc.assert(
    fc.asyncProperty(toy, fc.array(fileState, { maxLength: 12 }), async (initial, states) => {
      let file: FileState = { kind: "valid", config: initial };
      const lines: string[] = [];
      const reloader: Reloader<Toy> = new Reloader<Toy>({
        inForce: initial,
        read: () => {
          if (file.kind !== "invalid") return file.config;
          const problems = Array.from({ length: file.problems }, (_, i) => ({
            path: `key${i}`,
            line: i + 1,
            column: 1,
            message: `problem ${i}`,
          }));
          throw new ConfigError("toy.yaml", problems);
        },
        specs: SPECS,
        // An unappliable file: the live key cannot be applied, and keeps its old value.
        apply: (plan) =>
          Promise.resolve(
            file.kind === "unappliable" && plan.live.length > 0
              ? { inForce: { ...plan.effective, live: reloader.inForce.live }, problems: ["live: cannot"] }
              : { inForce: plan.effective, problems: [] },
          ),
        log: recordingLog(lines),
      });
      let model = { inForce: initial, ok: 0, failed: 0 };
      for (const state of states) {
        file = state;
        lines.length = 0;
        const report = await reloader.reload("test");
        if (state.kind === "invalid") {
          model = { ...model, failed: model.failed + 1 };
          assert.equal(report.result, "failed");
          assert.equal(report.problems.length, state.problems);
          assert.equal(lines.filter((line) => line.includes("invalid configuration")).length, state.problems);
        } else {
          const liveChanged = state.config.live !== model.inForce.live;
          const unapplied = state.kind === "unappliable" && liveChanged;
          const fixedChanged = state.config.fixed !== model.inForce.fixed;
          model = {
            inForce: { live: unapplied ? model.inForce.live : state.config.live, fixed: model.inForce.fixed },
            ok: model.ok + (unapplied ? 0 : 1),
            failed: model.failed + (unapplied ? 1 : 0),
          };
          assert.equal(report.result, unapplied ? "failed" : "ok");
          assert.deepEqual(report.restartNeeded.length, fixedChanged ? 1 : 0);
          // Only what took effect is applied and logged as changed; what failed is logged as not applied.
          const tookEffect = liveChanged && !unapplied;
          assert.deepEqual(report.applied, tookEffect ? ["live"] : []);
          assert.equal(lines.filter((line) => line.startsWith("info changed ")).length, tookEffect ? 1 : 0);
          assert.equal(
            lines.filter((line) => /^error not applied .*"key":"live".*"why":"live: cannot"/.test(line))
              .length,
            unapplied ? 1 : 0,
          );
          assert.equal(
            lines.filter((line) => /^warn not applied .*"key":"fixed"/.test(line)).length,
            fixedChanged ? 1 : 0,
          );
        }
        assert.deepEqual(reloader.inForce, model.inForce);
        assert.deepEqual(reloader.counts, { ok: model.ok, failed: model.failed });
        assert.equal(reloader.last, report);
        assert.equal(reloader.lastOkMs === null, model.ok === 0);
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("reloader: reloads asked for at once run one after another, in order", async () => {
  let reads = 0;
  let applying = 0;
  const order: string[] = [];
  const reloader = new Reloader<Toy>({
    inForce: { live: 0, fixed: 0 },
    read: () => ({ live: ++reads, fixed: 0 }),
    specs: SPECS,
    apply: async (plan) => {
      applying += 1;
      assert.equal(applying, 1, "one reload at a time");
      await new Promise((resolve) => setTimeout(resolve, 5));
      order.push(plan.changes[0].to);
      applying -= 1;
      return { inForce: plan.effective, problems: [] };
    },
    log: recordingLog([]),
  });
  const reports = await Promise.all([1, 2, 3, 4].map((i) => reloader.reload(`r${i}`)));
  assert.deepEqual(order, ["1", "2", "3", "4"]);
  assert.deepEqual(reports.map((report) => report.trigger), ["r1", "r2", "r3", "r4"]);
  assert.deepEqual(reloader.inForce, { live: 4, fixed: 0 });
});

Deno.test("reloader: a bug while planning is a failed reload with the error, never a rejection; the next one runs", async () => {
  let broken = true;
  const reloader = new Reloader<Toy>({
    inForce: { live: 0, fixed: 0 },
    read: () => ({ live: 1, fixed: 0 }),
    specs: SPECS.map((spec) => ({
      ...spec,
      read: (config: Toy) => {
        if (broken) throw new Error("planner bug");
        return spec.read(config);
      },
    })),
    apply: (plan) => Promise.resolve({ inForce: plan.effective, problems: [] }),
    log: recordingLog([]),
  });
  const failed = await reloader.reload("SIGHUP");
  assert.equal(failed.result, "failed");
  assert.deepEqual(failed.problems, ["internal error: Error: planner bug"]);
  assert.deepEqual(reloader.counts, { ok: 0, failed: 1 });
  broken = false;
  assert.equal((await reloader.reload("SIGHUP")).result, "ok");
  assert.deepEqual(reloader.inForce, { live: 1, fixed: 0 });
});

Deno.test("link renewal: a request stays pending until taken, whatever waits were given up; requests count once", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.constantFrom("request", "wait", "abandon", "take"), { maxLength: 30 }),
      async (steps) => {
        const renewal = new LinkRenewal();
        let pending = false;
        for (const step of steps) {
          if (step === "request") {
            renewal.request();
            pending = true;
          } else if (step === "take") {
            assert.equal(renewal.take(), pending);
            pending = false;
          } else {
            let resolved = false;
            const wait = renewal.asked().then(() => (resolved = true));
            await Promise.resolve();
            await Promise.resolve();
            assert.equal(resolved, pending, "a wait ends at once exactly when a request is pending");
            // A wait given up is left behind: the next request must still be pending for whoever asks next.
            if (step === "wait" && !pending) {
              renewal.request();
              pending = true;
              await wait;
            }
          }
        }
      },
    ),
  );
});
