/**
 * The HPA controller's per-metric replica proposals for custom and external metrics, as
 * kube-controller-manager 1.37 computes them (pkg/controller/podautoscaler,
 * replica_calculator.go): Pods metrics with `averageValue`, Object metrics with `value` or
 * `averageValue`, External metrics with `value` or `averageValue`. Pure: the caller hands in
 * the values the metrics APIs answered and the pods the HPA's selector matches.
 *
 * Values are milli-units as the controller reads them (`Quantity.MilliValue()`, rounded up)
 * and kept as bigint: the controller sums and divides int64s, and its integer division and
 * its caps at MaxInt64 decide some answers. Replica counts are int32s, capped at MaxInt32
 * where the controller caps them (and, where it does not, here too rather than wrap).
 */

/** A ratio within `1 - down … 1 + up` leaves the replicas as they are. */
export interface Tolerances {
  down: number;
  up: number;
}

/** The controller's `--horizontal-pod-autoscaler-tolerance` default. */
export const DEFAULT_TOLERANCE = 0.1;

export const MAX_INT32 = 2 ** 31 - 1;
export const MAX_INT64 = 2n ** 63n - 1n;

/** What the controller knows of a pod the HPA's selector matches. */
export interface PodFacts {
  name: string;
  phase: "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown";
  /** Has a deletion timestamp. */
  deleting?: boolean;
  /** Its Ready condition is True. */
  ready?: boolean;
}

/** A metric's proposal: the replicas it asks for and the current value the HPA's status shows (milli). */
export interface Proposal {
  replicas: number;
  usage: bigint;
}

/** Why a metric has no proposal, in the controller's words. */
export class ProposalError extends Error {}

