/**
 * A stand-in kubelet for the local control plane's Node `governor-local-node`, whose pods
 * are imaginary: it plays the kubelet's part in their status — phase Running, Ready, a
 * loopback `podIP` — so controllers and the HPA see ready pods, and it finishes graceful
 * deletions (which otherwise wait for a kubelet forever). A process listening on the pod's
 * loopback address can then "be" the pod. Used by integration/e2e tests and the demo.
 * (Pods that must really run — Governor's own Deployment, sample apps — go to the node
 * agent's Nodes instead: tools/devcluster/node-agent.)
 *
 * Which pods are its own: those of namespaces created with
 * {@link STAND_IN_NAMESPACE_ANNOTATIONS} (the PodNodeSelector admission plugin gives them
 * a node selector only the stand-in Node matches). That Node is tainted so nothing else is
 * scheduled there — nor are these pods, so the stand-in kubelet binds them itself, as a
 * scheduler would.
 *
 * The pod IP is the pod's `governor.dev/pod-ip` annotation when set, otherwise the next
 * free address from 127.0.1.1 upwards.
 */
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import { type KubeClient, KubeApiError } from "../../src/k8s/client.js";
import { startInformer, type ResilientInformer } from "../../src/k8s/informer.js";

/** The annotation that chooses a pod's loopback IP. */
export const POD_IP_ANNOTATION = "governor.dev/pod-ip";

/** The Node the stand-in kubelet plays (registered by hack/cluster.sh). */
export const STAND_IN_NODE = "governor-local-node";
const STAND_IN_LABEL = "governor.dev/stand-in";

/** Annotations of a namespace whose pods the stand-in kubelet runs. */
export const STAND_IN_NAMESPACE_ANNOTATIONS = {
  "scheduler.alpha.kubernetes.io/node-selector": `${STAND_IN_LABEL}=true`,
} as const;

interface Pod extends KubernetesObject {
  spec?: {
    nodeName?: string;
    nodeSelector?: Record<string, string>;
    containers?: { name: string; image?: string }[];
  };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

/** A running stand-in kubelet. */
export interface StandInKubelet {
  /** Resolves once existing pods have been seen. */
  synced: Promise<void>;
  /** The loopback IP given to a pod, if it has one. */
  ipOf(namespace: string, name: string): string | undefined;
  stop(): Promise<void>;
}

/**
 * Starts the stand-in kubelet.
 * @param opts.namespace watch one namespace only. @default all namespaces
 * @param opts.onError called with errors it could not act on (it keeps going).
 */
export function startStandInKubelet(
  client: KubeClient,
  opts: { namespace?: string; onError?: (err: unknown) => void } = {},
): StandInKubelet {
  const base = opts.namespace ? `/api/v1/namespaces/${opts.namespace}/pods` : "/api/v1/pods";
  const ips = new Map<string, string>(); // uid → ip
  const used = new Set<string>();
  let next = 1 << 8; // 127.0.1.1 is index 257
  const report = (err: unknown) => opts.onError?.(err);

  const allocate = (pod: Pod): string => {
    const uid = pod.metadata?.uid ?? "";
    const fixed = pod.metadata?.annotations?.[POD_IP_ANNOTATION];
    if (fixed) return fixed;
    let ip = ips.get(uid);
    while (!ip) {
      next++;
      const candidate = `127.${(next >> 16) & 255}.${(next >> 8) & 255}.${next & 255}`;
      if ((next & 255) !== 0 && (next & 255) !== 255 && !used.has(candidate)) ip = candidate;
    }
    ips.set(uid, ip);
    used.add(ip);
    return ip;
  };

  const reconcile = async (pod: Pod): Promise<void> => {
    const { name, namespace, deletionTimestamp } = pod.metadata ?? {};
    if (!name || !namespace) return;
    const path = `/api/v1/namespaces/${namespace}/pods/${name}`;
    const nodeName = pod.spec?.nodeName;
    if (!nodeName && pod.spec?.nodeSelector?.[STAND_IN_LABEL] === "true" && !deletionTimestamp) {
      await client.create(`${path}/binding`, {
        apiVersion: "v1",
        kind: "Binding",
        metadata: { name, namespace },
        target: { apiVersion: "v1", kind: "Node", name: STAND_IN_NODE },
      });
      return; // the bound pod comes back through the watch
    }
    if (
      nodeName !== STAND_IN_NODE &&
      !(deletionTimestamp && !nodeName && pod.spec?.nodeSelector?.[STAND_IN_LABEL])
    )
      return;
    if (deletionTimestamp) {
      // A kubelet confirms graceful deletion once containers are gone; ours are imaginary.
      await client.delete(path, { gracePeriodSeconds: 0 });
      return;
    }
    const ip = allocate(pod);
    const ready = pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    if (pod.status?.phase === "Running" && ready && pod.status.podIP === ip) return;
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const condition = (type: string) => ({ type, status: "True", lastTransitionTime: now });
    await client.mergePatch(`${path}/status`, {
      status: {
        phase: "Running",
        hostIP: "127.0.0.1",
        hostIPs: [{ ip: "127.0.0.1" }],
        podIP: ip,
        podIPs: [{ ip }],
        startTime: now,
        conditions: ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map(condition),
        containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
          name: c.name,
          image: c.image ?? "",
          imageID: "",
          ready: true,
          started: true,
          restartCount: 0,
          state: { running: { startedAt: now } },
        })),
      },
    });
  };

  const handle = (pod: Pod) => {
    reconcile(pod).catch((err: unknown) => {
      if (err instanceof KubeApiError && (err.statusCode === 404 || err.statusCode === 409)) return;
      report(err);
    });
  };

  const informer: ResilientInformer<Pod> = startInformer<Pod>(
    client.kubeConfig,
    base,
    () => client.get<KubernetesListObject<Pod>>(base),
    {
      add: handle,
      update: handle,
      delete: (pod) => {
        const ip = ips.get(pod.metadata?.uid ?? "");
        if (ip) used.delete(ip);
        ips.delete(pod.metadata?.uid ?? "");
      },
      error: report,
    },
  );

  return {
    synced: informer.synced,
    ipOf(namespace, name) {
      const pod = informer.get(name, namespace);
      return pod?.status?.podIP;
    },
    stop: () => informer.stop(),
  };
}
