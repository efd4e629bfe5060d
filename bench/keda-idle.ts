/**
 * "Against KEDA" at 1,000 queues: 1,000 ScaledObjects (KEDA's operator polls each one's
 * Prometheus trigger every 15 s, its `pollingInterval`) and 1,000 MetricMappings (Governor
 * samples each every 15 s), on the same real Prometheus. Every queue is below its
 * activation threshold and every workload at zero replicas, so no HPA asks either side
 * (the HPA controller does not fetch metrics for a target at zero): what is measured is
 * what each costs to keep 1,000 queues watched — memory and CPU over a minute — and how
 * long each takes to take 1,000 new queues on.
 */
import { httpsGet } from "../test/support/https-get.js";
import type { KedaProcesses } from "../test/support/keda.js";
import { gauge, scrapedSeries } from "./exposition.js";
import { startBenchKeda } from "./keda.js";
import {
  type Bench,
  type Child,
  NS,
  cpuSeconds,
  fmt,
  pool,
  proxied,
  ratio,
  rssMB,
  sleep,
} from "./harness.js";

const QUEUES = 1000;
const LABEL = "bench.governor.dev/part";
const queueName = (i: number) => `idle-${String(i).padStart(4, "0")}`;
const query = (i: number) => `sum(bench_idle_messages{namespace="${NS}",queue="${queueName(i)}"})`;
const collection = {
  deployments: `/apis/apps/v1/namespaces/${NS}/deployments`,
  scaledObjects: `/apis/keda.sh/v1alpha1/namespaces/${NS}/scaledobjects`,
  mappings: `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`,
  hpas: `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers`,
};

/** Waits until `check` holds, up to `ms`; says what it waited for otherwise. */
export async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(500);
  }
}

const count = async (b: Bench, path: string, part: string) =>
  (await b.client.get<{ items: unknown[] }>(path, { labelSelector: `${LABEL}=${part}` })).items.length;

/** One queue: a Deployment at zero, KEDA's ScaledObject and Governor's MetricMapping on it, labelled `part`. */
export async function createQueue(
  b: Bench,
  part: string,
  q: {
    name: string;
    metric: string;
    query: string;
    kedaAddress: string;
    governorAddress: string;
    everySeconds: number;
  },
): Promise<void> {
  const labels = { [LABEL]: part };
  await b.client.create(collection.deployments, {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: q.name, labels },
    spec: {
      replicas: 0,
      selector: { matchLabels: { app: q.name } },
      template: {
        metadata: { labels: { app: q.name } },
        spec: { containers: [{ name: "app", image: "example.invalid/worker:1" }] },
      },
    },
  });
  await b.client.create(collection.scaledObjects, {
    apiVersion: "keda.sh/v1alpha1",
    kind: "ScaledObject",
    metadata: { name: q.name, labels },
    spec: {
      scaleTargetRef: { name: q.name },
      pollingInterval: q.everySeconds,
      minReplicaCount: 0,
      maxReplicaCount: 4,
      triggers: [
        {
          type: "prometheus",
          metadata: {
            serverAddress: q.kedaAddress,
            query: q.query,
            threshold: "100",
            activationThreshold: "1000",
            ignoreNullValues: "false",
          },
        },
      ],
    },
  });
  await b.client.create(collection.mappings, {
    apiVersion: "governor.dev/v1alpha1",
    kind: "MetricMapping",
    metadata: { name: q.name, labels },
    spec: {
      metric: q.metric,
      subject: { external: {} },
      interval: `${q.everySeconds}s`,
      source: { prometheus: { address: q.governorAddress, query: q.query } },
    },
  });
}

/**
 * Deletes the queues labelled `part`: the ScaledObjects first, while KEDA's operator runs
 * to remove its finalizer (or, if it died, their finalizers dropped), then the mappings and
 * the Deployments.
 */
export async function removeQueues(b: Bench, part: string, keda: KedaProcesses | undefined): Promise<void> {
  const deleteAll = (path: string) =>
    b.client
      .request("DELETE", path, { query: { labelSelector: `${LABEL}=${part}` }, timeoutMs: 300_000 })
      .catch(() => false);
  await deleteAll(collection.scaledObjects);
  if (keda)
    await until(
      "KEDA's ScaledObjects gone",
      300_000,
      async () => (await count(b, collection.scaledObjects, part)) === 0,
    ).catch(async () => {
      const left = await b.client.get<{ items: { metadata: { name: string } }[] }>(collection.scaledObjects, {
        labelSelector: `${LABEL}=${part}`,
      });
      for (const o of left.items)
        await b.client
          .mergePatch(`${collection.scaledObjects}/${o.metadata.name}`, { metadata: { finalizers: null } })
          .catch(() => false);
    });
  await keda?.stop();
  await deleteAll(collection.mappings);
  await deleteAll(collection.deployments);
}

