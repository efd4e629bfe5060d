/**
 * A decision (decide.ts) as a ScalableWorkload's `status.recommendation` says it: the
 * replicas, the metric whose proposal decides, and why — in words that change only when
 * the decision does (no current values in them), so that a recommendation is written
 * when it changes, not at every sync. Pure.
 */
import type { Decision } from "./decide.js";

/** What `status.recommendation` carries, but its time. */
export interface Recommendation {
  replicas: number;
  /** The name shown for the metric whose proposal decides (a MetricMapping's). */
  metric?: string;
  /** A CamelCase word: see {@link recommendationOf}. */
  reason: string;
  message: string;
}

/**
 * The recommendation `d` makes; `names[i]` is the name to show for `spec.metrics[i]`.
 * Reasons, first that applies: the controller's own when no metric gives a proposal
 * (`FailedGetPodsMetric`…, `ScalingDisabled` at 0 replicas); `TooFewReplicas`,
 * `TooManyReplicas`, `ScaleUpLimit`, `ScaleDownLimit` when a bound or a policy changed
 * the proposal; `ScaleUpStabilized`, `ScaleDownStabilized` when a window held it back;
 * else `AboveTarget`, `BelowTarget` or `WithinTolerance`.
 */
export function recommendationOf(d: Decision, names: readonly string[]): Recommendation {
  const n = d.next;
  const current = d.specReplicas;
  const active = n.conditions.ScalingActive;
  if (n.proposed === undefined) {
    // No metric was weighed: out of range (a bound), at 0 replicas, or every metric failed.
    if (n.reason.includes("MaxReplicas"))
      return limitedTo("TooManyReplicas", n.desiredReplicas, `above maxReplicas ${d.maxReplicas}`);
    if (n.reason.includes("MinReplicas"))
      return limitedTo("TooFewReplicas", n.desiredReplicas, `below minReplicas ${d.minReplicas}`);
    return {
      replicas: n.desiredReplicas,
      reason: active?.reason || "NoProposal",
      message: active?.message ?? "no metric gave a proposal",
    };
  }
  const at = d.metrics.findIndex((m) => m.proposal === n.proposed);
  const metric = at >= 0 ? (names[at] ?? d.metrics[at]!.metric) : undefined;
  const base = { replicas: n.desiredReplicas, ...(metric !== undefined ? { metric } : {}) };
  const limited = n.conditions.ScalingLimited;
  if (limited?.status === "True")
    return { ...base, reason: limited.reason, message: `${limited.message}${failing(n.error)}` };
  if (n.desiredReplicas !== n.proposed) {
    // Not a bound or a policy: a window's recommendation held the proposal back.
    const up = n.desiredReplicas < n.proposed;
    return {
      ...base,
      reason: up ? "ScaleUpStabilized" : "ScaleDownStabilized",
      message: `${up ? "the lowest" : "the highest"} recommendation of the ${up ? "scale-up" : "scale-down"} stabilization window holds it${failing(n.error)}`,
    };
  }
  if (n.desiredReplicas > current)
    return { ...base, reason: "AboveTarget", message: `${metric} is above its target${failing(n.error)}` };
  if (n.desiredReplicas < current)
    return { ...base, reason: "BelowTarget", message: "every metric is below its target" };
  return {
    ...base,
    reason: "WithinTolerance",
    message: `every metric is within the tolerance of its target${failing(n.error)}`,
  };
}

function limitedTo(reason: string, replicas: number, why: string): Recommendation {
  return { replicas, reason, message: `the current replicas are ${why}` };
}

/** Some metrics failed while others scaled up: said, as the controller says it. */
const failing = (error: string | undefined) => (error ? `; ${error}` : "");

/** Whether a stored recommendation says the same (its time and message aside). */
export function sameRecommendation(
  a: { replicas: number; metric?: string; reason: string } | undefined,
  b: Recommendation,
): boolean {
  return a !== undefined && a.replicas === b.replicas && a.metric === b.metric && a.reason === b.reason;
}
