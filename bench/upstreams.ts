/**
 * What routing among several upstreams costs (ADR 0024): an external metric that the second
 * of two MetricsUpstreams claims, asked through the aggregator and Governor, against the
 * same upstream asked through the aggregator directly. The upstream is a bare HTTPS server
 * answering every request with the same value list at once, so the figure is Governor's own
 * cost (authorization, routing, the forwarded request) and not an adapter's.
 */
import { METRICS_UPSTREAMS_PATH } from "../src/api/metrics-upstream.js";
import { buildLocalService } from "../src/manifests/api-service.js";
import { httpsGet } from "../test/support/https-get.js";
import { unregister } from "./aggregator.js";
import {
  type Bench,
  type Child,
  NS,
  SERVICES,
  comparisonRows,
  controlPlanePids,
  interleave,
  sleep,
  startBare,
} from "./harness.js";
import { apiServiceRouter } from "./peers.js";

const E = `/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}`;
const METRIC = "bench_upstream_queue";
/** A metric no route claims: Governor answers 404, the bare upstream 200 — which one the aggregator reaches. */
const PROBE = `${E}/nobody_claims_this`;
const UPSTREAMS = ["bench-first", "bench-second"];

export async function upstreamsRows(b: Bench, governor: Child, connections = [1, 16]): Promise<void> {
  const body = JSON.stringify({
    kind: "ExternalMetricValueList",
    apiVersion: "external.metrics.k8s.io/v1beta1",
    metadata: {},
    items: [{ metricName: METRIC, metricLabels: {}, timestamp: new Date().toISOString(), value: "42" }],
  });
  const bare = await startBare(b, body);
  const caBundle = Buffer.from(b.ca.cert).toString("base64");
  const upstream = (name: string, metrics: string[], priority: number) => ({
    apiVersion: "governor.dev/v1alpha1",
    kind: "MetricsUpstream",
    metadata: { name },
    spec: {
      service: { namespace: NS, name: SERVICES.governor, port: bare.port },
      groups: ["external.metrics.k8s.io"],
      caBundle,
      metrics,
      priority,
    },
  });
  // The Service the aggregator dials lists both ports (Governor's and the upstream's).
  const service = buildLocalService({ namespace: NS, name: SERVICES.governor, port: governor.port });
  service.spec.ports.push({ name: "upstream", port: bare.port, protocol: "TCP" });
  await b.client.createOrReplace(`/api/v1/namespaces/${NS}/services/${SERVICES.governor}`, service);
  const routeTo = apiServiceRouter(b, { group: "external.metrics.k8s.io", probe: PROBE });
  try {
    // The first claims other metrics (and is asked first: a higher priority); the second claims this one.
    await b.client.createOrReplace(
      `${METRICS_UPSTREAMS_PATH}/${UPSTREAMS[0]}`,
      upstream(UPSTREAMS[0]!, ["orders_*"], 10),
    );
    await b.client.createOrReplace(
      `${METRICS_UPSTREAMS_PATH}/${UPSTREAMS[1]}`,
      upstream(UPSTREAMS[1]!, ["bench_*"], 0),
    );
    const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
    const url = `${b.apiserver}${E}/${METRIC}`;
    const through = {
      url,
      tls: admin,
      pids: [governor.process.pid!, bare.process.pid!],
      prepare: () => routeTo(governor.port, 404),
    };
    const direct = { url, tls: admin, pids: [bare.process.pid!], prepare: () => routeTo(bare.port, 200) };
    // Governor routes once its informer has the two objects and the aggregator reaches it.
    await through.prepare();
    for (let i = 0; ; i++) {
      const r = await httpsGet(url, admin).catch(() => undefined);
      if (r?.status === 200) break;
      if (i > 300)
        throw new Error(
          `${url} through Governor: ${r?.status} ${r?.text.slice(0, 300)}\n${governor.log().slice(-3000)}`,
        );
      await sleep(200);
    }
    // Not a disturbance: kube-apiserver and etcd take part in every request of both sides.
    const path = controlPlanePids(b, ["kube-apiserver", "etcd"]);
    for (const c of connections) {
      const m = await interleave(b, through, direct, c, path);
      b.rows.push(
        ...comparisonRows(
          `the second of two MetricsUpstreams, through Governor: an external metric through the aggregator, ${c} conn`,
          m,
          "the same upstream (a bare HTTPS server) through the aggregator directly",
        ),
      );
    }
  } finally {
    await unregister(b);
    for (const name of UPSTREAMS)
      await b.client.delete(`${METRICS_UPSTREAMS_PATH}/${name}`).catch(() => false);
    await bare.stop();
  }
}