export async function kedaIdleRows(b: Bench, governor: Child): Promise<void> {
  const exposition = gauge("bench_idle_messages", QUEUES, (i) => [`queue="${queueName(i)}"`, i % 50]);
  const { prometheus, stop } = await scrapedSeries(() => exposition, "15s");
  let keda: KedaProcesses | undefined;
  try {
    keda = await startBenchKeda(b, "keda-idle");
    const name = `KEDA ${keda.version}`;
    const created = performance.now();
    await pool(QUEUES, 32, (i) =>
      createQueue(b, "idle", {
        name: queueName(i),
        metric: `bench_idle_${String(i).padStart(4, "0")}`,
        query: query(i),
        kedaAddress: prometheus.url,
        governorAddress: prometheus.url,
        everySeconds: 15,
      }),
    );
    // Governor serves the last queue; KEDA has made an HPA per ScaledObject (its operator
    // reconciles through a client limited to 20 requests/s: a run waited 5 minutes and
    // more for all 1,000). Each side's time from the first create; KEDA's capped at 15 min.
    const last = `https://127.0.0.1:${governor.port}/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}/bench_idle_${String(QUEUES - 1).padStart(4, "0")}`;
    await until("Governor serving the 1,000th queue", 300_000, async () => {
      const r = await httpsGet(last, proxied(b)).catch(() => undefined);
      return r?.status === 200;
    });
    const governorS = (performance.now() - created) / 1000;
    let hpas = 0;
    await until("KEDA's 1,000 HPAs", 900_000, async () => {
      const list = await b.client.get<{ items: { metadata: { name: string } }[] }>(collection.hpas);
      hpas = list.items.filter((h) => h.metadata.name.startsWith("keda-hpa-idle-")).length;
      return hpas === QUEUES;
    }).catch(() => {});
    const kedaS = (performance.now() - created) / 1000;
    b.rows.push({
      name: `vs ${name}: ${QUEUES} queues created → Governor serving the last / KEDA's HPA made for every one, s (from the first create; KEDA's operator reconciles through its client's 20 requests/s)`,
      figure: fmt(governorS),
      baseline: `${fmt(kedaS)}${hpas < QUEUES ? ` (${hpas} of ${QUEUES} HPAs when the bench stopped waiting)` : ""} (${name})`,
      ratio: ratio(governorS, kedaS),
      series: { Governor: [governorS], baseline: [kedaS] },
    });
    await sleep(30_000);
    const pids = {
      governor: [governor.process.pid!],
      peer: [keda.operator.process.pid!, keda.adapter.process.pid!],
    };
    const cpu = (side: "governor" | "peer") => pids[side].reduce((n, pid) => n + cpuSeconds(pid), 0);
    const cpu0 = { governor: cpu("governor"), peer: cpu("peer") };
    const t0 = performance.now();
    await sleep(60_000);
    const seconds = (performance.now() - t0) / 1000;
    const used = {
      governor: ((cpu("governor") - cpu0.governor) / seconds) * 100,
      peer: ((cpu("peer") - cpu0.peer) / seconds) * 100,
    };
    const each = pids.peer.map((pid) => rssMB(pid));
    const rss = { governor: rssMB(pids.governor[0]!), peer: each.reduce((a, c) => a + c, 0) };
    const what = `${QUEUES} queues, none active, each checked every 15 s, no HPA asking`;
    b.rows.push(
      {
        name: `vs ${name}: RSS with ${what}, MB (Governor: the run's one process, every row's mappings so far; KEDA: operator + metrics server)`,
        figure: fmt(rss.governor),
        baseline: `${fmt(rss.peer)} (${name}: ${each.map((m) => fmt(m)).join(" + ")})`,
        ratio: ratio(rss.governor, rss.peer),
        series: { Governor: [rss.governor], baseline: [rss.peer] },
      },
      {
        name: `vs ${name}: CPU with ${what}, % of a core over ${Math.round(seconds)} s`,
        figure: fmt(used.governor, 2),
        baseline: `${fmt(used.peer, 2)} (${name})`,
        ratio: ratio(used.governor, used.peer),
        series: { Governor: [used.governor], baseline: [used.peer] },
      },
    );
  } finally {
    await removeQueues(b, "idle", keda);
    await stop();
  }
}
