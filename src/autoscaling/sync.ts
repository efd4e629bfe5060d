/**
 * One sync of the HPA controller, as kube-controller-manager 1.37 runs it
 * (pkg/controller/podautoscaler, horizontal.go `reconcileAutoscaler`): from each metric's
 * proposal (proposals.ts) to the replicas it sets — several metrics (the largest wins; an
 * invalid one blocks a scale-down), min/max, the scale-up limit without `behavior`,
 * `behavior`'s policies and stabilization windows over the recommendations it remembers,
 * scale to zero. Pure but for the {@link HpaMemory} it updates, as the controller updates
 * its own in-memory history; time is the caller's `nowMs`.
 */
import { DEFAULT_TOLERANCE, MAX_INT32, type Tolerances } from "./proposals.js";

export interface ScalingPolicy {
  type: "Pods" | "Percent";
  value: number;
  periodSeconds: number;
}

/** `behavior.scaleUp` / `behavior.scaleDown` as the HPA spells them. */
export interface ScalingRules {
  stabilizationWindowSeconds?: number;
  selectPolicy?: "Max" | "Min" | "Disabled";
  policies?: ScalingPolicy[];
  /** A fraction (the HPA's quantity `0.05` is 0.05). */
  tolerance?: number;
}

export interface Behavior {
  scaleUp?: ScalingRules;
  scaleDown?: ScalingRules;
}

/** The controller's own flags. */
export interface ControllerConfig {
  /** `--horizontal-pod-autoscaler-tolerance` (0.1). */
  tolerance: number;
  /** `--horizontal-pod-autoscaler-downscale-stabilization` (5 min). */
  downscaleStabilizationSeconds: number;
  /** The `HPAScaleToZero` feature gate (beta, on, in 1.37). */
  scaleToZero: boolean;
}

export const DEFAULT_CONTROLLER: ControllerConfig = {
  tolerance: DEFAULT_TOLERANCE,
  downscaleStabilizationSeconds: 300,
  scaleToZero: true,
};

/** `behavior` with the apiserver's defaults filled in (autoscaling/v2 `SetDefaults_HorizontalPodAutoscalerBehavior`). */
type Defaulted = ScalingRules & Required<Pick<ScalingRules, "selectPolicy" | "policies">>;

export function defaultedBehavior(b: Behavior): {
  scaleUp: Defaulted & { stabilizationWindowSeconds: number };
  scaleDown: Defaulted;
} {
  return {
    scaleUp: {
      stabilizationWindowSeconds: 0,
      selectPolicy: "Max",
      policies: [
        { type: "Pods", value: 4, periodSeconds: 15 },
        { type: "Percent", value: 100, periodSeconds: 15 },
      ],
      ...definedOnly(b.scaleUp),
    },
    scaleDown: {
      selectPolicy: "Max",
      policies: [{ type: "Percent", value: 100, periodSeconds: 15 }],
      ...definedOnly(b.scaleDown),
    },
  };
}

function definedOnly(r: ScalingRules | undefined): ScalingRules {
  const out: ScalingRules = {};
  if (r?.stabilizationWindowSeconds !== undefined)
    out.stabilizationWindowSeconds = r.stabilizationWindowSeconds;
  if (r?.selectPolicy !== undefined) out.selectPolicy = r.selectPolicy;
  if (r?.policies !== undefined) out.policies = r.policies;
  if (r?.tolerance !== undefined) out.tolerance = r.tolerance;
  return out;
}

/** The tolerances an HPA gets: the controller's, or its behavior's own (`tolerancesForHpa`). */
export function tolerancesFor(
  behavior: Behavior | undefined,
  config: ControllerConfig = DEFAULT_CONTROLLER,
): Tolerances {
  return {
    down: behavior?.scaleDown?.tolerance ?? config.tolerance,
    up: behavior?.scaleUp?.tolerance ?? config.tolerance,
  };
}

