import { createServer } from "node:http";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { MAX_SELECTOR_SAMPLERS } from "../../src/controller/mapping-runtime.js";
import { requestCounterApp } from "../../tools/demo/fake-app.js";
import {
  POD_IP_ANNOTATION,
  startStandInKubelet,
  type StandInKubelet,
} from "../../tools/devcluster/stand-in-kubelet.js";
import { KubeApiError } from "../../src/k8s/client.js";
import {
  applyYaml,
  freshNamespace,
  kubectl,
  ROOT,
  type TestCluster,
  useCluster,
  LOOPBACK_SOURCES,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { freePort } from "../support/ports.js";
import { TestPrometheus } from "../support/prometheus.js";
import { ForecastSource, ForecastSpec } from "../../src/sources/forecast.js";
import type { ServedMapping } from "../../src/sources/kind.js";
import { PrometheusSource } from "../../src/sources/prometheus.js";

interface Item {
  describedObject: { name: string };
  value: string;
}
const milli = (q: string) => (q.endsWith("m") ? Number(q.slice(0, -1)) / 1000 : Number(q));

/** A "pod": a prom-client app on a loopback IP, counting requests at a steady rate. */
class FakePod {
  private readonly app = requestCounterApp();
  private timer?: NodeJS.Timeout;
  constructor(
    readonly name: string,
    readonly ip: string,
    readonly port: number,
    readonly perSecond: number,
  ) {}
  async start() {
    await new Promise<void>((r) => this.app.server.listen(this.port, this.ip, () => r()));
    this.timer = setInterval(() => this.app.counter.inc({ code: "200" }, this.perSecond / 10), 100);
  }
  stop() {
    clearInterval(this.timer);
    this.app.server.close();
    this.app.server.closeAllConnections();
  }
}

describe("metric sources against real components (integration)", function () {
  this.timeout(240_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let kubelet: StandInKubelet;
  let operator: RunningOperator;
  let prometheus: TestPrometheus;
  const pods: FakePod[] = [];
  let intruder: FakePod | undefined;
  const apply = (yaml: string) => applyYaml(cluster, ns.name, yaml);
  /** Through the aggregator, as the HPA asks. */
  const podValues = async (metric: string) => {
    const list = await cluster.client.get<{ items: Item[] }>(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/${metric}`,
      { labelSelector: "app=web" },
    );
    return Object.fromEntries(list.items.map((i) => [i.describedObject.name, milli(i.value)]));
  };
  const condition = async (name: string, type: string) => {
    const mm = await cluster.client.get<{
      status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
    }>(`/apis/governor.dev/v1alpha1/namespaces/${ns.name}/metricmappings/${name}`);
    return mm.status?.conditions?.find((c) => c.type === type);
  };

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await kubectl(cluster, "apply", "-k", join(ROOT, "crds"));
    await kubectl(cluster, "wait", "--for=condition=Established", "crd/metricmappings.governor.dev");
    ns = await freshNamespace(cluster, "sources");
    kubelet = startStandInKubelet(cluster.client, { namespace: ns.name });
    const podPort = await freePort();
    pods.push(
      new FakePod("web-1", "127.0.0.41", podPort, 20),
      new FakePod("web-2", "127.0.0.42", podPort, 40),
    );
    for (const p of pods) {
      await p.start();
      await cluster.client.create(`/api/v1/namespaces/${ns.name}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: p.name, labels: { app: "web" }, annotations: { [POD_IP_ANNOTATION]: p.ip } },
        spec: { containers: [{ name: "web", image: "example.invalid/web" }] },
      });
    }
    // Another team's pod, in the same Prometheus: no mapping of this namespace may read it.
    intruder = new FakePod("intruder", "127.0.0.43", podPort, 500);
    await intruder.start();
    prometheus = new TestPrometheus([
      ...pods.map((p) => ({
        address: `${p.ip}:${p.port}`,
        labels: { namespace: ns.name, pod: p.name, app: "web" },
      })),
      {
        address: `${intruder.ip}:${intruder.port}`,
        labels: { namespace: "other-team", pod: "intruder", app: "web" },
      },
    ]);
    await prometheus.start();
    await eventually(async () => {
      for (const p of pods) expect(kubelet.ipOf(ns.name, p.name)).to.equal(p.ip);
    });
    const port = await freePort();
    operator = await startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: ns.name,
      registration: { mode: "local", serviceName: "governor-src", port },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: false,
      shutdownDelayMs: 0,
    });
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: scraped}
spec:
  metric: http_requests
  subject: {resource: pods}
  interval: 2s
  source: {scrape: {port: ${podPort}, series: http_requests_total, matchLabels: {code: "200"}, rate: true}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: from-prometheus}
