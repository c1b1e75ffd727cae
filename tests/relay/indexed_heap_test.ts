/**
 * The indexed heap against a model that keeps its items in a plain list: after any sequence of pushes,
 * priority changes and removals, the top is the model's first item and every item knows its place.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { IndexedHeap } from "../../src/relay/indexed_heap.ts";

interface Item {
  heapIndex: number;
  readonly id: number;
  priority: number;
}

/** Higher priority first; the id breaks ties, so the order is strict and the top is one item. */
const before = (a: Item, b: Item) => a.priority !== b.priority ? a.priority > b.priority : a.id < b.id;

type Operation =
  | { readonly kind: "push"; readonly priority: number }
  | { readonly kind: "update"; readonly pick: number; readonly priority: number }
  | { readonly kind: "remove"; readonly pick: number };

const priorityArbitrary = fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer());

const operationArbitrary: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("push" as const), priority: priorityArbitrary }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("update" as const),
      pick: fc.nat(),
      priority: priorityArbitrary,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }) },
);

Deno.test("property: the top is always the first item in priority order, whatever was pushed, changed or removed", () => {
  fc.assert(
    fc.property(fc.array(operationArbitrary, { maxLength: 300, size: "max" }), (operations) => {
      const heap = new IndexedHeap<Item>(before);
      const present: Item[] = [];
      let nextId = 0;
      for (const operation of operations) {
        if (operation.kind === "push") {
          const item = { heapIndex: -1, id: nextId++, priority: operation.priority };
          heap.push(item);
          present.push(item);
        } else if (present.length > 0) {
          const item = present[operation.pick % present.length];
          if (operation.kind === "update") {
            item.priority = operation.priority;
            heap.update(item);
          } else {
            heap.remove(item);
            present.splice(present.indexOf(item), 1);
            assert.equal(item.heapIndex, -1);
          }
        }
        assert.equal(heap.size, present.length);
        const first = present.reduce<Item | undefined>(
          (top, item) => top === undefined || before(item, top) ? item : top,
          undefined,
        );
        assert.equal(heap.peek(), first);
        const places = present.map((item) => item.heapIndex).sort((a, b) => a - b);
        assert.deepEqual(places, present.map((_, i) => i), "every item knows its own place");
      }
      // Emptied from the top, the items come out in priority order.
      const order = [...present].sort((a, b) => (before(a, b) ? -1 : 1));
      for (const expected of order) {
        assert.equal(heap.peek(), expected);
        heap.remove(expected);
      }
      assert.equal(heap.size, 0);
    }),
    { numRuns: 500 },
  );
});
