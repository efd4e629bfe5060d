/**
 * "Apply to servable": create a MetricMapping → listed in discovery and its GET answers
 * 200, over 50 mappings, against the apiserver's own create round-trip. "Coalescing": 100
 * concurrent clients asking a metric whose source is slow cause exactly one source query.
 */
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { httpsGet } from "../test/support/https-get.js";
import { type Bench, type Child, NS, fmt, proxied, ratio, sleep } from "./harness.js";
import { percentile } from "./stats.js";

export async function applyToServableRows(b: Bench, governor: Child, n = 50): Promise<void> {
  const servable: number[] = [];
  const creates: number[] = [];
  const api = `https://127.0.0.1:${governor.port}/apis/custom.metrics.k8s.io/v1beta2`;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await b.client.create(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: `apply-${i}` },
      spec: {
        metric: `m_${i}`,
        subject: { resource: "namespaces" },
        source: { static: { value: String(i) } },
      },
    });
    creates.push(performance.now() - t0);
    for (;;) {
      const d = await httpsGet(api, proxied(b));
      const listed = ((d.json as { resources?: { name: string }[] }).resources ?? []).some(
        (r) => r.name === `namespaces/m_${i}`,
      );
      const v = listed ? await httpsGet(`${api}/namespaces/${NS}/metrics/m_${i}`, proxied(b)) : undefined;
      if (v?.status === 200) break;
      if (performance.now() - t0 > 10_000) throw new Error(`mapping apply-${i} not servable after 10 s`);
      await sleep(2);
    }
    servable.push(performance.now() - t0);
  }
  const [s50, s99, c50, c99] = [
    percentile(servable, 50),
    percentile(servable, 99),
    percentile(creates, 50),
    percentile(creates, 99),
  ];
  b.rows.push({
    name: `apply → servable, ${n} MetricMappings: p50 / p99 ms`,
    figure: `${fmt(s50)} / ${fmt(s99)}`,
    baseline: `${fmt(c50)} / ${fmt(c99)} (apiserver create round-trip)`,
    ratio: `${ratio(s50, c50)} / ${ratio(s99, c99)}`,
    series: { Governor: servable, baseline: creates },
  });
}

export async function coalescingRows(b: Bench, governor: Child, clients = 100): Promise<void> {
  let hits = 0;
  const source = createServer((_req, res) => {
    hits++;
    setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end('{"v": 7}'), 200);
  });
  await new Promise<void>((r) => source.listen(0, "127.0.0.1", () => r()));
  try {
    const sourcePort = (source.address() as { port: number }).port;
    execFileSync("kubectl", ["apply", "-n", NS, "-f", "-"], {
      env: b.env,
      input: `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: coalesce}\nspec: {metric: coalesce, subject: {external: {}}, interval: 10m, staleAfter: 30m, source: {http: {url: "http://127.0.0.1:${sourcePort}/", jsonPath: "$.v"}}}\n`,
    });
    const url = `https://127.0.0.1:${governor.port}/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}/coalesce`;
    // Ask as soon as the mapping is served: the first requests find no sample yet.
    let answers: { status: number }[] = [];
    for (let i = 0; i < 100 && !answers.some((a) => a.status === 200); i++) {
      answers = await Promise.all(Array.from({ length: clients }, () => httpsGet(url, proxied(b))));
      if (!answers.some((a) => a.status === 200)) await sleep(50);
    }
    b.rows.push({
      name: `coalescing: source queries for ${clients} concurrent clients in one interval`,
      figure: String(hits),
      baseline: "1 (one query per interval)",
      ratio: ratio(hits, 1),
      series: { Governor: [hits] },
    });
  } finally {
    source.close();
  }
}
