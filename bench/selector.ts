/**
 * "Selector query at scale": `pods/*\/metric?labelSelector=…` over 5,000 pods whose values
 * come from a real Prometheus 3 (one series per pod, scraped from an exposition
 * endpoint of this process), as the HPA asks it for a 5,000-replica workload; and the
 * same namespace queried with a selector matching 50 of them. Baseline: a bare
 * node:https server returning the same bytes. Each row's rounds are split over two
 * Governor processes. Governor keeps a selector's answer while its sample and the pods are
 * unchanged (what repeated readers get); a third process, started with
 * `--answer-cache-size=0`, builds every answer anew (what the first reader after a new
 * sample or a pod change waits for).
 */
import { gauge, scrapedSeries } from "./exposition.js";
import {
  type Bench,
  type Child,
  NS,
  type Interleaved,
  combine,
  comparisonRows,
  interleave,
  pinned,
  pool,
  proxied,
  shippedNodeOptions,
  sleep,
  startBare,
  startGovernor,
  waitFor200,
} from "./harness.js";

const PODS = 5000;
const SHARD = 100; // pods per `shard` label value: a 50-of-5,000 selector needs half a shard
const podName = (i: number) => `load-${String(i).padStart(4, "0")}`;

export async function createPods(b: Bench, n = PODS): Promise<void> {
  await pool(n, 32, (i) =>
    b.client.create(`/api/v1/namespaces/${NS}/pods`, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: podName(i),
        labels: { app: "load", shard: String(Math.floor(i / SHARD)), half: String(i % 2) },
      },
      spec: { containers: [{ name: "app", image: "example.invalid/load:1" }] },
    }),
  );
}

export async function selectorRows(b: Bench, governor: Child): Promise<void> {
  const exposition = gauge("bench_pod_load", PODS, (i) => [`pod="${podName(i)}"`, i % 97]);
  // Scraped every 5 s, as often as Governor samples: 5,000 series a second would be work
  // beside the load generator that neither side needs.
  const { prometheus, stop } = await scrapedSeries(() => exposition, "5s");
  let bare: Child | undefined;
  let second: Child | undefined;
  let uncached: Child | undefined;
  try {
    await createPods(b);
    await b.client.create(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: "pod-load" },
      spec: {
        metric: "pod_load",
        subject: { resource: "pods" },
        interval: "5s",
        source: {
          prometheus: {
            address: prometheus.url,
            query: `bench_pod_load{namespace="{{namespace}}"}`,
            nameLabel: "pod",
          },
        },
      },
    });
    const selectors = [
      [`all ${PODS} pods`, "app=load", PODS],
      [`50 of ${PODS} pods`, "shard=7,half=0", SHARD / 2],
    ] as const;
    // Two Governor processes answer these rows, half the rounds each: the run's, then a fresh
    // one. Two processes differed by more than the rounds inside one did (1,600 vs 1,850 req/s
    // at the same CPU in two runs of one commit, ADR 0005); an even number of rounds each.
    const rounds = Math.ceil(b.rounds.rounds / 4) * 2;
    const measured = selectors.map((): Interleaved[] => []);
    const built = selectors.map((): Interleaved[] => []);
    const bodies: string[] = [];
    for (const which of ["run's", "fresh", "uncached"] as const) {
      if (which === "uncached") {
        await second?.stop();
        second = undefined;
      }
      const g =
        which === "run's"
          ? governor
          : which === "fresh"
            ? (second = await startGovernor(b))
            : (uncached = await startGovernor(b, shippedNodeOptions(), ["--answer-cache-size=0"]));
      const others = which === "run's" ? [] : [governor.process.pid!];
      for (const [k, [, selector, expected]] of selectors.entries()) {
        const url = `https://127.0.0.1:${g.port}/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/pod_load?labelSelector=${encodeURIComponent(selector)}`;
        const body = await fullAnswer(b, url, selector, expected);
        bodies[k] ??= body;
        bare = await startBare(b, bodies[k]);
        const tls = { tls: b.frontProxy, headers: b.proxyHeaders };
        const bareUrl = `https://127.0.0.1:${bare.port}/`;
        // Prometheus (scraping 5,000 series every 5 s) works beside the load generator, off the
        // server core, for both sides alike: the row's background, not a disturbance. The
        // other Governor is paused while either side is measured.
        const [gp, p, q] = [g.process.pid!, prometheus.pid!, bare.process.pid!];
        (which === "uncached" ? built : measured)[k]!.push(
          await pinned(b, [gp, q], [p, ...others], () =>
            interleave(
              b,
              { url, ...tls, pids: [gp], quiet: others },
              { url: bareUrl, ...tls, pids: [q], quiet: [gp, ...others] },
              1,
              [p],
              rounds,
            ),
          ),
        );
        await bare.stop();
        bare = undefined;
      }
    }
    for (const [k, [label]] of selectors.entries())
      b.rows.push(
        ...comparisonRows(
          `selector query, ${label} (${Math.round(bodies[k]!.length / 1024)} KiB), 1 conn`,
          combine(measured[k]!),
          "bare node:https, same bytes",
        ),
        ...comparisonRows(
          `selector query, ${label}, every answer built anew (--answer-cache-size=0), 1 conn`,
          combine(built[k]!),
          "bare node:https, same bytes",
        ),
      );
  } finally {
    await bare?.stop();
    await second?.stop();
    await uncached?.stop();
    await stop();
  }
}

/** The selector's whole answer from `url`, once Prometheus has scraped and Governor's pod cache holds every pod. */
async function fullAnswer(b: Bench, url: string, selector: string, expected: number): Promise<string> {
  for (let i = 0; ; i++) {
    const r = await waitFor200(url, proxied(b), "the selector query", 120_000);
    const items = (r.json as { items: unknown[] }).items.length;
    if (items === expected) return r.text;
    if (i > 600) throw new Error(`selector ${selector}: ${items} items, expected ${expected}`);
    await sleep(200);
  }
}
