/**
 * The demo's sample application, played on loopback: for every Ready pod of a selector
 * (given a loopback IP by the stand-in kubelet) it serves a prom-client `/metrics` with an
 * `http_requests_total` counter on that IP, and spreads a total request rate evenly over
 * the pods, as a load balancer would.
 */
import { createServer, type Server } from "node:http";
import { Counter, Registry } from "prom-client";
import type { PodIndex } from "../../src/k8s/pod-index.js";

/**
 * One replica of the sample app, not yet listening: a prom-client registry with an
 * `http_requests_total{code}` counter, and an HTTP server answering with its exposition.
 */
export function requestCounterApp(): Replica {
  const registry = new Registry();
  const counter = new Counter({
    name: "http_requests_total",
    help: "Requests served.",
    labelNames: ["code"],
    registers: [registry],
  });
  const server = createServer((_req, res) => {
    void registry.metrics().then((t) => res.writeHead(200, { "content-type": registry.contentType }).end(t));
  });
  return { registry, counter, server };
}

interface Replica {
  server: Server;
  counter: Counter;
  registry: Registry;
}

/** IPs of the Ready, not terminating pods of `namespace` that carry all of `labels`. */
export function servingPodIPs(pods: PodIndex, namespace: string, labels: Record<string, string>): string[] {
  return pods
    .list(namespace)
    .filter(
      (p) => p.ready && !p.terminating && p.ip && Object.entries(labels).every(([k, v]) => p.labels[k] === v),
    )
    .map((p) => p.ip!);
}

/** See the module comment. */
export class FakeApp {
  private readonly replicas = new Map<string, Replica>(); // by pod IP
  private timer?: NodeJS.Timeout;
  private sync?: NodeJS.Timeout;
  /** Total requests per second across all pods. */
  rate = 0;

  constructor(
    private readonly pods: PodIndex,
    private readonly namespace: string,
    private readonly labels: Record<string, string>,
    private readonly port: number,
  ) {}

  start(): void {
    this.sync = setInterval(() => void this.reconcile(), 250);
    this.timer = setInterval(() => {
      const live = [...this.replicas.values()];
      for (const r of live) r.counter.inc({ code: "200" }, this.rate / live.length / 10);
    }, 100);
  }

  /** Pods serving now. */
  get size(): number {
    return this.replicas.size;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.sync);
    await Promise.all([...this.replicas.values()].map((r) => new Promise((res) => r.server.close(res))));
    this.replicas.clear();
  }

  private async reconcile(): Promise<void> {
    const want = new Set(servingPodIPs(this.pods, this.namespace, this.labels));
    for (const [ip, r] of this.replicas) {
      if (!want.has(ip)) {
        this.replicas.delete(ip);
        r.server.close();
        r.server.closeAllConnections();
      }
    }
    for (const ip of want) {
      if (this.replicas.has(ip)) continue;
      const { registry, counter, server } = requestCounterApp();
      this.replicas.set(ip, { server, counter, registry });
      await new Promise<void>((resolve) => {
        server.once("error", () => resolve());
        server.listen(this.port, ip, () => resolve());
      });
    }
  }
}
