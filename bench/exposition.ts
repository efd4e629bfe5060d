/**
 * A real Prometheus scraping series that this process serves: what the bench's peers and
 * Governor's mappings query. The series carry `namespace="<the bench namespace>"`, as
 * Kubernetes service discovery would label them.
 */
import { createServer } from "node:http";
import { TestPrometheus } from "../test/support/prometheus.js";
import { NS } from "./harness.js";

/** A started Prometheus scraping `body()` (the exposition text) every `scrapeInterval`. */
export async function scrapedSeries(
  body: () => string,
  scrapeInterval?: string,
): Promise<{ prometheus: TestPrometheus; stop: () => Promise<void> }> {
  const target = createServer((_req, res) =>
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(body()),
  );
  await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
  const prometheus = new TestPrometheus(
    [{ address: `127.0.0.1:${(target.address() as { port: number }).port}`, labels: { namespace: NS } }],
    scrapeInterval,
  );
  const stop = async () => {
    await prometheus.stop();
    target.close();
  };
  try {
    await prometheus.start();
  } catch (err) {
    await stop();
    throw err;
  }
  return { prometheus, stop };
}

/** Exposition text of one gauge: `name{labels(i)} value(i)` for i in [0, n). */
export function gauge(
  name: string,
  n: number,
  series: (i: number) => [labels: string, value: number],
): string {
  const lines = Array.from({ length: n }, (_, i) => {
    const [labels, value] = series(i);
    return `${name}{${labels}} ${value}`;
  });
  return [`# TYPE ${name} gauge`, ...lines, ""].join("\n");
}
