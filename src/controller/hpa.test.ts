import { expect } from "chai";
import type { ScalableWorkloadSpec } from "../api/scalable-workload.js";
import { type Hpa, type MappingView, hpaFingerprint, hpaHealth, planHpa } from "./hpa.js";

const owner = { namespace: "shop", name: "web" };
const mappingSpec = (subject: object, metric = "rps") => ({
  metric,
  subject,
  source: { static: { value: "1" } },
});
const MAPPINGS: Record<string, MappingView> = {
  "pods-rps": { spec: mappingSpec({ resource: "pods" }) },
  queue: { spec: mappingSpec({ external: { labels: { queue: "orders" } } }, "queue_depth") },
  ingress: { spec: mappingSpec({ resource: "ingresses.networking.k8s.io" }, "hits") },
  broken: { spec: { metric: 5 } },
  unknown: {
    spec: mappingSpec({ resource: "widgets.example.com" }),
    problem: { reason: "UnknownResource", message: "no such resource" },
  },
};
const get = (_ns: string, name: string) => MAPPINGS[name];
const autoscaled = (mappings: string[], replicas = 2, activation = false) =>
  ({
    replicas,
    autoscaling: {
      minReplicas: 1,
      maxReplicas: 10,
      metrics: mappings.map((mapping) => ({ mapping, target: { averageValue: "10" } })),
      ...(activation ? { activation: { mapping: "queue", threshold: "0", cooldown: "5m" } } : {}),
    },
  }) as unknown as ScalableWorkloadSpec & { autoscaling: NonNullable<ScalableWorkloadSpec["autoscaling"]> };
const healthy: Hpa = {
  status: {
    conditions: [
      { type: "AbleToScale", status: "True", reason: "ReadyForNewScale" },
      {
        type: "ScalingActive",
        status: "True",
        reason: "ValidMetricFound",
        message: "the HPA was able to compute",
      },
    ],
  },
};

describe("the owned HPA", () => {
  it("reads pods, external and object metrics the way each MetricMapping's subject says", () => {
    const plan = planHpa(owner, autoscaled(["pods-rps", "queue", "ingress"]), get, healthy);
    expect(plan.metrics.map((m) => m.type)).to.deep.equal(["Pods", "External", "Object"]);
    expect(plan.metrics[1]).to.deep.include({ labels: { queue: "orders" } });
    expect(plan.metrics[2]).to.deep.include({
      object: { apiVersion: "governor.dev/v1alpha1", kind: "ScalableWorkload", name: "web" },
    });
    expect(plan.problem).to.equal(undefined);
    expect(plan.autoscaling).to.include({ status: "True", reason: "ValidMetricFound" });
  });

  const cases: [string, string[], number, string, string][] = [
    [
      "leaves out a missing mapping and scales on the rest",
      ["pods-rps", "gone"],
      1,
      "MappingNotFound",
      "True",
    ],
    ["leaves out an invalid mapping", ["broken", "queue"], 1, "MappingInvalid", "True"],
    ["leaves out a mapping that can never serve, saying why", ["unknown"], 0, "MappingInvalid", "False"],
  ];
  for (const [what, mappings, usable, reason, autoscalingStatus] of cases)
    it(what, () => {
      const plan = planHpa(owner, autoscaled(mappings), get, healthy);
      expect(plan.metrics).to.have.length(usable);
      expect(plan.problem).to.include({ status: "False", reason });
      expect(plan.autoscaling.status).to.equal(autoscalingStatus);
    });

  it("says why no HPA is kept when no metric can serve", () => {
    const plan = planHpa(owner, autoscaled(["unknown"]), get, undefined);
    expect(plan.autoscaling).to.include({ reason: "NoUsableMetric" });
    expect(plan.problem!.message).to.match(
      /UnknownResource: no such resource.*no HorizontalPodAutoscaler is kept/,
    );
  });

  it("reports a workload scaled to zero as the HPA standing still, not as failing", () => {
    expect(planHpa(owner, autoscaled(["queue"], 0, true), get, undefined).autoscaling).to.include({
      status: "True",
      reason: "ScaledToZero",
    });
  });

  it("reads the HPA's own conditions: pending, unable to scale, or scaling", () => {
    expect(hpaHealth(undefined).reason).to.equal("Pending");
    const failing: Hpa = {
      status: {
        conditions: [
          { type: "AbleToScale", status: "True" },
          { type: "ScalingActive", status: "False", reason: "FailedGetPodsMetric", message: "503" },
        ],
      },
    };
    expect(hpaHealth(failing)).to.deep.equal({
      status: "False",
      reason: "FailedGetPodsMetric",
      message: "HorizontalPodAutoscaler ScalingActive: 503",
    });
    expect(hpaHealth(healthy).status).to.equal("True");
  });

  it("fingerprints only the conditions that decide its health", () => {
    const moved: Hpa = {
      ...healthy,
      status: {
        ...healthy.status,
        conditions: [...healthy.status!.conditions!, { type: "ScalingLimited", status: "True" }],
      },
    };
    expect(hpaFingerprint(moved)).to.equal(hpaFingerprint(healthy));
    expect(hpaFingerprint(healthy)).to.equal(
      "AbleToScale=True/ReadyForNewScale,ScalingActive=True/ValidMetricFound",
    );
  });
});
