/**
 * `npm run forecast-replay`: what the `forecast` source does for the HPA, offline, over a
 * week of a diurnal load, and what the sources of issue #41 cost.
 *
 * The trace: a week of requests per second, one value a minute, made by {@link diurnalTrace}
 * from a seed (a weekday's morning rise, a lunch bump, an evening fall, quieter weekends,
 * 5 % noise), kept whole in the results. The forecast: the real ForecastSource, fed the
 * trace minute by minute on a clock of its own (interval 1m, so 288 buckets of 5 minutes a
 * day). The HPA: the controller's algorithm as ported (src/autoscaling/replay.ts), at 15 s
 * syncs, an External metric at 100 requests/s per replica, 2 to 40 replicas, default
 * behavior. A new pod serves only {@link STARTUP_MS} after the HPA asks for it. Measured
 * over the days after the first two (the forecast's learning): minutes in which the
 * ready replicas could not carry the load, and replica-hours.
 *
 * Cost, in interleaved rounds (median and range): a formula evaluation, a forecast sample
 * (its fit once per bucket included), a schedule sample; and the bytes a forecast keeps.
 *
 * Writes docs/figures/forecast-replay.json (the trace, every run's figures, the commit) and
 * docs/forecast-replay.svg (one weekday); `npm run figures` renders the table in
 * docs/formulas-schedules-forecasts.md from the JSON.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import prettier from "prettier";
import { type HpaView } from "../src/autoscaling/decide.js";
import { type ReplayStep, type Sample, replay } from "../src/autoscaling/replay.js";
import { ForecastSource, ForecastSpec } from "../src/sources/forecast.js";
import { compileFormula } from "../src/sources/formula.js";
import type { MappingReader, ServedMapping } from "../src/sources/kind.js";
import { ScheduleSource, ScheduleSpec } from "../src/sources/schedule.js";
import type { MetricSource, SampleValue } from "../src/sources/source.js";
import { showSpread, spread, type Spread } from "./stats.js";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
/** Monday 2026-11-30 00:00 UTC. */
const START = Date.parse("2026-11-30T00:00:00Z");
/** How long a new pod takes to serve. */
export const STARTUP_MS = 3 * MINUTE;
/** Requests per second one replica carries (the HPA's target). */
const PER_REPLICA = 100;
const LEARNING_DAYS = 2;
const DAYS = 7;
const SYNC_MS = 15_000;

/** A seeded generator of uniform numbers in [0, 1) (Park–Miller). */
function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

const smooth = (x: number) => (x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x));

/** Requests per second at minute `i` of the week (see the module comment). */
export function diurnalTrace(seed = 41): number[] {
  const r = random(seed);
  return Array.from({ length: DAYS * 1440 }, (_, i) => {
    const day = Math.floor(i / 1440);
    const h = (i % 1440) / 60;
    const weekend = day >= 5 ? 0.55 : 1;
    const morning = smooth((h - 7.5) / 1.25) * 1500; // 07:30 → 08:45
    const lunch = Math.exp(-(((h - 12.5) / 0.6) ** 2)) * 400;
    const evening = smooth((h - 17) / 3) * 1200; // 17:00 → 20:00
    const load = 150 + weekend * (morning + lunch - evening);
    return Math.max(0, Math.round(load * (1 + 0.1 * (r() - 0.5))));
  });
}

/** An input mapping whose value the replay sets. */
class Input implements ServedMapping {
  readonly staleAfterMs = 10 * MINUTE;
  readonly sampler = {
    state: {} as { last?: { value: SampleValue; atMs: number } },
    source: { needsObjects: false, sample: () => Promise.reject(new Error("not sampled")) } as MetricSource,
    markRead: () => {},
  };
}

/** The forecast's value at each minute of the trace. */
async function forecastSeries(trace: readonly number[], spec: Record<string, unknown>): Promise<Sample[]> {
  const input = new Input();
  const clock = { now: START };
  const reader: MappingReader = { read: () => input };
  const source = new ForecastSource(
    ForecastSpec.parse({ mapping: "load", ...spec }),
    "shop",
    reader,
    MINUTE,
    "ahead",
    () => clock.now,
  );
  const out: Sample[] = [];
  for (let i = 0; i < trace.length; i++) {
    clock.now = START + i * MINUTE;
    input.sampler.state.last = { value: { kind: "scalar", value: trace[i]! }, atMs: clock.now };
    const v = await source.sample();
    out.push({ atMs: clock.now, value: v.kind === "scalar" ? v.value : NaN });
  }
  return out;
}

