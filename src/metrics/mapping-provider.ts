/**
 * The provider backed by the live set of MetricMappings. The MetricMapping reconciler
 * `activate`s the winning mapping for each (namespace, subject, metric) with its sampler
 * and `deactivate`s it when it goes away; this class answers the metrics API from the
 * samplers' last good values. It never calls a source on the request path unless no value
 * has been sampled yet. A value older than `staleAfter` is served as the mapping's
 * fallback, or refused with 503 — never invented.
 *
 * A mapping serves objects of its own namespace only (its namespace is the one bound into
 * its source's queries).
 */
import { formatGroupResource, type GroupResource } from "../api/group-resource.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import { LRUCache } from "lru-cache";
import { Doorkeeper } from "../util/doorkeeper.js";
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import { untilCancelled } from "../util/deadline.js";
import type { Sampler } from "./sampler.js";
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
} from "./provider.js";

/** A mapping the provider serves. */
export interface ActiveMapping {
  /** `namespace/name` of the MetricMapping. */
  key: string;
  namespace: string;
  metric: string;
  subject:
    { kind: "resource"; groupResource: GroupResource } | { kind: "external"; labels: Record<string, string> };
  sampler: Sampler;
  /** For sources narrowed by the HPA's selector: the sampler for one selector (created on first use). */
  forSelector?: (selector: LabelSelector) => Sampler;
  staleAfterMs: number;
  fallback?: { value: number; text: string };
  windowSeconds?: number;
}

/** An object the metric can describe. */
export interface SubjectObject {
  name: string;
  labels: Record<string, string>;
}

/** Finds the objects of a subject, from caches (subject-lister.ts). */
export interface SubjectLister {
  /**
   * Keeps the objects of `gr` in `namespace` at hand (a watch) until the returned function
   * is called (none: nothing to hold, as for pods): the provider holds the subjects of
   * every mapping it serves.
   */
  hold?(gr: GroupResource, namespace: string): (() => void) | undefined;
  /** Kind and apiVersion for `describedObject`, or undefined if the cluster has no such resource. */
  describe(gr: GroupResource): Promise<{ kind: string; apiVersion: string; namespaced: boolean } | undefined>;
  /** Objects in `namespace` matching `selector`. */
  list(gr: GroupResource, namespace: string, selector: LabelSelector): Promise<SubjectObject[]>;
  /**
   * A number that changes whenever `list` of `gr` in `namespace` could answer differently;
   * undefined when that is not known locally (then selector answers are never reused).
   */
  version?(gr: GroupResource, namespace: string): number | undefined;
  /** One object, or undefined when it does not exist (synchronous when it is known locally, e.g. pods). */
  get(
    gr: GroupResource,
    namespace: string,
    name: string,
  ): SubjectObject | undefined | Promise<SubjectObject | undefined>;
}

type Formatter = (value: number) => string;
type Described = { kind: string; apiVersion: string; namespaced: boolean };
/** What {@link MappingProvider} serves for one request: one value, or one per object name. */
type Served = { scalar?: number; values?: ReadonlyMap<string, number>; atMs: number };

type HandedOut = { m: ActiveMapping; atMs: number; info: Described; raw: number; value: CustomMetricValue };
/** A selector's answer and what it was built from. */
type Answered = {
  m: ActiveMapping;
  sampler: Sampler;
  atMs: number;
  scalar?: number;
  values?: ReadonlyMap<string, number>;
  info: Described;
  version: number;
  out: readonly CustomMetricValue[];
};

/** Options of {@link MappingProvider}. */
export interface MappingProviderOptions {
  /**
   * The most memory selector answers are kept in for reuse, in bytes (an estimate that
   * counts their serialized bytes too); 0 builds every answer anew. @default 32 MiB
   */
  answerCacheBytes?: number;
}

/** Estimated bytes one kept selector answer item costs: its objects, and its share of the serialized text and buffer. */
const ANSWER_ITEM_BYTES = 700;

/** How long a resource's kind/apiVersion is reused before asking the resource mapper again. */
const DESCRIBED_TTL_MS = 30_000;

const customKey = (namespace: string, gr: GroupResource, metric: string) =>
  `${namespace}|${formatGroupResource(gr)}|${metric}`;
const externalKey = (namespace: string, metric: string) => `${namespace}|${metric}`;

