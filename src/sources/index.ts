/**
 * Builds the {@link MetricSource} for a MetricMapping's `spec.source`. Sources that need
 * the cluster (Secrets, informers) get it through {@link SourceContext}.
 */
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import type { AnswerDecoder } from "./answer-decoder.js";
import type { KubeApi } from "../k8s/client.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import { HttpSource } from "./http.js";
import { KubernetesCountSource } from "./kubernetes.js";
import { PrometheusSource, type QueryScope } from "./prometheus.js";
import { ScrapeSource } from "./scrape.js";
import type { DestinationPolicy } from "./destination-policy.js";
import type { SecretReader } from "./secrets.js";
import type { MetricSource } from "./source.js";
import { SourceConfigError } from "./source.js";
import { StaticSource } from "./static.js";

/** What sources may use besides their spec. */
export interface SourceContext {
  namespace: string;
  client?: KubeApi;
  mapper?: ResourceMapper;
  secrets?: SecretReader;
  /** Where HTTP sources may connect. @default DEFAULT_DESTINATION_POLICY */
  policy?: DestinationPolicy;
  /** The most an HTTP source may read from one answer, in bytes. @default MAX_RESPONSE_BYTES */
  maxResponseBytes?: number;
  /** Decodes sources' answers. @default sharedAnswerDecoder() */
  decoder?: AnswerDecoder;
  /** Whether `kubernetes` counts may read beyond the mapping's namespace. @default false */
  clusterWideCounts?: boolean;
  /** How Prometheus queries are bound to the namespace. @default { namespaceLabel: "namespace" } */
  prometheusScope?: QueryScope;
  /** Whether `scrape` reads pods on their node's network. @default false */
  hostNetworkScrape?: boolean;
}

/** The kind of source a spec selects. */
export function sourceKind(spec: MetricMappingSpec["source"]): string {
  return Object.keys(spec).find((k) => (spec as Record<string, unknown>)[k] !== undefined) ?? "none";
}

/** Builds a source; throws {@link SourceConfigError} for a spec it cannot run. */
export function buildSource(spec: MetricMappingSpec, ctx: SourceContext): MetricSource {
  const s = spec.source;
  if (s.static) return new StaticSource(s.static);
  // subject pods: a MetricMappingSpec rule
  if (s.scrape)
    return new ScrapeSource(s.scrape, {
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      allowHostNetwork: ctx.hostNetworkScrape,
    });
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new SourceConfigError(`the ${sourceKind(s)} source needs ${what}`);
    return v;
  };
  if (s.prometheus)
    return new PrometheusSource(s.prometheus, {
      namespace: ctx.namespace,
      secrets: need(ctx.secrets, "Secret access"),
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      scope: ctx.prometheusScope,
    });
  if (s.http)
    return new HttpSource(s.http, {
      namespace: ctx.namespace,
      secrets: need(ctx.secrets, "Secret access"),
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      scope: ctx.prometheusScope,
    });
  if (s.kubernetes) {
    return new KubernetesCountSource(s.kubernetes, {
      namespace: ctx.namespace,
      client: need(ctx.client, "a Kubernetes client"),
      mapper: need(ctx.mapper, "API discovery"),
      clusterWide: ctx.clusterWideCounts,
    });
  }
  throw new SourceConfigError("spec.source names no source");
}
