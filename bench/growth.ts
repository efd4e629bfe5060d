/**
 * "How cost grows": Governor loading 1,000, 10,000 and 50,000 MetricMappings, each size
 * measured as the 10,000-mapping rows are (bench/scale.ts: freshly created mappings, a
 * fresh Governor): load → all Ready, RSS and CPU once steady, discovery p99. A size the
 * run has already measured (the 10,000 rows) is taken from there. One row per size, each
 * against the smallest size of the same run, and an SVG chart of the four measures.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Bench, NS, ROOT, cpuSeconds, fmt, sampleRss, shippedNodeOptions, sleep } from "./harness.js";
import { heapFor } from "./heap.js";
import { type GrowthPoint, growthSvg } from "./plot.js";
import { MANY, loadMany } from "./scale.js";
import { spread } from "./stats.js";

const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

/** Deletes every mapping {@link loadMany} made (one DELETE of the collection: it returns once they are gone). */
export async function deleteMany(b: Bench): Promise<void> {
  await b.client.request("DELETE", PATH, { query: { labelSelector: `${MANY}=true` }, timeoutMs: 900_000 });
}

/** One size, measured with a fresh Governor on freshly created mappings. */
async function measure(b: Bench, n: number): Promise<GrowthPoint> {
  await deleteMany(b);
  const loaded = await loadMany(b, n, heapFor(n, shippedNodeOptions()));
  const pid = loaded.governor.process.pid!;
  try {
    await sleep(10_000);
    const [cpu0, t0] = [cpuSeconds(pid), performance.now()];
    const rss = await sampleRss(pid, 11, 2000);
    const cpu = ((cpuSeconds(pid) - cpu0) / ((performance.now() - t0) / 1000)) * 100;
    const p99s: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await b.load.run({
        url: loaded.discovery.url,
        connections: 1,
        seconds: b.rounds.seconds,
        tls: b.frontProxy,
        headers: b.proxyHeaders,
      });
      p99s.push(r.p99);
    }
    return {
      mappings: n,
      rssMB: spread(rss).median,
      cpuPercent: cpu,
      readyS: loaded.readyMs / 1000,
      discoveryP99Ms: spread(p99s).median,
    };
  } finally {
    await loaded.stopWatching();
    await loaded.governor.stop();
  }
}

/**
 * Rows for `sizes` (ascending), measuring those not in `known`; writes the chart to
 * `bench/results/<svgName>`. Leaves no many mappings behind.
 */
export async function growthRows(
  b: Bench,
  sizes: number[],
  known: GrowthPoint[],
  svgName: string,
): Promise<void> {
  const points: GrowthPoint[] = [];
  try {
    for (const n of sizes) points.push(known.find((k) => k.mappings === n) ?? (await measure(b, n)));
  } finally {
    await deleteMany(b).catch(() => false);
  }
  const base = points[0]!;
  const r = (x: number, y: number) => fmt(x / y, 1);
  const heap = (n: number) => {
    const raised = heapFor(n, shippedNodeOptions()).find((a) => !shippedNodeOptions().includes(a));
    return raised ? ` (${raised})` : "";
  };
  for (const p of points)
    b.rows.push({
      name: `how cost grows: ${p.mappings} MetricMappings${heap(p.mappings)}: RSS MB / CPU steady % of a core / loaded → all Ready s / discovery p99 ms`,
      figure: `${fmt(p.rssMB, 0)} / ${fmt(p.cpuPercent)} / ${fmt(p.readyS)} / ${fmt(p.discoveryP99Ms, 2)}`,
      baseline: `${fmt(base.rssMB, 0)} / ${fmt(base.cpuPercent)} / ${fmt(base.readyS)} / ${fmt(base.discoveryP99Ms, 2)} (${base.mappings} MetricMappings)`,
      ratio: `${r(p.rssMB, base.rssMB)} / ${r(p.cpuPercent, base.cpuPercent)} / ${r(p.readyS, base.readyS)} / ${r(p.discoveryP99Ms, base.discoveryP99Ms)} (×${fmt(p.mappings / base.mappings, 0)} mappings)`,
      series: {
        mappings: [p.mappings],
        rssMB: [p.rssMB],
        cpuPercent: [p.cpuPercent],
        readyS: [p.readyS],
        discoveryP99Ms: [p.discoveryP99Ms],
      },
    });
  writeFileSync(
    join(ROOT, "bench/results", svgName),
    growthSvg(
      points,
      `How Governor's cost grows with MetricMappings — ${new Date().toISOString().slice(0, 16)}Z`,
    ),
  );
}
