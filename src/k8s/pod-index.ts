/**
 * The pods of the cluster, from one informer: what `pods` metrics are served for (one
 * item per pod matching the HPA's selector) and where `scrape` sources find pod IPs.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { KubeApi } from "./client.js";
import type { ResilientInformer } from "./informer.js";

/** The parts of a pod Governor uses. */
export interface PodInfo {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ip?: string;
  ready: boolean;
  terminating: boolean;
}

interface Pod extends KubernetesObject {
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

/** Lists pods by namespace. */
export interface PodIndex {
  /** Pods of `namespace`; with `where`, only those whose labels it accepts (checked before anything is copied). */
  list(namespace: string, where?: (labels: Record<string, string>) => boolean): PodInfo[];
  get(namespace: string, name: string): PodInfo | undefined;
}

function toInfo(p: Pod): PodInfo {
  return {
    name: p.metadata?.name ?? "",
    namespace: p.metadata?.namespace ?? "",
    labels: p.metadata?.labels ?? {},
    ip: p.status?.podIP,
    ready: p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
    terminating: Boolean(p.metadata?.deletionTimestamp),
  };
}

/** A {@link PodIndex} backed by a cluster-wide pod informer. */
export class InformerPodIndex implements PodIndex {
  private readonly informer: ResilientInformer<Pod>;

  constructor(client: KubeApi, logger: Logger) {
    this.informer = client.informer<Pod>("/api/v1/pods", {
      error: (err, retryIn) => logger.warn({ err, retryIn }, "pod watch failed; restarting"),
    });
  }

  get synced(): Promise<void> {
    return this.informer.synced;
  }

  list(namespace: string, where?: (labels: Record<string, string>) => boolean): PodInfo[] {
    const out: PodInfo[] = [];
    for (const p of this.informer.list(namespace)) {
      if (!where || where(p.metadata?.labels ?? {})) out.push(toInfo(p));
    }
    return out;
  }

  get(namespace: string, name: string): PodInfo | undefined {
    const p = this.informer.get(name, namespace);
    return p ? toInfo(p) : undefined;
  }

  stop(): Promise<void> {
    return this.informer.stop();
  }
}
