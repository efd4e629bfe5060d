/**
 * Reads keys of Secrets that sources reference, with least privilege: only the named
 * Secret, only in the mapping's own namespace, by GET (never list or watch), cached for
 * 30 s so rotated credentials are picked up. Values are never logged or put in errors.
 * A name that is not a DNS-1123 object name (e.g. `../../shop/secrets/token`) is refused
 * before any request, whatever the CRD in the cluster let through.
 *
 * Whoever may create a MetricMapping is not thereby allowed to read the namespace's
 * Secrets, and Governor sends what it reads to a URL the mapping's author chooses. So a
 * Secret is a source credential only when it says so: it carries the label
 * {@link SOURCE_CREDENTIAL_LABEL}`=true`, set by someone who may write it (the GET that
 * reads it returns its labels: no other permission is needed). Only the keys a mapping
 * names are handed out, each at most {@link MAX_CREDENTIAL_BYTES}.
 */
import type { LRUCache } from "lru-cache";
import type { KubeApi } from "../k8s/client.js";
import { KubeApiError } from "../k8s/client.js";
import { DNS_SUBDOMAIN_PATTERN, SOURCE_CREDENTIAL_LABEL } from "../api/common.js";
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import { SourceConfigError } from "./source.js";

/** How long a Secret read is reused (rotated credentials are picked up after this). */
const TTL_MS = 30_000;
/**
 * The most the cache of Secrets holds, by estimated bytes: mapping specs name the Secrets,
 * so their number is the tenants' choice, and one Secret may hold 1 MiB.
 */
export const MAX_SECRET_CACHE_BYTES = 8 * 1024 * 1024;
/** The longest credential value handed to a source, in bytes (a token, a header, a CA bundle). */
export const MAX_CREDENTIAL_BYTES = 16 * 1024;
/** What one cache entry costs besides its strings (the Map, the entry, the timestamp). */
const ENTRY_OVERHEAD_BYTES = 128;

/** Reads keys of source-credential Secrets. */
export interface SecretReader {
  /**
   * The named keys of a Secret of `namespace`, decoded, as an object holding exactly
   * those keys. Throws {@link SourceConfigError} when the name is not an object name, or
   * the Secret is missing, not readable by Governor, not labelled
   * {@link SOURCE_CREDENTIAL_LABEL}`=true`, lacks one of the keys, or holds a value
   * longer than {@link MAX_CREDENTIAL_BYTES}.
   */
  read(namespace: string, name: string, keys: readonly string[]): Promise<Record<string, string>>;
}

/** What is read of a Secret. */
interface SecretObject {
  metadata?: { labels?: Record<string, string> };
  data?: Record<string, string>;
}

/** A Secret as cached: its keys' values, `null` for a value too long to hand out. */
type SecretData = ReadonlyMap<string, string | null>;

/** Options of {@link KubeSecretReader}. */
export interface KubeSecretReaderOptions {
  /** @default MAX_SECRET_CACHE_BYTES */
  maxCacheBytes?: number;
}

/** A {@link SecretReader} over the Kubernetes API. */
export class KubeSecretReader implements SecretReader {
  private readonly cache: LRUCache<string, { at: number; data: SecretData }>;
  /** Reads under way, shared by whoever asks for the same Secret meanwhile. */
  private readonly inflight = new Map<string, Promise<SecretData>>();

  constructor(
    private readonly client: KubeApi,
    opts: KubeSecretReaderOptions = {},
  ) {
    this.cache = byteBoundedCache({
      maxBytes: opts.maxCacheBytes ?? MAX_SECRET_CACHE_BYTES,
      sizeOf: (key, { data }) => {
        let bytes = ENTRY_OVERHEAD_BYTES + stringBytes(key);
        for (const [k, v] of data) bytes += stringBytes(k) + (v === null ? 0 : stringBytes(v));
        return bytes;
      },
    });
  }

  /** The estimated bytes the cache holds now (at most its budget). */
  get cachedBytes(): number {
    return this.cache.calculatedSize;
  }

