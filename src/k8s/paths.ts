/**
 * Guards for apiserver paths built from CR fields. A name such as `../../shop/secrets/x`
 * put into `/api/v1/namespaces/<ns>/secrets/<name>` would be collapsed by URL
 * normalization into another namespace's object, so every path the client sends is
 * checked to be exactly what it says. (CR names are also validated as DNS-1123 names by
 * the CRD and the zod schemas; this is the last line.)
 */
import { GovernorError } from "../errors.js";

/** Something that is not a plain object name reached a path. */
export class UnsafePathError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_UNSAFE_PATH", message);
  }
}

/**
 * Throws unless `path` is an absolute path whose segments a URL parser keeps as they are
 * (no dot segments, no backslashes, no control characters, no query or fragment).
 */
export function assertPlainPath(path: string): void {
  // eslint-disable-next-line no-control-regex -- control characters are what is refused
  if (!path.startsWith("/") || /[\\?#\u0000-\u0020\u007f]/.test(path))
    throw new UnsafePathError(`refusing apiserver path ${JSON.stringify(path.slice(0, 120))}`);
  for (const s of path.slice(1).split("/"))
    if (/^(?:\.|%2e){1,2}$/i.test(s))
      throw new UnsafePathError(`refusing apiserver path ${JSON.stringify(path.slice(0, 120))}`);
}
