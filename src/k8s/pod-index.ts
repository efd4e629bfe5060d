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
  /** The pod's uid (what OpenTelemetry's `k8s.pod.uid` names). */
  uid?: string;
  labels: Record<string, string>;
  ip?: string;
  ready: boolean;
  terminating: boolean;
  phase: "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown";
  /** Whether the pod uses its node's network (its IP is the node's). */
  hostNetwork: boolean;
}

interface Pod extends KubernetesObject {
  spec?: { hostNetwork?: boolean };
  status?: { podIP?: string; phase?: string; conditions?: { type: string; status: string }[] };
}

/** Lists pods by namespace. */
export interface PodIndex {
  /** Pods of `namespace`; with `where`, only those whose labels it accepts (checked before anything is copied). */
  list(namespace: string, where?: (labels: Record<string, string>) => boolean): PodInfo[];
  get(namespace: string, name: string): PodInfo | undefined;
  /** A number that changes whenever a pod of `namespace` is added, changed or deleted. */
  version(namespace: string): number;
}

function toInfo(p: Pod): PodInfo {
  return {
    name: p.metadata?.name ?? "",
    namespace: p.metadata?.namespace ?? "",
    uid: p.metadata?.uid,
    labels: p.metadata?.labels ?? {},
    ip: p.status?.podIP,
    ready: p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
    terminating: Boolean(p.metadata?.deletionTimestamp),
    phase: (p.status?.phase ?? "Unknown") as PodInfo["phase"],
    hostNetwork: p.spec?.hostNetwork === true,
  };
}

/** A {@link PodIndex} backed by a cluster-wide pod informer. */
export class InformerPodIndex implements PodIndex {
  private readonly informer: ResilientInformer<Pod>;
  /** Changes seen per namespace since the last (re)list. */
  private readonly changes = new Map<string, number>();
  /** (Re)lists so far: each starts every namespace's version anew. */
  private lists = 0;

  constructor(client: KubeApi, logger: Logger) {
    const changed = (p: Pod) => {
      const ns = p.metadata?.namespace ?? "";
      this.changes.set(ns, (this.changes.get(ns) ?? 0) + 1);
    };
    this.informer = client.informer<Pod>("/api/v1/pods", {
      add: changed,
      update: changed,
      delete: changed,
      // A relist's objects go into the cache right after this: start anew then too.
      listed: () => {
        this.relisted();
        setImmediate(() => this.relisted());
      },
      error: (err, retryIn) => logger.warn({ err, retryIn }, "pod watch failed; restarting"),
    });
  }

  private relisted(): void {
    this.lists++;
    this.changes.clear();
  }

  version(namespace: string): number {
    return this.lists * 2 ** 32 + (this.changes.get(namespace) ?? 0);
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
