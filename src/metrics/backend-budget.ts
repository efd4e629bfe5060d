/**
 * A budget per backend (ADR 0018): the queries per second Governor may send one source
 * destination — a Prometheus, an HTTP endpoint, named by its origin — shared by every
 * sampler that queries it. Past the budget an attempt waits for its turn instead of
 * failing, so intervals stretch for everyone on that backend, and the turns go round the
 * namespaces that wait (oldest first within one): a namespace with a thousand mappings
 * stretches its own intervals, not another namespace's.
 *
 * A "too many requests" answer (HTTP 429, or 503 with Retry-After) slows down only the
 * namespace whose request got it — a multi-tenant Mimir limits each tenant, and a tenant's
 * own server answering 429 must not hold back the others on a shared origin: that
 * namespace is paused as long as the backend asks (at most {@link MAX_PAUSE_MS}) and its own
 * rate is halved, growing back by 2 % of the budget a second (additive increase,
 * multiplicative decrease, as TCP's congestion control). A backend that limits everyone
 * answers every namespace so, and each settles just under its share.
 */
import { boundedText } from "../util/bounded-text.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";

/** Queries per second per backend unless the admin says otherwise. */
export const DEFAULT_BACKEND_QPS = 100;
/** The smallest budget an admin may set (a token every 100 s), other than 0 for none. */
export const MIN_BACKEND_QPS = 0.01;
/** The longest a "too many requests" answer pauses a namespace, whatever its Retry-After says. */
export const MAX_PAUSE_MS = 60_000;
/** Backends named by their own label on /metrics; the others are summed as `other`. */
export const MAX_LABELLED_BACKENDS = 32;
/** The pause after a "too many requests" answer that names none. */
const DEFAULT_PAUSE_MS = 1_000;
/** A namespace's rate never falls below this fraction of the budget. */
const MIN_RATE_FRACTION = 1 / 64;
/** How fast a cut rate grows back: this fraction of the budget per second. */
const RECOVERY_PER_SECOND = 0.02;
/** The longest one timer of a budget waits (the next turn is looked for again then). */
const MAX_TIMER_MS = 60_000;

/** What a budget has done, for /metrics. */
export interface BudgetUse {
  /** The backend, or `other` past {@link MAX_LABELLED_BACKENDS} (cut to 120 characters). */
  label: string;
  /** Queries per second allowed. */
  limitQps: number;
  /** Namespaces whose rate is cut below the budget after "too many requests" answers. */
  cutNamespaces: number;
  /** Attempts waiting for their turn. */
  waiting: number;
  /** Turns given. */
  granted: number;
  /** "Too many requests" answers. */
  busyAnswers: number;
  /** Time attempts spent waiting, in all. */
  waitedSeconds: number;
}

/** A bucket of tokens refilled at `rate` per second, holding at most one second's worth. */
class Bucket {
  tokens: number;
  constructor(
    public rate: number,
    public at: number,
  ) {
    this.tokens = Math.max(1, rate);
  }

  /** Adds the tokens earned since the last look; a clock that stepped back earns nothing and loses nothing. */
  refill(now: number, from = this.at): void {
    if (now > from)
      this.tokens = Math.min(Math.max(1, this.rate), this.tokens + ((now - from) / 1000) * this.rate);
    this.at = now;
  }

