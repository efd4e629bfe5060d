import { expect } from "chai";
import {
  BucketSeries,
  ForecastSource,
  ForecastSpec,
  bucketsPerSeason,
  holtWinters,
  linear,
} from "./forecast.js";
import type { MappingReader, ServedMapping } from "./kind.js";
import type { MetricSource, SampleValue } from "./source.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Monday 2026-12-07 00:00Z. */
const START = Date.parse("2026-12-07T00:00:00Z");

/** A daily load: 10 at night, 50 from 08:00 to 18:00 (UTC), plus `trend` a day. */
const daily = (t: number, trend = 0) => {
  const hour = ((((t - START) % DAY) + DAY) % DAY) / HOUR;
  return (hour >= 8 && hour < 18 ? 50 : 10) + (trend * (t - START)) / DAY;
};

/** An input mapping whose value the test sets, served as a Governor sampler would hold it. */
class Input implements ServedMapping {
  staleAfterMs = 120_000;
  value: SampleValue = { kind: "scalar", value: 0 };
  at = 0;
  kept?: { atMs: number[]; sum: number[]; count: number[] };
  readonly sampler = {
    state: {} as { last?: { value: SampleValue; atMs: number } },
    source: { needsObjects: false, sample: async () => this.value } as MetricSource,
    markRead: () => {},
  };
  set(value: number, at: number): void {
    this.value = { kind: "scalar", value };
    this.sampler.state.last = { value: this.value, atMs: at };
  }
  recorded(sinceMs: number) {
    if (!this.kept) return undefined;
    const i = this.kept.atMs.findIndex((t) => t >= sinceMs);
    return {
      atMs: this.kept.atMs.slice(i),
      sum: this.kept.sum.slice(i),
      count: this.kept.count.slice(i),
    };
  }
}

const reader = (byName: Record<string, ServedMapping>): MappingReader => ({
  read: (_ns, name) => byName[name] ?? "does not exist",
});

/** A forecast of `input` on a clock the test moves, sampled every `intervalMs`. */
function forecastOf(input: Input, spec: Record<string, unknown>, intervalMs = 5 * 60_000) {
  const clock = { now: START };
  const source = new ForecastSource(
    ForecastSpec.parse({ mapping: "load", ...spec }),
    "shop",
    reader({ load: input }),
    intervalMs,
    "ahead",
    () => clock.now,
  );
  /** Samples from the clock's time to `until`, the input following `f`; the last answer. */
  const run = async (until: number, f: (t: number) => number) => {
    let last: SampleValue | undefined;
    for (; clock.now <= until; clock.now += intervalMs) {
      input.set(f(clock.now), clock.now);
      last = await source.sample();
    }
    return last as Extract<SampleValue, { kind: "scalar" }>;
  };
  return { source, run, clock };
}

