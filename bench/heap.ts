/**
 * The Node flags the bench runs Governor with for a number of MetricMappings (kept apart
 * from harness.ts, which starts processes, so that a unit test can import it).
 */

/** Mappings the shipped heap cap is sized for (10,000: 292 MB RSS under a 384 MB cap). */
const MAPPINGS_PER_SHIPPED_HEAP = 10_000;

/**
 * The shipped `NODE_OPTIONS` for `n` mappings: above 10,000, the heap cap raised in
 * proportion (×2 up to 20,000, ×5 at 50,000), as docs/troubleshooting.md tells an admin to raise the
 * memory limit and `--max-old-space-size` together (the shipped cap is sized for
 * 10,000).
 */
export function heapFor(n: number, shipped: string[]): string[] {
  const times = Math.ceil(n / MAPPINGS_PER_SHIPPED_HEAP);
  if (times <= 1) return shipped;
  return shipped.map((arg) => {
    const m = /^--max-old-space-size=(\d+)$/.exec(arg);
    return m ? `--max-old-space-size=${Number(m[1]) * times}` : arg;
  });
}
