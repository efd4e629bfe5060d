/**
 * Governor's own history of each MetricMapping's samples, for `governor replay` of sources
 * Prometheus does not hold (ADR 0023): a ring per sampler of its last `points` samples,
 * each the time, the sum of the values and how many there were (a scalar is one value; a
 * sample of objects — pods, Services — their sum and count, so a pods metric's average
 * and the pods that had one come back). Mappings that share a sampler share its ring; a
 * ring lives as long as its sampler (a mapping edited to another source starts anew).
 *
 * Opt-in (`--history-points`, 0 = none kept). Each point costs 20 bytes; a ring grows as
 * samples come, and all rings together never hold more than `maxBytes`
 * (`--history-memory`): past it a ring keeps what it has and wraps there.
 */
import type { SampleValue } from "../sources/source.js";

/** The most points a ring may keep (a week at 6 s). */
export const MAX_HISTORY_POINTS = 100_000;

/** The most points one answer holds (~5 ms of JSON on the event loop); the rest come page by page. */
export const HISTORY_PAGE_POINTS = 5_000;

/** Bytes of one point: time and sum (float64), count (uint32). */
export const HISTORY_POINT_BYTES = 20;

/** What a ring answers: points oldest first, in columns. */
export interface HistoryPoints {
  /** When each sample was taken, in ms since the epoch. */
  atMs: number[];
  sum: number[];
  count: number[];
}

/** One page of a ring's points, and where the next page starts (the time of its first point). */
export interface HistoryPage {
  points: HistoryPoints;
  nextMs?: number;
}

/** Memory for rings, shared by all of them. */
interface Budget {
  take(bytes: number): boolean;
  give(bytes: number): void;
}

const UNLIMITED: Budget = { take: () => true, give: () => {} };

/** The samples of one sampler, oldest overwritten first. */
export class HistoryRing {
  private at = new Float64Array(0);
  private sums = new Float64Array(0);
  private counts = new Uint32Array(0);
  /** Where the next point goes, and how many are kept. */
  private next = 0;
  private size = 0;
  private disposed = false;

  constructor(
    readonly capacity: number,
    private readonly budget: Budget = UNLIMITED,
  ) {}

  /** How many points it holds. */
  get length(): number {
    return this.size;
  }

  /**
   * Keeps one sample. One at the time of the last is dropped (every mapping sharing the
   * sampler hands it in); one before it means the clock went back: what was kept is
   * dropped, since points must stay in time order.
   */
  record(atMs: number, value: SampleValue): void {
    if (this.capacity === 0 || this.disposed || !Number.isFinite(atMs)) return;
    if (this.size > 0) {
      const last = this.at[(this.next - 1 + this.at.length) % this.at.length]!;
      if (atMs === last) return;
      if (atMs < last) this.next = this.size = 0;
    }
    let sum = 0;
    let count = 0;
    if (value.kind === "scalar") {
      sum = value.value;
      count = 1;
    } else
      for (const v of value.values.values()) {
        sum += v;
        count++;
      }
    if (!Number.isFinite(sum)) return;
    if (this.size === this.at.length && this.at.length < this.capacity) this.grow();
    if (this.at.length === 0) return; // no memory left for it
    this.at[this.next] = atMs;
    this.sums[this.next] = sum;
    this.counts[this.next] = count;
    this.next = (this.next + 1) % this.at.length;
    this.size = Math.min(this.size + 1, this.at.length);
  }

  /** The points taken at or after `sinceMs`, oldest first. */
  points(sinceMs = -Infinity): HistoryPoints {
    return this.page(sinceMs, Infinity).points;
  }

  /** At most `limit` points taken at or after `sinceMs`, oldest first, and where the next page starts. */
  page(sinceMs: number, limit: number): HistoryPage {
    const out: HistoryPoints = { atMs: [], sum: [], count: [] };
    const n = this.at.length;
    const slot = (i: number) => (this.next - this.size + i + n) % n;
    // Points are in time order: the first at or after sinceMs by binary search.
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.at[slot(mid)]! < sinceMs) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.size; i++) {
      const j = slot(i);
      if (out.atMs.length === limit) return { points: out, nextMs: this.at[j]! };
      out.atMs.push(this.at[j]!);
      out.sum.push(this.sums[j]!);
      out.count.push(this.counts[j]!);
    }
    return { points: out };
  }

  /** Gives its memory back (its sampler stopped). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.budget.give(this.at.length * HISTORY_POINT_BYTES);
    this.at = new Float64Array(0);
    this.sums = new Float64Array(0);
    this.counts = new Uint32Array(0);
    this.next = this.size = 0;
  }

  /** Doubles the arrays (at least 16 points, at most the capacity) if the budget allows, oldest point first. */
  private grow(): void {
    const length = Math.min(this.capacity, Math.max(16, this.at.length * 2));
    if (!this.budget.take((length - this.at.length) * HISTORY_POINT_BYTES)) return;
    const old = this.points();
    this.at = new Float64Array(length);
    this.sums = new Float64Array(length);
    this.counts = new Uint32Array(length);
    this.at.set(old.atMs);
    this.sums.set(old.sum);
    this.counts.set(old.count);
    this.next = this.size % length;
  }
}

/**
 * Every ring of a replica, under one memory budget, and which ring each mapping reads
 * (by its `namespace/name`).
 */
export class MappingHistories implements Budget {
  private readonly byMapping = new Map<string, HistoryRing>();
  private readonly bySampler = new WeakMap<object, HistoryRing>();
  private used = 0;
  private warned = false;

  /**
   * `points`: per ring, 0 to {@link MAX_HISTORY_POINTS}; `maxBytes`: all rings together.
   * `onFull` is told once when the budget first stops a ring from growing.
   */
  constructor(
    readonly points: number,
    readonly maxBytes: number = Infinity,
    private readonly onFull?: (maxBytes: number) => void,
  ) {
    if (!Number.isInteger(points) || points < 0 || points > MAX_HISTORY_POINTS)
      throw new RangeError(`history points must be an integer from 0 to ${MAX_HISTORY_POINTS}`);
  }

  /** Bytes the rings hold now. */
  get usedBytes(): number {
    return this.used;
  }

  take(bytes: number): boolean {
    if (this.used + bytes > this.maxBytes) {
      if (!this.warned) this.onFull?.(this.maxBytes);
      this.warned = true;
      return false;
    }
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }

  /** The ring of a sampler: made on first ask, its memory given back when the sampler stops. */
  ringOf(sampler: { onStop(fn: () => void): void }): HistoryRing {
    let ring = this.bySampler.get(sampler);
    if (!ring) {
      const made = new HistoryRing(this.points, this);
      sampler.onStop(() => made.dispose());
      this.bySampler.set(sampler, (ring = made));
    }
    return ring;
  }

  /** From now on `key` reads `ring`. */
  attach(key: string, ring: HistoryRing): void {
    this.byMapping.set(key, ring);
  }

  /** `key` no longer reads `ring` (unless it already reads another: a mapping replaced by its edit). */
  detach(key: string, ring: HistoryRing): void {
    if (this.byMapping.get(key) === ring) this.byMapping.delete(key);
  }

  /** The ring `key` reads, if it samples on this replica with samples kept. */
  get(key: string): HistoryRing | undefined {
    return this.byMapping.get(key);
  }
}
