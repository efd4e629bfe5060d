/**
 * Raw figures of the test suites that docs quote, and the tables docs render from them
 * (issue #43): a suite writes what it measured to `test/results/latest/<suite>.json` (not
 * kept in git); `npm run figures -- --take` copies it to `docs/figures/<suite>.json` (kept)
 * and renders the doc's table from it, and `npm run verify` fails when a doc's table is not
 * what its kept JSON renders to, or when its prose quotes a figure none of its tables holds
 * (hack/figures.ts).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LoadReport } from "./in-cluster.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Where suites write their latest figures. */
export const LATEST_FIGURES = join(ROOT, "test/results/latest");

/** Whether every test of the suite `ctx` (a mocha hook's `this`) belongs to ran and passed. */
export function suitePassed(ctx: Mocha.Context): boolean {
  const tests = ctx.test?.parent?.tests ?? [];
  return tests.length > 0 && tests.every((t) => t.state === "passed");
}

/** Writes a suite's figures to `{@link LATEST_FIGURES}/<name>.json`. */
export function writeFigures(name: string, figures: object): void {
  mkdirSync(LATEST_FIGURES, { recursive: true });
  writeFileSync(join(LATEST_FIGURES, `${name}.json`), `${JSON.stringify(figures, null, 2)}\n`);
}

const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");
const when = (iso: string) => `${iso.slice(0, 16).replace("T", " ")}Z`;

/** One attack of test/e2e/attacks.test.ts and what it got. */
export interface AttackRow {
  attack: string;
  got: string;
  /** The legitimate metric's p99 while the attack ran, in ms (when enough requests ran). */
  p99Ms?: number;
  /** Or the flood rounds' ratio of that p99, as text. */
  p99?: string;
  /** Governor's event-loop delay while a flood ran, against quiet windows. */
  loop?: string;
  /** The legitimate metric's failed reads while it ran. */
  failed?: number;
  /** Governor's peak RSS while it ran. */
  rssMB?: number;
}

/** What the attack suite measured. */
export interface AttackFigures {
  /** When it ran (ISO 8601). */
  time: string;
  /** Whether every test of the suite ran and passed (`npm run figures -- --take` keeps nothing else). */
  complete: boolean;
  /** The legitimate metric's p99 with nothing attacking, in ms. */
  baselineP99Ms: number;
  rows: AttackRow[];
}

/** The markdown table of {@link AttackFigures}, as docs/hostile-input.md shows it (before formatting). */
export function attacksTable(f: AttackFigures, source: string): string {
  const legit = (r: AttackRow) => {
    const p99 =
      r.p99 ??
      (r.p99Ms === undefined
        ? undefined
        : `${r.p99Ms} ms (${(r.p99Ms / f.baselineP99Ms).toFixed(1)}× unloaded)`);
    return [`${r.failed ?? 0} failed`, ...(p99 ? [`p99 ${p99}`] : [])].join(", ");
  };
  return [
    `From the run of ${when(f.time)} (\`${source}\`); the legitimate metric's p99 with nothing attacking: ${f.baselineP99Ms} ms.`,
    "",
    "| attack | what it got | legitimate metric while it ran | Governor's own event-loop delay, p99 (max), flooded against quiet | Governor peak RSS |",
    "| --- | --- | --- | --- | --- |",
    ...f.rows.map(
      (r) =>
        `| ${cell(r.attack)} | ${cell(r.got)} | ${cell(legit(r))} | ${cell(r.loop ?? "")} | ${r.rssMB === undefined ? "" : `${r.rssMB} MiB`} |`,
    ),
  ].join("\n");
}

/** One fault of test/e2e/in-cluster.test.ts, and what the steady load of metric requests saw meanwhile. */
export interface FaultRow extends Omit<LoadReport, "failedSentAt"> {
  fault: string;
  /** What else the test measured, in words with its figures. */
  measured: string;
  /** The goal and whether it was met, as the test judged it. */
  goal: string;
}

/** What the in-cluster suite measured. */
export interface InClusterFigures {
  time: string;
  /** Whether every test of the suite ran and passed (`npm run figures -- --take` keeps nothing else). */
  complete: boolean;
  /** Kubernetes' version and how kube-apiserver routed to Governor. */
  setup: string;
  /** Metric requests per second sent through the aggregator while each fault ran. */
  rate: number;
  rows: FaultRow[];
}

