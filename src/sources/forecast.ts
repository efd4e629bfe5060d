/**
 * `forecast`: scale ahead of a predictable rise. It reads another MetricMapping of the
 * namespace (its value as this replica serves it, as a formula does), records it in
 * buckets, fits a model, and serves the larger of the input's current value and the
 * model's forecasts up to `lead` ahead (the highest of them: a rise shorter than the lead
 * is not passed over before it comes). `holt-winters` (additive, triple exponential smoothing)
 * learns a level, a trend and a pattern that repeats every `season` (a day); `linear` fits
 * a straight line to the last season.
 *
 * History: a season is cut into {@link bucketsPerSeason} buckets (at most 288: five
 * minutes of a day), each the mean of the input's values read in it; three seasons are
 * kept (at most 864 numbers). It starts from the input source's history where that can
 * say (a Prometheus range query), else from the input's kept samples (`--history-points`),
 * else from its first sample. A gap of at most a quarter
 * season is bridged by a straight line; a longer one starts the history again. Until the
 * model has what it needs (two seasons for holt-winters, a quarter season for linear) the
 * mapping serves the current value, and its `Forecast` condition says why and how far it
 * has got; then it says the forecast and the model's fit error (ADR 0028).
 *
 * Cost: recording is a few operations a sample; the model is fitted once per bucket, not
 * per sample: holt-winters tries 45 smoothing parameter sets over at most 864 points
 * (~40,000 steps, well under a millisecond), linear one pass.
 */
import { z } from "zod";
import { Duration, ObjectName, durationBetween, durationMs, withRules } from "../api/common.js";
import { currentValue, refuseCycle } from "./inputs.js";
import { type MappingReader, defineSource, required } from "./kind.js";
import { type MetricSource, type SampleNote, type SampleValue, SourceConfigError } from "./source.js";
import { boundedText } from "../util/bounded-text.js";

/** The most buckets a season is cut into. */
export const MAX_BUCKETS_PER_SEASON = 288;
/** Seasons of buckets kept. */
const SEASONS_KEPT = 3;
/** How often the input's source is asked for its history again while there is too little. */
const HISTORY_RETRY_MS = 5 * 60_000;

export const FORECAST_METHODS = ["holt-winters", "linear"] as const;

/** `spec.source.forecast`. */
export const ForecastSpec = withRules(
  z.object({
    mapping: ObjectName.meta({ description: "The MetricMapping of this namespace whose value is forecast." }),
    lead: withRules(Duration, [durationBetween("1s", "24h", "lead")]).meta({
      description:
        "How far ahead to forecast: the mapping serves the largest of now and the forecasts until then.",
    }),
    season: withRules(Duration, [durationBetween("1m", "168h", "season")])
      .default("24h")
      .meta({
        description:
          "The period the pattern repeats over (holt-winters), the window the line is fitted over (linear). Default: 24h.",
      }),
    method: z
      .enum(FORECAST_METHODS)
      .default("holt-winters")
      .meta({ description: "holt-winters (level, trend, season) or linear. Default: holt-winters." }),
  }),
  [
    {
      rule: "!has(self.season) || duration(self.lead) <= duration(self.season)",
      message: "lead must not be longer than season",
      check: (s) => durationMs(s.lead) <= durationMs(s.season),
    },
  ],
).meta({ description: "The larger of another mapping's value and its forecast lead ahead." });
type Spec = z.output<typeof ForecastSpec>;

/** Buckets per season: one per interval, at most {@link MAX_BUCKETS_PER_SEASON}, at least 4. */
export function bucketsPerSeason(seasonMs: number, intervalMs: number): number {
  return Math.max(4, Math.min(MAX_BUCKETS_PER_SEASON, Math.floor(seasonMs / intervalMs)));
}

/**
 * The input's values in buckets of `stepMs` (aligned to the epoch), the last `capacity`
 * completed ones kept, and the one being filled.
 */
export class BucketSeries {
  private readonly values: Float64Array;
  private size = 0;
  private next = 0;
  /** The bucket being filled (its number since the epoch), its sum and count. */
  private current?: number;
  private sum = 0;
  private count = 0;
  /** Starts of the history over (a gap too long to bridge). */
  restarts = 0;

  constructor(
    readonly stepMs: number,
    readonly capacity: number,
    /** The longest gap bridged, in buckets. */
    private readonly maxGap: number,
  ) {
    this.values = new Float64Array(capacity);
  }

