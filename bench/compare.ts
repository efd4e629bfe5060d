/**
 * `npm run bench:compare [-- BEFORE.json [AFTER.json]]`: two runs of `npm run bench` side
 * by side, series by series — each run's median (min–max), the change in the median,
 * and whether the change is beyond the spread (the two ranges do not overlap; a series
 * measured once on either side has no spread and is not judged, said as "single"). Without
 * arguments it compares the two newest full runs in bench/results; with one, that run
 * against bench/results/latest.json.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunResults, compareRuns, figure } from "./stats.js";

const RESULTS = fileURLToPath(new URL("results", import.meta.url));

/** The files to compare: the arguments, or the newest runs in bench/results. */
function pick(args: string[]): [string, string] {
  if (args.length >= 2) return [args[0]!, args[1]!];
  if (args.length === 1) return [args[0]!, join(RESULTS, "latest.json")];
  const runs = readdirSync(RESULTS)
    .filter((f) => /^\d{4}-\d\d-\d\dT\d{4}Z\.json$/.test(f))
    .sort();
  if (runs.length < 2)
    throw new Error(
      `bench/results holds ${runs.length} full run(s); name two files, or run \`npm run bench\``,
    );
  return [join(RESULTS, runs.at(-2)!), join(RESULTS, runs.at(-1)!)];
}

const show = (s: { median: number; min: number; max: number }) =>
  s.min === s.max ? figure(s.median) : `${figure(s.median)} (${figure(s.min)}–${figure(s.max)})`;

/** The comparison as a markdown table (with a title line per run). */
export function renderComparison(before: RunResults, after: RunResults): string {
  const changes = compareRuns(before.rows, after.rows);
  return [
    `before: ${before.title}`,
    `  ${before.noise}`,
    `after:  ${after.title}`,
    `  ${after.noise}`,
    "",
    "| row | series | before | after | change | beyond spread |",
    "| --- | --- | --- | --- | --- | --- |",
    ...changes.map(
      (c) =>
        `| ${c.row} | ${c.series} | ${show(c.before)} | ${show(c.after)} | ${Number.isFinite(c.change) ? `${c.change >= 0 ? "+" : ""}${(c.change * 100).toFixed(1)} %` : "n/a"} | ${c.beyondSpread === undefined ? "single: not judged" : c.beyondSpread ? "**yes**" : "no"} |`,
    ),
    "",
    `${changes.filter((c) => c.beyondSpread).length} of ${changes.filter((c) => c.beyondSpread !== undefined).length} series changed beyond their spread; ${changes.filter((c) => c.beyondSpread === undefined).length} measured once (not judged: measure them in rounds to compare).`,
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [a, b] = pick(process.argv.slice(2));
  const read = (f: string) => JSON.parse(readFileSync(f, "utf8")) as RunResults;
  console.log(renderComparison(read(a), read(b)));
}
