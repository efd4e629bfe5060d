/**
 * Dictionaries keyed by strings a caller chose (header names, label keys, claims): without a
 * prototype, so a key such as `__proto__`, `constructor` or `toString` is an ordinary key
 * instead of reaching `Object.prototype` (a `dict["__proto__"] ??= []` on a plain object
 * pushes onto the prototype, or throws). They serialize with `JSON.stringify` like any
 * object and compare equal to plain objects in chai's `deep.equal`.
 */

/** An empty dictionary with no prototype. */
export function dict<V>(): Record<string, V> {
  return Object.create(null) as Record<string, V>;
}
