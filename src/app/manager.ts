/**
 * The manager of `governor run` (controller-runtime's `Manager`): one object owns what the
 * parts share — the informer cache, the metrics registry, leader election — and the list
 * of {@link Runnable}s. It starts them in the order added and stops them in reverse; one
 * that needs leadership is started when this replica becomes the leader and stopped when
 * it stops leading (before the Lease is released, so two leaders never write at once); one
 * whose start fails is started again, backing off, while this replica leads.
 */
import type { Logger } from "pino";
import { Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { LeaderElector, type LeaderElectionOptions } from "../controller/leader-election.js";
import type { KubeApi } from "../k8s/client.js";
import { InformerCache } from "../k8s/informer-cache.js";
import { Backoff } from "../util/backoff.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";
import type { Runnable } from "../util/runnable.js";

/** Options of {@link Manager}. */
export interface ManagerOptions {
  client: KubeApi;
  logger: Logger;
  /** The Lease to elect a leader with; `false`: this process always leads. */
  leaderElection: Omit<LeaderElectionOptions, "onStartedLeading" | "onStoppedLeading"> | false;
  /** Leader election's clock, and the retries of leader runnables that failed to start. @default the system clock */
  clock?: Clock;
}

/** See the module comment. */
export class Manager {
  /** The shared informers. */
  readonly cache: InformerCache;
  /** The one metrics registry (`/metrics`), with the process's default metrics. */
  readonly registry = new Registry();
  private readonly runnables: Runnable[] = [];
  private readonly elector?: LeaderElector;
  private readonly log: Logger;
  private leading = false;
  /** What the last leadership change said (the chain may not have caught up yet). */
  private wanted = false;
  /** Leader runnables started, in order. */
  private led: Runnable[] = [];
  /** Other runnables started, in order. */
  private started: Runnable[] = [];
  /** Leadership changes, one after another. */
  private transitions: Promise<void> = Promise.resolve();
  private stopping = false;
  private readonly clock: Clock;
  /** Between tries of leader runnables whose start failed: 1 s, doubling to 30 s. */
  private readonly startBackoff = new Backoff({ initialMs: 1000, maxMs: 30_000 });
  /** Cancels the next try of leader runnables whose start failed. */
  private retry?: Timer;

  constructor(private readonly opts: ManagerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger.child({ component: "manager" });
    this.cache = new InformerCache(opts.client, opts.logger);
    collectDefaultMetrics({ register: this.registry, prefix: "governor_" });
    const leading = () => this.leading;
    new Gauge({
      name: "governor_leader",
      help: "1 while this replica is the leader: the one that writes status, Deployments, HPAs and registrations.",
      registers: [this.registry],
      collect() {
        this.set(leading() ? 1 : 0);
      },
    });
    if (opts.leaderElection)
      this.elector = new LeaderElector(
        opts.client,
        {
          ...opts.leaderElection,
          onStartedLeading: () => this.transition(true),
          onStoppedLeading: () => this.transition(false),
        },
        opts.logger,
        opts.clock,
      );
  }

  /** Adds a runnable; runnables start in the order added. Returns the runnable. */
  add<R extends Runnable>(runnable: R): R {
    this.runnables.push(runnable);
    return runnable;
  }

  /** Whether this replica leads now. */
  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Starts every runnable that needs no leadership, in order (each awaited), then takes
   * part in the election (or, without one, leads at once and starts the rest).
   */
  async start(): Promise<void> {
    for (const r of this.runnables) {
      if (r.needsLeader) continue;
      await r.start();
      this.started.push(r);
    }
    if (this.elector) this.elector.start();
    else {
      this.transition(true);
      await this.transitions;
    }
  }

  /** Stops: leader runnables (all at once), then the Lease, the others (reverse order), the informers. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.transition(false);
    await this.transitions;
    await this.elector?.stop();
    for (const r of this.started.reverse()) await this.stopOne(r);
    this.started = [];
    await this.cache.stop();
  }

  private transition(lead: boolean): void {
    // Losing leadership counts at once (what is starting stops starting); gaining it once
    // the previous change is done, and only if it still holds then.
    this.wanted = lead;
    if (!lead) {
      this.leading = false;
      this.retry?.cancel();
      this.retry = undefined;
    }
    this.transitions = this.transitions.then(async () => {
      if (lead) {
        if (!this.wanted || this.leading || this.stopping || this.led.length) return;
        this.leading = true;
        this.log.info("leading: starting what only the leader runs");
        this.startBackoff.reset();
        await this.startLed(this.runnables.filter((r) => r.needsLeader));
      } else {
        // All told to stop at once, last started first, so none writes while another drains.
        const led = this.led.reverse();
        this.led = [];
        await Promise.all(led.map((r) => this.stopOne(r)));
      }
    });
  }

  /** Starts leader runnables in order while this replica leads; those that fail are tried again later. */
  private async startLed(runnables: readonly Runnable[]): Promise<void> {
    const failed: Runnable[] = [];
    for (const r of runnables) {
      if (!this.wanted || !this.leading || this.stopping) return; // the next change stops what started
      try {
        await r.start();
        this.led.push(r);
      } catch (err) {
        failed.push(r);
        this.log.error({ runnable: r.name, err: String(err) }, "could not start");
        // What it started before failing must not run unled (and is started again whole).
        await this.stopOne(r);
      }
    }
    if (failed.length === 0) return;
    const delayMs = this.startBackoff.next();
    this.log.warn({ runnables: failed.map((r) => r.name), retryInMs: delayMs }, "starting again later");
    this.retry = this.clock.after(delayMs, () => {
      this.retry = undefined;
      this.transitions = this.transitions.then(() => this.startLed(failed));
    });
  }

  private async stopOne(r: Runnable): Promise<void> {
    try {
      await r.stop();
    } catch (err) {
      this.log.warn({ runnable: r.name, err: String(err) }, "stopping failed");
    }
  }
}
