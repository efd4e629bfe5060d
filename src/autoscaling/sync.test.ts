import { expect } from "chai";
import {
  type Behavior,
  type HpaMemory,
  type MetricOutcome,
  type ScaleEvent,
  type ScalingRules,
  type SyncInput,
  defaultedBehavior,
  newMemory,
  scaleDownLimitOf,
  scaleUpLimitOf,
  stabilizeDown,
  stabilizeWithBehavior,
  sync,
  withBehaviorRate,
  withRules,
} from "./sync.js";

/**
 * The cases of kube-controller-manager 1.37's own tests of what it does with the proposals
 * (pkg/controller/podautoscaler/horizontal_test.go: TestConvertDesiredReplicasWithRules,
 * TestCalculateScale{Up,Down}Limit…, TestNormalizeDesiredReplicas,
 * TestNormalizeDesiredReplicasWithBehavior, TestScalingWithRules), with their names, and
 * whole syncs for what ties them together.
 */
const NOW = 1_000_000_000;
const ago = (seconds: number) => NOW - seconds * 1000;

/** `generateScalingRules(pods, podsPeriod, percent, percentPeriod, stabilizationWindow)`. */
function rules(
  pods: number,
  podsPeriod: number,
  percent: number,
  percentPeriod: number,
  window: number,
): ScalingRules {
  const policies: ScalingRules["policies"] = [];
  if (pods !== 0) policies.push({ type: "Pods", value: pods, periodSeconds: podsPeriod });
  if (percent !== 0) policies.push({ type: "Percent", value: percent, periodSeconds: percentPeriod });
  return {
    stabilizationWindowSeconds: window,
    selectPolicy: "Max",
    ...(policies.length ? { policies } : {}),
  };
}

/** `generateEventsUniformDistribution`: each change in the middle of its share of the last `period` seconds. */
function spread(changes: number[], period: number): ScaleEvent[] {
  const segment = period / changes.length;
  return changes.map((change, i) => ({
    change,
    atMs: ago(Math.trunc(period - segment * (i + 1) + segment / 2)),
    outdated: false,
  }));
}

