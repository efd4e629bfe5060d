/**
 * Governor's own history of each MetricMapping's samples, for `governor replay` of sources
 * Prometheus does not hold (ADR 0022): a ring per mapping of its last `capacity` samples,
 * each the time, the sum of the values and how many there were (a scalar is one value; a
 * sample of objects — pods, Services — their sum and count, so a pods metric's average
 * and the pods that had one come back). Opt-in (`--history-points`, 0 = none kept): each
 * point costs 20 bytes, and a ring grows to its capacity only as samples come.
 */
import type { SampleValue } from "../sources/source.js";

/** The most points a ring may keep (a week at 6 s). */
export const MAX_HISTORY_POINTS = 100_000;

/** The most points one answer holds (~5 ms of JSON on the event loop); the rest come page by page. */
export const HISTORY_PAGE_POINTS = 5_000;

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

/** The samples of one mapping, oldest overwritten first. */
export class HistoryRing {
  private at = new Float64Array(0);
  private sums = new Float64Array(0);
  private counts = new Uint32Array(0);
  /** Where the next point goes, and how many are kept. */
  private next = 0;
  private size = 0;

  constructor(readonly capacity: number) {}

  /** How many points it holds. */
  get length(): number {
    return this.size;
  }

  /** Keeps one sample; one no newer than the last kept is dropped (a shared sampler tells each mapping). */
  record(atMs: number, value: SampleValue): void {
    if (this.capacity === 0 || !Number.isFinite(atMs)) return;
    if (this.size > 0 && atMs <= this.at[(this.next - 1 + this.at.length) % this.at.length]!) return;
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
    for (let i = 0; i < this.size; i++) {
      const j = (this.next - this.size + i + n) % n;
      const at = this.at[j]!;
      if (at < sinceMs) continue;
      if (out.atMs.length === limit) return { points: out, nextMs: at };
      out.atMs.push(at);
      out.sum.push(this.sums[j]!);
      out.count.push(this.counts[j]!);
    }
    return { points: out };
  }

  /** Doubles the arrays (at least 16 points, at most the capacity), oldest point first. */
  private grow(): void {
    const length = Math.min(this.capacity, Math.max(16, this.at.length * 2));
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

/** The rings of every mapping a replica samples, by the mapping's `namespace/name`. */
export class MappingHistories {
  private readonly rings = new Map<string, HistoryRing>();

  /** `capacity`: points per mapping, 0 to {@link MAX_HISTORY_POINTS}. */
  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > MAX_HISTORY_POINTS)
      throw new RangeError(`history points must be an integer from 0 to ${MAX_HISTORY_POINTS}`);
  }

  /** Keeps a mapping's sample (nothing when the capacity is 0). */
  record(key: string, atMs: number, value: SampleValue): void {
    if (this.capacity === 0) return;
    let ring = this.rings.get(key);
    if (!ring) this.rings.set(key, (ring = new HistoryRing(this.capacity)));
    ring.record(atMs, value);
  }

  /** The mapping's ring, if it has sampled since this replica started. */
  get(key: string): HistoryRing | undefined {
    return this.rings.get(key);
  }

  /** Drops a deleted mapping's history. */
  forget(key: string): void {
    this.rings.delete(key);
  }
}
