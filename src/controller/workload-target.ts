/**
 * What a ScalableWorkload drives, written by its reconcile: the workload (the Deployment it
 * owns, applied from the template, or the referenced Deployment/StatefulSet, scaled through
 * its /scale subresource) and the HPA (applied with the metrics whose mappings can serve,
 * deleted when none can or in mode Shadow, never adopted). Reads come from the reconciler's informers, whose
 * state the reconciler keeps; this only decides and writes.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { ScalableWorkloadSpec } from "../api/scalable-workload.js";
import type { KubeApi } from "../k8s/client.js";
import type { SharedInformer } from "../k8s/informer-cache.js";
import { buildDeployment, buildHpa, type Owner } from "../manifests/workload.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { type Hpa, type MappingView, type Problem, planHpa } from "./hpa.js";

/** A Deployment or StatefulSet, as far as a ScalableWorkload reads it. */
export interface Workload extends KubernetesObject {
  spec?: {
    replicas?: number;
    selector?: {
      matchLabels?: Record<string, string>;
      matchExpressions?: { key: string; operator: string; values?: string[] }[];
    };
  };
  status?: { replicas?: number; readyReplicas?: number; observedGeneration?: number };
}

/** The collection of each kind of workload a ScalableWorkload can drive. */
export const WORKLOAD_PATHS = { Deployment: "deployments", StatefulSet: "statefulsets" } as const;

/** The workload a ScalableWorkload drives, found. */
export interface ResolvedWorkload {
  kind: "Deployment" | "StatefulSet";
  workload: Workload;
  selector: LabelSelector;
}

/** What deciding and writing takes from the reconciler. */
export interface TargetDeps {
  client: KubeApi;
  fieldManager: string;
  deployments: SharedInformer<Workload>;
  statefulSets: SharedInformer<Workload>;
  hpas: SharedInformer<Hpa>;
  getMapping: (namespace: string, name: string) => MappingView;
  /** Remembers a referenced workload (`Kind/namespace/name`), so its changes reconcile the ScalableWorkload. */
  track: (refKey: string) => void;
  /** Says the workload's replicas were moved (an Event). */
  scaled: (kind: string, name: string, from: number | undefined, to: number) => void;
}

/**
 * The workload to drive, with its replicas carried over: the owned Deployment (applied
 * from the template) or the referenced one; or why there is none.
 */
export async function resolveWorkload(
  deps: TargetDeps,
  owner: Owner,
  spec: ScalableWorkloadSpec,
): Promise<ResolvedWorkload | { problem: Problem; retryMs?: number }> {
  const { name, namespace } = owner;
  if (spec.template) {
    let selector: LabelSelector;
    try {
      selector = LabelSelector.fromObject(spec.selector); // required with template: a schema rule
    } catch (err) {
      return { problem: { status: "False", reason: "InvalidSelector", message: (err as Error).message } };
    }
    const labels =
      (spec.template as { metadata?: { labels?: Record<string, string> } }).metadata?.labels ?? {};
    if (selector.empty || !selector.matches(labels)) {
      return {
        problem: {
          status: "False",
          reason: "InvalidSelector",
          message: `spec.selector (${selector.toString() || "empty"}) must select the template's labels`,
        },
      };
    }
    const path = `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`;
    const existing = deps.deployments.get(name, namespace);
    if (existing && !existing.metadata?.ownerReferences?.some((r) => r.uid === owner.uid)) {
      return {
        problem: {
          status: "False",
          reason: "DeploymentExists",
          message: `a Deployment named ${name} exists and is not owned by this ScalableWorkload; use spec.workloadRef to drive it`,
        },
      };
    }
    const workload = await deps.client.apply<Workload>(path, buildDeployment(owner, spec), {
      fieldManager: deps.fieldManager,
    });
    if (existing?.spec?.replicas !== undefined && existing.spec.replicas !== spec.replicas) {
      deps.scaled("Deployment", name, existing.spec.replicas, spec.replicas);
    }
    return { kind: "Deployment", workload, selector };
  }
  const ref = spec.workloadRef!;
  const kind = ref.kind;
  deps.track(`${kind}/${namespace}/${ref.name}`);
  const informer = kind === "Deployment" ? deps.deployments : deps.statefulSets;
  const workload = informer.get(ref.name, namespace);
  if (!workload) {
    return {
      problem: {
        status: "False",
        reason: "WorkloadNotFound",
        message: `${kind} ${ref.name} not found in namespace ${namespace}`,
      },
      retryMs: 30_000,
    };
  }
  let selector: LabelSelector;
  try {
    selector = LabelSelector.fromObject(workload.spec?.selector);
  } catch (err) {
    return {
      problem: {
        status: "False",
        reason: "InvalidSelector",
        message: `${kind} ${ref.name}: ${(err as Error).message}`,
      },
    };
  }
  // In mode Shadow the replicas are the live autoscaler's: only read.
  if (spec.autoscaling?.mode !== "Shadow" && workload.spec?.replicas !== spec.replicas) {
    await deps.client.mergePatch(
      `/apis/apps/v1/namespaces/${namespace}/${WORKLOAD_PATHS[kind]}/${ref.name}/scale`,
      { spec: { replicas: spec.replicas } },
    );
    deps.scaled(kind, ref.name, workload.spec?.replicas, spec.replicas);
  }
  return { kind, workload, selector };
}

