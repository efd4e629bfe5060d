/**
 * `npm run bench`: Governor's speed and size, each figure next to a baseline measured in
 * the same run — interleaved rounds, medians with their min–max — printed as one markdown
 * table and written to bench/results/latest.md, with the raw per-round figures in
 * latest.json (and, for a full run, a JSON file named after the run's time, which
 * `npm run bench:compare` reads). Needs the local control plane (started if it is not
 * running) and builds the Go sample-apiserver once. Load comes from a Go load generator in
 * its own process (bench/loadgen.ts). How and why: ADR 0005.
 *
 * A full run also points docs/performance.md's latest-run table at its results and renders
 * it (hack/figures.ts).
 * `npm run bench -- --quick` runs 1-second rounds and 1,000 instead of 10,000 mappings
 * (to try a change; it leaves docs/performance.md alone). `--only <text>` runs only the parts whose
 * name contains the text, e.g. `npm run bench -- --quick --only prometheus-adapter` (or one
 * of several: `--only "selector|how cost grows"`).
 */
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { aggregatorRows } from "./aggregator.js";
import { DISTURBED_CORES, SLOWED } from "./disturbance.js";
import { fairDispatchRows } from "./fair-dispatch.js";
import { applyWarmMetric, baselineCheck, directRows, noiseCheck, WARM_PATH } from "./direct.js";
import { NS, ROOT, deleteNamespace, proxied, setUp, startGovernor, waitFor200 } from "./harness.js";
import { applyToServableRows, coalescingRows } from "./lifecycle.js";
import { outageRows } from "./outage.js";
import { peerRows, peerRulesRows } from "./peers.js";
import { scaleRows } from "./scale.js";
import { scaleFromZeroRows } from "./scale-from-zero.js";
import { selectorRows } from "./selector.js";
import type { RunResults } from "./stats.js";
import { runTable } from "./report.js";
import { pointTo, renderFigures } from "../hack/figures.js";
import { freePort } from "../test/support/ports.js";
import { kedaRows } from "./keda.js";
import { growthRows } from "./growth.js";
import type { GrowthPoint } from "./plot.js";
import { kedaIdleRows } from "./keda-idle.js";
import { rateLimitedRows } from "./rate-limited.js";
import { upstreamsRows } from "./upstreams.js";
import { sampleCpuRows } from "./sample-cpu.js";
import { otlpRows } from "./otlp.js";

const quick = process.argv.includes("--quick");
/**
 * `--only <text>`: run only the parts whose name contains it (and the noise check); several
 * texts separated by `|` run the parts of each. Implies `--quick`'s leaving
 * docs/performance.md and the kept results alone.
 */
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt > 0 ? process.argv[onlyAt + 1] : undefined;
/** Rounds of every comparison (ADR 0005): an even number (as many A-first as B-first), after a discarded warm-up. */
const ROUNDS = quick
  ? { rounds: 6, seconds: 1, warmupSeconds: 1 }
  : { rounds: 8, seconds: 3, warmupSeconds: 2 };

