/**
 * "Against KEDA": an external queue-depth metric, as KEDA's users scale on it, answered
 * through kube-apiserver's aggregator by Governor (a MetricMapping with a Prometheus source)
 * and by KEDA v2 (its operator and metrics server, built from its Go module by
 * `hack/peers.sh keda`; a ScaledObject with a Prometheus trigger), both reading the same
 * real Prometheus with the same query. Only one server holds the APIServices at a time
 * (ADR 0005): rounds alternate, each side routed to before its round. Also: Prometheus
 * queries per 100 HPA-style requests, time from a new ScaledObject / MetricMapping to its
 * first value, and each side's memory and idle CPU once ten queues are served.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createCA } from "../src/certs/certs.js";
import { buildLocalService } from "../src/manifests/api-service.js";
import { httpsGet } from "../test/support/https-get.js";
import { type KedaProcesses, kedaBuild, startKeda } from "../test/support/keda.js";
import { gauge, scrapedSeries } from "./exposition.js";
import {
  type Bench,
  type Child,
  type Contender,
  NS,
  SERVICES,
  child,
  comparisonRows,
  controlPlanePids,
  cpuSeconds,
  fmt,
  interleave,
  ratio,
  rssMB,
  sleep,
} from "./harness.js";
import { apiServiceRouter, drained, idle, queriesPer100Row } from "./peers.js";
import { unregister } from "./aggregator.js";
import { histogramDelta, histogramQuantile, percentile, readHistogram } from "./stats.js";

/** Queues served by then, for the first memory and idle-CPU rows. */
const QUEUES = 10;
/** Queues, and HPAs on each side, for the HPA controller's view. */
const HPAS = 100;
const queueName = (i: number) => `queue-${String(i).padStart(2, "0")}`;
/** Each queue's depth: below the ScaledObjects' target, so each Deployment stays at one (pending) pod. */
const depth = (i: number) => 10 + i;
const query = (i: number) => `sum(bench_queue_messages{namespace="${NS}",queue="${queueName(i)}"})`;
const EXTERNAL = `/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}`;

const governorMetric = (i: number) => `bench_queue_${String(i).padStart(2, "0")}`;

/** KEDA's path for a ScaledObject's first trigger: the metric its HPA asks for. */
const kedaPath = (i: number) =>
  `${EXTERNAL}/s0-prometheus?labelSelector=${encodeURIComponent(`scaledobject.keda.sh/name=${queueName(i)}`)}`;
/** Governor's path for the same queue. */
const governorPath = (i: number) => `${EXTERNAL}/${governorMetric(i)}`;

/** The workload an HPA scales: its pods never run (no Node has the label). */
const deployment = (name: string) => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name },
  spec: {
    replicas: 1,
    selector: { matchLabels: { app: name } },
    template: {
      metadata: { labels: { app: name } },
      spec: {
        nodeSelector: { "governor.dev/bench": "no-such-node" },
        containers: [{ name: "app", image: "example.invalid/worker:1" }],
      },
    },
  },
});

const scaledObject = (i: number, prometheusUrl: string) => ({
  apiVersion: "keda.sh/v1alpha1",
  kind: "ScaledObject",
  metadata: { name: queueName(i) },
  spec: {
    scaleTargetRef: { name: queueName(i) },
    minReplicaCount: 1,
    maxReplicaCount: 4,
    triggers: [
      {
        type: "prometheus",
        // An empty result is an error (the HPA holds), not KEDA's default 0 (docs/install.md: Beside KEDA / prometheus-adapter).
        metadata: {
          serverAddress: prometheusUrl,
          query: query(i),
          threshold: "100",
          ignoreNullValues: "false",
        },
      },
    ],
  },
});

const mapping = (i: number, prometheusUrl: string) => ({
  apiVersion: "governor.dev/v1alpha1",
  kind: "MetricMapping",
  metadata: { name: queueName(i) },
  spec: {
    metric: governorMetric(i),
    subject: { external: {} },
    interval: "5s",
    source: { prometheus: { address: prometheusUrl, query: query(i) } },
  },
});