const hpa: HpaView = {
  spec: {
    minReplicas: 2,
    maxReplicas: 40,
    metrics: [
      {
        type: "External",
        external: {
          metric: { name: "load" },
          target: { type: "AverageValue", averageValue: String(PER_REPLICA) },
        },
      },
    ],
  },
};

/** The HPA's replicas at every sync from the end of the learning days, reading `series`. */
function hpaOver(series: readonly Sample[]): ReplayStep[] {
  return replay({
    hpa,
    series: [series],
    fromMs: START + LEARNING_DAYS * DAY,
    toMs: START + DAYS * DAY - SYNC_MS,
    stepMs: SYNC_MS,
    staleMs: 5 * MINUTE,
    startReplicas: 2,
  });
}

/** Replicas serving at each sync: those asked for at least {@link STARTUP_MS} ago (scale-downs at once). */
export function readyReplicas(steps: readonly ReplayStep[], stepMs: number, startupMs: number): number[] {
  const lag = Math.round(startupMs / stepMs);
  return steps.map((s, i) => {
    let ready = s.replicas;
    for (let j = Math.max(0, i - lag); j < i; j++) ready = Math.min(ready, steps[j]!.replicas);
    return i < lag ? Math.min(ready, steps[0]!.replicas) : ready;
  });
}

/** What a run of the HPA costs and misses, over the evaluated days. */
export interface Outcome {
  /** Minutes in which the serving replicas could not carry the load. */
  underMinutes: number;
  /** Requests above what the serving replicas carry, summed over the week, in millions. */
  unservedMillions: number;
  replicaHours: number;
}

export function outcome(
  trace: readonly number[],
  steps: readonly ReplayStep[],
  ready: readonly number[],
): Outcome {
  let under = 0;
  let unserved = 0;
  let replicaSyncs = 0;
  steps.forEach((s, i) => {
    const load = trace[Math.floor((s.atMs - START) / MINUTE)]!;
    const capacity = ready[i]! * PER_REPLICA;
    if (load > capacity) {
      under += SYNC_MS / MINUTE;
      unserved += ((load - capacity) * SYNC_MS) / 1000;
    }
    replicaSyncs += s.replicas;
  });
  return {
    underMinutes: Math.round(under),
    unservedMillions: Math.round(unserved / 1e4) / 100,
    replicaHours: Math.round((replicaSyncs * SYNC_MS) / 3_600_000),
  };
}

/** What {@link main} writes (docs/figures/forecast-replay.json). */
export interface ForecastReplayFigures {
  command: string;
  commit: string;
  at: string;
  model: { startupSeconds: number; syncSeconds: number; evaluatedDays: number; learningDays: number };
  runs: ({ name: string } & Outcome)[];
  costMicroseconds: Record<string, { series: number[] }>;
  forecastBytes: number;
}

/** The tables of docs/formulas-schedules-forecasts.md, from the figures. */
export function forecastReplayTable(f: ForecastReplayFigures, source: string): string {
  const [base] = f.runs;
  const vs = (x: number, b: number) => {
    const pct = Math.round((100 * (x - b)) / b);
    return b > 0 ? `${pct > 0 ? "+" : ""}${pct}%` : "";
  };
  return [
    `\`${f.command}\` at ${f.commit} (\`${source}\`): ${f.model.evaluatedDays} days after ${f.model.learningDays} of learning, HPA syncs every ${f.model.syncSeconds} s, a new pod serving ${f.model.startupSeconds} s after it is asked for.`,
    "",
    "| the HPA reads | minutes under-provisioned | requests not served, millions | replica-hours | under-provisioned, against the load | replica-hours, against the load |",
    "| --- | --- | --- | --- | --- | --- |",
    ...f.runs.map(
      (r) =>
        `| ${r.name} | ${r.underMinutes} | ${r.unservedMillions} | ${r.replicaHours} | ${r === base ? "" : vs(r.underMinutes, base!.underMinutes)} | ${r === base ? "" : vs(r.replicaHours, base!.replicaHours)} |`,
    ),
    "",
    `Cost of one evaluation, µs, median (range) of ${Object.values(f.costMicroseconds)[0]?.series.length ?? 0} rounds; a forecast keeps ${f.forecastBytes} bytes of history:`,
    "",
    "| evaluation | µs |",
    "| --- | --- |",
    ...Object.entries(f.costMicroseconds).map(([name, c]) => `| ${name} | ${showSpread(c.series, 2)} |`),
  ].join("\n");
}

