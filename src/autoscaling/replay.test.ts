import { expect } from "chai";
import type { HpaView } from "./decide.js";
import { MAX_REPLAY_STEPS, type Sample, replay, valueAt } from "./replay.js";

const STEP = 15_000;
const external = (target: string, behavior?: HpaView["spec"]["behavior"]): HpaView => ({
  spec: {
    minReplicas: 1,
    maxReplicas: 20,
    metrics: [
      {
        type: "External",
        external: { metric: { name: "queue" }, target: { type: "AverageValue", averageValue: target } },
      },
    ],
    ...(behavior ? { behavior } : {}),
  },
});
const pods = (target: string): HpaView => ({
  spec: {
    minReplicas: 1,
    maxReplicas: 20,
    metrics: [
      {
        type: "Pods",
        pods: { metric: { name: "rps" }, target: { type: "AverageValue", averageValue: target } },
      },
    ],
  },
});
/** `value` from `fromS` on, one sample a sync. */
const steady = (pairs: [fromS: number, value: number][], untilS: number): Sample[] => {
  const out: Sample[] = [];
  for (let t = 0; t <= untilS; t += STEP / 1000) {
    const v = [...pairs].reverse().find(([from]) => t >= from)![1];
    out.push({ atMs: t * 1000, value: v });
  }
  return out;
};
const run = (hpa: HpaView, series: Sample[][], untilS: number, extra: object = {}) =>
  replay({
    hpa,
    series,
    fromMs: 0,
    toMs: untilS * 1000,
    stepMs: STEP,
    staleMs: 60_000,
    startReplicas: 2,
    ...extra,
  });

describe("governor replay: the HPA's algorithm over history, in a closed loop", () => {
  it("scales up at once and down after the 5-minute window, as the controller would have", () => {
    const queue = steady(
      [
        [0, 20],
        [60, 200],
        [300, 20],
      ],
      900,
    );
    const steps = run(external("20"), [queue], 900);
    const at = (s: number) => steps.find((x) => x.atMs === s * 1000)!.replicas;
    expect(at(45)).to.equal(2); // 20 / 20 = 1, but the first 5 minutes' recommendations hold 2
    expect(at(60)).to.equal(4); // 200 / 20 = 10; without behavior at most max(2 × 2, 4)
    expect(at(75)).to.equal(8);
    expect(at(90)).to.equal(10);
    expect(at(585)).to.equal(10); // the value fell at 300 s: held by the window until 600 s
    expect(at(615)).to.equal(1);
  });

  it("a different target (what --set replays) changes the replicas over the same history", () => {
    const queue = steady([[0, 100]], 120);
    expect(run(external("20"), [queue], 120).at(-1)!.replicas).to.equal(5);
    expect(run(external("50"), [queue], 120).at(-1)!.replicas).to.equal(2);
  });

  it("a Pods metric's load spreads over the replayed replicas: 30 a pod on 2 replicas is 60 in all", () => {
    const rps = steady([[0, 30]], 120);
    const actual = steady([[0, 2]], 120);
    const steps = run(pods("10"), [rps], 120, { actual });
    // 60 over 2 → 4 (at most double), over 4 → 15 each → 6, over 6 → 10 each: steady.
    expect(steps.map((s) => s.replicas).slice(0, 4)).to.deep.equal([4, 6, 6, 6]);
    expect(steps[0]!.actual).to.equal(2);
  });

  it("a gap in the history holds the replicas and says why, as a metric the HPA cannot read does", () => {
    const queue = [{ atMs: 0, value: 200 }];
    const steps = run(external("20"), [queue], 120);
    expect(steps[0]!.replicas).to.equal(4);
    const late = steps.at(-1)!;
    expect(late.values).to.deep.equal([undefined]);
    expect(late.replicas).to.equal(steps.at(-2)!.replicas);
    expect(late.reason).to.match(/no value in the history/);
  });

  it("refuses a stretch of more syncs than it computes, before computing any", () => {
    expect(() =>
      replay({
        hpa: external("20"),
        series: [[]],
        fromMs: 0,
        toMs: (MAX_REPLAY_STEPS + 1) * STEP,
        stepMs: STEP,
        staleMs: 1,
      }),
    ).to.throw(/at most 50000 syncs/);
  });

  it("reads the last value at or before a moment, none when older than the staleness", () => {
    const s = [
      { atMs: 0, value: 1 },
      { atMs: 10, value: 2 },
    ];
    expect([valueAt(s, -1, 5), valueAt(s, 9, 20), valueAt(s, 10, 5), valueAt(s, 16, 5)]).to.deep.equal([
      undefined,
      1,
      2,
      undefined,
    ]);
  });
});