/** Governor's side of a queue for the HPA's view: an HPA of our own on its own Deployment. */
const governorHpaName = (i: number) => `gov-${queueName(i)}`;
const governorHpa = (i: number) => ({
  apiVersion: "autoscaling/v2",
  kind: "HorizontalPodAutoscaler",
  metadata: { name: governorHpaName(i) },
  spec: {
    scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: governorHpaName(i) },
    minReplicas: 1,
    maxReplicas: 4,
    // As KEDA's HPA for the same queue: AverageValue of the trigger's threshold.
    metrics: [
      {
        type: "External",
        external: {
          metric: { name: governorMetric(i) },
          target: { type: "AverageValue", averageValue: "100" },
        },
      },
    ],
  },
});

/**
 * Reads kube-controller-manager's own /metrics (as the admin; its serving certificate is
 * the self-signed one in its --cert-dir).
 */
function controllerManagerMetrics(b: Bench): () => Promise<string> {
  const [pid] = controlPlanePids(b, ["kube-controller-manager"]);
  const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const url = `https://127.0.0.1:${flag("secure-port") ?? 10257}/metrics`;
  const ca = readFileSync(join(flag("cert-dir")!, "kube-controller-manager.crt"), "utf8");
  return async () => {
    const r = await httpsGet(url, { ca, cert: b.admin.cert, key: b.admin.key });
    if (r.status !== 200)
      throw new Error(`kube-controller-manager /metrics: ${r.status} ${r.text.slice(0, 200)}`);
    return r.text;
  };
}

/** Asks through the aggregator until `path` answers 200 with one value; returns the ms it took from `t0`. */
async function firstValue(b: Bench, path: string, t0: number, log: () => string): Promise<number> {
  const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
  for (;;) {
    const r = await httpsGet(`${b.apiserver}${path}`, admin).catch(() => undefined);
    if (r?.status === 200 && (r.json as { items?: unknown[] }).items?.length === 1)
      return performance.now() - t0;
    if (performance.now() - t0 > 120_000)
      throw new Error(`${path}: no value within 2 min (last ${r?.status})\n${log().slice(-3000)}`);
    await sleep(20);
  }
}

/**
 * Deletes the ScaledObjects of queues `created` and waits (up to a minute) until they and
 * the HPAs KEDA made for them are gone; KEDA's operator must be running (their finalizer).
 */
async function deleteScaledObjects(b: Bench, created: number[]): Promise<void> {
  for (const i of created)
    await b.client
      .delete(`/apis/keda.sh/v1alpha1/namespaces/${NS}/scaledobjects/${queueName(i)}`)
      .catch(() => false);
  for (let t = 0; t < 600; t++) {
    const [objects, hpas] = await Promise.all([
      b.client.get<{ items: unknown[] }>(`/apis/keda.sh/v1alpha1/namespaces/${NS}/scaledobjects`),
      b.client.get<{ items: { metadata: { name: string } }[] }>(
        `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers`,
      ),
    ]);
    if (objects.items.length === 0 && !hpas.items.some((h) => h.metadata.name.startsWith("keda-hpa-")))
      return;
    await sleep(100);
  }
  throw new Error("KEDA's ScaledObjects or their HPAs were still there a minute after they were deleted");
}

/**
 * KEDA's CRDs applied and its two processes started (certificates under the run's
 * directory `dir`), tracked by the harness: stopped if the run is killed.
 */
export async function startBenchKeda(
  b: Bench,
  dir: string,
): Promise<KedaProcesses & { metricsServer: Child }> {
  const build = kedaBuild();
  const crds = build.crds.flatMap((f) => ["-f", f]);
  execFileSync("kubectl", ["apply", "--server-side", ...crds], { env: b.env, stdio: "ignore" });
  execFileSync("kubectl", ["wait", "--for=condition=Established", ...crds], { env: b.env, stdio: "ignore" });
  mkdirSync(join(b.dir, dir), { recursive: true });
  const k = await startKeda({
    build,
    dir: join(b.dir, dir),
    kubeconfig: b.kubeconfig,
    namespace: NS,
    grpcCa: await createCA(`bench-${dir}-grpc-ca`),
    tls: { certFile: b.servingCert.certFile, keyFile: b.servingCert.keyFile, ca: b.ca.cert },
  });
  child(k.operator.process, 0);
  return { ...k, metricsServer: child(k.adapter.process, k.port) };
}

