/**
 * The arithmetic of `npm run bench` and `npm run bench:compare`, kept apart from any I/O
 * so it has unit tests: a series of per-round figures is summarised as its median with
 * its min–max, two contenders measured in the same rounds give a series of paired
 * ratios, and two runs are compared series by series.
 */

/** Figures of one quantity, one per round (or per sample), in the order measured. */
export type Series = readonly number[];

/** A series summarised: its median and its extremes. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

/** Median, min and max of the finite values of `xs` (NaN for all three when there are none). */
export function spread(xs: Series): Spread {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN };
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

/** The `p`th percentile (nearest rank) of `xs`; NaN when empty. */
export function percentile(xs: Series, p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Round-by-round ratios of two series measured in the same rounds (`a[i] / b[i]`). */
export function pairedRatios(a: Series, b: Series): number[] {
  if (a.length !== b.length) throw new Error(`paired series differ in length: ${a.length} vs ${b.length}`);
  return a.map((x, i) => (b[i]! > 0 ? x / b[i]! : NaN));
}

/** Whether two spreads share any value (a change smaller than the rounds' own scatter). */
export function overlaps(a: Spread, b: Spread): boolean {
  return a.min <= b.max && b.min <= a.max;
}

/**
 * A number with as many digits as it needs to be read: whole numbers from 100 up, one
 * decimal from 10, two below (so sub-millisecond latencies show, e.g. 0.21).
 */
export function figure(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  const a = Math.abs(x);
  return x.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
}

/** `median (min–max)`, or the value alone for a series of one. */
export function showSpread(xs: Series, digits?: number): string {
  const s = spread(xs);
  const f = (x: number) =>
    digits === undefined ? figure(x) : Number.isFinite(x) ? x.toFixed(digits) : "n/a";
  if (!Number.isFinite(s.median)) return "n/a";
  return xs.length < 2 || s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

/**
 * How far a baseline measured in a row strays from the same kind of server measured in
 * the noise check (`row median / noise median − 1`): interleaving protects a ratio from
 * noise that hits both sides of a round, not from a baseline that runs into another limit
 * for a whole row.
 */
export function baselineDrift(noiseBaseline: Series, rowBaseline: Series): number {
  return spread(rowBaseline).median / spread(noiseBaseline).median - 1;
}

/**
 * Whether a side's rounds measured the load generator rather than the server: the load
 * generator near a whole core while the server had CPU to spare (medians across rounds).
 * On this VM the load generator's core runs at varying speed (its CPU per request doubled
 * between the noise check and the direct rows of the 16:07Z run of 2026-12-01, with no
 * outside work), so such a side's figure is the load generator's limit at that moment.
 */
export function loadBound(serverCores: Series, loadCores: Series): boolean {
  return spread(loadCores).median >= 0.8 && spread(serverCores).median < 0.75;
}

/** One row of a run as written to the JSON results: its name and raw series by name. */
export interface RawRow {
  name: string;
  series: Record<string, number[]>;
  /** The row's cells as the run rendered them from its series (absent before 2026-12-07T11Z; bench/report.ts). */
  figure?: string;
  baseline?: string;
  ratio?: string;
}

/** What `npm run bench` writes beside its table (bench/results/latest.json and, for full runs, one file per run). */
export interface RunResults {
  title: string;
  /** ISO time the run ended. */
  when: string;
  quick: boolean;
  node: string;
  cores: number;
  rounds: { rounds: number; seconds: number; warmupSeconds: number };
  /** The noise check's verdict, as printed. */
  noise: string;
  /** Rounds measured, measured again for outside work, kept disturbed; rows started unsettled (absent before 2026-12-01T15Z). */
  disturbance?: { rounds: number; redone: number; disturbed: number; unsettled: number };
  rows: RawRow[];
}

/** One line of `npm run bench:compare`: a series of a row in two runs. */
export interface Change {
  row: string;
  series: string;
  before: Spread;
  after: Spread;
  /** after.median / before.median − 1 */
  change: number;
  /**
   * The two ranges do not overlap: the change is larger than either run's scatter.
   * Undefined when either side is one measurement: it has no scatter to judge by.
   */
  beyondSpread?: boolean;
  /** Measurements on each side. */
  counts: { before: number; after: number };
}

/** Every series present in both runs, matched by row name and series name, in `after`'s order. */
export function compareRuns(before: readonly RawRow[], after: readonly RawRow[]): Change[] {
  const old = new Map(before.map((r) => [r.name, r.series]));
  const changes: Change[] = [];
  for (const row of after) {
    const prev = old.get(row.name);
    if (!prev) continue;
    for (const [name, values] of Object.entries(row.series)) {
      const was = prev[name];
      if (!was) continue;
      const [b, a] = [spread(was), spread(values)];
      const counts = {
        before: was.filter(Number.isFinite).length,
        after: values.filter(Number.isFinite).length,
      };
      changes.push({
        row: row.name,
        series: name,
        before: b,
        after: a,
        change: b.median !== 0 ? a.median / b.median - 1 : NaN,
        ...(counts.before > 1 && counts.after > 1 ? { beyondSpread: !overlaps(a, b) } : {}),
        counts,
      });
    }
  }
  return changes;
}

/**
 * One Prometheus histogram read from a text exposition: its cumulative buckets (upper bound
 * → count, `+Inf` included), count and sum, summed over every series of `name` whose labels
 * include all of `labels` (e.g. every `action` of the HPA controller's fetches that did not fail).
 */
export interface Histogram {
  buckets: Map<number, number>;
  count: number;
  sum: number;
}

export function readHistogram(exposition: string, name: string, labels: Record<string, string>): Histogram {
  const h: Histogram = { buckets: new Map(), count: 0, sum: 0 };
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of exposition.split("\n")) {
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !m[1]!.startsWith(name)) continue;
    const pairs = m[2]!.split(",");
    if (!wanted.every((w) => pairs.includes(w))) continue;
    const value = Number(m[3]);
    if (m[1] === `${name}_bucket`) {
      const le = /le="([^"]+)"/.exec(m[2]!)?.[1];
      const bound = le === "+Inf" ? Infinity : Number(le);
      h.buckets.set(bound, (h.buckets.get(bound) ?? 0) + value);
    } else if (m[1] === `${name}_count`) h.count += value;
    else if (m[1] === `${name}_sum`) h.sum += value;
  }
  return h;
}

/** What was observed between two reads of the same histogram. */
export function histogramDelta(before: Histogram, after: Histogram): Histogram {
  return {
    buckets: new Map([...after.buckets].map(([le, n]) => [le, n - (before.buckets.get(le) ?? 0)])),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

/**
 * The `q` quantile (0–1) of a histogram, interpolated linearly within its bucket as
 * Prometheus's `histogram_quantile` does; NaN when it is empty, the highest finite bound
 * when the quantile falls in `+Inf`.
 */
export function histogramQuantile(h: Histogram, q: number): number {
  const bounds = [...h.buckets.keys()].sort((a, b) => a - b);
  const total = h.buckets.get(Infinity) ?? h.count;
  if (!total) return NaN;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const le of bounds) {
    const n = h.buckets.get(le)!;
    if (n >= rank) {
      if (le === Infinity) return lower;
      return lower + ((le - lower) * (rank - below)) / Math.max(n - below, 1e-12);
    }
    [lower, below] = [le, n];
  }
  return lower;
}