/** See the module comment. */
export class MappingProvider implements MetricsProvider {
  private readonly custom = new Map<string, ActiveMapping>();
  private readonly external = new Map<string, ActiveMapping>();
  /** Each served mapping by its key (its key in `custom` or `external` is made from it again). */
  private readonly byMappingKey = new Map<string, ActiveMapping>();
  /** What each served mapping holds of its subjects (SubjectLister.hold), by mapping key. */
  private readonly held = new Map<string, () => void>();
  private customList?: CustomMetricInfo[];
  /** Resources' kinds by group/resource, the 1,000 most recent (requests name them). */
  private readonly described = new LRUCache<string, { info: Described; at: number }>({ max: 1000 });
  /**
   * Answers handed out by name, keyed `mapping key NUL object name`: one budget across all
   * mappings, least recently used out first, so unique object names cannot grow it; and a
   * name gets in only when asked for a second time, so a flood of unique names keeps
   * nothing and pushes out no name an HPA asks for (the hostile-input suite's flood: peak
   * RSS 268–270 MiB with this, 293–305 without).
   */
  private readonly handedOut = byteBoundedCache<string, HandedOut>({
    maxBytes: 16 << 20,
    sizeOf: (key) => stringBytes(key) * 2 + 400,
  });
  private readonly askedBefore = new Doorkeeper();
  /**
   * Selector answers, keyed `mapping key NUL selector`: the same array (and so the same
   * serialized bytes, see metrics-api.ts) while the sample, the matching objects and the
   * kind are unchanged. A selector gets in on its second request (a flood of unique
   * selectors keeps nothing); bounded in bytes, least recently used out first.
   */
  private readonly answers?: LRUCache<string, Answered>;
  private externalList?: ExternalMetricInfo[];

  constructor(
    private readonly subjects: SubjectLister,
    private readonly format: Formatter,
    private readonly now: () => number = Date.now,
    opts: MappingProviderOptions = {},
  ) {
    const maxBytes = opts.answerCacheBytes ?? 32 << 20;
    if (maxBytes > 0)
      this.answers = byteBoundedCache<string, Answered>({
        maxBytes,
        sizeOf: (key, a) => stringBytes(key) + 200 + a.out.length * ANSWER_ITEM_BYTES,
      });
  }

  /** Serves `m` (replacing whatever it served before under its key). */
  activate(m: ActiveMapping): void {
    this.deactivate(m.key);
    const [map, k] = this.servedAs(m);
    map.set(k, m);
    this.byMappingKey.set(m.key, m);
    const held =
      m.subject.kind === "resource" ? this.subjects.hold?.(m.subject.groupResource, m.namespace) : undefined;
    if (held) this.held.set(m.key, held);
    this.customList = this.externalList = undefined;
  }

  /**
   * Stops serving the mapping `key` (`namespace/name`); returns what it served, if anything
   * (nothing once another mapping took its metric over: that one is left serving).
   */
  deactivate(key: string): ActiveMapping | undefined {
    const activated = this.byMappingKey.get(key);
    if (!activated) return undefined;
    this.byMappingKey.delete(key);
    this.held.get(key)?.();
    this.held.delete(key);
    const [map, k] = this.servedAs(activated);
    if (map.get(k) !== activated) return undefined;
    map.delete(k);
    this.customList = this.externalList = undefined;
    return activated;
  }

  /** The active mapping of a MetricMapping key, if it is served (not if another took its metric over). */
  active(key: string): ActiveMapping | undefined {
    const activated = this.byMappingKey.get(key);
    if (!activated) return undefined;
    const [map, k] = this.servedAs(activated);
    return map.get(k) === activated ? activated : undefined;
  }

  /** Where `m` is served: the map of its API and its key there. */
  private servedAs(m: ActiveMapping): [Map<string, ActiveMapping>, string] {
    return m.subject.kind === "external"
      ? [this.external, externalKey(m.namespace, m.metric)]
      : [this.custom, customKey(m.namespace, m.subject.groupResource, m.metric)];
  }

  /** Number of mappings served. */
  get size(): number {
    return this.byMappingKey.size;
  }

  /** A mapping of the request's namespace serves it (no mapping serves cluster-scoped objects). */
  serves(q: MetricQuery): boolean {
    if (q.api === "external") return this.external.has(externalKey(q.namespace, q.metric));
    return q.namespace !== undefined && this.custom.has(customKey(q.namespace, q.groupResource, q.metric));
  }

  listCustomMetrics(): CustomMetricInfo[] {
    if (!this.customList) {
      const seen = new Map<string, CustomMetricInfo>();
      for (const m of this.custom.values()) {
        if (m.subject.kind !== "resource") continue;
        const gr = m.subject.groupResource;
        const id = `${formatGroupResource(gr)}/${m.metric}`;
        // Namespace metrics describe the Namespace object itself: cluster-scoped in discovery.
        if (!seen.has(id))
          seen.set(id, {
            groupResource: gr,
            namespaced: !(gr.group === "" && gr.resource === "namespaces"),
            metric: m.metric,
          });
      }
      this.customList = [...seen.values()];
    }
    return this.customList;
  }