/** Median and range of `rounds` timings of `fn` (each the mean of `n` calls), in microseconds. */
async function timed(rounds: number, n: number, fn: () => unknown): Promise<number[]> {
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  return out;
}

/** The cost of one evaluation of each kind, in interleaved rounds. */
async function costs(
  trace: readonly number[],
): Promise<Record<string, { series: number[]; spread: Spread }>> {
  const formula = compileFormula("math.greatest(queue / 50.0, rps / 200.0) + (queue > 100.0 ? 1.0 : 0.0)", [
    "queue",
    "rps",
  ]);
  const schedule = new ScheduleSource(
    ScheduleSpec.parse({
      timeZone: "Europe/Berlin",
      default: "2",
      entries: [
        { cron: "0 8 * * 1-5", duration: "10h", value: "40", rampUp: "30m", rampDown: "1h" },
        { cron: "*/15 * * * *", duration: "5m", value: "10" },
      ],
    }),
  );
  // A forecast with three days learnt, sampled once a bucket (each sample refits) and in between.
  const input = new Input();
  const clock = { now: START };
  const forecast = new ForecastSource(
    ForecastSpec.parse({ mapping: "load", lead: "10m" }),
    "shop",
    { read: () => input },
    MINUTE,
    "ahead",
    () => clock.now,
  );
  let i = 0;
  const step = async (minutes: number) => {
    clock.now = START + i * MINUTE;
    input.sampler.state.last = {
      value: { kind: "scalar", value: trace[i % trace.length]! },
      atMs: clock.now,
    };
    i += minutes;
    await forecast.sample();
  };
  while (i < 3 * 1440) await step(1);
  const names = [
    "formula evaluation",
    "schedule sample",
    "forecast sample, refit (a new bucket)",
    "forecast sample, same bucket",
  ];
  const series: number[][] = names.map(() => []);
  let t = START;
  for (let round = 0; round < 7; round++) {
    series[0]!.push(...(await timed(1, 20_000, () => formula.evaluate({ queue: 120, rps: 900 }))));
    series[1]!.push(...(await timed(1, 2_000, () => schedule.valueAt((t += 61_000)))));
    series[2]!.push(...(await timed(1, 50, () => step(5))));
    series[3]!.push(...(await timed(1, 2_000, () => step(0))));
  }
  return Object.fromEntries(names.map((n, k) => [n, { series: series[k]!, spread: spread(series[k]!) }]));
}

async function main(): Promise<void> {
  const trace = diurnalTrace();
  const none = hpaOver(trace.map((value, i) => ({ atMs: START + i * MINUTE, value })));
  const runs: { name: string; spec?: Record<string, unknown>; steps: ReplayStep[] }[] = [
    { name: "the load itself (no forecast)", steps: none },
  ];
  for (const spec of [
    { lead: "5m", method: "holt-winters" },
    { lead: "10m", method: "holt-winters" },
    { lead: "10m", method: "linear" },
  ]) {
    const series = await forecastSeries(trace, { ...spec, season: "24h" });
    runs.push({ name: `forecast, ${spec.method}, ${spec.lead} ahead`, spec, steps: hpaOver(series) });
  }
  const results = runs.map((r) => ({
    name: r.name,
    ...(r.spec ? { spec: r.spec } : {}),
    ...outcome(trace, r.steps, readyReplicas(r.steps, SYNC_MS, STARTUP_MS)),
  }));
  const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  const json = {
    command: "npm run forecast-replay",
    commit,
    at: new Date().toISOString(),
    model: {
      perReplica: PER_REPLICA,
      minReplicas: 2,
      maxReplicas: 40,
      syncSeconds: SYNC_MS / 1000,
      startupSeconds: STARTUP_MS / 1000,
      learningDays: LEARNING_DAYS,
      evaluatedDays: DAYS - LEARNING_DAYS,
    },
    runs: results,
    costMicroseconds: await costs(trace),
    forecastBytes: 3 * 288 * 8,
    trace: { startMs: START, stepMs: MINUTE, values: trace },
  };
  const root = fileURLToPath(new URL("..", import.meta.url));
  const path = `${root}docs/figures/forecast-replay.json`;
  writeFileSync(
    path,
    await prettier.format(JSON.stringify(json), { ...(await prettier.resolveConfig(path)), filepath: path }),
  );
  // The chart: the first weekday after learning.
  const day = START + LEARNING_DAYS * DAY;
  writeFileSync(
    `${root}docs/forecast-replay.svg`,
    chart(
      trace,
      day,
      runs[0]!.steps,
      readyReplicas(runs[0]!.steps, SYNC_MS, STARTUP_MS),
      readyReplicas(runs[2]!.steps, SYNC_MS, STARTUP_MS),
    ),
  );
  for (const r of results) console.log(r);
  console.log(json.costMicroseconds);
  console.log("wrote docs/figures/forecast-replay.json and docs/forecast-replay.svg; now npm run figures");
}

