/**
 * A MetricMapping's status as pure functions: what it should say now (`computeStatus`:
 * conditions Ready, SourceHealthy, Throttled, Forecast and ShadowsUpstream, value, objects, lastSampleTime, and when time alone
 * will change it) and whether the leader writes it now (`statusWrite`: transitions at
 * once, value-only changes under a cadence and a write budget). The reconciler
 * (metric-mapping-reconciler.ts) reads the cache, calls these and does the write.
 */
import { type Condition, durationMs } from "../api/common.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";
import { formatQuantity } from "../api/quantity.js";
import type { SamplerState, Throttle } from "../metrics/sampler.js";
import { boundedText } from "../util/bounded-text.js";
import { type MetricMappingSpec, type MetricMappingStatus, sourceKind } from "../sources/registry.js";
import { NOTE_TYPES } from "../sources/source.js";
import { sameConditions, setCondition, type ConditionUpdate } from "./conditions.js";

/** What the reconciler knows about a mapping: a serving one (`active`), or why it does not serve (`ready`). */
export interface StatusInput {
  spec?: MetricMappingSpec;
  /** A mapping being served: its sampler's state decides the conditions. */
  active?: Pick<ActiveMapping, "metric" | "subject" | "staleAfterMs" | "fallback"> & { state: SamplerState };
  /** A mapping that does not serve: its Ready condition. */
  ready?: Omit<ConditionUpdate, "type">;
  /**
   * A serving mapping whose metric the upstream adapter (ADR 0011) serves too: what to say
   * in its `ShadowsUpstream` condition (Governor answers in the mapping's namespace).
   */
  shadows?: string;
}

/** The status to show now, and in how many ms to look again because time alone changes it. */
export interface ComputedStatus {
  status: MetricMappingStatus;
  requeueAfterMs?: number;
}

/** See the module comment. `old` is the stored status; `now` in ms since the epoch. */
export function computeStatus(
  old: MetricMappingStatus,
  generation: number | undefined,
  what: StatusInput,
  now: number,
): ComputedStatus {
  let conditions: Condition[] = old.conditions ?? [];
  const status: MetricMappingStatus = { observedGeneration: generation };
  if (what.spec) {
    status.subject = what.spec.subject.external ? "external" : what.spec.subject.resource;
    status.source = sourceKind(what.spec.source);
  }
  let requeueAfterMs: number | undefined;
  const at = new Date(now);
  if (what.active) {
    const { state } = what.active;
    conditions = setCondition(conditions, { type: "SourceHealthy", ...sourceHealth(state) }, generation, at);
    const ready = readiness(what.active, state, now);
    conditions = setCondition(conditions, { type: "Ready", ...ready }, generation, at);
    conditions = state.throttled
      ? setCondition(
          conditions,
          { type: "Throttled", ...throttled(state.throttled, what.spec?.interval) },
          generation,
          at,
        )
      : conditions.filter((c) => c.type !== "Throttled");
    // What the source says beside its value (a forecast's fit), while that value is its
    // last; what it said of a value no longer served is not current.
    const note = state.last?.value.note;
    conditions = conditions.filter(
      (c) => !(NOTE_TYPES as readonly string[]).includes(c.type) || c.type === note?.type,
    );
    conditions = note
      ? setCondition(
          conditions,
          ready.reason === "Serving"
            ? { ...note, message: boundedText(note.message) }
            : {
                type: note.type,
                status: "Unknown",
                reason: "NotCurrent",
                message: `about a value no longer served (Ready: ${ready.reason}): ${boundedText(note.message, 300)}`,
              },
          generation,
          at,
        )
      : conditions;
    conditions = what.shadows
      ? setCondition(
          conditions,
          {
            type: "ShadowsUpstream",
            status: "True",
            reason: "UpstreamServesSameMetric",
            message: what.shadows,
          },
          generation,
          at,
        )
      : conditions.filter((c) => c.type !== "ShadowsUpstream");
    if (state.last) {
      const v = state.last.value;
      if (v.kind === "scalar") {
        status.value = formatQuantity(v.value);
      } else {
        const values = [...v.values.values()];
        status.objects = values.length;
        status.value = values.length
          ? `avg ${formatQuantity(values.reduce((a, b) => a + b, 0) / values.length)}`
          : "no objects";
      }
      status.lastSampleTime = new Date(state.last.atMs).toISOString().replace(/\.\d+Z$/, "Z");
    }
    // Staleness changes with time alone: look again when it would flip (once; a stale
    // value stays stale until a new sample, which brings the mapping back by itself).
    const untilStale = state.last ? what.active.staleAfterMs - (now - state.last.atMs) : -1;
    if (untilStale >= 0) requeueAfterMs = Math.max(1000, untilStale + 100);
  } else if (what.ready) {
    conditions = setCondition(conditions, { type: "Ready", ...what.ready }, generation, at);
    conditions = conditions.filter(
      (c) =>
        c.type !== "SourceHealthy" &&
        c.type !== "ShadowsUpstream" &&
        c.type !== "Throttled" &&
        c.type !== "Forecast",
    );
  }
  status.conditions = conditions;
  return { status, ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}) };
}

/** What the leader does with a computed status. */
export type StatusWrite =
  | { write: true }
  /** Nothing to write, or held back: look again after this many ms (if set); `outOfBudget`: the budget held it back. */
  | { write: false; requeueAfterMs?: number; outOfBudget?: true };

