/**
 * One sampler per MetricMapping: polls its source every `interval` (with ±10 % jitter so
 * thousands of mappings do not fire together), one query in flight at a time however many
 * requests wait for it, each bounded by a timeout; keeps the last good value with its
 * sample time and the last error. Readers never trigger a query except while no value
 * was ever sampled, and then at most one per interval ({@link Sampler.sampleIfDue}).
 *
 * Demand-aware: a sampler no reader has asked for {@link IDLE_AFTER_MS} is idle, and is
 * sampled every {@link idleIntervalMs} instead of every interval (when that is longer) —
 * often enough that a value read at any moment is younger than `staleAfter`. The first
 * read of an idle sampler is answered at once and brings the interval back (sampling at
 * once if the last attempt is older than an interval).
 */
import {
  BackendBusyError,
  type MetricSource,
  type SampleRequest,
  type SampleValue,
} from "../sources/source.js";
import type { BudgetTicket } from "./backend-budget.js";
import { boundedText } from "../util/bounded-text.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";

/** The last good sample. */
export interface GoodSample {
  value: SampleValue;
  /** When the sample was taken, in milliseconds since the epoch. */
  atMs: number;
}

/** What a sampler knows now. */
export interface SamplerState {
  last?: GoodSample;
  /** The error of the latest attempt, if it failed. */
  error?: string;
  /** Consecutive failures. */
  failures: number;
  /** When the latest attempt finished, in milliseconds since the epoch. */
  attemptedAtMs?: number;
  /** Set while the backend's budget holds attempts back long enough to stretch the interval. */
  throttled?: Throttle;
}

/** How the backend's budget held the latest attempt back. */
export interface Throttle {
  backend: string;
  /** How long it waited for its turns, "too many requests" pauses included, in ms. */
  waitedMs: number;
  /** The backend's budget and the rate used now (lower after "too many requests"). */
  limitQps: number;
  rateQps: number;
  /** Whether the backend answered "too many requests" during the attempt. */
  busy: boolean;
}

/** Options of {@link Sampler}. */
export interface SamplerOptions {
  intervalMs: number;
  /** @default min(interval, 10 s) */
  timeoutMs?: number;
  /** Builds the request (e.g. the current pods). */
  request: (signal: AbortSignal) => Omit<SampleRequest, "signal">;
  /** Called after every attempt (success or failure); more listeners: {@link Sampler.listen}. */
  onSample?: (state: SamplerState) => void;
  /** Counters for /metrics. */
  observe?: (outcome: "ok" | "error", seconds: number) => void;
  /**
   * Sampling while no reader asks (see the module comment): the mapping's `staleAfter`.
   * Unset: always every interval.
   */
  staleAfterMs?: number;
  /**
   * The query budget of the source's backend: each request waits for its turn
   * (src/metrics/backend-budget.ts); released when the sampler stops.
   */
  budget?: BudgetTicket;
  /** @default Math.random */
  random?: () => number;
  /** The grid scheduled attempts start on, in ms, at most a tenth of the interval; 0 for none. @default SAMPLE_SLOT_MS */
  slotMs?: number;
  /** Time and timers (a fake in tests). @default systemClock */
  clock?: Clock;
}

/** Requests of one attempt a backend may answer "too many requests" before the attempt fails. */
export const MAX_BUSY_ANSWERS = 3;

/**
 * Scheduled attempts start on a grid of this many ms (of the clock's own time): samplers due
 * within one slot start together, so their requests are written and their answers read in
 * a few turns of the event loop instead of one wake-up each, which cuts the CPU of a sample
 * when many run. An attempt starts within half a slot of its jittered interval; the slot is
 * at most a tenth of the interval, and a reader waking an idle sampler is not held to it.
 */
export const SAMPLE_SLOT_MS = 100;

/** The least time between two attempts a push wakes ({@link Sampler.wake}). */
export const WAKE_GAP_MS = 100;

/** How long a sampler goes without a reader before it is idle: longer than any HPA's sync period in practice. */
export const IDLE_AFTER_MS = 120_000;

