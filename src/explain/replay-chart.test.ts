import { expect } from "chai";
import { replayChart } from "./replay-chart.js";

const T0 = Date.UTC(2026, 11, 7, 2, 0, 0);
const step = (s: number, value: number | undefined, replicas: number, actual?: number) => ({
  atMs: T0 + s * 1000,
  values: [value],
  replicas,
  reason: "",
  ...(actual !== undefined ? { actual } : {}),
});

describe("the replay chart", () => {
  it("draws a per-replica target as the capacity of each moment's replicas, and says so", () => {
    const svg = replayChart(
      "t",
      [{ name: "queue", target: 10, perReplica: true }],
      [step(0, 10, 1), step(15, 60, 5)],
    );
    expect(svg).to.contain(">target × replicas</text>");
    // The dashed capacity steps from 10 (1 replica) to 50 (5 replicas): two heights.
    const dashed = /<polyline points="([^"]+)"[^>]*stroke-dasharray/.exec(svg)![1]!.split(" ");
    expect(new Set(dashed.map((p) => p.split(",")[1])).size).to.equal(2);
  });

  it("breaks a metric's line where the history has no value, and draws the workload's replicas where known", () => {
    const svg = replayChart(
      "t",
      [{ name: "rps", target: 10 }],
      [step(0, 5, 2, 2), step(15, undefined, 2, 2), step(30, 5, 2, 3)],
    );
    expect(svg.match(/<polyline [^>]*stroke="#d62728"/g)).to.have.length(2); // two runs of the metric
    expect(svg).to.contain(">actual</text>");
  });

  it("escapes what came from the cluster", () => {
    const svg = replayChart('<script>"x"</script>', [{ name: "a<b>&c", target: 1 }], [step(0, 1, 1)]);
    expect(svg).to.not.contain("<script>");
    expect(svg).to.contain("&lt;script&gt;&quot;x&quot;&lt;/script&gt;");
    expect(svg).to.contain("a&lt;b&gt;&amp;c");
  });
});
