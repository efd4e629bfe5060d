/**
 * Capped exponential backoff with "equal jitter": each delay is drawn between half and all
 * of min(max, initial·2^attempt), so retries of many keys spread out yet never come back
 * sooner than half the ceiling. (client-go's per-item workqueue limiter doubles the same way
 * but without jitter; its informers' watch restarts use jittered backoff, as here.)
 */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;

  /**
   * @param opts.initialMs first delay's upper bound. @default 100
   * @param opts.maxMs cap on any delay. @default 30000
   * @param opts.random source of jitter in [0, 1); injectable for tests. @default Math.random
   */
  constructor(opts: { initialMs?: number; maxMs?: number; random?: () => number } = {}) {
    this.initialMs = opts.initialMs ?? 100;
    this.maxMs = opts.maxMs ?? 30_000;
    this.random = opts.random ?? Math.random;
  }

  /** The next delay in ms: between half and all of min(max, initial·2^attempt). */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  /** Back to the first delay (after a success). */
  reset(): void {
    this.attempt = 0;
  }
}
