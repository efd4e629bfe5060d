/**
 * Request coalescing: concurrent callers asking for the same key share one call.
 */

/**
 * `fn()` for `key`, unless a call for the same key is still running: then that call's
 * promise. The key is free again once the call settles (a failure is not remembered).
 */
export function coalesce<K, V>(inFlight: Map<K, Promise<V>>, key: K, fn: () => Promise<V>): Promise<V> {
  const running = inFlight.get(key);
  if (running) return running;
  const call = fn().finally(() => inFlight.delete(key));
  inFlight.set(key, call);
  return call;
}
