/**
 * Scale to zero and back (`spec.autoscaling.minReplicas: 0` with `activation`): the pure
 * rule that decides, from one reading of the activation metric, whether a
 * ScalableWorkload goes 0 → 1 (the value is above the threshold), 1+ → 0 (every reading
 * for the whole cooldown was at or below it), or stays — and what its `Active` condition
 * says. The HPA scales between 1 and maxReplicas; at 0 replicas it stands still
 * (`ScalingActive: False, ScalingDisabled`), so it never fights these moves (ADR 0009).
 *
 * Safety: a reading that failed, is stale, or is a mapping's fallback is no reading: the
 * replicas are held and the cooldown starts over once a real value arrives.
 */
import type { Condition } from "../api/common.js";
import { MetricMappingSpec } from "../sources/registry.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";
import type { ConditionUpdate } from "./conditions.js";

/** One reading of the activation metric: a sampled value, or why there is none. */
export type ActivationReading = { ok: true; value: number } | { ok: false; reason: string; message: string };

/** What {@link decideActivation} is given. */
export interface ActivationInput {
  now: Date;
  /** The ScalableWorkload's `spec.replicas`. */
  replicas: number;
  /** The metric's name, for messages. */
  metric: string;
  threshold: number;
  thresholdText: string;
  cooldownMs: number;
  cooldownText: string;
  reading: ActivationReading;
  /** `status.activation` as stored. */
  previous?: { value?: string; belowThresholdSince?: string };
  /** The stored `Active` condition. */
  previousCondition?: Condition;
  format: (value: number) => string;
}

/** What to do. */
export interface ActivationDecision {
  /** Set `spec.replicas` to this (0 → 1 or to 0); absent: leave it. */
  replicas?: number;
  condition: Omit<ConditionUpdate, "type">;
  /** The new `status.activation`. */
  status: { value?: string; belowThresholdSince?: string };
  /** An Event for a move or for a reading that is lost. */
  event?: { type: "Normal" | "Warning"; reason: string; message: string };
  /** When time alone changes the decision (the end of the cooldown), in ms from `now`. */
  recheckInMs?: number;
}

/** RFC 3339 to the second, as Kubernetes writes times. */
const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d+Z$/, "Z");

/** See the module comment. */
export function decideActivation(i: ActivationInput): ActivationDecision {
  const decision = decide(i);
  // A condition that keeps its status and reason keeps its message and the stored value:
  // the value changes with every sample, and writing it each time would be a status
  // write per interval for nothing a user acts on.
  const prev = i.previousCondition;
  if (prev && prev.status === decision.condition.status && prev.reason === decision.condition.reason) {
    decision.condition = { ...decision.condition, message: prev.message };
    decision.status = { ...decision.status, value: i.previous?.value };
  }
  return decision;
}

function decide(i: ActivationInput): ActivationDecision {
  const { metric, thresholdText: t, replicas } = i;
  const replicaText = `${replicas} replica${replicas === 1 ? "" : "s"}`;
  if (!i.reading.ok) {
    const lost = i.previousCondition?.reason !== i.reading.reason;
    const message = `${i.reading.message}; holding at ${replicaText} (a failing or stale activation metric never scales the workload)`;
    return {
      condition: { status: "Unknown", reason: i.reading.reason, message },
      status: { value: i.previous?.value },
      ...(lost ? { event: { type: "Warning", reason: i.reading.reason, message } } : {}),
    };
  }
  const value = i.format(i.reading.value);
  if (i.reading.value > i.threshold) {
    if (replicas === 0)
      return {
        replicas: 1,
        condition: {
          status: "True",
          reason: "AboveThreshold",
          message: `${metric} ${value} > ${t}: woke from 0 at ${rfc3339(i.now)}`,
        },
        status: { value },
        event: {
          type: "Normal",
          reason: "ScaledFromZero",
          message: `${metric} ${value} > threshold ${t}: scaling from 0 to 1 replica`,
        },
      };
    return {
      condition: { status: "True", reason: "AboveThreshold", message: `${metric} ${value} > ${t}` },
      status: { value },
    };
  }
  if (replicas === 0)
    return {
      condition: {
        status: "False",
        reason: "ScaledToZero",
        message: `${metric} ${value} ≤ ${t}: idle at 0 replicas until it rises above ${t}`,
      },
      status: { value },
    };
  const stored = Date.parse(i.previous?.belowThresholdSince ?? "");
  const since = Number.isNaN(stored) || stored > i.now.getTime() ? i.now : new Date(stored);
  const end = since.getTime() + i.cooldownMs;
  if (i.now.getTime() >= end)
    return {
      replicas: 0,
      condition: {
        status: "False",
        reason: "ScaledToZero",
        message: `${metric} ${value} ≤ ${t} since ${rfc3339(since)}: scaled to 0 after the cooldown (${i.cooldownText})`,
      },
      status: { value },
      event: {
        type: "Normal",
        reason: "ScaledToZero",
        message: `${metric} ${value} ≤ threshold ${t} for ${i.cooldownText}: scaling from ${replicaText} to 0`,
      },
    };
  return {
    condition: {
      status: "True",
      reason: "CoolingDown",
      message: `${metric} ${value} ≤ ${t} since ${rfc3339(since)}: scales to 0 at ${rfc3339(new Date(end))} unless it rises (cooldown ${i.cooldownText})`,
    },
    status: { value, belowThresholdSince: rfc3339(since) },
    recheckInMs: end - i.now.getTime(),
  };
}