describe("what the HPA does with its metrics' proposals, as kube-controller-manager does it", () => {
  describe("min, max and the scale-up limit without behavior (TestConvertDesiredReplicasWithRules)", () => {
    // prettier-ignore
    const cases: [string, number, number, number, number, number, string][] = [
      ["prenormalized desired replicas within range", 5, 7, 3, 8, 7, "DesiredWithinRange"],
      ["prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2, "TooFewReplicas"],
      ["prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0, "DesiredWithinRange"],
      ["maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10, "TooManyReplicas"],
      ["scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 6, "ScaleUpLimit"],
    ];
    for (const [name, current, desired, min, max, replicas, reason] of cases)
      it(name, () => {
        const r = withRules(current, desired, min, max);
        expect([r.replicas, r.condition.reason]).to.deep.equal([replicas, reason]);
      });
  });

  it("the scale-up and scale-down limits with the Min policy (TestCalculateScale{Up,Down}Limit…)", () => {
    const r: ScalingRules = {
      stabilizationWindowSeconds: 300,
      selectPolicy: "Min",
      policies: [
        { type: "Pods", value: 2, periodSeconds: 60 },
        { type: "Percent", value: 50, periodSeconds: 60 },
      ],
    };
    const none = { scaleUpEvents: [], scaleDownEvents: [] };
    expect(scaleUpLimitOf(1, none, r, NOW)).to.equal(2);
    expect(scaleDownLimitOf(5, none, r, NOW)).to.equal(3);
  });

  describe("the downscale window without behavior (TestNormalizeDesiredReplicas)", () => {
    // prettier-ignore
    const cases: [string, [number, number][], number, number, number][] = [
      ["empty log", [], 5, 5, 1],
      ["stabilize", [[4, 120], [5, 60]], 3, 5, 3],
      ["no stabilize", [[1, 120], [2, 60]], 3, 3, 3],
      ["no stabilize - old recommendations", [[10, 600], [9, 540]], 3, 3, 2],
      ["stabilize - old recommendations", [[10, 600], [4, 60], [5, 120], [9, 540]], 3, 5, 4],
    ];
    for (const [name, recs, prenormalized, stabilized, length] of cases)
      it(name, () => {
        const log = recs.map(([replicas, s]) => ({ replicas, atMs: ago(s) }));
        expect(stabilizeDown(log, NOW, prenormalized, 300)).to.equal(stabilized);
        expect(log).to.have.length(length);
      });
  });

  describe("the stabilization windows with behavior (TestNormalizeDesiredReplicasWithBehavior)", () => {
    // prettier-ignore
    const cases: [string, [number, number][], number, number, number, number[] | undefined, number, number][] = [
      ["empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0],
      ["simple scale down stabilization", [[4, 120], [5, 60]], 100, 3, 5, [4, 5, 3], 0, 180],
      ["simple scale up stabilization", [[4, 120], [5, 60]], 1, 7, 4, [4, 5, 7], 300, 0],
      ["no scale down stabilization", [[1, 120], [2, 60]], 100, 3, 3, [1, 2, 3], 300, 0],
      ["no scale up stabilization", [[4, 120], [5, 60]], 1, 3, 3, [4, 5, 3], 0, 300],
      ["no scale down stabilization, reuse recommendation element", [[10, 600], [9, 540]], 100, 3, 3, [10, 3], 0, 0],
      ["no scale up stabilization, reuse recommendation element", [[10, 600], [9, 540]], 1, 100, 100, [10, 100], 0, 0],
      ["scale down stabilization, reuse one of obsolete recommendation element", [[10, 600], [4, 60], [5, 120], [9, 540]], 100, 3, 5, [10, 4, 5, 3], 0, 180],
      ["scale up stabilization, reuse one of obsolete recommendation element", [[10, 6000], [6, 60], [5, 120], [9, 180]], 1, 100, 5, [100, 6, 5, 9], 300, 300],
      ["scale up and down stabilization, do not scale up when prenormalized rec goes down", [[2, 6000], [3, 180]], 2, 1, 2, undefined, 300, 300],
      ["scale up and down stabilization, do not scale down when prenormalized rec goes up", [[2, 6000], [1, 180]], 2, 3, 2, undefined, 300, 300],
    ];
    for (const [name, recs, current, prenormalized, stabilized, after, up, down] of cases)
      it(name, () => {
        const log = recs.map(([replicas, s]) => ({ replicas, atMs: ago(s) }));
        expect(stabilizeWithBehavior(log, NOW, prenormalized, current, up, down)).to.equal(stabilized);
        if (after) expect(log.map((r) => r.replicas)).to.deep.equal(after);
      });
  });

  describe("behavior's policies over the recent scale events (TestScalingWithRules)", () => {
    type Row = [
      string,
      ScaleEvent[],
      ScaleEvent[],
      number,
      number,
      ScalingRules | undefined,
      ScalingRules | undefined,
      number,
      number,
      number,
      string,
    ];
    const e = spread;
    // prettier-ignore
    const cases: Row[] = [
      ["prenormalized desired replicas within range", [], [], 3, 8, undefined, undefined, 5, 7, 7, "DesiredWithinRange"],
      ["prenormalized desired replicas < minReplicas", [], [], 2, 8, undefined, undefined, 3, 1, 2, "TooFewReplicas"],
      ["prenormalized desired replicas within range when minReplicas is 0", [], [], 0, 10, undefined, undefined, 1, 0, 0, "DesiredWithinRange"],
      ["maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, undefined, undefined, 20, 1000, 10, "TooManyReplicas"],
      ["desired replica count is more than the maximum replica count", [], [], 100, 150, undefined, undefined, 100, 1000, 150, "TooManyReplicas"],
      ["scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", [], [], 1, 2000, rules(0, 0, 1, 60, 0), undefined, 3, 1000, 4, "ScaleUpLimit"],
      ["scaleUp with default behavior", [], [], 1, 1000, undefined, undefined, 10, 50, 20, "ScaleUpLimit"],
      ["scaleUp with pods policy larger than percent policy", [], [], 1, 1000, rules(100, 60, 100, 60, 0), undefined, 10, 500, 110, "ScaleUpLimit"],
      ["scaleUp with percent policy larger than pods policy", [], [], 1, 1000, rules(2, 60, 100, 60, 0), undefined, 10, 500, 20, "ScaleUpLimit"],
      ["scaleUp with spec MaxReplicas limitation with large pod policy", [], [], 1, 1000, rules(100, 60, 0, 0, 0), undefined, 10, 50, 50, "DesiredWithinRange"],
      ["scaleUp with spec MaxReplicas limitation with large percent policy", [], [], 1, 1000, rules(10000, 60, 0, 0, 0), undefined, 10, 50, 50, "DesiredWithinRange"],
      ["scaleUp with pod policy limitation", [], [], 1, 1000, rules(30, 60, 0, 0, 0), undefined, 10, 50, 40, "ScaleUpLimit"],
      ["scaleUp with percent policy limitation", [], [], 1, 1000, rules(0, 0, 200, 60, 0), undefined, 10, 50, 30, "ScaleUpLimit"],
      ["scaleDown with percent policy larger than pod policy", [], [], 1, 1000, undefined, rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"],
      ["scaleDown with pod policy larger than percent policy", [], [], 1, 1000, undefined, rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"],
      ["scaleDown with spec MinReplicas limitation with large pod policy", [], [], 1, 1000, undefined, rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"],
      ["scaleDown with spec MinReplicas limitation with large percent policy", [], [], 5, 1000, undefined, rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"],
      ["scaleDown with pod policy limitation", [], [], 1, 1000, undefined, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"],
      ["scaleDown with percent policy limitation", [], [], 1, 1000, undefined, rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"],
      // Not in the controller's table: a percent of pods that is not whole is rounded down (int32()), so fewer may go.
      ["scaleDown with a percent policy that is not a whole number of pods", [], [], 1, 1000, undefined, rules(0, 0, 25, 60, 300), 10, 1, 7, "ScaleDownLimit"],
      ["scaleUp with spec MaxReplicas limitation with large pod policy and events", e([1, 5, 9], 120), [], 1, 200, rules(300, 60, 0, 0, 0), undefined, 100, 500, 200, "TooManyReplicas"],
      ["scaleUp with spec MaxReplicas limitation with large percent policy and events", e([1, 5, 9], 120), [], 1, 200, rules(0, 0, 10000, 60, 0), undefined, 100, 500, 200, "TooManyReplicas"],
      ["scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events", e([1, 5, 9], 120), [], 1, 1000, rules(5, 120, 0, 0, 0), undefined, 100, 500, 100, "ScaleUpLimit"],
      ["scaleUp with pod policy and previous scale up events", e([1, 5, 9], 120), [], 1, 1000, rules(150, 120, 0, 0, 0), undefined, 100, 500, 235, "ScaleUpLimit"],
      ["scaleUp with percent policy and previous scale up events", e([1, 5, 9], 120), [], 1, 1000, rules(0, 0, 200, 120, 0), undefined, 100, 500, 255, "ScaleUpLimit"],
      ["scaleUp with percent policy and previous scale up and down events", e([4], 120), e([2], 120), 1, 1000, rules(0, 0, 300, 300, 0), undefined, 6, 24, 16, "ScaleUpLimit"],
      ["scaleDown with default policy and previous events", [], e([1, 5, 9], 120), 1, 1000, undefined, undefined, 10, 5, 5, "DesiredWithinRange"],
      ["scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", [], e([1, 5, 9], 120), 1, 1000, undefined, rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"],
      ["scaleDown with spec MinReplicas limitation with large pod policy and previous events", [], e([1, 5, 9], 120), 5, 1000, undefined, rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"],
      ["scaleDown with spec MinReplicas limitation with large percent policy and previous events", [], e([1, 5, 9], 120), 5, 1000, undefined, rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"],
      ["scaleDown with pod policy limitation and previous events", [], e([1, 5, 9], 120), 1, 1000, undefined, rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"],
      ["scaleDown with percent policy limitation and previous events", [], e([2, 4, 6], 120), 1, 1000, undefined, rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"],
      ["scaleDown with percent policy and previous scale up and down events", e([2], 120), e([4], 120), 1, 1000, undefined, rules(0, 0, 50, 180, 0), 10, 1, 6, "ScaleDownLimit"],
      ["scaleDown with previous events preventing further scale down", [], e([10, 10, 10], 120), 1, 1000, undefined, rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"],
      ["scaleDown with with previous events still allowing more scale down", [], e([10, 10, 10], 120), 1, 1000, undefined, rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"],
      ["check 'outdated' flag for events for one behavior for up", e([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 60, 0, 0, 0), undefined, 100, 200, 200, "DesiredWithinRange"],
      ["check that events were not marked 'outdated' for two different policies in the behavior for up", e([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 120, 100, 60, 0), undefined, 100, 200, 200, "DesiredWithinRange"],
      ["check that events were marked 'outdated' for two different policies in the behavior for up", e([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 30, 100, 60, 0), undefined, 100, 200, 200, "DesiredWithinRange"],
      ["check 'outdated' flag for events for one behavior for down", [], e([8, 12, 9, 11], 120), 1, 1000, undefined, rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"],
      ["check that events were not marked 'outdated' for two different policies in the behavior for down", [], e([8, 12, 9, 11], 120), 1, 1000, undefined, rules(1000, 120, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"],
      ["check that events were marked 'outdated' for two different policies in the behavior for down", [], e([8, 12, 9, 11], 120), 1, 1000, undefined, rules(1000, 30, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"],
    ];
    for (const [name, up, down, min, max, upRules, downRules, current, desired, replicas, reason] of cases)
      it(name, () => {
        const behavior = defaultedBehavior({
          ...(upRules ? { scaleUp: upRules } : {}),
          ...(downRules ? { scaleDown: downRules } : {}),
        });
        const r = withBehaviorRate(
          current,
          desired,
          min,
          max,
          behavior,
          { scaleUpEvents: up, scaleDownEvents: down },
          NOW,
        );
        expect([r.replicas, r.condition.reason]).to.deep.equal([replicas, reason]);
      });
  });

  describe("a whole sync", () => {
    const ok = (metric: string, replicas: number): MetricOutcome => ({ metric, replicas });
    const failed = (metric: string): MetricOutcome => ({
      metric,
      error: `unable to get metric ${metric}`,
      reason: "FailedGetExternalMetric",
    });
    const base = (over: Partial<SyncInput>): SyncInput => ({
      nowMs: NOW,
      maxReplicas: 10,
      currentReplicas: 3,
      metrics: () => [],
      hasObjectOrExternal: true,
      scaledToZero: false,
      ...over,
    });

    it("takes the largest proposal of several metrics and names it", () => {
      const r = sync(
        base({ metrics: () => [ok("pods metric a", 4), ok("external metric b", 6)] }),
        newMemory(),
      );
      expect(r).to.include({
        desiredReplicas: 6,
        rescale: true,
        metric: "external metric b",
        reason: "external metric b above target",
      });
      expect(r.conditions.ScalingActive?.reason).to.equal("ValidMetricFound");
    });

    it("scales up on the metrics that work when another fails, and never down", () => {
      const up = sync(
        base({ metrics: () => [failed("external metric a"), ok("pods metric b", 5)] }),
        newMemory(),
      );
      expect(up).to.include({ desiredReplicas: 5, rescale: true });
      expect(up.error).to.match(
        /^invalid metrics \(1 invalid out of 2\), first error is: unable to get metric/,
      );
      const down = sync(
        base({ metrics: () => [failed("external metric a"), ok("pods metric b", 1)] }),
        newMemory(),
      );
      expect(down).to.include({ desiredReplicas: 3, rescale: false });
      expect(down.conditions.ScalingActive).to.include({
        status: "False",
        reason: "FailedGetExternalMetric",
      });
    });

    it("brings replicas inside min and max without reading a metric", () => {
      let read = false;
      const metrics = () => ((read = true), []);
      expect(sync(base({ currentReplicas: 12, metrics }), newMemory())).to.include({
        desiredReplicas: 10,
        reason: "Current number of replicas above Spec.MaxReplicas",
      });
      expect(sync(base({ currentReplicas: 1, minReplicas: 2, metrics }), newMemory())).to.include({
        desiredReplicas: 2,
      });
      expect(read).to.equal(false);
    });

    it("keeps the highest recommendation of the last five minutes before it scales down (no behavior)", () => {
      const memory = newMemory();
      expect(
        sync(base({ currentReplicas: 3, metrics: () => [ok("m", 6)] }), memory).desiredReplicas,
      ).to.equal(6);
      const later = sync(
        base({ nowMs: NOW + 60_000, currentReplicas: 6, metrics: () => [ok("m", 2)] }),
        memory,
      );
      expect(later).to.include({ desiredReplicas: 6, rescale: false });
      expect(later.conditions.AbleToScale?.reason).to.equal("ScaleDownStabilized");
      const after = sync(
        base({ nowMs: NOW + 361_000, currentReplicas: 6, metrics: () => [ok("m", 2)] }),
        memory,
      );
      expect(after.desiredReplicas).to.equal(2);
    });

    it("counts its own scale-ups against behavior's policy in the next sync", () => {
      const behavior: Behavior = { scaleUp: { policies: [{ type: "Pods", value: 2, periodSeconds: 60 }] } };
      const memory: HpaMemory = newMemory();
      expect(
        sync(base({ behavior, currentReplicas: 3, metrics: () => [ok("m", 9)] }), memory).desiredReplicas,
      ).to.equal(5);
      const next = sync(
        base({ behavior, nowMs: NOW + 15_000, currentReplicas: 5, metrics: () => [ok("m", 9)] }),
        memory,
      );
      expect(next).to.include({ desiredReplicas: 5, rescale: false });
      expect(next.conditions.ScalingLimited?.reason).to.equal("ScaleUpLimit");
      expect(
        sync(base({ behavior, nowMs: NOW + 61_000, currentReplicas: 5, metrics: () => [ok("m", 9)] }), memory)
          .desiredReplicas,
      ).to.equal(7);
    });

    it("leaves a target at zero alone unless the HPA scaled it there and has an Object or External metric", () => {
      const off = sync(
        base({ currentReplicas: 0, minReplicas: 0, metrics: () => [ok("m", 3)] }),
        newMemory(),
      );
      expect(off).to.include({ desiredReplicas: 0, rescale: false });
      expect(off.conditions.ScalingActive?.reason).to.equal("ScalingDisabled");
      const on = sync(
        base({ currentReplicas: 0, minReplicas: 0, scaledToZero: true, metrics: () => [ok("m", 3)] }),
        newMemory(),
      );
      expect(on).to.include({ desiredReplicas: 3, rescale: true });
      const toZero = sync(
        base({
          currentReplicas: 2,
          minReplicas: 0,
          behavior: { scaleDown: { stabilizationWindowSeconds: 0 } },
          metrics: () => [ok("m", 0)],
        }),
        newMemory(),
      );
      expect(toZero).to.include({ desiredReplicas: 0 });
      expect(toZero.conditions.ScaledToZero?.status).to.equal("True");
    });
  });
});
