/**
 * "Against prometheus-adapter" with many metrics: 10 and 1,000 rules in the adapter's
 * config against 10 and 1,000 MetricMappings, each a per-pod rate over the same 50 pods.
 * The adapter reads its rules once, at start: a new rule is served after a restart and
 * its first relist of series from Prometheus, so that is what its "new metric → first
 * value" measures (from the process start); Governor's measures a MetricMapping created
 * while it runs. Then each side's memory, and CPU over a minute with no request: the
 * adapter relisting every minute (its Helm chart's `metricsRelistInterval`), Governor
 * sampling every mapping every 15 s. Both are asked directly, as the aggregator would
 * (front-proxy certificate); the APIServices are not involved.
 *
 * Timing starts once Prometheus has a rate for every pod: before that a first sample holds
 * fewer pods and the next comes an interval later — what the runs up to 2026-12-06 put into
 * each size's first timed mapping (15–16 s at 10 rules), Prometheus's warm-up, not Governor's.
 */
import { httpsGet } from "../test/support/https-get.js";
import { startPrometheusAdapter } from "../test/support/prometheus-adapter.js";
import {
  type Bench,
  type Child,
  NS,
  child,
  cpuSeconds,
  fmt,
  pool,
  proxied,
  ratio,
  rssMB,
  sleep,
  prometheusQueries,
} from "./harness.js";
import { percentile } from "./stats.js";

/** Rules (and mappings) per size; the last few of each size are the timed ones. */
const SIZES = [10, 1000];
const TIMED = 5;
const ruleMetric = (j: number) => `bench_rule_${String(j).padStart(4, "0")}_per_second`;
const LABEL = "bench.governor.dev/part";

/** The adapter's config: `n` rules, each naming the bench's per-pod rate differently. */
function rulesConfig(n: number): string {
  const rules = Array.from(
    { length: n },
    (_, j) => `- seriesQuery: 'bench_http_requests_total{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name:
    matches: "^bench_http_requests_total$"
    as: "${ruleMetric(j)}"
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'
`,
  );
  return `rules:\n${rules.join("")}`;
}

const mapping = (j: number, prometheusUrl: string) => ({
  apiVersion: "governor.dev/v1alpha1",
  kind: "MetricMapping",
  metadata: { name: `rule-${String(j).padStart(4, "0")}`, labels: { [LABEL]: "rules" } },
  spec: {
    metric: ruleMetric(j),
    subject: { resource: "pods" },
    interval: "15s",
    source: {
      prometheus: {
        address: prometheusUrl,
        query: `sum by (pod) (rate(bench_http_requests_total{namespace="{{namespace}}"}[1m]))`,
        nameLabel: "pod",
      },
    },
  },
});

/** Waits until Prometheus answers the mappings' query (the rules' series) with a rate for each of the `pods` pods. */
async function everyPodRated(prometheusUrl: string, pods: number): Promise<void> {
  const query = `sum by (pod) (rate(bench_http_requests_total{namespace="${NS}"}[1m]))`;
  const started = performance.now();
  for (;;) {
    const answer = await fetch(`${prometheusUrl}/api/v1/query?${new URLSearchParams({ query }).toString()}`)
      .then((r) => r.json() as Promise<{ data?: { result?: unknown[] } }>)
      .catch(() => undefined);
    if ((answer?.data?.result?.length ?? 0) >= pods) return;
    if (performance.now() - started > 180_000)
      throw new Error(`Prometheus had no rate for all ${pods} pods within 3 min`);
    await sleep(500);
  }
}

/** Asks `port` directly for metric `j` of the `pods` pods until all answer; the ms since `t0`. */
async function served(b: Bench, port: number, j: number, pods: number, t0: number, log: () => string) {
  const url = `https://127.0.0.1:${port}/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/${ruleMetric(j)}?labelSelector=app%3Dpeer`;
  for (;;) {
    const r = await httpsGet(url, proxied(b)).catch(() => undefined);
    if (r?.status === 200 && (r.json as { items?: unknown[] }).items?.length === pods)
      return performance.now() - t0;
    if (performance.now() - t0 > 180_000)
      throw new Error(`${url}: not served within 3 min (last ${r?.status})\n${log().slice(-3000)}`);
    await sleep(20);
  }
}

/**
 * The rows; the caller has the 50 pods (label `app=peer`) and Prometheus scraping their
 * counter, and passes the adapter's flags as its manifests deploy it.
 */
