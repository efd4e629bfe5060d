/**
 * Pure builders for what a ScalableWorkload owns: the Deployment made from its template
 * and the HorizontalPodAutoscaler made from `spec.autoscaling`. No I/O.
 */
import { API_VERSION } from "../api/common.js";
import type { ScalableWorkloadSpec } from "../api/scalable-workload.js";

/** The object owning what is built. */
export interface Owner {
  name: string;
  namespace: string;
  uid: string;
}

/** The label put on everything a ScalableWorkload owns. */
export const OWNER_LABEL = "governor.dev/scalableworkload";

function ownerReference(owner: Owner) {
  return {
    apiVersion: API_VERSION,
    kind: "ScalableWorkload",
    name: owner.name,
    uid: owner.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Name, labels and controller reference of an object a ScalableWorkload owns. */
function ownedMetadata(owner: Owner) {
  return {
    name: owner.name,
    namespace: owner.namespace,
    labels: { [OWNER_LABEL]: owner.name, "app.kubernetes.io/managed-by": "governor" },
    ownerReferences: [ownerReference(owner)],
  };
}

/** The Deployment for a ScalableWorkload with a template (server-side applied). */
export function buildDeployment(owner: Owner, spec: ScalableWorkloadSpec) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: ownedMetadata(owner),
    spec: {
      replicas: spec.replicas,
      selector: spec.selector,
      template: spec.template,
    },
  };
}

/** How one `spec.autoscaling.metrics` entry is read, decided from its MetricMapping's subject. */
export type ResolvedMetric =
  | { type: "Pods"; metric: string; target: Target }
  | { type: "External"; metric: string; labels: Record<string, string>; target: Target }
  | {
      type: "Object";
      metric: string;
      object: { apiVersion: string; kind: string; name: string };
      target: Target;
    };

/** A metric target. */
export interface Target {
  averageValue?: string;
  value?: string;
}

function target(t: Target) {
  return t.averageValue !== undefined
    ? { type: "AverageValue", averageValue: t.averageValue }
    : { type: "Value", value: t.value };
}

/**
 * The `autoscaling/v2` HPA targeting the ScalableWorkload's /scale subresource (the only
 * HPA API of every supported Kubernetes version; v2beta2 was removed in 1.26).
 */
export function buildHpa(owner: Owner, spec: ScalableWorkloadSpec, metrics: ResolvedMetric[]) {
  const a = spec.autoscaling!;
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: ownedMetadata(owner),
    spec: {
      scaleTargetRef: { apiVersion: API_VERSION, kind: "ScalableWorkload", name: owner.name },
      // At least 1: the HPA takes 0 only behind the HPAScaleToZero feature gate. With
      // minReplicas 0, Governor itself moves the workload 0 ↔ 1 (ADR 0009).
      minReplicas: Math.max(1, a.minReplicas),
      maxReplicas: a.maxReplicas,
      metrics: metrics.map((m) => {
        switch (m.type) {
          case "Pods":
            return { type: "Pods", pods: { metric: { name: m.metric }, target: target(m.target) } };
          case "External":
            return {
              type: "External",
              external: {
                metric: {
                  name: m.metric,
                  ...(Object.keys(m.labels).length ? { selector: { matchLabels: m.labels } } : {}),
                },
                target: target(m.target),
              },
            };
          case "Object":
            return {
              type: "Object",
              object: { describedObject: m.object, metric: { name: m.metric }, target: target(m.target) },
            };
        }
      }),
      ...(a.behavior ? { behavior: a.behavior } : {}),
    },
  };
}
