/**
 * The HTTP client sources share: undici with keep-alive pools, a timeout per request,
 * an optional CA, the destination policy on every connection, bounded response sizes, and errors that say what failed (status, URL)
 * without leaking credentials or response bytes.
 */
import { Agent, type Dispatcher, request } from "undici";
import {
  DEFAULT_DESTINATION_POLICY,
  type DestinationPolicy,
  guardedConnector,
} from "./destination-policy.js";
import { BackendBusyError } from "./source.js";

/** Keep-alive pools per destination policy and CA (a process has one policy, and few CAs). */
const pools = new WeakMap<DestinationPolicy, Map<string, Agent>>();

/**
 * The most CA-specific pools kept per policy. CAs come from MetricMappings' Secrets, so a
 * tenant could make one per mapping; beyond this the least recently used pool is closed
 * (its requests in flight finish first).
 */
export const MAX_POOLS = 32;

/** A dispatcher that applies `policy` to every connection and trusts `ca` if given. */
export function dispatcherFor(policy: DestinationPolicy, ca?: string): Dispatcher {
  let byCA = pools.get(policy);
  if (!byCA) pools.set(policy, (byCA = new Map<string, Agent>()));
  const key = ca ?? "";
  let a = byCA.get(key);
  if (a) {
    byCA.delete(key); // most recently used last
  } else {
    a = new Agent({
      keepAliveTimeout: 30_000,
      connections: 64,
      connect: guardedConnector(policy, ca ? { ca } : {}),
    });
  }
  byCA.set(key, a);
  for (const [oldest, agent] of byCA) {
    if (byCA.size <= MAX_POOLS) break;
    byCA.delete(oldest);
    void agent.close().catch(() => {});
  }
  return a;
}

/** The most a source may answer (bytes): a larger answer is an error, never buffered whole. */
export const MAX_RESPONSE_BYTES = 10 * 1024 * 1024;

/**
 * A non-2xx answer. The message says the status only — response bytes from an address a
 * MetricMapping's author chose never reach status conditions or Events; `body` (bounded)
 * is for callers that know the format, such as Prometheus' JSON errors.
 */
export class HttpStatusError extends Error {
  constructor(
    url: string,
    readonly statusCode: number,
    readonly body: string,
  ) {
    super(`GET ${redact(url)}: HTTP ${statusCode}`);
  }
}

/**
 * The most bytes of answers being read at once, over all sources: past it an answer is an
 * error (the next sample tries again), so many large answers at once cannot exhaust memory.
 */
export const MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024;
/** The most of them one tenant's sources may be reading: the others keep the rest. */
export const MAX_BYTES_IN_FLIGHT_PER_TENANT = MAX_BYTES_IN_FLIGHT / 4;
let bytesInFlight = 0;
const tenantBytesInFlight = new Map<string, number>();

/** Options of {@link getBytes} and {@link getText}. */
export interface GetOptions {
  headers?: Record<string, string>;
  signal: AbortSignal;
  timeoutMs: number;
  ca?: string;
  maxBytes?: number;
  /** @default DEFAULT_DESTINATION_POLICY */
  policy?: DestinationPolicy;
  /** Whose bytes these are (a mapping's namespace), for {@link MAX_BYTES_IN_FLIGHT_PER_TENANT}. */
  tenant?: string;
}

/**
 * GETs `url`; resolves with the body of a 2xx answer, rejects with a readable error
 * otherwise. At most `maxBytes` are read (default {@link MAX_RESPONSE_BYTES}): a longer
 * answer is cut off and rejected; so is one that would take the bytes being read by all
 * sources past {@link MAX_BYTES_IN_FLIGHT}.
 */
