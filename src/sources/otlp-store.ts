/**
 * What pushers sent over OTLP, by namespace, metric and series, for the `otlp` sources of
 * that namespace to read: the receiver (src/apiserver/otlp-receiver.ts) writes the points of
 * an authenticated pusher into its own namespace only; a source reads its mapping's
 * namespace only. A namespace keeps the metrics its mappings select and nothing else
 * ({@link OtlpStore.selected}), at most `maxSeriesPerNamespace` series, each its last two
 * points (a rate needs two); a series nobody pushed for `retainMs` is forgotten.
 */
import {
  type OtlpBatch,
  type OtlpPoint,
  POD_NAME_ATTRIBUTE,
  POD_UID_ATTRIBUTE,
  attributesOfKey,
} from "./otlp-decode.js";

/** One reading of a series. */
export interface OtlpReading {
  startMs: number;
  atMs: number;
  value: number;
  histogram?: OtlpPoint["histogram"];
}

/** One series: a metric with one set of attributes, from one namespace. */
export interface OtlpSeries {
  /** Its key among its metric's series. */
  readonly key: string;
  /** The attributes mappings can match on (see {@link OtlpStore.kept}). */
  readonly attributes: Readonly<Record<string, string>>;
  type: OtlpPoint["type"];
  cumulative: boolean;
  monotonic: boolean;
  /** When Governor last received a point of it (its own clock), in ms. */
  receivedAtMs: number;
  current: OtlpReading;
  previous?: OtlpReading;
}

/** Options of {@link OtlpStore}. */
export interface OtlpStoreOptions {
  /** The most series one namespace keeps. @default 10000 */
  maxSeriesPerNamespace?: number;
  /** The most bytes (as estimated) one namespace's series may hold. @default 16777216 (16 MiB) */
  maxBytesPerNamespace?: number;
  /** How long a series nobody pushes is kept. @default 600000 (10 minutes) */
  retainMs?: number;
  /** @default Date.now */
  now?: () => number;
}

/** Pushes and points of a namespace refused lately, and why the last were. */
export interface OtlpRefusals {
  pushes: number;
  points: number;
  reason: string;
  atMs: number;
}

/** How long refusals are remembered after the last one. */
export const REFUSALS_KEPT_MS = 120_000;

/** What {@link OtlpStore.ingest} did with a batch. */
export interface IngestResult {
  accepted: number;
  /** Points refused because the namespace keeps as many series (or bytes) as it may. */
  overLimit: number;
}

interface NamespaceData {
  /** Metric names its mappings read, with how many mappings read each. */
  readonly selected: Map<string, number>;
  /** Attribute keys its mappings match on, with how many mappings match on each. */
  readonly matched: Map<string, number>;
  /** Histogram bounds in use, by their text, shared by the series that have them. */
  readonly bounds: Map<string, number[]>;
  bytes: number;
  /** Series by metric, then by their attributes' key. */
  readonly series: Map<string, Map<string, OtlpSeries>>;
  seriesCount: number;
  /** Called when a metric gets a point. */
  readonly listeners: Map<string, Set<() => void>>;
  /** Refusals lately, by metric ("" for the namespace's pushes as a whole). */
  readonly refusals: Map<string, OtlpRefusals>;
}

/** See the module comment. */
export class OtlpStore {
  private readonly namespaces = new Map<string, NamespaceData>();
  private readonly maxSeries: number;
  private readonly maxBytes: number;
  private readonly retainMs: number;
  private readonly now: () => number;
  private lastSweepMs = 0;

  constructor(opts: OtlpStoreOptions = {}) {
    this.maxSeries = opts.maxSeriesPerNamespace ?? 10_000;
    this.maxBytes = opts.maxBytesPerNamespace ?? 16 << 20;
    this.retainMs = opts.retainMs ?? 600_000;
    this.now = opts.now ?? Date.now;
  }

  private data(namespace: string): NamespaceData {
    let d = this.namespaces.get(namespace);
    if (!d) {
      d = {
        selected: new Map(),
        matched: new Map(),
        bounds: new Map(),
        bytes: 0,
        series: new Map(),
        seriesCount: 0,
        listeners: new Map(),
        refusals: new Map(),
      };
      this.namespaces.set(namespace, d);
    }
    return d;
  }

