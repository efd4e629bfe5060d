/**
 * "CPU per Prometheus sample" (issue #37's goal: ≤ 0.2 ms): MetricMappings that each send a
 * query of their own to the bench's real Prometheus (so none shares a sampler), sampled every
 * 5 s with no HPA asking, loaded by two fresh Governors side by side — one as shipped, whose
 * samplers start on a 100 ms grid (`--sample-slot`), and one started with `--sample-slot=0s`,
 * each sampler at its own moment. Both run at once through every round, so a busy moment
 * costs both; each round's figure is a process's CPU time over the samples it took in that
 * round (its own `governor_sampler_samples_total`), the process's whole CPU: what an admin
 * pays per sample, fixed costs included.
 */
import {
  type Bench,
  type Child,
  NS,
  cpuSeconds,
  pool,
  shippedNodeOptions,
  sleep,
  startGovernor,
} from "./harness.js";
import { gauge, scrapedSeries } from "./exposition.js";
import { until } from "./keda-idle.js";
import { pairedRatios, showSpread } from "./stats.js";

const MAPPINGS = 300;
const EVERY_S = 5;
const ROUNDS = 6;
const ROUND_S = 10;
const LABEL = "bench.governor.dev/part";
const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

/** Samples a Governor has taken (successful ones), from its /metrics. */
async function samples(g: Child & { metricsPort: number }): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.metricsPort}/metrics`)).text();
  return Number(/^governor_sampler_samples_total\{outcome="ok"\} (\S+)$/m.exec(text)?.[1] ?? 0);
}

export async function sampleCpuRows(b: Bench): Promise<void> {
  const exposition = gauge("bench_sample_value", MAPPINGS, (i) => [`series="s-${i}"`, i]);
  const { prometheus, stop } = await scrapedSeries(() => exposition, "15s");
  const started: (Child & { metricsPort: number })[] = [];
  try {
    await pool(MAPPINGS, 32, (i) =>
      b.client.create(PATH, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name: `sample-cpu-${i}`, labels: { [LABEL]: "sample-cpu" } },
        spec: {
          metric: `bench_sample_${i}`,
          subject: { external: {} },
          interval: `${EVERY_S}s`,
          source: {
            prometheus: { address: prometheus.url, query: `sum(bench_sample_value{series="s-${i}"})` },
          },
        },
      }),
    );
    const slotted = await startGovernor(b, shippedNodeOptions());
    started.push(slotted);
    const each = await startGovernor(b, shippedNodeOptions(), ["--sample-slot=0s"]);
    started.push(each);
    // Every mapping sampled once by both, then a warm-up; all within the two minutes before
    // unread mappings slow down.
    for (const g of started)
      await until("every mapping sampled", 60_000, async () => (await samples(g)) >= MAPPINGS);
    await sleep(10_000);
    const ms: [number[], number[]] = [[], []];
    const perSecond: [number[], number[]] = [[], []];
    for (let r = 0; r < ROUNDS; r++) {
      const before = await Promise.all(
        started.map(async (g) => [cpuSeconds(g.process.pid!), await samples(g)]),
      );
      await sleep(ROUND_S * 1000);
      const after = await Promise.all(
        started.map(async (g) => [cpuSeconds(g.process.pid!), await samples(g)]),
      );
      started.forEach((_, side) => {
        const cpu = after[side]![0]! - before[side]![0]!;
        const n = after[side]![1]! - before[side]![1]!;
        ms[side]!.push((cpu * 1000) / n);
        perSecond[side]!.push(n / ROUND_S);
      });
    }
    const what = `${MAPPINGS} MetricMappings with a Prometheus query each, sampled every ${EVERY_S} s, no HPA asking (both Governors at once, ${ROUNDS} rounds of ${ROUND_S} s)`;
    const baseline = "--sample-slot=0s: each sampler at its own moment";
    b.rows.push({
      name: `CPU per Prometheus sample, ${what}: ms of the process's CPU per sample`,
      figure: showSpread(ms[0]),
      baseline: `${showSpread(ms[1])} (${baseline})`,
      ratio: showSpread(pairedRatios(ms[0], ms[1])),
      series: { Governor: ms[0], baseline: ms[1], ratio: pairedRatios(ms[0], ms[1]) },
    });
    b.rows.push({
      name: `CPU per Prometheus sample, ${what}: samples per second`,
      figure: showSpread(perSecond[0]),
      baseline: `${showSpread(perSecond[1])} (${baseline})`,
      ratio: showSpread(pairedRatios(perSecond[0], perSecond[1])),
      series: { Governor: perSecond[0], baseline: perSecond[1] },
    });
  } finally {
    for (const g of started) await g.stop();
    await b.client
      .request("DELETE", PATH, { query: { labelSelector: `${LABEL}=sample-cpu` }, timeoutMs: 300_000 })
      .catch(() => false);
    await stop();
  }
}
