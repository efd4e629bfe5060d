/**
 * A ScalableWorkload's status as a pure function: the `Ready` condition, `Autoscaling`
 * and `Active` where they apply (each removed where it does not), the workload's figures
 * and the activation state; and whether that differs from what is stored (only then is
 * it written, and only then are new failures announced).
 */
import type { ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { findCondition, sameConditions, setCondition } from "./conditions.js";
import type { Problem } from "./hpa.js";

/** The conditions a reconcile decided. */
export interface WorkloadConditions {
  ready: Problem;
  autoscaling?: Problem;
  active?: Problem;
  activation?: ScalableWorkloadStatus["activation"];
}

/**
 * The status to store for `figures` and `c` over `old`; `changed` says whether it differs,
 * `failures` lists each condition that newly reads False (or changed its reason), to be
 * announced as a Warning.
 */
export function workloadStatus(
  old: ScalableWorkloadStatus,
  generation: number | undefined,
  figures: ScalableWorkloadStatus,
  c: WorkloadConditions,
  now: Date = new Date(),
): { next: ScalableWorkloadStatus; changed: boolean; failures: { type: string; condition: Problem }[] } {
  let conditions = setCondition(old.conditions, { type: "Ready", ...c.ready }, generation, now);
  for (const [type, update] of [
    ["Autoscaling", c.autoscaling],
    ["Active", c.active],
  ] as const) {
    conditions = update
      ? setCondition(conditions, { type, ...update }, generation, now)
      : conditions.filter((x) => x.type !== type);
  }
  const next: ScalableWorkloadStatus = {
    ...figures,
    ...(c.activation ? { activation: c.activation } : {}),
    observedGeneration: generation,
    conditions,
  };
  const changed = !(
    sameConditions(old.conditions, conditions) &&
    old.observedGeneration === generation &&
    old.mode === next.mode &&
    old.replicas === next.replicas &&
    old.readyReplicas === next.readyReplicas &&
    old.selector === next.selector &&
    old.workload === next.workload &&
    JSON.stringify(old.activation ?? null) === JSON.stringify(next.activation ?? null)
  );
  const failures: { type: string; condition: Problem }[] = [];
  if (changed)
    for (const [type, condition] of [
      ["Ready", c.ready],
      ["Autoscaling", c.autoscaling],
    ] as const) {
      const before = findCondition(old.conditions, type);
      if (condition?.status === "False" && (before?.status !== "False" || before.reason !== condition.reason))
        failures.push({ type, condition });
    }
  return { next, changed, failures };
}
