/**
 * "Many mappings": 10,000 MetricMappings (static values, each its own metric) exist
 * before Governor starts; then a fresh Governor process loads them. Figures: the time
 * until discovery lists all of them and until every status says Ready (against the
 * apiserver's own time to create them, measured just before), Governor's RSS once settled
 * (against the same Governor's RSS with a handful of mappings, earlier in the run), and
 * discovery p99 (against a bare server returning the same bytes), CPU and status writes
 * once steady; then the RSS of a Governor on plain node, without the shipped V8 flags.
 */
import type { KubernetesListObject } from "@kubernetes/client-node";
import { startInformer } from "../src/k8s/informer.js";
import { httpsGet } from "../src/testing/https-get.js";
import {
  type Bench,
  NS,
  fmt,
  load,
  loadRows,
  pool,
  proxied,
  ratio,
  rssMB,
  cpuSeconds,
  sleep,
  startBare,
  startGovernor,
} from "./harness.js";

const MAPPINGS = 10_000;
const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

interface Mapping {
  metadata?: { name?: string; generation?: number };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string }[] };
}

const isReady = (m: Mapping) =>
  m.status?.observedGeneration === m.metadata?.generation &&
  (m.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

/** `idleRssMB`: Governor's RSS earlier in the run, with a handful of mappings. */
export async function scaleRows(b: Bench, idleRssMB: number, n = MAPPINGS, seconds = 5): Promise<void> {
  const t0 = performance.now();
  await pool(n, 32, (i) =>
    b.client.create(PATH, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: `many-${i}` },
      spec: { metric: `many_${i}`, subject: { resource: "pods" }, source: { static: { value: String(i) } } },
    }),
  );
  const createMs = performance.now() - t0;

  // Watch statuses from here (cheaper than listing 10,000 objects over and over).
  const ready = new Set<string>();
  let updates = 0;
  const track = (m: Mapping) => {
    const name = m.metadata?.name ?? "";
    if (name.startsWith("many-") && isReady(m)) ready.add(name);
  };
  const informer = startInformer<Mapping & { metadata: object }>(
    b.client.kubeConfig,
    PATH,
    () => b.client.get<KubernetesListObject<Mapping & { metadata: object }>>(PATH),
    {
      add: track,
      update: (m) => {
        updates++;
        track(m);
      },
    },
  );
  await informer.synced;

  const started = performance.now();
  const governor = await startGovernor(b);
  try {
    const discovery = `https://127.0.0.1:${governor.port}/apis/custom.metrics.k8s.io/v1beta2`;
    let servedMs = NaN;
    let readyMs = NaN;
    let body = "";
    while (Number.isNaN(readyMs)) {
      if (Number.isNaN(servedMs)) {
        const r = await httpsGet(discovery, proxied(b));
        const listed = ((r.json as { resources?: { name: string }[] }).resources ?? []).filter((x) =>
          x.name.startsWith("pods/many_"),
        ).length;
        if (listed === n) {
          servedMs = performance.now() - started;
          body = r.text;
        }
      }
      if (ready.size === n) readyMs = performance.now() - started;
      if (performance.now() - started > 900_000)
        throw new Error(`after 15 min: ${ready.size} of ${n} mappings Ready\n${governor.log()}`);
      await sleep(250);
    }
    // Steady state: nothing changes, so nothing should be written; CPU is sampling alone.
    await sleep(10_000);
    const [cpu0, updates0] = [cpuSeconds(governor.process.pid!), updates];
    await sleep(20_000);
    const steadyCpu = ((cpuSeconds(governor.process.pid!) - cpu0) / 20) * 100;
    const steadyWrites = (updates - updates0) / 20;
    const rss = rssMB(governor.process.pid!);
    const bare = await startBare(b, body);
    try {
      const opts = { connections: 1, seconds, tls: b.frontProxy, headers: b.proxyHeaders };
      await load(`https://127.0.0.1:${bare.port}/`, { ...opts, seconds: 1 }); // warm-up, both
      await load(discovery, { ...opts, seconds: 1 });
      const baseline = await load(`https://127.0.0.1:${bare.port}/`, opts);
      const g = await load(discovery, opts);
      b.rows.push(
        {
          name: `${n} MetricMappings: loaded → all listed in discovery / all Ready, s`,
          figure: `${fmt(servedMs / 1000)} / ${fmt(readyMs / 1000)}`,
          baseline: `${fmt(createMs / 1000)} (apiserver: create them, 32 in flight)`,
          ratio: `${ratio(servedMs, createMs)} / ${ratio(readyMs, createMs)}`,
        },
        {
          name: `${n} MetricMappings, steady (values unchanged): Governor CPU % of a core / status writes per s`,
          figure: `${fmt(steadyCpu)} / ${fmt(steadyWrites)}`,
          baseline: `0 writes/s needed; ${fmt(n / 15, 0)} samples/s (15 s interval)`,
          ratio: "n/a",
        },
        {
          name: `${n} MetricMappings, steady: Governor RSS (shipped NODE_OPTIONS), MB`,
          figure: fmt(rss, 0),
          baseline: `${fmt(idleRssMB, 0)} (same flags, a handful of mappings)`,
          ratio: ratio(rss, idleRssMB),
        },
        ...loadRows(
          `${n} MetricMappings: discovery (${Math.round(body.length / 1024)} KiB), 1 conn`,
          g,
          baseline,
          "bare node:https, same bytes",
        ),
      );
    } finally {
      await bare.stop();
    }
  } finally {
    await informer.stop();
    await governor.stop();
  }

  // The same 10,000 on plain node (no NODE_OPTIONS), measured the same way.
  const plain = await startGovernor(b, []);
  try {
    const discovery = `https://127.0.0.1:${plain.port}/apis/custom.metrics.k8s.io/v1beta2`;
    for (let listed = 0; listed < n; await sleep(250)) {
      const r = await httpsGet(discovery, proxied(b));
      listed = ((r.json as { resources?: unknown[] }).resources ?? []).length;
    }
    await sleep(30_000);
    const rss = rssMB(plain.process.pid!);
    b.rows.push({
      name: `${n} MetricMappings, steady: Governor RSS on plain node (no NODE_OPTIONS), MB`,
      figure: fmt(rss, 0),
      baseline: `${fmt(idleRssMB, 0)} (shipped flags, a handful of mappings)`,
      ratio: ratio(rss, idleRssMB),
    });
  } finally {
    await plain.stop();
  }
}
