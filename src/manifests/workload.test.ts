import { expect } from "chai";
import { ScalableWorkloadSpec } from "../api/scalable-workload.js";
import { buildDeployment, buildHpa } from "./workload.js";

const owner = { name: "worker", namespace: "shop", uid: "u-1" };
const spec = ScalableWorkloadSpec.parse({
  replicas: 3,
  selector: { matchLabels: { app: "worker" } },
  template: { metadata: { labels: { app: "worker" } }, spec: { containers: [{ name: "w", image: "w:1" }] } },
  autoscaling: { maxReplicas: 10, metrics: [{ mapping: "rps", target: { averageValue: "500m" } }] },
});

describe("workload builders", () => {
  it("builds a Deployment owned by the ScalableWorkload, so deleting it garbage-collects the Deployment", () => {
    const d = buildDeployment(owner, spec);
    expect(d.metadata.ownerReferences).to.deep.equal([
      {
        apiVersion: "governor.dev/v1alpha1",
        kind: "ScalableWorkload",
        name: "worker",
        uid: "u-1",
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(d.spec.replicas).to.equal(3);
    expect(d.spec.template).to.deep.equal(spec.template);
  });

  it("builds an HPA on the /scale subresource with Pods, External and Object metrics", () => {
    const hpa = buildHpa(owner, spec, [
      { type: "Pods", metric: "http_requests", target: { averageValue: "500m" } },
      { type: "External", metric: "queue_depth", labels: { queue: "orders" }, target: { value: "30" } },
      {
        type: "Object",
        metric: "rps",
        object: { apiVersion: "v1", kind: "Service", name: "web" },
        target: { value: "100" },
      },
    ]);
    expect(hpa.apiVersion).to.equal("autoscaling/v2");
    expect(hpa.spec.scaleTargetRef).to.deep.equal({
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      name: "worker",
    });
    expect(hpa.spec.minReplicas).to.equal(1);
    expect(hpa.spec.metrics).to.deep.equal([
      {
        type: "Pods",
        pods: { metric: { name: "http_requests" }, target: { type: "AverageValue", averageValue: "500m" } },
      },
      {
        type: "External",
        external: {
          metric: { name: "queue_depth", selector: { matchLabels: { queue: "orders" } } },
          target: { type: "Value", value: "30" },
        },
      },
      {
        type: "Object",
        object: {
          describedObject: { apiVersion: "v1", kind: "Service", name: "web" },
          metric: { name: "rps" },
          target: { type: "Value", value: "100" },
        },
      },
    ]);
  });
});