  /** Records `v` read at `t` (ms); earlier than the bucket being filled, or not finite: ignored. */
  add(t: number, v: number): void {
    if (!Number.isFinite(v) || !Number.isFinite(t)) return;
    const k = Math.floor(t / this.stepMs);
    if (this.current === undefined || k === this.current) {
      this.current ??= k;
      this.sum += v;
      this.count++;
      return;
    }
    if (k < this.current) return;
    const mean = this.sum / this.count;
    this.push(mean);
    const gap = k - this.current - 1;
    if (gap > this.maxGap) {
      this.size = this.next = 0;
      this.restarts++;
    } else for (let i = 1; i <= gap; i++) this.push(mean + ((v - mean) * i) / (gap + 1));
    this.current = k;
    this.sum = v;
    this.count = 1;
  }

  private push(x: number): void {
    this.values[this.next] = x;
    this.next = (this.next + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
  }

  /**
   * A series of the points (`atMs`, `values`, in time order) before this one's first bucket,
   * then this one's buckets (the one being filled counts once, as its mean so far).
   */
  after(atMs: readonly number[], values: readonly number[]): BucketSeries {
    const out = new BucketSeries(this.stepMs, this.capacity, this.maxGap);
    const own = this.completed();
    const first = this.current === undefined ? Infinity : this.current - own.length;
    for (let i = 0; i < atMs.length; i++)
      if (Math.floor(atMs[i]! / this.stepMs) < first) out.add(atMs[i]!, values[i]!);
    own.forEach((v, j) => out.add((first + j) * this.stepMs, v));
    if (this.current !== undefined) out.add(this.current * this.stepMs, this.sum / this.count);
    out.restarts += this.restarts;
    return out;
  }

  /** How many completed buckets it keeps. */
  get length(): number {
    return this.size;
  }

  /** The completed buckets, oldest first. */
  completed(): number[] {
    const out = new Array<number>(this.size);
    for (let i = 0; i < this.size; i++)
      out[i] = this.values[(this.next - this.size + i + this.capacity) % this.capacity]!;
    return out;
  }

  /** The number of the last completed bucket (since the epoch), if any. */
  get lastCompleted(): number | undefined {
    return this.size && this.current !== undefined ? this.current - 1 : undefined;
  }
}

/** A model's forecast `h` buckets after the last one, and its fit error. */
export interface Fit {
  /** The forecast `h` buckets after the last. */
  forecast: number;
  /** The highest forecast of the buckets up to `h` after the last (a rise shorter than the lead is not passed over). */
  highest: number;
  /** Root mean square of the errors of its fit (of its forecasts as far ahead for holt-winters). */
  rmse: number;
  /** The mean of the values it was fitted to (to say the error as a share of it). */
  mean: number;
  /** Points fitted. */
  points: number;
}

const mean = (xs: readonly number[], from: number, to: number) => {
  let s = 0;
  for (let i = from; i < to; i++) s += xs[i]!;
  return s / (to - from);
};

const ALPHAS = [0.05, 0.2, 0.4, 0.6, 0.9];
const BETAS = [0, 0.05, 0.2];
const GAMMAS = [0.05, 0.3, 0.6];

/**
 * Additive Holt-Winters over `xs` (at least two seasons of `m`); the forecast `h` (1 to m)
 * buckets after the last. Its smoothing parameters are those of a grid of 45 whose
 * forecasts `h` ahead erred least over the history (not one step ahead: a level that
 * follows the last value forecasts one step well and a lead badly).
 */
export function holtWinters(xs: readonly number[], m: number, h: number): Fit | undefined {
  const n = xs.length;
  if (n < 2 * m || h < 1 || h > m) return undefined;
  // Start at the end of the first season: the trend from the first two seasons' means, the
  // pattern their deviations from their own means (averaged, less the trend within a season).
  const first = mean(xs, 0, m);
  const second = mean(xs, m, 2 * m);
  const trend0 = (second - first) / m;
  const level0 = first + (trend0 * (m - 1)) / 2;
  const season0 = new Float64Array(m);
  for (let i = 0; i < m; i++)
    season0[i] = (xs[i]! - first + xs[i + m]! - second) / 2 - trend0 * (i - (m - 1) / 2);
  const season = new Float64Array(m);
  /** The forecast made at each step for `h` later, by the time it is for (a ring of h + 1). */
  const ahead = new Float64Array(h + 1);
  let best: { sse: number; errors: number; level: number; trend: number; season: Float64Array } | undefined;
  for (const a of ALPHAS)
    for (const b of BETAS)
      for (const g of GAMMAS) {
        season.set(season0);
        let level = level0;
        let trend = trend0;
        let sse = 0;
        let errors = 0;
        for (let t = m; t < n; t++) {
          const x = xs[t]!;
          if (t >= m + h) {
            const err = x - ahead[t % (h + 1)]!;
            sse += err * err;
            errors++;
          }
          const s = season[t % m]!;
          const nextLevel = a * (x - s) + (1 - a) * (level + trend);
          trend = b * (nextLevel - level) + (1 - b) * trend;
          level = nextLevel;
          season[t % m] = g * (x - level) + (1 - g) * s;
          ahead[(t + h) % (h + 1)] = level + h * trend + season[(t + h) % m]!;
        }
        if (!best || sse < best.sse) best = { sse, errors, level, trend, season: season.slice() };
      }
  const { sse, errors, level, trend } = best!;
  return {
    forecast: level + h * trend + best!.season[(n - 1 + h) % m]!,
    highest: Math.max(
      ...Array.from({ length: h }, (_, i) => level + (i + 1) * trend + best!.season[(n + i) % m]!),
    ),
    rmse: errors ? Math.sqrt(sse / errors) : 0,
    mean: mean(xs, 0, n),
    points: n,
  };
}

/** A least-squares line through the last `window` of `xs` (at least `need` points); its value `h` after the last. */
export function linear(xs: readonly number[], window: number, need: number, h: number): Fit | undefined {
  const n = Math.min(xs.length, window);
  if (n < Math.max(3, need)) return undefined;
  const ys = xs.slice(xs.length - n);
  const mx = (n - 1) / 2;
  const my = mean(ys, 0, n);
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (i - mx) * (ys[i]! - my);
    sxx += (i - mx) ** 2;
  }
  const slope = sxy / sxx;
  let sse = 0;
  for (let i = 0; i < n; i++) sse += (ys[i]! - (my + slope * (i - mx))) ** 2;
  const at = (k: number) => my + slope * (n - 1 + k - mx);
  return { forecast: at(h), highest: Math.max(at(1), at(h)), rmse: Math.sqrt(sse / n), mean: my, points: n };
}

