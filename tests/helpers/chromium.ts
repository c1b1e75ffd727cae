/**
 * Headless Chromium (Debian's `chromium`, which `.ci/run` installs) driven over the Chrome DevTools Protocol
 * with Deno's own `WebSocket`: launch with a throw-away profile, open a page, evaluate in it, type, take a
 * screenshot, close. No dependency: CDP is JSON messages over one WebSocket.
 *
 * @module
 */

import { WatchedProcess } from "./processes.ts";

const CHROMIUM = "/usr/bin/chromium";

/** Why Chromium cannot be used here, or null when it can. */
export async function chromiumMissing(): Promise<string | null> {
  try {
    await Deno.stat(CHROMIUM);
    return null;
  } catch {
    return `${CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)`;
  }
}

interface CdpMessage {
  readonly id?: number;
  readonly method?: string;
  readonly params?: Record<string, unknown>;
  readonly result?: Record<string, unknown>;
  readonly error?: { message: string };
  readonly sessionId?: string;
}

/** One WebSocket to the browser; commands to a page carry its session id (flat sessions). */
class CdpConnection {
  readonly #ws: WebSocket;
  #nextId = 1;
  readonly #pending = new Map<
    number,
    { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  readonly #listeners = new Set<(message: CdpMessage) => void>();
  readonly closed: Promise<void>;

  constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      const message: CdpMessage = JSON.parse(String(event.data));
      if (message.id !== undefined) {
        const pending = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        if (message.error) pending?.reject(new Error(`CDP: ${message.error.message}`));
        else pending?.resolve(message.result ?? {});
      } else {
        for (const listener of this.#listeners) listener(message);
      }
    };
    this.closed = new Promise((resolve) => {
      ws.onclose = () => {
        for (const { reject } of this.#pending.values()) reject(new Error("CDP connection closed"));
        this.#pending.clear();
        resolve();
      };
    });
  }

  static open(url: string): Promise<CdpConnection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new CdpConnection(ws));
      ws.onerror = (event) => reject(new Error(`cannot open ${url}: ${(event as ErrorEvent).message}`));
    });
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /** Resolves with the params of the next event `method` (of `sessionId`'s page), failing after `timeoutMs`. */
  next(method: string, sessionId: string | undefined, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners.delete(listener);
        reject(new Error(`no ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (message: CdpMessage) => {
        if (message.method !== method || message.sessionId !== sessionId) return;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(message.params ?? {});
      };
      this.#listeners.add(listener);
    });
  }

  close(): void {
    this.#ws.close();
  }
}

/** A page (a tab) of the browser. */
export class CdpPage {
  readonly #cdp: CdpConnection;
  readonly #session: string;

  constructor(cdp: CdpConnection, session: string) {
    this.#cdp = cdp;
    this.#session = session;
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.#cdp.send(method, params, this.#session);
  }

  /** Loads `url` and waits for its load event. */
  async navigate(url: string): Promise<void> {
    const loaded = this.#cdp.next("Page.loadEventFired", this.#session);
    const result = await this.send("Page.navigate", { url });
    if (typeof result.errorText === "string") throw new Error(`cannot load ${url}: ${result.errorText}`);
    await loaded;
  }

  /** Evaluates `expression` in the page and returns its value (JSON-serialisable values only). */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    const details = result.exceptionDetails as
      | { text?: string; exception?: { description?: string } }
      | undefined;
    if (details) throw new Error(`in the page: ${details.exception?.description ?? details.text}`);
    return (result.result as { value: T }).value;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor<T>(expression: string, what: string, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await this.evaluate<T>(expression);
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`the page did not show ${what} within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Types `text` into the focused element, as a keyboard would, then presses Enter. */
  async type(text: string): Promise<void> {
    await this.send("Input.insertText", { text });
    const enter = { key: "Enter", code: "Enter", windowsVirtualKeyCode: 13, nativeVirtualKeyCode: 13 };
    await this.send("Input.dispatchKeyEvent", { type: "keyDown", ...enter, text: "\r" });
    await this.send("Input.dispatchKeyEvent", { type: "keyUp", ...enter });
  }

  /** A PNG of the whole page, beyond the viewport. */
  async screenshot(): Promise<Uint8Array> {
    const metrics = await this.send("Page.getLayoutMetrics");
    const size = metrics.cssContentSize as { width: number; height: number };
    const result = await this.send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
      clip: { x: 0, y: 0, width: Math.ceil(size.width), height: Math.ceil(size.height), scale: 1 },
    });
    return Uint8Array.fromBase64(result.data as string);
  }
}

/** A headless Chromium with its own throw-away profile. */
export class Chromium {
  readonly #process: WatchedProcess;
  readonly #cdp: CdpConnection;
  readonly #profile: string;

  private constructor(process: WatchedProcess, cdp: CdpConnection, profile: string) {
    this.#process = process;
    this.#cdp = cdp;
    this.#profile = profile;
  }

  /** Starts Chromium and connects to it (the DevTools URL comes on its stderr). */
  static async launch(): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "nexus-chromium-" });
    const process = new WatchedProcess(CHROMIUM, [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--hide-scrollbars",
      `--user-data-dir=${profile}`,
      "--remote-debugging-port=0",
      "about:blank",
    ], { env: { HOME: profile } });
    try {
      const line = await process.waitForLine(/DevTools listening on ws:\/\//, { timeoutMs: 60_000 });
      const url = /ws:\/\/\S+/.exec(line)![0];
      return new Chromium(process, await CdpConnection.open(url), profile);
    } catch (error) {
      await process.stop();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /** A new page of `width` × `height` CSS pixels. */
  async newPage(width = 1280, height = 900): Promise<CdpPage> {
    const { targetId } = await this.#cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.#cdp.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new CdpPage(this.#cdp, sessionId as string);
    await page.send("Page.enable");
    await page.send("Runtime.enable");
    await page.send("Emulation.setDeviceMetricsOverride", {
      width,
      height,
      deviceScaleFactor: 1,
      mobile: false,
    });
    // A page that does not know it is in a headless browser keeps its timers at full speed.
    await page.send("Emulation.setFocusEmulationEnabled", { enabled: true });
    return page;
  }

  /** Asks the browser to close, waits for it (killing it if it will not), removes the profile. */
  async close(): Promise<void> {
    const exited = this.#process.exited;
    await this.#cdp.send("Browser.close").catch(() => {});
    this.#cdp.close();
    const timer = setTimeout(() => this.#process.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}