/** The Autoscaling condition of mode Shadow. */
const SHADOW: Problem = {
  status: "True",
  reason: "Shadow",
  message:
    "spec.autoscaling.mode is Shadow: no HorizontalPodAutoscaler and no change to the replicas; what the HPA would choose is in status.recommendation",
};

/**
 * Applies the owned HPA with the metrics whose MetricMapping can serve, and deletes it
 * when none can (or `spec.autoscaling` is gone): an HPA metric that can never be read
 * only makes the HPA fail. Returns a problem for `Ready`, if any, and the `Autoscaling`
 * condition, read from the HPA's own status.
 */
export async function reconcileHpa(
  deps: TargetDeps,
  owner: Owner,
  spec: ScalableWorkloadSpec,
): Promise<{ problem?: Problem; autoscaling?: Problem }> {
  const path = `/apis/autoscaling/v2/namespaces/${owner.namespace}/horizontalpodautoscalers/${owner.name}`;
  const existing = deps.hpas.get(owner.name, owner.namespace);
  const ours = existing?.metadata?.ownerReferences?.some((r) => r.uid === owner.uid) ?? false;
  if (!spec.autoscaling) {
    if (ours) await deps.client.delete(path);
    return {};
  }
  if (spec.autoscaling.mode === "Shadow") {
    // Beside the live autoscaler, whose HPA may well have this name: never touched.
    if (ours) await deps.client.delete(path);
    const plan = planHpa(owner, { ...spec, autoscaling: spec.autoscaling }, deps.getMapping, undefined);
    return { problem: plan.problem, autoscaling: SHADOW };
  }
  // Never adopt: an HPA of the same name that this ScalableWorkload did not create may
  // be another team's, and applying over it would take it over.
  if (existing && !ours)
    return {
      problem: {
        status: "False",
        reason: "HorizontalPodAutoscalerExists",
        message: `spec.autoscaling: a HorizontalPodAutoscaler named ${owner.name} exists and is not owned by this ScalableWorkload; Governor leaves it alone (delete it, or drop spec.autoscaling)`,
      },
    };
  const plan = planHpa(
    owner,
    { ...spec, autoscaling: spec.autoscaling },
    deps.getMapping,
    ours ? existing : undefined,
  );
  if (plan.metrics.length > 0) {
    await deps.client.apply(path, buildHpa(owner, spec, plan.metrics), {
      fieldManager: deps.fieldManager,
    });
  } else if (ours) {
    await deps.client.delete(path);
  }
  return { problem: plan.problem, autoscaling: plan.autoscaling };
}
