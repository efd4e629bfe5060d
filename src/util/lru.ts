/**
 * A least-recently-used cache bounded by an estimate of its size in bytes: what callers put
 * in it is keyed by values a caller chooses (a token, a selector, an object name), so a
 * count bound alone lets a few large keys take a lot of memory, and clearing the whole
 * cache when full (what the review caches did) throws away every hot entry at once.
 */

/** Options of {@link ByteLru}. */
export interface ByteLruOptions<K, V> {
  /** The most the entries may add up to, by `sizeOf`. */
  maxBytes: number;
  /** An estimate of one entry's size in bytes (key and value). */
  sizeOf: (key: K, value: V) => number;
}

/** See the module comment. */
export class ByteLru<K, V> {
  private readonly entries = new Map<K, { value: V; bytes: number }>();
  private used = 0;

  constructor(private readonly opts: ByteLruOptions<K, V>) {}

  /** Bytes held now (by the estimate). */
  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value, marking it most recently used. */
  get(key: K): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /** Adds or replaces; evicts the least recently used entries beyond the budget. An entry larger than the whole budget is not kept. */
  set(key: K, value: V): void {
    this.delete(key);
    const bytes = this.opts.sizeOf(key, value);
    if (bytes > this.opts.maxBytes) return;
    this.entries.set(key, { value, bytes });
    this.used += bytes;
    for (const [oldest, e] of this.entries) {
      if (this.used <= this.opts.maxBytes) break;
      this.entries.delete(oldest);
      this.used -= e.bytes;
    }
  }

  delete(key: K): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    this.used -= e.bytes;
  }
}

/** Bytes of a JS string in memory (UTF-16), for {@link ByteLruOptions.sizeOf}. */
export const stringBytes = (s: string): number => s.length * 2;
