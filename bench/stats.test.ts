import { expect } from "chai";
import { renderComparison } from "./compare.js";
import { baselineCheck } from "./direct.js";
import {
  compareRuns,
  loadBound,
  figure,
  histogramDelta,
  histogramQuantile,
  overlaps,
  pairedRatios,
  percentile,
  readHistogram,
  type RunResults,
  showSpread,
  spread,
} from "./stats.js";

describe("bench statistics", () => {
  it("reads the HPA controller's fetch-latency histogram and its quantiles between two scrapes", () => {
    const scrape = (fast: number, slow: number, failed: number) =>
      [
        "# TYPE x_seconds histogram",
        ...[
          ["none", fast, slow],
          ["scale_up", 1, 1],
        ].flatMap(([action, a, b]) => [
          `x_seconds_bucket{action="${action}",error="none",metric_type="External",le="0.001"} 0`,
          `x_seconds_bucket{action="${action}",error="none",metric_type="External",le="0.002"} ${a}`,
          `x_seconds_bucket{action="${action}",error="none",metric_type="External",le="0.004"} ${Number(a) + Number(b)}`,
          `x_seconds_bucket{action="${action}",error="none",metric_type="External",le="+Inf"} ${Number(a) + Number(b)}`,
          `x_seconds_sum{action="${action}",error="none",metric_type="External"} ${Number(a) * 0.0015 + Number(b) * 0.003}`,
          `x_seconds_count{action="${action}",error="none",metric_type="External"} ${Number(a) + Number(b)}`,
        ]),
        `x_seconds_bucket{action="none",error="internal",metric_type="External",le="+Inf"} ${failed}`,
        `x_seconds_count{action="none",error="internal",metric_type="External"} ${failed}`,
      ].join("\n");
    const labels = { error: "none", metric_type: "External" };
    const before = readHistogram(scrape(10, 0, 5), "x_seconds", labels);
    expect(before.count).to.equal(12); // both actions, not the failed fetches
    const d = histogramDelta(before, readHistogram(scrape(19, 80, 50), "x_seconds", labels));
    expect(d.count).to.equal(89); // 9 fast, 80 slow
    expect(d.sum * 1000).to.be.closeTo(9 * 1.5 + 80 * 3, 1e-6);
    expect(histogramQuantile(d, 0.05) * 1000).to.be.closeTo(1 + (0.05 * 89) / 9, 1e-9);
    expect(histogramQuantile(d, 0.99) * 1000).to.be.closeTo(2 + (2 * (0.99 * 89 - 9)) / 80, 1e-9);
    expect(histogramQuantile(histogramDelta(d, d), 0.5)).to.be.NaN;
  });

  it("tells a side held by the load generator from one held by its server", () => {
    // the 16:07Z run's bare server at 16 connections: load generator 0.94, server 0.61
    expect(loadBound([0.61, 0.58, 0.65], [0.95, 0.94, 0.92])).to.equal(true);
    // the noise check of the same run: both near a core — the server is the limit too
    expect(loadBound([0.86, 0.85, 0.84], [0.92, 0.91, 0.92])).to.equal(false);
    // through the aggregator: neither near a core
    expect(loadBound([0.25, 0.24], [0.14, 0.14])).to.equal(false);
  });

  it("summarises rounds as the median with min–max, ignoring rounds that measured nothing", () => {
    expect(spread([5, 1, 3])).to.deep.equal({ median: 3, min: 1, max: 5 });
    expect(spread([4, 1, 3, 2])).to.deep.equal({ median: 2.5, min: 1, max: 4 });
    expect(spread([2, NaN, 4])).to.deep.equal({ median: 3, min: 2, max: 4 });
    expect(Number.isNaN(spread([]).median)).to.equal(true);
  });

  it("takes percentiles by nearest rank", () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).to.equal(50);
    expect(percentile(xs, 99)).to.equal(99);
    expect(percentile(xs, 100)).to.equal(100);
    expect(percentile([7], 99)).to.equal(7);
  });

  it("pairs ratios round by round, so a slow round slows both sides and not the ratio", () => {
    // Round 2 ran while the machine was busy: both sides halved, the ratio did not move.
    expect(pairedRatios([80, 40, 80], [100, 50, 100])).to.deep.equal([0.8, 0.8, 0.8]);
    expect(() => pairedRatios([1, 2], [1])).to.throw(/differ in length/);
  });

  it("prints sub-millisecond latencies with their digits, not as 0", () => {
    expect(figure(0.213)).to.equal("0.21");
    expect(figure(12.34)).to.equal("12.3");
    expect(figure(27805.4)).to.equal("27805");
    expect(showSpread([0.21, 0.2, 0.25])).to.equal("0.21 (0.20–0.25)");
    expect(showSpread([0.71, 0.69, 0.74], 2)).to.equal("0.71 (0.69–0.74)");
    expect(showSpread([1, 1, 1])).to.equal("1.00");
  });

  it("calls a change beyond the spread only when the two runs' ranges do not overlap", () => {
    expect(overlaps({ median: 1, min: 0.9, max: 1.1 }, { median: 1.05, min: 1.0, max: 1.2 })).to.equal(true);
    expect(overlaps({ median: 1, min: 0.9, max: 1.1 }, { median: 1.3, min: 1.2, max: 1.4 })).to.equal(false);
  });

  it("compares two runs series by series, matching rows by name and skipping rows one run lacks", () => {
    const run = (rows: RunResults["rows"], title: string): RunResults => ({
      title,
      when: "",
      quick: false,
      node: "v20",
      cores: 2,
      rounds: { rounds: 3, seconds: 1, warmupSeconds: 1 },
      noise: "noise check passed",
      rows,
    });
    const before = run(
      [
        { name: "direct", series: { ratio: [0.7, 0.72, 0.71] } },
        { name: "gone", series: { ratio: [1] } },
        { name: "10,000 mappings: Ready s", series: { seconds: [35.1] } },
      ],
      "first",
    );
    const after = run(
      [
        { name: "direct", series: { ratio: [0.9, 0.92, 0.91] } },
        { name: "new", series: { ratio: [1] } },
        { name: "10,000 mappings: Ready s", series: { seconds: [43.4] } },
      ],
      "second",
    );
    const [change, single, ...rest] = compareRuns(before.rows, after.rows);
    expect(rest).to.have.length(0);
    // One measurement a side has no spread: not judged a change, whatever the two numbers.
    expect(single!.beyondSpread).to.equal(undefined);
    expect(single!.counts).to.deep.equal({ before: 1, after: 1 });
    expect(change!.row).to.equal("direct");
    expect(change!.change).to.be.closeTo(0.91 / 0.71 - 1, 1e-9);
    expect(change!.beyondSpread).to.equal(true);
    const table = renderComparison(before, after);
    expect(table).to.contain("| direct | ratio | 0.71 (0.70–0.72) | 0.91 (0.90–0.92) | +28.2 % | **yes** |");
    expect(table).to.contain(
      "| 10,000 mappings: Ready s | seconds | 35.1 | 43.4 | +23.6 % | single: not judged |",
    );
    expect(table).to.contain("1 of 1 series changed beyond their spread; 1 measured once");
  });

  it("marks the direct-API ratios suspect when their bare server strays from the noise check's (13:14Z: 19,622 against 33,608 req/s)", () => {
    const rows = (direct: number[]) => [
      {
        name: "noise check: the same bare server twice, 16 conn: req/s",
        figure: "",
        baseline: "",
        ratio: "0.99",
        series: { baseline: [33608, 31208, 35314] },
      },
      {
        name: "direct API, warm, 16 conn: req/s",
        figure: "",
        baseline: "",
        ratio: "0.89",
        series: { baseline: direct },
      },
      {
        name: "direct API, warm, 64 conn: req/s",
        figure: "",
        baseline: "",
        ratio: "0.96",
        series: { baseline: direct },
      },
    ];
    const drifted = rows([19622, 17856, 21741]);
    expect(baselineCheck(drifted)).to.match(/^baseline check: .* ran −42 % .* \(the machine's speed moved/);
    expect(drifted[1]!.ratio).to.equal("0.89");
    const steady = rows([34112, 32192, 34817]);
    expect(baselineCheck(steady)).to.match(
      /^baseline check: .* ran \+1 % from the noise check's at 16 conn$/,
    );
  });
});
