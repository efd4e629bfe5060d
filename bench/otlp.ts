/**
 * "OTLP" (issue #40): how soon a changed gauge is servable when it is pushed to Governor
 * over OTLP, against the same gauge read from a pod's `/metrics` by a `scrape` source and
 * through Prometheus (scraping the pod, then a `prometheus` source querying it) — all
 * three at a 5 s interval (Prometheus scraping every 5 s too), each change seen by all
 * three at once; and how many data points a second one core of Governor's receiver takes
 * in, against the OpenTelemetry Collector's own OTLP receiver (to its nop exporter) fed the
 * same bodies, in alternating rounds.
 */
import { createServer, type Server } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { type Bench, NS, cpuSeconds, sleep, startGovernor } from "./harness.js";
import { scrapedSeries, gauge } from "./exposition.js";
import { percentile, showSpread } from "./stats.js";
import { httpsGet } from "../test/support/https-get.js";
import { SdkPusher, collectorBuild } from "../test/support/otlp.js";
import { stopProcess } from "../test/support/peer-process.js";
import { freePort } from "../test/support/ports.js";
import { eventually } from "../test/support/eventually.js";
import { parseQuantity } from "../src/api/quantity.js";

const LATENCY_ROUNDS = 5;
const CHANGES_PER_ROUND = 8;
const INGEST_ROUNDS = 5;
const INGEST_ROUND_S = 8;
/** Series in each pushed body (one gauge). */
const BODY_SERIES = 1000;
const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;
const POD = "otlp-bench-0";

