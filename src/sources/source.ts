/**
 * The one interface every metric source implements. A source is sampled in the
 * background by a Sampler (src/metrics/sampler.ts), never on the request path (except for
 * the very first value). It answers either one value for the whole subject (scalar) or one
 * value per object name (per-object), and throws on failure with a message for
 * `status.conditions`.
 */
import type { LabelSelector } from "../selectors/label-selector.js";

/** What a sample is asked for. */
export interface SampleRequest {
  /** The mapping's namespace (bound into every query; no cross-namespace reads). */
  namespace: string;
  /** Names of the subject objects currently known (e.g. pods), when the source needs them. */
  objects?: readonly {
    name: string;
    uid?: string;
    ip?: string;
    labels?: Record<string, string>;
    hostNetwork?: boolean;
  }[];
  /** The HPA's label selector, for sources whose query is narrowed by it (`{{selector}}`). */
  selector?: LabelSelector;
  /** Aborted on timeout or when the mapping goes away. */
  signal: AbortSignal;
}

/**
 * One value for the whole subject, or one per object name. `observedAtMs`: when the data
 * behind it was observed, where that is before the sample (pushed data); the sample then
 * counts as taken then, for `staleAfter`.
 */
export type SampleValue =
  | { kind: "scalar"; value: number; note?: SampleNote; observedAtMs?: number }
  | { kind: "objects"; values: ReadonlyMap<string, number>; note?: SampleNote; observedAtMs?: number };

/** The condition types sources' notes are shown as. */
export const NOTE_TYPES = ["Forecast", "Pushed"] as const;

/**
 * What a source says about a value beside it, shown as a condition of the mapping (a
 * forecast's model and fit error, or why it serves the current value; pushes refused).
 */
export interface SampleNote {
  type: (typeof NOTE_TYPES)[number];
  status: "True" | "False";
  reason: string;
  message: string;
}

/** A source of metric values. */
export interface MetricSource {
  /** Samples now. Throws (with a message for users) on failure. */
  sample(req: SampleRequest): Promise<SampleValue>;
  /** Whether the source needs the subject's objects (pods to scrape, names to query). */
  readonly needsObjects: boolean;
  /** Whether values depend on the HPA's selector (then one sampler runs per selector asked for). */
  readonly perSelector?: boolean;
  /**
   * The destination its queries go to (an origin, `http://prometheus.monitoring:9090`):
   * samplers of one backend share its query budget (src/metrics/backend-budget.ts).
   * Unset: no budget (sources that read the apiserver or the mapping's own pods).
   */
  readonly backend?: string;
  /**
   * Its values over a stretch of the past, one every `stepMs`, where the source can say
   * (a Prometheus query of one value: a range query); throws when it cannot. A forecast
   * starts from them.
   */
  history?(
    fromMs: number,
    toMs: number,
    stepMs: number,
    signal: AbortSignal,
  ): Promise<{ atMs: number[]; values: number[] }>;
  /**
   * Calls `fn` when new data is there to sample (a push), until the returned function is
   * called: the sampler then samples within moments instead of at its next interval.
   */
  onChange?(fn: () => void): () => void;
  /** The MetricMappings of its namespace whose values it reads (a formula's, a forecast's inputs). */
  readonly readsMappings?: readonly string[];
  /** Releases connections and watches. */
  close?(): Promise<void> | void;
}

/** A source that failed in a way the user must fix (bad config) rather than a transient error. */
export class SourceConfigError extends Error {
  constructor(
    message: string,
    /** Set when other objects make it wrong and may change (a formula's cycle): build again after this long. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * The backend said it is overloaded (HTTP 429, or 503 with Retry-After): the attempt waits
 * for another turn of the backend's budget rather than failing at once.
 */
export class BackendBusyError extends Error {
  constructor(
    message: string,
    /** How long the backend asked to be left alone, if it said. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}