/**
 * The interval of an idle sampler: 80 % of what `staleAfter` leaves after the longest
 * attempt, or the interval if that is longer. With ±10 % jitter and an attempt that takes
 * its whole timeout, the value stays younger than `staleAfter` (0.88·(S−T) + T < S); the
 * defaults (15 s, staleAfter 2 m, a 10 s cap on an attempt) give 88 s.
 */
export function idleIntervalMs(intervalMs: number, staleAfterMs: number, timeoutMs: number): number {
  return Math.max(intervalMs, Math.floor(0.8 * (staleAfterMs - timeoutMs)));
}

/** See the module comment. */
export class Sampler {
  // Every field from the start: one shape, its properties inside the object (each sampler has one).
  readonly state: SamplerState = {
    last: undefined,
    error: undefined,
    failures: 0,
    attemptedAtMs: undefined,
    throttled: undefined,
  };
  private inFlight?: Promise<void>;
  private timer?: Timer;
  /** A push's wake-up ({@link wake}), while one waits. */
  private wakeTimer?: Timer = undefined;
  /** How long the last attempt took (its request, not a wait for the budget), in ms. */
  private lastAttemptMs = 0;
  private stopped = false;
  /** The attempt's controller while one runs (made per attempt: an idle sampler holds none). */
  private current?: AbortController;
  private cleanups?: (() => Promise<void> | void)[];

  private readonly clock: Clock;