/**
 * Whether to write `next` over `old` now. A transition (a condition's status or reason,
 * or a new generation) is written at once; a changed message or value only when
 * `valueIntervalMs` has passed since this mapping's last write (`sinceLastWriteMs`) and
 * `takeBudget()` grants one of the shared value writes — so a source outage over many
 * mappings costs one write each, not one per failed sample. Out of budget, the mapping
 * is not requeued at once (10,000 requeues would be their own storm): the next changed
 * sample or the staleness check brings it back.
 */
export function statusWrite(
  old: MetricMappingStatus,
  next: MetricMappingStatus,
  opts: { sinceLastWriteMs: number; valueIntervalMs: number; takeBudget: () => boolean },
): StatusWrite {
  const transition =
    !sameConditions(old.conditions, next.conditions, { ignoreMessages: true }) ||
    old.observedGeneration !== next.observedGeneration;
  if (transition) return { write: true };
  const changed =
    old.value !== next.value ||
    old.objects !== next.objects ||
    old.subject !== next.subject ||
    old.source !== next.source ||
    !sameConditions(old.conditions, next.conditions);
  if (!changed) return { write: false };
  if (opts.sinceLastWriteMs < opts.valueIntervalMs)
    return { write: false, requeueAfterMs: opts.valueIntervalMs - opts.sinceLastWriteMs };
  return opts.takeBudget() ? { write: true } : { write: false, outOfBudget: true };
}

/**
 * What of a sampler's state the status shows, in two parts: its health (whether it has
 * sampled, its error: conditions) and its value. Equal parts, equal status (so no reconcile).
 */
export function statusFingerprint(state: SamplerState): { health: string; value: string } {
  const v = state.last?.value;
  let value = "";
  let note = "";
  if (v?.note) note = `${v.note.type}|${v.note.reason}|${v.note.message}`;
  if (v?.kind === "scalar") {
    value = String(v.value);
  } else if (v) {
    let sum = 0;
    for (const x of v.values.values()) sum += x;
    value = `${v.values.size}:${sum}`;
  }
  const throttle = state.throttled ? `${Math.round(state.throttled.waitedMs / 1000)}` : "";
  return {
    health: `${state.attemptedAtMs ? 1 : 0}|${state.error ?? ""}|${state.throttled ? "T" : ""}|${v?.note?.reason ?? ""}`,
    value: `${value}|${throttle}|${note}`,
  };
}

/**
 * The Throttled condition: the backend's budget (ADR 0018) stretches this mapping's
 * interval — by how much, and whether the backend itself asked for less.
 */
function throttled(t: Throttle, interval: string | undefined): Omit<ConditionUpdate, "type"> {
  const s = (ms: number) => `${Math.round(ms / 1000)} s`;
  const qps = (n: number) => `${n >= 10 ? Math.round(n) : Math.round(n * 10) / 10}`;
  const backend = boundedText(t.backend, 120);
  const slowed = `so this namespace sends it at most ${qps(t.rateQps)} of its ${qps(t.limitQps)} queries/s for now`;
  const why = t.busy
    ? `${backend} answered that it is busy (429, or 503 with Retry-After), ${slowed}`
    : t.rateQps < t.limitQps
      ? `${backend} lately answered that it is busy, ${slowed}`
      : `the mappings querying ${backend} need more than its budget of ${qps(t.limitQps)} queries/s`;
  const stretch =
    interval !== undefined
      ? `: the last sample waited ${s(t.waitedMs)} for its turn, so this mapping samples about every ${s(durationMs(interval) + t.waitedMs)} instead of every ${s(durationMs(interval))}`
      : `: the last sample waited ${s(t.waitedMs)} for its turn`;
  return { status: "True", reason: "BackendBudget", message: `${why}${stretch}` };
}

function sourceHealth(state: SamplerState): Omit<ConditionUpdate, "type"> {
  if (!state.attemptedAtMs)
    return { status: "Unknown", reason: "Sampling", message: "waiting for the first sample" };
  if (state.error)
    return {
      status: "False",
      reason: "SourceError",
      message: `the last sample failed: ${state.error}`,
    };
  return { status: "True", reason: "Sampled", message: "the last sample succeeded" };
}

function readiness(
  m: NonNullable<StatusInput["active"]>,
  state: SamplerState,
  now: number,
): Omit<ConditionUpdate, "type"> {
  const what = m.subject.kind === "external" ? `external metric "${m.metric}"` : `metric "${m.metric}"`;
  const age = state.last ? now - state.last.atMs : Infinity;
  if (state.last && age <= m.staleAfterMs)
    return { status: "True", reason: "Serving", message: `serving ${what}` };
  if (m.fallback) {
    return {
      status: "True",
      reason: "ServingFallback",
      message: `serving the fallback value ${m.fallback.text} for ${what}: ${state.last ? "the last value is stale" : "no value sampled yet"}`,
    };
  }
  if (!state.last) {
    return state.attemptedAtMs
      ? {
          status: "False",
          reason: "NoValue",
          message: `no value sampled yet for ${what}; requests get 503 until one is`,
        }
      : { status: "Unknown", reason: "Sampling", message: `waiting for the first sample of ${what}` };
  }
  return {
    status: "False",
    reason: "Stale",
    message: `the last value of ${what} (status.lastSampleTime) is older than staleAfter (${Math.round(m.staleAfterMs / 1000)}s) and no fallback is set: requests get 503 and the HPA holds`,
  };
}