  listExternalMetrics(): ExternalMetricInfo[] {
    this.externalList ??= [...new Set([...this.external.values()].map((m) => m.metric))].map((metric) => ({
      metric,
    }));
    return this.externalList;
  }

  async getMetricByName(req: ObjectMetricRequest): Promise<CustomMetricValue> {
    const isNamespace = req.groupResource.group === "" && req.groupResource.resource === "namespaces";
    const namespace = isNamespace ? req.name : req.namespace;
    if (namespace === undefined)
      throw new MetricNotFoundError(
        `metrics of cluster-scoped ${formatGroupResource(req.groupResource)} are not served (a MetricMapping serves its own namespace)`,
      );
    const m = this.customMapping(namespace, req.groupResource, req.metric);
    // Warm requests take no await below: the kind is remembered, pods are looked up in the
    // local index, and the sampler already holds a value.
    const info =
      this.describedNow(req.groupResource) ??
      (await untilCancelled(this.describe(req.groupResource), req.cancel));
    if (
      !isNamespace &&
      m.subject.kind === "resource" &&
      m.subject.groupResource.resource === "pods" &&
      m.subject.groupResource.group === ""
    ) {
      const pod = this.subjects.get(req.groupResource, namespace, req.name);
      if (!(pod instanceof Promise ? await untilCancelled(pod, req.cancel) : pod)) {
        throw new MetricNotFoundError(`pods "${req.name}" not found in namespace "${namespace}"`);
      }
    }
    const sample = m.sampler.state.last
      ? this.evaluate(m, m.sampler)
      : await untilCancelled(this.current(m), req.cancel);
    const value = sample.scalar ?? sample.values?.get(req.name);
    if (value === undefined)
      throw new MetricNotFoundError(
        `${formatGroupResource(req.groupResource)} "${req.name}" has no value for metric "${req.metric}"`,
      );
    // The same answer object while sample and kind are unchanged (from a name's second
    // request on): the API reuses its bytes.
    const memoKey = `${m.key}\u0000${req.name}`;
    const hit = this.handedOut.get(memoKey);
    if (hit && hit.m === m && hit.atMs === sample.atMs && hit.info === info && hit.raw === value)
      return hit.value;
    const described: DescribedObject = {
      kind: info.kind,
      apiVersion: info.apiVersion,
      ...(isNamespace ? {} : { namespace }),
      name: req.name,
    };
    const out = this.customValue(m, described, value, sample.atMs);
    if (hit || this.askedBefore.seenBefore(memoKey))
      this.handedOut.set(memoKey, { m, atMs: sample.atMs, info, raw: value, value: out });
    return out;
  }

  async getMetricBySelector(req: SelectorMetricRequest): Promise<readonly CustomMetricValue[]> {
    if (req.namespace === undefined)
      throw new MetricNotFoundError(
        `metrics of cluster-scoped ${formatGroupResource(req.groupResource)} are not served (a MetricMapping serves its own namespace)`,
      );
    const m = this.customMapping(req.namespace, req.groupResource, req.metric);
    const info =
      this.describedNow(req.groupResource) ??
      (await untilCancelled(this.describe(req.groupResource), req.cancel));
    const sampler = m.forSelector && !req.selector.empty ? m.forSelector(req.selector) : m.sampler;
    // Warm and known locally (pods): the answer built for the same sample, objects and kind.
    const version =
      this.answers && sampler.state.last
        ? this.subjects.version?.(req.groupResource, req.namespace)
        : undefined;
    if (version !== undefined) {
      const sample = this.evaluate(m, sampler);
      const memoKey = `${m.key}\u0000${req.selector.toString()}`;
      const hit = this.answers!.get(memoKey);
      if (
        hit &&
        hit.m === m &&
        hit.sampler === sampler &&
        hit.atMs === sample.atMs &&
        hit.scalar === sample.scalar &&
        hit.values === sample.values &&
        hit.info === info &&
        hit.version === version
      )
        return hit.out;
      const objects = await untilCancelled(
        this.subjects.list(req.groupResource, req.namespace, req.selector),
        req.cancel,
      );
      const out = this.selectorValues(m, info, req.namespace, objects, sample);
      if (hit || this.askedBefore.seenBefore(memoKey))
        this.answers!.set(memoKey, { m, sampler, ...sample, info, version, out });
      return out;
    }
    const [objects, sample] = await untilCancelled(
      Promise.all([
        this.subjects.list(req.groupResource, req.namespace, req.selector),
        this.current(m, sampler),
      ]),
      req.cancel,
    );
    return this.selectorValues(m, info, req.namespace, objects, sample);
  }

