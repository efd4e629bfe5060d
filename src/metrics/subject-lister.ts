/**
 * Finds the objects a metric describes, from caches only: pods from the pod index
 * (terminating pods left out, as the HPA does), other resources from a watch of their
 * collection in the namespace, kept (names and labels only) while a served MetricMapping
 * describes them — the provider holds it from activation to deactivation, so a request
 * finds it listed. Where Governor may list a kind but not watch it (or already watches
 * {@link MAX_WATCHED_COLLECTIONS} collections), that collection is listed on request
 * instead, reused for 2 s.
 */
import type { GroupResource } from "../api/group-resource.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import type { SubjectLister, SubjectObject } from "./mapping-provider.js";
import { MetricUnavailableError } from "./provider.js";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { KubeClient, KubeObject } from "../k8s/client.js";
import type { ResilientInformer } from "../k8s/informer.js";
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import { boundedText } from "../util/bounded-text.js";
import type { PodIndex } from "../k8s/pod-index.js";
import { DiscoveryResourceMapper, type ResourceMapper } from "../k8s/resource-mapper.js";

const isPods = (gr: GroupResource) => gr.group === "" && gr.resource === "pods";

/** Collections of subjects watched at once, at most (each is one watch on the apiserver). */
export const MAX_WATCHED_COLLECTIONS = 1000;

/** One watched collection: a resource in a namespace. */
interface Watched {
  holders: number;
  /** The watch, from its start (stopped on release). */
  watch?: ResilientInformer<KubernetesObject>;
  /** Set once the first list is in (and while it may be watched). */
  informer?: ResilientInformer<KubernetesObject>;
  /** Settles once it is listed, found unwatchable, failing, or released. */
  ready: Promise<void>;
  /** Changes and lists seen (for {@link KubeSubjectLister.version}). */
  changes: number;
  /** Governor may not watch it, or watches too many: listed on request instead. */
  listOnly?: boolean;
  /** Why the last list or watch failed, while it has not been listed yet. */
  failing?: string;
  released?: boolean;
}

/** See the module comment. */
export class KubeSubjectLister implements SubjectLister {
  private readonly watched = new Map<string, Watched>();
  /** Lists of collections that cannot be watched, reused for 2 s (least recently used out first). */
  private readonly listed = byteBoundedCache<string, { at: number; objects: Promise<SubjectObject[]> }>({
    maxBytes: 4 << 20,
    sizeOf: (key) => stringBytes(key) + 2048,
  });

  constructor(
    private readonly client: KubeClient,
    private readonly mapper: ResourceMapper,
    private readonly pods: PodIndex,
    private readonly log?: (msg: string, fields: Record<string, unknown>) => void,
  ) {}

  async describe(gr: GroupResource) {
    const m = await this.mapper.lookup(gr);
    return m && { kind: m.kind, apiVersion: m.apiVersion, namespaced: m.namespaced };
  }

