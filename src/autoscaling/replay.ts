/**
 * The HPA over history (`governor replay`): at each sync of a stretch of time, what the
 * controller would have chosen from the values of that moment, in a closed loop — the
 * replicas it chose are the next sync's current ones, its memory (stabilization windows,
 * behavior's policies) carried from sync to sync as the controller carries it. Pure.
 *
 * The one model: a metric's history was measured with the replicas the workload had then.
 * An External or Object value (a queue, a rate of the whole service) does not depend on
 * them. A Pods metric is the average per pod: replay takes the load as spread evenly, so
 * with other replicas than those of history the same total is spread over them (where the
 * history of the replicas is unknown, over the replayed ones: no change).
 */
import { formatQuantity } from "../api/quantity.js";
import { type HpaView, type Reading, decide } from "./decide.js";
import type { PodFacts } from "./proposals.js";
import { type ControllerConfig, newMemory } from "./sync.js";

/** A value at a moment. */
export interface Sample {
  atMs: number;
  value: number;
}

export interface ReplayInput {
  hpa: HpaView;
  /** Per `spec.metrics` entry, its values in time order (a Pods metric: the average per pod). */
  series: readonly (readonly Sample[])[];
  /** The replicas the workload had, in time order, where known. */
  actual?: readonly Sample[];
  /** The replicas at the start (default: the first of `actual`, else minReplicas). */
  startReplicas?: number;
  fromMs: number;
  toMs: number;
  /** The controller's sync period. */
  stepMs: number;
  /** A value older than this at a sync is no value (the metrics API would have none). */
  staleMs: number;
  controller?: ControllerConfig;
}

/** One sync of the replay. */
export interface ReplayStep {
  atMs: number;
  /** Each metric's value as history has it (undefined: none). */
  values: (number | undefined)[];
  /** The replicas chosen at this sync. */
  replicas: number;
  /** The largest proposal, before bounds and behavior, if any metric gave one. */
  proposed?: number;
  /** The controller's reason for a change, or why it could not compute one. */
  reason: string;
  /** The replicas the workload had, where known. */
  actual?: number;
}

/** The most syncs one replay computes (a week at 15 s is 40,320). */
export const MAX_REPLAY_STEPS = 50_000;

/** The value of `s` at `atMs`: the last at or before it, unless older than `staleMs`. */
export function valueAt(s: readonly Sample[], atMs: number, staleMs: number): number | undefined {
  // Binary search: the last sample at or before atMs.
  let lo = 0;
  let hi = s.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (s[mid]!.atMs <= atMs) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  if (found < 0) return undefined;
  const at = s[found]!;
  return atMs - at.atMs > staleMs ? undefined : at.value;
}

/** See the module comment. */
export function replay(input: ReplayInput): ReplayStep[] {
  const steps = Math.floor((input.toMs - input.fromMs) / input.stepMs) + 1;
  if (!(input.stepMs > 0) || steps > MAX_REPLAY_STEPS)
    throw new RangeError(
      `a replay is at most ${MAX_REPLAY_STEPS} syncs: lengthen the step or shorten the stretch`,
    );
  const metrics = input.hpa.spec.metrics ?? [];
  const memory = newMemory();
  const minReplicas = input.hpa.spec.minReplicas ?? 1;
  let replicas =
    input.startReplicas ?? (input.actual?.[0] ? Math.round(input.actual[0].value) : Math.max(1, minReplicas));
  const out: ReplayStep[] = [];
  for (let i = 0; i < steps; i++) {
    const atMs = input.fromMs + i * input.stepMs;
    const actualRaw = input.actual ? valueAt(input.actual, atMs, input.staleMs) : undefined;
    const actual = actualRaw === undefined ? undefined : Math.round(actualRaw);
    const values = metrics.map((_, m) => valueAt(input.series[m] ?? [], atMs, input.staleMs));
    const pods: PodFacts[] = Array.from({ length: replicas }, (_, n) => ({
      name: `replica-${n}`,
      phase: "Running",
      ready: true,
    }));
    const readings: Reading[] = metrics.map((spec, m) => {
      const v = values[m];
      if (v === undefined) return { error: "no value in the history at this moment" };
      if (spec.type !== "Pods") return { values: [{ value: formatQuantity(v) }] };
      // The same total over the replicas of the replay.
      const perPod = actual !== undefined && replicas > 0 ? (v * actual) / replicas : v;
      return { values: pods.map((p) => ({ name: p.name, value: formatQuantity(perPod) })) };
    });
    const d = decide({
      nowMs: atMs,
      hpa: input.hpa,
      specReplicas: replicas,
      statusReplicas: replicas,
      pods,
      readings,
      memory,
      recordRescale: true,
      ...(input.controller ? { controller: input.controller } : {}),
    });
    const n = d.next;
    out.push({
      atMs,
      values,
      replicas: n.desiredReplicas,
      ...(n.proposed !== undefined ? { proposed: n.proposed } : {}),
      reason: n.reason || n.error || n.conditions.ScalingActive?.message || "",
      ...(actual !== undefined ? { actual } : {}),
    });
    replicas = n.desiredReplicas;
  }
  return out;
}
