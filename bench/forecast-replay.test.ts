import { expect } from "chai";
import type { ReplayStep } from "../src/autoscaling/replay.js";
import { diurnalTrace, outcome, readyReplicas } from "./forecast-replay.js";

const START = Date.parse("2026-11-30T00:00:00Z");
const steps = (replicas: number[]): ReplayStep[] =>
  replicas.map((r, i) => ({ atMs: START + i * 15_000, values: [], replicas: r, reason: "" }));

describe("the forecast replay's model (bench/forecast-replay.ts)", () => {
  it("a new pod serves only after the start-up time; a removed one stops at once", () => {
    // 15 s syncs, 30 s start-up: a rise counts two syncs later, a fall at once.
    expect(readyReplicas(steps([2, 2, 5, 5, 5, 5, 3, 3]), 15_000, 30_000)).to.deep.equal([
      2, 2, 2, 2, 5, 5, 3, 3,
    ]);
  });

  it("counts a sync as under-provisioned when the serving replicas carry less than the load, and replica-hours from the replicas asked for", () => {
    // A minute at 450 requests/s: 4 replicas carry 400, 5 carry 500.
    const trace = [450, 450];
    const run = steps([4, 4, 5, 5, 5, 5, 5, 5]);
    const o = outcome(
      trace,
      run,
      run.map((s) => s.replicas),
    );
    expect(o.underMinutes, "two syncs of 15 s, rounded to the minute").to.equal(1);
    expect(o.unservedMillions).to.equal(0);
    expect(outcome(trace, run, [4, 4, 4, 4, 5, 5, 5, 5]).underMinutes).to.equal(1);
    expect(outcome([450, 450], steps(Array(240).fill(4)), Array(240).fill(4)).replicaHours).to.equal(4);
  });

  it("the trace is the same for a seed: a weekday's mornings rise, weekends are quieter", () => {
    const a = diurnalTrace();
    expect(a).to.deep.equal(diurnalTrace());
    expect(a).to.have.length(7 * 1440);
    const at = (day: number, hour: number) => a[day * 1440 + hour * 60]!;
    expect(at(0, 4)).to.be.below(200);
    expect(at(0, 10)).to.be.above(1400);
    expect(at(5, 10)).to.be.below(at(0, 10) * 0.7);
  });
});
