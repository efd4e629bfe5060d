/**
 * Time and timers, injected where behaviour depends on them (the work queue's delays, leader
 * election's lease arithmetic, samplers' intervals), so a unit test can run minutes of
 * backoff or lease time in a few milliseconds with test/support/fake-clock.ts and check every
 * step instead of sleeping and checking once.
 */

/** See the module comment. */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /**
   * Runs `fn` once after `ms`; the returned function cancels it. The system clock's timers
   * never keep the process alive by themselves.
   */
  after(ms: number, fn: () => void): () => void;
}

/** The real clock: `Date.now` and unref'd `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
