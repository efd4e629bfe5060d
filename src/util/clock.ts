/**
 * Time and timers, injected where behaviour depends on them (the work queue's delays, leader
 * election's lease arithmetic, samplers' intervals), so a unit test can run minutes of
 * backoff or lease time in a few milliseconds with test/support/fake-clock.ts and check every
 * step instead of sleeping and checking once.
 *
 * The real clock's timers share one Node timer ({@link TimerHeap}): 100,000 mappings keep
 * two timers each, and a Node `Timeout` with its per-duration list costs about ten times an
 * entry in one heap.
 */

/** See the module comment. */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /**
   * Runs `fn` once after `ms`; the returned timer cancels it. The system clock's timers
   * never keep the process alive by themselves. With `slotMs`, the system clock runs it at
   * the multiple of `slotMs` of its own time nearest to `ms` from now (never before now),
   * so timers due close together run in one turn of the event loop and what each starts
   * shares that turn's wake-up; on average still after `ms` (a fake clock may ignore it).
   */
  after(ms: number, fn: () => void, slotMs?: number): Timer;
  /**
   * As {@link after}, calling `fn(arg)`: where one function serves every timer of its kind
   * (a method taking its object), a timer costs no closure of its own.
   */
  afterWith<A>(ms: number, fn: (arg: A) => void, arg: A, slotMs?: number): Timer;
}

/** A timer {@link Clock.after} set. */
export interface Timer {
  /** Stops it from running; nothing once it has run or been cancelled. */
  cancel(): void;
}

/**
 * A timer in a {@link TimerHeap}: also its handle, so a timer costs one object (100,000
 * mappings keep two each; a cancel closure and its scope would double that).
 */
class Entry implements Timer {
  constructor(
    readonly due: number,
    readonly seq: number,
    /** Unset once run or cancelled. */
    public fn: ((arg: unknown) => void) | undefined,
    /** Unset with `fn`: a cancelled timer waiting in the heap keeps nothing alive. */
    public arg: unknown,
    private readonly heap: TimerHeap,
  ) {}

  cancel(): void {
    if (!this.fn) return;
    this.fn = this.arg = undefined;
    this.heap.cancelled();
  }
}

/** What a {@link TimerHeap} runs on (Node's timers and monotonic time; replaced in its tests). */
export interface TimerHost {
  now(): number;
  set(ms: number, fn: () => void): unknown;
  clear(handle: unknown): void;
}

const nodeHost: TimerHost = {
  now: () => performance.now(),
  set(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear: (t) => clearTimeout(t as NodeJS.Timeout),
};

/** Node clamps a longer timeout to 1 ms; a later timer is re-armed when this much has passed. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Many timers on one host timer: a binary heap by due time (then by order of scheduling),
 * on monotonic time, armed for its earliest entry. A cancelled entry is left where it is
 * and dropped when it comes up, or all at once when they are more than half the heap. A
 * timer that throws is an uncaught exception, as a Node timer's would be; those due after
 * it run on the next turn.
 */
export class TimerHeap {
  private heap: Entry[] = [];
  private seq = 0;
  private dropped = 0;
  private handle: unknown;
  private armedFor = Infinity;
  private firing = false;

  constructor(private readonly host: TimerHost = nodeHost) {}

  /** Timers waiting, cancelled ones not yet dropped included. */
  get size(): number {
    return this.heap.length;
  }

  after(ms: number, fn: () => void, slotMs?: number): Timer {
    return this.afterWith(ms, fn, undefined, slotMs);
  }

  afterWith<A>(ms: number, fn: (arg: A) => void, arg: A, slotMs?: number): Timer {
    const run = fn as (arg: unknown) => void;
    const entry = new Entry(slottedDue(this.host.now(), ms, slotMs), this.seq++, run, arg, this);
    this.push(entry);
    if (entry.due < this.armedFor) this.arm();
    return entry;
  }

  /** Called by an entry cancelled while in the heap. */
  cancelled(): void {
    if (++this.dropped > 64 && this.dropped * 2 > this.heap.length) this.compact();
  }

  private arm(): void {
    if (this.firing) return; // fire() arms once its run is over
    if (this.handle !== undefined) this.host.clear(this.handle);
    this.handle = undefined;
    this.armedFor = Infinity;
    while (this.heap.length && !this.heap[0]!.fn) {
      this.pop();
      this.dropped--;
    }
    const top = this.heap[0];
    if (!top) return;
    this.armedFor = top.due;
    const ms = Math.min(MAX_TIMEOUT_MS, Math.max(1, Math.ceil(top.due - this.host.now())));
    this.handle = this.host.set(ms, () => this.fire());
  }

  private fire(): void {
    this.handle = undefined;
    this.armedFor = Infinity;
    const now = this.host.now();
    // Timers set by those that run now wait for the next turn of the event loop, as Node's
    // do (a timer that sets itself again at 0 ms is not a hot loop).
    const setBefore = this.seq;
    let failed: { err: unknown } | undefined;
    this.firing = true;
    try {
      while (this.heap.length && this.heap[0]!.due <= now && this.heap[0]!.seq < setBefore) {
        const entry = this.pop();
        const { fn, arg } = entry;
        if (!fn) {
          this.dropped--;
          continue;
        }
        entry.fn = entry.arg = undefined; // a cancel after it ran is no cancel, and lets go of both
        fn(arg);
      }
    } catch (err) {
      failed = { err };
    } finally {
      this.firing = false;
    }
    this.arm();
    if (failed)
      process.nextTick(() => {
        throw failed.err;
      });
  }

  private compact(): void {
    this.heap = this.heap.filter((e) => e.fn);
    this.dropped = 0;
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.down(i);
    this.arm();
  }

  private push(e: Entry): void {
    const h = this.heap;
    let i = h.push(e) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(e, h[parent]!)) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = e;
  }

  private pop(): Entry {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      this.down(0);
    }
    return top;
  }

  private down(i: number): void {
    const h = this.heap;
    const e = h[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= h.length) break;
      if (child + 1 < h.length && before(h[child + 1]!, h[child]!)) child++;
      if (!before(h[child]!, e)) break;
      h[i] = h[child]!;
      i = child;
    }
    h[i] = e;
  }
}

/**
 * When a timer set at `now` for `ms` runs: `now + ms`, or with a slot the multiple of it
 * nearest to that, never before `now` (Clock.after).
 */
export function slottedDue(now: number, ms: number, slotMs?: number): number {
  const due = now + Math.max(0, ms || 0);
  if (slotMs === undefined || !Number.isFinite(slotMs) || slotMs <= 0) return due;
  return Math.max(now, Math.round(due / slotMs) * slotMs);
}

const before = (a: Entry, b: Entry) => a.due < b.due || (a.due === b.due && a.seq < b.seq);

const timers = new TimerHeap();

/** The real clock: `Date.now`, and timers on one unref'd Node timer ({@link TimerHeap}). */
export const systemClock: Clock = {
  now: () => Date.now(),
  after: (ms, fn, slotMs) => timers.after(ms, fn, slotMs),
  afterWith: (ms, fn, arg, slotMs) => timers.afterWith(ms, fn, arg, slotMs),
};
