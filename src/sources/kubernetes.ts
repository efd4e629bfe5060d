/**
 * `kubernetes`: counts objects of any resource by label and field selector ("jobs
 * pending", "nodes ready"), from an informer kept for the mapping's lifetime — one watch,
 * not a list per sample. Counts the mapping's namespace; every namespace
 * (`allNamespaces`) or a cluster-scoped resource (nodes…) only where the admin allows
 * reads beyond the mapping's namespace (`--allow-cluster-wide-counts`), since they run
 * with Governor's rights, not the mapping author's.
 */
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import type { KubeClient } from "../k8s/client.js";
import { startInformer, type ResilientInformer } from "../k8s/informer.js";
import { DiscoveryResourceMapper, type ResourceMapper } from "../k8s/resource-mapper.js";
import { parseGroupResource } from "../metrics/provider.js";
import type { MetricSource, SampleValue } from "./source.js";
import { SourceConfigError } from "./source.js";

type Spec = NonNullable<MetricMappingSpec["source"]["kubernetes"]>;

/** See the module comment. */
export class KubernetesCountSource implements MetricSource {
  readonly needsObjects = false;
  private informer?: ResilientInformer<KubernetesObject>;
  private starting?: Promise<void>;
  private lastError?: string;
  private synced = false;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: {
      namespace: string;
      client: KubeClient;
      mapper: ResourceMapper;
      /** Whether counts beyond the mapping's namespace are allowed. @default false */
      clusterWide?: boolean;
    },
  ) {}

  async sample(): Promise<SampleValue> {
    this.starting ??= this.start();
    await this.starting;
    if (!this.synced) {
      // Not listed yet: report why at once (e.g. RBAC), else give the first list a moment.
      if (this.lastError) throw new Error(this.lastError);
      await Promise.race([
        this.informer!.synced,
        new Promise((_, reject) =>
          setTimeout(
            () => reject(new Error(this.lastError ?? "the first list has not completed")),
            5000,
          ).unref(),
        ),
      ]);
    }
    // Once listed, a dropped watch is restarted by the informer; the cache stays current enough.
    return { kind: "scalar", value: this.informer!.list().length };
  }

  async close(): Promise<void> {
    await this.informer?.stop();
  }

  private async start(): Promise<void> {
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
    const path = DiscoveryResourceMapper.collectionPath(m, c.allNamespaces ? undefined : this.ctx.namespace);
    const query = { labelSelector: c.labelSelector, fieldSelector: c.fieldSelector };
    this.informer = startInformer<KubernetesObject>(
      this.ctx.client.kubeConfig,
      path,
      async () => {
        const list = await this.ctx.client.get<KubernetesListObject<KubernetesObject>>(path, query);
        this.lastError = undefined;
        return list;
      },
      {
        error: (err) =>
          (this.lastError = `watching ${c.resource}: ${err instanceof Error ? err.message : String(err)}`),
      },
      { labelSelector: c.labelSelector, fieldSelector: c.fieldSelector },
    );
    void this.informer.synced.then(() => (this.synced = true));
  }
}
