/**
 * A mesh announcement in parts (docs/protocol.md §6.3): a node's full list of route keys can be far longer
 * than one control frame may be (32 KiB, which {@linkcode decodeFrame} enforces), so the sender splits it into
 * `announce` frames of the same version, every one but the last marked `more`, and the receiver joins them
 * before it replaces the sender's routes. Frames of one link arrive in order, so parts need no index.
 *
 * @module
 */

import { type ControlMessage, encodeControlFrame, MAX_MESSAGE_BYTES } from "./frames.ts";

/** Most route keys one announcement may carry, over all its parts; more and the announcement is refused. */
const MAX_ANNOUNCED_ROUTES = 100_000;

type AnnounceMessage = Extract<ControlMessage, { type: "announce" }>;

const encoder = new TextEncoder();

/**
 * The `announce` messages that carry `routes` as announcement `version`: as few as fit, each of which encodes
 * to at most `maxFrameBytes` (default: the largest frame a peer accepts). An empty list is one message with no
 * routes (this node serves nothing). Throws a `RangeError` for a route too long to fit any frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { announcementParts } from "./announcement.ts";
 * const names = Array.from({ length: 5_000 }, (_, i) => `n${i}.example.com`);
 * const parts = announcementParts(7, names);
 * assert.ok(parts.length > 1);
 * assert.deepEqual(parts.flatMap((part) => part.routes), names);
 * assert.deepEqual(parts.map((part) => part.more === true), [...parts.slice(1).map(() => true), false]);
 * ```
 */
export function announcementParts(
  version: number,
  routes: readonly string[],
  maxFrameBytes: number = MAX_MESSAGE_BYTES,
): AnnounceMessage[] {
  // The frame around the routes, with the flag it may carry; each route adds its JSON text and a comma.
  const emptyFrameBytes = encodeControlFrame({ type: "announce", version, routes: [], more: true }).length;
  const room = maxFrameBytes - emptyFrameBytes;
  const parts: AnnounceMessage[] = [];
  let current: string[] = [];
  let used = 0;
  for (const route of routes) {
    const alone = encoder.encode(JSON.stringify(route)).length;
    if (alone > room) throw new RangeError(`Route key of ${route.length} characters does not fit one frame`);
    if (current.length > 0 && used + 1 + alone > room) {
      parts.push({ type: "announce", version, routes: current, more: true });
      current = [];
      used = 0;
    }
    used += (current.length > 0 ? 1 : 0) + alone;
    current.push(route);
  }
  parts.push({ type: "announce", version, routes: current });
  return parts;
}

/** What one `announce` frame brings: a whole announcement, nothing to apply yet, or a refusal. */
export type AnnouncementProgress =
  | { readonly kind: "complete"; readonly version: number; readonly routes: readonly string[] }
  | { readonly kind: "pending" }
  | { readonly kind: "refused"; readonly reason: string };

/**
 * Joins the parts of one peer's announcements, in the order its frames arrive. A part of another version than
 * the parts before it starts over: the earlier announcement was never finished and a later one replaces it.
 * An announcement that grows past `maxRoutes` is refused once, and its remaining parts are skipped, so what is
 * kept for one peer stays bounded and no tail of a refused announcement is ever applied as if it were whole.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AnnouncementAssembler } from "./announcement.ts";
 * const assembler = new AnnouncementAssembler();
 * assert.deepEqual(assembler.accept({ type: "announce", version: 3, routes: ["a.example"], more: true }), {
 *   kind: "pending",
 * });
 * assert.deepEqual(assembler.accept({ type: "announce", version: 3, routes: ["b.example"] }), {
 *   kind: "complete",
 *   version: 3,
 *   routes: ["a.example", "b.example"],
 * });
 * ```
 */
export class AnnouncementAssembler {
  readonly #maxRoutes: number;
  /** Version of the parts so far, -1 for none. */
  #version = -1;
  #routes: string[] = [];
  /** The announcement of `#version` was refused: its remaining parts are skipped. */
  #refused = false;

  /** `maxRoutes`: most route keys of one announcement over all its parts. */
  constructor(maxRoutes: number = MAX_ANNOUNCED_ROUTES) {
    this.#maxRoutes = maxRoutes;
  }

  /** Takes the next `announce` frame of the peer. */
  accept(part: AnnounceMessage): AnnouncementProgress {
    if (part.version !== this.#version) {
      this.#version = part.version;
      this.#routes = [];
      this.#refused = false;
    }
    const last = part.more !== true;
    let progress: AnnouncementProgress;
    if (this.#refused) {
      progress = { kind: "pending" };
    } else if (this.#routes.length + part.routes.length > this.#maxRoutes) {
      this.#routes = [];
      this.#refused = true;
      progress = { kind: "refused", reason: `announcement of more than ${this.#maxRoutes} routes` };
    } else {
      for (const route of part.routes) this.#routes.push(route);
      progress = last
        ? { kind: "complete", version: part.version, routes: this.#routes }
        : { kind: "pending" };
    }
    if (last) {
      this.#version = -1;
      this.#routes = [];
      this.#refused = false;
    }
    return progress;
  }
}
