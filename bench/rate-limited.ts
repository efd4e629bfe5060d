/**
 * "Against KEDA" behind a backend that limits: 50 queues checked every second — 50
 * ScaledObjects (KEDA's operator polls each one's Prometheus trigger every `pollingInterval`,
 * 1 s) and 50 MetricMappings (interval 1 s) — each side through its own proxy in front of
 * the same real Prometheus, answering 429 past 10 queries/s as a Mimir tenant limit or an
 * API gateway would. Each side asks 50 queries/s. Measured over a minute, while both are
 * under way: what share of the queries each side sent was refused, and how many a second
 * were answered (Governor's budget per backend, ADR 0018).
 */
import { RateLimitingProxy } from "../test/support/rate-limiting-proxy.js";
import { gauge, scrapedSeries } from "./exposition.js";
import { type Bench, NS, fmt, pool, ratio, sleep } from "./harness.js";
import { startBenchKeda } from "./keda.js";
import { createQueue, removeQueues } from "./keda-idle.js";
import type { KedaProcesses } from "../test/support/keda.js";

const QUEUES = 50;
const LIMIT = 10;
const queueName = (i: number) => `limited-${String(i).padStart(2, "0")}`;

export async function rateLimitedRows(b: Bench): Promise<void> {
  const exposition = gauge("bench_limited_messages", QUEUES, (i) => [`queue="${queueName(i)}"`, i]);
  const { prometheus, stop } = await scrapedSeries(() => exposition, "15s");
  const proxies = {
    governor: new RateLimitingProxy(prometheus.url, LIMIT),
    peer: new RateLimitingProxy(prometheus.url, LIMIT),
  };
  const address = { governor: await proxies.governor.start(), peer: await proxies.peer.start() };
  let keda: KedaProcesses | undefined;
  try {
    keda = await startBenchKeda(b, "keda-limited");
    const name = `KEDA ${keda.version}`;
    await pool(QUEUES, 16, (i) =>
      createQueue(b, "limited", {
        name: queueName(i),
        metric: `bench_limited_${String(i).padStart(2, "0")}`,
        query: `sum(bench_limited_messages{namespace="${NS}",queue="${queueName(i)}"})`,
        kedaAddress: address.peer,
        governorAddress: address.governor,
        everySeconds: 1,
      }),
    );
    // Both under way (KEDA's operator takes its ScaledObjects on at its client's pace), and
    // within the two minutes before Governor's unread mappings would sample less often.
    await sleep(30_000);
    const counts = () => ({
      governor: { sent: proxies.governor.total(), refused: proxies.governor.refused },
      peer: { sent: proxies.peer.total(), refused: proxies.peer.refused },
    });
    const before = counts();
    const t0 = performance.now();
    await sleep(60_000);
    const seconds = (performance.now() - t0) / 1000;
    const after = counts();
    const side = (s: "governor" | "peer") => {
      const answered = after[s].sent - before[s].sent;
      const refused = after[s].refused - before[s].refused;
      return {
        answeredPerS: answered / seconds,
        refusedPct: (refused / Math.max(1, answered + refused)) * 100,
      };
    };
    const [g, p] = [side("governor"), side("peer")];
    const what = `${QUEUES} queues checked every second (${QUEUES} queries/s asked) against a Prometheus that answers 429 past ${LIMIT} queries/s, over ${Math.round(seconds)} s`;
    b.rows.push(
      {
        name: `vs ${name}: ${what}: queries refused, % of those sent`,
        figure: fmt(g.refusedPct, 1),
        baseline: `${fmt(p.refusedPct, 1)} (${name})`,
        ratio: ratio(g.refusedPct, p.refusedPct),
        series: { Governor: [g.refusedPct], baseline: [p.refusedPct] },
      },
      {
        name: `vs ${name}: ${what}: queries answered per second`,
        figure: fmt(g.answeredPerS, 1),
        baseline: `${fmt(p.answeredPerS, 1)} (${name})`,
        ratio: ratio(g.answeredPerS, p.answeredPerS),
        series: { Governor: [g.answeredPerS], baseline: [p.answeredPerS] },
      },
    );
  } finally {
    await removeQueues(b, "limited", keda);
    proxies.governor.stop();
    proxies.peer.stop();
    await stop();
  }
}
