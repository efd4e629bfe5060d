/**
 * A keyed work queue in the manner of client-go's workqueue: a key is queued at most once
 * at a time, a key being processed is never handed to a second worker (a new add marks it
 * dirty and it is queued again when the first run is done), failures are retried with
 * per-key exponential backoff, and `addAfter` schedules a delayed add (earliest wins).
 */
import { Backoff } from "../util/backoff.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";

/** What a reconcile asks for after it ran. */
export interface ReconcileResult {
  /** Run again after this many ms even if nothing changes (polling, expiry). */
  requeueAfterMs?: number;
}

/** Counters exported on /metrics (src/controller/controller-metrics.ts). */
export interface QueueStats {
  /** Keys waiting now. */
  depth: number;
  /** Every `add`, including those of a key already queued. */
  adds: number;
  /** Failures requeued with backoff. */
  retries: number;
}

/** See the module comment. */
export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: Timer }>();
  private readonly backoffs = new Map<string, Backoff>();
  private readonly waiters: (() => void)[] = [];
  private stopped = false;
  readonly stats: QueueStats = { depth: 0, adds: 0, retries: 0 };

  /**
   * @param opts.initialBackoffMs first retry delay. @default 100
   * @param opts.maxBackoffMs retry delay cap. @default 60000
   * @param opts.clock time and timers (a fake in tests). @default systemClock
   * @param opts.random jitter source of the backoff. @default Math.random
   */
  constructor(
    private readonly opts: {
      initialBackoffMs?: number;
      maxBackoffMs?: number;
      clock?: Clock;
      random?: () => number;
    } = {},
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  private readonly clock: Clock;

  /** What the timer of {@link addAfter} runs: one function for every key (a key waits in each requeue). */
  private readonly due = (key: string): void => {
    this.timers.delete(key);
    this.add(key);
  };

  /** Queues `key` now (no-op if already queued; re-queued after the current run if processing). */
  add(key: string): void {
    if (this.stopped) return;
    this.stats.adds++;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.stats.depth = this.queue.length;
    this.waiters.shift()?.();
  }

  /** Queues `key` after `ms`; an earlier pending schedule for the key is kept. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) return this.add(key);
    const at = this.clock.now() + ms;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    existing?.timer.cancel();
    this.timers.set(key, { at, timer: this.clock.afterWith(ms, this.due, key) });
  }

  /** Queues `key` after its next backoff delay (for failures). */
  addRateLimited(key: string): number {
    let b = this.backoffs.get(key);
    if (!b) {
      b = new Backoff({
        initialMs: this.opts.initialBackoffMs ?? 100,
        maxMs: this.opts.maxBackoffMs ?? 60_000,
        ...(this.opts.random ? { random: this.opts.random } : {}),
      });
      this.backoffs.set(key, b);
    }
    const delay = b.next();
    this.stats.retries++;
    this.addAfter(key, delay);
    return delay;
  }

  /** Whether `key` failed and has not succeeded since (it is waiting out a backoff). */
  failing(key: string): boolean {
    return this.backoffs.has(key);
  }

  /** Forgets a key's failures (after a success). */
  forget(key: string): void {
    this.backoffs.delete(key);
  }

  /** The next key, waiting if none; `undefined` once shut down. Call {@link done} after. */
  async get(): Promise<string | undefined> {
    while (this.queue.length === 0) {
      if (this.stopped) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.stopped) return undefined;
    const key = this.queue.shift()!;
    this.stats.depth = this.queue.length;
    this.queued.delete(key);
    this.processing.add(key);
    return key;
  }

  /** Marks `key` processed; re-queues it if it was added meanwhile. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  /** Number of keys waiting. */
  get length(): number {
    return this.queue.length;
  }

  /** Whether no key waits and none is being processed (keys due later do not count). */
  get idle(): boolean {
    return this.queue.length === 0 && this.processing.size === 0;
  }

  /** Stops handing out keys and drops those waiting; pending timers are cancelled. */
  shutDown(): void {
    this.stopped = true;
    this.queue.length = 0;
    this.queued.clear();
    this.stats.depth = 0;
    for (const { timer } of this.timers.values()) timer.cancel();
    this.timers.clear();
    for (const w of this.waiters.splice(0)) w();
  }
}

/** How long workers reconcile back to back before they let the event loop take a turn. */
const TURN_MS = 10;

/**
 * Runs `reconcile` for queued keys with `concurrency` workers until the queue shuts down.
 * A throw requeues the key with backoff; success forgets its failures and honours
 * `requeueAfterMs`. `onError` sees every failure.
 */
export async function runWorkers(
  queue: WorkQueue,
  concurrency: number,
  reconcile: (key: string) => Promise<ReconcileResult | void>,
  onError: (key: string, err: unknown, retryInMs: number) => void,
): Promise<void> {
  // Reconciles that need no I/O (a restart over thousands of mappings whose status is
  // already right) would otherwise run back to back in one job: nothing else on the event
  // loop would get a turn, and what the job makes could not be collected until it ended.
  let turnStarted = performance.now();
  const worker = async () => {
    for (;;) {
      if (performance.now() - turnStarted > TURN_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        turnStarted = performance.now();
      }
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const result = await reconcile(key);
        queue.forget(key);
        if (result?.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        onError(key, err, queue.addRateLimited(key));
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
