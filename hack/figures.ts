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
 *                                 as the docs/figures/*.json the docs name
 *   npm run figures -- --check    change nothing; fail when a table is not what its JSON renders,
 *                                 or when a figure in a doc's prose is in none of its tables
 *                                 (`npm run verify` runs this)
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import prettier from "prettier";
import { growthTable, runTable } from "../bench/report.js";
import type { RunResults } from "../bench/stats.js";
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
const DOCS = ["docs/performance.md", "docs/hostile-input.md", "docs/reliability.md"];

/** Each view: how a table is rendered from its JSON. */
const benchTable = (j: unknown, source: string) =>
  `Raw results: \`${source}\`.\n\n${runTable(j as RunResults)}`;
const VIEWS: Record<string, (json: unknown, source: string) => string> = {
  "bench-table": benchTable,
  /** The latest full run's table, which a full `npm run bench` points at its own results. */
  "latest-run": benchTable,
  growth: (j) => growthTable(j as RunResults),
  attacks: (j, source) => attacksTable(j as AttackFigures, source),
  "in-cluster": (j, source) => inClusterTable(j as InClusterFigures, source),
};

const BLOCK = /<!-- figures: (\S+) (\S+) -->\n[\s\S]*?<!-- \/figures -->/g;

/** The doc with every marked table rendered from its JSON (and formatted as prettier does). */
async function rendered(doc: string, take: boolean): Promise<{ text: string; blocks: string[] }> {
  const path = join(ROOT, doc);
  const blocks: string[] = [];
  const text = readFileSync(path, "utf8").replace(BLOCK, (_all, view: string, source: string) => {
    const render = VIEWS[view];
    if (!render)
      throw new Error(`${doc}: no figures view "${view}" (one of ${Object.keys(VIEWS).join(", ")})`);
    const kept = join(ROOT, source);
    const latest = join(LATEST_FIGURES, basename(source));
    if (take && source.startsWith("docs/figures/") && existsSync(latest)) {
      mkdirSync(dirname(kept), { recursive: true });
      copyFileSync(latest, kept);
    }
    if (!existsSync(kept)) throw new Error(`${doc}: ${source} does not exist`);
    const table = render(JSON.parse(readFileSync(kept, "utf8")), source);
    blocks.push(table);
    return `<!-- figures: ${view} ${source} -->\n\n${table}\n\n<!-- /figures -->`;
  });
  const formatted = await prettier.format(text, {
    ...(await prettier.resolveConfig(path)),
    filepath: path,
  });
  return { text: formatted, blocks };
}

/**
 * Renders (or, with `check`, compares) the marked tables of `docs`; returns what is wrong:
 * tables that are not what their JSON renders, and figures in prose that no table holds.
 */
export async function renderFigures(
  opts: { check?: boolean; take?: boolean; docs?: string[] } = {},
): Promise<string[]> {
  const wrong: string[] = [];
  for (const doc of opts.docs ?? DOCS) {
    const { text, blocks } = await rendered(doc, opts.take ?? false);
    const before = readFileSync(join(ROOT, doc), "utf8");
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

/** Points a doc's table of `view` at another JSON (a full bench run at its own results). */
export function pointTo(doc: string, view: string, source: string): void {
  const path = join(ROOT, doc);
  const text = readFileSync(path, "utf8");
  const next = text.replace(
    new RegExp(`<!-- figures: ${view} \\S+ -->`),
    `<!-- figures: ${view} ${source} -->`,
  );
  writeFileSync(path, next);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const wrong = await renderFigures({ check: args.includes("--check"), take: args.includes("--take") });
  if (wrong.length) {
    console.error(wrong.join("\n"));
    process.exitCode = 1;
  }
}