  hold(gr: GroupResource, namespace: string): (() => void) | undefined {
    if (isPods(gr)) return undefined; // the pod index serves them
    const key = collectionKey(gr, namespace);
    let w = this.watched.get(key);
    if (!w) {
      const entry: Watched = { holders: 0, changes: 0, ready: Promise.resolve() };
      // Past the limit a collection is listed on request, as one Governor may not watch.
      if (this.watching() >= MAX_WATCHED_COLLECTIONS) entry.listOnly = true;
      else entry.ready = this.watch(gr, namespace, entry);
      this.watched.set(key, (w = entry));
    }
    const held = w;
    held.holders++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--held.holders > 0) return;
      held.released = true;
      this.watched.delete(key);
      void held.watch?.stop();
    };
  }

  private watching(): number {
    let n = 0;
    for (const w of this.watched.values()) if (!w.listOnly) n++;
    return n;
  }

  private async watch(gr: GroupResource, namespace: string, w: Watched): Promise<void> {
    const m = await this.mapper.lookup(gr).catch(() => undefined);
    if (!m || !m.namespaced || w.released) {
      w.listOnly = true; // unknown or cluster-scoped: the provider refuses these before listing
      return;
    }
    const seen = () => void w.changes++;
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    const informer = this.client.informer<KubernetesObject>(
      DiscoveryResourceMapper.collectionPath(m, namespace),
      {
        add: seen,
        update: seen,
        delete: seen,
        listed: seen,
        error: (err) => {
          const status = (err as { statusCode?: number }).statusCode;
          // May list but not watch (403), or cannot be watched (405): list on request.
          if (status === 403 || status === 405) {
            w.listOnly = true;
            w.informer = undefined;
            void informer.stop();
            this.log?.("cannot watch the subjects of a MetricMapping: listing them on request", {
              resource: m.resource,
              namespace,
              status,
            });
          } else if (!w.informer)
            w.failing = boundedText(err instanceof Error ? err.message : String(err), 200);
          settle(); // a request waiting for the first list learns why there is none
        },
      },
      { identityOnly: true, keepLabels: true },
    );
    w.watch = informer;
    if (w.released) void informer.stop();
    void informer.synced.then(() => {
      if (w.listOnly || w.released) return;
      w.informer = informer;
      w.failing = undefined;
    });
    await Promise.race([informer.synced, settled]);
  }

  async list(gr: GroupResource, namespace: string, selector: LabelSelector): Promise<SubjectObject[]> {
    if (isPods(gr)) {
      return this.pods
        .list(namespace, (labels) => selector.matches(labels))
        .filter((p) => !p.terminating)
        .map((p) => ({ name: p.name, labels: p.labels }));
    }
    const w = this.watched.get(collectionKey(gr, namespace));
    if (!w) return this.listNow(gr, namespace, selector); // held by no served mapping: not kept
    if (!w.informer && !w.listOnly) {
      await w.ready;
      if (!w.informer && !w.listOnly)
        throw new MetricUnavailableError(
          `cannot list ${gr.resource} in ${namespace} yet: ${w.failing ?? "the first list is not in"}`,
        );
    }
    if (w.informer)
      return w.informer
        .list(namespace)
        .filter((o) => selector.matches(o.metadata?.labels ?? {}))
        .map((o) => ({ name: o.metadata?.name ?? "", labels: o.metadata?.labels ?? {} }));
    return this.listNow(gr, namespace, selector);
  }

  version(gr: GroupResource, namespace: string): number | undefined {
    if (isPods(gr)) return this.pods.version(namespace);
    const w = this.watched.get(collectionKey(gr, namespace));
    return w?.informer ? w.changes : undefined;
  }

  get(
    gr: GroupResource,
    namespace: string,
    name: string,
  ): SubjectObject | undefined | Promise<SubjectObject | undefined> {
    if (isPods(gr)) {
      const p = this.pods.get(namespace, name);
      return p && !p.terminating ? { name: p.name, labels: p.labels } : undefined;
    }
    const o = this.watched.get(collectionKey(gr, namespace))?.informer?.get(name, namespace);
    return o && { name, labels: o.metadata?.labels ?? {} };
  }

  /** A collection Governor may not watch: one LIST per selector, reused for 2 s. */
  private listNow(gr: GroupResource, namespace: string, selector: LabelSelector): Promise<SubjectObject[]> {
    const key = `${collectionKey(gr, namespace)}|${selector.toString()}`;
    const hit = this.listed.get(key);
    if (hit && Date.now() - hit.at < 2000) return hit.objects;
    const objects = this.fetch(gr, namespace, selector);
    this.listed.set(key, { at: Date.now(), objects });
    objects.catch(() => this.listed.delete(key));
    return objects;
  }

  private async fetch(
    gr: GroupResource,
    namespace: string,
    selector: LabelSelector,
  ): Promise<SubjectObject[]> {
    const m = await this.mapper.lookup(gr);
    if (!m) return [];
    const list = await this.client.get<{ items: KubeObject[] }>(
      DiscoveryResourceMapper.collectionPath(m, namespace),
      {
        labelSelector: selector.empty ? undefined : selector.toString(),
      },
    );
    return list.items.map((o) => ({ name: o.metadata?.name ?? "", labels: o.metadata?.labels ?? {} }));
  }
}

const collectionKey = (gr: GroupResource, namespace: string) => `${gr.resource}.${gr.group}|${namespace}`;
