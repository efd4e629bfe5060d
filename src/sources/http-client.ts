/**
 * The HTTP client sources share: undici with keep-alive pools, a timeout per request,
 * an optional CA, and errors that say what failed (status, URL, body start) without
 * leaking credentials.
 */
import { Agent, type Dispatcher, request } from "undici";

const shared = new Agent({ keepAliveTimeout: 30_000, connections: 64 });
const withCA = new Map<string, Agent>();

/** A dispatcher trusting `ca` in addition to nothing else (or the shared one). */
export function dispatcherFor(ca?: string): Dispatcher {
  if (!ca) return shared;
  let a = withCA.get(ca);
  if (!a) {
    a = new Agent({ keepAliveTimeout: 30_000, connect: { ca } });
    withCA.set(ca, a);
  }
  return a;
}

/** GETs `url`; resolves with the body text of a 2xx answer, rejects with a readable error otherwise. */
export async function getText(
  url: string,
  opts: { headers?: Record<string, string>; signal: AbortSignal; timeoutMs: number; ca?: string },
): Promise<string> {
  let res;
  try {
    res = await request(url, {
      method: "GET",
      headers: opts.headers,
      signal: opts.signal,
      dispatcher: dispatcherFor(opts.ca),
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new Error(
      `GET ${redact(url)}: ${e.code ?? ""} ${e.message ?? String(err)}`.replace(/\s+/g, " ").trim(),
    );
  }
  const text = await res.body.text();
  if (res.statusCode < 200 || res.statusCode >= 300) {
    throw new Error(`GET ${redact(url)}: HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
  }
  return text;
}

/** The URL without credentials or query (queries can be long and carry tokens). */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return `${u.origin}${u.pathname}`;
  } catch {
    return "(invalid URL)";
  }
}
