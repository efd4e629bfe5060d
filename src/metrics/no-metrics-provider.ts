/**
 * The provider of a cluster with no MetricMappings: discovery lists nothing (the API
 * adds its placeholder), every metric request is a 404 that says so. `governor run`
 * serves this until MetricMapping reconciliation supplies the live provider.
 */
import { MetricNotFoundError, type MetricsProvider, formatGroupResource } from "./provider.js";

/** See the module comment. */
export class NoMetricsProvider implements MetricsProvider {
  listCustomMetrics() {
    return [];
  }
  listExternalMetrics() {
    return [];
  }
  async getMetricByName(req: {
    groupResource: { group: string; resource: string };
    metric: string;
  }): Promise<never> {
    throw new MetricNotFoundError(
      `no MetricMapping serves "${req.metric}" for ${formatGroupResource(req.groupResource)}`,
    );
  }
  async getMetricBySelector(req: {
    groupResource: { group: string; resource: string };
    metric: string;
  }): Promise<never> {
    throw new MetricNotFoundError(
      `no MetricMapping serves "${req.metric}" for ${formatGroupResource(req.groupResource)}`,
    );
  }
  async getExternalMetric(req: { metric: string; namespace: string }): Promise<never> {
    throw new MetricNotFoundError(
      `no MetricMapping serves external metric "${req.metric}" in namespace "${req.namespace}"`,
    );
  }
}