  constructor(
    readonly source: MetricSource,
    private readonly opts: SamplerOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  /** When a reader last asked; a new sampler counts as read when it starts. */
  private readAt = 0;
  private started = false;
  /**
   * Replaced, never changed in place: exactly as long as it needs to be (a pushed-to array
   * keeps room for 17), and safe to loop over while a listener (un)listens.
   */
  private listeners: readonly ((state: SamplerState) => void)[] = [];

  /** Samples at once, then every interval. A second call does nothing. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.readAt = this.clock.now();
    void this.sampleNow().finally(() => this.schedule());
  }

  /** Calls `fn` after every attempt from now on, until the returned function (or {@link unlisten}) is called. */
  listen(fn: (state: SamplerState) => void): () => void {
    this.listeners = this.listeners.concat([fn]);
    let listening = true;
    return () => {
      if (listening) this.unlisten(fn);
      listening = false;
    };
  }

  /** Stops one {@link listen} of `fn`. */
  unlisten(fn: (state: SamplerState) => void): void {
    const i = this.listeners.indexOf(fn);
    if (i >= 0) this.listeners = this.listeners.filter((_, j) => j !== i);
  }

  /** Whether no reader has asked for {@link IDLE_AFTER_MS} (and the mapping allows slowing down). */
  idle(now = this.clock.now()): boolean {
    return this.started && this.opts.staleAfterMs !== undefined && now - this.readAt > IDLE_AFTER_MS;
  }

  /**
   * A reader asked for the value (an HPA, explain, a workload's activation). An idle
   * sampler goes back to its interval: the next attempt is one interval after the last,
   * at once if that has passed.
   */
  markRead(now = this.clock.now()): void {
    const wasIdle = this.idle(now);
    this.readAt = now;
    if (!wasIdle || this.stopped || this.inFlight) return;
    const last = this.state.attemptedAtMs ?? now;
    this.arm(Math.max(0, last + this.opts.intervalMs - now), false);
  }

  /** Takes a sample now, or joins the one in flight. */
  sampleNow(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.inFlight ??= this.attempt().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  /**
   * For readers that find no value yet: joins the attempt in flight, or starts one unless
   * the last attempt finished less than an interval ago (its error stands until the next
   * scheduled attempt). However many requests arrive, the source is asked at most once
   * per interval.
   */
  sampleIfDue(now = this.clock.now()): Promise<void> {
    if (this.inFlight) return this.inFlight;
    const last = this.state.attemptedAtMs;
    if (last !== undefined && now - last < this.opts.intervalMs) return Promise.resolve();
    return this.sampleNow();
  }

  /**
   * New data is there (a push): samples at once, or `minGapMs` after the last attempt —
   * or ten times as long as the last attempt took, if that is longer, so pushes keep a
   * costly sample to a tenth of the time — besides the schedule. However many pushes
   * arrive, at most one attempt per gap.
   */
  wake(minGapMs = WAKE_GAP_MS, now = this.clock.now()): void {
    if (this.stopped || this.wakeTimer) return;
    const since = now - (this.state.attemptedAtMs ?? -Infinity);
    const gap = Math.max(minGapMs, 10 * this.lastAttemptMs);
    this.wakeTimer = this.clock.afterWith(Math.max(0, gap - since), Sampler.woken, this);
  }

  private static woken(this: void, s: Sampler): void {
    s.wakeTimer = undefined;
    void s.sampleNow();
  }

  /** Runs `fn` when the sampler stops (for resources that live as long as it). */
  onStop(fn: () => Promise<void> | void): void {
    (this.cleanups ??= []).push(fn);
  }

  /** Stops polling and aborts an in-flight query. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.wakeTimer?.cancel();
    this.current?.abort();
    this.opts.budget?.release();
    for (const fn of this.cleanups?.splice(0) ?? []) await fn();
    await this.source.close?.();
  }

  /** The timeout of one attempt. */
  private get timeoutMs(): number {
    return this.opts.timeoutMs ?? Math.min(this.opts.intervalMs, 10_000);
  }

  /**
   * The next attempt after the one that just ended: an interval later, or an idle interval
   * if nobody reads — but not after a failure, which would let the last good value pass
   * `staleAfter` before the next try.
   */
  private schedule(): void {
    if (this.stopped) return;
    const jitter = 0.9 + 0.2 * (this.opts.random ?? Math.random)();
    // A wait for the backend's turn counts as part of the attempt: the value must still be
    // younger than staleAfter when read.
    const intervalMs =
      this.idle() && !this.state.error
        ? idleIntervalMs(
            this.opts.intervalMs,
            this.opts.staleAfterMs!,
            this.timeoutMs + (this.state.throttled?.waitedMs ?? 0),
          )
        : this.opts.intervalMs;
    this.arm(intervalMs * jitter, true);
  }

  /**
   * The one timer of the next attempt, in `ms` (any earlier one is cancelled); a scheduled
   * one on the sample slot's grid, a reader's wake-up at its own moment.
   */
  private arm(ms: number, slotted: boolean): void {
    this.timer?.cancel();
    this.timer = this.clock.afterWith(ms, Sampler.due, this, slotted ? this.slotMs : undefined);
  }

  /** What the timer of {@link arm} runs: one function for every sampler. */
  private static due(this: void, s: Sampler): void {
    s.timer = undefined;
    void s.sampleNow().finally(() => s.schedule());
  }

  /**
   * The grid scheduled attempts start on: the configured slot, but at most a tenth of the
   * interval, so rounding (±half a slot) stays inside the jitter and the margin
   * idleIntervalMs keeps before staleAfter (at least 0.15 of an interval).
   */
  private get slotMs(): number {
    return Math.min(this.opts.slotMs ?? SAMPLE_SLOT_MS, this.opts.intervalMs / 10);
  }

  private async attempt(): Promise<void> {
    const budget = this.opts.budget;
    let waitedMs = 0;
    let busy = 0;
    let started = process.hrtime.bigint();
    try {
      let value: SampleValue | undefined;
      while (value === undefined) {
        // One controller for a turn and its request: stop() aborts it, and so does the
        // request's timeout. No AbortSignal.any: its WeakRefs keep every signal made in
        // one job alive until the job ends, and a start-up reconciles thousands in one.
        // stop() aborts the controller of the pass it finds; one that lands between two
        // passes (after a busy answer) is seen here.
        if (this.stopped) throw new Error("aborted");
        const request = (this.current = new AbortController());
        if (budget) waitedMs += await budget.turn(request.signal);
        if (this.stopped) throw new Error("aborted");
        started = process.hrtime.bigint();
        try {
          value = await this.request(request);
        } catch (err) {
          // A busy backend: pause it, slow it down, and wait for another turn.
          if (!(err instanceof BackendBusyError) || !budget || ++busy >= MAX_BUSY_ANSWERS) throw err;
          budget.busy(err.retryAfterMs);
        }
      }
      if (this.stopped) return;
      const now = this.clock.now();
      this.state.last = {
        value,
        atMs: value.observedAtMs === undefined ? now : Math.min(now, value.observedAtMs),
      };
      this.state.error = undefined;
      this.state.failures = 0;
      this.opts.observe?.("ok", Number(process.hrtime.bigint() - started) / 1e9);
    } catch (err) {
      if (this.stopped) return;
      if (err instanceof BackendBusyError) budget?.busy(err.retryAfterMs);
      // A source's words (an answer's error text, an address a tenant chose) are cut here,
      // once, before status, Events, logs and 503 answers repeat them.
      this.state.error = boundedText(err instanceof Error ? err.message : String(err));
      this.state.failures++;
      this.opts.observe?.("error", Number(process.hrtime.bigint() - started) / 1e9);
    } finally {
      this.current = undefined;
    }
    if (budget) this.noteThrottle(budget, waitedMs, busy > 0);
    this.state.attemptedAtMs = this.clock.now();
    this.lastAttemptMs = Number(process.hrtime.bigint() - started) / 1e6;
    this.opts.onSample?.(this.state);
    for (const fn of this.listeners) fn(this.state);
  }

  /**
   * Whether the budget stretched this attempt enough to say so: a wait of a tenth of the
   * interval (at least a second) or a "too many requests" answer sets `throttled`; less
   * than half that clears it (so a wait near the line does not flip it every sample).
   */
  private noteThrottle(budget: BudgetTicket, waitedMs: number, busy: boolean): void {
    const line = Math.max(1000, this.opts.intervalMs / 10);
    if (!busy && waitedMs < (this.state.throttled ? line / 2 : line)) this.state.throttled = undefined;
    else
      this.state.throttled = {
        backend: budget.backend,
        waitedMs,
        limitQps: budget.limitQps,
        rateQps: budget.rateQps(),
        busy,
      };
  }

  /** One request to the source, bounded by the attempt's timeout, which aborts `controller`. */
  private async request(controller: AbortController): Promise<SampleValue> {
    const timeoutMs = this.timeoutMs;
    const { signal } = controller;
    if (signal.aborted) throw new Error("aborted");
    const timeout = this.clock.after(timeoutMs, () =>
      controller.abort(new DOMException(`timed out after ${timeoutMs} ms`, "TimeoutError")),
    );
    try {
      return finiteOnly(
        await raceAbort(this.source.sample({ ...this.opts.request(signal), signal }), signal, timeoutMs),
      );
    } finally {
      timeout.cancel();
    }
  }
}

/**
 * Only finite numbers are values: a scalar NaN or ±Inf (a Prometheus division by zero, a
 * `NaN` sample in an exposition) is a source error, and such an object of a per-object
 * answer has no value (it is left out, as if the source had not returned it) — a value
 * the HPA could never read must not count as a good sample.
 */
export function finiteOnly(value: SampleValue): SampleValue {
  if (value.kind === "scalar") {
    if (!Number.isFinite(value.value))
      throw new Error(`the source returned ${value.value}, not a finite number`);
    return value;
  }
  for (const v of value.values.values()) {
    if (Number.isFinite(v)) continue;
    return {
      kind: "objects",
      values: new Map([...value.values].filter(([, x]) => Number.isFinite(x))),
      ...(value.observedAtMs !== undefined ? { observedAtMs: value.observedAtMs } : {}),
    };
  }
  return value;
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () =>
      reject(
        new Error(
          signal.reason instanceof Error && signal.reason.name === "TimeoutError"
            ? `timed out after ${timeoutMs} ms`
            : "aborted",
        ),
      );
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
