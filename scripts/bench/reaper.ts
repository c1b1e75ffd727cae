/**
 * Child processes and temporary directories of the benchmark and the soak, cleaned up however the program
 * ends: by returning, by `Deno.exit`, or by SIGINT (Ctrl-C) or SIGTERM. A child left behind would hold its
 * ports and thousands of sockets, and the next run would measure it too.
 *
 * The orderly path still stops children itself (gracefully, with a bounded wait); this is the backstop, so it
 * kills with SIGKILL.
 *
 * @module
 */

import type { WatchedProcess } from "./phase.ts";

/** A child process: described when a phase fails, killed when the program ends. */
export interface ReapedChild extends WatchedProcess {
  /** Sends `signal`; sending one to a process that has exited may throw. */
  kill(signal: Deno.Signal): void;
}

const children = new Set<ReapedChild>();
const directories = new Set<string>();
let installed = false;

function killAll(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
  children.clear();
  for (const path of directories) {
    try {
      Deno.removeSync(path, { recursive: true });
    } catch {
      // Already removed, or never written.
    }
  }
  directories.clear();
}

/**
 * Installs the handlers once: on SIGINT and SIGTERM, every registered child is killed, every registered
 * directory removed, and the program exits with 130 or 143 after one line naming `program` and the signal;
 * on exit, the same without the line.
 */
export function reapOnExit(program: string): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("unload", killAll);
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    Deno.addSignalListener(signal, () => {
      const running = children.size;
      killAll();
      console.error(`${program}: interrupted by ${signal}; ${running} child process(es) killed`);
      Deno.exit(code);
    });
  }
}

/** Kills `child` when the program ends; returns the function that forgets it (once it was stopped). */
export function killOnExit(child: ReapedChild): () => void {
  children.add(child);
  return () => children.delete(child);
}

/** The children registered and not yet forgotten, in start order (some may have exited on their own). */
export function registeredChildren(): readonly ReapedChild[] {
  return [...children];
}

/** Removes the directory at `path` when the program ends, unless {@linkcode keepOnExit} is called. */
export function removeOnExit(path: string): void {
  directories.add(path);
}

/** Leaves the directory at `path` in place after all (it was removed already, or is to be kept). */
export function keepOnExit(path: string): void {
  directories.delete(path);
}
