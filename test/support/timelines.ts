/**
 * Two deciders watched side by side — the HPA controller's `desiredReplicas` and Governor's
 * recommendation — compared once per sync period, and each difference explained or not:
 * a difference is "a sync apart" when the other side showed the same replicas within one
 * period (and a margin for the watching) of that moment, i.e. the two syncs read values
 * taken at different moments, not the algorithm deciding otherwise.
 */

/** A value and when it was first seen (ms). */
export interface Seen {
  atMs: number;
  value: number;
}

/** A timeline: values in the order seen; each holds until the next. */
export type Timeline = Seen[];

export interface Difference {
  atMs: number;
  hpa: number;
  governor: number;
  /** Why, if it is explained; absent: unexplained. */
  explanation?: string;
}

export interface Comparison {
  instants: number;
  same: number;
  differences: Difference[];
}

/** Appends `value` seen at `atMs` when it differs from the last. */
export function see(t: Timeline, atMs: number, value: number | undefined): void {
  if (value === undefined) return;
  if (t.length === 0 || t[t.length - 1]!.value !== value) t.push({ atMs, value });
}

/** The value of `t` at `atMs`, if it had one. */
export function valueAt(t: Timeline, atMs: number): number | undefined {
  let v: number | undefined;
  for (const s of t) {
    if (s.atMs > atMs) break;
    v = s.value;
  }
  return v;
}

/** When the segment of `t` in effect at `atMs` began. */
function segmentStart(t: Timeline, atMs: number): number {
  let start = -Infinity;
  for (const s of t) {
    if (s.atMs > atMs) break;
    start = s.atMs;
  }
  return start;
}

/** When `t` first took `value` in (atMs, untilMs], if it did. */
function tookAfter(t: Timeline, value: number, atMs: number, untilMs: number): number | undefined {
  return t.find((s) => s.value === value && s.atMs > atMs && s.atMs <= untilMs)?.atMs;
}

/**
 * Compares the two every `periodMs` over [fromMs, toMs]; `marginMs`: how late a change may
 * be seen; `other`: what to call the second side (default Governor).
 */
export function compareBySync(
  hpa: Timeline,
  governor: Timeline,
  o: { fromMs: number; toMs: number; periodMs: number; marginMs: number; other?: string },
): Comparison {
  const other = o.other ?? "Governor";
  const out: Comparison = { instants: 0, same: 0, differences: [] };
  const window = o.periodMs + o.marginMs;
  for (let at = o.fromMs; at <= o.toMs; at += o.periodMs) {
    const h = valueAt(hpa, at);
    const g = valueAt(governor, at);
    if (h === undefined || g === undefined) continue;
    out.instants++;
    if (h === g) {
      out.same++;
      continue;
    }
    const d: Difference = { atMs: at, hpa: h, governor: g };
    // One side has moved and the other follows within a sync: each read the values at its
    // own moment of the period.
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const hpaFollows = tookAfter(hpa, g, at, at + window);
    const govFollows = tookAfter(governor, h, at, at + window);
    if (hpaFollows !== undefined && hpaFollows - segmentStart(governor, at) <= window)
      d.explanation = `a sync apart: the HPA chose ${g} too, ${s(hpaFollows - segmentStart(governor, at))} after ${other}`;
    else if (govFollows !== undefined && govFollows - segmentStart(hpa, at) <= window)
      d.explanation = `a sync apart: ${other} chose ${h} too, ${s(govFollows - segmentStart(hpa, at))} after the HPA`;
    out.differences.push(d);
  }
  return out;
}

/** The comparison as lines for the test's output. */
export function describeComparison(
  name: string,
  c: Comparison,
  startMs: number,
  other = "Governor",
): string[] {
  const pct = c.instants ? ((100 * c.same) / c.instants).toFixed(1) : "-";
  return [
    `${name}: ${c.same} of ${c.instants} syncs identical (${pct} %)`,
    ...c.differences.map(
      (d) =>
        `  +${((d.atMs - startMs) / 1000).toFixed(1)} s: HPA ${d.hpa}, ${other} ${d.governor}: ${d.explanation ?? "UNEXPLAINED"}`,
    ),
  ];
}
