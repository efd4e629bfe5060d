/**
 * The HorizontalPodAutoscaler a ScalableWorkload owns, as pure decisions (the analogue of
 * KEDA's hpa.go): which `spec.autoscaling` metrics it can carry (those whose MetricMapping
 * can serve), what the `Autoscaling` condition says (from the HPA's own conditions), and
 * what `Ready` reports when some metrics cannot be used. The reconciler applies or
 * deletes the HPA as planned.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { API_VERSION } from "../api/common.js";
import { MetricMappingSpec } from "../sources/registry.js";
import type { ScalableWorkloadSpec } from "../api/scalable-workload.js";
import type { ResolvedMetric } from "../manifests/workload.js";
import type { ConditionUpdate } from "./conditions.js";

/** A condition decided here (its type is added where it is set). */
export type Problem = Omit<ConditionUpdate, "type">;

/** An HPA as Governor reads it: its conditions. */
export interface Hpa extends KubernetesObject {
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

/** A MetricMapping as the MetricMapping reconciler sees it (see ScalableWorkloadReconcilerOptions.getMapping). */
export type MappingView = { spec?: unknown; problem?: { reason: string; message: string } } | undefined;

/** What to do with the HPA: its metrics (none: keep no HPA), the Autoscaling condition, a problem for Ready. */
export interface HpaPlan {
  metrics: ResolvedMetric[];
  /** The MetricMapping of each of `metrics`. */
  mappings: string[];
  autoscaling: Problem;
  problem?: Problem;
}

/**
 * Plans the HPA of a ScalableWorkload with `spec.autoscaling`: a metric whose MetricMapping
 * is missing, invalid or can never serve is left out (an HPA metric that can never be read
 * only makes the HPA fail) and reported. `ours`: the HPA this ScalableWorkload owns now.
 */
export function planHpa(
  owner: { namespace: string; name: string },
  spec: ScalableWorkloadSpec & { autoscaling: NonNullable<ScalableWorkloadSpec["autoscaling"]> },
  getMapping: (namespace: string, name: string) => MappingView,
  ours: Hpa | undefined,
): HpaPlan {
  const metrics: ResolvedMetric[] = [];
  const mappings: string[] = [];
  const unusable: string[] = [];
  let missing = false;
  for (const entry of spec.autoscaling.metrics) {
    const mapping = getMapping(owner.namespace, entry.mapping);
    const parsed = MetricMappingSpec.safeParse(mapping?.spec);
    if (!mapping) {
      missing = true;
      unusable.push(`MetricMapping ${entry.mapping} not found`);
    } else if (!parsed.success) {
      unusable.push(`MetricMapping ${entry.mapping} is invalid (InvalidSpec)`);
    } else if (mapping.problem) {
      unusable.push(
        `MetricMapping ${entry.mapping} cannot serve (${mapping.problem.reason}: ${mapping.problem.message})`,
      );
    } else {
      metrics.push(resolveMetric(parsed.data, entry, owner.name));
      mappings.push(entry.mapping);
    }
  }
  const autoscaling: Problem =
    metrics.length > 0
      ? spec.replicas === 0 && spec.autoscaling.activation
        ? {
            status: "True",
            reason: "ScaledToZero",
            message:
              "the workload is at 0 replicas: the HorizontalPodAutoscaler stands still (ScalingDisabled) until the activation metric wakes it",
          }
        : hpaHealth(ours)
      : {
          status: "False",
          reason: "NoUsableMetric",
          message:
            "no metric of spec.autoscaling can be served, so no HorizontalPodAutoscaler is kept; the replicas stay as they are",
        };
  if (unusable.length === 0) return { metrics, mappings, autoscaling };
  return {
    metrics,
    mappings,
    autoscaling,
    problem: {
      status: "False",
      reason: missing ? "MappingNotFound" : "MappingInvalid",
      message: `spec.autoscaling: ${unusable.join("; ")} (namespace ${owner.namespace}); ${
        metrics.length > 0
          ? `the HorizontalPodAutoscaler scales on the other ${metrics.length} metric(s)`
          : "no HorizontalPodAutoscaler is kept until one can serve"
      }`,
    },
  };
}

/** How the HPA reads one `spec.autoscaling.metrics` entry, from its MetricMapping's subject. */
export function resolveMetric(
  m: MetricMappingSpec,
  entry: NonNullable<ScalableWorkloadSpec["autoscaling"]>["metrics"][number],
  ownerName: string,
): ResolvedMetric {
  const target = entry.target;
  if (m.subject.external)
    return { type: "External", metric: m.metric, labels: m.subject.external.labels ?? {}, target };
  if (m.subject.resource === "pods") return { type: "Pods", metric: m.metric, target };
  return {
    type: "Object",
    metric: m.metric,
    object: entry.object ?? { apiVersion: API_VERSION, kind: "ScalableWorkload", name: ownerName },
    target,
  };
}

/** What the HPA's own conditions say: whether it can scale and read its metrics. */
export function hpaHealth(hpa: Hpa | undefined): Problem {
  const conditions = hpa?.status?.conditions ?? [];
  const able = conditions.find((c) => c.type === "AbleToScale");
  const active = conditions.find((c) => c.type === "ScalingActive");
  if (!able || !active)
    return {
      status: "Unknown",
      reason: "Pending",
      message: "the HorizontalPodAutoscaler has not evaluated its metrics yet",
    };
  for (const c of [able, active]) {
    if (c.status !== "True")
      return {
        status: "False",
        reason: c.reason || c.type,
        message: `HorizontalPodAutoscaler ${c.type}: ${c.message ?? ""}`.trim(),
      };
  }
  return {
    status: "True",
    reason: active.reason || "ValidMetricFound",
    message: `HorizontalPodAutoscaler ScalingActive: ${active.message ?? ""}`.trim(),
  };
}

/** The HPA fields that decide {@link hpaHealth}: a change of anything else is not news. */
export function hpaFingerprint(hpa: Hpa): string {
  return (hpa.status?.conditions ?? [])
    .filter((c) => c.type === "AbleToScale" || c.type === "ScalingActive")
    .map((c) => `${c.type}=${c.status}/${c.reason ?? ""}`)
    .sort()
    .join(",");
}
