/**
 * What serving one MetricMapping takes at run time, built from its validated spec (the
 * analogue of KEDA's scalers builder): its source, the sampler that polls it, and for
 * sources narrowed by the HPA's selector one sampler per selector asked for. Builds only:
 * the samplers start when the reconciler hands the mapping to the provider.
 */
import { createHash } from "node:crypto";
import { durationMs } from "../api/common.js";
import type { QueryScope } from "../sources/promql-scope.js";
import type { KubeApi } from "../k8s/client.js";
import type { PodIndex } from "../k8s/pod-index.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";
import { MetricUnavailableError } from "../metrics/provider.js";
import { parseQuantity } from "../api/quantity.js";
import { Sampler, type SamplerState } from "../metrics/sampler.js";
import { type SamplerLease, SamplerPool } from "../metrics/sampler-pool.js";
import type { BackendBudgets } from "../metrics/backend-budget.js";
import type { HistoryPoints, HistoryRing, MappingHistories } from "../metrics/history.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import type { DestinationPolicy } from "../sources/destination-policy.js";
import { type MetricMappingSpec, buildSource, rateWindowMs } from "../sources/registry.js";
import type { MappingReader } from "../sources/kind.js";
import type { SecretReader } from "../sources/secrets.js";
import type { MetricSource, SampleRequest } from "../sources/source.js";
import type { OtlpStore } from "../sources/otlp-store.js";

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
  /** The grid samplers start on (SamplerOptions.slotMs). */
  sampleSlotMs?: number;
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
  /** Where each mapping's samples are kept for replay (src/metrics/history.ts). @default none kept */
  history?: MappingHistories;
  /** The mappings served here, for formulas' inputs (SourceContext). */
  mappings?: MappingReader;
  /** What pushers sent over OTLP, for `otlp` sources; unset when the receiver is off. */
  otlp?: OtlpStore;
}

/**
 * A mapping's runtime, and how to stop it (its sampler stops with the last mapping sharing
 * it); its kept samples, for a forecast that reads it.
 */
export type RuntimeMapping = ActiveMapping & {
  release(): Promise<void>;
  recorded(sinceMs: number): HistoryPoints | undefined;
};

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
 *
 * What a mapping keeps while it runs is held by a few objects, not closures over this
 * function's scope (a closure keeps its whole scope alive: 100,000 mappings each kept it).
 */
export function buildActiveMapping(
  deps: RuntimeDeps,
  m: RuntimeSpec,
  onSample: (state: SamplerState) => void,
): RuntimeMapping {
  const { namespace, spec, subject } = m;
  const source = buildSource(spec, sourceContext(deps, namespace, spec, m.key.slice(namespace.length + 1)));
  const isPods =
    subject.kind === "resource" &&
    subject.groupResource.group === "" &&
    subject.groupResource.resource === "pods";
  // The mapping's own sampler slows down while nobody reads it (Sampler: demand-aware); the
  // per-selector ones stop after 10 unused intervals instead. Mappings that would send the
  // same request on the same schedule share it (SamplerPool); not those narrowed by the
  // HPA's selector, whose per-selector samplers live with their mapping.
  // Keyed by a digest of what makes two requests the same (a Prometheus query can be long;
  // each mapping keeps its key).
  const sharedAs = source.perSelector
    ? undefined
    : createHash("sha256")
        .update(JSON.stringify([namespace, spec.source, isPods, spec.interval, spec.staleAfter]))
        .digest("base64url");
  // Its samples are kept for replay, in its sampler's ring, unless they depend on the HPA's
  // selector (then the mapping's own sampler's values are not what any HPA read).
  const recording = deps.history && !source.perSelector ? new Recording(onSample) : undefined;
  const lease = (deps.samplers ?? new SamplerPool()).acquire(
    sharedAs,
    () => samplerFor(deps, namespace, spec, isPods, source, undefined, durationMs(spec.staleAfter)),
    recording ? recording.onSample : onSample,
  );
  if (lease.joined) void source.close?.(); // the shared sampler has its own
  if (recording) {
    recording.ring = deps.history!.ringOf(lease.sampler);
    deps.history!.attach(m.key, recording.ring);
  }
  return new Running(deps, m, isPods, lease, recording?.ring);
}

