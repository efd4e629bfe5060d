/**
 * `otlp`: a metric pushed to Governor over OTLP/HTTP (src/apiserver/otlp-receiver.ts) by the
 * mapping's own namespace — never another's, whatever its attributes say. It reads the
 * series of one metric whose attributes (the resource's and the point's) match, each as a
 * number (a gauge's or sum's value, its per-second rate with `rate: true`, a histogram's
 * count, sum or a quantile estimate), and combines them: per pod by the `k8s.pod.name`
 * (or `k8s.pod.uid`) resource attribute when the mapping describes pods, else into one value. A series not
 * pushed for `staleAfter` less one interval is left out, and the value's time is that of
 * the oldest point in it, so a value is never older than `staleAfter` (never a made-up 0).
 * A push wakes the mapping's sampler, so a value is servable a moment after it arrives.
 */
import { z } from "zod";
import { StringMap, withRules } from "../api/common.js";
import {
  MAX_ATTRIBUTE_KEY,
  MAX_ATTRIBUTE_VALUE,
  MAX_METRIC_NAME,
  POD_NAME_ATTRIBUTE,
  POD_UID_ATTRIBUTE,
} from "./otlp-decode.js";
import { type OtlpReading, type OtlpSeries, type OtlpStore, REFUSALS_KEPT_MS } from "./otlp-store.js";
import {
  type MetricSource,
  type SampleNote,
  type SampleRequest,
  type SampleValue,
  SourceConfigError,
} from "./source.js";
import { defineSource, required } from "./kind.js";
import { quote } from "../util/bounded-text.js";

/** Series an `otlp` sample reads in one turn of the event loop. */
const YIELD_EVERY = 1000;
/** The most attributes an `otlp` source matches. */
const MAX_MATCH_ATTRIBUTES = 16;

/** `spec.source.otlp`. */
export const OtlpSpec = withRules(
  z.object({
    metric: z
      .string()
      .min(1)
      .max(MAX_METRIC_NAME)
      .regex(/^[A-Za-z][A-Za-z0-9_.\-/]*$/, "must be an OpenTelemetry instrument name")
      .meta({ description: "The metric's name as pushed, e.g. queue.depth." }),
    attributes: withRules(StringMap, [
      {
        rule: `self.size() <= ${MAX_MATCH_ATTRIBUTES}`,
        message: `at most ${MAX_MATCH_ATTRIBUTES} attributes`,
        check: (self) => Object.keys(self).length <= MAX_MATCH_ATTRIBUTES,
      },
      {
        rule: `self.all(k, k.size() <= ${MAX_ATTRIBUTE_KEY} && self[k].size() <= ${MAX_ATTRIBUTE_VALUE})`,
        message: `attribute keys are at most ${MAX_ATTRIBUTE_KEY} characters, values ${MAX_ATTRIBUTE_VALUE}`,
        check: (self) =>
          Object.entries(self).every(
            ([k, v]) => k.length <= MAX_ATTRIBUTE_KEY && v.length <= MAX_ATTRIBUTE_VALUE,
          ),
      },
    ])
      .optional()
      .meta({
        description: `Only series with these attributes, the resource's or the point's (at most ${MAX_MATCH_ATTRIBUTES}).`,
      }),
    aggregate: z
      .enum(["sum", "avg", "max", "min", "last"])
      .default("sum")
      .meta({ description: "How the matching series of one object combine (last: the one pushed last)." }),
    rate: z
      .boolean()
      .default(false)
      .meta({ description: "Serve a sum's (or a histogram's count or sum) per-second rate, reset-aware." }),
    histogram: z.enum(["count", "sum", "quantile"]).default("count").meta({
      description: "What a histogram gives: its count, its sum, or the quantile estimated from its buckets.",
    }),
    quantile: z
      .number()
      .min(0)
      .max(1)
      .optional()
      .meta({ description: "The quantile (0 to 1) when histogram is quantile." }),
  }),
  [
    {
      rule: "(has(self.quantile) && has(self.histogram) && self.histogram == 'quantile') || (!has(self.quantile) && (!has(self.histogram) || self.histogram != 'quantile'))",
      message: "quantile is set when, and only when, histogram is quantile",
      fieldPath: ".quantile",
      check: (self) => (self.quantile !== undefined) === (self.histogram === "quantile"),
    },
  ],
).meta({ description: "A metric pushed to Governor over OTLP by pods of the mapping's namespace." });

type Spec = z.output<typeof OtlpSpec>;

