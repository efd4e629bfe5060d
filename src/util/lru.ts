/**
 * Caches keyed by values a caller chooses (a token, a selector, an object name) are bounded
 * by an estimate of their size in bytes, least recently used evicted first: a count bound
 * alone lets a few large keys take a lot of memory, and clearing the whole cache when full
 * throws away every hot entry at once. The bookkeeping is lru-cache's (`maxSize` with a
 * `sizeCalculation`); this only fixes how sizes are counted.
 */
import { LRUCache } from "lru-cache";

/** A cache of at most `maxBytes` by `sizeOf`; an entry larger than the whole budget is not kept. */
export function byteBoundedCache<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(opts: {
  maxBytes: number;
  /** An estimate of one entry's size in bytes (key and value). */
  sizeOf: (key: K, value: V) => number;
}): LRUCache<K, V> {
  return new LRUCache<K, V>({
    maxSize: opts.maxBytes,
    sizeCalculation: (value, key) => Math.max(1, Math.ceil(opts.sizeOf(key, value))),
  });
}

/** Bytes of a JS string in memory (UTF-16), for `sizeOf`. */
export const stringBytes = (s: string): number => s.length * 2;