export async function kedaRows(b: Bench, governor: Child, connections = [1, 16, 64]): Promise<void> {
  const exposition = gauge("bench_queue_messages", HPAS, (i) => [`queue="${queueName(i)}"`, depth(i)]);
  const { prometheus, stop } = await scrapedSeries(() => exposition);
  let keda: KedaProcesses | undefined;
  const created: number[] = [];
  const mapped: number[] = [];
  const ours: number[] = [];
  try {
    const k = (keda = await startBenchKeda(b, "keda"));
    const metricsServer = k.metricsServer;
    const kedaPids = () => [k.operator.process.pid!, k.adapter.process.pid!];
    const name = `KEDA ${k.version}`;
    const service = buildLocalService({ namespace: NS, name: SERVICES.governor, port: governor.port });
    service.spec.ports.push({ name: "keda", port: k.port, protocol: "TCP" });
    await b.client.createOrReplace(`/api/v1/namespaces/${NS}/services/${SERVICES.governor}`, service);
    // KEDA serves external metrics only: the custom APIServices stay with Governor (one
    // pointing at KEDA would be unavailable). KEDA's metric is the probe: 200 from KEDA, 404
    // from Governor.
    const route = apiServiceRouter(b, { group: "external.metrics.k8s.io", probe: kedaPath(0) });
    const routeTo = (port: number) => route(port, port === k.port ? 200 : 404);
    const add = async (i: number) => {
      await b.client.create(`/apis/apps/v1/namespaces/${NS}/deployments`, deployment(queueName(i)));
      const t0 = performance.now();
      await b.client.create(
        `/apis/keda.sh/v1alpha1/namespaces/${NS}/scaledobjects`,
        scaledObject(i, prometheus.url),
      );
      created.push(i);
      return t0;
    };
    const addMapping = async (i: number) => {
      const t0 = performance.now();
      await b.client.create(
        `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`,
        mapping(i, prometheus.url),
      );
      mapped.push(i);
      return t0;
    };
    await add(0);
    await addMapping(0);

    const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
    const sides: { governor: Contender; peer: Contender } = {
      governor: {
        url: `${b.apiserver}${governorPath(0)}`,
        tls: admin,
        pids: [governor.process.pid!],
        prepare: async () => {
          await routeTo(governor.port);
          await idle(metricsServer);
        },
      },
      peer: {
        url: `${b.apiserver}${kedaPath(0)}`,
        tls: admin,
        pids: kedaPids(),
        prepare: async () => {
          await routeTo(k.port);
          await drained(`${b.apiserver}${kedaPath(0)}`, admin, metricsServer);
        },
      },
    };
    for (const [side, path] of [
      [sides.peer, kedaPath(0)],
      [sides.governor, governorPath(0)],
    ] as const) {
      await side.prepare!();
      await firstValue(b, path, performance.now(), k.log);
    }
    // Prometheus answers both sides' queries; kube-apiserver and etcd carry every request;
    // the HPA controller asks for the ScaledObject's metric every 2 s in both sides' rounds.
    const background = [
      ...controlPlanePids(b, ["kube-apiserver", "etcd", "kube-controller-manager"]),
      prometheus.pid!,
    ];
    for (const c of connections) {
      const m = await interleave(b, sides.governor, sides.peer, c, background);
      b.rows.push(
        ...comparisonRows(
          `vs ${name}: an external queue metric through the aggregator, ${c} conn`,
          m,
          `${name} (a ScaledObject's Prometheus trigger), same query, same Prometheus`,
        ),
      );
    }

    await queriesPer100Row(b, {
      sides,
      prometheusUrl: prometheus.url,
      peerName: name,
      name: `vs ${name}: Prometheus queries per 100 HPA requests for a queue (both sides' background polling in the window)`,
      log: k.log,
    });

    // A new queue → its first value through the aggregator, on each side while it is routed to.
    const fresh = Array.from({ length: QUEUES - 1 }, (_, j) => j + 1);
    const firsts: Record<"governor" | "peer", number[]> = { governor: [], peer: [] };
    await sides.peer.prepare!();
    for (const i of fresh) firsts.peer.push(await firstValue(b, kedaPath(i), await add(i), k.log));
    await sides.governor.prepare!();
    for (const i of fresh)
      firsts.governor.push(await firstValue(b, governorPath(i), await addMapping(i), governor.log));
    const [g50, gMax, p50, pMax] = [
      percentile(firsts.governor, 50),
      Math.max(...firsts.governor),
      percentile(firsts.peer, 50),
      Math.max(...firsts.peer),
    ];
    b.rows.push({
      name: `vs ${name}: a new MetricMapping / ScaledObject → its first value through the aggregator, ${fresh.length} each: median / max ms`,
      figure: `${fmt(g50, 0)} / ${fmt(gMax, 0)}`,
      baseline: `${fmt(p50, 0)} / ${fmt(pMax, 0)} (${name})`,
      ratio: `${ratio(g50, p50)} / ${ratio(gMax, pMax)}`,
      series: { Governor: firsts.governor, baseline: firsts.peer },
    });

    // Ten queues served by each: memory, and CPU over a minute with only the HPAs asking.
    // The HPA controller asks for KEDA's ten metrics every 2 s wherever the external
    // APIService points, so it points at KEDA: KEDA serves its HPAs as in production, and
    // Governor, with no HPA of its own here, only samples its ten queues (answering ten HPAs
    // would add 5 cached answers a second).
    await sides.peer.prepare!();
    await sleep(30_000);
    const pids = { governor: [governor.process.pid!], peer: kedaPids() };
    const rss = (side: "governor" | "peer") => pids[side].reduce((n, pid) => n + rssMB(pid), 0);
    const cpu = (side: "governor" | "peer") => pids[side].reduce((n, pid) => n + cpuSeconds(pid), 0);
    const cpu0 = { governor: cpu("governor"), peer: cpu("peer") };
    const t0 = performance.now();
    await sleep(60_000);
    const seconds = (performance.now() - t0) / 1000;
    const idleCpu = {
      governor: ((cpu("governor") - cpu0.governor) / seconds) * 100,
      peer: ((cpu("peer") - cpu0.peer) / seconds) * 100,
    };
    const mem = { governor: rss("governor"), peer: rss("peer") };
    b.rows.push(
      {
        name: `vs ${name}: RSS serving ${QUEUES} queues, MB (Governor: the run's one process, every row's mappings so far; KEDA: operator + metrics server)`,
        figure: fmt(mem.governor),
        baseline: `${fmt(mem.peer)} (${name}: ${kedaPids()
          .map((pid) => fmt(rssMB(pid)))
          .join(" + ")})`,
        ratio: ratio(mem.governor, mem.peer),
        series: { Governor: [mem.governor], baseline: [mem.peer] },
      },
      {
        name: `vs ${name}: CPU serving ${QUEUES} queues, % of a core over ${Math.round(seconds)} s (KEDA: answering its ten HPAs every 2 s; Governor: sampling every 5 s, no HPA asking)`,
        figure: fmt(idleCpu.governor, 2),
        baseline: `${fmt(idleCpu.peer, 2)} (${name})`,
        ratio: ratio(idleCpu.governor, idleCpu.peer),
        series: { Governor: [idleCpu.governor], baseline: [idleCpu.peer] },
      },
    );

    // The HPA controller's view: 100 queues on each side, each with an HPA asking every 2 s,
    // one side at a time and alone (another side's HPAs would fail against it, and their
    // failures cost the controller's workers too). KEDA first: its ScaledObjects make the
    // HPAs; then they go (their HPAs with them), and Governor's 100 HPAs come, on Deployments
    // of their own. Figures over a minute, from kube-controller-manager's own histogram of
    // its metric fetches.
    for (let i = QUEUES; i < HPAS; i++) {
      await add(i);
      await addMapping(i);
    }
    const kcm = controllerManagerMetrics(b);
    const FETCH = "horizontal_pod_autoscaler_controller_metric_computation_duration_seconds";
    const fetches = async () => readHistogram(await kcm(), FETCH, { error: "none", metric_type: "External" });
    const view = async (side: "governor" | "peer") => {
      await sides[side].prepare!();
      await sleep(30_000); // every HPA has asked this side a dozen times
      const [h0, c0, t0] = [await fetches(), cpu(side), performance.now()];
      await sleep(60_000);
      const [h1, c1, t1] = [await fetches(), cpu(side), performance.now()];
      const fetched = histogramDelta(h0, h1);
      const seconds = (t1 - t0) / 1000;
      return {
        perSecond: fetched.count / seconds,
        meanMs: (fetched.sum / fetched.count) * 1000,
        p50Ms: histogramQuantile(fetched, 0.5) * 1000,
        p99Ms: histogramQuantile(fetched, 0.99) * 1000,
        rss: rss(side),
        cpu: ((c1 - c0) / seconds) * 100,
      };
    };
    const peerView = await view("peer");
    await deleteScaledObjects(b, created);
    for (let i = 0; i < HPAS; i++) {
      await b.client.create(`/apis/apps/v1/namespaces/${NS}/deployments`, deployment(governorHpaName(i)));
      ours.push(i);
      await b.client.create(`/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers`, governorHpa(i));
    }
    const v = { governor: await view("governor"), peer: peerView };
    const each = `${HPAS} HPAs on ${HPAS} queues, each side alone`;
    b.rows.push(
      {
        name: `vs ${name}: the HPA controller's external-metric fetches with ${each}: successful fetches/s`,
        figure: fmt(v.governor.perSecond),
        baseline: `${fmt(v.peer.perSecond)} (${name})`,
        ratio: ratio(v.governor.perSecond, v.peer.perSecond),
        series: { Governor: [v.governor.perSecond], baseline: [v.peer.perSecond] },
      },
      {
        name: `vs ${name}: the HPA controller's external-metric fetch with ${each}: mean / p50 / p99 ms (kube-controller-manager's histogram; p50 and p99 interpolated in its power-of-two buckets)`,
        figure: `${fmt(v.governor.meanMs)} / ${fmt(v.governor.p50Ms)} / ${fmt(v.governor.p99Ms)}`,
        baseline: `${fmt(v.peer.meanMs)} / ${fmt(v.peer.p50Ms)} / ${fmt(v.peer.p99Ms)} (${name})`,
        ratio: [
          ratio(v.governor.meanMs, v.peer.meanMs),
          ratio(v.governor.p50Ms, v.peer.p50Ms),
          ratio(v.governor.p99Ms, v.peer.p99Ms),
        ].join(" / "),
        // Every figure the row shows, so a doc quoting the p99 has it in the raw results too.
        series: {
          Governor: [v.governor.meanMs],
          baseline: [v.peer.meanMs],
          "Governor p50": [v.governor.p50Ms],
          "Governor p99": [v.governor.p99Ms],
          "baseline p50": [v.peer.p50Ms],
          "baseline p99": [v.peer.p99Ms],
        },
      },
      {
        name: `vs ${name}: RSS with ${each}, MB (KEDA: operator + metrics server)`,
        figure: fmt(v.governor.rss),
        baseline: `${fmt(v.peer.rss)} (${name})`,
        ratio: ratio(v.governor.rss, v.peer.rss),
        series: { Governor: [v.governor.rss], baseline: [v.peer.rss] },
      },
      {
        name: `vs ${name}: CPU with ${each}, % of a core over a minute`,
        figure: fmt(v.governor.cpu, 2),
        baseline: `${fmt(v.peer.cpu, 2)} (${name})`,
        ratio: ratio(v.governor.cpu, v.peer.cpu),
        series: { Governor: [v.governor.cpu], baseline: [v.peer.cpu] },
      },
    );
  } finally {
    await unregister(b);
    if (keda) {
      // Its ScaledObjects carry the operator's finalizer: deleted while it still runs. If it
      // died, their finalizers are dropped, or the bench namespace would wait for them.
      await deleteScaledObjects(b, created).catch(async () => {
        for (const i of created)
          await b.client
            .mergePatch(`/apis/keda.sh/v1alpha1/namespaces/${NS}/scaledobjects/${queueName(i)}`, {
              metadata: { finalizers: null },
            })
            .catch(() => false);
      });
      await keda.stop();
    }
    for (const i of created)
      await b.client.delete(`/apis/apps/v1/namespaces/${NS}/deployments/${queueName(i)}`).catch(() => false);
    for (const i of ours) {
      await b.client
        .delete(`/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers/${governorHpaName(i)}`)
        .catch(() => false);
      await b.client
        .delete(`/apis/apps/v1/namespaces/${NS}/deployments/${governorHpaName(i)}`)
        .catch(() => false);
    }
    for (const i of mapped)
      await b.client
        .delete(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings/${queueName(i)}`)
        .catch(() => false);
    await stop();
  }
}
