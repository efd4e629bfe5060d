/**
 * "One user floods, another asks": the HPA's kind of request (one connection, one request
 * at a time, as the HPA controller reads a metric) while another user keeps 16 connections
 * busy with selector queries over 50 pods, against two Governor processes — the run's,
 * with fair dispatch (ADR 0010), and one started with `--no-fair-dispatch` — interleaved
 * round by round. Both Governors share the server core (the one not measured is paused);
 * both load generators run on the load core. Rows: the second user's req/s and p50/p99,
 * and the flooder's req/s, each on ÷ off.
 */
import { KubeApiError } from "../src/k8s/client.js";
import {
  type Bench,
  type Child,
  NS,
  comparisonRows,
  interleave,
  pinned,
  pool,
  proxied,
  shippedNodeOptions,
  sleep,
  startGovernor,
  waitFor200,
} from "./harness.js";
import { startLoadGen } from "./loadgen.js";
import { showSpread, pairedRatios } from "./stats.js";

const PODS = 50;
const FLOOD_CONNECTIONS = 16;

export async function fairDispatchRows(b: Bench, governor: Child): Promise<void> {
  await pool(PODS, 16, async (i) => {
    await b.client
      .create(`/api/v1/namespaces/${NS}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: `fair-${String(i).padStart(2, "0")}`, labels: { app: "fair" } },
        spec: { containers: [{ name: "app", image: "example.invalid/fair:1" }] },
      })
      .catch((err: unknown) => {
        if (!(err instanceof KubeApiError && err.statusCode === 409)) throw err;
      });
  });
  await b.client
    .create(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: "fair-load" },
      spec: { metric: "fair_load", subject: { resource: "pods" }, source: { static: { value: "3" } } },
    })
    .catch((err: unknown) => {
      if (!(err instanceof KubeApiError && err.statusCode === 409)) throw err;
    });
  const off = await startGovernor(b, shippedNodeOptions(), ["--no-fair-dispatch"]);
  const flood = startLoadGen();
  try {
    const selectorPath = `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/fair_load?labelSelector=app%3Dfair`;
    for (const g of [governor, off]) {
      // Until each Governor's pod cache holds all 50 pods.
      for (let i = 0; ; i++) {
        const r = await waitFor200(
          `https://127.0.0.1:${g.port}${selectorPath}`,
          proxied(b),
          "the selector query",
        );
        if ((r.json as { items: unknown[] }).items.length === PODS) break;
        if (i > 300) throw new Error("the 50 pods never showed up in the selector answer");
        await sleep(200);
      }
    }
    const tls = b.frontProxy;
    const as = (user: string) => ({ "X-Remote-User": user, "X-Remote-Group": "system:masters" });
    const side = (g: Child, other: Child) => ({
      url: `https://127.0.0.1:${g.port}${selectorPath}`,
      tls,
      headers: as("system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
      pids: [g.process.pid!],
      quiet: [other.process.pid!],
      beside: (seconds: number) =>
        flood.run({
          url: `https://127.0.0.1:${g.port}${selectorPath}`,
          tls,
          headers: as("tenant-a"),
          connections: FLOOD_CONNECTIONS,
          seconds,
        }),
    });
    const [on, offPid] = [governor.process.pid!, off.process.pid!];
    const m = await pinned(b, [on, offPid], [flood.pid], () =>
      interleave(b, side(governor, off), side(off, governor), 1, [flood.pid]),
    );
    b.rows.push(
      ...comparisonRows(
        `the HPA's query while another user floods (${FLOOD_CONNECTIONS} conn, 50-pod selector), fair dispatch on`,
        m,
        "--no-fair-dispatch",
      ),
    );
    const floodOn = m.beside.a.map((r) => r.rps);
    const floodOff = m.beside.b.map((r) => r.rps);
    b.rows.push({
      name: "the flooding user meanwhile, fair dispatch on: req/s",
      figure: showSpread(floodOn),
      baseline: `${showSpread(floodOff)} (--no-fair-dispatch)`,
      ratio: showSpread(pairedRatios(floodOn, floodOff), 2),
      series: { Governor: floodOn, baseline: floodOff, ratio: pairedRatios(floodOn, floodOff) },
    });
  } finally {
    await flood.stop();
    await off.stop();
  }
}
