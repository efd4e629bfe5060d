/**
 * A user-space service proxy, as kube-proxy's historical `userspace` mode was: for every
 * Service with a ClusterIP, the host answers that address (added to the pod bridge) on
 * each TCP port and pipes each connection to one ready endpoint from the Service's
 * EndpointSlices, round-robin. A dial that fails or times out moves on to the next ready
 * endpoint (as the userspace proxier did). The `default/kubernetes` Service has no
 * endpoints here (the apiserver runs on loopback with `--endpoint-reconciler-type=none`),
 * so its connections go to the apiserver's own address.
 *
 * This is what lets the aggregator reach an APIService backed by a ClusterIP Service, and
 * pods reach the apiserver at `KUBERNETES_SERVICE_HOST`, with no kube-proxy and no
 * `--enable-aggregator-routing`.
 */
import { createConnection, createServer, isIPv4, type Server, type Socket } from "node:net";
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { KubeClient } from "../../../src/k8s/client.js";
import { startInformer, type ResilientInformer } from "../../../src/k8s/informer.js";
import type { PodNetwork } from "./network.js";

interface Service extends KubernetesObject {
  spec?: {
    clusterIP?: string;
    type?: string;
    ports?: { name?: string; port: number; protocol?: string }[];
  };
}

interface EndpointSlice extends KubernetesObject {
  addressType?: string;
  endpoints?: { addresses: string[]; conditions?: { ready?: boolean; terminating?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

/** Where connections to one ClusterIP:port go. */
interface Listener {
  server: Server;
  namespace: string;
  service: string;
  portName: string;
  next: number;
}

const DIAL_TIMEOUT_MS = 2000;

/** Options of {@link startServiceProxy}. */
export interface ServiceProxyOptions {
  /** `host:port` the `default/kubernetes` Service forwards to. */
  apiserver: string;
  onError?: (err: unknown) => void;
}

/** A running service proxy. */
export interface ServiceProxy {
  synced: Promise<void>;
  /** Connections piped so far, and dials that failed over to another endpoint. */
  stats(): { connections: number; failovers: number; refused: number };
  /** Connections piped right now to any of these backend addresses. */
  openTo(addresses: readonly string[]): number;
  stop(): Promise<void>;
}

/** Starts the proxy; see the module comment. */
export function startServiceProxy(
  client: KubeClient,
  network: PodNetwork,
  opts: ServiceProxyOptions,
): ServiceProxy {
  const listeners = new Map<string, Listener>(); // "ip:port"
  const addresses = new Set<string>();
  const stats = { connections: 0, failovers: 0, refused: 0 };
  const open = new Map<string, number>(); // backend address → connections piped to it now
  const [apiHost, apiPort] = splitHostPort(opts.apiserver);
  let pending: Promise<void> = Promise.resolve();
  let stopped = false;
  const report = (err: unknown) => opts.onError?.(err);

  const readyBackends = (l: Listener): { host: string; port: number }[] => {
    if (l.namespace === "default" && l.service === "kubernetes") return [{ host: apiHost, port: apiPort }];
    const out: { host: string; port: number }[] = [];
    for (const slice of slices.list(l.namespace)) {
      if (slice.metadata?.labels?.["kubernetes.io/service-name"] !== l.service) continue;
      if (slice.addressType !== "IPv4") continue;
      const port = slice.ports?.find((p) => (p.name ?? "") === l.portName && (p.protocol ?? "TCP") === "TCP");
      if (!port?.port) continue;
      for (const ep of slice.endpoints ?? [])
        if (ep.conditions?.ready !== false)
          for (const a of ep.addresses) out.push({ host: a, port: port.port });
    }
    return out;
  };

  const dial = (backends: { host: string; port: number }[], start: number, tried: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const target = backends[(start + tried) % backends.length]!;
      const upstream = createConnection({ host: target.host, port: target.port });
      const fail = (err: Error) => {
        upstream.destroy();
        if (tried + 1 >= backends.length) reject(err);
        else {
          stats.failovers++;
          dial(backends, start, tried + 1).then(resolve, reject);
        }
      };
      upstream.setTimeout(DIAL_TIMEOUT_MS, () =>
        fail(new Error(`dial ${target.host}:${target.port} timed out`)),
      );
      upstream.once("error", fail);
      upstream.once("connect", () => {
        upstream.setTimeout(0);
        upstream.removeListener("error", fail);
        resolve(upstream);
      });
    });

  const onConnection = (l: Listener, downstream: Socket) => {
    downstream.pause();
    const backends = readyBackends(l);
    if (backends.length === 0) {
      stats.refused++;
      downstream.resetAndDestroy();
      return;
    }
    const start = l.next++ % backends.length;
    dial(backends, start, 0).then(
      (upstream) => {
        stats.connections++;
        const backend = upstream.remoteAddress ?? "";
        open.set(backend, (open.get(backend) ?? 0) + 1);
        downstream.pipe(upstream).pipe(downstream);
        let closed = false;
        const close = () => {
          if (!closed) open.set(backend, (open.get(backend) ?? 1) - 1);
          closed = true;
          upstream.destroy();
          downstream.destroy();
        };
        upstream.on("error", close).on("close", close);
        downstream.on("error", close).on("close", close);
        downstream.resume();
      },
      () => {
        stats.refused++;
        downstream.resetAndDestroy();
      },
    );
  };

  const desired = () => {
    const want = new Map<
      string,
      { namespace: string; service: string; portName: string; ip: string; port: number }
    >();
    for (const svc of services.list()) {
      const ip = svc.spec?.clusterIP;
      if (!ip || !isIPv4(ip) || svc.spec?.type === "ExternalName") continue;
      for (const p of svc.spec?.ports ?? []) {
        if ((p.protocol ?? "TCP") !== "TCP") continue;
        want.set(`${ip}:${p.port}`, {
          namespace: svc.metadata?.namespace ?? "",
          service: svc.metadata?.name ?? "",
          portName: p.name ?? "",
          ip,
          port: p.port,
        });
      }
    }
    return want;
  };

  const sync = async () => {
    if (stopped) return;
    const want = desired();
    for (const [key, l] of listeners) {
      const w = want.get(key);
      if (w && w.namespace === l.namespace && w.service === l.service) {
        l.portName = w.portName;
        continue;
      }
      listeners.delete(key);
      await new Promise<void>((r) => l.server.close(() => r()));
    }
    const wantIps = new Set([...want.values()].map((w) => w.ip));
    for (const ip of wantIps)
      if (!addresses.has(ip)) {
        await network.addHostAddress(ip);
        addresses.add(ip);
      }
    for (const [key, w] of want) {
      if (listeners.has(key)) continue;
      const l: Listener = {
        server: createServer(),
        namespace: w.namespace,
        service: w.service,
        portName: w.portName,
        next: 0,
      };
      l.server.on("connection", (socket) => onConnection(l, socket));
      await new Promise<void>((resolve) => {
        l.server.once("error", (err) => {
          report(new Error(`service proxy: listen ${key} (${w.namespace}/${w.service}): ${err.message}`));
          resolve();
        });
        l.server.listen(w.port, w.ip, () => {
          listeners.set(key, l);
          resolve();
        });
      });
    }
    for (const ip of [...addresses])
      if (!wantIps.has(ip)) {
        await network.removeHostAddress(ip);
        addresses.delete(ip);
      }
  };
  const schedule = () => {
    pending = pending.then(sync).catch(report);
  };

  const services: ResilientInformer<Service> = startInformer<Service>(
    client.kubeConfig,
    "/api/v1/services",
    () => client.get<KubernetesListObject<Service>>("/api/v1/services"),
    { add: schedule, update: schedule, delete: schedule, error: report },
  );
  const slicesPath = "/apis/discovery.k8s.io/v1/endpointslices";
  const slices: ResilientInformer<EndpointSlice> = startInformer<EndpointSlice>(
    client.kubeConfig,
    slicesPath,
    () => client.get<KubernetesListObject<EndpointSlice>>(slicesPath),
    { error: report },
  );

  return {
    synced: Promise.all([services.synced, slices.synced]).then(() => {
      schedule();
      return pending;
    }),
    stats: () => ({ ...stats }),
    openTo: (addresses) => addresses.reduce((n, a) => n + (open.get(a) ?? 0), 0),
    async stop() {
      stopped = true;
      await Promise.all([services.stop(), slices.stop()]);
      await pending;
      for (const l of listeners.values()) l.server.close();
      listeners.clear();
      for (const ip of addresses) await network.removeHostAddress(ip);
      addresses.clear();
    },
  };
}

function splitHostPort(hostPort: string): [string, number] {
  const i = hostPort.lastIndexOf(":");
  const port = Number(hostPort.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535)
    throw new Error(`apiserver address ${hostPort}: want host:port`);
  return [hostPort.slice(0, i), port];
}