spec:
  metric: http_requests_prom
  subject: {resource: pods}
  interval: 1s
  staleAfter: 6s
  source:
    prometheus:
      address: ${prometheus.url}
      query: 'sum by (pod) (rate(http_requests_total{namespace="{{namespace}}",pod=~"{{names}}",code="200"}[10s]))'
      nameLabel: pod
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: by-selector}
spec:
  metric: http_requests_sel
  subject: {resource: pods}
  interval: 1s
  source:
    prometheus:
      address: ${prometheus.url}
      query: 'sum by (pod) (rate(http_requests_total{namespace="{{namespace}}",code="200",{{selector}}}[10s]))'
      nameLabel: pod
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: total-with-fallback}
spec:
  metric: total_rps
  subject: {external: {}}
  interval: 1s
  staleAfter: 6s
  fallback: {value: "100"}
  source:
    prometheus:
      address: ${prometheus.url}
      query: 'sum(rate(http_requests_total{namespace="{{namespace}}"}[10s]))'
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: no-namespace-written}
spec:
  metric: all_rps
  subject: {external: {}}
  interval: 1s
  source: {prometheus: {address: ${prometheus.url}, query: 'sum(rate(http_requests_total[10s]))'}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: another-teams}
spec:
  metric: other_rps
  subject: {external: {}}
  interval: 1s
  source: {prometheus: {address: ${prometheus.url}, query: 'sum(rate(http_requests_total{namespace="other-team"}[10s]))'}}
