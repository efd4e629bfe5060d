import { expect } from "chai";
import { cellDisagreements, growthTable, runTable } from "./report.js";
import type { RunResults } from "./stats.js";

const run = (rows: RunResults["rows"]): RunResults => ({
  title: "Governor benchmarks — 2026-12-07T11:00Z",
  when: "2026-12-07T11:00:00.000Z",
  quick: false,
  node: "v20.20.2",
  cores: 2,
  rounds: { rounds: 8, seconds: 3, warmupSeconds: 1 },
  noise: "noise check passed",
  rows,
});

describe("bench report: the tables a run's raw results render to", () => {
  it("renders each row's cells as the run printed them, and refuses a row kept without them", () => {
    const table = runTable(
      run([
        {
          name: "direct API, 1 conn: req/s",
          series: { Governor: [1, 2] },
          figure: "2",
          baseline: "3",
          ratio: "0.67",
        },
      ]),
    );
    expect(table.split("\n").at(-1)).to.equal("| direct API, 1 conn: req/s | 2 | 3 | 0.67 |");
    expect(() => runTable(run([{ name: "old row", series: {} }]))).to.throw(/old row.*no rendered cells/);
  });

  it("renders the growth table from the series, a size that ran out of heap as how far it got", () => {
    const g = (n: number, series: Record<string, number>) => ({
      name: `how cost grows: ${n} MetricMappings: …`,
      series: Object.fromEntries(Object.entries({ mappings: n, ...series }).map(([k, v]) => [k, [v]])),
    });
    const table = growthTable(
      run([
        { name: "noise check", series: { Governor: [1] } },
        g(100_000, { ready: 0, afterS: 60.009 }),
        g(1000, { rssMB: 137.79, cpuPercent: 3.896, readyS: 5.12, discoveryP99Ms: 0.6046 }),
        g(1000, { servedS: 1.603, readyS: 5.12, restartS: 1.675 }),
      ]),
    );
    expect(table.split("\n").slice(2)).to.deep.equal([
      "| 1,000 | 138 | 3.9 | 1.6 / 5.1 | 1.7 | 0.60 |",
      "| 100,000 | — | — | out of heap within 60 s, 0 Ready | — | — |",
    ]);
    const raised = growthTable(
      run([
        {
          ...g(50_000, { rssMB: 1010, readyS: 266.4 }),
          name: "how cost grows: 50000 MetricMappings (--max-old-space-size=1920): …",
        },
      ]),
    );
    expect(raised.split("\n")[2]).to.match(/^\| 50,000 \(`--max-old-space-size=1920`\) \| 1010 \|/);
  });

  it("finds a cell edited by hand: its figure is no longer the median of the series kept beside it", () => {
    const row = (figure: string) => ({
      name: "CPU per sample: ms",
      series: {
        Governor: [0.54, 0.65, 0.8],
        "baseline p50": [1, 2, 3],
        "baseline p99": [9, 10, 11],
        ratio: [0.5],
      },
      figure,
      baseline: "2.00 (1.00–3.00) / 10.0 (9.00–11.0)",
      ratio: "0.50 (0.50–0.50)",
    });
    expect(cellDisagreements(run([row("0.65 (0.54–0.80)")]))).to.deep.equal([]);
    expect(cellDisagreements(run([row("0.55 (0.44–0.70)")]))).to.have.length(1);
    expect(cellDisagreements(run([{ ...row("0.65"), baseline: "2.00 / 12.0" }]))[0]).to.match(
      /baseline: 12.0 is not the median of baseline/,
    );
  });
});