  /**
   * `metric` is read by a mapping of `namespace`, matching on the attribute keys `matches`,
   * until the returned function is called.
   */
  select(namespace: string, metric: string, matches: readonly string[] = []): () => void {
    const d = this.data(namespace);
    d.selected.set(metric, (d.selected.get(metric) ?? 0) + 1);
    for (const k of matches) d.matched.set(k, (d.matched.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of matches) {
        const m = (d.matched.get(k) ?? 1) - 1;
        if (m > 0) d.matched.set(k, m);
        else d.matched.delete(k);
      }
      const n = (d.selected.get(metric) ?? 1) - 1;
      if (n > 0) return void d.selected.set(metric, n);
      d.selected.delete(metric);
      for (const s of d.series.get(metric)?.values() ?? []) d.bytes -= sizeOf(s);
      d.seriesCount -= d.series.get(metric)?.size ?? 0;
      d.series.delete(metric);
      if (d.selected.size === 0 && d.listeners.size === 0) this.namespaces.delete(namespace);
    };
  }

  /** The metric names mappings of `namespace` read (what a push from it is decoded for). */
  selected(namespace: string): string[] {
    return [...(this.namespaces.get(namespace)?.selected.keys() ?? [])];
  }

  /** The attribute keys a series of `namespace` keeps: those its mappings match on, and the pod's name and uid. */
  kept(namespace: string): string[] {
    return [POD_NAME_ATTRIBUTE, POD_UID_ATTRIBUTE, ...(this.namespaces.get(namespace)?.matched.keys() ?? [])];
  }