/** What the controller remembers of one HPA between syncs (lost when it restarts). */
export interface HpaMemory {
  recommendations?: { replicas: number; atMs: number }[];
  scaleUpEvents: ScaleEvent[];
  scaleDownEvents: ScaleEvent[];
}

export interface ScaleEvent {
  change: number;
  atMs: number;
  outdated: boolean;
}

export const newMemory = (): HpaMemory => ({ scaleUpEvents: [], scaleDownEvents: [] });

/** One metric's part in a sync: its proposal, or why it has none. */
export type MetricOutcome =
  { metric: string; replicas: number } | { metric: string; error: string; reason: string };

export interface SyncInput {
  nowMs: number;
  /** `spec.minReplicas` (the apiserver defaults it to 1). */
  minReplicas?: number;
  maxReplicas: number;
  behavior?: Behavior;
  /** The target's `/scale` `spec.replicas`. */
  currentReplicas: number;
  /** Each metric of `spec.metrics`, in order; computed only if the sync needs them. */
  metrics: () => MetricOutcome[];
  /** Any Object or External metric (scaling from zero needs one). */
  hasObjectOrExternal: boolean;
  /** The HPA's `ScaledToZero` condition is True. */
  scaledToZero: boolean;
  /**
   * Whether this sync's rescale is remembered for `behavior`'s policies, as the controller
   * remembers its own writes. False where the replicas are moved by someone else and each
   * observed change is remembered instead ({@link recordScale}): a recommendation. @default true
   */
  recordRescale?: boolean;
}

export type ConditionStatus = "True" | "False";
export interface Condition {
  status: ConditionStatus;
  reason: string;
  message: string;
}

export interface SyncResult {
  /** The replicas the HPA sets (or leaves) on the target. */
  desiredReplicas: number;
  /** Whether it writes `/scale`. */
  rescale: boolean;
  /** The largest proposal before bounds and stabilization, if metrics were computed. */
  proposed?: number;
  /** The metric whose proposal that was. */
  metric?: string;
  /** The controller's reason for a rescale ("pods metric x above target"). */
  reason: string;
  /** `ScalingActive`, `AbleToScale`, `ScalingLimited` as this sync sets them (those it touches). */
  conditions: Partial<Record<"ScalingActive" | "AbleToScale" | "ScalingLimited" | "ScaledToZero", Condition>>;
  /** Each metric's outcome, when computed. */
  outcomes?: MetricOutcome[];
  /** An error the sync reports (it may still scale: some metrics failed but the rest scale up). */
  error?: string;
}

