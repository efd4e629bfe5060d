import { expect } from "chai";
import { Registry } from "prom-client";
import { ControllerMetrics } from "./controller-metrics.js";
import { WorkQueue } from "./work-queue.js";
import { FakeClock } from "../../test/support/fake-clock.js";
import { Sampler } from "../metrics/sampler.js";
import { SamplerPool } from "../metrics/sampler-pool.js";

/** The value of one exported series, from the text exposition. */
async function value(registry: Registry, series: string): Promise<number | undefined> {
  const line = (await registry.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("controller metrics", () => {
  it("exports each controller's queue depth, adds and retries as the queue counts them, at every scrape", async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    const queue = new WorkQueue();
    m.watchQueue("metricmapping", queue.stats);
    queue.add("shop/a");
    queue.add("shop/a"); // already waiting: counted, not queued twice
    queue.add("shop/b");
    queue.addRateLimited("shop/c");
    const series = (name: string) => `${name}{controller="metricmapping"}`;
    for (let scrape = 0; scrape < 2; scrape++) {
      expect(await value(registry, series("governor_workqueue_depth"))).to.equal(2);
      expect(await value(registry, series("governor_workqueue_adds_total"))).to.equal(3);
      expect(await value(registry, series("governor_workqueue_retries_total"))).to.equal(1);
    }
    queue.shutDown();
  });

  it("a controller that stops shows no keys waiting, and started again (a new leadership) goes on counting", async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    const series = (name: string) => `${name}{controller="scalableworkload"}`;
    const first = new WorkQueue();
    m.watchQueue("scalableworkload", first.stats);
    first.add("shop/a");
    first.add("shop/b");
    first.addRateLimited("shop/c");
    first.shutDown(); // leadership lost: nothing waiting will run here
    expect(await value(registry, series("governor_workqueue_depth"))).to.equal(0);
    const second = new WorkQueue();
    m.watchQueue("scalableworkload", second.stats);
    second.add("shop/a");
    second.addRateLimited("shop/d");
    expect(await value(registry, series("governor_workqueue_depth"))).to.equal(1);
    expect(await value(registry, series("governor_workqueue_adds_total"))).to.equal(3);
    expect(await value(registry, series("governor_workqueue_retries_total"))).to.equal(2);
    second.shutDown();
  });

  it("shows how many samplers sample at their interval, how many idle, and how many mappings they serve", async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    const pool = new SamplerPool();
    m.watchSamplers(pool);
    const clock = new FakeClock();
    const sampler = () =>
      new Sampler(
        { needsObjects: false, sample: async () => ({ kind: "scalar", value: 1 }) },
        { intervalMs: 15_000, staleAfterMs: 120_000, request: () => ({ namespace: "shop" }), clock },
      );
    const leases = [
      pool.acquire("queue", sampler, () => {}),
      pool.acquire("queue", sampler, () => {}), // the same request: shares the first's sampler
      pool.acquire("orders", sampler, () => {}),
    ];
    for (const l of leases) l.sampler.start();
    await clock.advance(130_000);
    leases[2]!.sampler.markRead(); // an HPA reads orders; nobody reads queue
    expect(await value(registry, "governor_samplers_active")).to.equal(1);
    expect(await value(registry, "governor_samplers_idle")).to.equal(1);
    expect(await value(registry, "governor_sampled_mappings")).to.equal(3);
    for (const l of leases) await l.release();
    expect(await value(registry, "governor_sampled_mappings")).to.equal(0);
  });

  it("counts reconciles and failures per controller, and shows both controllers at 0 before any", async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    m.watchQueue("metricmapping", new WorkQueue().stats);
    m.watchQueue("scalableworkload", new WorkQueue().stats);
    expect(await value(registry, 'governor_reconcile_errors_total{controller="scalableworkload"}')).to.equal(
      0,
    );
    m.observeReconcile("metricmapping", 0.02, false);
    m.observeReconcile("metricmapping", 1.5, true);
    expect(
      await value(registry, 'governor_reconcile_duration_seconds_count{controller="metricmapping"}'),
    ).to.equal(2);
    expect(
      await value(
        registry,
        'governor_reconcile_duration_seconds_bucket{le="0.025",controller="metricmapping"}',
      ),
    ).to.equal(1);
    expect(await value(registry, 'governor_reconcile_errors_total{controller="metricmapping"}')).to.equal(1);
    expect(await value(registry, 'governor_reconcile_errors_total{controller="scalableworkload"}')).to.equal(
      0,
    );
  });
});