export async function rulesRows(
  b: Bench,
  governor: Child,
  opts: { prometheusUrl: string; pods: number; adapterArgs: string[] },
): Promise<void> {
  let adapter: (Child & { version: string }) | undefined;
  let made = 0;
  await everyPodRated(opts.prometheusUrl, opts.pods);
  try {
    for (const n of SIZES) {
      // Governor: mappings up to n, the last TIMED of them one at a time.
      await pool(n - TIMED - made, 32, (k) =>
        b.client.create(
          `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`,
          mapping(made + k, opts.prometheusUrl),
        ),
      );
      made = n - TIMED;
      const governorMs: number[] = [];
      for (; made < n; made++) {
        const t0 = performance.now();
        await b.client.create(
          `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`,
          mapping(made, opts.prometheusUrl),
        );
        governorMs.push(await served(b, governor.port, made, opts.pods, t0, governor.log));
      }
      // The adapter: started TIMED times with n rules; the last start stays for memory and CPU.
      const adapterMs: number[] = [];
      for (let t = 0; t < TIMED; t++) {
        await adapter?.stop();
        const t0 = performance.now();
        const a = await startPrometheusAdapter({
          dir: b.dir,
          kubeconfig: b.kubeconfig,
          tls: { certFile: b.servingCert.certFile, keyFile: b.servingCert.keyFile, ca: b.ca.cert },
          prometheusUrl: opts.prometheusUrl,
          config: rulesConfig(n),
          args: [...opts.adapterArgs, "--metrics-relist-interval=1m"],
        });
        adapter = { ...child(a.process, a.port), log: a.log, version: a.version };
        adapterMs.push(await served(b, a.port, n - 1, opts.pods, t0, a.log));
      }
      const name = `prometheus-adapter ${adapter!.version}`;
      await sleep(30_000);
      const pids = { governor: governor.process.pid!, peer: adapter!.process.pid! };
      const cpu0 = { governor: cpuSeconds(pids.governor), peer: cpuSeconds(pids.peer) };
      const queries0 = await prometheusQueries(opts.prometheusUrl);
      const t0 = performance.now();
      await sleep(60_000);
      const seconds = (performance.now() - t0) / 1000;
      // Only Governor queries Prometheus while nobody asks (the adapter relists series, not queries).
      const idleQueries = ((await prometheusQueries(opts.prometheusUrl)) - queries0) * (60 / seconds);
      const cpu = {
        governor: ((cpuSeconds(pids.governor) - cpu0.governor) / seconds) * 100,
        peer: ((cpuSeconds(pids.peer) - cpu0.peer) / seconds) * 100,
      };
      const rss = { governor: rssMB(pids.governor), peer: rssMB(pids.peer) };
      const [g, p] = [percentile(governorMs, 50), percentile(adapterMs, 50)];
      const what = `${n} rules / MetricMappings`;
      b.rows.push(
        {
          name: `vs ${name}, ${what}: a new metric → its first value for 50 pods (Governor: a MetricMapping created while it runs; the adapter: started with the rule in its config, as after a rollout), median / max of ${TIMED}, ms`,
          figure: `${fmt(g, 0)} / ${fmt(Math.max(...governorMs), 0)}`,
          baseline: `${fmt(p, 0)} / ${fmt(Math.max(...adapterMs), 0)} (${name})`,
          ratio: ratio(g, p),
          series: { Governor: governorMs, baseline: adapterMs },
        },
        {
          name: `vs ${name}, ${what}: RSS, MB (Governor: the run's one process, every row's mappings so far)`,
          figure: fmt(rss.governor),
          baseline: `${fmt(rss.peer)} (${name})`,
          ratio: ratio(rss.governor, rss.peer),
          series: { Governor: [rss.governor], baseline: [rss.peer] },
        },
        {
          name: `vs ${name}, ${what}: Prometheus queries per 100 mappings in a minute with no request (every mapping has the same query; Governor shares one sampler among identical requests, idle after 2 minutes unread)`,
          figure: fmt((idleQueries * 100) / n, 2),
          baseline: `0 (${name}: answers requests only)`,
          ratio: "—",
          series: { Governor: [(idleQueries * 100) / n] },
        },
        {
          name: `vs ${name}, ${what}: CPU with no request, % of a core over ${Math.round(seconds)} s (Governor: identical requests sampled once, every 15 s while read and less often unread; the adapter: relisting every minute)`,
          figure: fmt(cpu.governor, 2),
          baseline: `${fmt(cpu.peer, 2)} (${name})`,
          ratio: ratio(cpu.governor, cpu.peer),
          series: { Governor: [cpu.governor], baseline: [cpu.peer] },
        },
      );
    }
  } finally {
    await adapter?.stop();
    await b.client
      .request("DELETE", `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
        query: { labelSelector: `${LABEL}=rules` },
        timeoutMs: 300_000,
      })
      .catch(() => false);
  }
}
