/**
 * What an HPA will do at its next sync, from what `governor simulate` read (simulate.ts):
 * its spec, the target's `/scale`, the pods, and each metric's values as the metrics APIs
 * answered them — through the HPA controller's own algorithm (src/autoscaling/). Pure.
 */
import {
  type PodFacts,
  type Proposal,
  ProposalError,
  externalAverageReplicas,
  externalValueReplicas,
  milli,
  objectAverageReplicas,
  objectValueReplicas,
  podsMetricReplicas,
} from "./proposals.js";
import {
  type Behavior,
  type ControllerConfig,
  DEFAULT_CONTROLLER,
  type HpaMemory,
  type MetricOutcome,
  type ScalingRules,
  type SyncResult,
  newMemory,
  sync,
  tolerancesFor,
} from "./sync.js";
import { formatQuantity, parseQuantity } from "../api/quantity.js";

export interface MetricTarget {
  type?: string;
  value?: string;
  averageValue?: string;
  averageUtilization?: number;
}

/** A metric's name and label selector, as the HPA names it. */
interface MetricId {
  name: string;
  selector?: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] };
}

export interface HpaMetricSpec {
  type: string;
  pods?: { metric: MetricId; target: MetricTarget };
  object?: {
    metric: MetricId;
    describedObject: { apiVersion: string; kind: string; name: string };
    target: MetricTarget;
  };
  external?: { metric: MetricId; target: MetricTarget };
  resource?: { name: string };
  containerResource?: { name: string };
}

interface RawRules {
  stabilizationWindowSeconds?: number;
  selectPolicy?: string;
  policies?: { type: string; value: number; periodSeconds: number }[];
  tolerance?: string | number;
}

export interface HpaView {
  spec: {
    minReplicas?: number;
    maxReplicas: number;
    behavior?: { scaleUp?: RawRules; scaleDown?: RawRules };
    metrics?: HpaMetricSpec[];
  };
  status?: { conditions?: { type: string; status: string }[] };
}

/** One metric's values as the metrics API answered them (a pod's or object's name with each), or why there are none. */
export type Reading =
  { values: { name?: string; value: string }[] } | { error: string } | { skipped: string };

export interface DecideInput {
  nowMs: number;
  hpa: HpaView;
  /** The target's `/scale`: `spec.replicas` and `status.replicas`. */
  specReplicas: number;
  statusReplicas: number;
  pods: PodFacts[];
  /** One per `spec.metrics` entry, in order. */
  readings: Reading[];
  /** "What if": a metric's name → the value to use instead of what the API answered. */
  set?: ReadonlyMap<string, string>;
  controller?: ControllerConfig;
  /**
   * What the controller remembers of this HPA, kept by the caller across syncs (a
   * recommendation's): stabilized against and added to; the changes of the replicas are
   * the caller's to record. Absent: none, as for a one-off simulation.
   */
  memory?: HpaMemory;
  /**
   * Whether the sync's own rescale goes into `memory` for behavior's policies, as the
   * controller's does (a replay, whose replicas follow its decisions); else the caller
   * records the changes it observes. @default false with `memory`
   */
  recordRescale?: boolean;
}

/** One metric as simulate shows it. */
export interface MetricLine {
  type: string;
  metric: string;
  /** "average 15 per pod", "value 120". */
  target: string;
  /** The value the HPA compares with the target (as its status would show it). */
  current?: string;
  /** The replicas this metric asks for. */
  proposal?: number;
  /** Why it has no proposal. */
  error?: string;
  /** Not simulated (a resource metric): why. */
  skipped?: string;
  /** `--set` replaced what the API answered. */
  whatIf?: boolean;
}

export interface Decision {
  specReplicas: number;
  statusReplicas: number;
  minReplicas: number;
  maxReplicas: number;
  pods: { total: number; ready: number };
  metrics: MetricLine[];
  next: SyncResult;
  /** Set when a metric could not be simulated: `next` weighs the others only, and this says why it is not the HPA's answer. */
  undetermined?: string;
  /** What the decision takes for granted that simulate cannot see. */
  assumptions: string[];
}