/** One day: replicas the load needs, and the serving replicas without and with the forecast. */
function chart(
  trace: readonly number[],
  dayMs: number,
  without: readonly ReplayStep[],
  readyWithout: readonly number[],
  readyWith: readonly number[],
): string {
  const W = 720;
  const H = 300;
  const P = { l: 44, r: 12, t: 30, b: 36 };
  const first = without.findIndex((s) => s.atMs >= dayMs);
  const steps = without.slice(first, first + DAY / SYNC_MS);
  const maxY =
    Math.max(
      ...steps.map((_, i) => Math.ceil(trace[Math.floor((steps[i]!.atMs - START) / MINUTE)]! / PER_REPLICA)),
      1,
    ) + 4;
  const x = (ms: number) => P.l + ((ms - dayMs) / DAY) * (W - P.l - P.r);
  const y = (v: number) => H - P.b - (v / maxY) * (H - P.t - P.b);
  /** A staircase through `values`, a point only where it changes (a day of syncs is 5,760 values). */
  const line = (values: number[], color: string, dash = "") => {
    const pts: string[] = [];
    const at = (i: number, v: number) => `${x(steps[i]!.atMs).toFixed(1)},${y(v).toFixed(1)}`;
    values.forEach((v, i) => {
      if (i === 0) pts.push(at(0, v));
      else if (v !== values[i - 1]) pts.push(at(i, values[i - 1]!), at(i, v));
    });
    pts.push(at(values.length - 1, values.at(-1)!));
    return `<polyline fill="none" stroke="${color}" stroke-width="1.5"${dash ? ` stroke-dasharray="${dash}"` : ""} points="${pts.join(" ")}"/>`;
  };
  // The load drawn minute by minute (its noise would make every sync a change).
  const needed = steps.map((s) => Math.round(trace[Math.floor((s.atMs - START) / MINUTE)]! / PER_REPLICA));
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${P.l}" y="18" font-size="14" font-weight="bold">A weekday: replicas serving, without and with a forecast 10 minutes ahead</text>`,
  ];
  for (let h = 0; h <= 24; h += 3)
    out.push(
      `<line x1="${x(h * 3_600_000)}" x2="${x(h * 3_600_000)}" y1="${P.t}" y2="${H - P.b}" stroke="#eee"/>`,
      `<text x="${x(h * 3_600_000)}" y="${H - P.b + 16}" text-anchor="middle">${String(h).padStart(2, "0")}:00</text>`,
    );
  for (let v = 0; v <= maxY; v += 5)
    out.push(`<text x="${P.l - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
  out.push(
    line(needed, "#999"),
    line(readyWithout.slice(first, first + steps.length), "#d62728"),
    line(readyWith.slice(first, first + steps.length), "#1f77b4", "5 3"),
    `<text x="${P.l + 8}" y="${P.t + 14}" fill="#999">replicas the load needs (100 requests/s each, rounded)</text>`,
    `<text x="${P.l + 8}" y="${P.t + 30}" fill="#d62728">serving, HPA on the load</text>`,
    `<text x="${P.l + 8}" y="${P.t + 46}" fill="#1f77b4">serving, HPA on the forecast (holt-winters, 10m)</text>`,
    "</svg>",
  );
  return out.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
