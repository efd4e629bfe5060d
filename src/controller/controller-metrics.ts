/**
 * The controllers' health on /metrics, named after client-go's workqueue metrics and
 * controller-runtime's reconcile metrics: how many keys wait, how many were added and
 * retried, how long reconciles take and how many fail, per controller; and the
 * MetricMapping samplers' outcomes and durations.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { QueueStats } from "./work-queue.js";
import type { SamplerPool } from "../metrics/sampler-pool.js";
import type { BackendBudgets, BudgetUse } from "../metrics/backend-budget.js";

/** See the module comment. One per registry; each controller's queue is added with {@link watchQueue}. */
export class ControllerMetrics {
  /** Each controller's queue, and the totals of the queues it had before (one per leadership). */
  private readonly queues = new Map<
    string,
    { stats: QueueStats; before: { adds: number; retries: number } }
  >();
  private readonly seconds: Histogram<"controller">;
  private readonly errors: Counter<"controller">;
  private readonly samples: Counter<"outcome">;
  private readonly sampleSeconds: Histogram;

  constructor(private readonly registry: Registry) {
    const queues = this.queues;
    new Gauge({
      name: "governor_workqueue_depth",
      help: "Keys waiting in a controller's work queue.",
      labelNames: ["controller"],
      registers: [registry],
      collect() {
        for (const [controller, { stats }] of queues) this.set({ controller }, stats.depth);
      },
    });
    // The queues count for themselves; these counters show their totals at each scrape.
    for (const [name, help, field] of [
      [
        "governor_workqueue_adds_total",
        "Keys added to a controller's work queue (a key already waiting counts too).",
        "adds",
      ],
      ["governor_workqueue_retries_total", "Failed reconciles requeued with backoff.", "retries"],
    ] as const)
      new Counter({
        name,
        help,
        labelNames: ["controller"],
        registers: [registry],
        collect() {
          this.reset();
          for (const [controller, { stats, before }] of queues)
            this.inc({ controller }, before[field] + stats[field]);
        },
      });
    this.seconds = new Histogram({
      name: "governor_reconcile_duration_seconds",
      help: "Time one reconcile took, failed ones included.",
      labelNames: ["controller"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.errors = new Counter({
      name: "governor_reconcile_errors_total",
      help: "Reconciles that failed (each is retried with backoff).",
      labelNames: ["controller"],
      registers: [registry],
    });
    this.samples = new Counter({
      name: "governor_sampler_samples_total",
      help: "Samples taken by MetricMapping samplers, by outcome.",
      labelNames: ["outcome"],
      registers: [registry],
    });
    this.sampleSeconds = new Histogram({
      name: "governor_sampler_sample_duration_seconds",
      help: "Time a source took to answer one sample.",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  }

  /**
   * Exports the MetricMappings' samplers: how many sample at their interval and how many
   * idle (no reader for 2 minutes), and how many mappings they serve (fewer samplers than
   * mappings: identical requests are sent once).
   */
  watchSamplers(pool: SamplerPool): void {
    const gauge = (name: string, help: string, value: (c: ReturnType<SamplerPool["counts"]>) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(value(pool.counts()));
        },
      });
    gauge(
      "governor_samplers_active",
      "MetricMapping samplers sampling at their interval (read lately).",
      (c) => c.active,
    );
    gauge(
      "governor_samplers_idle",
      "MetricMapping samplers no reader asked for 2 minutes (sampling less often).",
      (c) => c.idle,
    );
    gauge(
      "governor_sampled_mappings",
      "MetricMappings served by those samplers (several share one when their requests are identical).",
      (c) => c.mappings,
    );
  }

  /**
   * Exports each source backend's query budget: its queries per second, the namespaces its
   * 429s slowed, attempts waiting, and counters of turns, waits and "too many requests" answers.
   */
  watchBudgets(budgets: BackendBudgets): void {
    const series: [string, string, "gauge" | "counter", (u: BudgetUse) => number][] = [
      [
        "governor_backend_budget_qps",
        "Queries per second allowed to a source backend.",
        "gauge",
        (u) => u.limitQps,
      ],
      [
        "governor_backend_slowed_namespaces",
        "Namespaces a source backend answered 429 (or 503 with Retry-After): each sends it less for now.",
        "gauge",
        (u) => u.cutNamespaces,
      ],
      [
        "governor_backend_waiting",
        "Sampler attempts waiting for their turn of a backend's budget.",
        "gauge",
        (u) => u.waiting,
      ],
      [
        "governor_backend_queries_total",
        "Turns a backend's budget gave (queries sent).",
        "counter",
        (u) => u.granted,
      ],
      [
        "governor_backend_busy_answers_total",
        "Answers of a backend that it is busy (HTTP 429, or 503 with Retry-After).",
        "counter",
        (u) => u.busyAnswers,
      ],
      [
        "governor_backend_wait_seconds_total",
        "Time sampler attempts waited for their turn of a backend's budget.",
        "counter",
        (u) => u.waitedSeconds,
      ],
    ];
    // Tenants choose addresses: past 32 backends the rest are summed as backend="other".
    const byBackend = (value: (u: BudgetUse) => number) =>
      budgets.uses().map((u) => [{ backend: u.label }, value(u)] as const);
    for (const [name, help, type, value] of series) {
      const common = { name, help, labelNames: ["backend"] as const, registers: [this.registry] };
      if (type === "gauge")
        new Gauge({
          ...common,
          collect() {
            this.reset();
            for (const [labels, v] of byBackend(value)) this.set(labels, v);
          },
        });
      else
        new Counter({
          ...common,
          collect() {
            this.reset();
            for (const [labels, v] of byBackend(value)) this.inc(labels, v);
          },
        });
    }
  }

  /**
   * Exports the queue of `controller` (its depth, adds and retries). A controller that
   * starts again with a new queue (the ScalableWorkload controller, each time this replica
   * leads) goes on counting from its old queue's totals.
   */
  watchQueue(controller: string, stats: QueueStats): void {
    const old = this.queues.get(controller);
    const before = old
      ? { adds: old.before.adds + old.stats.adds, retries: old.before.retries + old.stats.retries }
      : { adds: 0, retries: 0 };
    this.queues.set(controller, { stats, before });
    // Present at 0 before the first reconcile, so a rate() over them starts at once.
    this.seconds.zero({ controller });
    this.errors.inc({ controller }, 0);
  }

  /** Records one reconcile of `controller`. */
  readonly observeReconcile = (controller: string, seconds: number, failed: boolean): void => {
    this.seconds.observe({ controller }, seconds);
    if (failed) this.errors.inc({ controller });
  };

  /** Records one sample of a MetricMapping's source. */
  readonly observeSample = (outcome: "ok" | "error", seconds: number): void => {
    this.samples.inc({ outcome });
    this.sampleSeconds.observe(seconds);
  };
}