export async function getBytes(url: string, opts: GetOptions): Promise<Buffer> {
  let res;
  try {
    res = await request(url, {
      method: "GET",
      headers: opts.headers,
      signal: opts.signal,
      dispatcher: dispatcherFor(opts.policy ?? DEFAULT_DESTINATION_POLICY, opts.ca),
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
  } catch (err) {
    throw new Error(`GET ${redact(url)}: ${networkErrorText(err)}`);
  }
  const ok = res.statusCode >= 200 && res.statusCode < 300;
  const retryAfterMs = retryAfter(res.headers["retry-after"]);
  if (res.statusCode === 429 || (res.statusCode === 503 && retryAfterMs !== undefined)) {
    // Read no more than a little of it (dump stops at 128 KiB), keeping the connection when it is short.
    await res.body.dump().catch(() => {});
    throw new BackendBusyError(
      `GET ${redact(url)}: HTTP ${res.statusCode}, the server is busy`,
      retryAfterMs,
    );
  }
  // An error body is only ever read in part (its start says what went wrong).
  const limit = ok ? (opts.maxBytes ?? MAX_RESPONSE_BYTES) : 4096;
  const tooLarge = () =>
    new Error(
      `GET ${redact(url)}: the response is larger than ${formatBytes(limit)}, the limit for a source`,
    );
  const declared = Number(res.headers["content-length"]);
  if (ok && declared > limit) {
    res.body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const tenant = opts.tenant ?? "";
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      bytesInFlight += chunk.length;
      const mine = (tenantBytesInFlight.get(tenant) ?? 0) + chunk.length;
      tenantBytesInFlight.set(tenant, mine);
      if (size > limit) {
        res.body.destroy();
        if (ok) throw tooLarge();
        chunks.push(chunk.subarray(0, chunk.length - (size - limit)));
        break;
      }
      if (mine > MAX_BYTES_IN_FLIGHT_PER_TENANT) {
        res.body.destroy();
        throw new Error(
          `GET ${redact(url)}: this namespace's sources are reading ${formatBytes(MAX_BYTES_IN_FLIGHT_PER_TENANT)} of answers at once, the most one namespace may; this one is dropped`,
        );
      }
      if (bytesInFlight > MAX_BYTES_IN_FLIGHT) {
        res.body.destroy();
        throw new Error(
          `GET ${redact(url)}: sources are reading ${formatBytes(MAX_BYTES_IN_FLIGHT)} of answers at once, the most Governor holds; this one is dropped`,
        );
      }
      chunks.push(chunk);
    }
  } finally {
    bytesInFlight -= size;
    const left = (tenantBytesInFlight.get(tenant) ?? 0) - size;
    if (left > 0) tenantBytesInFlight.set(tenant, left);
    else tenantBytesInFlight.delete(tenant);
  }
  const body = Buffer.concat(chunks);
  if (!ok) throw new HttpStatusError(url, res.statusCode, body.toString("utf8"));
  return body;
}

/**
 * A Retry-After header in ms: delay-seconds or an HTTP date (RFC 9110 §10.2.3); undefined
 * when absent or neither. The caller bounds it.
 */
export function retryAfter(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!value || value.length > 64) return undefined;
  if (/^\d{1,9}$/.test(value)) return Number(value) * 1000;
  if (!/^[A-Za-z]{3}/.test(value)) return undefined; // a date starts with its day's name
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** {@link getBytes}, as text. */
export async function getText(url: string, opts: GetOptions): Promise<string> {
  return (await getBytes(url, opts)).toString("utf8");
}

/**
 * A connection error as a person reads it: what failed, then the code once
 * (`getaddrinfo ENOTFOUND prom.example` → `cannot resolve prom.example (ENOTFOUND)`).
 */
export function networkErrorText(err: unknown): string {
  const e = (err ?? {}) as {
    code?: string;
    message?: string;
    hostname?: string;
    address?: string;
    port?: number;
  };
  const code = typeof e.code === "string" ? e.code : undefined;
  const message = (e.message ?? String(err)).replace(/\s+/g, " ").trim();
  const peer = e.address ? `${e.address}${e.port ? `:${e.port}` : ""}` : undefined;
  switch (code) {
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `cannot resolve ${e.hostname ?? "the host name"} (${code})`;
    case "ECONNREFUSED":
      return `connection refused${peer ? ` by ${peer}` : ""} (${code})`;
    case "ECONNRESET":
      return `connection reset by the server (${code})`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `no route to ${peer ?? "the host"} (${code})`;
    case "ETIMEDOUT":
      return `connecting${peer ? ` to ${peer}` : ""} timed out (${code})`;
  }
  if (!code || message.includes(code)) return message;
  return `${message} (${code})`;
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${Math.round(n / 1024 / 1024)} MiB` : `${Math.round(n / 1024)} KiB`;
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
