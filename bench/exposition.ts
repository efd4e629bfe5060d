/**
 * A real Prometheus scraping series that this process serves: what the bench's peers and
 * Governor's mappings query. The series carry `namespace="<the bench namespace>"`, as
 * Kubernetes service discovery would label them.
 */
import { type TestPrometheus, scrapedSeries as scrapedTarget } from "../test/support/prometheus.js";
import { NS } from "./harness.js";

/** A loopback target serving `body()` and a Prometheus scraping it, its series labelled with the bench's namespace. */
export function scrapedSeries(
  body: () => string,
  scrapeInterval?: string,
): Promise<{ prometheus: TestPrometheus; stop: () => Promise<void> }> {
  return scrapedTarget(body, { namespace: NS }, scrapeInterval);
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