  /** One value per object that the sample has a value for. */
  private selectorValues(
    m: ActiveMapping,
    info: Described,
    namespace: string,
    objects: readonly SubjectObject[],
    sample: Served,
  ): CustomMetricValue[] {
    const out: CustomMetricValue[] = [];
    for (const o of objects) {
      const value = sample.scalar ?? sample.values?.get(o.name);
      if (value === undefined) continue;
      out.push(
        this.customValue(
          m,
          { kind: info.kind, apiVersion: info.apiVersion, namespace, name: o.name },
          value,
          sample.atMs,
        ),
      );
    }
    return out;
  }

  async getExternalMetric(req: ExternalMetricRequest): Promise<ExternalMetricValue[]> {
    const m = this.external.get(externalKey(req.namespace, req.metric));
    if (!m || m.subject.kind !== "external") {
      throw new MetricNotFoundError(
        `no MetricMapping serves external metric "${req.metric}" in namespace "${req.namespace}"`,
      );
    }
    const baseLabels = m.subject.labels;
    const sample = m.sampler.state.last
      ? this.evaluate(m, m.sampler)
      : await untilCancelled(this.current(m), req.cancel);
    const series: { labels: Record<string, string>; value: number }[] =
      sample.scalar !== undefined
        ? [{ labels: baseLabels, value: sample.scalar }]
        : [...(sample.values ?? new Map<string, number>())].map(([name, value]) => ({
            labels: { ...baseLabels, name },
            value,
          }));
    return series
      .filter((s) => req.metricSelector.matches(s.labels))
      .map((s) => ({
        metric: req.metric,
        labels: s.labels,
        timestamp: sample.atMs,
        ...(m.windowSeconds !== undefined ? { windowSeconds: m.windowSeconds } : {}),
        value: this.format(s.value),
      }));
  }

  private customMapping(namespace: string, gr: GroupResource, metric: string): ActiveMapping {
    const m = this.custom.get(customKey(namespace, gr, metric));
    if (!m)
      throw new MetricNotFoundError(
        `no MetricMapping serves metric "${metric}" for ${formatGroupResource(gr)} in namespace "${namespace}"`,
      );
    return m;
  }

  /** Kind and apiVersion of a resource, if looked up in the last 30 s. */
  private describedNow(gr: GroupResource): Described | undefined {
    const hit = this.described.get(formatGroupResource(gr));
    return hit && this.now() - hit.at < DESCRIBED_TTL_MS ? hit.info : undefined;
  }

  private async describe(gr: GroupResource): Promise<Described> {
    const info = await this.subjects.describe(gr);
    if (!info) throw new MetricNotFoundError(`the server has no resource ${formatGroupResource(gr)}`);
    this.described.set(formatGroupResource(gr), { info, at: this.now() });
    return info;
  }

  private customValue(m: ActiveMapping, o: DescribedObject, value: number, atMs: number): CustomMetricValue {
    return {
      describedObject: o,
      metric: m.metric,
      timestamp: atMs,
      ...(m.windowSeconds !== undefined ? { windowSeconds: m.windowSeconds } : {}),
      value: this.format(value),
    };
  }

  /** The value to serve now: current, or the fallback once stale, or 503. */
  private async current(m: ActiveMapping, sampler: Sampler = m.sampler): Promise<Served> {
    if (!sampler.state.last) await sampler.sampleIfDue();
    return this.evaluate(m, sampler);
  }

  /** {@link current} once the sampler has been asked at least once. */
  private evaluate(m: ActiveMapping, sampler: Sampler): Served {
    sampler.markRead();
    const state = sampler.state;
    const last = state.last;
    const age = last ? this.now() - last.atMs : Infinity;
    if (last && age <= m.staleAfterMs) {
      return last.value.kind === "scalar"
        ? { scalar: last.value.value, atMs: last.atMs }
        : { values: last.value.values, atMs: last.atMs };
    }
    if (m.fallback) return { scalar: m.fallback.value, atMs: this.now() };
    const why = state.error ? `: ${state.error}` : "";
    throw new MetricUnavailableError(
      last
        ? `metric "${m.metric}" (MetricMapping ${m.key}) is stale: last sampled ${Math.round(age / 1000)}s ago, staleAfter is ${Math.round(m.staleAfterMs / 1000)}s, and no fallback is set${why}`
        : `metric "${m.metric}" (MetricMapping ${m.key}) has no value yet${why}`,
    );
  }
}