/** A duration for messages: `5m`, `12.5s`. */
function span(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 100) / 10}s`;
}

/** A number for messages: to four significant digits, and none below a millionth. */
const q = (x: number) => String(Number((Math.round(x * 1e6) / 1e6).toPrecision(4)));

/** See the module comment. */
export class ForecastSource implements MetricSource {
  readonly needsObjects = false;
  readonly readsMappings: readonly string[];
  private series: BucketSeries;
  private readonly m: number;
  private readonly leadMs: number;
  private readonly method: Spec["method"];
  /** The fit of the last completed bucket it was made for. */
  private fit?: { bucket: number; fit: Fit | undefined };
  private warmed = false;
  /** When the input's source was last asked for its history, and why it could not give it. */
  private historyAskedAt?: number;
  private historyError?: string;

  /**
   * @param intervalMs the mapping's sampling interval (a bucket is no shorter)
   * @param name the mapping's own name, to refuse a cycle through it
   * @param now the clock (a test's). @default Date.now
   */
  constructor(
    spec: Spec,
    private readonly namespace: string,
    private readonly mappings: MappingReader,
    intervalMs: number,
    name?: string,
    private readonly now: () => number = Date.now,
  ) {
    this.readsMappings = [spec.mapping];
    if (name !== undefined) refuseCycle(mappings, namespace, name, this.readsMappings, "forecast");
    const seasonMs = durationMs(spec.season);
    if (seasonMs < 4 * intervalMs)
      throw new SourceConfigError(
        `forecast season ${spec.season} is shorter than 4 of the mapping's intervals (${span(intervalMs)}): a pattern needs at least 4 samples a season`,
      );
    this.m = bucketsPerSeason(seasonMs, intervalMs);
    this.series = new BucketSeries(seasonMs / this.m, SEASONS_KEPT * this.m, Math.floor(this.m / 4));
    this.leadMs = durationMs(spec.lead);
    this.method = spec.method;
  }

  async sample(req?: { signal?: AbortSignal }): Promise<SampleValue> {
    const now = this.now();
    const mapping = this.readsMappings[0]!;
    const { value, served } = currentValue(
      this.mappings,
      this.namespace,
      mapping,
      `input MetricMapping ${mapping}`,
      now,
    );
    if (value.kind !== "scalar")
      throw new Error(
        `input MetricMapping ${mapping} serves one value per object; a forecast reads one value`,
      );
    if (!this.warmed) {
      this.warmed = true;
      // Start from the input's kept samples, if it keeps them.
      const kept = served.recorded?.(now - this.series.capacity * this.series.stepMs);
      if (kept)
        for (let i = 0; i < kept.atMs.length; i++)
          if (kept.count[i]! > 0) this.series.add(kept.atMs[i]!, kept.sum[i]! / kept.count[i]!);
      this.fit = undefined;
    }
    if (this.series.length < this.need) await this.askHistory(served.sampler.source, now, req?.signal);
    this.series.add(now, value.value);
    const note = this.note(now, value.value);
    return { kind: "scalar", value: note.serving, note: note.note };
  }

  /** Buckets the method needs before it forecasts. */
  private get need(): number {
    return this.method === "holt-winters" ? 2 * this.m : Math.max(3, Math.ceil(this.m / 4));
  }

  /**
   * Asks the input's source for its history (a Prometheus range query) when it can give
   * one, at most every {@link HISTORY_RETRY_MS}, and puts it before what was recorded.
   */
  private async askHistory(source: MetricSource, now: number, signal?: AbortSignal): Promise<void> {
    if (!source.history) return;
    if (this.historyAskedAt !== undefined && now - this.historyAskedAt < HISTORY_RETRY_MS) return;
    this.historyAskedAt = now;
    const step = this.series.stepMs;
    // Whole buckets, up to the one before now's.
    const to = (Math.floor(now / step) - 1) * step;
    try {
      const got = await source.history(
        to - (this.series.capacity - 1) * step,
        to,
        step,
        signal ?? AbortSignal.timeout(10_000),
      );
      this.series = this.series.after(got.atMs, got.values);
      this.fit = undefined;
      this.historyError = undefined;
    } catch (err) {
      this.historyError = boundedText(err instanceof Error ? err.message : String(err), 200);
    }
  }

  /** The model's fit for the last completed bucket (fitted once per bucket). */
  private fitted(now: number): Fit | undefined {
    const last = this.series.lastCompleted;
    if (last === undefined) return undefined;
    if (this.fit?.bucket === last) return this.fit.fit;
    const step = this.series.stepMs;
    // The bucket `lead` from now, counted from the last completed one.
    const h = Math.floor((now + this.leadMs) / step) - last;
    const xs = this.series.completed();
    const fit =
      this.method === "holt-winters"
        ? holtWinters(xs, this.m, Math.min(Math.max(h, 1), this.m))
        : linear(xs, this.m, Math.ceil(this.m / 4), Math.max(h, 1));
    this.fit = { bucket: last, fit };
    return fit;
  }

  private note(now: number, current: number): { serving: number; note: SampleNote } {
    const fit = this.fitted(now);
    const step = span(this.series.stepMs);
    if (fit && !(Number.isFinite(fit.highest) && Number.isFinite(fit.rmse)))
      return {
        serving: current,
        note: {
          type: "Forecast",
          status: "False",
          reason: "NoForecast",
          message: `${this.method} gave no finite forecast over ${fit.points} buckets (values too large to fit): serving the current value`,
        },
      };
    if (!fit) {
      const need = this.need;
      const have = this.series.length;
      const asked = this.historyError ? `; the input's history: ${this.historyError}` : "";
      const what = this.method === "holt-winters" ? "two seasons" : "a quarter season";
      return {
        serving: current,
        note: {
          type: "Forecast",
          status: "False",
          reason: "TooLittleHistory",
          message: `${have} of the ${need} buckets of ${step} ${this.method} needs (${what}) recorded: serving the current value${asked}`,
        },
      };
    }
    const share =
      fit.mean !== 0
        ? `, ${Math.round((100 * fit.rmse) / Math.abs(fit.mean))}% of the mean ${q(fit.mean)}`
        : "";
    const serving = Math.max(current, fit.highest);
    return {
      serving,
      note: {
        type: "Forecast",
        status: "True",
        reason: "Forecasting",
        message: `${this.method} over ${fit.points} buckets of ${step}: at most ${q(fit.highest)} within ${span(this.leadMs)} (${q(fit.forecast)} in ${span(this.leadMs)}), now ${q(current)}, serving ${q(serving)}; fit error (RMSE${this.method === "holt-winters" ? ` of forecasts ${span(this.leadMs)} ahead` : " of the line"}) ${q(fit.rmse)}${share}`,
      },
    };
  }
}

/** The `forecast` source kind. */
export const forecastSource = defineSource({
  kind: "forecast",
  schema: ForecastSpec,
  build: (spec, ctx) =>
    new ForecastSource(
      spec,
      ctx.namespace,
      required(ctx.mappings, "forecast", "the mappings it reads"),
      required(ctx.intervalMs, "forecast", "the mapping's interval"),
      ctx.name,
    ),
});
