/**
 * Maps a group-resource (`deployments.apps`) to its kind, preferred version and scope by
 * API discovery, like client-go's deferred RESTMapper: loaded once, reloaded on a miss
 * (at most every 10 s), so CRDs installed later are found.
 */

import type { GroupResource } from "../api/group-resource.js";
import type { KubeClient } from "./client.js";

/** What a resource is. */
export interface ResourceMapping {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  /** `v1` or `group/version`. */
  apiVersion: string;
}

/** Looks resources up. */
export interface ResourceMapper {
  /** The mapping, or undefined when the cluster does not serve the resource. */
  lookup(gr: GroupResource): Promise<ResourceMapping | undefined>;
}

interface ApiResourceList {
  groupVersion: string;
  resources: { name: string; kind: string; namespaced: boolean }[];
}

/** See the module comment. */
export class DiscoveryResourceMapper implements ResourceMapper {
  private byKey = new Map<string, ResourceMapping>();
  private loadedAt = 0;
  private loading?: Promise<void>;

  constructor(private readonly client: KubeClient) {}

  async lookup(gr: GroupResource): Promise<ResourceMapping | undefined> {
    const key = `${gr.resource}.${gr.group}`;
    const hit = this.byKey.get(key);
    if (hit) return hit;
    if (Date.now() - this.loadedAt > 10_000) await this.reload();
    return this.byKey.get(key);
  }

  /** Where objects of a mapping live (collection path, namespaced when given a namespace). */
  static collectionPath(m: ResourceMapping, namespace?: string): string {
    const base = m.group ? `/apis/${m.group}/${m.version}` : `/api/${m.version}`;
    return m.namespaced && namespace
      ? `${base}/namespaces/${namespace}/${m.resource}`
      : `${base}/${m.resource}`;
  }

  private reload(): Promise<void> {
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async load(): Promise<void> {
    const next = new Map<string, ResourceMapping>();
    const lists: ApiResourceList[] = [await this.client.get<ApiResourceList>("/api/v1")];
    const groups = await this.client.get<{
      groups: { name: string; preferredVersion: { groupVersion: string } }[];
    }>("/apis");
    const results = await Promise.allSettled(
      groups.groups.map((g) => this.client.get<ApiResourceList>(`/apis/${g.preferredVersion.groupVersion}`)),
    );
    for (const r of results) if (r.status === "fulfilled") lists.push(r.value);
    for (const list of lists) {
      const [group, version] = list.groupVersion.includes("/")
        ? list.groupVersion.split("/")
        : ["", list.groupVersion];
      for (const res of list.resources) {
        if (res.name.includes("/")) continue; // subresources
        next.set(`${res.name}.${group}`, {
          group: group!,
          version: version!,
          resource: res.name,
          kind: res.kind,
          namespaced: res.namespaced,
          apiVersion: group ? `${group}/${version}` : version!,
        });
      }
    }
    this.byKey = next;
    this.loadedAt = Date.now();
  }
}
