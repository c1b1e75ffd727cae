import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AdaptiveReadBuffer,
  MAX_READ_BUFFER_BYTES,
  MIN_READ_BUFFER_BYTES,
} from "../../src/stream/read_buffer.ts";

Deno.test("read buffer: its size follows a model over any sequence of reads, within minimum and maximum", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: MIN_READ_BUFFER_BYTES, max: 1024 * 1024 }),
      // Each read as a fraction of the buffer it went into, with full and empty reads made common.
      fc.array(fc.oneof(fc.constant(1), fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true })), {
        maxLength: 60,
      }),
      (maxBytes, fractions) => {
        const buffer = new AdaptiveReadBuffer(maxBytes);
        let modelSize = MIN_READ_BUFFER_BYTES;
        for (const fraction of fractions) {
          assert.equal(buffer.buffer.length, modelSize);
          const bytesRead = Math.floor(fraction * modelSize);
          buffer.update(bytesRead);
          if (bytesRead === modelSize && modelSize < maxBytes) modelSize = Math.min(modelSize * 4, maxBytes);
          else if (modelSize > MIN_READ_BUFFER_BYTES && bytesRead < modelSize / 8) {
            modelSize = MIN_READ_BUFFER_BYTES;
          }
          assert.ok(buffer.buffer.length >= MIN_READ_BUFFER_BYTES && buffer.buffer.length <= maxBytes);
        }
        assert.equal(buffer.buffer.length, modelSize);
      },
    ),
  );
});

Deno.test("read buffer: an idle socket pins the minimum; four full reads reach the default maximum", () => {
  const buffer = new AdaptiveReadBuffer();
  assert.equal(buffer.buffer.length, MIN_READ_BUFFER_BYTES);
  const sizes = [];
  for (let i = 0; i < 5; i++) {
    buffer.update(buffer.buffer.length);
    sizes.push(buffer.buffer.length);
  }
  assert.deepEqual(sizes, [2048, 8192, 32768, MAX_READ_BUFFER_BYTES, MAX_READ_BUFFER_BYTES]);
  buffer.update(100);
  assert.equal(buffer.buffer.length, MIN_READ_BUFFER_BYTES);
});