/** Runs one sync; `memory` changes as the controller's does. The `/scale` write is assumed to succeed. */
export function sync(
  input: SyncInput,
  memory: HpaMemory,
  config: ControllerConfig = DEFAULT_CONTROLLER,
): SyncResult {
  const { currentReplicas, maxReplicas } = input;
  const minReplicas = input.minReplicas ?? 1;
  const conditions: SyncResult["conditions"] = {};
  memory.recommendations ??= [{ replicas: currentReplicas, atMs: input.nowMs }];

  let desiredReplicas = 0;
  let reason = "";
  let rescale = true;
  let needsMetrics = true;
  const scaledToZero = config.scaleToZero && input.scaledToZero;
  if (currentReplicas === 0) {
    if (!((minReplicas !== 0 && scaledToZero) || (scaledToZero && input.hasObjectOrExternal))) {
      needsMetrics = false;
      rescale = false;
      conditions.ScalingActive = {
        status: "False",
        reason: "ScalingDisabled",
        message: "scaling is disabled since the replica count of the target is zero",
      };
    }
  } else if (currentReplicas > maxReplicas) {
    reason = "Current number of replicas above Spec.MaxReplicas";
    desiredReplicas = maxReplicas;
    needsMetrics = false;
  } else if (currentReplicas < minReplicas) {
    reason = "Current number of replicas below Spec.MinReplicas";
    desiredReplicas = minReplicas;
    needsMetrics = false;
  }

  let proposed: number | undefined;
  let metric: string | undefined;
  let outcomes: MetricOutcome[] | undefined;
  let error: string | undefined;
  if (needsMetrics) {
    outcomes = input.metrics();
    const combined = combine(outcomes, currentReplicas);
    if (combined.condition) conditions.ScalingActive = combined.condition;
    if (combined.replicas === -1)
      return {
        desiredReplicas: currentReplicas,
        rescale: false,
        reason: "",
        conditions,
        outcomes,
        error: combined.error,
      };
    error = combined.error;
    proposed = combined.replicas;
    metric = combined.metric;
    let rescaleMetric = "";
    if (combined.replicas > desiredReplicas) {
      desiredReplicas = combined.replicas;
      rescaleMetric = combined.metric;
    }
    if (desiredReplicas > currentReplicas) reason = `${rescaleMetric} above target`;
    if (desiredReplicas < currentReplicas) reason = "All metrics below target";
    desiredReplicas =
      input.behavior === undefined
        ? normalize(input, memory, config, desiredReplicas, minReplicas, conditions)
        : normalizeWithBehavior(input, memory, config, desiredReplicas, minReplicas, conditions);
    if (currentReplicas === 0 && minReplicas !== 0 && scaledToZero && desiredReplicas < minReplicas) {
      desiredReplicas = minReplicas;
      if (reason === "") reason = "Current number of replicas below Spec.MinReplicas";
    }
    rescale = desiredReplicas !== currentReplicas;
  }

  if (rescale) {
    conditions.AbleToScale = {
      status: "True",
      reason: "SucceededRescale",
      message: `the HPA controller was able to update the target scale to ${desiredReplicas}`,
    };
    if (input.recordRescale !== false && input.behavior !== undefined)
      recordScale(input.behavior, memory, currentReplicas, desiredReplicas, input.nowMs);
    if (config.scaleToZero)
      conditions.ScaledToZero =
        currentReplicas > 0 && desiredReplicas === 0 && minReplicas === 0 && input.hasObjectOrExternal
          ? {
              status: "True",
              reason: "ScaledToZero",
              message: "the HPA controller scaled the workload to zero",
            }
          : {
              status: "False",
              reason: "NotScaledToZero",
              message: "the HPA controller did not scale the workload to zero",
            };
  } else desiredReplicas = currentReplicas;
  return {
    desiredReplicas,
    rescale,
    ...(proposed !== undefined ? { proposed } : {}),
    ...(metric !== undefined ? { metric } : {}),
    reason,
    conditions,
    ...(outcomes ? { outcomes } : {}),
    ...(error !== undefined ? { error } : {}),
  };
}

/**
 * `computeReplicasForMetrics`: the largest proposal; -1 if every metric failed, or if some
 * failed and the rest would scale down (a failing metric never lets the HPA scale down).
 */
function combine(
  outcomes: readonly MetricOutcome[],
  specReplicas: number,
): { replicas: number; metric: string; error?: string; condition?: Condition } {
  let replicas = 0;
  let metric = "";
  let invalid = 0;
  let first: { error: string; reason: string } | undefined;
  for (const o of outcomes) {
    if ("error" in o) {
      if (invalid === 0) first = o;
      invalid++;
      continue;
    }
    if (replicas === 0 || o.replicas > replicas) {
      replicas = o.replicas;
      metric = o.metric;
    }
  }
  const error =
    first && `invalid metrics (${invalid} invalid out of ${outcomes.length}), first error is: ${first.error}`;
  if (first && (invalid >= outcomes.length || replicas < specReplicas))
    return {
      replicas: -1,
      metric: "",
      ...(error ? { error } : {}),
      condition: {
        status: "False",
        reason: first.reason,
        message: `the HPA was unable to compute the replica count: ${first.error}`,
      },
    };
  return {
    replicas,
    metric,
    ...(error ? { error } : {}),
    condition: {
      status: "True",
      reason: "ValidMetricFound",
      message: `the HPA was able to successfully calculate a replica count from ${metric}`,
    },
  };
}

