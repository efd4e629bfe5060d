/** A token bucket: up to `burst` actions at once, `perSecond` on average. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  /** @param now clock in ms; injectable for tests. @default Date.now */
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.at = now();
  }

  /** Spends a token if one is left; false means "not now". */
  take(): boolean {
    if (!this.has()) return false;
    this.tokens--;
    return true;
  }

  /** Spends `n` tokens, going into debt if fewer are left (the debt is paid before the next {@link take}). */
  spend(n: number): void {
    this.has();
    this.tokens -= n;
  }

  /** Whether a token is left, spending none. */
  has(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.perSecond);
    this.at = t;
    return this.tokens >= 1;
  }
}
