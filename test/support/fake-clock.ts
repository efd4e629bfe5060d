/**
 * A {@link Clock} that moves only when a test says so: `advance(ms)` runs every timer due on
 * the way, in order of due time (then of scheduling), letting pending promise callbacks and
 * I/O callbacks run after each one, so code that awaits between timers proceeds as it would
 * in real time.
 */
import type { Clock } from "../../src/util/clock.js";

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

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): () => void {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.pending.push(p);
    return () => {
      this.pending = this.pending.filter((x) => x !== p);
    };
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