export async function otlpRows(b: Bench): Promise<void> {
  let value = 1;
  const body = () => gauge("bench_otlp_gauge", 1, () => [`pod="${POD}"`, value]);
  // The pod's /metrics, on loopback: what the scrape source and Prometheus read.
  const exposition: Server = createServer((_req, res) => res.end(body()));
  const expositionPort = await freePort();
  await new Promise<void>((r) => exposition.listen(expositionPort, "127.0.0.1", r));
  const { prometheus, stop: stopPrometheus } = await scrapedSeries(body, "5s");
  const otlpPort = await freePort();
  const governor = await startGovernor(b, undefined, [
    `--otlp-port=${otlpPort}`,
    "--otlp-points-per-second=10000000",
  ]);
  const pusher = new SdkPusher({ "k8s.pod.name": POD });
  pusher.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(value));
  try {
    await b.client.create(`/api/v1/namespaces/${NS}/serviceaccounts`, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "otlp-bench" },
    });
    const { status } = await b.client.request<{ status: { token: string } }>(
      "POST",
      `/api/v1/namespaces/${NS}/serviceaccounts/otlp-bench/token`,
      {
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { audiences: ["governor"] },
        },
      },
    );
    const token = status.token;
    const pod = await b.client.create<{ metadata: { name: string } }>(`/api/v1/namespaces/${NS}/pods`, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: POD, labels: { app: "otlp-bench" } },
      spec: { containers: [{ name: "app", image: "example.invalid/app" }] },
    });
    await b.client.request("PATCH", `/api/v1/namespaces/${NS}/pods/${pod.metadata.name}/status`, {
      body: {
        status: {
          phase: "Running",
          podIP: "127.0.0.1",
          conditions: [{ type: "Ready", status: "True" }],
        },
      },
      contentType: "application/merge-patch+json",
    });
    const mapping = (name: string, metric: string, subject: object, source: object) =>
      b.client.create(PATH, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name },
        spec: { metric, subject, interval: "5s", staleAfter: "1m", source },
      });
    await mapping(
      "otlp-pushed",
      "bench_otlp_pushed",
      { resource: "pods" },
      { otlp: { metric: "queue.depth" } },
    );
    await mapping(
      "otlp-scraped",
      "bench_otlp_scraped",
      { resource: "pods" },
      {
        scrape: { port: expositionPort, series: "bench_otlp_gauge" },
      },
    );
    await mapping(
      "otlp-prometheus",
      "bench_otlp_prometheus",
      { external: {} },
      {
        prometheus: { address: prometheus.url, query: `max(bench_otlp_gauge{pod="${POD}"})` },
      },
    );
    await mapping("otlp-ingest", "bench_otlp_ingest", { external: {} }, { otlp: { metric: "bench.ingest" } });

    const api = `https://127.0.0.1:${governor.port}`;
    const read = async (path: string) => {
      const r = await httpsGet(`${api}${path}`, {
        cert: b.frontProxy.cert,
        key: b.frontProxy.key,
        ca: b.ca.cert,
        headers: b.proxyHeaders,
      });
      return r.status === 200
        ? parseQuantity(String((r.json as { items: { value: string }[] }).items[0]?.value))
        : undefined;
    };
    const paths = {
      pushed: `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/${POD}/bench_otlp_pushed`,
      scraped: `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/${POD}/bench_otlp_scraped`,
      prometheus: `/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}/bench_otlp_prometheus`,
    };
    const target = {
      url: `https://127.0.0.1:${otlpPort}/v1/metrics`,
      token,
      ca: b.ca.cert,
      servername: "localhost",
      encoding: "protobuf" as const,
    };
    const push = async () => {
      const err = await pusher.export(target);
      if (err) throw err;
    };
    await eventually(
      async () => {
        await push();
        for (const p of Object.values(paths)) if ((await read(p)) !== value) throw new Error(`${p}: not yet`);
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: "all three paths serving the gauge" },
    );

    // Latency: each change is seen by all three paths at once; p50 and p99 per round.
    type Path = keyof typeof paths;
    const perRound: Record<Path, { p50: number[]; p99: number[]; all: number[] }> = {
      pushed: { p50: [], p99: [], all: [] },
      scraped: { p50: [], p99: [], all: [] },
      prometheus: { p50: [], p99: [], all: [] },
    };
    for (let r = 0; r < LATENCY_ROUNDS; r++) {
      const latency: Record<Path, number[]> = { pushed: [], scraped: [], prometheus: [] };
      for (let c = 0; c < CHANGES_PER_ROUND; c++) {
        await sleep(1000 + Math.random() * 5000); // a different phase against the intervals each time
        value = 100 + r * CHANGES_PER_ROUND + c;
        const changed = performance.now();
        await push();
        await Promise.all(
          (Object.keys(paths) as Path[]).map(async (k) => {
            for (;;) {
              if ((await read(paths[k])) === value) return latency[k].push(performance.now() - changed);
              if (performance.now() - changed > 30_000) throw new Error(`${k}: the change never served`);
              await sleep(5);
            }
          }),
        );
      }
      for (const k of Object.keys(paths) as Path[]) {
        perRound[k].p50.push(percentile(latency[k], 50));
        perRound[k].p99.push(percentile(latency[k], 99));
        perRound[k].all.push(...latency[k]);
      }
    }
    const row = (baseline: Path, what: string) => {
      const l = perRound.pushed;
      const o = perRound[baseline];
      const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
      b.rows.push({
        name: `OTLP push → servable, p50 / p99 ms, against ${what} (5 s intervals; ${LATENCY_ROUNDS} rounds of ${CHANGES_PER_ROUND} changes)`,
        figure: `${showSpread(l.p50, 0)} / ${showSpread(l.p99, 0)}`,
        baseline: `${showSpread(o.p50, 0)} / ${showSpread(o.p99, 0)}`,
        ratio: `${showSpread(ratios(l.p50, o.p50), 3)} / ${showSpread(ratios(l.p99, o.p99), 3)}`,
        series: {
          "Governor p50": l.p50,
          "Governor p99": l.p99,
          "baseline p50": o.p50,
          "baseline p99": o.p99,
          "ratio p50": ratios(l.p50, o.p50),
          "ratio p99": ratios(l.p99, o.p99),
          "Governor each": l.all,
          "baseline each": o.all,
        },
      });
    };
    row("scraped", "a scrape source reading the pod");
    row("prometheus", "Prometheus scraping the pod, then a prometheus source");

    // Ingest: the same bodies to Governor's receiver and to the Collector's, rounds alternating.
    const loader = new SdkPusher({ "k8s.pod.name": "loader" });
    loader.meter.createObservableGauge("bench.ingest").addCallback((r) => {
      for (let i = 0; i < BODY_SERIES; i++) r.observe(i, { queue: `queue-${i}` });
    });
    const ingestBody = Buffer.from(await loader.body("protobuf"));
    await loader.shutdown();
    const collectorPort = await freePort();
    const config = join(b.dir, "otelcol-bench.yaml");
    writeFileSync(
      config,
      `receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:${collectorPort}\n        tls:\n          cert_file: ${b.servingCert.certFile}\n          key_file: ${b.servingCert.keyFile}\nexporters:\n  nop:\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [nop]\n`,
    );
    const collector = spawn(collectorBuild(), [`--config=file:${config}`], { stdio: "ignore" });
    const agent = new Agent({ keepAlive: true, ca: b.ca.cert, servername: "localhost" });
    try {
      // Both over TLS with the same certificate, each request on a kept-alive connection.
      const send = (url: string, headers: Record<string, string>) => (): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = httpsRequest(
            url,
            { method: "POST", agent, headers: { "content-type": "application/x-protobuf", ...headers } },
            (res) => {
              res.resume();
              res.on("end", () => resolve(res.statusCode!));
            },
          );
          req.on("error", reject);
          req.end(ingestBody);
        });
      const toCollector = send(`https://127.0.0.1:${collectorPort}/v1/metrics`, {});
      const toGovernor = send(target.url, { authorization: `Bearer ${token}` });
      await eventually(async () => expect200(await toCollector()), {
        timeoutMs: 30_000,
        what: "the Collector",
      });
      expect200(await toGovernor());
      const rate = { governor: [] as number[], collector: [] as number[] };
      for (let r = 0; r < INGEST_ROUNDS; r++)
        for (const [side, pid, send] of [
          ["governor", governor.process.pid!, toGovernor],
          ["collector", collector.pid!, toCollector],
        ] as const) {
          const before = cpuSeconds(pid);
          let points = 0;
          const until = performance.now() + INGEST_ROUND_S * 1000;
          await Promise.all(
            Array.from({ length: 4 }, async () => {
              while (performance.now() < until) {
                expect200(await send());
                points += BODY_SERIES;
              }
            }),
          );
          rate[side].push(points / (cpuSeconds(pid) - before));
        }
      const ratios = rate.governor.map((g, i) => g / rate.collector[i]!);
      b.rows.push({
        name: `OTLP ingest, data points a second per core of the receiving process (${BODY_SERIES} points a body, protobuf over TLS, 4 at a time), against the Collector's OTLP receiver to its nop exporter`,
        figure: showSpread(rate.governor, 0),
        baseline: showSpread(rate.collector, 0),
        ratio: showSpread(ratios, 2),
        series: { Governor: rate.governor, baseline: rate.collector, ratio: ratios },
      });
    } finally {
      await stopProcess(collector);
      agent.destroy();
    }
  } finally {
    await pusher.shutdown();
    await governor.stop();
    await stopPrometheus();
    exposition.close();
    for (const name of ["otlp-pushed", "otlp-scraped", "otlp-prometheus", "otlp-ingest"])
      await b.client.delete(`${PATH}/${name}`).catch(() => {});
    await b.client.delete(`/api/v1/namespaces/${NS}/pods/${POD}`).catch(() => {});
    await b.client.delete(`/api/v1/namespaces/${NS}/serviceaccounts/otlp-bench`).catch(() => {});
  }
}

function expect200(status: number): void {
  if (status !== 200) throw new Error(`answered ${status}`);
}
