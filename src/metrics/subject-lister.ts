/**
 * Finds the objects a metric describes: pods from the pod index (no API call per
 * request; terminating pods left out, as the HPA does), other resources with a LIST by
 * label selector, cached for 2 s so a burst of HPA requests makes one call.
 */
import type { GroupResource } from "../api/group-resource.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import type { SubjectLister, SubjectObject } from "./mapping-provider.js";
import type { KubeClient, KubeObject } from "../k8s/client.js";
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import type { PodIndex } from "../k8s/pod-index.js";
import { DiscoveryResourceMapper, type ResourceMapper } from "../k8s/resource-mapper.js";

const isPods = (gr: GroupResource) => gr.group === "" && gr.resource === "pods";

/** See the module comment. */
export class KubeSubjectLister implements SubjectLister {
  /**
   * Lists by resource, namespace and (caller-chosen) selector, reused for 2 s: bounded,
   * least recently used out first (an entry is counted at a typical list's size).
   */
  private readonly cache = byteBoundedCache<string, { at: number; objects: Promise<SubjectObject[]> }>({
    maxBytes: 4 << 20,
    sizeOf: (key) => stringBytes(key) + 2048,
  });

  constructor(
    private readonly client: KubeClient,
    private readonly mapper: ResourceMapper,
    private readonly pods: PodIndex,
  ) {}

  async describe(gr: GroupResource) {
    const m = await this.mapper.lookup(gr);
    return m && { kind: m.kind, apiVersion: m.apiVersion, namespaced: m.namespaced };
  }

  async list(gr: GroupResource, namespace: string, selector: LabelSelector): Promise<SubjectObject[]> {
    if (isPods(gr)) {
      return this.pods
        .list(namespace, (labels) => selector.matches(labels))
        .filter((p) => !p.terminating)
        .map((p) => ({ name: p.name, labels: p.labels }));
    }
    const key = `${gr.resource}.${gr.group}|${namespace}|${selector.toString()}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < 2000) return hit.objects;
    const objects = this.fetch(gr, namespace, selector);
    this.cache.set(key, { at: Date.now(), objects });
    objects.catch(() => this.cache.delete(key));
    return objects;
  }

  version(gr: GroupResource, namespace: string): number | undefined {
    return isPods(gr) ? this.pods.version(namespace) : undefined;
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
    return this.fetchOne(gr, namespace, name);
  }

  private async fetchOne(
    gr: GroupResource,
    namespace: string,
    name: string,
  ): Promise<SubjectObject | undefined> {
    const m = await this.mapper.lookup(gr);
    if (!m) return undefined;
    const obj = await this.client.getOrUndefined<KubeObject>(
      `${DiscoveryResourceMapper.collectionPath(m, namespace)}/${name}`,
    );
    return obj && { name, labels: obj.metadata?.labels ?? {} };
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