async function main() {
  const started = Date.now();
  const b = await setUp(ROUNDS);
  let noise = "";
  /** Parts that threw: the run goes on without them, says so in its table and exits 1. */
  const failed: string[] = [];
  /**
   * Runs one part of the bench, then prints the rows it added (so a long run shows
   * progress). A part that throws gets a row saying so and the run goes on: one peer that
   * will not start must not cost the other 90 minutes of figures.
   */
  const part = async (what: string, fn: () => Promise<unknown>) => {
    if (only && what !== "noise check" && !only.split("|").some((o) => what.includes(o))) return;
    console.error(`[bench] ${what}`);
    const before = b.rows.length;
    try {
      await fn();
    } catch (err) {
      console.error(err);
      failed.push(what);
      const message = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 200);
      b.rows.push({
        name: `${what}: **did not finish**`,
        figure: message.replaceAll("|", "\\|"),
        baseline: "—",
        ratio: "—",
      });
    } finally {
      for (const r of b.rows.slice(before))
        console.error(`  ${r.name}: ${r.figure} | ${r.baseline} | ${r.ratio}`);
    }
  };
  try {
    await part("noise check", async () => (noise = await noiseCheck(b)));
    const governor = await startGovernor(b);
    try {
      applyWarmMetric(b);
      await waitFor200(`https://127.0.0.1:${governor.port}${WARM_PATH}`, proxied(b), "the warm metric");
      await part("direct API", async () => {
        await directRows(b, governor, [1, 16, 64]);
        noise = `${noise}; ${baselineCheck(b.rows)}`;
      });
      await part("through the aggregator", async () =>
        aggregatorRows(b, governor, await freePort(), [1, 16]),
      );
      await part("several upstreams: the second of two", () => upstreamsRows(b, governor, [1, 16]));
      await part("against prometheus-adapter", () => peerRows(b, governor, [1, 16, 64]));
      await part("against prometheus-adapter: 10 and 1,000 rules", () => peerRulesRows(b, governor));
      await part("against KEDA", () => kedaRows(b, governor, [1, 16, 64]));
      await part("against KEDA: 1,000 queues", () => kedaIdleRows(b, governor));
      await part("against KEDA: a Prometheus that answers 429", () => rateLimitedRows(b));
      await part("CPU per Prometheus sample", () => sampleCpuRows(b));
      await part("OTLP: push → servable, ingest", () => otlpRows(b));
      await part("apply → servable, coalescing", async () => {
        await applyToServableRows(b, governor);
        await coalescingRows(b, governor);
      });
      await part("scale from zero", () => scaleFromZeroRows(b, quick ? 2 : 6));
      await part("selector queries over 5,000 pods", () => selectorRows(b, governor));
      await part("fair dispatch under a flood", () => fairDispatchRows(b, governor));
      await part("a source outage", () =>
        outageRows(
          b,
          quick
            ? { n: 200, outageS: 60, interval: "5s", staleAfter: "20s" }
            : { n: 1000, outageS: 300, interval: "15s", staleAfter: "2m" },
        ),
      );
    } finally {
      await governor.stop();
    }
    // A fresh Governor loads the mappings below: without the 5,000 pods in its cache. Deleting
    // them all takes the apiserver longer than the client's default 30 s.
    await b.client.request("DELETE", `/api/v1/namespaces/${NS}/pods`, { timeoutMs: 300_000 });
    let measured: GrowthPoint[] = [];
    await part(`${quick ? "1,000" : "10,000"} MetricMappings`, async () => {
      measured = [await scaleRows(b, quick ? 1000 : 10_000)];
    });
    // docs/performance.md shows a full run's chart; other runs leave it alone.
    await part("how cost grows", () =>
      growthRows(
        b,
        quick ? [200, 1000, 5000] : [1000, 10_000, 50_000, 100_000],
        measured,
        quick || only ? "latest-growth.svg" : "growth.svg",
      ),
    );
  } finally {
    await b.load.stop();
    await b.probes.stop();
    await deleteNamespace(b.client);
    await b.client.close();
  }

  const d = b.disturbance;
  noise = `${noise}; ${d.redone} of ${d.rounds} rounds measured again (${d.redone - d.slowed} for more than ${DISTURBED_CORES} cores of outside work, ${d.slowed} for a core below ${SLOWED} of its usual speed), ${d.disturbed} kept disturbed${d.unsettled ? `, ${d.unsettled} rows started on a machine that never settled` : ""}`;
  const when = new Date().toISOString();
  const title = `Governor benchmarks — ${when.slice(0, 16)}Z, Node ${process.version}, ${cpus().length} cores${quick ? " (--quick)" : ""}${only ? ` (--only ${only})` : ""}, ${Math.round((Date.now() - started) / 60000)} min, ${ROUNDS.rounds} rounds of ${ROUNDS.seconds} s`;
  const raw: RunResults = {
    title,
    when,
    quick,
    node: process.version,
    cores: cpus().length,
    rounds: ROUNDS,
    noise,
    disturbance: d,
    rows: b.rows.map((r) => ({
      name: r.name,
      series: r.series ?? {},
      figure: r.figure,
      baseline: r.baseline,
      ratio: r.ratio,
    })),
  };
  const table = `${runTable(raw)}\n`;
  const results = join(ROOT, "bench/results");
  writeFileSync(join(results, "latest.md"), table);
  writeFileSync(join(results, "latest.json"), `${JSON.stringify(raw, null, 1)}\n`);
  if (!quick && !only) {
    // Full runs are kept, so a later run can be compared with them round for round.
    const kept = `bench/results/${when.slice(0, 16).replace(":", "")}Z.json`;
    writeFileSync(join(ROOT, kept), `${JSON.stringify(raw, null, 1)}\n`);
    // A table with a part missing does not replace the one in docs/performance.md.
    if (failed.length === 0) {
      pointTo("docs/performance.md", "latest-run", kept);
      await renderFigures({ docs: ["docs/performance.md"] });
    }
  }
  console.log(table);
  if (failed.length > 0) {
    console.error(
      `[bench] ${failed.length} part(s) did not finish: ${failed.join("; ")} (docs/performance.md was left alone)`,
    );
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
