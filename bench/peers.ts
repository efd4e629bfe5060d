/**
 * "Against the peers": the request the HPA makes for a per-pod request rate —
 * `pods/*\/bench_http_requests_per_second?labelSelector=app=peer` over 50 pods — through
 * kube-apiserver's aggregator, answered by Governor and by prometheus-adapter (built from
 * its Go module, `hack/peers.sh`), both reading the same real Prometheus. Only one server
 * can hold the `custom.metrics.k8s.io` APIServices at a time, so before each round the
 * APIServices are pointed at that round's side and the round starts once the aggregator
 * routes there (ADR 0005). Also: how many Prometheus queries 100 such requests cause, and
 * what a Governor in front of the adapter adds to a metric it forwards (ADR 0011).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestPrometheus } from "../test/support/prometheus.js";
import { scrapedSeries } from "./exposition.js";
import { buildApiServices, buildLocalService } from "../src/manifests/api-service.js";
import { type HttpsGetOptions, httpsGet } from "../test/support/https-get.js";
import { startPrometheusAdapter } from "../test/support/prometheus-adapter.js";
import { KubeApiError } from "../src/k8s/client.js";
import { WARM_PATH } from "./direct.js";
import {
  type Bench,
  type Child,
  type Contender,
  NS,
  SERVICES,
  child,
  comparisonRows,
  controlPlanePids,
  interleave,
  pool,
  sleep,
  startGovernor,
  prometheusQueries,
} from "./harness.js";
import { unregister } from "./aggregator.js";
import { rulesRows } from "./peer-rules.js";
import { coresOf, snapshot } from "./disturbance.js";

const PODS = 50;
const METRIC = "bench_http_requests_per_second";
/** The same rate under a name only the adapter serves: Governor forwards it (ADR 0011). */
const UPSTREAM_METRIC = "upstream_http_requests_per_second";
const podName = (i: number) => `peer-${String(i).padStart(2, "0")}`;

/** A prometheus-adapter rule turning the bench's counter into a per-second rate named `as`. */
const rateRule = (
  matches: string,
  as: string,
) => `- seriesQuery: 'bench_http_requests_total{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name:
    matches: "${matches}"
    as: "${as}"
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'
`;

/**
 * The adapter's rules: the usual `_total` → `_per_second` rule of its docs, over the bench's
 * counter, and the same rate under a name only the adapter serves (the forwarded rows).
 */
const ADAPTER_CONFIG = `rules:
${rateRule("^(.*)_total$", "${1}_per_second")}${rateRule("^bench_(.*)_total$", "upstream_${1}_per_second")}`;

/**
 * How the adapter runs: as its own manifests deploy it (client-go's default client
 * throttle, 5 requests/s with bursts of 10 — and it lists the selected pods from
 * kube-apiserver on every selector query), and with that throttle lifted, the first
 * thing a user who hits it would change. Behind the throttle it cannot take more than one
 * connection: 16 queue for minutes.
 */
const ADAPTER_CONFIGS = [
  { label: "", args: [], maxConnections: 1 },
  {
    label: " (--client-qps=1000 --client-burst=2000)",
    args: ["--client-qps=1000", "--client-burst=2000"],
    maxConnections: 64,
  },
];

/** prometheus-adapter serving with the bench's certificate, the admin kubeconfig and `prometheusUrl`. */
async function startAdapter(
  b: Bench,
  prometheusUrl: string,
  args: string[],
): Promise<Child & { version: string }> {
  const a = await startPrometheusAdapter({
    dir: b.dir,
    kubeconfig: b.kubeconfig,
    tls: { certFile: b.servingCert.certFile, keyFile: b.servingCert.keyFile, ca: b.ca.cert },
    prometheusUrl,
    config: ADAPTER_CONFIG,
    args,
  });
  // Tracked by the harness (stopped if the run is killed); its log from the start.
  return { ...child(a.process, a.port), log: a.log, version: a.version };
}

/**
 * The forwarded path: a metric only the adapter serves, through the aggregator and a
 * Governor started with `--forward-custom` naming the adapter, against the same request
 * through the aggregator straight to the adapter — what sitting in front of it costs.
 */
