/**
 * `npm run figures`: renders every table of figures in docs/ from the raw results it names
 * (issue #43: every published figure from stored raw data, rendered by a script). A doc marks
 * a table with the view that renders it and the JSON it comes from:
 *
 *   <!-- figures: bench-table bench/results/2026-12-06T1813Z.json -->
 *   …rendered…
 *   <!-- /figures -->
 *
 *   npm run figures               render every marked table from its JSON
 *   npm run figures -- --take     first keep the suites' latest figures (test/results/latest/*.json)
 *                                 as the docs/figures/*.json the docs name, if their run passed whole
 *   npm run figures -- --check    change nothing; fail when a table is not what its JSON renders,
 *                                 when a figure in a doc's prose is in none of its tables, or when
 *                                 a bench table's cell is not the median of its kept series
 *                                 (`npm run verify` runs this)
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import prettier from "prettier";
import { cellDisagreements, growthTable, runTable } from "../bench/report.js";
import type { RunResults } from "../bench/stats.js";
import { type ForecastReplayFigures, forecastReplayTable } from "../bench/forecast-replay.js";
import {
  type AttackFigures,
  type InClusterFigures,
  LATEST_FIGURES,
  attacksTable,
  inClusterTable,
  untracedFigures,
} from "../test/support/figures.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The docs that hold marked tables. */
const DOCS = [
  "docs/performance.md",
  "docs/hostile-input.md",
  "docs/reliability.md",
  "docs/formulas-schedules-forecasts.md",
  "docs/opentelemetry.md",
];

/** How a table is rendered from its JSON, and what is wrong in the JSON itself. */
interface View {
  render: (json: unknown, source: string) => string;
  check?: (json: unknown) => string[];
}
const benchTable: View = {
  render: (j, source) => `Raw results: \`${source}\`.\n\n${runTable(j as RunResults)}`,
  check: (j) => cellDisagreements(j as RunResults),
};
const VIEWS: Record<string, View> = {
  "bench-table": benchTable,
  /** The latest full run's table, which a full `npm run bench` points at its own results. */
  "latest-run": benchTable,
  growth: { render: (j) => growthTable(j as RunResults) },
  attacks: { render: (j, source) => attacksTable(j as AttackFigures, source) },
  "in-cluster": { render: (j, source) => inClusterTable(j as InClusterFigures, source) },
  "forecast-replay": { render: (j, source) => forecastReplayTable(j as ForecastReplayFigures, source) },
};

const BLOCK = /<!-- figures: (\S+) (\S+) -->\n[\s\S]*?<!-- \/figures -->/g;

/** Fails on a marker without its pair (a lost close would swallow the text up to the next one). */
export function checkMarkers(doc: string, text: string): void {
  let open: number | undefined;
  text.split("\n").forEach((line, i) => {
    if (line.startsWith("<!-- figures:")) {
      if (open !== undefined)
        throw new Error(`${doc}:${open + 1}: a figures block not closed before line ${i + 1}`);
      if (!/^<!-- figures: \S+ \S+ -->$/.test(line))
        throw new Error(`${doc}:${i + 1}: not <!-- figures: VIEW PATH -->`);
      open = i;
    } else if (line.startsWith("<!-- /figures")) {
      if (open === undefined) throw new Error(`${doc}:${i + 1}: <!-- /figures --> without its opening`);
      open = undefined;
    }
  });
  if (open !== undefined) throw new Error(`${doc}:${open + 1}: a figures block never closed`);
}

/** Copies a suite's latest figures over the kept ones, if the run was whole and passed. */
export function take(latest: string, kept: string): void {
  if (!existsSync(latest)) return;
  const figures = JSON.parse(readFileSync(latest, "utf8")) as { complete?: boolean };
  if (figures.complete !== true)
    throw new Error(`${latest}: not taken, the run that wrote it did not pass every test (or ran only some)`);
  mkdirSync(dirname(kept), { recursive: true });
  copyFileSync(latest, kept);
}

/** The doc with every marked table rendered from its JSON (and formatted as prettier does). */
async function rendered(
  doc: string,
  takeLatest: boolean,
): Promise<{ before: string; text: string; blocks: string[]; problems: string[] }> {
  const path = join(ROOT, doc);
  const blocks: string[] = [];
  const problems: string[] = [];
  const before = readFileSync(path, "utf8");
  checkMarkers(doc, before);
  const text = before.replace(BLOCK, (_all, view: string, source: string) => {
    const v = VIEWS[view];
    if (!v) throw new Error(`${doc}: no figures view "${view}" (one of ${Object.keys(VIEWS).join(", ")})`);
    const kept = join(ROOT, source);
    if (takeLatest && source.startsWith("docs/figures/")) take(join(LATEST_FIGURES, basename(source)), kept);
    if (!existsSync(kept)) throw new Error(`${doc}: ${source} does not exist`);
    const json: unknown = JSON.parse(readFileSync(kept, "utf8"));
    problems.push(...(v.check?.(json) ?? []).map((p) => `${source}: ${p}`));
    const table = v.render(json, source);
    blocks.push(table);
    return `<!-- figures: ${view} ${source} -->\n\n${table}\n\n<!-- /figures -->`;
  });
  const formatted = await prettier.format(text, {
    ...(await prettier.resolveConfig(path)),
    filepath: path,
  });
  return { before, text: formatted, blocks, problems };
}

/**
 * Renders (or, with `check`, compares) the marked tables of `docs`; returns what is wrong:
 * tables that are not what their JSON renders, bench cells that are not their series'
 * medians, and figures in prose that no table holds. A block without its close throws.
 */
export async function renderFigures(
  opts: { check?: boolean; take?: boolean; docs?: string[] } = {},
): Promise<string[]> {
  const wrong: string[] = [];
  for (const doc of opts.docs ?? DOCS) {
    // Check mode writes nothing, kept figures included.
    const { before, text, blocks, problems } = await rendered(doc, !opts.check && (opts.take ?? false));
    wrong.push(...problems);
    if (text !== before) {
      if (opts.check) wrong.push(`${doc}: a table is not what its JSON renders (run: npm run figures)`);
      else writeFileSync(join(ROOT, doc), text);
    }
    if (opts.check)
      for (const f of untracedFigures(text, blocks))
        wrong.push(`${doc}:${f.line}: "${f.figure}" is in none of the page's tables of figures`);
  }
  return wrong;
}

/** Points a doc's table of `view` at another JSON (a full bench run at its own results); throws if it has none. */
export function pointTo(doc: string, view: string, source: string): void {
  const path = join(ROOT, doc);
  const text = readFileSync(path, "utf8");
  const marker = new RegExp(`<!-- figures: ${view} \\S+ -->`);
  if (!marker.test(text)) throw new Error(`${doc}: no <!-- figures: ${view} … --> to point at ${source}`);
  writeFileSync(path, text.replace(marker, `<!-- figures: ${view} ${source} -->`));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const wrong = await renderFigures({ check: args.includes("--check"), take: args.includes("--take") });
  if (wrong.length) {
    console.error(wrong.join("\n"));
    process.exitCode = 1;
  }
}
