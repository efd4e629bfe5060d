/** URL-decoding that cannot throw. */

/** `decodeURIComponent(s)`, or `undefined` when `s` holds a malformed `%` escape. */
export function tryDecodeURIComponent(s: string): string | undefined {
  if (!s.includes("%")) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}