async function forwardedRows(
  b: Bench,
  ctx: {
    peer: Child;
    name: string;
    service: ReturnType<typeof buildLocalService>;
    routeTo: (port: number, probeStatus: number) => Promise<void>;
    background: number[];
    connections: number[];
  },
): Promise<void> {
  const caFile = join(b.dir, "bench-ca.crt");
  writeFileSync(caFile, b.ca.cert);
  const forwarder = await startGovernor(b, undefined, [
    "--forward-custom",
    `${NS}/${SERVICES.governor}:${ctx.peer.port}`,
    "--forward-custom-ca-file",
    caFile,
  ]);
  try {
    ctx.service.spec.ports.push({ name: "forwarder", port: forwarder.port, protocol: "TCP" });
    await b.client.createOrReplace(`/api/v1/namespaces/${NS}/services/${SERVICES.governor}`, ctx.service);
    const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
    const url = `${b.apiserver}/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/${UPSTREAM_METRIC}?labelSelector=app%3Dpeer`;
    const sides: { forwarded: Contender; direct: Contender } = {
      forwarded: {
        url,
        tls: admin,
        pids: [forwarder.process.pid!, ctx.peer.process.pid!],
        prepare: async () => {
          await ctx.routeTo(forwarder.port, 200);
          await drained(url, admin, ctx.peer);
        },
      },
      direct: {
        url,
        tls: admin,
        pids: [ctx.peer.process.pid!],
        prepare: async () => {
          await ctx.routeTo(ctx.peer.port, 404);
          await drained(url, admin, ctx.peer);
        },
      },
    };
    for (const side of [sides.direct, sides.forwarded]) {
      await side.prepare!();
      for (let i = 0; ; i++) {
        const r = await httpsGet(url, admin).catch(() => undefined);
        const items = r?.status === 200 ? (r.json as { items: unknown[] }).items.length : -1;
        if (items === PODS) break;
        if (i > 600)
          throw new Error(`${url}: ${items} items, expected ${PODS}\n${forwarder.log().slice(-3000)}`);
        await sleep(200);
      }
    }
    for (const c of ctx.connections.filter((c) => c <= 16)) {
      const m = await interleave(b, sides.forwarded, sides.direct, c, ctx.background);
      b.rows.push(
        ...comparisonRows(
          `forwarded by Governor to ${ctx.name}: pods/* of ${PODS} pods through the aggregator, ${c} conn`,
          m,
          `${ctx.name} through the aggregator directly, same query`,
        ),
      );
    }
  } finally {
    await forwarder.stop();
  }
}

/**
 * Adds the row `name`: Prometheus queries per 100 requests, asked one at a time as the HPA
 * controller asks, on each side after its `prepare` (while the aggregator routes to it).
 */
export async function queriesPer100Row(
  b: Bench,
  o: {
    sides: Record<"governor" | "peer", Contender>;
    prometheusUrl: string;
    peerName: string;
    name: string;
    log: () => string;
  },
): Promise<void> {
  const queries: Record<"governor" | "peer", number> = { governor: 0, peer: 0 };
  for (const side of ["governor", "peer"] as const) {
    const { url, tls, prepare } = o.sides[side];
    await prepare?.();
    const before = await prometheusQueries(o.prometheusUrl);
    for (let i = 0; i < 100; i++)
      await httpsGet(url, { ca: b.admin.ca, ...tls, timeoutMs: 30_000 }).catch((err: unknown) => {
        throw new Error(`${side}, request ${i}: ${(err as Error).message}\n${o.log()}`);
      });
    queries[side] = (await prometheusQueries(o.prometheusUrl)) - before;
  }
  b.rows.push({
    name: o.name,
    figure: String(queries.governor),
    baseline: `${queries.peer} (${o.peerName})`,
    ratio: queries.peer > 0 ? (queries.governor / queries.peer).toFixed(2) : "n/a",
    series: { Governor: [queries.governor], baseline: [queries.peer] },
  });
}

