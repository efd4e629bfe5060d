/**
 * `npm run bench`: Governor's speed and size, each figure next to a baseline measured in
 * the same run, printed as one markdown table and written to bench/results/latest.md.
 * Needs the local control plane (started if it is not running) and builds the Go
 * sample-apiserver once. Load comes from autocannon. Takes about 10 minutes on 2 cores.
 *
 * A full run also puts the table into the README (between its bench markers).
 * `npm run bench -- --quick` runs shorter loads and 1,000 instead of 10,000 mappings (to
 * try a change; it leaves the README alone).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import prettier from "prettier";
import { join } from "node:path";
import { aggregatorRows } from "./aggregator.js";
import { applyWarmMetric, directRows, WARM_PATH } from "./direct.js";
import { NS, ROOT, deleteNamespace, proxied, rssMB, setUp, startGovernor, waitFor200 } from "./harness.js";
import { applyToServableRows, coalescingRows } from "./lifecycle.js";
import { scaleRows } from "./scale.js";
import { selectorRows } from "./selector.js";
import { freePort } from "../src/util/ports.js";

const quick = process.argv.includes("--quick");
const seconds = quick ? 2 : 5;

async function main() {
  const started = Date.now();
  const b = await setUp();
  try {
    const governor = await startGovernor(b);
    let idleRss: number;
    try {
      applyWarmMetric(b);
      await waitFor200(`https://127.0.0.1:${governor.port}${WARM_PATH}`, proxied(b), "the warm metric");
      idleRss = rssMB(governor.process.pid!);
      console.error("[bench] direct API");
      await directRows(b, governor, [1, 16, 64], seconds);
      console.error("[bench] through the aggregator");
      await aggregatorRows(b, governor, await freePort(), [1, 16], seconds);
      console.error("[bench] apply → servable, coalescing");
      await applyToServableRows(b, governor);
      await coalescingRows(b, governor);
      console.error("[bench] selector queries over 5,000 pods");
      await selectorRows(b, governor, seconds);
    } finally {
      await governor.stop();
    }
    await b.client.delete(`/api/v1/namespaces/${NS}/pods`);
    console.error(`[bench] ${quick ? "1,000" : "10,000"} MetricMappings`);
    await scaleRows(b, idleRss, quick ? 1000 : 10_000, seconds);
  } finally {
    await deleteNamespace(b.client);
    await b.client.close();
  }

  const table = [
    `Governor benchmarks — ${new Date().toISOString().slice(0, 16)}Z, Node ${process.version}, ${cpus().length} cores${quick ? " (--quick)" : ""}, ${Math.round((Date.now() - started) / 60000)} min`,
    "",
    "| row | Governor | baseline (same run) | ratio |",
    "| --- | --- | --- | --- |",
    ...b.rows.map((r) => `| ${r.name} | ${r.figure} | ${r.baseline} | ${r.ratio} |`),
    "",
  ].join("\n");
  writeFileSync(join(ROOT, "bench/results/latest.md"), table);
  if (!quick) await updateReadme(table);
  console.log(table);
}

/** Puts the table between the README's bench markers (formatted as `npm run verify` expects). */
async function updateReadme(table: string): Promise<void> {
  const file = join(ROOT, "README.md");
  const readme = readFileSync(file, "utf8");
  const [open, close] = ["<!-- bench:start -->", "<!-- bench:end -->"];
  const start = readme.indexOf(open);
  const end = readme.indexOf(close);
  if (start < 0 || end < start) return;
  const [title, , ...rows] = table.trim().split("\n");
  const section = `${open}\n\nLatest run — ${title!.replace("Governor benchmarks — ", "")}:\n\n${rows.join("\n")}\n\n`;
  const updated = readme.slice(0, start) + section + readme.slice(end);
  const options = (await prettier.resolveConfig(file)) ?? {};
  writeFileSync(file, await prettier.format(updated, { ...options, filepath: file }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