/** Without `behavior`: the highest recommendation of the downscale window, then min/max and the scale-up limit. */
function normalize(
  input: SyncInput,
  memory: HpaMemory,
  config: ControllerConfig,
  prenormalized: number,
  minReplicas: number,
  conditions: SyncResult["conditions"],
): number {
  const max = stabilizeDown(
    memory.recommendations!,
    input.nowMs,
    prenormalized,
    config.downscaleStabilizationSeconds,
  );
  conditions.AbleToScale =
    max !== prenormalized ? ableToScale("ScaleDownStabilized") : ableToScale("ReadyForNewScale");
  const { replicas, condition } = withRules(input.currentReplicas, max, minReplicas, input.maxReplicas);
  conditions.ScalingLimited =
    replicas === max ? { status: "False", reason: condition.reason, message: condition.message } : condition;
  return replicas;
}

/**
 * `stabilizeRecommendation`: the highest of `prenormalized` and the recommendations of the
 * last `windowSeconds`; records `prenormalized` (in the place of an expired one, if any).
 */
export function stabilizeDown(
  recs: { replicas: number; atMs: number }[],
  nowMs: number,
  prenormalized: number,
  windowSeconds: number,
): number {
  const cutoff = nowMs - windowSeconds * 1000;
  let max = prenormalized;
  let old = -1;
  recs.forEach((rec, i) => {
    if (rec.atMs < cutoff) old = i;
    else if (rec.replicas > max) max = rec.replicas;
  });
  const fresh = { replicas: prenormalized, atMs: nowMs };
  if (old >= 0) recs[old] = fresh;
  else recs.push(fresh);
  return max;
}

/** `AbleToScale=True` for `reason`, in the controller's words. */
const ableToScale = (reason: keyof typeof ABLE): Condition => ({
  status: "True",
  reason,
  message: ABLE[reason],
});
const ABLE = {
  ScaleUpStabilized:
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
  ScaleDownStabilized:
    "recent recommendations were higher than current one, applying the highest recent recommendation",
  ReadyForNewScale: "recommended size matches current size",
} as const;

/** `ScalingLimited=True` for `reason`, in the controller's words. */
const limited = (reason: keyof typeof LIMITED): Condition => ({
  status: "True",
  reason,
  message: LIMITED[reason],
});
const LIMITED = {
  ScaleUpLimit: "the desired replica count is increasing faster than the maximum scale rate",
  TooManyReplicas: "the desired replica count is more than the maximum replica count",
  TooFewReplicas: "the desired replica count is less than the minimum replica count",
  ScaleDownLimit: "the desired replica count is decreasing faster than the maximum scale rate",
} as const;
const WITHIN_RANGE: Condition = {
  status: "False",
  reason: "DesiredWithinRange",
  message: "the desired count is within the acceptable range",
};

/** `convertDesiredReplicasWithRules`: min, max and, without `behavior`, at most double (at least 4). */
export function withRules(
  currentReplicas: number,
  desired: number,
  minReplicas: number,
  maxReplicas: number,
): { replicas: number; condition: Condition } {
  const scaleUpLimit = Math.trunc(Math.max(2 * currentReplicas, 4));
  const [maximum, over]: [number, Condition] =
    maxReplicas > scaleUpLimit
      ? [scaleUpLimit, limited("ScaleUpLimit")]
      : [maxReplicas, limited("TooManyReplicas")];
  if (desired < minReplicas)
    return {
      replicas: minReplicas,
      condition: limited("TooFewReplicas"),
    };
  if (desired > maximum) return { replicas: maximum, condition: over };
  return {
    replicas: desired,
    condition: WITHIN_RANGE,
  };
}