`);
    await eventually(() => cluster.client.get("/apis/custom.metrics.k8s.io/v1beta2"), {
      timeoutMs: 30_000,
      what: "aggregator proxy ready",
    });
  });

  after(async () => {
    await operator?.stop();
    await operator?.registration?.uninstall();
    await prometheus?.stop();
    for (const p of pods) p.stop();
    intruder?.stop();
    await kubelet?.stop();
    await ns?.delete();
  });

  it("serves pods/http_requests as a per-second rate from scrape and from Prometheus, agreeing within 10%", async () => {
    // Prometheus' rate() needs its 10 s window filled; compare once both have settled.
    await eventually(
      async () => {
        const scraped = await podValues("http_requests");
        const prom = await podValues("http_requests_prom");
        for (const [pod, expected] of [
          ["web-1", 20],
          ["web-2", 40],
        ] as const) {
          const a = scraped[pod]!;
          const b = prom[pod]!;
          expect(a, `scrape ${pod}`).to.be.within(expected * 0.9, expected * 1.1);
          expect(b, `prometheus ${pod}`).to.be.within(expected * 0.9, expected * 1.1);
          expect(Math.abs(a - b) / Math.max(a, b), `${pod}: scrape ${a} vs prometheus ${b}`).to.be.below(0.1);
        }
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "both sources report the injected rates and agree" },
    );
    const bySelector = await podValues("http_requests_sel");
    expect(bySelector["web-2"], "{{selector}} narrowed by the HPA's selector").to.be.within(34, 46);
    const list = await cluster.client.get<{ items: { windowSeconds?: number }[] }>(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/http_requests`,
    );
    expect(list.items[0]!.windowSeconds).to.equal(2);
  });

  it("a {{selector}} mapping samples at most 32 different label selectors at once; beyond that a clear 503, and the ones in use keep answering", async () => {
    const path = `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/http_requests_sel`;
    const statuses: number[] = [];
    let refusal = "";
    for (let i = 0; i < 40; i++) {
      await cluster.client.get(path, { labelSelector: `app=web,shard=s${i}` }).then(
        () => statuses.push(200),
        (err: KubeApiError) => {
          statuses.push(err.statusCode);
          if (err.statusCode === 503) refusal = err.message;
        },
      );
    }
    expect(statuses.filter((s) => s === 200).length, JSON.stringify(statuses)).to.be.at.most(
      MAX_SELECTOR_SAMPLERS,
    );
    expect(
      statuses.filter((s) => s !== 200 && s !== 503),
      JSON.stringify(statuses),
    ).to.deep.equal([]);
    expect(refusal).to.match(/already samples 32 different label selectors, its limit/);
    // A selector already sampled is still served.
    await cluster.client.get(path, { labelSelector: "app=web,shard=s0" });
  });

  it("a Prometheus query reads only the mapping's namespace, whatever its author wrote", async () => {
    // Written without a namespace matcher: bound to this namespace, so 20 + 40 requests/s,
    // never the other team's 500.
    await eventually(
      async () => {
        const list = await cluster.client.get<{ items: { value: string }[] }>(
          `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/all_rps`,
        );
        expect(milli(list.items[0]!.value)).to.be.within(54, 66);
      },
      { timeoutMs: 30_000, what: "all_rps bound to the namespace" },
    );
    // Naming another namespace: refused with a reason, never served.
    await eventually(async () => {
      const ready = await condition("another-teams", "Ready");
      expect(ready).to.include({ status: "False", reason: "InvalidSource" });
      expect(ready!.message).to.include('namespace "other-team"');
    });
    const refused = await cluster.client
      .get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/other_rps`)
      .then(
        () => 200,
        (err: KubeApiError) => err.statusCode,
      );
    expect(refused).to.be.oneOf([404, 503]);
  });

  it("a forecast of a Prometheus query starts from Prometheus' history of it, bound to the namespace like every sample", async () => {
    const source = new PrometheusSource(
      { address: prometheus.url, query: "sum(rate(http_requests_total[5s]))", timeout: "5s" },
      { namespace: ns.name, secrets: { read: async () => ({}) }, policy: LOOPBACK_SOURCES },
    );
    // Prometheus has scraped since the suite began: wait for 20 s of steady rates.
    let to = 0;
    let from = 0;
    let history = { atMs: [] as number[], values: [] as number[] };
    await eventually(
      async () => {
        to = Math.floor(Date.now() / 1000) * 1000 - 2000;
        from = to - 20_000;
        history = await source.history(from, to, 1000, AbortSignal.timeout(5000));
        expect(history.atMs.length, "a point a second").to.be.within(19, 21);
        // This namespace's 20 + 40 requests/s, never the other team's 500.
        for (const v of history.values) expect(v).to.be.within(45, 75);
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "20 s of steady history" },
    );
    // The same range asked of Prometheus directly, bound by hand: the same points.
    const direct = (await (
      await fetch(
        `${prometheus.url}/api/v1/query_range?${new URLSearchParams({
          query: `sum(rate(http_requests_total{namespace="${ns.name}"}[5s]))`,
          start: String(from / 1000),
          end: String(to / 1000),
          step: "1s",
        }).toString()}`,
      )
    ).json()) as { data: { result: { values: [number, string][] }[] } };
    expect(history.values).to.deep.equal(direct.data.result[0]!.values.map(([, v]) => Number(v)));

    // A forecast over a mapping of that query: its first sample already holds Prometheus' history.
    const input: ServedMapping = {
      staleAfterMs: 60_000,
      sampler: {
        state: { last: { value: { kind: "scalar", value: 60 }, atMs: Date.now() } },
        source,
        markRead: () => {},
      },
    };
    const forecast = new ForecastSource(
      ForecastSpec.parse({ mapping: "rps", lead: "10s", season: "1m" }),
      ns.name,
      { read: () => input },
      1000,
      "rps-ahead",
    );
    const first = await forecast.sample({ signal: AbortSignal.timeout(5000) });
    const note = first.kind === "scalar" ? first.note : undefined;
    const recorded = Number(/^(\d+) of the 120 buckets/.exec(note?.message ?? "")?.[1] ?? 0);
    expect(note?.reason === "Forecasting" || recorded >= 15, note?.message).to.equal(true);
  });

  it("when Prometheus dies: holds the last value until staleAfter, then 503 (or the fallback), and says why", async () => {
    await eventually(
      async () => expect((await condition("from-prometheus", "SourceHealthy"))?.status).to.equal("True"),
      { timeoutMs: 15_000 },
    );
    await eventually(
      async () =>
        expect(
          await cluster.client.get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/total_rps`),
        ).to.be.ok,
    );
    await prometheus.stop();
    const stoppedAt = Date.now();

    // Within staleAfter (6 s) the last good value is still served.
    const held = await podValues("http_requests_prom");
    expect(held["web-1"]).to.be.within(17, 23);
    expect(Date.now() - stoppedAt).to.be.below(6000);

    await eventually(
      async () => {
        const err = await podValues("http_requests_prom").then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(KubeApiError);
        expect((err as KubeApiError).statusCode).to.equal(503);
      },
      { timeoutMs: 20_000, intervalMs: 500, what: "503 once stale" },
    );
    // The other mapping on the same Prometheus has its own sampler: it goes stale within a second too.
    await eventually(
      async () => {
        const ext = await cluster.client.get<{ items: { value: string }[] }>(
          `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/total_rps`,
        );
        expect(ext.items[0]!.value, "the explicit fallback").to.equal("100");
      },
      { timeoutMs: 5000, intervalMs: 200, what: "the fallback once stale" },
    );

    await eventually(
      async () => {
        const health = await condition("from-prometheus", "SourceHealthy");
        expect(health).to.include({ status: "False", reason: "SourceError" });
        expect(health!.message).to.contain("ECONNREFUSED");
        expect(await condition("from-prometheus", "Ready")).to.include({ status: "False", reason: "Stale" });
        expect(await condition("total-with-fallback", "Ready")).to.include({
          status: "True",
          reason: "ServingFallback",
        });
      },
      { timeoutMs: 20_000, intervalMs: 500, what: "status explains the outage" },
    );
    // While the outage goes on and nothing else changes, nothing is written: ~5 failed
    // samples (interval 1s) leave both mappings' objects as they are.
    const version = async (name: string) =>
      (
        await cluster.client.get<{ metadata: { resourceVersion: string } }>(
          `/apis/governor.dev/v1alpha1/namespaces/${ns.name}/metricmappings/${name}`,
        )
      ).metadata.resourceVersion;
    const before = [await version("from-prometheus"), await version("total-with-fallback")];
    await new Promise((r) => setTimeout(r, 5000)); // a quiet period is what is measured
    expect([await version("from-prometheus"), await version("total-with-fallback")]).to.deep.equal(before);
    // The scrape source does not depend on Prometheus.
    expect((await podValues("http_requests"))["web-2"]).to.be.within(34, 46);
  });

  it("recovers when Prometheus returns: fresh values and SourceHealthy=True again", async () => {
    await prometheus.start();
    await eventually(
      async () => {
        const v = await podValues("http_requests_prom");
        expect(v["web-2"]).to.be.within(34, 46);
        expect(await condition("from-prometheus", "SourceHealthy")).to.include({ status: "True" });
        expect(await condition("from-prometheus", "Ready")).to.include({ status: "True", reason: "Serving" });
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "recovery" },
    );
  });

  it("never counts beyond the mapping's namespace unless the admin allows it", async () => {
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: all-pods}
spec:
  metric: all_pods
  subject: {external: {}}
  interval: 1s
  source: {kubernetes: {count: {resource: pods, allNamespaces: true}}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: node-count}
spec:
  metric: node_count
  subject: {external: {}}
  interval: 1s
  source: {kubernetes: {count: {resource: nodes}}}
`);
    await eventually(
      async () => {
        for (const [name, what] of [
          ["all-pods", "pods in all namespaces"],
          ["node-count", "nodes \\(cluster-scoped\\)"],
        ] as const) {
          expect((await condition(name, "Ready"))?.status, name).to.equal("False");
          const health = await condition(name, "SourceHealthy");
          expect(health?.status, name).to.equal("False");
          expect(health?.message, name).to.match(
            new RegExp(`counting ${what} reads beyond this namespace .*--allow-cluster-wide-counts`),
          );
        }
      },
      { timeoutMs: 15_000, intervalMs: 250, what: "both mappings to say why they count nothing" },
    );
    for (const metric of ["all_pods", "node_count"]) {
      const err = await cluster.client
        .get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/${metric}`)
        .catch((e: unknown) => e);
      expect((err as KubeApiError).statusCode, metric).to.be.oneOf([404, 503]);
    }
  });

  it("counts Kubernetes objects and reads numbers from HTTP JSON", async () => {
    const server = createServer((_req, res) =>
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ queue: { depth: 42 } })),
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: pod-count}
spec:
  metric: web_pods
  subject: {external: {}}
  interval: 1s
  source: {kubernetes: {count: {resource: pods, labelSelector: app=web}}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec:
  metric: queue_depth
  subject: {external: {}}
  interval: 1s
  source: {http: {url: "http://127.0.0.1:${port}/stats", jsonPath: "$.queue.depth"}}
`);
      await eventually(
        async () => {
          const count = await cluster.client.get<{ items: { value: string }[] }>(
            `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/web_pods`,
          );
          expect(count.items[0]!.value).to.equal("2");
          const q = await cluster.client.get<{ items: { value: string }[] }>(
            `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/queue_depth`,
          );
          expect(q.items[0]!.value).to.equal("42");
        },
        { timeoutMs: 20_000, intervalMs: 500, what: "count and JSON values" },
      );
    } finally {
      server.close();
    }
  });
});