/** A mapping's listener that keeps each sample in its sampler's ring first. */
class Recording {
  ring?: HistoryRing;
  constructor(private readonly then: (state: SamplerState) => void) {}
  readonly onSample = (state: SamplerState): void => {
    if (state.last) this.ring?.record(state.last.atMs, state.last.value);
    this.then(state);
  };
}

/** What a source of `namespace` is built with. */
function sourceContext(deps: RuntimeDeps, namespace: string, spec: MetricMappingSpec, name?: string) {
  return {
    namespace,
    name,
    intervalMs: durationMs(spec.interval),
    staleAfterMs: durationMs(spec.staleAfter),
    mappings: deps.mappings,
    client: deps.client,
    mapper: deps.mapper,
    secrets: deps.secrets,
    policy: deps.sourcePolicy,
    maxResponseBytes: deps.sourceMaxResponseBytes,
    clusterWideCounts: deps.clusterWideCounts,
    prometheusScope: deps.prometheusScope,
    hostNetworkScrape: deps.hostNetworkScrape,
    otlp: deps.otlp,
  };
}

/** A sampler of `src` for a mapping of `namespace`, on its backend's budget. */
function samplerFor(
  deps: RuntimeDeps,
  namespace: string,
  spec: MetricMappingSpec,
  isPods: boolean,
  src: MetricSource,
  selector?: LabelSelector,
  staleAfterMs?: number,
): Sampler {
  const budget = src.backend === undefined ? undefined : deps.budgets?.join(src.backend, namespace);
  const sampler = new Sampler(src, {
    intervalMs: durationMs(spec.interval),
    ...(staleAfterMs !== undefined ? { staleAfterMs } : {}),
    ...(budget ? { budget } : {}),
    request: requestFor(namespace, selector, src.needsObjects && isPods ? deps.pods : undefined),
    observe: deps.observeSample,
    ...(deps.sampleSlotMs !== undefined ? { slotMs: deps.sampleSlotMs } : {}),
  });
  // A pushed source wakes its sampler (the sampler stops listening when it stops).
  if (src.onChange) sampler.onStop(src.onChange(sampler.wake.bind(sampler, undefined, undefined)));
  return sampler;
}

/** What each request of a sampler says: the namespace, the selector, and the pods where the source needs them. */
function requestFor(
  namespace: string,
  selector: LabelSelector | undefined,
  pods: PodIndex | undefined,
): () => Omit<SampleRequest, "signal"> {
  if (!pods) return selector ? () => ({ namespace, selector }) : namespaceRequest(namespace);
  return () => ({
    namespace,
    ...(selector ? { selector } : {}),
    objects: pods
      .list(namespace, selector && ((labels) => selector.matches(labels)))
      .filter((p) => !p.terminating)
      .map((p) => ({ name: p.name, uid: p.uid, ip: p.ip, labels: p.labels, hostNetwork: p.hostNetwork })),
  });
}

/** Namespaces {@link namespaceRequest} keeps a request function of. */
const NAMESPACE_REQUESTS_KEPT = 10_000;
const namespaceRequests = new Map<string, () => { namespace: string }>();

/**
 * The request of a sampler that needs only its namespace: one function per namespace for
 * all its samplers (a function and its scope per sampler otherwise).
 */
function namespaceRequest(namespace: string): () => { namespace: string } {
  let fn = namespaceRequests.get(namespace);
  if (!fn) {
    fn = () => ({ namespace });
    if (namespaceRequests.size < NAMESPACE_REQUESTS_KEPT) namespaceRequests.set(namespace, fn);
  }
  return fn;
}