/** See the module comment. */
export class OtlpSource implements MetricSource {
  readonly needsObjects = true;
  private readonly release: () => void;
  private readonly windowMs: number;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: {
      namespace: string;
      store: OtlpStore;
      /** Series pushed longer ago than this are left out. */
      windowMs: number;
      /** @default Date.now */
      now?: () => number;
    },
  ) {
    this.release = ctx.store.select(ctx.namespace, spec.metric, Object.keys(spec.attributes ?? {}));
    this.windowMs = ctx.windowMs;
  }

  onChange(fn: () => void): () => void {
    return this.ctx.store.listen(this.ctx.namespace, this.spec.metric, fn);
  }

  close(): void {
    this.release();
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const now = (this.ctx.now ?? Date.now)();
    const spec = this.spec;
    const byObject = req.objects
      ? new Map<string, Group>(req.objects.map((o) => [o.name, new Group()]))
      : undefined;
    const nameOfUid =
      req.objects &&
      new Map(req.objects.flatMap((o): [string, string][] => (o.uid ? [[o.uid, o.name]] : [])));
    const all = new Group();
    let matching = 0;
    let fresh = 0;
    let wrongType: string | undefined;
    let seen = 0;
    for (const s of this.ctx.store.series(req.namespace, spec.metric)) {
      // A metric of many series (histograms of many buckets) is read a slice per turn.
      if (++seen % YIELD_EVERY === 0) await new Promise(setImmediate);
      if (!matches(s.attributes, spec.attributes)) continue;
      matching++;
      if (now - s.receivedAtMs > this.windowMs) continue;
      fresh++;
      const value = seriesValue(s, spec);
      if (typeof value === "string") {
        wrongType ??= value;
        continue;
      }
      if (value === undefined || !Number.isFinite(value)) continue;
      const pod = s.attributes[POD_NAME_ATTRIBUTE] ?? nameOfUid?.get(s.attributes[POD_UID_ATTRIBUTE] ?? "");
      const group = byObject ? byObject.get(pod ?? "") : all;
      group?.add(value, s);
    }
    const what = `metric ${quote(spec.metric, 80)}${spec.attributes ? " with the attributes asked for" : ""}`;
    if (wrongType) throw new Error(wrongType);
    if (fresh === 0)
      throw new Error(
        matching === 0
          ? `nothing of ${what} was pushed from this namespace`
          : `nothing of ${what} was pushed in the last ${Math.round(this.windowMs / 1000)} s`,
      );
    const note = this.refusalNote(req.namespace);
    if (!byObject) {
      if (all.count === 0) throw new Error(`${what}: waiting for a second point to make a rate`);
      return { kind: "scalar", value: all.value(spec.aggregate), observedAtMs: all.oldestMs, ...note };
    }
    const values = new Map<string, number>();
    let oldestMs = Infinity;
    for (const [name, g] of byObject)
      if (g.count > 0) {
        values.set(name, g.value(spec.aggregate));
        oldestMs = Math.min(oldestMs, g.oldestMs);
      }
    if (values.size === 0)
      throw new Error(
        `no pod of this mapping pushed ${what} with a ${POD_NAME_ATTRIBUTE} or ${POD_UID_ATTRIBUTE} resource attribute naming it${spec.rate ? " (a rate needs two points)" : ""}`,
      );
    return { kind: "objects", values, observedAtMs: oldestMs, ...note };
  }

  /** The condition `Pushed` while pushes of the metric were refused lately (none otherwise). */
  private refusalNote(namespace: string): { note: SampleNote } | undefined {
    const r = this.ctx.store.refusals(namespace, this.spec.metric);
    if (!r) return undefined;
    const what = [
      ...(r.pushes > 0 ? [`${r.pushes} push${r.pushes === 1 ? "" : "es"}`] : []),
      ...(r.points > 0 ? [`${r.points} point${r.points === 1 ? "" : "s"}`] : []),
    ].join(" and ");
    return {
      note: {
        type: "Pushed",
        status: "False",
        reason: "PushesRefused",
        message: `${what} of this namespace refused in the last ${REFUSALS_KEPT_MS / 60_000} minutes; the last: ${r.reason}`,
      },
    };
  }
}

/** The series of one object, combined. */
class Group {
  count = 0;
  private sum = 0;
  private max = -Infinity;
  private min = Infinity;
  private last = 0;
  private lastAt = -Infinity;
  oldestMs = Infinity;

