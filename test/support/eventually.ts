/**
 * Polls `fn` until it returns without throwing (and, if it returns a value, that value),
 * or the timeout passes; then throws the last error with how long it waited. Use instead
 * of sleeps: tests finish as soon as the condition holds.
 */
export async function eventually<T>(
  fn: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 100;
  const started = Date.now();
  let lastError: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      lastError = err;
    }
    if (Date.now() - started >= timeoutMs) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  throw new Error(`${opts.what ?? "condition"} not met within ${timeoutMs} ms: ${reason}`, {
    cause: lastError,
  });
}