/**
 * Waits until one request is answered within a second: a server that fell behind under
 * the last round's load (the adapter queues its Prometheus queries) has caught up.
 */
export async function drained(url: string, tls: HttpsGetOptions, peer: Child): Promise<void> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const t = performance.now();
    const r = await httpsGet(url, { ...tls, timeoutMs: 30_000 }).catch(() => undefined);
    if (r?.status === 200 && performance.now() - t < 1000) return;
    if (Date.now() > deadline)
      throw new Error(`${url} still slow after 3 min (last ${r?.status})\n${peer.log().slice(-3000)}`);
    await sleep(1000);
  }
}

/**
 * Waits until `server` uses less than 5 % of a core over half a second: the adapter keeps
 * working through requests queued in its last round after the load generator stops, and
 * that work must not land in Governor's next round.
 */
export async function idle(server: Child): Promise<void> {
  const pid = server.process.pid!;
  for (let i = 0; i < 120; i++) {
    const before = snapshot([pid]);
    await sleep(500);
    if (coresOf(before, snapshot([pid]), [pid]) < 0.05) return;
  }
  throw new Error(`the peer stayed busy for a minute after its round\n${server.log().slice(-3000)}`);
}

/**
 * Returns a function that points the metrics APIServices (of `group` only, if given) at
 * `port` of the bench Service and returns once the aggregator routes there: `probe` answers
 * `probeStatus` three times in a row. The default probe is the warm metric, which Governor
 * knows (200) and a peer does not (404).
 */
export function apiServiceRouter(
  b: Bench,
  { group, probe = WARM_PATH }: { group?: string; probe?: string } = {},
): (port: number, probeStatus: number) => Promise<void> {
  const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
  return async (port, probeStatus) => {
    for (const a of buildApiServices({
      service: { namespace: NS, name: SERVICES.governor, port },
      caBundle: b.ca.cert,
    }).filter((a) => !group || a.spec.group === group))
      await b.client.createOrReplace(`/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`, a);
    const deadline = Date.now() + 60_000;
    for (let inARow = 0; inARow < 3;) {
      const r = await httpsGet(`${b.apiserver}${probe}`, admin).catch(() => undefined);
      inARow = r?.status === probeStatus ? inARow + 1 : 0;
      if (Date.now() > deadline)
        throw new Error(`the aggregator never routed to port ${port} (last answer ${r?.status})`);
      if (inARow < 3) await sleep(50);
    }
  };
}

/**
 * Runs `fn` with the peers' workload: 50 pods labelled `app=peer` (created once per run),
 * each with a request counter growing at its own rate, scraped by a real Prometheus.
 */
async function withPeerPods(b: Bench, fn: (prometheus: TestPrometheus) => Promise<void>): Promise<void> {
  const started = performance.now();
  // Each pod's counter grows at (i % 7 + 1) requests a second.
  const { prometheus, stop } = await scrapedSeries(() => {
    const t = (performance.now() - started) / 1000;
    const lines = Array.from(
      { length: PODS },
      (_, i) => `bench_http_requests_total{pod="${podName(i)}"} ${Math.floor(t * ((i % 7) + 1))}`,
    );
    return ["# TYPE bench_http_requests_total counter", ...lines, ""].join("\n");
  });
  try {
    await pool(PODS, 16, (i) =>
      b.client
        .create(`/api/v1/namespaces/${NS}/pods`, {
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: podName(i), labels: { app: "peer" } },
          spec: { containers: [{ name: "app", image: "example.invalid/peer:1" }] },
        })
        .catch((err: unknown) => {
          // The other part of this run made it.
          if (!(err instanceof KubeApiError && err.statusCode === 409)) throw err;
        }),
    );
    await fn(prometheus);
  } finally {
    await stop();
  }
}

/** The rows against prometheus-adapter with 10 and 1,000 rules (bench/peer-rules.ts). */
export async function peerRulesRows(b: Bench, governor: Child): Promise<void> {
  await withPeerPods(b, (prometheus) =>
    rulesRows(b, governor, {
      prometheusUrl: prometheus.url,
      pods: PODS,
      adapterArgs: ADAPTER_CONFIGS[0]!.args,
    }),
  );
}