const DECIMAL_SUFFIX: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  "": 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};
const BINARY_SUFFIX: Record<string, bigint> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};
const QUANTITY =
  /^([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$/;

/** `ceil(n / d)` away from zero, for d > 0. */
const divAway = (n: bigint, d: bigint): bigint => {
  const q = n / d;
  return n % d === 0n ? q : n > 0n ? q + 1n : q - 1n;
};

/**
 * The milli-value of a quantity's text as `Quantity.MilliValue()` gives it, exactly: parsing
 * keeps nine decimals (rounding up), and milli-units round away from zero. A value whose
 * milli-units do not fit an int64 is refused: there the controller's own arithmetic
 * overflows, and simulate will not pretend to know what it then does.
 */
export function milli(text: string): bigint {
  const m = text.length <= 128 ? QUANTITY.exec(text.trim()) : null;
  if (!m || (m[2] === "" && (m[3] ?? "") === ""))
    throw new ProposalError(`${text.slice(0, 64)} is not a quantity`);
  const [, sign, whole = "", fraction = "", exponent, suffix = ""] = m;
  // value = digits × 10^(scale) × binary
  const digits = BigInt(`${whole}${fraction}` || "0");
  let scale = -fraction.length;
  let binary = 1n;
  if (exponent !== undefined) scale += Number(exponent);
  else if (suffix in BINARY_SUFFIX) binary = BINARY_SUFFIX[suffix]!;
  else scale += DECIMAL_SUFFIX[suffix]!;
  let nano = digits * binary; // in 10^scale units; to nano-units (10^-9), rounding up
  const toNano = scale + 9;
  nano =
    toNano >= 0
      ? toNano > 40
        ? MAX_INT64 * 1000n
        : nano * 10n ** BigInt(toNano)
      : divAway(nano, 10n ** BigInt(-toNano));
  if (sign === "-") nano = -nano;
  const result = divAway(nano, 1_000_000n);
  if (result > MAX_INT64 || result < -MAX_INT64 - 1n)
    throw new ProposalError(
      `${text.slice(0, 64)} is out of the range the HPA reads exactly (an int64 of milli-units)`,
    );
  return result;
}

export const isWithin = (t: Tolerances, ratio: number): boolean => 1 - t.down <= ratio && ratio <= 1 + t.up;

/** Go's `int32(math.Ceil(x))` where the controller caps at MaxInt32 (and where it would wrap). */
const ceilReplicas = (x: number): number => (x > MAX_INT32 ? MAX_INT32 : Math.ceil(x));

/** `float64(a) / float64(b)`. */
const ratioOf = (a: bigint, b: bigint): number => Number(a) / Number(b);

/**
 * A Pods metric with an `averageValue` target (`GetMetricReplicas` → `calcPlainMetricReplicas`):
 * the average over the pods that have a value; pending pods count as unready, pods without
 * a value as missing, and both are filled in so that they can only damp a change, never turn it.
 */
export function podsMetricReplicas(
  currentReplicas: number,
  target: bigint,
  values: ReadonlyMap<string, bigint>,
  pods: readonly PodFacts[],
  tolerances: Tolerances,
): Proposal {
  if (pods.length === 0)
    throw new ProposalError("no pods returned by selector while calculating replica count");
  const metrics = new Map(values);
  let readyPodCount = 0;
  const unready: string[] = [];
  const missing: string[] = [];
  for (const pod of pods) {
    if (pod.deleting || pod.phase === "Failed") {
      metrics.delete(pod.name);
      continue;
    }
    if (pod.phase === "Pending") {
      unready.push(pod.name);
      metrics.delete(pod.name);
      continue;
    }
    if (!metrics.has(pod.name)) {
      missing.push(pod.name);
      continue;
    }
    // Readiness matters to the controller for CPU only; a custom metric's pod with a value counts.
    readyPodCount++;
  }
  if (metrics.size === 0)
    throw new ProposalError("did not receive metrics for targeted pods (pods might be unready)");

  const [usageRatio, usage] = usageRatioOf(metrics, target);
  const scaleUpWithUnready = unready.length > 0 && usageRatio > 1;
  if (!scaleUpWithUnready && missing.length === 0) {
    if (isWithin(tolerances, usageRatio)) return { replicas: currentReplicas, usage };
    return { replicas: ceilReplicas(usageRatio * readyPodCount), usage };
  }
  if (missing.length > 0) {
    // On a scale-down a missing pod is taken to use exactly the target; on a scale-up, nothing.
    if (usageRatio < 1) for (const name of missing) metrics.set(name, target);
    else if (usageRatio > 1) for (const name of missing) metrics.set(name, 0n);
  }
  if (scaleUpWithUnready) for (const name of unready) metrics.set(name, 0n);

  const [newUsageRatio] = usageRatioOf(metrics, target);
  if (
    isWithin(tolerances, newUsageRatio) ||
    (usageRatio < 1 && newUsageRatio > 1) ||
    (usageRatio > 1 && newUsageRatio < 1)
  )
    return { replicas: currentReplicas, usage };
  const newReplicas = ceilReplicas(newUsageRatio * metrics.size);
  if (
    (newUsageRatio < 1 && newReplicas > currentReplicas) ||
    (newUsageRatio > 1 && newReplicas < currentReplicas)
  )
    return { replicas: currentReplicas, usage };
  return { replicas: newReplicas, usage };
}

/** `GetMetricUsageRatio`: the integer average of the values, and its ratio to the target. */
function usageRatioOf(metrics: ReadonlyMap<string, bigint>, target: bigint): [number, bigint] {
  let total = 0n;
  for (const v of metrics.values()) total += v;
  const usage = total / BigInt(metrics.size);
  return [ratioOf(usage, target), usage];
}

/** Pods that are Running and Ready (`getReadyPodsCount`). */
function readyPods(pods: readonly PodFacts[]): number {
  if (pods.length === 0)
    throw new ProposalError(
      "unable to calculate ready pods: no pods returned by selector while calculating replica count",
    );
  return pods.filter((p) => p.phase === "Running" && p.ready).length;
}

/**
 * `getUsageRatioReplicaCount`: the ratio times the ready pods, unless within tolerance; from
 * zero replicas (scale to zero) the ratio alone, rounded up, and no tolerance.
 */
function usageRatioReplicas(
  currentReplicas: number,
  usageRatio: number,
  tolerances: Tolerances,
  pods: readonly PodFacts[],
): number {
  if (currentReplicas === 0) return ceilReplicas(usageRatio);
  if (isWithin(tolerances, usageRatio)) return currentReplicas;
  return ceilReplicas(usageRatio * readyPods(pods));
}

/** An Object metric with a `value` target (`GetObjectMetricReplicas`). */
export function objectValueReplicas(
  currentReplicas: number,
  target: bigint,
  usage: bigint,
  tolerances: Tolerances,
  pods: readonly PodFacts[],
): Proposal {
  return { replicas: usageRatioReplicas(currentReplicas, ratioOf(usage, target), tolerances, pods), usage };
}

/** An Object metric with an `averageValue` target (`GetObjectPerPodMetricReplicas`), against the status replicas. */
export function objectAverageReplicas(
  statusReplicas: number,
  target: bigint,
  usage: bigint,
  tolerances: Tolerances,
): Proposal {
  return perPod(statusReplicas, target, usage, tolerances);
}

/** An External metric with a `value` target (`GetExternalMetricReplicas`): the sum of its series. */
export function externalValueReplicas(
  currentReplicas: number,
  target: bigint,
  values: readonly bigint[],
  tolerances: Tolerances,
  pods: readonly PodFacts[],
): Proposal {
  const usage = saturatingSum(values);
  return { replicas: usageRatioReplicas(currentReplicas, ratioOf(usage, target), tolerances, pods), usage };
}

/** An External metric with an `averageValue` target (`GetExternalPerPodMetricReplicas`), against the status replicas. */
export function externalAverageReplicas(
  statusReplicas: number,
  target: bigint,
  values: readonly bigint[],
  tolerances: Tolerances,
): Proposal {
  // Go's per-pod sum differs from the value path's: a running total below zero is taken for
  // an int64 overflow and becomes MaxInt64 (so a negative series scales up).
  let usage = 0n;
  for (const v of values) {
    usage += v;
    if (usage < 0n || usage > MAX_INT64) {
      usage = MAX_INT64;
      break;
    }
  }
  return perPod(statusReplicas, target, usage, tolerances);
}

/** The sum of int64s, held at MaxInt64 where it would overflow. */
function saturatingSum(values: readonly bigint[]): bigint {
  let usage = 0n;
  for (const v of values) {
    usage += v;
    if (usage > MAX_INT64) return MAX_INT64;
  }
  return usage;
}

/** A total against a per-pod target: the replicas it needs, and the average per current replica. */
function perPod(statusReplicas: number, target: bigint, usage: bigint, tolerances: Tolerances): Proposal {
  let replicas = statusReplicas;
  const usageRatio = Number(usage) / (Number(target) * statusReplicas);
  if (!isWithin(tolerances, usageRatio)) replicas = ceilReplicas(ratioOf(usage, target));
  // Go compares as float64, where everything within 512 of MaxInt64 is 2⁶³.
  if (Number(usage) >= 2 ** 63 || statusReplicas === 0)
    return { replicas, usage: usage > MAX_INT64 ? MAX_INT64 : usage };
  const average = Math.ceil(Number(usage) / statusReplicas);
  return { replicas, usage: BigInt(average) };
}
