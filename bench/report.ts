/**
 * The tables a run's raw results render to, and nothing else: `npm run bench` writes its
 * table from them (bench/results/latest.md), and `npm run figures` renders the same tables
 * into docs/performance.md from the JSON a doc names, so a figure edited by hand in a doc
 * no longer matches what its JSON renders (issue #43). Pure functions of {@link RunResults}.
 */
import type { RawRow, RunResults } from "./stats.js";

/** The cells of a row as the run rendered them; an error for a row kept without them. */
function cells(r: RawRow): Required<Pick<RawRow, "figure" | "baseline" | "ratio">> {
  if (r.figure === undefined || r.baseline === undefined || r.ratio === undefined)
    throw new Error(`row "${r.name}" has no rendered cells in its results`);
  return { figure: r.figure, baseline: r.baseline, ratio: r.ratio };
}

/** The run's table: its title, the noise check's verdict, one line per row. */
export function runTable(run: RunResults): string {
  return [
    run.title,
    "",
    `${run.noise}. Each figure: median across rounds (min–max); each ratio: median of the round-by-round ratios (min–max).`,
    "",
    "| row | Governor | baseline (same run) | ratio |",
    "| --- | --- | --- | --- |",
    ...run.rows.map((r) => {
      const c = cells(r);
      return `| ${r.name} | ${c.figure} | ${c.baseline} | ${c.ratio} |`;
    }),
  ].join("\n");
}

const GROWTH = "how cost grows: ";
const thousands = (n: number) => n.toLocaleString("en-US");

/**
 * The growth part's figures as docs/performance.md shows them: one line per size, from the
 * rows' raw series (a size Governor could not load says how far it got).
 */
export function growthTable(run: RunResults): string {
  const bySize = new Map<number, Record<string, number>>();
  for (const r of run.rows) {
    if (!r.name.startsWith(GROWTH)) continue;
    const n = r.series.mappings?.[0];
    if (n === undefined) continue;
    const at = bySize.get(n) ?? {};
    for (const [k, v] of Object.entries(r.series)) if (v[0] !== undefined) at[k] = v[0];
    bySize.set(n, at);
  }
  if (bySize.size === 0) throw new Error(`${run.when}: no "${GROWTH}…" rows`);
  const lines = [...bySize.entries()]
    .sort(([a], [b]) => a - b)
    .map(([n, s]) => {
      if (s.rssMB === undefined)
        return `| ${thousands(n)} | — | — | out of heap within ${Math.round(s.afterS ?? NaN)} s, ${thousands(s.ready ?? 0)} Ready | — | — |`;
      const f = (k: string, digits: number) => (s[k] === undefined ? "—" : s[k].toFixed(digits));
      return `| ${thousands(n)} | ${f("rssMB", 0)} | ${f("cpuPercent", 1)} | ${f("servedS", 1)} / ${f("readyS", 1)} | ${f("restartS", 1)} | ${f("discoveryP99Ms", 2)} |`;
    });
  return [
    "| MetricMappings | RSS, MB | CPU steady, % of a core | loaded → all served / all Ready, s | restarted → all served, s | discovery p99, ms |",
    "| --- | --- | --- | --- | --- | --- |",
    ...lines,
  ].join("\n");
}
