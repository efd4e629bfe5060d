/**
 * A {@link Clock} that moves only when a test says so: `advance(ms)` runs every timer due on
 * the way, in order of due time (then of scheduling), letting pending promise callbacks and
 * I/O callbacks run after each one, so code that awaits between timers proceeds as it would
 * in real time.
 */
import { type Clock, type Timer, slottedDue } from "../../src/util/clock.js";

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
}

/** See the module comment. */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private pending: Pending[] = [];

  /**
   * @param opts.slots whether timers given a slot run on its grid, as the system clock's do
   *   (by default a timer runs after its `ms` exactly)
   */
  constructor(
    start = Date.UTC(2026, 0, 1),
    private readonly opts: { slots?: boolean } = {},
  ) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void, slotMs?: number): Timer {
    const p: Pending = {
      at: slottedDue(this.t, ms, this.opts.slots ? slotMs : undefined),
      seq: this.seq++,
      fn,
    };
    this.pending.push(p);
    return {
      cancel: () => {
        this.pending = this.pending.filter((x) => x !== p);
      },
    };
  }

  afterWith<A>(ms: number, fn: (arg: A) => void, arg: A, slotMs?: number): Timer {
    return this.after(ms, () => fn(arg), slotMs);
  }

  /** Timers waiting to run. */
  get waiting(): number {
    return this.pending.length;
  }

  /** Lets everything that is ready run (promise callbacks, then one turn of the event loop). */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
  }

  /** Moves time forward by `ms`, running each timer that falls due, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await this.settle();
    for (;;) {
      const next = this.pending.filter((p) => p.at <= end).sort((x, y) => x.at - y.at || x.seq - y.seq)[0];
      if (!next) break;
      this.pending = this.pending.filter((p) => p !== next);
      this.t = next.at;
      next.fn();
      await this.settle();
    }
    this.t = end;
  }

  /** Advances in `stepMs` steps for `ms` in all, calling `check` after each step (invariants that must hold at every moment). */
  async walk(ms: number, stepMs: number, check: () => void): Promise<void> {
    for (let done = 0; done < ms; done += stepMs) {
      await this.advance(Math.min(stepMs, ms - done));
      check();
    }
  }
}