/** The HPA's next sync, computed as kube-controller-manager computes it. */
export function decide(input: DecideInput): Decision {
  const { hpa } = input;
  const config = input.controller ?? DEFAULT_CONTROLLER;
  const behavior = behaviorOf(hpa.spec.behavior);
  const tolerances = tolerancesFor(behavior, config);
  const metrics = hpa.spec.metrics ?? [];
  const lines: MetricLine[] = [];
  const outcomes: MetricOutcome[] = [];
  const skipped: string[] = [];
  for (const [i, spec] of metrics.entries()) {
    const line = lineOf(spec);
    lines.push(line);
    let reading = input.readings[i] ?? { error: "not read" };
    const override = input.set?.get(line.metric);
    if (override !== undefined && !("skipped" in reading)) {
      line.whatIf = true;
      reading = { values: whatIf(spec, input.pods, override) };
    }
    if ("skipped" in reading) {
      line.skipped = reading.skipped;
      skipped.push(line.metric);
      continue;
    }
    try {
      if ("error" in reading) throw new ProposalError(reading.error);
      const p = propose(spec, reading.values, input, tolerances);
      line.current = formatMilli(p.proposal.usage);
      line.proposal = p.proposal.replicas;
      outcomes.push({ metric: p.name, replicas: p.proposal.replicas });
    } catch (err) {
      line.error = (err as Error).message;
      outcomes.push({ metric: line.metric, error: line.error, reason: `FailedGet${spec.type}Metric` });
    }
  }
  if (outcomes.length === 0 && skipped.length > 0)
    // Nothing simulate can read: no decision to show, not a scale-down to nothing.
    return {
      specReplicas: input.specReplicas,
      statusReplicas: input.statusReplicas,
      minReplicas: hpa.spec.minReplicas ?? 1,
      maxReplicas: hpa.spec.maxReplicas,
      pods: podCounts(input.pods),
      metrics: lines,
      next: { desiredReplicas: input.specReplicas, rescale: false, reason: "", conditions: {} },
      undetermined: `every metric of this HPA (${skipped.join(", ")}) comes from metrics-server, which simulate does not read`,
      assumptions: [],
    };
  let memory = input.memory;
  if (!memory) {
    // The controller's recommendations of the last window are in its memory, not in the API:
    // start from none, so the proposal is stabilized only against itself.
    memory = newMemory();
    memory.recommendations = [];
  }
  const next = sync(
    {
      nowMs: input.nowMs,
      ...(hpa.spec.minReplicas !== undefined ? { minReplicas: hpa.spec.minReplicas } : {}),
      maxReplicas: hpa.spec.maxReplicas,
      ...(behavior ? { behavior } : {}),
      currentReplicas: input.specReplicas,
      metrics: () => outcomes,
      hasObjectOrExternal: metrics.some((m) => m.type === "Object" || m.type === "External"),
      scaledToZero:
        hpa.status?.conditions?.some((c) => c.type === "ScaledToZero" && c.status === "True") ?? false,
      recordRescale: input.recordRescale ?? input.memory === undefined,
    },
    memory,
    config,
  );
  const downWindow = behavior?.scaleDown?.stabilizationWindowSeconds ?? config.downscaleStabilizationSeconds;
  const upWindow = behavior?.scaleUp?.stabilizationWindowSeconds ?? 0;
  const assumptions = input.memory
    ? []
    : [
        `the controller's own memory is not in the API: a scale-down waits for the highest recommendation of its last ${downWindow} s${upWindow ? `, a scale-up for the lowest of its last ${upWindow} s` : ""}, and behavior's policies count the scale changes of their periods; simulate assumes none that would hold this one back`,
      ];
  if (skipped.length > 0)
    assumptions.push(
      `resource metrics (${skipped.join(", ")}) come from metrics-server and are not simulated`,
    );
  return {
    specReplicas: input.specReplicas,
    statusReplicas: input.statusReplicas,
    minReplicas: hpa.spec.minReplicas ?? 1,
    maxReplicas: hpa.spec.maxReplicas,
    pods: podCounts(input.pods),
    metrics: lines,
    next,
    ...(skipped.length > 0
      ? {
          undetermined: `the HPA also weighs ${skipped.join(", ")}, which simulate cannot read: it may choose more replicas than this, and fewer only if ${skipped.length > 1 ? "they ask" : "it asks"} for fewer too`,
        }
      : {}),
    assumptions,
  };
}

const podCounts = (pods: readonly PodFacts[]) => ({
  total: pods.filter((p) => !p.deleting).length,
  ready: pods.filter((p) => !p.deleting && p.phase === "Running" && p.ready).length,
});

function lineOf(spec: HpaMetricSpec): MetricLine {
  const source = spec.pods ?? spec.object ?? spec.external;
  const metric = source?.metric.name ?? spec.resource?.name ?? spec.containerResource?.name ?? "";
  const t = source?.target;
  const target =
    t?.averageValue !== undefined
      ? `average ${t.averageValue}${spec.type === "Pods" ? " per pod" : " per replica"}`
      : t?.value !== undefined
        ? `value ${t.value}`
        : t?.averageUtilization !== undefined
          ? `${t.averageUtilization} % utilization`
          : "none";
  return { type: spec.type, metric, target };
}

/** `--set`: the value for every pod of a Pods metric (those that could have one), else the one value. */
function whatIf(
  spec: HpaMetricSpec,
  pods: readonly PodFacts[],
  value: string,
): { name?: string; value: string }[] {
  if (spec.type !== "Pods") return [{ value }];
  return pods
    .filter((p) => !p.deleting && p.phase !== "Failed" && p.phase !== "Pending")
    .map((p) => ({ name: p.name, value }));
}

