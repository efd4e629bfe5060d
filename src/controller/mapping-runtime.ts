/**
 * What serving one MetricMapping takes at run time, built from its validated spec (the
 * analogue of KEDA's scalers builder): its source, the sampler that polls it, and for
 * sources narrowed by the HPA's selector one sampler per selector asked for. Builds only:
 * the samplers start when the reconciler hands the mapping to the provider.
 */
import { durationMs } from "../api/common.js";
import type { QueryScope } from "../sources/promql-scope.js";
import type { KubeApi } from "../k8s/client.js";
import type { PodIndex } from "../k8s/pod-index.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";
import { MetricUnavailableError } from "../metrics/provider.js";
import { parseQuantity } from "../api/quantity.js";
import { Sampler, type SamplerState } from "../metrics/sampler.js";
import { SamplerPool } from "../metrics/sampler-pool.js";
import type { BackendBudgets } from "../metrics/backend-budget.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import type { DestinationPolicy } from "../sources/destination-policy.js";
import { type MetricMappingSpec, buildSource, rateWindowMs } from "../sources/registry.js";
import type { SecretReader } from "../sources/secrets.js";

/** Samplers one MetricMapping with `{{selector}}` runs at once (one per distinct selector). */
export const MAX_SELECTOR_SAMPLERS = 32;

/** What building a mapping's runtime needs from the operator. */
export interface RuntimeDeps {
  client: KubeApi;
  mapper: ResourceMapper;
  pods: PodIndex;
  secrets: SecretReader;
  sourcePolicy?: DestinationPolicy;
  sourceMaxResponseBytes?: number;
  clusterWideCounts?: boolean;
  /** How Prometheus queries are bound to the namespace (SourceContext). */
  prometheusScope?: QueryScope;
  /** Whether `scrape` reads pods on their node's network (SourceContext). @default false */
  hostNetworkScrape?: boolean;
  /** Sampler outcomes, for /metrics. */
  observeSample?: (outcome: "ok" | "error", seconds: number) => void;
  /** Where mappings that would send the same request share a sampler. @default none shared */
  samplers?: SamplerPool;
  /** The query budget of each backend sources send to. @default none */
  budgets?: BackendBudgets;
}

/** A mapping's runtime, and how to stop it (its sampler stops with the last mapping sharing it). */
export type RuntimeMapping = ActiveMapping & { release(): Promise<void> };

/** One mapping to build: its key, namespace, validated spec and resolved subject. */
export interface RuntimeSpec {
  key: string;
  namespace: string;
  spec: MetricMappingSpec;
  subject: ActiveMapping["subject"];
}

/**
 * Builds the mapping's runtime; `onSample` sees every attempt of its main sampler. Throws
 * `SourceConfigError` for a source that cannot be built as written.
 */
export function buildActiveMapping(
  deps: RuntimeDeps,
  m: RuntimeSpec,
  onSample: (state: SamplerState) => void,
): RuntimeMapping {
  const { key, namespace, spec, subject } = m;
  const ctx = {
    namespace,
    client: deps.client,
    mapper: deps.mapper,
    secrets: deps.secrets,
    policy: deps.sourcePolicy,
    maxResponseBytes: deps.sourceMaxResponseBytes,
    clusterWideCounts: deps.clusterWideCounts,
    prometheusScope: deps.prometheusScope,
    hostNetworkScrape: deps.hostNetworkScrape,
  };
  const source = buildSource(spec, ctx);
  const isPods =
    subject.kind === "resource" &&
    subject.groupResource.group === "" &&
    subject.groupResource.resource === "pods";
  const intervalMs = durationMs(spec.interval);
  // A rate's window: as declared, else as the source kind says (scrape: the time between two samples).
  const windowMs = rateWindowMs(spec, intervalMs);
  const samplerFor = (
    src: typeof source,
    selector?: LabelSelector,
    onState?: (state: SamplerState) => void,
    staleAfterMs?: number,
  ) => {
    const budget = src.backend === undefined ? undefined : deps.budgets?.join(src.backend, namespace);
    const sampler = new Sampler(src, {
      intervalMs,
      ...(staleAfterMs !== undefined ? { staleAfterMs } : {}),
      ...(budget ? { budget } : {}),
      request: () => ({
        namespace,
        ...(selector ? { selector } : {}),
        ...(src.needsObjects && isPods
          ? {
              objects: deps.pods
                .list(namespace, selector && ((labels) => selector.matches(labels)))
                .filter((p) => !p.terminating)
                .map((p) => ({ name: p.name, ip: p.ip, labels: p.labels, hostNetwork: p.hostNetwork })),
            }
          : {}),
      }),
      onSample: onState,
      observe: deps.observeSample,
    });
    if (budget) sampler.onStop(() => budget.release());
    return sampler;
  };
  // The mapping's own sampler slows down while nobody reads it (Sampler: demand-aware); the
  // per-selector ones stop after 10 unused intervals instead. Mappings that would send the
  // same request on the same schedule share it (SamplerPool); not those narrowed by the
  // HPA's selector, whose per-selector samplers live with their mapping.
  const sharedAs = source.perSelector
    ? undefined
    : JSON.stringify([namespace, spec.source, isPods, spec.interval, spec.staleAfter]);
  const lease = (deps.samplers ?? new SamplerPool()).acquire(
    sharedAs,
    () => samplerFor(source, undefined, undefined, durationMs(spec.staleAfter)),
    onSample,
  );
  if (lease.joined) void source.close?.(); // the shared sampler has its own
  const sampler = lease.sampler;
  const fallback = spec.fallback ? parseQuantity(spec.fallback.value) : undefined;
  const active: RuntimeMapping = {
    key,
    namespace,
    metric: spec.metric,
    subject,
    sampler,
    release: () => lease.release(),
    staleAfterMs: durationMs(spec.staleAfter),
    ...(fallback !== undefined ? { fallback: { value: fallback, text: spec.fallback!.value } } : {}),
    ...(windowMs !== undefined ? { windowSeconds: Math.round(windowMs / 1000) } : {}),
  };
  if (source.perSelector) {
    // One sampler per selector the HPAs ask with; one left unused for 10 intervals stops.
    // At most MAX_SELECTOR_SAMPLERS at once: each queries the source every interval, and
    // the selectors come from whoever can call the metrics API.
    const bySelector = new Map<string, { sampler: Sampler; usedAt: number }>();
    active.forSelector = (selector) => {
      const k = selector.toString();
      let entry = bySelector.get(k);
      if (!entry && bySelector.size >= MAX_SELECTOR_SAMPLERS)
        throw new MetricUnavailableError(
          `MetricMapping ${key} already samples ${MAX_SELECTOR_SAMPLERS} different label selectors, its limit; a selector unused for 10 intervals is released`,
        );
      if (!entry) {
        entry = { sampler: samplerFor(buildSource(spec, ctx), selector), usedAt: 0 };
        bySelector.set(k, entry);
        entry.sampler.start();
      }
      entry.usedAt = Date.now();
      return entry.sampler;
    };
    const sweep = setInterval(() => {
      for (const [k, e] of bySelector) {
        if (Date.now() - e.usedAt > 10 * intervalMs) {
          bySelector.delete(k);
          void e.sampler.stop();
        }
      }
    }, intervalMs * 10);
    sweep.unref();
    sampler.onStop(async () => {
      clearInterval(sweep);
      await Promise.all([...bySelector.values()].map((e) => e.sampler.stop()));
      bySelector.clear();
    });
  }
  return active;
}