  async read(namespace: string, name: string, keys: readonly string[]): Promise<Record<string, string>> {
    const data = await this.secret(namespace, name);
    const out: [string, string][] = [];
    for (const key of keys) {
      const value = data.get(key);
      if (value === undefined) throw new SourceConfigError(`Secret ${namespace}/${name} has no key "${key}"`);
      if (value === null)
        throw new SourceConfigError(
          `Secret ${namespace}/${name} key "${key}" is longer than ${MAX_CREDENTIAL_BYTES / 1024} KiB: too long for a source credential`,
        );
      out.push([key, value]);
    }
    // fromEntries defines each key as an own property, a key named __proto__ included.
    return Object.fromEntries(out);
  }

  private secret(namespace: string, name: string): Promise<SecretData> {
    if (!isObjectName(namespace) || !isObjectName(name))
      return Promise.reject(
        new SourceConfigError(
          `Secret name ${JSON.stringify(name.slice(0, 64))} is not a valid object name: a mapping reads only a Secret of its own namespace, by name`,
        ),
      );
    const key = `${namespace}/${name}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < TTL_MS) return Promise.resolve(hit.data);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const read = (async () => {
      try {
        const data = await this.fetch(namespace, name);
        // Only a successful read is kept: after a failure the next read asks again.
        this.cache.set(key, { at: Date.now(), data });
        return data;
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, read);
    return read;
  }

  private async fetch(namespace: string, name: string): Promise<SecretData> {
    let s: SecretObject;
    try {
      s = await this.client.get<SecretObject>(`/api/v1/namespaces/${namespace}/secrets/${name}`);
    } catch (err) {
      if (err instanceof KubeApiError && (err.statusCode === 404 || err.statusCode === 403)) {
        throw new SourceConfigError(
          err.statusCode === 404
            ? `Secret ${namespace}/${name} not found`
            : `Governor may not read Secret ${namespace}/${name}: grant its ServiceAccount "get" on it (see docs/reference.md: Secrets)`,
        );
      }
      throw err;
    }
    // Checked before anything of it is decoded or kept.
    if (s.metadata?.labels?.[SOURCE_CREDENTIAL_LABEL] !== "true")
      throw new SourceConfigError(
        `Secret ${namespace}/${name} is not marked as a source credential: label it ${SOURCE_CREDENTIAL_LABEL}=true to let MetricMappings send it`,
      );
    const data = new Map<string, string | null>();
    for (const [k, v] of Object.entries(s.data ?? {})) {
      const bytes = Buffer.from(v, "base64");
      data.set(k, bytes.length > MAX_CREDENTIAL_BYTES ? null : bytes.toString("utf8"));
    }
    return data;
  }
}

const OBJECT_NAME = new RegExp(DNS_SUBDOMAIN_PATTERN);
function isObjectName(s: string): boolean {
  return s.length <= 253 && OBJECT_NAME.test(s);
}

/** One key of a source-credential Secret, or a clear error. */
export async function secretKey(
  reader: SecretReader,
  namespace: string,
  ref: { name: string; key: string },
): Promise<string> {
  const data = await reader.read(namespace, ref.name, [ref.key]);
  const value = Object.hasOwn(data, ref.key) ? data[ref.key] : undefined;
  if (typeof value !== "string")
    throw new SourceConfigError(`Secret ${namespace}/${ref.name} has no key "${ref.key}"`);
  return value;
}

/**
 * `value` when it may be sent as an HTTP header value: printable ASCII, spaces and tabs.
 * A CR or LF would end the header and start another (a tenant's Secret writing headers of
 * its choosing); other control characters and non-ASCII are refused too (sent as Latin-1,
 * they would not be the Secret's bytes). `what` names the value, never quotes it.
 */
export function headerValue(value: string, what: string): string {
  if (/[^\t\x20-\x7e]/.test(value))
    throw new SourceConfigError(
      `${what} cannot be sent as a header: it holds a line break, another control character or a non-ASCII character (a Secret made from a file often ends in a newline)`,
    );
  return value;
}