/** A running mapping (see {@link buildActiveMapping}). */
class Running implements RuntimeMapping {
  readonly key: string;
  readonly namespace: string;
  readonly metric: string;
  readonly subject: ActiveMapping["subject"];
  readonly staleAfterMs: number;
  // Declared only: absent, not undefined, where a mapping has none.
  declare readonly fallback?: ActiveMapping["fallback"];
  declare readonly windowSeconds?: number;
  /** Set for sources narrowed by the HPA's selector. */
  declare readonly forSelector?: (selector: LabelSelector) => Sampler;
  declare private selectors?: Selectors;

  constructor(
    private readonly deps: RuntimeDeps,
    m: RuntimeSpec,
    isPods: boolean,
    private readonly lease: SamplerLease,
    private readonly ring?: HistoryRing,
  ) {
    const { key, namespace, spec, subject } = m;
    this.key = key;
    this.namespace = namespace;
    this.metric = spec.metric;
    this.subject = subject;
    this.staleAfterMs = durationMs(spec.staleAfter);
    const fallback = spec.fallback ? parseQuantity(spec.fallback.value) : undefined;
    if (fallback !== undefined) this.fallback = { value: fallback, text: spec.fallback!.value };
    // A rate's window: as declared, else as the source kind says (scrape: the time between two samples).
    const windowMs = rateWindowMs(spec, durationMs(spec.interval));
    if (windowMs !== undefined) this.windowSeconds = Math.round(windowMs / 1000);
    if (lease.sampler.source.perSelector) {
      const selectors = (this.selectors = new Selectors(deps, m, isPods));
      this.forSelector = (selector) => selectors.samplerFor(selector);
    }
  }

  get sampler(): Sampler {
    return this.lease.sampler;
  }

  recorded(sinceMs: number): HistoryPoints | undefined {
    return this.ring?.points(sinceMs);
  }

  async release(): Promise<void> {
    if (this.ring) this.deps.history?.detach(this.key, this.ring);
    try {
      await this.selectors?.stop();
    } finally {
      await this.lease.release();
    }
  }
}

/**
 * One sampler per selector the HPAs ask with; one left unused for 10 intervals stops. At
 * most MAX_SELECTOR_SAMPLERS at once: each queries the source every interval, and the
 * selectors come from whoever can call the metrics API.
 */
class Selectors {
  private readonly bySelector = new Map<string, { sampler: Sampler; usedAt: number }>();
  private readonly sweep: NodeJS.Timeout;
  private readonly intervalMs: number;
  private stopped = false;

  constructor(
    private readonly deps: RuntimeDeps,
    private readonly m: RuntimeSpec,
    private readonly isPods: boolean,
  ) {
    this.intervalMs = durationMs(m.spec.interval);
    this.sweep = setInterval(() => {
      for (const [k, e] of this.bySelector) {
        if (Date.now() - e.usedAt > 10 * this.intervalMs) {
          this.bySelector.delete(k);
          void e.sampler.stop();
        }
      }
    }, this.intervalMs * 10);
    this.sweep.unref();
  }

  samplerFor(selector: LabelSelector): Sampler {
    // A request that found the mapping before it was released (an edit, a delete) gets no new sampler.
    if (this.stopped) throw new MetricUnavailableError(`MetricMapping ${this.m.key} is being replaced`);
    const k = selector.toString();
    let entry = this.bySelector.get(k);
    if (!entry && this.bySelector.size >= MAX_SELECTOR_SAMPLERS)
      throw new MetricUnavailableError(
        `MetricMapping ${this.m.key} already samples ${MAX_SELECTOR_SAMPLERS} different label selectors, its limit; a selector unused for 10 intervals is released`,
      );
    if (!entry) {
      const { namespace, spec } = this.m;
      const source = buildSource(spec, sourceContext(this.deps, namespace, spec));
      entry = { sampler: samplerFor(this.deps, namespace, spec, this.isPods, source, selector), usedAt: 0 };
      this.bySelector.set(k, entry);
      entry.sampler.start();
    }
    entry.usedAt = Date.now();
    return entry.sampler;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweep);
    await Promise.all([...this.bySelector.values()].map((e) => e.sampler.stop()));
    this.bySelector.clear();
  }
}
