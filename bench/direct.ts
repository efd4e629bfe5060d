/**
 * "Direct API, warm": GET of a cached object metric straight to Governor's port over mTLS
 * with the front-proxy client certificate, at 1, 16 and 64 connections, against a bare
 * node:https server returning the same bytes with the same TLS settings.
 */
import { execFileSync } from "node:child_process";
import { type Bench, type Child, NS, load, loadRows, proxied, startBare, waitFor200 } from "./harness.js";

/** The metric every request benchmark reads: a static value on the bench namespace. */
export const WARM_PATH = `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/metrics/bench_value`;

export function applyWarmMetric(b: Bench): void {
  execFileSync("kubectl", ["apply", "-n", NS, "-f", "-"], {
    env: b.env,
    input: `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: bench}\nspec: {metric: bench_value, subject: {resource: namespaces}, source: {static: {value: "42"}}}\n`,
  });
}

export async function directRows(
  b: Bench,
  governor: Child,
  connections = [1, 16, 64],
  seconds = 5,
): Promise<void> {
  const url = `https://127.0.0.1:${governor.port}${WARM_PATH}`;
  const body = (await waitFor200(url, proxied(b), "the warm metric")).text;
  const bare = await startBare(b, body);
  try {
    const opts = (c: number) => ({ connections: c, seconds, tls: b.frontProxy, headers: b.proxyHeaders });
    for (const c of connections) {
      const bareUrl = `https://127.0.0.1:${bare.port}${WARM_PATH}`;
      await load(bareUrl, { ...opts(c), seconds: 2 }); // warm-up, both
      await load(url, { ...opts(c), seconds: 2 });
      const base = await load(bareUrl, opts(c));
      const g = await load(url, opts(c));
      b.rows.push(...loadRows(`direct API, warm, ${c} conn`, g, base, "bare node:https"));
    }
  } finally {
    await bare.stop();
  }
}