/** With `behavior`: the stabilization windows, then the policies' rate and min/max. */
function normalizeWithBehavior(
  input: SyncInput,
  memory: HpaMemory,
  config: ControllerConfig,
  prenormalized: number,
  minReplicas: number,
  conditions: SyncResult["conditions"],
): number {
  const behavior = defaultedBehavior(input.behavior!);
  const downWindow = behavior.scaleDown.stabilizationWindowSeconds ?? config.downscaleStabilizationSeconds;
  const { currentReplicas, nowMs } = input;

  const stabilized = stabilizeWithBehavior(
    memory.recommendations!,
    nowMs,
    prenormalized,
    currentReplicas,
    behavior.scaleUp.stabilizationWindowSeconds,
    downWindow,
  );
  conditions.AbleToScale =
    stabilized !== prenormalized
      ? prenormalized >= currentReplicas
        ? ableToScale("ScaleUpStabilized")
        : ableToScale("ScaleDownStabilized")
      : ableToScale("ReadyForNewScale");

  const { replicas, condition } = withBehaviorRate(
    currentReplicas,
    stabilized,
    minReplicas,
    input.maxReplicas,
    behavior,
    memory,
    nowMs,
  );
  conditions.ScalingLimited =
    replicas === stabilized
      ? { status: "False", reason: condition.reason, message: condition.message }
      : condition;
  return replicas;
}

/**
 * `convertDesiredReplicasWithBehaviorRate`: the policies' rate over the scale events of their
 * periods, and min/max; `behavior` defaulted.
 */
export function withBehaviorRate(
  currentReplicas: number,
  desired: number,
  minReplicas: number,
  maxReplicas: number,
  behavior: { scaleUp: ScalingRules; scaleDown: ScalingRules },
  memory: Pick<HpaMemory, "scaleUpEvents" | "scaleDownEvents">,
  nowMs: number,
): { replicas: number; condition: Condition } {
  if (desired > currentReplicas) {
    const scaleUpLimit = Math.max(
      currentReplicas,
      scaleUpLimitOf(currentReplicas, memory, behavior.scaleUp, nowMs),
    );
    const [maximum, condition]: [number, Condition] =
      maxReplicas > scaleUpLimit
        ? [scaleUpLimit, limited("ScaleUpLimit")]
        : [maxReplicas, limited("TooManyReplicas")];
    if (desired > maximum) return { replicas: maximum, condition };
  } else if (desired < currentReplicas) {
    const scaleDownLimit = Math.min(
      currentReplicas,
      scaleDownLimitOf(currentReplicas, memory, behavior.scaleDown, nowMs),
    );
    const [minimum, condition]: [number, Condition] =
      minReplicas < scaleDownLimit
        ? [scaleDownLimit, limited("ScaleDownLimit")]
        : [minReplicas, limited("TooFewReplicas")];
    if (desired < minimum) return { replicas: minimum, condition };
  }
  return {
    replicas: desired,
    condition: WITHIN_RANGE,
  };
}

const changeInPeriod = (periodSeconds: number, events: readonly ScaleEvent[], nowMs: number): number => {
  const cutoff = nowMs - periodSeconds * 1000;
  let replicas = 0;
  for (const e of events) if (e.atMs > cutoff) replicas += e.change;
  return replicas;
};

/** The replicas at the start of a policy's period: now, less the changes made within it. */
const periodStart = (
  current: number,
  periodSeconds: number,
  memory: Pick<HpaMemory, "scaleUpEvents" | "scaleDownEvents">,
  nowMs: number,
): number =>
  current -
  changeInPeriod(periodSeconds, memory.scaleUpEvents, nowMs) +
  changeInPeriod(periodSeconds, memory.scaleDownEvents, nowMs);

