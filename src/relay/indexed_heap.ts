/**
 * A binary heap whose items know their place in it, so that an item whose priority changed can be moved, or
 * any item removed, in O(log n) without a search.
 *
 * @module
 */

/** What an item carries so the heap can find it: its index in the heap, -1 while it is not in one. */
export interface HeapPlace {
  heapIndex: number;
}

/**
 * A max-heap under `before` (`before(a, b)`: `a` belongs nearer the top than `b`), which must be a strict
 * order. Items are kept by reference and must be in at most one heap.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IndexedHeap } from "./indexed_heap.ts";
 * const heap = new IndexedHeap<{ heapIndex: number; load: number }>((a, b) => a.load > b.load);
 * const a = { heapIndex: -1, load: 1 };
 * const b = { heapIndex: -1, load: 2 };
 * heap.push(a);
 * heap.push(b);
 * assert.equal(heap.peek(), b);
 * a.load = 3;
 * heap.update(a);
 * assert.equal(heap.peek(), a);
 * heap.remove(a);
 * assert.equal(heap.peek(), b);
 * ```
 */
export class IndexedHeap<T extends HeapPlace> {
  readonly #items: T[] = [];
  readonly #before: (a: T, b: T) => boolean;

  constructor(before: (a: T, b: T) => boolean) {
    this.#before = before;
  }

  get size(): number {
    return this.#items.length;
  }

  /** The item nearest the top, if any. */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** Adds an item that is in no heap. */
  push(item: T): void {
    item.heapIndex = this.#items.length;
    this.#items.push(item);
    this.#siftUp(item.heapIndex);
  }

  /** Moves `item` to its place after its priority changed, either way. */
  update(item: T): void {
    this.#siftUp(item.heapIndex);
    this.#siftDown(item.heapIndex);
  }

  /** Takes `item` out; its `heapIndex` becomes -1. */
  remove(item: T): void {
    const index = item.heapIndex;
    const last = this.#items.pop()!;
    item.heapIndex = -1;
    if (last === item) return;
    this.#items[index] = last;
    last.heapIndex = index;
    // The last item came from another branch: it may belong above its new place or below it.
    this.update(last);
  }

  #siftUp(index: number): void {
    const items = this.#items;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!this.#before(items[index], items[parent])) return;
      this.#swap(index, parent);
      index = parent;
    }
  }

  #siftDown(index: number): void {
    const items = this.#items;
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let top = index;
      if (left < items.length && this.#before(items[left], items[top])) top = left;
      if (right < items.length && this.#before(items[right], items[top])) top = right;
      if (top === index) return;
      this.#swap(index, top);
      index = top;
    }
  }

  #swap(i: number, j: number): void {
    const items = this.#items;
    [items[i], items[j]] = [items[j], items[i]];
    items[i].heapIndex = i;
    items[j].heapIndex = j;
  }
}
