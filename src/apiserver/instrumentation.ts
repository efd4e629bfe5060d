/**
 * Prometheus metrics of the metrics API (prom-client), exported on a separate port by
 * {@link MetricsEndpoint}: requests by route kind and code, latency, and cache hits of
 * token and access reviews.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Runnable } from "../util/runnable.js";

/** What the server records. */
export interface ApiServerMetrics {
  observeRequest(kind: string, code: number, seconds: number): void;
  authnCache(result: "hit" | "miss"): void;
  authzCache(result: "hit" | "miss"): void;
}

/** prom-client implementation; `registry` holds these and the process's default metrics. */
export class PromApiServerMetrics implements ApiServerMetrics {
  readonly registry: Registry;
  private readonly requests: Counter<"kind" | "code">;
  private readonly latency: Histogram<"kind">;
  private readonly cache: Counter<"cache" | "result">;
  private readonly requestChildren = new Map<string, { inc(): void }>();
  private readonly latencyChildren = new Map<string, { observe(v: number): void }>();

  constructor(registry = new Registry(), opts: { defaultMetrics?: boolean } = {}) {
    this.registry = registry;
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "governor_" });
    this.requests = new Counter({
      name: "governor_apiserver_requests_total",
      help: "Requests to the metrics API by route kind and HTTP status code.",
      labelNames: ["kind", "code"],
      registers: [registry],
    });
    this.latency = new Histogram({
      name: "governor_apiserver_request_duration_seconds",
      help: "Time to answer a metrics API request, by route kind.",
      labelNames: ["kind"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    this.cache = new Counter({
      name: "governor_apiserver_auth_cache_total",
      help: "Lookups in the TokenReview (authn) and SubjectAccessReview (authz) caches.",
      labelNames: ["cache", "result"],
      registers: [registry],
    });
  }

  observeRequest(kind: string, code: number, seconds: number): void {
    // Label children are looked up once: prom-client hashes a label object on every call.
    const key = `${kind}|${code}`;
    let counter = this.requestChildren.get(key);
    if (!counter) this.requestChildren.set(key, (counter = this.requests.labels(kind, String(code))));
    counter.inc();
    let histogram = this.latencyChildren.get(kind);
    if (!histogram) this.latencyChildren.set(kind, (histogram = this.latency.labels(kind)));
    histogram.observe(seconds);
  }
  authnCache(result: "hit" | "miss"): void {
    this.cache.inc({ cache: "authn", result });
  }
  authzCache(result: "hit" | "miss"): void {
    this.cache.inc({ cache: "authz", result });
  }
}

/** Serves `GET /metrics` (Prometheus text format) over plain HTTP. */
export async function startMetricsServer(
  registry: Registry,
  port: number,
  host = "0.0.0.0",
): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer((req, res) => {
    if (req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    registry
      .metrics()
      .then((text) => res.writeHead(200, { "content-type": registry.contentType }).end(text))
      .catch((err: unknown) => res.writeHead(500).end(String(err)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, address: server.address() as AddressInfo };
}

/** `GET /metrics` of `registry` on `host:port`, as a runnable of the manager. */
export class MetricsEndpoint implements Runnable {
  readonly name = "/metrics endpoint";
  private server?: Server;
  /** Where it listens, once started. */
  address?: AddressInfo;

  constructor(
    private readonly registry: Registry,
    private readonly port: number,
    private readonly host: string,
  ) {}

  async start(): Promise<void> {
    const { server, address } = await startMetricsServer(this.registry, this.port, this.host);
    this.server = server;
    this.address = address;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
  }
}
