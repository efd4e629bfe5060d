/**
 * A budget per backend (ADR 0018): the queries per second Governor may send one source
 * destination — a Prometheus, an HTTP endpoint, named by its origin — shared by every
 * sampler that queries it. Past the budget an attempt waits for its turn instead of
 * failing, so intervals stretch for everyone on that backend, and the turns go round the
 * namespaces that wait (oldest first within one): a namespace with a thousand mappings
 * stretches its own intervals, not another namespace's.
 *
 * A backend that answers "too many requests" (HTTP 429, or 503 with Retry-After) is paused
 * as long as it asks (at most {@link MAX_PAUSE_MS}) and the rate Governor uses for it is
 * halved; the rate grows back by 2 % of the budget a second (additive increase,
 * multiplicative decrease, as TCP's congestion control), so a budget set higher than the
 * backend allows settles just under what it allows.
 */
import { type Clock, systemClock } from "../util/clock.js";

/** Queries per second per backend unless the admin says otherwise. */
export const DEFAULT_BACKEND_QPS = 100;
/** The longest a "too many requests" answer pauses a backend, whatever its Retry-After says. */
export const MAX_PAUSE_MS = 60_000;
/** The pause after a "too many requests" answer that names none. */
const DEFAULT_PAUSE_MS = 1_000;
/** The rate never falls below this fraction of the budget. */
const MIN_RATE_FRACTION = 1 / 64;
/** How fast the rate grows back after a cut: this fraction of the budget per second. */
const RECOVERY_PER_SECOND = 0.02;

/** What a budget has done, for /metrics and status. */
export interface BudgetUse {
  backend: string;
  /** Queries per second allowed. */
  limitQps: number;
  /** Queries per second used now (below the limit after "too many requests" answers). */
  rateQps: number;
  /** Attempts waiting for their turn. */
  waiting: number;
  /** Turns given. */
  granted: number;
  /** "Too many requests" answers. */
  busyAnswers: number;
  /** Time attempts spent waiting, in all. */
  waitedSeconds: number;
}

interface Waiter {
  at: number;
  resolve: (waitedMs: number) => void;
  reject: (err: Error) => void;
  done: () => void;
}

/** One backend's budget: see the module comment. */
export class BackendBudget {
  private rate: number;
  private tokens: number;
  private at: number;
  private pausedUntil = 0;
  private lastCutAt = -Infinity;
  /** Waiting attempts by namespace, in the order of their turns. */
  private readonly queues = new Map<string, Waiter[]>();
  private waiting = 0;
  private granted = 0;
  private busyAnswers = 0;
  private waitedMs = 0;
  private cancelTimer?: () => void;

  constructor(
    readonly backend: string,
    readonly limitQps: number,
    private readonly clock: Clock = systemClock,
  ) {
    if (!(limitQps > 0) || !Number.isFinite(limitQps)) throw new Error(`a budget must be above 0 queries/s`);
    this.rate = limitQps;
    this.tokens = Math.max(1, limitQps);
    this.at = clock.now();
  }