  /** In how many ms it holds a token. */
  msToToken(): number {
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

interface Waiter {
  at: number;
  resolve: (waitedMs: number) => void;
  reject: (err: Error) => void;
  done: () => void;
}

/** One namespace on one backend: its waiting attempts, and its own rate after busy answers. */
class Lane {
  readonly queue: Waiter[] = [];
  /** Set while its rate is cut (below the budget). */
  cut?: Bucket;
  pausedUntil = 0;
  lastCutAt = -Infinity;

  /** Whether it holds nothing worth keeping: no waiters, no cut, no pause. */
  atRest(now: number): boolean {
    return this.queue.length === 0 && !this.cut && now >= this.pausedUntil;
  }

  /** Grows a cut rate back (the bucket refilled first), and drops the cut once it is whole again. */
  refill(now: number, limit: number): void {
    // A clock stepped back must not stretch a pause past its bound.
    this.pausedUntil = Math.min(this.pausedUntil, now + MAX_PAUSE_MS);
    if (!this.cut) return;
    const from = Math.max(this.cut.at, this.pausedUntil);
    if (now > from)
      this.cut.rate = Math.min(limit, this.cut.rate + limit * RECOVERY_PER_SECOND * ((now - from) / 1000));
    this.cut.refill(now, from);
    if (this.cut.rate >= limit) this.cut = undefined;
  }

  /** In how many ms it may take a turn as far as its own pause and rate go. */
  msToReady(now: number): number {
    return Math.max(this.pausedUntil - now, this.cut?.msToToken() ?? 0, 0);
  }
}

/** One backend's budget: see the module comment. */
export class BackendBudget {
  private readonly shared: Bucket;
  /** Namespaces by turn order (Map keeps insertion order; one served goes to the back). */
  private readonly lanes = new Map<string, Lane>();
  private waiting = 0;
  private granted = 0;
  private busyAnswers = 0;
  private waitedMs = 0;
  private timer?: Timer;
  private timerDue = 0;

  constructor(
    readonly backend: string,
    readonly limitQps: number,
    private readonly clock: Clock = systemClock,
  ) {
    if (!(limitQps >= MIN_BACKEND_QPS) || !Number.isFinite(limitQps))
      throw new Error(`a budget must be at least ${MIN_BACKEND_QPS} queries/s`);
    this.shared = new Bucket(limitQps, clock.now());
  }

  /**
   * Resolves with how long the attempt waited when it is `namespace`'s turn; rejects when
   * `signal` aborts first (the sampler stopped).
   */
  turn(namespace: string, signal: AbortSignal): Promise<number> {
    if (signal.aborted) return Promise.reject(new Error("aborted"));
    const now = this.clock.now();
    const lane = this.lane(namespace);
    const turn = new Promise<number>((resolve, reject) => {
      const onAbort = () => {
        const i = lane.queue.indexOf(w);
        if (i < 0) return;
        lane.queue.splice(i, 1);
        this.waiting--;
        this.forgetAtRest(namespace, lane, this.clock.now());
        reject(new Error("aborted"));
      };
      const w: Waiter = {
        at: now,
        resolve,
        reject,
        done: () => signal.removeEventListener("abort", onAbort),
      };
      signal.addEventListener("abort", onAbort, { once: true });
      lane.queue.push(w);
      this.waiting++;
    });
    this.pump();
    return turn;
  }

  /**
   * The backend answered a request of `namespace` "too many requests": pause that
   * namespace for `retryAfterMs` (bounded) and halve its rate — once however many of its
   * answers in flight say so within a second.
   */
  busy(namespace: string, retryAfterMs?: number): void {
    const now = this.clock.now();
    const lane = this.lane(namespace);
    lane.refill(now, this.limitQps);
    this.busyAnswers++;
    const pause = Math.min(MAX_PAUSE_MS, Math.max(0, retryAfterMs ?? DEFAULT_PAUSE_MS));
    lane.pausedUntil = Math.min(Math.max(lane.pausedUntil, now + pause), now + MAX_PAUSE_MS);
    if (now - lane.lastCutAt >= 1000 || now < lane.lastCutAt) {
      const rate = Math.max(this.limitQps * MIN_RATE_FRACTION, (lane.cut?.rate ?? this.limitQps) / 2);
      lane.cut = new Bucket(rate, now);
      lane.lastCutAt = now;
    }
    // One query at the end of the pause (as Retry-After allows), then the cut rate.
    if (lane.cut) lane.cut.tokens = 1;
    this.arm(now);
  }

  /** Queries per second `namespace` may send now: the budget, or less after busy answers. */
  rateQps(namespace: string): number {
    const lane = this.lanes.get(namespace);
    if (!lane) return this.limitQps;
    lane.refill(this.clock.now(), this.limitQps);
    return lane.cut?.rate ?? this.limitQps;
  }

  use(label: string): BudgetUse {
    const now = this.clock.now();
    let cutNamespaces = 0;
    for (const lane of this.lanes.values()) {
      lane.refill(now, this.limitQps);
      if (lane.cut) cutNamespaces++;
    }
    return {
      label,
      limitQps: this.limitQps,
      cutNamespaces,
      waiting: this.waiting,
      granted: this.granted,
      busyAnswers: this.busyAnswers,
      waitedSeconds: this.waitedMs / 1000,
    };
  }

  /** Stops its timer; waiting attempts are rejected. */
  close(): void {
    this.timer?.cancel();
    this.timer = undefined;
    for (const lane of this.lanes.values())
      for (const w of lane.queue.splice(0)) {
        w.done();
        w.reject(new Error("aborted"));
      }
    this.lanes.clear();
    this.waiting = 0;
  }

  private lane(namespace: string): Lane {
    let lane = this.lanes.get(namespace);
    if (!lane) this.lanes.set(namespace, (lane = new Lane()));
    return lane;
  }

  /** Forgets a lane that holds nothing (the lanes held are those of namespaces waiting or slowed). */
  private forgetAtRest(namespace: string, lane: Lane, now: number): void {
    if (lane.atRest(now)) this.lanes.delete(namespace);
  }

  private take(lane: Lane): void {
    this.shared.tokens--;
    if (lane.cut) lane.cut.tokens--;
    this.granted++;
  }

  /** Gives turns while tokens last, round the namespaces, skipping those paused or slowed. */
  private pump(): void {
    this.timer?.cancel();
    this.timer = undefined;
    const now = this.clock.now();
    this.shared.refill(now);
    let looked = 0;
    while (this.waiting > 0 && this.shared.tokens >= 1 && looked < this.lanes.size) {
      const [namespace, lane] = this.lanes.entries().next().value as [string, Lane];
      // To the back of the round, whether it takes a turn now or not.
      this.lanes.delete(namespace);
      this.lanes.set(namespace, lane);
      lane.refill(now, this.limitQps);
      if (lane.queue.length === 0 || lane.msToReady(now) > 0) {
        this.forgetAtRest(namespace, lane, now);
        looked++;
        continue;
      }
      looked = 0;
      const w = lane.queue.shift()!;
      this.take(lane);
      this.waiting--;
      const waited = Math.max(0, now - w.at);
      this.waitedMs += waited;
      w.done();
      w.resolve(waited);
    }
    this.arm(now);
  }

  /** The one timer of the next turn, while attempts wait (an earlier one is kept). */
  private arm(now: number): void {
    if (this.waiting === 0) return;
    let ms = Infinity;
    for (const lane of this.lanes.values()) {
      if (lane.queue.length === 0) continue;
      lane.refill(now, this.limitQps);
      ms = Math.min(ms, lane.msToReady(now));
    }
    ms = Math.min(MAX_TIMER_MS, Math.max(1, ms, this.shared.msToToken()));
    if (this.timer && this.timerDue <= now + ms) return;
    this.timer?.cancel();
    this.timerDue = now + ms;
    this.timer = this.clock.after(ms, () => {
      this.timer = undefined;
      this.pump();
    });
  }
}

/** A sampler's hold on its backend's budget. */
export interface BudgetTicket {
  readonly backend: string;
  readonly limitQps: number;
  /** Waits for the sampler's namespace's turn: resolves with the ms waited. */
  turn(signal: AbortSignal): Promise<number>;
  /** The backend answered a request of this sampler "too many requests". */
  busy(retryAfterMs?: number): void;
  /** Queries per second the sampler's namespace may send this backend now. */
  rateQps(): number;
  /** Lets go; the last ticket of a backend closes its budget. */
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

interface Entry {
  budget: BackendBudget;
  users: number;
  /** Its label on /metrics, kept while it lives (a counter must not move between series). */
  label: string;
}

/** The budgets of the backends samplers use now (one per origin, while a sampler uses it). */
export class BackendBudgets {
  private readonly budgets = new Map<string, Entry>();
  private readonly clock: Clock;
  private labelled = 0;
  /** The counters of closed budgets that were summed as `other`, so that sum never falls. */
  private readonly otherClosed = { granted: 0, busyAnswers: 0, waitedSeconds: 0 };

  constructor(private readonly opts: BackendBudgetsOptions = {}) {
    this.clock = opts.clock ?? systemClock;
  }

  /** The budget of `backend` for a sampler of `namespace`; undefined when that backend has none. */
  join(backend: string, namespace: string): BudgetTicket | undefined {
    const qps = this.opts.overrides?.get(backend) ?? this.opts.qps ?? DEFAULT_BACKEND_QPS;
    if (qps <= 0) return undefined;
    let entry = this.budgets.get(backend);
    if (!entry) {
      const named = this.labelled < MAX_LABELLED_BACKENDS;
      if (named) this.labelled++;
      entry = {
        budget: new BackendBudget(backend, qps, this.clock),
        users: 0,
        label: named ? boundedText(backend, 120) : "other",
      };
      this.budgets.set(backend, entry);
    }
    entry.users++;
    return new Ticket(this, backend, qps, namespace, entry);
  }

  /** A ticket let go: the last one of a backend closes its budget. */
  let(backend: string, held: Entry): void {
    if (--held.users > 0 || this.budgets.get(backend) !== held) return;
    this.budgets.delete(backend);
    const use = held.budget.use(held.label);
    if (held.label === "other") {
      this.otherClosed.granted += use.granted;
      this.otherClosed.busyAnswers += use.busyAnswers;
      this.otherClosed.waitedSeconds += use.waitedSeconds;
    } else this.labelled--;
    held.budget.close();
  }

  /** Each labelled backend's budget use, and the others' summed as `other` (closed ones' counters included). */
  uses(): BudgetUse[] {
    const out = new Map<string, BudgetUse>();
    for (const e of this.budgets.values()) {
      const u = e.budget.use(e.label);
      const sum = out.get(e.label);
      if (!sum) out.set(e.label, u);
      else
        for (const k of [
          "limitQps",
          "cutNamespaces",
          "waiting",
          "granted",
          "busyAnswers",
          "waitedSeconds",
        ] as const)
          sum[k] += u[k];
    }
    const closed = this.otherClosed;
    if (closed.granted > 0 || closed.busyAnswers > 0) {
      const other = out.get("other") ?? {
        label: "other",
        limitQps: 0,
        cutNamespaces: 0,
        waiting: 0,
        granted: 0,
        busyAnswers: 0,
        waitedSeconds: 0,
      };
      other.granted += closed.granted;
      other.busyAnswers += closed.busyAnswers;
      other.waitedSeconds += closed.waitedSeconds;
      out.set("other", other);
    }
    return [...out.values()];
  }
}

/** A class rather than closures: a sampler on a budgeted backend holds one. */
class Ticket implements BudgetTicket {
  private released = false;

  constructor(
    private readonly budgets: BackendBudgets,
    readonly backend: string,
    readonly limitQps: number,
    private readonly namespace: string,
    private readonly held: Entry,
  ) {}

  turn(signal: AbortSignal): Promise<number> {
    return this.held.budget.turn(this.namespace, signal);
  }

  busy(retryAfterMs?: number): void {
    this.held.budget.busy(this.namespace, retryAfterMs);
  }

  rateQps(): number {
    return this.held.budget.rateQps(this.namespace);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.budgets.let(this.backend, this.held);
  }
}
