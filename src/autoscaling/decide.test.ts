import { expect } from "chai";
import type { PodFacts } from "./proposals.js";
import { type DecideInput, type HpaView, decide, formatMilli } from "./decide.js";

const pods = (n: number, ready = n): PodFacts[] =>
  Array.from({ length: n }, (_, i) => ({ name: `web-${i}`, phase: "Running", ready: i < ready }));

const hpa = (
  metrics: NonNullable<HpaView["spec"]["metrics"]>,
  over: Partial<HpaView["spec"]> = {},
): HpaView => ({
  spec: { minReplicas: 1, maxReplicas: 10, metrics, ...over },
});

const input = (over: Partial<DecideInput>): DecideInput => ({
  nowMs: 0,
  hpa: hpa([]),
  specReplicas: 3,
  statusReplicas: 3,
  pods: pods(3),
  readings: [],
  ...over,
});

const podsMetric = {
  type: "Pods",
  pods: { metric: { name: "rps" }, target: { type: "AverageValue", averageValue: "10" } },
};
const queue = {
  type: "External",
  external: { metric: { name: "queue" }, target: { type: "AverageValue", averageValue: "30" } },
};

describe("governor simulate: the HPA's next sync from what the metrics APIs answer", () => {
  it("says each metric's current value and proposal, and that the largest wins", () => {
    const d = decide(
      input({
        hpa: hpa([podsMetric, queue]),
        readings: [
          {
            values: [
              { name: "web-0", value: "20" },
              { name: "web-1", value: "25" },
              { name: "web-2", value: "30" },
            ],
          },
          { values: [{ value: "240" }] },
        ],
      }),
    );
    expect(d.metrics.map((m) => [m.metric, m.current, m.proposal])).to.deep.equal([
      ["rps", "25", 8],
      ["queue", "80", 8],
    ]);
    expect(d.next).to.include({ desiredReplicas: 6, proposed: 8 }); // no behavior: at most double (at least 4)
    expect(d.next.conditions.ScalingLimited?.reason).to.equal("ScaleUpLimit");
  });

  it("answers what-if with --set, for every pod of a Pods metric", () => {
    const d = decide(
      input({
        hpa: hpa([podsMetric]),
        readings: [
          {
            values: [
              { name: "web-0", value: "10" },
              { name: "web-1", value: "10" },
              { name: "web-2", value: "10" },
            ],
          },
        ],
        set: new Map([["rps", "5"]]),
      }),
    );
    expect(d.metrics[0]).to.include({ current: "5", proposal: 2, whatIf: true });
    expect(d.next.desiredReplicas).to.equal(2);
  });

  it("names a metric the API would not answer, and does not scale down past it", () => {
    const d = decide(
      input({
        hpa: hpa([podsMetric, queue]),
        readings: [
          {
            values: [
              { name: "web-0", value: "1" },
              { name: "web-1", value: "1" },
              { name: "web-2", value: "1" },
            ],
          },
          { error: "the metrics API answers (503): stale" },
        ],
      }),
    );
    expect(d.metrics[1]?.error).to.equal("the metrics API answers (503): stale");
    expect(d.next).to.include({ desiredReplicas: 3, rescale: false });
    expect(d.next.conditions.ScalingActive).to.include({
      status: "False",
      reason: "FailedGetExternalMetric",
    });
  });

  it("leaves resource metrics out and says that it did", () => {
    const d = decide(
      input({
        hpa: hpa([{ type: "Resource", resource: { name: "cpu" } }, queue]),
        readings: [
          { skipped: "a Resource metric is read from metrics.k8s.io (metrics-server)" },
          { values: [{ value: "90" }] },
        ],
      }),
    );
    expect(d.metrics[0]?.skipped).to.match(/metrics-server/);
    expect(d.next.desiredReplicas).to.equal(3);
    expect(d.undetermined).to.match(/also weighs cpu/);
  });

  it("applies behavior from the HPA's spec, tolerance included", () => {
    const d = decide(
      input({
        hpa: hpa([queue], {
          behavior: {
            scaleUp: { tolerance: "0", policies: [{ type: "Pods", value: 1, periodSeconds: 60 }] },
          },
        }),
        readings: [{ values: [{ value: "93" }] }], // 31 per replica: within the default 10 %, not within 0
      }),
    );
    expect(d.metrics[0]?.proposal).to.equal(4);
    expect(d.next.desiredReplicas).to.equal(4);
  });

  it("reads what the controller reads at the edges: a negative External series, no series, a wrong target, two answers", () => {
    const extAvg = {
      type: "External",
      external: { metric: { name: "queue" }, target: { type: "AverageValue", averageValue: "10" } },
    };
    // Go's per-pod sum takes a total below zero for an overflow: MaxInt64, so it scales up.
    const negative = decide(input({ hpa: hpa([extAvg]), readings: [{ values: [{ value: "-5" }] }] }));
    expect(negative.metrics[0]).to.include({ proposal: 2 ** 31 - 1, current: "9223372036854775807m" });
    expect(negative.next.desiredReplicas).to.equal(6);
    const none = decide(input({ hpa: hpa([extAvg]), readings: [{ values: [] }] }));
    expect(none.metrics[0]?.error).to.equal("no metrics returned from external metrics API");
    expect(none.next).to.include({ desiredReplicas: 3, rescale: false });
    const object = (target: Record<string, string>) => ({
      type: "Object",
      object: {
        metric: { name: "q" },
        describedObject: { apiVersion: "v1", kind: "Service", name: "s" },
        target,
      },
    });
    const mismatched = decide(
      input({
        hpa: hpa([object({ type: "Value", averageValue: "10" })]),
        readings: [{ values: [{ value: "50" }] }],
      }),
    );
    expect(mismatched.metrics[0]?.error).to.match(/^invalid object metric source/);
    const two = decide(
      input({
        hpa: hpa([object({ type: "Value", value: "10" })]),
        readings: [{ values: [{ value: "50" }, { value: "60" }] }],
      }),
    );
    expect(two.metrics[0]?.error).to.equal(
      "the custom metrics API server returned 2 results when we asked for exactly one",
    );
    const tiny = decide(
      input({
        hpa: hpa([{ type: "Pods", pods: { metric: { name: "rps" }, target: { averageValue: "1e-10" } } }]),
        readings: [
          {
            values: [
              { name: "web-0", value: "0" },
              { name: "web-1", value: "0" },
              { name: "web-2", value: "0" },
            ],
          },
        ],
      }),
    );
    expect(tiny.metrics[0]?.proposal).to.equal(0);
  });

  it("does not decide for an HPA whose every metric is a resource metric", () => {
    const d = decide(
      input({
        hpa: hpa([{ type: "Resource", resource: { name: "cpu" } }]),
        readings: [{ skipped: "metrics-server" }],
      }),
    );
    expect(d.next).to.include({ desiredReplicas: 3, rescale: false, reason: "" });
    expect(d.undetermined).to.match(/cpu/);
  });

  it("prints milli-values as quantities", () => {
    expect([formatMilli(1500n), formatMilli(2000n), formatMilli(2867n)]).to.deep.equal([
      "1500m",
      "2",
      "2867m",
    ]);
  });
});
