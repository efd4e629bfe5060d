/**
 * "Direct API, warm": GET of a cached object metric straight to Governor's port over mTLS
 * with the front-proxy client certificate, at 1, 16 and 64 connections, against a bare
 * node:https server returning the same bytes with the same TLS settings; and the run's
 * noise check, the same bare server measured against itself.
 */
import { execFileSync } from "node:child_process";
import {
  type Bench,
  type Child,
  NS,
  type Row,
  comparisonRows,
  interleave,
  pinned,
  proxied,
  startBare,
  waitFor200,
} from "./harness.js";
import { baselineDrift, showSpread, spread } from "./stats.js";

/** The metric every request benchmark reads: a static value on the bench namespace. */
export const WARM_PATH = `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/metrics/bench_value`;

/** How far the noise check's median ratio may stray from 1 before the run is called noisy. */
export const NOISE_MARGIN = 0.1;

export function applyWarmMetric(b: Bench): void {
  execFileSync("kubectl", ["apply", "-n", NS, "-f", "-"], {
    env: b.env,
    input: `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: bench}\nspec: {metric: bench_value, subject: {resource: namespaces}, source: {static: {value: "42"}}}\n`,
  });
}

const contender = (b: Bench, url: string, server: Child) => ({
  url,
  tls: b.frontProxy,
  headers: b.proxyHeaders,
  pids: [server.process.pid!],
});

export async function directRows(b: Bench, governor: Child, connections = [1, 16, 64]): Promise<void> {
  const url = `https://127.0.0.1:${governor.port}${WARM_PATH}`;
  const body = (await waitFor200(url, proxied(b), "the warm metric")).text;
  const bare = await startBare(b, body);
  try {
    await pinned(b, [governor.process.pid!, bare.process.pid!], [], async () => {
      for (const c of connections) {
        const bareUrl = `https://127.0.0.1:${bare.port}${WARM_PATH}`;
        const quiet = [governor.process.pid!];
        const m = await interleave(
          b,
          contender(b, url, governor),
          { ...contender(b, bareUrl, bare), quiet },
          c,
        );
        b.rows.push(...comparisonRows(`direct API, warm, ${c} conn`, m, "bare node:https"));
      }
    });
  } finally {
    await bare.stop();
  }
}

/**
 * The baseline check, after the direct-API rows: their bare server at 16 connections
 * against the noise check's (a body of about the same size, the same connections, minutes
 * earlier). It says how far the machine moved between the two; it does not judge the
 * ratios. A slowdown of the whole machine slows both sides of every round alike (in the
 * 15:15Z run of 2026-12-01 the bare server ran −33 % and Governor about as much below
 * its usual, and the ratio read 0.46 as in the 12:44Z run); work that lands on one side
 * only is what each round's outside-work check catches (bench/disturbance.ts).
 */
export function baselineCheck(rows: Row[]): string {
  const noise = rows.find((r) => r.name.startsWith("noise check"))?.series?.baseline;
  const direct = rows.find((r) => r.name === "direct API, warm, 16 conn: req/s")?.series?.baseline;
  if (!noise || !direct) return "baseline check not run";
  const drift = baselineDrift(noise, direct);
  const text = `${drift >= 0 ? "+" : "−"}${Math.round(Math.abs(drift) * 100)} %`;
  return `baseline check: the direct-API rows' bare server ran ${text} from the noise check's at 16 conn${Math.abs(drift) > NOISE_MARGIN ? " (the machine's speed moved between them; both sides of a round move alike)" : ""}`;
}

/**
 * The noise check: one bare server measured against itself, interleaved as every row
 * is, at 16 connections. Its ratio should be 1; the returned line says how far it was
 * and whether that is beyond `NOISE_MARGIN` (then the run's figures are suspect).
 */
export async function noiseCheck(b: Bench): Promise<string> {
  const bare = await startBare(b, '{"kind":"MetricValueList"}');
  try {
    const target = contender(b, `https://127.0.0.1:${bare.port}/`, bare);
    const m = await pinned(b, [bare.process.pid!], [], () => interleave(b, target, target, 16));
    const [row] = comparisonRows("noise check: the same bare server twice, 16 conn", m, "itself");
    b.rows.push(row!);
    const r = spread(row!.series!.ratio!);
    const noisy = Math.abs(r.median - 1) > NOISE_MARGIN;
    return `noise check ${noisy ? "FAILED" : "passed"}: the same bare server against itself ${showSpread(row!.series!.ratio!, 2)}× (margin ±${NOISE_MARGIN * 100} %)${noisy ? " — this run's ratios are suspect" : ""}`;
  } finally {
    await bare.stop();
  }
}