export async function peerRows(b: Bench, governor: Child, connections = [1, 16, 64]): Promise<void> {
  await withPeerPods(b, (prometheus) => requestRows(b, governor, prometheus, connections));
}

async function requestRows(
  b: Bench,
  governor: Child,
  prometheus: TestPrometheus,
  connections: number[],
): Promise<void> {
  let adapter: (Child & { version: string }) | undefined;
  try {
    await b.client.create(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: "peer-rps" },
      spec: {
        metric: METRIC,
        subject: { resource: "pods" },
        interval: "5s",
        source: {
          prometheus: {
            address: prometheus.url,
            query: `sum by (pod) (rate(bench_http_requests_total{namespace="{{namespace}}"}[1m]))`,
            nameLabel: "pod",
          },
        },
      },
    });
    const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
    const url = `${b.apiserver}/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/${METRIC}?labelSelector=app%3Dpeer`;
    const routeTo = apiServiceRouter(b);
    // Not pinned, as the aggregator rows; Prometheus answers the adapter's queries and
    // Governor's background samples, kube-apiserver and etcd carry every request.
    const background = [...controlPlanePids(b, ["kube-apiserver", "etcd"]), prometheus.pid!];

    for (const config of ADAPTER_CONFIGS) {
      adapter = await startAdapter(b, prometheus.url, config.args);
      const peer = adapter;
      const name = `prometheus-adapter ${adapter.version}${config.label}`;
      // One Service with a port per server; the APIServices name the port of the side being measured.
      const service = buildLocalService({ namespace: NS, name: SERVICES.governor, port: governor.port });
      service.spec.ports.push({ name: "peer", port: peer.port, protocol: "TCP" });
      await b.client.createOrReplace(`/api/v1/namespaces/${NS}/services/${SERVICES.governor}`, service);
      const sides: { governor: Contender; peer: Contender } = {
        governor: {
          url,
          tls: admin,
          pids: [governor.process.pid!],
          prepare: async () => {
            await routeTo(governor.port, 200);
            await idle(peer);
          },
        },
        peer: {
          url,
          tls: admin,
          pids: [peer.process.pid!],
          prepare: async () => {
            await routeTo(peer.port, 404);
            await drained(url, admin, peer);
          },
        },
      };
      // Both answer all 50 pods before anything is measured (the adapter after its relist).
      for (const side of [sides.peer, sides.governor]) {
        await side.prepare!();
        for (let i = 0; ; i++) {
          const r = await httpsGet(url, admin).catch(() => undefined);
          const items = r?.status === 200 ? (r.json as { items: unknown[] }).items.length : -1;
          if (items === PODS) break;
          if (i > 600) throw new Error(`${url}: ${items} items, expected ${PODS}\n${peer.log()}`);
          await sleep(200);
        }
      }
      for (const c of connections.filter((c) => c <= config.maxConnections)) {
        const m = await interleave(b, sides.governor, sides.peer, c, background);
        b.rows.push(
          ...comparisonRows(
            `vs ${name}: pods/* of ${PODS} pods through the aggregator, ${c} conn`,
            m,
            `${name}, same query, same Prometheus`,
          ),
        );
      }

      await queriesPer100Row(b, {
        sides,
        prometheusUrl: prometheus.url,
        peerName: name,
        name: `vs ${name}: Prometheus queries per 100 HPA requests (Governor's include its background samples in the window)`,
        log: () => peer.log().slice(-3000),
      });
      // Sitting in front of the adapter (ADR 0011): measured with the adapter that can take load.
      if (config.maxConnections > 1)
        await forwardedRows(b, { peer, name, service, routeTo, background, connections });
      await routeTo(governor.port, 200);
      writeFileSync(join(b.dir, `prometheus-adapter${config.label ? "-tuned" : ""}.log`), adapter.log());
      await adapter.stop();
      adapter = undefined;
    }
  } finally {
    await unregister(b);
    await adapter?.stop();
    await b.client
      .delete(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings/peer-rps`)
      .catch(() => false);
  }
}
