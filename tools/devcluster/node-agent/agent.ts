/**
 * The node agent of the local control plane (the successor of the stand-in kubelet for
 * everything that must really run): it registers one or more Nodes, each with its own /24
 * of the pod CIDR, renews their Leases, and runs the pods bound to them (pod.ts) on a pod
 * network of network namespaces (network.ts), with a user-space service proxy for
 * ClusterIPs (service-proxy.ts). A small HTTP control endpoint on a Unix socket lets
 * tests "lose" a Node (and bring it back). Started and stopped by `hack/cluster.sh` (needs root).
 *
 * (A little over 350 lines, test rig only: Node registration, leases, binding pods to
 * runners and the control socket share the agent's one view of its Nodes; the pod, network
 * and service-proxy work is in their own files.)
 */
import { mkdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { KubernetesListObject } from "@kubernetes/client-node";
import { KubeApiError, type KubeClient } from "../../../src/k8s/client.js";
import { startInformer, type ResilientInformer } from "../../../src/k8s/informer.js";
import { ImageTable } from "./images.js";
import { intToIp, ipToInt, nodeSubnet, PodNetwork } from "./network.js";
import { PodRunner, type Pod } from "./pod.js";
import { startServiceProxy, type ServiceProxy } from "./service-proxy.js";

/** The label every node-agent Node carries. */
export const NODE_AGENT_LABEL = "governor.dev/node-agent";

/** Options of {@link startNodeAgent}. */
export interface NodeAgentOptions {
  client: KubeClient;
  /** Node names, e.g. `governor-node-a`. */
  nodes: string[];
  /** @default "10.213.0.0/16" */
  podCidr?: string;
  /** Prefix of network names made. @default "gov" */
  prefix?: string;
  /** Pod directories, container logs and the control socket go here. */
  stateDir: string;
  /** The cluster CA file (pods' `ca.crt`). */
  caFile: string;
  /** The checkout the known images are assembled from (see images.ts). */
  root: string;
  /** The Node.js binary for the known images. */
  nodeBinary: string;
  /** Where the `kubernetes` Service's connections go (`host:port` of the apiserver). */
  apiserver: string;
  /** Reported as the Nodes' kubelet version. */
  version: string;
  /** Restart back-off. @default 10 s doubling to 300 s */
  backoff?: { initialMs: number; maxMs: number };
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/** A running node agent. */
export interface NodeAgent {
  /** The control socket's path. */
  socket: string;
  proxy: ServiceProxy;
  /**
   * Kills every pod on `node` at once, cuts them off and makes the Node NotReady. Resolves to
   * the number of service-proxy connections that were open to its pods at that moment (the
   * most requests the loss can strand).
   */
  lose(node: string): Promise<number>;
  /** Brings a lost Node back, as after a reboot. */
  rejoin(node: string): Promise<void>;
  /** Stops every pod (2 s grace) and removes the pod network. */
  stop(): Promise<void>;
}

interface NodeState {
  name: string;
  subnet: string;
  used: Set<string>;
  /** The host part of the last IP given. */
  next: number;
  informer?: ResilientInformer<Pod>;
  heartbeat?: NodeJS.Timeout;
  lost: boolean;
}

const HEARTBEAT_MS = 10_000;
const LEASE_SECONDS = 40;

/** Starts the agent; see the module comment. */
export async function startNodeAgent(opts: NodeAgentOptions): Promise<NodeAgent> {
  const { client, log } = opts;
  const network = new PodNetwork({ cidr: opts.podCidr ?? "10.213.0.0/16", prefix: opts.prefix });
  const left = await network.teardownAll();
  if (left.namespaces || left.links) log("removed a previous agent's network", left);
  await network.checkNoOverlap();
  await network.ensureBridge();
  const podsDir = join(opts.stateDir, "pods");
  rmSync(podsDir, { recursive: true, force: true });
  mkdirSync(podsDir, { recursive: true, mode: 0o755 });
  const layoutsDir = join(opts.stateDir, "images");
  mkdirSync(layoutsDir, { recursive: true, mode: 0o755 });
  const images = new ImageTable(opts.root, opts.nodeBinary, layoutsDir);
  const kubernetesService = await kubernetesServiceAddress(client);
  const proxy = startServiceProxy(client, network, {
    apiserver: opts.apiserver,
    onError: (err) => log("service proxy", { err: String(err) }),
  });
  const runners = new Map<string, PodRunner>(); // uid
  const nodes = opts.nodes.map<NodeState>((name, i) => ({
    name,
    subnet: nodeSubnet(network.cidr, i),
    used: new Set(),
    next: 1,
    lost: false,
  }));

  const contextFor = (node: NodeState) => ({
    client,
    network,
    images,
    podsDir,
    caFile: opts.caFile,
    kubernetesService,
    nodeName: node.name,
    hostIP: network.gateway,
    backoff: opts.backoff ?? { initialMs: 10_000, maxMs: 300_000 },
    log,
    allocateIP: (preferred?: string) => {
      const base = ipToInt(node.subnet.split("/")[0]!);
      const offset = preferred ? ipToInt(preferred) - base : -1;
      if (offset >= 2 && offset < 255 && !node.used.has(preferred!)) {
        node.used.add(preferred!);
        return preferred!;
      }
      // Round-robin from the last one given (as host-local IPAM does): a freed IP is not
      // handed to the next pod at once.
      for (let i = 0; i < 253; i++) {
        node.next = ((node.next + 1 - 2) % 253) + 2;
        const ip = intToIp(base + node.next);
        if (!node.used.has(ip)) {
          node.used.add(ip);
          return ip;
        }
      }
      throw new Error(`node ${node.name}: no free pod IP in ${node.subnet}`);
    },
    releaseIP: (ip: string) => node.used.delete(ip),
  });

  const startNode = async (node: NodeState) => {
    node.lost = false;
    await registerNode(client, node, network.gateway, opts.version);
    await renewLease(client, node.name).catch((err: unknown) => log("node lease", { err: String(err) }));
    node.heartbeat = setInterval(() => {
      renewLease(client, node.name).catch((err: unknown) =>
        log("node lease", { node: node.name, err: String(err) }),
      );
    }, HEARTBEAT_MS);
    const ctx = contextFor(node);
    const handle = (pod: Pod) => {
      if (node.lost) return;
      const existing = runners.get(pod.metadata.uid);
      if (existing) return existing.update(pod);
      const phase = (pod.status as { phase?: string } | undefined)?.phase;
      if (phase === "Succeeded" || phase === "Failed") return;
      const runner = new PodRunner(ctx, pod);
      runners.set(pod.metadata.uid, runner);
      if (pod.metadata.deletionTimestamp) runner.update(pod);
      void runner.finished.then(() => runners.delete(pod.metadata.uid));
    };
    const path = "/api/v1/pods";
    const fieldSelector = `spec.nodeName=${node.name}`;
    node.informer = startInformer<Pod>(
      client.kubeConfig,
      path,
      () => client.get<KubernetesListObject<Pod>>(path, { fieldSelector }),
      {
        add: handle,
        update: handle,
        delete: (pod) => void runners.get(pod.metadata.uid)?.removed(),
        error: (err) => log("pod watch", { node: node.name, err: String(err) }),
      },
      { fieldSelector },
    );
    await node.informer.synced;
  };
  const nodeNamed = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name} here (nodes: ${nodes.map((n) => n.name).join(", ")})`);
    return node;
  };

  await proxy.synced;
  for (const node of nodes) await startNode(node);

  const lose = async (name: string) => {
    const node = nodeNamed(name);
    node.lost = true;
    clearInterval(node.heartbeat);
    await node.informer?.stop();
    const pods = [...runners.values()].filter((r) => r.nodeName === name);
    const stranded = proxy.openTo(pods.flatMap((r) => (r.podIP ? [r.podIP] : [])));
    await Promise.all(pods.map((r) => r.lose()));
    await setNodeReady(client, name, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.");
    // What the node-lifecycle controller would add: nothing new is scheduled there.
    await client.mergePatch(`/api/v1/nodes/${name}`, {
      spec: { taints: [{ key: "node.kubernetes.io/unreachable", effect: "NoSchedule" }] },
    });
    log("node lost", { node: name, proxiedConnections: stranded });
    return stranded;
  };

  /** A lost Node comes back as after a reboot: its pods' sandboxes are made again. */
  const rejoin = async (name: string) => {
    const node = nodeNamed(name);
    if (!node.lost) return;
    const stale = [...runners.entries()].filter(([, r]) => r.nodeName === name);
    for (const [uid, r] of stale) {
      runners.delete(uid);
      await r.shutdown(0);
    }
    await startNode(node);
    log("node rejoined", { node: name });
  };
  const socket = join(opts.stateDir, "agent.sock");
  rmSync(socket, { force: true });
  const control: Server = createServer((req, res) => {
    const m = /^\/nodes\/([a-z0-9.-]+)\/(lose|rejoin)$/.exec(req.url ?? "");
    if (req.method === "GET" && req.url === "/healthz") return void res.end("ok");
    if (req.method === "POST" && m)
      return void (m[2] === "lose" ? lose(m[1]!) : rejoin(m[1]!).then(() => undefined)).then(
        (stranded) =>
          res.end(
            stranded === undefined
              ? `node ${m[1]} rejoined\n`
              : `node ${m[1]} lost; ${stranded} proxied connections were open to its pods\n`,
          ),
        (err: Error) => res.writeHead(404).end(`${err.message}\n`),
      );
    res.writeHead(404).end("GET /healthz, POST /nodes/<name>/lose, POST /nodes/<name>/rejoin\n");
  });
  await new Promise<void>((resolve) => control.listen(socket, resolve));

  return {
    socket,
    proxy,
    lose,
    rejoin,
    async stop() {
      control.close();
      for (const node of nodes) {
        clearInterval(node.heartbeat);
        await node.informer?.stop();
      }
      await Promise.all([...runners.values()].map((r) => r.shutdown(2000)));
      await proxy.stop();
      await network.teardownAll();
      rmSync(socket, { force: true });
    },
  };
}

const stamp = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

/**
 * `default/kubernetes`'s ClusterIP and port, as the apiserver made it (pods'
 * `KUBERNETES_SERVICE_HOST`/`_PORT`); waits up to 30 s for a fresh apiserver to create it.
 */
async function kubernetesServiceAddress(client: KubeClient): Promise<{ host: string; port: number }> {
  for (let i = 0; ; i++) {
    const svc = await client.getOrUndefined<{ spec?: { clusterIP?: string; ports?: { port: number }[] } }>(
      "/api/v1/namespaces/default/services/kubernetes",
    );
    const host = svc?.spec?.clusterIP;
    if (host) return { host, port: svc.spec?.ports?.[0]?.port ?? 443 };
    if (i >= 60) throw new Error("the apiserver has made no default/kubernetes Service in 30 s");
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function registerNode(
  client: KubeClient,
  node: NodeState,
  address: string,
  version: string,
): Promise<void> {
  const path = `/api/v1/nodes/${node.name}`;
  const existing = await client.getOrUndefined<{ spec?: { podCIDR?: string } }>(path);
  if (existing && existing.spec?.podCIDR !== node.subnet) {
    // podCIDR cannot change: a Node from another pod CIDR is made again.
    await client.delete(path);
  }
  if (!existing || existing.spec?.podCIDR !== node.subnet)
    await client.create("/api/v1/nodes", {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name: node.name,
        labels: {
          "kubernetes.io/hostname": node.name,
          "kubernetes.io/os": "linux",
          "kubernetes.io/arch": "amd64",
          [NODE_AGENT_LABEL]: "true",
        },
      },
      spec: { podCIDR: node.subnet, podCIDRs: [node.subnet] },
    });
  await client.mergePatch(`${path}/status`, {
    status: {
      capacity: { cpu: "8", memory: "16Gi", pods: "110" },
      allocatable: { cpu: "8", memory: "16Gi", pods: "110" },
      addresses: [
        { type: "InternalIP", address },
        { type: "Hostname", address: node.name },
      ],
      nodeInfo: {
        kubeletVersion: version,
        containerRuntimeVersion: "governor-node-agent://1",
        operatingSystem: "linux",
        architecture: "amd64",
        osImage: "governor node agent",
        kernelVersion: "",
        kubeProxyVersion: "",
        machineID: "",
        systemUUID: "",
        bootID: "",
      },
    },
  });
  await setNodeReady(
    client,
    node.name,
    "True",
    "KubeletReady",
    "governor node agent is posting ready status",
  );
  // The not-ready taint the apiserver puts on a new Node is the node-lifecycle controller's
  // to lift, and none runs here: the agent lifts it once the Node is Ready.
  await client.mergePatch(path, { spec: { taints: null } });
}

async function setNodeReady(
  client: KubeClient,
  name: string,
  status: string,
  reason: string,
  message: string,
) {
  await client.request("PATCH", `/api/v1/nodes/${name}/status`, {
    body: {
      status: {
        conditions: [
          { type: "Ready", status, reason, message, lastHeartbeatTime: stamp(), lastTransitionTime: stamp() },
        ],
      },
    },
    contentType: "application/strategic-merge-patch+json",
  });
}

async function renewLease(client: KubeClient, node: string): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${node}`;
  const renewTime = new Date().toISOString().replace("Z", "000Z");
  const spec = { holderIdentity: node, leaseDurationSeconds: LEASE_SECONDS, renewTime };
  try {
    await client.mergePatch(path, { spec });
  } catch (err) {
    if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
    await client.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: node, namespace: "kube-node-lease" },
      spec,
    });
  }
}
