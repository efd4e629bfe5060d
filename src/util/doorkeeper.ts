/**
 * Remembers keys seen once without keeping them, so that a cache keyed by values a caller
 * chooses (object names) takes a key only when it is asked for a second time: a flood of
 * unique keys then costs the cache nothing — no entry kept, nothing for the garbage
 * collector to copy out of the young generation, no hot entry evicted. (TinyLFU's
 * "doorkeeper", here a direct-mapped table of 32-bit hashes: no allocation per key.) A
 * collision only lets a key in early or forgets one, which costs a cache one miss.
 */
export class Doorkeeper {
  private readonly table: Uint32Array;

  /** @param slots a power of two: how many recent first sightings are remembered, at most. */
  constructor(slots = 8192) {
    if (slots < 1 || (slots & (slots - 1)) !== 0)
      throw new Error(`slots must be a power of two, not ${slots}`);
    this.table = new Uint32Array(slots);
  }

  /** Whether `key` was seen before (and not pushed out since); remembers it either way. */
  seenBefore(key: string): boolean {
    // FNV-1a over UTF-16 code units; 0 marks an empty slot.
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    h = h >>> 0 || 1;
    const slot = h & (this.table.length - 1);
    if (this.table[slot] === h) return true;
    this.table[slot] = h;
    return false;
  }
}
