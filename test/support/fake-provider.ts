/**
 * An in-memory {@link MetricsProvider} for tests and the API's table-driven checks:
 * values are set by hand; an entry can be made stale (503) to exercise error paths.
 */
import { formatGroupResource, type GroupResource } from "../../src/api/group-resource.js";
import type { LabelSelector } from "../../src/selectors/label-selector.js";
import {
  type CustomMetricInfo,
  type CustomMetricValue,
  type DescribedObject,
  type ExternalMetricInfo,
  type ExternalMetricRequest,
  type ExternalMetricValue,
  type MetricQuery,
  type MetricsProvider,
  type ObjectMetricRequest,
  type SelectorMetricRequest,
  MetricNotFoundError,
  MetricUnavailableError,
} from "../../src/metrics/provider.js";

/** One object's value in the fake. */
export interface FakeObjectMetric {
  groupResource: GroupResource;
  object: DescribedObject;
  /** The object's labels, matched by `labelSelector`. */
  labels?: Record<string, string>;
  metric: string;
  value: string;
  /** Series labels, matched by `metricLabelSelector`. */
  metricLabels?: Record<string, string>;
  timestamp?: Date;
  windowSeconds?: number;
  /** Serve 503 instead of the value. */
  unavailable?: boolean;
}

/** One external series in the fake. */
export interface FakeExternalMetric {
  namespace: string;
  metric: string;
  labels?: Record<string, string>;
  value: string;
  timestamp?: Date;
  unavailable?: boolean;
}

/** See the module comment. */
export class FakeProvider implements MetricsProvider {
  readonly objects: FakeObjectMetric[] = [];
  readonly external: FakeExternalMetric[] = [];
  /** Requests seen, for assertions. */
  readonly calls: string[] = [];

  listCustomMetrics(): CustomMetricInfo[] {
    return this.objects.map((o) => ({
      groupResource: o.groupResource,
      namespaced: o.object.namespace !== undefined,
      metric: o.metric,
    }));
  }

  listExternalMetrics(): ExternalMetricInfo[] {
    return this.external.map((e) => ({ metric: e.metric }));
  }

  /** As the mapping provider: a metric is served in the namespaces that have it. */
  serves(q: MetricQuery): boolean {
    if (q.api === "external")
      return this.external.some((e) => e.namespace === q.namespace && e.metric === q.metric);
    return this.objects.some(
      (o) =>
        o.metric === q.metric &&
        sameGR(o.groupResource, q.groupResource) &&
        (o.object.namespace === undefined || o.object.namespace === q.namespace),
    );
  }

  async getMetricByName(req: ObjectMetricRequest): Promise<CustomMetricValue> {
    this.calls.push(
      `byName ${formatGroupResource(req.groupResource)} ${req.namespace ?? "-"}/${req.name} ${req.metric}`,
    );
    const forMetric = this.forMetric(req.groupResource, req.namespace, req.metric, req.metricSelector);
    const hit = forMetric.find((o) => o.object.name === req.name);
    if (!hit) {
      throw new MetricNotFoundError(
        forMetric.length === 0 && !this.objects.some((o) => o.metric === req.metric)
          ? `no metric "${req.metric}" for ${formatGroupResource(req.groupResource)}`
          : `${formatGroupResource(req.groupResource)} "${req.name}" has no value for metric "${req.metric}"`,
      );
    }
    return toValue(hit);
  }

  async getMetricBySelector(req: SelectorMetricRequest): Promise<CustomMetricValue[]> {
    this.calls.push(
      `bySelector ${formatGroupResource(req.groupResource)} ${req.namespace ?? "-"} ${req.selector.toString()} ${req.metric}`,
    );
    const known = this.objects.some(
      (o) => o.metric === req.metric && sameGR(o.groupResource, req.groupResource),
    );
    if (!known)
      throw new MetricNotFoundError(
        `no metric "${req.metric}" for ${formatGroupResource(req.groupResource)}`,
      );
    return this.forMetric(req.groupResource, req.namespace, req.metric, req.metricSelector)
      .filter((o) => req.selector.matches(o.labels))
      .map(toValue);
  }

  async getExternalMetric(req: ExternalMetricRequest): Promise<ExternalMetricValue[]> {
    this.calls.push(`external ${req.namespace} ${req.metric} ${req.metricSelector.toString()}`);
    const series = this.external.filter((e) => e.namespace === req.namespace && e.metric === req.metric);
    if (series.length === 0)
      throw new MetricNotFoundError(`no external metric "${req.metric}" in namespace "${req.namespace}"`);
    const matching = series.filter((e) => req.metricSelector.matches(e.labels));
    const down = matching.find((e) => e.unavailable);
    if (down) throw new MetricUnavailableError(`external metric "${req.metric}" is stale`);
    return matching.map((e) => ({
      metric: e.metric,
      labels: e.labels ?? {},
      timestamp: (e.timestamp ?? new Date(0)).getTime(),
      value: e.value,
    }));
  }

  private forMetric(
    gr: GroupResource,
    namespace: string | undefined,
    metric: string,
    metricSelector: LabelSelector,
  ) {
    return this.objects.filter(
      (o) =>
        o.metric === metric &&
        sameGR(o.groupResource, gr) &&
        o.object.namespace === namespace &&
        metricSelector.matches(o.metricLabels),
    );
  }
}

function sameGR(a: GroupResource, b: GroupResource): boolean {
  return a.group === b.group && a.resource === b.resource;
}

function toValue(o: FakeObjectMetric): CustomMetricValue {
  if (o.unavailable)
    throw new MetricUnavailableError(
      `metric "${o.metric}" for ${o.object.name} is stale and has no fallback`,
    );
  return {
    describedObject: o.object,
    metric: o.metric,
    timestamp: (o.timestamp ?? new Date(0)).getTime(),
    ...(o.windowSeconds !== undefined ? { windowSeconds: o.windowSeconds } : {}),
    value: o.value,
  };
}