  /**
   * Resolves with how long the attempt waited when it is `namespace`'s turn; rejects when
   * `signal` aborts first (the sampler stopped).
   */
  turn(namespace: string, signal: AbortSignal): Promise<number> {
    if (signal.aborted) return Promise.reject(new Error("aborted"));
    const now = this.clock.now();
    this.refill(now);
    if (this.waiting === 0 && this.tokens >= 1 && now >= this.pausedUntil) {
      this.tokens--;
      this.granted++;
      return Promise.resolve(0);
    }
    return new Promise<number>((resolve, reject) => {
      const onAbort = () => {
        const q = this.queues.get(namespace);
        const i = q?.indexOf(w) ?? -1;
        if (i < 0) return;
        q!.splice(i, 1);
        if (q!.length === 0) this.queues.delete(namespace);
        this.waiting--;
        reject(new Error("aborted"));
      };
      const w: Waiter = {
        at: now,
        resolve,
        reject,
        done: () => signal.removeEventListener("abort", onAbort),
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const q = this.queues.get(namespace);
      if (q) q.push(w);
      else this.queues.set(namespace, [w]);
      this.waiting++;
      this.arm(now);
    });
  }

  /**
   * The backend answered "too many requests": pause it for `retryAfterMs` (bounded) and
   * halve the rate — once however many answers in flight say so within a second.
   */
  busy(retryAfterMs?: number): void {
    const now = this.clock.now();
    this.refill(now);
    this.busyAnswers++;
    const pause = Math.min(MAX_PAUSE_MS, Math.max(0, retryAfterMs ?? DEFAULT_PAUSE_MS));
    this.pausedUntil = Math.max(this.pausedUntil, now + pause);
    if (now - this.lastCutAt >= 1000) {
      this.rate = Math.max(this.limitQps * MIN_RATE_FRACTION, this.rate / 2);
      this.lastCutAt = now;
    }
    // One query at the end of the pause (as Retry-After allows), then the new rate.
    this.tokens = 1;
  }

  /** Queries per second used now. */
  rateQps(): number {
    this.refill(this.clock.now());
    return this.rate;
  }

  use(): BudgetUse {
    return {
      backend: this.backend,
      limitQps: this.limitQps,
      rateQps: this.rateQps(),
      waiting: this.waiting,
      granted: this.granted,
      busyAnswers: this.busyAnswers,
      waitedSeconds: this.waitedMs / 1000,
    };
  }

  /** Stops its timer; waiting attempts are rejected. */
  close(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    for (const q of this.queues.values())
      for (const w of q) {
        w.done();
        w.reject(new Error("aborted"));
      }
    this.queues.clear();
    this.waiting = 0;
  }

  /** Adds the tokens earned since the last look (none while paused), and grows a cut rate back. */
  private refill(now: number): void {
    const from = Math.max(this.at, this.pausedUntil);
    if (now > from) {
      const seconds = (now - from) / 1000;
      this.tokens = Math.min(Math.max(1, this.rate), this.tokens + seconds * this.rate);
      if (this.rate < this.limitQps)
        this.rate = Math.min(this.limitQps, this.rate + this.limitQps * RECOVERY_PER_SECOND * seconds);
    }
    this.at = Math.max(this.at, now);
  }

  /** Gives turns while tokens last, round the namespaces. */
  private pump(): void {
    this.cancelTimer = undefined;
    const now = this.clock.now();
    this.refill(now);
    while (this.waiting > 0 && this.tokens >= 1 && now >= this.pausedUntil) {
      const [namespace, q] = this.queues.entries().next().value as [string, Waiter[]];
      const w = q.shift()!;
      // The namespace goes to the back of the round (Map keeps insertion order).
      this.queues.delete(namespace);
      if (q.length > 0) this.queues.set(namespace, q);
      this.waiting--;
      this.tokens--;
      this.granted++;
      this.waitedMs += now - w.at;
      w.done();
      w.resolve(now - w.at);
    }
    this.arm(now);
  }

  /** The one timer of the next turn, while attempts wait. */
  private arm(now: number): void {
    if (this.waiting === 0 || this.cancelTimer) return;
    const ms =
      now < this.pausedUntil ? this.pausedUntil - now : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
    this.cancelTimer = this.clock.after(Math.max(1, ms), () => this.pump());
  }
}

/** A sampler's hold on its backend's budget. */
export interface BudgetTicket {
  readonly backend: string;
  readonly limitQps: number;
  /** Waits for the sampler's namespace's turn: resolves with the ms waited. */
  turn(signal: AbortSignal): Promise<number>;
  /** The backend answered "too many requests". */
  busy(retryAfterMs?: number): void;
  /** Queries per second used now. */
  rateQps(): number;
  /** Lets go; the last ticket of an idle backend closes its budget. */
  release(): void;
}

/** Options of {@link BackendBudgets}. */
export interface BackendBudgetsOptions {
  /** Queries per second per backend; 0: no budget. @default DEFAULT_BACKEND_QPS */
  qps?: number;
  /** Budgets of named backends (origins, e.g. `http://prometheus.monitoring:9090`); 0: none. */
  overrides?: ReadonlyMap<string, number>;
  /** @default systemClock */
  clock?: Clock;
}

/** The budgets of the backends samplers use now (one per origin, while a sampler uses it). */
export class BackendBudgets {
  private readonly budgets = new Map<string, { budget: BackendBudget; users: number }>();
  private readonly clock: Clock;

  constructor(private readonly opts: BackendBudgetsOptions = {}) {
    this.clock = opts.clock ?? systemClock;
  }

  /** The budget of `backend` for a sampler of `namespace`; undefined when that backend has none. */
  join(backend: string, namespace: string): BudgetTicket | undefined {
    const qps = this.opts.overrides?.get(backend) ?? this.opts.qps ?? DEFAULT_BACKEND_QPS;
    if (qps <= 0) return undefined;
    let entry = this.budgets.get(backend);
    if (!entry)
      this.budgets.set(backend, (entry = { budget: new BackendBudget(backend, qps, this.clock), users: 0 }));
    entry.users++;
    const held = entry;
    let released = false;
    return {
      backend,
      limitQps: qps,
      turn: (signal) => held.budget.turn(namespace, signal),
      busy: (ms) => held.budget.busy(ms),
      rateQps: () => held.budget.rateQps(),
      release: () => {
        if (released) return;
        released = true;
        if (--held.users > 0 || this.budgets.get(backend) !== held) return;
        this.budgets.delete(backend);
        held.budget.close();
      },
    };
  }

  /** Each backend's budget use. */
  uses(): BudgetUse[] {
    return [...this.budgets.values()].map((e) => e.budget.use());
  }
}
