/**
 * The tables a run's raw results render to, and nothing else: `npm run bench` writes its
 * table from them (bench/results/latest.md), and `npm run figures` renders the same tables
 * into docs/performance.md from the JSON a doc names, so a figure edited by hand in a doc
 * no longer matches what its JSON renders (issue #43). Pure functions of {@link RunResults}.
 */
import { type RawRow, type RunResults, spread } from "./stats.js";

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
  // One line per size and Node flags the row names (a size run with a raised heap cap is
  // another line); a figure given twice for one line is an error, not a silent overwrite.
  const bySize = new Map<string, { n: number; flags: string; s: Record<string, number> }>();
  for (const r of run.rows) {
    if (!r.name.startsWith(GROWTH)) continue;
    const n = r.series.mappings?.[0];
    if (n === undefined) continue;
    const flags = /MetricMappings \((--[^)]*)\)/.exec(r.name)?.[1] ?? "";
    const key = `${n} ${flags}`;
    const at = bySize.get(key) ?? { n, flags, s: {} };
    for (const [k, v] of Object.entries(r.series)) {
      if (k === "mappings" || v[0] === undefined) continue;
      if (k in at.s && at.s[k] !== v[0])
        throw new Error(`${run.when}: two values of ${k} at ${n} MetricMappings`);
      at.s[k] = v[0];
    }
    bySize.set(key, at);
  }
  if (bySize.size === 0) throw new Error(`${run.when}: no "${GROWTH}…" rows`);
  const lines = [...bySize.values()]
    .sort((a, b) => a.n - b.n)
    .map(({ n, flags, s }) => {
      const size = `${thousands(n)}${flags && !flags.startsWith("--max-old-space-size=384") ? ` (\`${flags}\`)` : ""}`;
      if (s.rssMB === undefined)
        return `| ${size} | — | — | out of heap within ${Math.round(s.afterS ?? NaN)} s, ${thousands(s.ready ?? 0)} Ready | — | — |`;
      const f = (k: string, digits: number) => (s[k] === undefined ? "—" : s[k].toFixed(digits));
      return `| ${size} | ${f("rssMB", 0)} | ${f("cpuPercent", 1)} | ${f("servedS", 1)} / ${f("readyS", 1)} | ${f("restartS", 1)} | ${f("discoveryP99Ms", 2)} |`;
    });
  return [
    "| MetricMappings | RSS, MB | CPU steady, % of a core | loaded → all served / all Ready, s | restarted → all served, s | discovery p99, ms |",
    "| --- | --- | --- | --- | --- | --- |",
    ...lines,
  ].join("\n");
}

/**
 * Cells that do not agree with the series kept beside them: a cell's leading figure (or,
 * for a `p50 / p99` cell, each part's) must be its series' median as printed (within the
 * last digit shown). Cells of other shapes are not judged. For `npm run figures -- --check`:
 * a figure edited by hand in the JSON fails as one edited in a doc does.
 */
export function cellDisagreements(run: RunResults): string[] {
  const out: string[] = [];
  const leading = (text: string) => /^\s*(-?\d[\d,]*(?:\.\d+)?)/.exec(text)?.[1];
  const agrees = (shown: string, xs: number[] | undefined) => {
    const m = spread(xs ?? []).median;
    if (!Number.isFinite(m)) return true;
    const decimals = shown.split(".")[1]?.length ?? 0;
    const value = Number(shown.replaceAll(",", ""));
    return Math.abs(value - m) <= Math.max(0.5 * 10 ** -decimals, 0.005 * Math.abs(m)) + 1e-9;
  };
  for (const r of run.rows)
    for (const [cell, key] of [
      ["figure", "Governor"],
      ["baseline", "baseline"],
      ["ratio", "ratio"],
    ] as const) {
      const text = r[cell];
      if (text === undefined) continue;
      const parts = text.split(" / ");
      const judged: [string, number[] | undefined][] =
        parts.length === 2 && r.series[`${key} p50`]
          ? [
              [parts[0]!, r.series[`${key} p50`]],
              [parts[1]!, r.series[`${key} p99`]],
            ]
          : parts.length === 1 && r.series[key]
            ? [[parts[0]!, r.series[key]]]
            : [];
      for (const [part, xs] of judged) {
        const shown = leading(part);
        if (shown !== undefined && !agrees(shown, xs))
          out.push(
            `${run.when} "${r.name.slice(0, 60)}…" ${cell}: ${shown} is not the median of ${key} (${spread(xs ?? []).median})`,
          );
      }
    }
  return out;
}