  add(v: number, s: OtlpSeries): void {
    this.count++;
    this.sum += v;
    this.max = Math.max(this.max, v);
    this.min = Math.min(this.min, v);
    if (s.receivedAtMs >= this.lastAt) [this.last, this.lastAt] = [v, s.receivedAtMs];
    this.oldestMs = Math.min(this.oldestMs, s.receivedAtMs);
  }

  value(aggregate: Spec["aggregate"]): number {
    switch (aggregate) {
      case "sum":
        return this.sum;
      case "avg":
        return this.sum / this.count;
      case "max":
        return this.max;
      case "min":
        return this.min;
      case "last":
        return this.last;
    }
  }
}

function matches(
  attributes: Readonly<Record<string, string>>,
  wanted: Record<string, string> | undefined,
): boolean {
  if (!wanted) return true;
  for (const k in wanted) if (attributes[k] !== wanted[k]) return false;
  return true;
}

/**
 * One series' number as the spec asks; undefined when it has none yet (a rate's first
 * point, an empty histogram); a string when the spec cannot read it.
 */
export function seriesValue(s: OtlpSeries, spec: Spec): number | undefined | string {
  const cur = s.current;
  if (s.type === "gauge") {
    if (spec.rate) return `rate: true reads sums and histograms; ${quote(spec.metric, 80)} is a gauge`;
    return cur.value;
  }
  if (s.type === "sum" || spec.histogram !== "quantile") {
    const pick = (r: OtlpReading) =>
      s.type === "histogram" && spec.histogram === "sum" ? r.histogram?.sum : r.value;
    const value = pick(cur);
    if (value === undefined) return undefined;
    if (!spec.rate) return value;
    if (!s.cumulative)
      return cur.atMs > cur.startMs && cur.startMs > 0
        ? value / ((cur.atMs - cur.startMs) / 1000)
        : undefined;
    const prev = s.previous;
    const before = prev && pick(prev);
    if (!prev || before === undefined || cur.atMs <= prev.atMs) return undefined;
    const restarted = cur.startMs !== prev.startMs || value < before;
    return (restarted ? value : value - before) / ((cur.atMs - prev.atMs) / 1000);
  }
  const h = cur.histogram;
  if (!h) return undefined;
  let counts = h.counts;
  const prev = s.previous?.histogram;
  // A cumulative histogram's recent buckets: the difference from the point before, as
  // Prometheus' histogram_quantile over a rate; its whole life when it restarted.
  if (s.cumulative && prev && s.previous!.startMs === cur.startMs && sameBounds(prev.bounds, h.bounds)) {
    const diff = counts.map((c, i) => c - (prev.counts[i] ?? 0));
    if (diff.every((d) => d >= 0) && diff.some((d) => d > 0)) counts = diff;
  }
  return quantile(spec.quantile!, h.bounds, counts);
}

function sameBounds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The `q` quantile of a histogram's buckets (`counts[i]` observations up to `bounds[i]`,
 * the last above every bound), interpolated linearly inside its bucket as Prometheus'
 * histogram_quantile does: the first bucket from 0 (or its bound, when negative), the last
 * (open) bucket its lower bound. Undefined for an empty histogram.
 */
export function quantile(
  q: number,
  bounds: readonly number[],
  counts: readonly number[],
): number | undefined {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return undefined;
  if (bounds.length === 0) return undefined;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (seen + c >= rank && c > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1]!;
      const upper = bounds[i]!;
      const lower = i === 0 ? Math.min(0, upper) : bounds[i - 1]!;
      return lower + (upper - lower) * ((rank - seen) / c);
    }
    seen += c;
  }
  return bounds[bounds.length - 1]!;
}

/** The `otlp` source kind: reads what the mapping's namespace pushed; a rate's window is the pusher's. */
export const otlp = defineSource({
  kind: "otlp",
  schema: OtlpSpec,
  build: (spec, ctx) => {
    const store = required(ctx.otlp, "otlp", "the OTLP receiver (governor run --otlp-port)");
    const intervalMs = ctx.intervalMs ?? 15_000;
    const staleAfterMs = ctx.staleAfterMs ?? 120_000;
    if (staleAfterMs <= intervalMs)
      throw new SourceConfigError(
        "an otlp source's staleAfter must be longer than its interval: a series is left out once it is staleAfter less one interval old",
      );
    return new OtlpSource(spec, { namespace: ctx.namespace, store, windowMs: staleAfterMs - intervalMs });
  },
});
