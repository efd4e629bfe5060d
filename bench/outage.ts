/**
 * "Source outage": many MetricMappings on one real Prometheus, which then goes away for
 * minutes and comes back. Figures: status writes per mapping entering the outage, while
 * it lasts, and on recovery (counted from a watch on the mappings), against one write per
 * condition that changes. A shared Prometheus going down is when the status budget
 * matters most: no mapping may write over and over while nothing changes.
 */
import type { KubernetesListObject } from "@kubernetes/client-node";
import { startInformer } from "../src/k8s/informer.js";
import { TestPrometheus } from "../test/support/prometheus.js";
import { type Bench, NS, fmt, pool, sleep } from "./harness.js";

const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;
const LABEL = "governor.dev/bench-part=outage";

interface Mapping {
  metadata: { name?: string };
  status?: { conditions?: { type: string; status: string; reason?: string }[] };
}

const condition = (m: Mapping, type: string) => m.status?.conditions?.find((c) => c.type === type);
const serving = (m: Mapping) => condition(m, "Ready")?.reason === "Serving";
const stale = (m: Mapping) => condition(m, "Ready")?.reason === "Stale";

/** What an outage of `outageS` seconds over `n` mappings sampled every `interval` looks like. */
export interface OutagePlan {
  n: number;
  outageS: number;
  interval: string;
  staleAfter: string;
}

export async function outageRows(b: Bench, plan: OutagePlan): Promise<void> {
  const prometheus = new TestPrometheus([]);
  await prometheus.start();
  const writes = new Map<string, number>();
  const latest = new Map<string, Mapping>();
  const informer = startInformer<Mapping>(
    b.client.kubeConfig,
    PATH,
    () => b.client.get<KubernetesListObject<Mapping>>(PATH, { labelSelector: LABEL }),
    {
      add: (m) => latest.set(m.metadata.name!, m),
      update: (m) => {
        latest.set(m.metadata.name!, m);
        writes.set(m.metadata.name!, (writes.get(m.metadata.name!) ?? 0) + 1);
      },
    },
    { labelSelector: LABEL },
  );
  const count = (pred: (m: Mapping) => boolean) => [...latest.values()].filter(pred).length;
  const until = async (what: string, pred: (m: Mapping) => boolean, timeoutS: number) => {
    for (const t0 = performance.now(); count(pred) < plan.n; await sleep(250))
      if (performance.now() - t0 > timeoutS * 1000)
        throw new Error(`${what}: ${count(pred)} of ${plan.n} mappings after ${timeoutS} s`);
  };
  const total = () => [...writes.values()].reduce((a, x) => a + x, 0);
  try {
    await informer.synced;
    await pool(plan.n, 32, (i) =>
      b.client.create(PATH, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name: `outage-${i}`, labels: { "governor.dev/bench-part": "outage" } },
        spec: {
          metric: `outage_${i}`,
          subject: { external: {} },
          interval: plan.interval,
          staleAfter: plan.staleAfter,
          source: { prometheus: { address: prometheus.url, query: `vector(${i % 7})` } },
        },
      }),
    );
    await until("serving before the outage", serving, 300);
    await sleep(5_000); // any write still in the queue lands before the count starts

    const w0 = total();
    await prometheus.stop();
    const staleAt = performance.now();
    await until("stale during the outage", stale, plan.outageS);
    const enteringWrites = total() - w0;
    const w1 = total();
    const rest = plan.outageS * 1000 - (performance.now() - staleAt);
    await sleep(Math.max(0, rest));
    const steadyS = Math.max(0, rest / 1000);
    const steadyWrites = total() - w1;

    const w2 = total();
    await prometheus.start();
    await until("serving after the outage", serving, 300);
    await sleep(5_000);
    const recoveryWrites = total() - w2;

    const per = (x: number) => x / plan.n;
    b.rows.push({
      name: `source outage, ${plan.n} MetricMappings on one Prometheus (interval ${plan.interval}, staleAfter ${plan.staleAfter}), ${Math.round(plan.outageS / 60)} min: status writes per mapping entering it (→ Stale) / in the ${Math.round(steadyS)} s after / on recovery`,
      figure: `${fmt(per(enteringWrites), 2)} / ${fmt(per(steadyWrites), 2)} / ${fmt(per(recoveryWrites), 2)}`,
      baseline: "2 / 0 / 1 (one per change: SourceError, Stale; back to Serving)",
      ratio: "n/a",
      series: {
        "entering per mapping": [per(enteringWrites)],
        "steady per mapping": [per(steadyWrites)],
        "recovery per mapping": [per(recoveryWrites)],
      },
    });
  } finally {
    await informer.stop();
    await prometheus.stop();
    await b.client.request("DELETE", PATH, { query: { labelSelector: LABEL }, timeoutMs: 300_000 });
  }
}
