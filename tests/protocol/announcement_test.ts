/**
 * Announcements in parts (docs/protocol.md §6.3): the sender's parts each fit the frame cap, are as few as
 * fit, and carry the routes in order; the receiver joins them exactly as a model says, over abandoned and
 * oversized announcements alike, and never applies part of one as if it were whole.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AnnouncementAssembler,
  announcementParts,
  type AnnouncementProgress,
} from "../../src/protocol/announcement.ts";
import {
  type ControlMessage,
  decodeFrame,
  encodeControlFrame,
  MAX_MESSAGE_BYTES,
} from "../../src/protocol/frames.ts";

type AnnounceMessage = Extract<ControlMessage, { type: "announce" }>;

const RUNS = { numRuns: 300 };

Deno.test("an empty announcement is one frame with no routes: the sender serves nothing", () => {
  assert.deepEqual(announcementParts(9, []), [{ type: "announce", version: 9, routes: [] }]);
});

Deno.test("5,000 names split into frames that each fit the peer's cap and decode back in order", () => {
  const names = Array.from({ length: 5_000 }, (_, i) => `n${String(i).padStart(4, "0")}.test.nexus`);
  const parts = announcementParts(2, names);
  assert.ok(parts.length >= 3, `${parts.length} parts`);
  const decoded = parts.map((part) => {
    const frame = encodeControlFrame(part);
    assert.ok(frame.length <= MAX_MESSAGE_BYTES, `${frame.length} bytes`);
    const result = decodeFrame(frame);
    assert.equal(result.kind, "control");
    return (result as { message: AnnounceMessage }).message;
  });
  assert.deepEqual(decoded.flatMap((part) => part.routes), names);
});

Deno.test("a route too long for any frame is refused with a RangeError", () => {
  assert.throws(() => announcementParts(1, ["a".repeat(200)], 100), RangeError);
});

Deno.test("property: parts fit the cap, are as few as fit, carry the routes in order, only the last without more", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      fc.array(fc.string({ maxLength: 60 }), { maxLength: 400 }),
      fc.integer({ min: 0, max: 4_000 }),
      (version, routes, extraBytes) => {
        // The smallest cap every route fits, up to a few KiB more.
        const longest = Math.max(
          0,
          ...routes.map((route) => new TextEncoder().encode(JSON.stringify(route)).length),
        );
        const empty = encodeControlFrame({ type: "announce", version, routes: [], more: true }).length;
        const maxFrameBytes = empty + longest + extraBytes;
        const parts = announcementParts(version, routes, maxFrameBytes);
        assert.deepEqual(parts.flatMap((part) => part.routes), routes);
        parts.forEach((part, i) => {
          assert.equal(part.version, version);
          assert.equal(part.more === true, i < parts.length - 1);
          assert.ok(encodeControlFrame(part).length <= maxFrameBytes);
          assert.deepEqual(decodeFrame(encodeControlFrame(part)), { kind: "control", message: part });
          if (i < parts.length - 1) {
            // Greedy: the next part's first route would not have fitted this one.
            const grown = { ...part, routes: [...part.routes, parts[i + 1].routes[0]] };
            assert.ok(encodeControlFrame(grown).length > maxFrameBytes, "a part stopped short");
          }
        });
      },
    ),
    RUNS,
  );
});

/** One announcement as a sender would write it: its routes in chunks, and whether its last part ever came. */
interface SentAnnouncement {
  readonly chunks: readonly (readonly string[])[];
  readonly finished: boolean;
}

const sentAnnouncement: fc.Arbitrary<SentAnnouncement> = fc.record({
  chunks: fc.array(fc.array(fc.stringMatching(/^[a-z]{1,4}$/), { maxLength: 6 }), {
    minLength: 1,
    maxLength: 5,
  }),
  finished: fc.boolean(),
});

Deno.test("property (model): the assembler yields each finished announcement whole, refuses oversized ones once, and nothing else", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 40 }),
      fc.array(sentAnnouncement, { maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 12, maxLength: 12 }),
      (maxRoutes, announcements, versionSteps) => {
        const assembler = new AnnouncementAssembler(maxRoutes);
        const actual: AnnouncementProgress[] = [];
        const expected: AnnouncementProgress[] = [];
        let version = 0;
        announcements.forEach((announcement, n) => {
          // Each announcement has a newer version than the one before, as a sender's counter gives.
          version += versionSteps[n];
          const parts = announcement.finished ? announcement.chunks : announcement.chunks.slice(0, -1);
          parts.forEach((routes, i) => {
            const last = announcement.finished && i === parts.length - 1;
            const progress = assembler.accept({
              type: "announce",
              version,
              routes,
              ...(last ? {} : { more: true }),
            });
            if (progress.kind !== "pending") actual.push(progress);
          });
          // The model: the routes so far, refused once the moment they pass the cap; whole only when finished.
          let count = 0;
          let refused = false;
          for (const routes of parts) {
            count += routes.length;
            if (!refused && count > maxRoutes) {
              refused = true;
              expected.push({ kind: "refused", reason: `announcement of more than ${maxRoutes} routes` });
            }
          }
          if (announcement.finished && !refused) {
            expected.push({ kind: "complete", version, routes: announcement.chunks.flat() });
          }
        });
        assert.deepEqual(actual, expected);
      },
    ),
    RUNS,
  );
});
