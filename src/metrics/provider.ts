/**
 * The metrics provider: the one interface between the metrics API (`src/apiserver`) and
 * whatever knows metric values (the MetricMapping-backed provider, or a fake in tests).
 * Shaped after custom-metrics-apiserver's `provider.CustomMetricsProvider` and
 * `ExternalMetricsProvider`, with domain types only: no HTTP, no Kubernetes client.
 */
import { GovernorError } from "../errors.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import type { Cancellation } from "../util/deadline.js";
import type { GroupResource } from "../api/group-resource.js";

/** A custom metric available for one kind of object. */
export interface CustomMetricInfo {
  groupResource: GroupResource;
  /** false for cluster-scoped objects (nodes, namespaces…). */
  namespaced: boolean;
  metric: string;
}

/** An external metric (attached to no object). */
export interface ExternalMetricInfo {
  metric: string;
}

/** `custom_metrics.ObjectReference`: the object a value describes. */
export interface DescribedObject {
  kind: string;
  namespace?: string;
  name: string;
  /** `v1` for the core group, `group/version` otherwise. */
  apiVersion: string;
}

/** One custom metric value. */
export interface CustomMetricValue {
  describedObject: DescribedObject;
  metric: string;
  /** When the value was sampled (not when it was asked for), in milliseconds since the epoch. */
  timestamp: number;
  /** The window a rate was computed over, if it is a rate. */
  windowSeconds?: number;
  /** A Kubernetes quantity string: "42", "1500m". */
  value: string;
}

/** One external metric value. */
export interface ExternalMetricValue {
  metric: string;
  labels: Record<string, string>;
  /** As {@link CustomMetricValue.timestamp}. */
  timestamp: number;
  windowSeconds?: number;
  value: string;
}

/** A request for one named object's metric. `namespace` is undefined for cluster-scoped objects. */
export interface ObjectMetricRequest {
  groupResource: GroupResource;
  namespace?: string;
  name: string;
  metric: string;
  /** The `metricLabelSelector` parameter (empty when absent). */
  metricSelector: LabelSelector;
  /**
   * Stops waiting when the request's deadline passes or its client goes away. Read
   * `cancel.signal` only just before waiting: reading it arms the deadline.
   */
  cancel?: Cancellation;
}

/** A request for the metric of every object matching a label selector. */
export interface SelectorMetricRequest {
  groupResource: GroupResource;
  namespace?: string;
  /** The `labelSelector` parameter (which objects). */
  selector: LabelSelector;
  metric: string;
  metricSelector: LabelSelector;
  /**
   * Stops waiting when the request's deadline passes or its client goes away. Read
   * `cancel.signal` only just before waiting: reading it arms the deadline.
   */
  cancel?: Cancellation;
}

/** A request for an external metric. */
export interface ExternalMetricRequest {
  namespace: string;
  metric: string;
  /** The `labelSelector` parameter (which series of the metric). */
  metricSelector: LabelSelector;
  /**
   * Stops waiting when the request's deadline passes or its client goes away. Read
   * `cancel.signal` only just before waiting: reading it arms the deadline.
   */
  cancel?: Cancellation;
}

/**
 * Which metric a request is for, to decide who answers it: Governor, or the upstream
 * adapter it forwards to. `namespace` is the Namespace's own name for a namespace metric,
 * undefined for other cluster-scoped objects.
 */
export type MetricQuery =
  | { api: "custom"; namespace: string | undefined; groupResource: GroupResource; metric: string }
  | { api: "external"; namespace: string; metric: string };

/** What the metrics API needs from whoever knows the values. */
export interface MetricsProvider {
  /**
   * Whether a request for this metric is Governor's to answer; with an upstream configured,
   * every other one is forwarded. Absent: every metric in the lists above is served.
   */
  serves?(q: MetricQuery): boolean;
  /**
   * Every custom metric servable now, for discovery. Never throws; cheap. Return the same
   * array while nothing changed: the API reuses its serialized discovery body until then.
   */
  listCustomMetrics(): CustomMetricInfo[];
  /** Every external metric servable now, for discovery. Never throws; cheap. */
  listExternalMetrics(): ExternalMetricInfo[];
  /**
   * Exactly one value, or {@link MetricNotFoundError} / {@link MetricUnavailableError}.
   * May return the same (never mutated) object while the answer is unchanged: the API
   * then reuses its serialized body.
   */
  getMetricByName(req: ObjectMetricRequest): Promise<CustomMetricValue>;
  /** One value per matching object that has one (possibly none). */
  getMetricBySelector(req: SelectorMetricRequest): Promise<readonly CustomMetricValue[]>;
  /** Every series of the metric that matches; the HPA sums them. */
  getExternalMetric(req: ExternalMetricRequest): Promise<ExternalMetricValue[]>;
}

/** No such metric, or no such object for it (answered 404 NotFound). */
export class MetricNotFoundError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_METRIC_NOT_FOUND", message);
  }
}

/** The metric exists but has no current value and no fallback (answered 503 ServiceUnavailable). */
export class MetricUnavailableError extends GovernorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("GOV_ERR_METRIC_UNAVAILABLE", message, options);
  }
}

/** The request is well-formed HTTP but makes no sense for this metric (answered 400 BadRequest). */
export class MetricBadRequestError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_METRIC_BAD_REQUEST", message);
  }
}