/** What {@link readActivation} is given: the mapping as the MetricMapping reconciler sees it, and what it serves. */
export interface ActivationSource {
  /** `namespace/name` of the MetricMapping, for messages. */
  key: string;
  mapping?: { spec?: unknown; problem?: { reason: string; message: string } };
  /** The mapping as the provider serves it, if it does. */
  served?: Pick<ActiveMapping, "sampler" | "staleAfterMs" | "subject">;
  /** The object whose value an Object metric reads. */
  objectName: string;
  now: Date;
}

/**
 * Reads the activation metric from the sampler the provider serves from: the last good
 * sample if it is fresh and the latest attempt did not fail. Never the mapping's fallback
 * (a value the user set for the HPA to read while the source is down is not a reason to
 * wake or idle a workload). An External metric's value is the sum of its series, as the
 * HPA reads it.
 */
export function readActivation(s: ActivationSource): ActivationReading {
  const unavailable = (message: string): ActivationReading => ({
    ok: false,
    reason: "ActivationMetricUnavailable",
    message,
  });
  if (!s.mapping)
    return { ok: false, reason: "MappingNotFound", message: `MetricMapping ${s.key} not found` };
  const parsed = MetricMappingSpec.safeParse(s.mapping.spec);
  if (!parsed.success || s.mapping.problem)
    return {
      ok: false,
      reason: "MappingInvalid",
      message: `MetricMapping ${s.key} cannot serve (${s.mapping.problem?.reason ?? "InvalidSpec"})`,
    };
  if (parsed.data.subject.resource === "pods")
    return {
      ok: false,
      reason: "InvalidActivation",
      message: `MetricMapping ${s.key} describes pods: at 0 replicas there are no pods to read, so it cannot wake the workload; use a mapping whose subject is external or an object`,
    };
  const served = s.served;
  if (!served) return unavailable(`MetricMapping ${s.key} is not serving (see its status)`);
  const { last, error } = served.sampler.state;
  if (error) return unavailable(`the latest sample of MetricMapping ${s.key} failed: ${error}`);
  if (!last) return unavailable(`MetricMapping ${s.key} has no value yet`);
  const age = s.now.getTime() - last.atMs;
  if (age > served.staleAfterMs)
    return unavailable(
      `MetricMapping ${s.key} is stale: last sampled ${Math.round(age / 1000)}s ago (staleAfter ${Math.round(served.staleAfterMs / 1000)}s)`,
    );
  if (last.value.kind === "scalar") return { ok: true, value: last.value.value };
  if (served.subject.kind === "external") {
    let sum = 0;
    for (const v of last.value.values.values()) sum += v;
    return { ok: true, value: sum };
  }
  const value = last.value.values.get(s.objectName);
  return value === undefined
    ? unavailable(`MetricMapping ${s.key} has no value for ${s.objectName}`)
    : { ok: true, value };
}