describe("the forecast source", () => {
  it("serves the current value until it has two seasons, saying how far it has got", async () => {
    const input = new Input();
    const { run } = forecastOf(input, { lead: "30m", season: "24h" });
    const answer = await run(START + DAY, (t) => daily(t));
    expect(answer.value, "midnight: the current value").to.equal(10);
    expect(answer.note).to.deep.include({ type: "Forecast", status: "False", reason: "TooLittleHistory" });
    expect(answer.note!.message).to.equal(
      "288 of the 576 buckets of 5m holt-winters needs (two seasons) recorded: serving the current value",
    );
  });

  it("holt-winters: after two days it scales up before the morning's rise, by the lead, and back after the evening's fall", async () => {
    const input = new Input();
    const { run } = forecastOf(input, { lead: "30m", season: "24h", method: "holt-winters" });
    // Two days and the third's night.
    await run(START + 2 * DAY + 7 * HOUR, (t) => daily(t));
    const early = await run(START + 2 * DAY + 7 * HOUR + 35 * 60_000, (t) => daily(t));
    expect(input.sampler.state.last!.value, "07:35: still night").to.deep.equal({
      kind: "scalar",
      value: 10,
    });
    expect(early.value, "07:35: the 08:00 rise is within the lead").to.be.closeTo(50, 2);
    expect(early.note).to.deep.include({ status: "True", reason: "Forecasting" });
    expect(early.note!.message).to.match(
      /^holt-winters over \d+ buckets of 5m: at most [\d.]+ within 30m \([\d.]+ in 30m\), now 10, serving [\d.]+; fit error \(RMSE of forecasts 30m ahead\) [\d.]+, \d+% of the mean [\d.]+$/,
    );
    // 17:00: the fall at 18:00 is more than the lead away; at 17:35 the forecast is lower but the current value wins.
    const evening = await run(START + 2 * DAY + 17 * HOUR + 35 * 60_000, (t) => daily(t));
    expect(evening.value, "never below the current value").to.equal(50);
    const night = await run(START + 2 * DAY + 20 * HOUR, (t) => daily(t));
    expect(night.value).to.be.closeTo(10, 2);
    const notYet = await run(START + 2 * DAY + 7 * HOUR + 25 * 60_000 + DAY, (t) => daily(t));
    expect(notYet.value, "the next day, 07:25: the rise is more than the lead away").to.be.closeTo(10, 2);
  });

  it("a rise shorter than the lead is served from when it comes within the lead until it is current, never passed over", async () => {
    // 08:00 to 08:20 each day, a burst; the lead is an hour.
    const burst = (t: number) => {
      const minute = ((((t - START) % DAY) + DAY) % DAY) / 60_000;
      return minute >= 480 && minute < 500 ? 50 : 10;
    };
    const input = new Input();
    const { run } = forecastOf(input, { lead: "1h", season: "24h" });
    await run(START + 2 * DAY + 6 * HOUR + 50 * 60_000, burst);
    for (const at of [7 * 60 + 5, 7 * 60 + 30, 7 * 60 + 55, 8 * 60 + 5]) {
      const v = await run(START + 2 * DAY + at * 60_000, burst);
      expect(v.value, `${Math.floor(at / 60)}:${String(at % 60).padStart(2, "0")}`).to.be.above(40);
    }
  });

  it("holt-winters follows a trend over the days, and its fit error is small on a clean pattern", () => {
    const m = 24;
    const xs = Array.from({ length: 3 * m }, (_, i) => daily(START + i * HOUR, 12));
    // Bucket 72 is 00:00 of the fourth day; 9 after it is 09:00: 50 plus three and a bit days of +12.
    const fit = holtWinters(xs, m, 9 + 1)!;
    expect(fit.forecast).to.be.closeTo(50 + 12 * (3 + 9 / 24), 4);
    expect(fit.rmse).to.be.below(5);
    expect(holtWinters(xs.slice(0, 2 * m - 1), m, 1), "under two seasons").to.equal(undefined);
  });

  it("linear: extends the line fitted to the last season; exact on a ramp", () => {
    const ramp = Array.from({ length: 40 }, (_, i) => 3 + 2 * i);
    const fit = linear(ramp, 24, 6, 5)!;
    expect(fit.forecast).to.be.closeTo(3 + 2 * (39 + 5), 1e-9);
    expect(fit.rmse).to.be.closeTo(0, 1e-9);
    expect(fit.points).to.equal(24);
    expect(linear(ramp.slice(0, 5), 24, 6, 5), "under a quarter season").to.equal(undefined);
  });

  it("starts from the input's kept samples when it keeps them: the first sample already forecasts", async () => {
    const input = new Input();
    const kept = { atMs: [] as number[], sum: [] as number[], count: [] as number[] };
    const now = START + 7 * HOUR + 15 * 60_000;
    for (let t = now - 2 * DAY; t < now; t += 60_000) {
      kept.atMs.push(t);
      kept.sum.push(3 * daily(t)); // three pods' sum, kept with their count
      kept.count.push(3);
    }
    input.kept = kept;
    const { run, clock } = forecastOf(input, { lead: "1h", season: "24h" });
    clock.now = now;
    const first = await run(clock.now, (t) => daily(t));
    expect(first.note).to.deep.include({ reason: "Forecasting" });
    expect(first.value).to.be.closeTo(50, 3);
  });

  it("starts from the input source's history (a Prometheus range query) when it has one; if that fails, says so and asks again after 5 minutes", async () => {
    const input = new Input();
    const asked: number[][] = [];
    let fail = true;
    (input.sampler as { source: MetricSource }).source = {
      needsObjects: false,
      sample: async () => input.value,
      history: async (fromMs, toMs, stepMs) => {
        asked.push([fromMs, toMs, stepMs]);
        if (fail) throw new Error("connection refused");
        const atMs: number[] = [];
        const values: number[] = [];
        for (let t = fromMs; t <= toMs; t += stepMs) (atMs.push(t), values.push(daily(t)));
        return { atMs, values };
      },
    };
    const now = START + 3 * DAY + 7 * HOUR + 15 * 60_000;
    const { run, clock } = forecastOf(input, { lead: "1h", season: "24h" }, 60_000);
    clock.now = now;
    const failed = await run(now, (t) => daily(t));
    expect(failed.note).to.deep.include({ reason: "TooLittleHistory" });
    expect(failed.note!.message).to.match(/; the input's history: connection refused$/);
    expect(asked, "three days of whole 5-minute buckets up to the one before now's").to.deep.equal([
      [now - 300_000 - 863 * 300_000, now - 300_000, 300_000],
    ]);
    fail = false;
    const meanwhile = await run(now + 4 * 60_000, (t) => daily(t));
    expect(meanwhile.note).to.deep.include({ reason: "TooLittleHistory" });
    expect(asked, "not again within 5 minutes").to.have.length(1);
    const warmed = await run(now + 6 * 60_000, (t) => daily(t));
    expect(asked).to.have.length(2);
    expect(warmed.note).to.deep.include({ reason: "Forecasting" });
    expect(warmed.value, "07:21, an hour ahead: the day's rise").to.be.closeTo(50, 3);
  });

  it("forecasts at once when history arrives in the middle of a bucket", async () => {
    const input = new Input();
    let fail = true;
    (input.sampler as { source: MetricSource }).source = {
      needsObjects: false,
      sample: async () => input.value,
      history: async (fromMs, toMs, stepMs) => {
        if (fail) throw new Error("not yet");
        const atMs: number[] = [];
        const values: number[] = [];
        for (let t = fromMs; t <= toMs; t += stepMs) (atMs.push(t), values.push(daily(t)));
        return { atMs, values };
      },
    };
    // A 2-day season: buckets of 10 minutes; the retry 5 minutes later is in the same bucket.
    const { run, clock } = forecastOf(input, { lead: "1h", season: "48h" }, 60_000);
    const now = START + 6 * DAY + 7 * HOUR;
    clock.now = now;
    expect((await run(now, (t) => daily(t))).note).to.deep.include({ reason: "TooLittleHistory" });
    fail = false;
    const warmed = await run(now + 5 * 60_000, (t) => daily(t));
    expect(warmed.note).to.deep.include({ reason: "Forecasting" });
  });

  it("refuses a season shorter than 4 intervals; skips what is not a number; says when values are too large to fit", async () => {
    expect(
      () =>
        new ForecastSource(
          ForecastSpec.parse({ mapping: "load", lead: "10s", season: "1m" }),
          "shop",
          reader({}),
          45_000,
          "a",
        ),
    ).to.throw(/season 1m is shorter than 4 of the mapping's intervals \(45s\)/);
    // A kept sample of no objects (sum 0, count 0) is no value, not NaN in the history.
    const input = new Input();
    const kept = { atMs: [] as number[], sum: [] as number[], count: [] as number[] };
    const now = START + 7 * HOUR + 15 * 60_000;
    for (let t = now - 2 * DAY; t < now; t += 60_000) {
      const none = t === now - DAY;
      kept.atMs.push(t);
      kept.sum.push(none ? 0 : daily(t));
      kept.count.push(none ? 0 : 1);
    }
    input.kept = kept;
    const { run, clock } = forecastOf(input, { lead: "1h", season: "24h" });
    clock.now = now;
    const first = await run(now, (t) => daily(t));
    expect(first.note).to.deep.include({ reason: "Forecasting" });
    const huge = new Input();
    const { run: runHuge } = forecastOf(huge, { lead: "1h", season: "24h" });
    const last = await runHuge(START + 2 * DAY + HOUR, (t) => (daily(t) > 20 ? 1e307 : -1e307));
    expect(last.note).to.deep.include({ reason: "NoForecast" });
    expect(last.value).to.equal(-1e307);
  });

  it("keeps a bounded history: a short gap bridged, a long one starting it again, an earlier time ignored", () => {
    const s = new BucketSeries(1000, 6, 2);
    for (const [t, v] of [
      [0, 1],
      [500, 3],
      [1000, 4],
      [4000, 10], // two buckets missing: bridged from 4 to 10
      [3000, 99], // earlier than the bucket being filled: ignored
      [5000, 12],
    ] as const)
      s.add(t, v);
    expect(s.completed()).to.deep.equal([2, 4, 6, 8, 10]);
    s.add(9000, 0); // three missing: too long
    expect(s.completed()).to.deep.equal([]);
    expect(s.restarts).to.equal(1);
    for (let t = 10_000; t < 30_000; t += 1000) s.add(t, t);
    expect(s.completed(), "the last 6 kept").to.have.length(6);
    expect(bucketsPerSeason(DAY, 15_000)).to.equal(288);
    expect(bucketsPerSeason(60_000, 1000)).to.equal(60);
    expect(bucketsPerSeason(60_000, 30_000)).to.equal(4);
  });

  it("refuses a lead longer than its season, an input of one value per object, and reading itself", async () => {
    expect(ForecastSpec.safeParse({ mapping: "a", lead: "2h", season: "1h" }).success).to.equal(false);
    expect(ForecastSpec.safeParse({ mapping: "a", lead: "1h", season: "1h" }).success).to.equal(true);
    const input = new Input();
    const { source } = forecastOf(input, { lead: "10m" });
    input.sampler.state.last = { value: { kind: "objects", values: new Map([["web-1", 1]]) }, atMs: START };
    await source.sample().then(
      () => expect.fail("sampled"),
      (err: Error) => expect(err.message).to.match(/serves one value per object; a forecast reads one value/),
    );
    expect(
      () =>
        new ForecastSource(
          ForecastSpec.parse({ mapping: "ahead", lead: "1m" }),
          "shop",
          reader({}),
          1000,
          "ahead",
        ),
    ).to.throw("forecast inputs read the mapping itself (ahead)");
  });

  it("fits a full history of 864 buckets in well under a millisecond on average", () => {
    const xs = Array.from({ length: 864 }, (_, i) => daily(START + i * 300_000) + Math.sin(i));
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) holtWinters(xs, 288, 6);
    expect((performance.now() - t0) / 20).to.be.below(5);
  });
});
