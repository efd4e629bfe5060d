/**
 * "How cost grows": Governor loading 1,000, 10,000, 50,000 and 100,000 MetricMappings with
 * the shipped Node flags (the Deployment's heap cap, never raised), each size measured as
 * the 10,000-mapping rows are (bench/scale.ts: freshly created mappings, a fresh Governor):
 * load → all served and all Ready, RSS and CPU once steady, discovery p99. A size the run
 * has already measured (the 10,000 rows) is taken from there. One row per size, each
 * against the smallest size of the same run, and an SVG chart of the four measures; a size
 * Governor cannot load (out of heap) is a row that says how far it got.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Bench, NS, ROOT, cpuSeconds, fmt, sampleRss, shippedNodeOptions, sleep } from "./harness.js";
import { type GrowthPoint, growthSvg } from "./plot.js";
import { GovernorExited, MANY, loadMany, restartOver } from "./scale.js";
import { spread } from "./stats.js";

const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

/**
 * Deletes every mapping {@link loadMany} made: a DELETE of the collection a few thousand at
 * a time (the apiserver deletes one by one and gives up on a request after a minute: 10,000
 * at once did not finish in it), until none is left.
 */
export async function deleteMany(b: Bench): Promise<void> {
  const selector = `${MANY}=true`;
  for (let round = 0; ; round++) {
    const left = await b.client.get<{ items: unknown[] }>(PATH, { labelSelector: selector, limit: 1 });
    if (left.items.length === 0) return;
    if (round > 200) throw new Error("many mappings still there after 200 rounds of deletes");
    await b.client
      .request("DELETE", PATH, { query: { labelSelector: selector, limit: 2000 }, timeoutMs: 120_000 })
      .catch((err: unknown) => {
        // A request the apiserver gave up on may still have deleted some: look again.
        if ((err as { statusCode?: number }).statusCode !== 504) throw err;
      });
  }
}

/** How far Governor got with a size it could not load. */
interface Failed {
  mappings: number;
  ready: number;
  afterS: number;
  outOfHeap: boolean;
}

/** Seconds until a Governor restarted over `n` mappings serves them all, or how it failed. */
async function restarted(b: Bench, n: number): Promise<number | string> {
  try {
    const { governor, servedMs } = await restartOver(b, n);
    await governor.stop();
    return servedMs / 1000;
  } catch (err) {
    if (!(err instanceof GovernorExited)) throw err;
    return `exited after ${fmt(err.afterS)} s${err.outOfHeap ? " (out of heap)" : ""}, ${err.ready} served`;
  }
}

/** One size, measured with a fresh Governor on freshly created mappings. */
async function measure(b: Bench, n: number): Promise<GrowthPoint | Failed> {
  await deleteMany(b);
  let loaded;
  try {
    loaded = await loadMany(b, n, shippedNodeOptions());
  } catch (err) {
    if (!(err instanceof GovernorExited)) throw err;
    return { mappings: n, ready: err.ready, afterS: err.afterS, outOfHeap: err.outOfHeap };
  }
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
    await loaded.stopWatching();
    await loaded.governor.stop();
    const restartS = await restarted(b, n);
    return {
      mappings: n,
      rssMB: spread(rss).median,
      cpuPercent: cpu,
      readyS: loaded.readyMs / 1000,
      servedS: loaded.servedMs / 1000,
      restartS,
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
  const failed: Failed[] = [];
  try {
    for (const n of sizes) {
      const p = known.find((k) => k.mappings === n) ?? (await measure(b, n));
      if ("rssMB" in p) points.push(p);
      else failed.push(p);
    }
  } finally {
    await deleteMany(b).catch(() => false);
  }
  const flags = shippedNodeOptions().join(" ");
  for (const f of failed)
    b.rows.push({
      name: `how cost grows: ${f.mappings} MetricMappings (${flags}): could not load them: Ready when Governor exited / s`,
      figure: `${f.ready} / ${fmt(f.afterS)}${f.outOfHeap ? " (out of heap)" : ""}`,
      baseline: "—",
      ratio: "—",
      series: { mappings: [f.mappings], ready: [f.ready], afterS: [f.afterS] },
    });
  const base = points[0];
  if (!base) return;
  const r = (x: number, y: number) => fmt(x / y, 1);
  for (const p of points)
    b.rows.push({
      name: `how cost grows: ${p.mappings} MetricMappings: RSS MB / CPU steady % of a core / loaded → all Ready s / discovery p99 ms`,
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
  for (const p of points)
    if (p.servedS !== undefined)
      b.rows.push({
        name: `how cost grows: ${p.mappings} MetricMappings: loaded → all served in discovery / all Ready / restarted over them → all served, s`,
        figure: `${fmt(p.servedS)} / ${fmt(p.readyS)} / ${typeof p.restartS === "number" ? fmt(p.restartS) : (p.restartS ?? "—")}`,
        baseline: "—",
        ratio: "—",
        series: {
          mappings: [p.mappings],
          servedS: [p.servedS],
          readyS: [p.readyS],
          ...(typeof p.restartS === "number" ? { restartS: [p.restartS] } : {}),
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
