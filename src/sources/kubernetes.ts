/**
 * `kubernetes`: counts objects of any resource by label and field selector ("jobs
 * pending", "nodes ready"), from a watch kept while any mapping counts the same
 * collection with the same selectors — one watch shared by all of them, not a list per
 * sample — that keeps each object's identity only (name, uid, resourceVersion), never
 * its contents. Counts the mapping's namespace; every namespace
 * (`allNamespaces`) or a cluster-scoped resource (nodes…) only where the admin allows
 * reads beyond the mapping's namespace (`--allow-cluster-wide-counts`), since they run
 * with Governor's rights, not the mapping author's.
 */
import { z } from "zod";
import { GROUP_RESOURCE_PATTERN, parseGroupResource } from "../api/group-resource.js";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { KubeApi } from "../k8s/client.js";
import type { ResilientInformer } from "../k8s/informer.js";
import { DiscoveryResourceMapper, type ResourceMapper } from "../k8s/resource-mapper.js";

import type { MetricSource, SampleValue } from "./source.js";
import { SourceConfigError } from "./source.js";
import { defineSource, required } from "./kind.js";

/** `spec.source.kubernetes`. */
export const KubernetesCountSpec = z
  .object({
    count: z.object({
      resource: z
        .string()
        .regex(new RegExp(GROUP_RESOURCE_PATTERN))
        .meta({ description: "What to count: jobs.batch, pods, nodes…" }),
      labelSelector: z.string().optional(),
      fieldSelector: z.string().optional(),
      allNamespaces: z
        .boolean()
        .default(false)
        .meta({ description: "Count cluster-scoped or all namespaces' objects (needs RBAC)." }),
    }),
  })
  .meta({ description: "Count Kubernetes objects." });

type Spec = z.output<typeof KubernetesCountSpec>;

/** One watch of one collection and selectors, shared by every mapping that counts it. */
interface SharedCount {
  readonly informer: ResilientInformer<KubernetesObject>;
  readonly synced: () => boolean;
  readonly lastError: () => string | undefined;
  /** Gives up this user's share; the watch stops with the last one. */
  release(): Promise<void>;
}

/** Shared watches by client, then by collection path and selectors (see the module comment). */
const shared = new WeakMap<KubeApi, Map<string, { count: SharedCount; users: number }>>();

/** A share of the watch of `path` with these selectors, started by its first user. */
function acquire(client: KubeApi, path: string, labelSelector?: string, fieldSelector?: string): SharedCount {
  let byKey = shared.get(client);
  if (!byKey) shared.set(client, (byKey = new Map<string, { count: SharedCount; users: number }>()));
  const key = `${path}?l=${labelSelector ?? ""}&f=${fieldSelector ?? ""}`;
  const hit = byKey.get(key);
  if (hit) {
    hit.users++;
    return hit.count;
  }
  let synced = false;
  let lastError: string | undefined;
  const informer = client.informer<KubernetesObject>(
    path,
    {
      listed: () => (lastError = undefined),
      error: (err) => (lastError = err instanceof Error ? err.message : String(err)),
    },
    { labelSelector, fieldSelector, identityOnly: true },
  );
  void informer.synced.then(() => (synced = true));
  const entry = {
    users: 1,
    count: {
      informer,
      synced: () => synced,
      lastError: () => lastError,
      async release() {
        if (--entry.users > 0) return;
        byKey.delete(key);
        await informer.stop();
      },
    },
  };
  byKey.set(key, entry);
  return entry.count;
}

/** See the module comment. */
export class KubernetesCountSource implements MetricSource {
  readonly needsObjects = false;
  private watch?: SharedCount;
  private starting?: Promise<SharedCount>;
  private closed = false;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: {
      namespace: string;
      client: KubeApi;
      mapper: ResourceMapper;
      /** Whether counts beyond the mapping's namespace are allowed. @default false */
      clusterWide?: boolean;
    },
  ) {}

  async sample(): Promise<SampleValue> {
    this.starting ??= this.start();
    const watch = await this.starting;
    const c = this.spec.count;
    const why = () => {
      const err = watch.lastError();
      return err ? `watching ${c.resource}: ${err}` : undefined;
    };
    if (!watch.synced()) {
      // Not listed yet: report why at once (e.g. RBAC), else give the first list a moment.
      const err = why();
      if (err) throw new Error(err);
      await Promise.race([
        watch.informer.synced,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(why() ?? "the first list has not completed")), 5000).unref(),
        ),
      ]);
    }
    // Once listed, a dropped watch is restarted by the informer; the cache stays current enough.
    return { kind: "scalar", value: watch.informer.list().length };
  }

  async close(): Promise<void> {
    this.closed = true;
    const watch = this.watch;
    this.watch = undefined;
    await watch?.release();
  }

  private async start(): Promise<SharedCount> {
    const c = this.spec.count;
    const gr = parseGroupResource(c.resource);
    const m = await this.ctx.mapper.lookup(gr);
    if (!m) {
      this.starting = undefined;
      throw new SourceConfigError(`the cluster serves no resource "${c.resource}"`);
    }
    if ((c.allNamespaces || !m.namespaced) && !this.ctx.clusterWide) {
      this.starting = undefined;
      throw new SourceConfigError(
        `counting ${c.resource} ${m.namespaced ? "in all namespaces" : "(cluster-scoped)"} reads beyond this namespace with Governor's rights, which this cluster does not allow (an admin can with --allow-cluster-wide-counts)`,
      );
    }
    if (this.closed) throw new SourceConfigError("the source is closed");
    const path = DiscoveryResourceMapper.collectionPath(m, c.allNamespaces ? undefined : this.ctx.namespace);
    this.watch = acquire(this.ctx.client, path, c.labelSelector, c.fieldSelector);
    return this.watch;
  }
}

/** The `kubernetes` source kind. */
export const kubernetes = defineSource({
  kind: "kubernetes",
  schema: KubernetesCountSpec,
  build: (spec, ctx) =>
    new KubernetesCountSource(spec, {
      namespace: ctx.namespace,
      client: required(ctx.client, "kubernetes", "a Kubernetes client"),
      mapper: required(ctx.mapper, "kubernetes", "API discovery"),
      clusterWide: ctx.clusterWideCounts,
    }),
});