function quantity(text: string | undefined, what: string): bigint {
  if (text === undefined) throw new ProposalError(`${what} is not set`);
  try {
    return milli(String(text));
  } catch (err) {
    throw new ProposalError(`${what}: ${(err as Error).message}`);
  }
}

function propose(
  spec: HpaMetricSpec,
  values: readonly { name?: string; value: string }[],
  input: DecideInput,
  tolerances: ReturnType<typeof tolerancesFor>,
): { name: string; proposal: Proposal } {
  const read = values.map((v) => ({
    name: v.name,
    milli: quantity(v.value, "a value the metrics API answered"),
  }));
  if (spec.type === "Pods" && spec.pods) {
    if (read.length === 0) throw new ProposalError("no metrics returned from custom metrics API");
    const target = quantity(spec.pods.target.averageValue, "the target's averageValue");
    const byPod = new Map(read.map((v) => [v.name ?? "", v.milli] as const));
    return {
      name: `pods metric ${spec.pods.metric.name}`,
      proposal: podsMetricReplicas(input.specReplicas, target, byPod, input.pods, tolerances),
    };
  }
  if (spec.type === "Object" && spec.object) {
    const { target, metric, describedObject } = spec.object;
    if (read.length !== 1)
      throw new ProposalError(
        `the custom metrics API server returned ${read.length} results when we asked for exactly one`,
      );
    const usage = read[0]!.milli;
    if (target.type === "Value" && target.value !== undefined)
      return {
        name: `${describedObject.kind} metric ${metric.name}`,
        proposal: objectValueReplicas(
          input.specReplicas,
          quantity(target.value, "the target's value"),
          usage,
          tolerances,
          input.pods,
        ),
      };
    if (target.type === "AverageValue" && target.averageValue !== undefined)
      return {
        name: `external metric ${metric.name}`,
        proposal: objectAverageReplicas(
          input.statusReplicas,
          quantity(target.averageValue, "the target's averageValue"),
          usage,
          tolerances,
        ),
      };
    throw new ProposalError(
      "invalid object metric source: neither a value target nor an average value target was set",
    );
  }
  if (spec.type === "External" && spec.external) {
    const { target, metric } = spec.external;
    if (read.length === 0) throw new ProposalError("no metrics returned from external metrics API");
    const all = read.map((v) => v.milli);
    if (target.averageValue !== undefined)
      return {
        name: `external metric ${metric.name}`,
        proposal: externalAverageReplicas(
          input.statusReplicas,
          quantity(target.averageValue, "the target's averageValue"),
          all,
          tolerances,
        ),
      };
    if (target.value !== undefined)
      return {
        name: `external metric ${metric.name}`,
        proposal: externalValueReplicas(
          input.specReplicas,
          quantity(target.value, "the target's value"),
          all,
          tolerances,
          input.pods,
        ),
      };
    throw new ProposalError(
      "invalid external metric source: neither a value target nor an average value target was set",
    );
  }
  throw new ProposalError(`a ${spec.type} metric is not simulated`);
}

/** An HPA's `behavior` as the algorithm takes it. */
export function behaviorOf(raw: HpaView["spec"]["behavior"]): Behavior | undefined {
  if (!raw) return undefined;
  const rules = (r: RawRules | undefined): ScalingRules | undefined => {
    if (!r) return undefined;
    const out: ScalingRules = {};
    if (r.stabilizationWindowSeconds !== undefined)
      out.stabilizationWindowSeconds = r.stabilizationWindowSeconds;
    if (r.selectPolicy === "Max" || r.selectPolicy === "Min" || r.selectPolicy === "Disabled")
      out.selectPolicy = r.selectPolicy;
    if (r.policies)
      out.policies = r.policies
        .filter((p) => p.type === "Pods" || p.type === "Percent")
        .map((p) => ({ type: p.type as "Pods" | "Percent", value: p.value, periodSeconds: p.periodSeconds }));
    if (r.tolerance !== undefined) {
      const t = parseQuantity(String(r.tolerance));
      if (t !== undefined && t >= 0) out.tolerance = t;
    }
    return out;
  };
  const scaleUp = rules(raw.scaleUp);
  const scaleDown = rules(raw.scaleDown);
  return { ...(scaleUp ? { scaleUp } : {}), ...(scaleDown ? { scaleDown } : {}) };
}

/** A milli-value as a quantity: `1500m` → "1500m", `2000` → "2". */
export function formatMilli(m: bigint): string {
  if (m % 1000n === 0n) return (m / 1000n).toString();
  if (m < 2n ** 53n && m > -(2n ** 53n)) return formatQuantity(Number(m) / 1000);
  return `${m}m`;
}
