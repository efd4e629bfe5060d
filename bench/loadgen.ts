/**
 * The bench's load generator, as its own process so it can be pinned to a core apart
 * from the server under test (`taskset`, see ADR 0005). It reads one JSON `LoadRequest`
 * per line on stdin, runs autocannon with it, and writes one JSON `LoadResult` per line
 * on stdout. Latencies are kept per response as autocannon times them (fractions of a
 * millisecond; its own histogram keeps whole milliseconds only, so p50 read 0).
 */
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import { percentile } from "./stats.js";

/** One load: `connections` keep-alive connections for `seconds`, over mTLS. */
export interface LoadRequest {
  url: string;
  connections: number;
  seconds: number;
  tls: { cert: string; key: string };
  headers?: Record<string, string>;
}

/** What one load measured: 2xx answers per second and their latency percentiles in ms. */
export interface LoadResult {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  answers: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

async function run(r: LoadRequest): Promise<LoadResult> {
  const latencies: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: r.url,
        connections: r.connections,
        duration: r.seconds,
        headers: r.headers ?? {},
        tlsOptions: { cert: r.tls.cert, key: r.tls.key },
      },
      (err, res) => (err ? reject(err as Error) : resolve(res)),
    );
    instance.on("response", (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
  });
  return {
    rps: latencies.length / (result.duration || r.seconds),
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    answers: latencies.length,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const result = await run(JSON.parse(line) as LoadRequest).catch((err: unknown) => ({
    error: String(err),
  }));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