/** The markdown table of {@link InClusterFigures}, as docs/reliability.md shows it. */
export function inClusterTable(f: InClusterFigures, source: string): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const failed = (r: FaultRow) => {
    const reasons = Object.entries(r.reasons).map(([k, v]) => `${n(v)}× ${k}`);
    return `**${n(r.failed)}** of ${n(r.sent)}${reasons.length ? ` (${reasons.join(", ")})` : ""}`;
  };
  return [
    `From the run of ${when(f.time)} (\`${source}\`; ${f.setup}; ${f.rate} metric requests/s through the aggregator throughout).`,
    "",
    "| fault | failed requests | latency p50 / p99 / max | what else was measured | goal |",
    "| --- | --- | --- | --- | --- |",
    ...f.rows.map(
      (r) =>
        `| ${cell(r.fault)} | ${failed(r)} | ${n(r.p50Ms)} / ${n(r.p99Ms)} / ${n(r.maxMs)} ms | ${cell(r.measured)} | ${cell(r.goal)} |`,
    ),
  ].join("\n");
}

/** A figure quoted in a doc's prose, and its line. */
export interface Untraced {
  figure: string;
  line: number;
}

/**
 * Figures in a doc's prose that none of its rendered tables holds: a number with a
 * decimal point, a percentage, a ratio (`2.4×`) or a number with a unit of time, size or
 * rate. Skipped: bounds and goals (after ≥, ≤, <, >), the tables themselves, code, link
 * targets, HTML comments, and a section's text after `<!-- not figures -->` up to the next
 * heading (for numbers that are settings, not measurements). A figure is found when the same
 * digits, thousands separators aside, are a whole number in a cell of one of the tables (not
 * a row's name, a title or a note); a range `a–b` only as the same range in a cell.
 */
export function untracedFigures(doc: string, tables: string[]): Untraced[] {
  const digits = (s: string) => s.replaceAll(",", "");
  const NUMBER = /\d[\d,]*(?:\.\d+)?/g;
  const RANGE = /(\d[\d,]*(?:\.\d+)?)–(\d[\d,]*(?:\.\d+)?)/g;
  // What a table holds: the numbers in its cells (not its row names, title or notes), a
  // range's ends only as that range.
  const held = new Set<string>();
  const ranges = new Set<string>();
  for (const t of tables)
    for (const row of t.split("\n")) {
      if (!row.startsWith("|") || /^\|[\s|:-]+\|$/.test(row)) continue;
      for (const cell of row.split(/(?<!\\)\|/).slice(2, -1)) {
        const rest = cell.replace(
          RANGE,
          (_m, a: string, b: string) => (ranges.add(`${digits(a)}–${digits(b)}`), " "),
        );
        for (const m of rest.matchAll(NUMBER)) held.add(digits(m[0]));
      }
    }
  const out: Untraced[] = [];
  const lines = doc.split("\n");
  let fenced = false;
  let inTable = false;
  let skipping = false;
  lines.forEach((raw, i) => {
    if (/^\s*```/.test(raw)) fenced = !fenced;
    if (raw.startsWith("<!-- figures:")) inTable = true;
    if (raw.startsWith("<!-- /figures -->")) inTable = false;
    if (raw.startsWith("#")) skipping = false;
    if (raw.includes("<!-- not figures -->")) skipping = true;
    if (fenced || inTable || skipping || raw.startsWith("|")) return;
    const prose = raw
      .replace(/`[^`]*`/g, " ")
      .replace(/\]\([^)]*\)/g, "]")
      .replace(/<!--.*?-->/g, " ")
      .replace(/\d{4}-\d\d-\d\d[T ]\d\d:?\d\dZ?/g, " ")
      .replace(RANGE, (m, a: string, b: string) => (ranges.has(`${digits(a)}–${digits(b)}`) ? " " : m));
    const figure =
      /(?<![\w./-]|[≥≤<>]\s?)(\d[\d,]*\.\d+|\d[\d,]*(?=\s?(?:%|×|ms\b|s\b|µs\b|MB\b|MiB\b|KB\b|KiB\b|GB\b|req\/s\b)))/g;
    for (const m of prose.matchAll(figure))
      if (!held.has(digits(m[1]!))) out.push({ figure: m[1]!, line: i + 1 });
  });
  return out;
}