  /** Calls `fn` whenever `metric` of `namespace` gets a point, until the returned function is called. */
  listen(namespace: string, metric: string, fn: () => void): () => void {
    const d = this.data(namespace);
    let set = d.listeners.get(metric);
    if (!set) d.listeners.set(metric, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) d.listeners.delete(metric);
      if (d.selected.size === 0 && d.listeners.size === 0) this.namespaces.delete(namespace);
    };
  }

  /** Keeps a pusher's points in its namespace: those from `from` up to `to` (all by default). */
  ingest(namespace: string, batch: OtlpBatch, from = 0, to = batch.key.length): IngestResult {
    const d = this.namespaces.get(namespace);
    const result: IngestResult = { accepted: 0, overLimit: 0 };
    if (!d) return result;
    const now = this.now();
    this.sweep(now);
    const touched = new Set<string>();
    const overLimitBy = new Map<string, number>();
    const types = ["gauge", "sum", "histogram"] as const;
    for (let i = from; i < Math.min(to, batch.key.length); i++) {
      const metric = batch.metrics[batch.metric[i]!]!;
      let byKey = d.series.get(metric);
      if (!byKey) {
        if (!d.selected.has(metric)) continue; // released while the body was decoded
        d.series.set(metric, (byKey = new Map<string, OtlpSeries>()));
      }
      const flags = batch.flags[i]!;
      const type = types[flags & 3]!;
      const atMs = batch.atMs[i]!;
      const reading: OtlpReading = {
        startMs: batch.startMs[i]!,
        atMs,
        value: batch.value[i]!,
        histogram: this.shared(d, batch.histograms[i] ?? undefined),
      };
      const key = batch.key[i]!;
      const s = byKey.get(key);
      if (s) {
        // An older point than the one kept (a retry arriving late) changes nothing.
        if (atMs < s.current.atMs) continue;
        const before = sizeOf(s);
        const previous =
          atMs > s.current.atMs || s.type !== type ? (s.type === type ? s.current : undefined) : s.previous;
        const grows =
          readingSize(reading) +
          (previous ? readingSize(previous) : 0) -
          readingSize(s.current) -
          (s.previous ? readingSize(s.previous) : 0);
        if (grows > 0 && d.bytes + grows > this.maxBytes) {
          result.overLimit++;
          overLimitBy.set(metric, (overLimitBy.get(metric) ?? 0) + 1);
          continue;
        }
        s.previous = previous;
        s.current = reading;
        d.bytes += sizeOf(s) - before;
        s.type = type;
        s.cumulative = (flags & 4) !== 0;
        s.monotonic = (flags & 8) !== 0;
        s.receivedAtMs = now;
      } else {
        if (d.seriesCount >= this.maxSeries) {
          result.overLimit++;
          overLimitBy.set(metric, (overLimitBy.get(metric) ?? 0) + 1);
          continue;
        }
        const series: OtlpSeries = {
          key,
          attributes: Object.freeze(attributesOfKey(batch.kept[i]!)),
          type,
          cumulative: (flags & 4) !== 0,
          monotonic: (flags & 8) !== 0,
          receivedAtMs: now,
          current: reading,
        };
        if (d.bytes + sizeOf(series) > this.maxBytes) {
          result.overLimit++;
          overLimitBy.set(metric, (overLimitBy.get(metric) ?? 0) + 1);
          continue;
        }
        byKey.set(key, series);
        d.seriesCount++;
        d.bytes += sizeOf(series);
      }
      result.accepted++;
      touched.add(metric);
    }
    for (const [metric, n] of overLimitBy)
      this.refused(namespace, metric, {
        pushes: 0,
        points: n,
        reason: `the namespace keeps as many series as it may (${this.maxSeries}, ${Math.round(this.maxBytes / 1048576)} MiB)`,
      });
    for (const metric of touched) for (const fn of d.listeners.get(metric) ?? []) fn();
    return result;
  }

  /** The series of `metric` pushed from `namespace`. */
  series(namespace: string, metric: string): Iterable<OtlpSeries> {
    return this.namespaces.get(namespace)?.series.get(metric)?.values() ?? [];
  }

  /**
   * Notes that pushes of `namespace` (of `metric`, or of the namespace as a whole) were
   * refused, for the mappings reading them to say so; namespaces no mapping reads are not
   * kept.
   */
  refused(
    namespace: string,
    metric: string | undefined,
    refusal: { pushes: number; points: number; reason: string },
  ): void {
    const d = this.namespaces.get(namespace);
    if (!d || (metric !== undefined && !d.selected.has(metric))) return;
    const now = this.now();
    const key = metric ?? "";
    const known = d.refusals.get(key);
    const fresh = known && now - known.atMs <= REFUSALS_KEPT_MS;
    d.refusals.set(key, {
      pushes: (fresh ? known.pushes : 0) + refusal.pushes,
      points: (fresh ? known.points : 0) + refusal.points,
      reason: refusal.reason,
      atMs: now,
    });
  }

  /** Refusals of `metric`'s pushes in `namespace` (its own and the namespace's) in the last {@link REFUSALS_KEPT_MS}. */
  refusals(namespace: string, metric: string): OtlpRefusals | undefined {
    const d = this.namespaces.get(namespace);
    if (!d) return undefined;
    const now = this.now();
    let out: OtlpRefusals | undefined;
    for (const key of [metric, ""]) {
      const r = d.refusals.get(key);
      if (!r || now - r.atMs > REFUSALS_KEPT_MS) continue;
      out = out
        ? {
            pushes: out.pushes + r.pushes,
            points: out.points + r.points,
            reason: r.atMs > out.atMs ? r.reason : out.reason,
            atMs: Math.max(out.atMs, r.atMs),
          }
        : r;
    }
    return out;
  }

  /** A histogram whose bounds are those of another of the namespace's, sharing their array. */
  private shared(d: NamespaceData, h: OtlpPoint["histogram"]): OtlpPoint["histogram"] {
    if (!h || h.bounds.length === 0) return h;
    const text = h.bounds.join(",");
    const known = d.bounds.get(text);
    if (known) return { ...h, bounds: known };
    if (d.bounds.size < MAX_SHARED_BOUNDS) d.bounds.set(text, h.bounds);
    return h;
  }

  /** The bytes `namespace`'s series hold, as estimated. */
  bytes(namespace: string): number {
    return this.namespaces.get(namespace)?.bytes ?? 0;
  }

  /** How many series `namespace` keeps. */
  seriesCount(namespace: string): number {
    return this.namespaces.get(namespace)?.seriesCount ?? 0;
  }

  /** Forgets series nobody pushed for `retainMs` (at most once a minute). */
  private sweep(now: number): void {
    if (now - this.lastSweepMs < 60_000) return;
    this.lastSweepMs = now;
    for (const d of this.namespaces.values())
      for (const byKey of d.series.values())
        for (const [key, s] of byKey)
          if (now - s.receivedAtMs > this.retainMs) {
            byKey.delete(key);
            d.seriesCount--;
            d.bytes -= sizeOf(s);
          }
  }
}

/** Distinct histogram bounds a namespace shares; more are kept per series. */
const MAX_SHARED_BOUNDS = 256;

/** A reading's bytes, as estimated (bounds counted in full, shared or not). */
function readingSize(r: OtlpReading): number {
  return 48 + (r.histogram ? 64 + 8 * (r.histogram.counts.length + r.histogram.bounds.length) : 0);
}

/** A series' bytes, as estimated: its key and attributes (two bytes a character), its readings, its objects. */
function sizeOf(s: OtlpSeries): number {
  let chars = s.key.length;
  for (const k in s.attributes) chars += k.length + s.attributes[k]!.length;
  return 160 + 2 * chars + readingSize(s.current) + (s.previous ? readingSize(s.previous) : 0);
}