/** `calculateScaleUpLimitWithScalingRules`. */
export function scaleUpLimitOf(
  current: number,
  memory: Pick<HpaMemory, "scaleUpEvents" | "scaleDownEvents">,
  rules: ScalingRules,
  nowMs: number,
): number {
  if (rules.selectPolicy === "Disabled") return current;
  const min = rules.selectPolicy === "Min";
  let result = min ? MAX_INT32 : -MAX_INT32 - 1;
  for (const policy of rules.policies ?? []) {
    const start = periodStart(current, policy.periodSeconds, memory, nowMs);
    const proposed =
      policy.type === "Pods" ? start + policy.value : Math.ceil(start * (1 + policy.value / 100));
    result = min ? Math.min(result, proposed) : Math.max(result, proposed);
  }
  return result;
}

/** `calculateScaleDownLimitWithBehaviors`. */
export function scaleDownLimitOf(
  current: number,
  memory: Pick<HpaMemory, "scaleUpEvents" | "scaleDownEvents">,
  rules: ScalingRules,
  nowMs: number,
): number {
  if (rules.selectPolicy === "Disabled") return current;
  const min = rules.selectPolicy === "Min";
  let result = min ? -MAX_INT32 - 1 : MAX_INT32;
  for (const policy of rules.policies ?? []) {
    const start = periodStart(current, policy.periodSeconds, memory, nowMs);
    const proposed =
      policy.type === "Pods" ? start - policy.value : Math.trunc(start * (1 - policy.value / 100));
    result = min ? Math.max(result, proposed) : Math.min(result, proposed);
  }
  return result;
}

/**
 * `stabilizeRecommendationWithBehaviors`: `currentReplicas` held between the lowest
 * recommendation of the scale-up window and the highest of the scale-down window (each
 * with `prenormalized`); records `prenormalized` in the place of one expired for both, if any.
 */
export function stabilizeWithBehavior(
  recs: { replicas: number; atMs: number }[],
  nowMs: number,
  prenormalized: number,
  currentReplicas: number,
  upWindowSeconds: number,
  downWindowSeconds: number,
): number {
  const upCutoff = nowMs - upWindowSeconds * 1000;
  const downCutoff = nowMs - downWindowSeconds * 1000;
  let up = prenormalized;
  let down = prenormalized;
  let old = -1;
  recs.forEach((rec, i) => {
    if (rec.atMs > upCutoff) up = Math.min(rec.replicas, up);
    if (rec.atMs > downCutoff) down = Math.max(rec.replicas, down);
    if (rec.atMs < upCutoff && rec.atMs < downCutoff) old = i;
  });
  let stabilized = currentReplicas;
  if (stabilized < up) stabilized = up;
  if (stabilized > down) stabilized = down;
  const fresh = { replicas: prenormalized, atMs: nowMs };
  if (old >= 0) recs[old] = fresh;
  else recs.push(fresh);
  return stabilized;
}

/**
 * `storeScaleEvent`: a change of the replicas from `prev` to `next` is remembered for
 * `behavior`'s policies, reusing an event older than every policy's period.
 */
export function recordScale(
  b: Behavior,
  memory: Pick<HpaMemory, "scaleUpEvents" | "scaleDownEvents">,
  prev: number,
  next: number,
  nowMs: number,
): void {
  const behavior = defaultedBehavior(b);
  const up = next > prev;
  const rules = up ? behavior.scaleUp : behavior.scaleDown;
  const events = up ? memory.scaleUpEvents : memory.scaleDownEvents;
  const longest = Math.max(0, ...(rules.policies ?? []).map((p) => p.periodSeconds));
  const cutoff = nowMs - longest * 1000;
  let old = -1;
  events.forEach((e, i) => {
    if (e.atMs < cutoff) e.outdated = true;
    if (e.outdated) old = i;
  });
  const event = { change: up ? next - prev : prev - next, atMs: nowMs, outdated: false };
  if (old >= 0) events[old] = event;
  else events.push(event);
}
