import { expect } from "chai";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkMarkers, renderFigures, take } from "../../hack/figures.js";
import { attacksTable, inClusterTable, untracedFigures } from "./figures.js";

describe("figures: docs' tables rendered from kept raw figures", () => {
  it("renders the attack table from the suite's raw figures: failures, p99 against the unloaded p99, RSS", () => {
    const table = attacksTable(
      {
        time: "2026-12-07T09:05:31.000Z",
        complete: true,
        baselineP99Ms: 10,
        rows: [
          { attack: "a `|` in a name", got: "refused", failed: 0, rssMB: 270 },
          { attack: "a flood", got: "200 or 4xx", failed: 2, p99Ms: 25, loop: "3 ms (9 ms)", rssMB: 301 },
          { attack: "through the aggregator", got: "429", p99: "1.2× (1.0–1.4)" },
        ],
      },
      "docs/figures/attacks.json",
    );
    expect(table.split("\n")).to.deep.equal([
      "From the run of 2026-12-07 09:05Z (`docs/figures/attacks.json`); the legitimate metric's p99 with nothing attacking: 10 ms.",
      "",
      "| attack | what it got | legitimate metric while it ran | Governor's own event-loop delay, p99 (max), flooded against quiet | Governor peak RSS |",
      "| --- | --- | --- | --- | --- |",
      "| a `\\|` in a name | refused | 0 failed |  | 270 MiB |",
      "| a flood | 200 or 4xx | 2 failed, p99 25 ms (2.5× unloaded) | 3 ms (9 ms) | 301 MiB |",
      "| through the aggregator | 429 | 0 failed, p99 1.2× (1.0–1.4) |  |  |",
    ]);
  });
});

describe("figures: a doc's prose quotes only figures its tables hold", () => {
  const tables = ["| row | 0.59 (0.33–1.68) | 1,221 req/s | 12.88 |"];

  it("finds a figure edited by hand in prose, and passes the ones a table holds", () => {
    const doc = ["Governor serves 0.59× (0.33–1.68) the requests,", "1,221 req/s and 12.9 % of a core."].join(
      "\n",
    );
    expect(untracedFigures(doc, tables)).to.deep.equal([{ figure: "12.9", line: 2 }]);
  });

  it("leaves goals, settings in code, link targets, dates and a section marked as settings alone", () => {
    const doc = [
      "Goal ≥ 0.8× and p99 < 5.5 ms, inside `512Mi` and `--max-old-space-size=384`;",
      "see [ADR](adr/0019-memory-1.5.md), run of 2026-12-07 06:33Z, HTTP/1.1.",
      "<!-- not figures --> a lease of 15.5 s",
      "",
      "and 17.4 s in the same section.",
      "## Next",
      "But 17.4 s here is a figure.",
    ].join("\n");
    expect(untracedFigures(doc, tables)).to.deep.equal([{ figure: "17.4", line: 7 }]);
  });

  it("reads a whole number with a unit as a figure, and ignores the tables' own lines", () => {
    const doc = ["| 686 ms | in a table line |", "p99 686 ms against 127 ms"].join("\n");
    expect(untracedFigures(doc, ["| row | 127 |"]).map((u) => u.figure)).to.deep.equal(["686"]);
  });

  it("holds a cell's numbers, not its row's name or the table's title, and a range's ends only as that range", () => {
    const table = ["From the run of 2026-12-07 (110 min).", "", "| 16 conn: req/s | 0.59 (0.33–1.68) |"].join(
      "\n",
    );
    const doc = [
      "0.59× (0.33–1.68) at 16 connections;",
      "not 0.33 ms alone, nor 110 s, nor 16.5 ms, nor (0.33–1.67).",
    ].join("\n");
    expect(untracedFigures(doc, [table]).map((u) => u.figure)).to.deep.equal([
      "0.33",
      "110",
      "16.5",
      "0.33",
      "1.67",
    ]);
  });
});

describe("figures: the in-cluster suite's faults as docs/reliability.md shows them", () => {
  it("renders failures with their reasons, latencies and the goal the test judged", () => {
    const table = inClusterTable(
      {
        time: "2026-12-07T11:00:00.000Z",
        complete: true,
        setup: "Kubernetes 1.37.2",
        rate: 50,
        rows: [
          {
            fault: "a Node lost",
            sent: 1852,
            failed: 3,
            reasons: { timeout: 3 },
            p50Ms: 3,
            p99Ms: 9,
            maxMs: 10031,
            measured: "8 connections | open",
            goal: "met",
          },
        ],
      },
      "docs/figures/in-cluster.json",
    );
    expect(table.split("\n").at(-1)).to.equal(
      "| a Node lost | **3** of 1,852 (3× timeout) | 3 / 9 / 10,031 ms | 8 connections \\| open | met |",
    );
  });
});

describe("figures: what npm run figures refuses", () => {
  const dir = mkdtempSync(join(tmpdir(), "figures-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps a suite's latest figures only from a run that passed whole", () => {
    const latest = join(dir, "in-cluster.json");
    const kept = join(dir, "kept", "in-cluster.json");
    writeFileSync(latest, JSON.stringify({ complete: false, rows: [] }));
    expect(() => take(latest, kept)).to.throw(/not taken/);
    expect(existsSync(kept)).to.equal(false);
    writeFileSync(latest, JSON.stringify({ complete: true, rows: [] }));
    take(latest, kept);
    expect(JSON.parse(readFileSync(kept, "utf8"))).to.deep.equal({ complete: true, rows: [] });
  });

  it("fails on a figures block whose close is lost, instead of swallowing the text up to the next one", () => {
    const block = (path: string) => [`<!-- figures: bench-table ${path} -->`, "table", "<!-- /figures -->"];
    expect(() =>
      checkMarkers("doc.md", [...block("a.json"), "prose", ...block("b.json")].join("\n")),
    ).not.to.throw();
    const lost = [...block("a.json").slice(0, 2), "prose", ...block("b.json")].join("\n");
    expect(() => checkMarkers("doc.md", lost)).to.throw(/doc.md:1: a figures block not closed before line 4/);
    expect(() => checkMarkers("doc.md", ["<!-- /figures -->"].join("\n"))).to.throw(/without its opening/);
    expect(() => checkMarkers("doc.md", block("a.json").slice(0, 2).join("\n"))).to.throw(/never closed/);
  });
});

describe("figures: the docs as committed", () => {
  it("show exactly what their kept raw results render to, and quote no figure their tables lack", async function () {
    this.timeout(30_000);
    expect(await renderFigures({ check: true })).to.deep.equal([]);
  });
});
