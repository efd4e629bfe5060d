import { expect } from "chai";
import type { ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { workloadStatus } from "./workload-status.js";

const NOW = new Date("2026-12-01T12:00:00Z");
const figures: ScalableWorkloadStatus = {
  mode: "Owned",
  replicas: 2,
  readyReplicas: 2,
  selector: "app=web",
  workload: "Deployment/web",
};
const ok = { status: "True" as const, reason: "Reconciled", message: "Deployment web: 2/2 ready" };
const scaling = { status: "True" as const, reason: "ValidMetricFound", message: "ok" };

describe("ScalableWorkload status", () => {
  it("writes a first status with Ready and Autoscaling, and nothing when it is the same again", () => {
    const first = workloadStatus({}, 1, figures, { ready: ok, autoscaling: scaling }, NOW);
    expect(first.changed).to.equal(true);
    expect(first.next.conditions!.map((c) => c.type)).to.deep.equal(["Autoscaling", "Ready"]);
    const again = workloadStatus(first.next, 1, figures, { ready: ok, autoscaling: scaling }, NOW);
    expect(again.changed).to.equal(false);
    expect(again.failures).to.deep.equal([]);
  });

  it("removes Autoscaling and Active when they no longer apply", () => {
    const before = workloadStatus(
      {},
      1,
      figures,
      { ready: ok, autoscaling: scaling, active: { status: "True", reason: "Active", message: "m" } },
      NOW,
    ).next;
    const after = workloadStatus(before, 2, figures, { ready: ok }, NOW).next;
    expect(after.conditions!.map((c) => c.type)).to.deep.equal(["Ready"]);
  });

  const changes: [string, Partial<ScalableWorkloadStatus>][] = [
    ["ready replicas", { readyReplicas: 1 }],
    ["the selector", { selector: "app=api" }],
    ["the workload", { workload: "StatefulSet/web" }],
  ];
  for (const [what, change] of changes)
    it(`writes a change of ${what}`, () => {
      const first = workloadStatus({}, 1, figures, { ready: ok }, NOW).next;
      expect(workloadStatus(first, 1, { ...figures, ...change }, { ready: ok }, NOW).changed).to.equal(true);
    });

  it("writes a new activation state, and a new generation", () => {
    const first = workloadStatus({}, 1, figures, { ready: ok }, NOW).next;
    const activation = { value: "0", belowThresholdSince: "2026-12-01T11:59:00Z" };
    expect(workloadStatus(first, 1, figures, { ready: ok, activation }, NOW).changed).to.equal(true);
    expect(workloadStatus(first, 2, figures, { ready: ok }, NOW).changed).to.equal(true);
  });

  it("announces a condition that turns False, or changes why it is False, once", () => {
    const missing = { status: "False" as const, reason: "MappingNotFound", message: "m" };
    const first = workloadStatus({}, 1, figures, { ready: ok, autoscaling: scaling }, NOW).next;
    const broken = workloadStatus(first, 1, figures, { ready: missing, autoscaling: scaling }, NOW);
    expect(broken.failures).to.deep.equal([{ type: "Ready", condition: missing }]);
    const still = workloadStatus(
      broken.next,
      1,
      figures,
      { ready: { ...missing, message: "other" }, autoscaling: scaling },
      NOW,
    );
    expect(still.failures, "same reason: no new announcement").to.deep.equal([]);
    const invalid = { ...missing, reason: "MappingInvalid" };
    expect(
      workloadStatus(broken.next, 1, figures, { ready: invalid, autoscaling: scaling }, NOW).failures,
    ).to.have.length(1);
  });
});
