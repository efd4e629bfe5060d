/**
 * Reads keys of Secrets that sources reference, with least privilege: only the named
 * Secret, only in the mapping's own namespace, by GET (never list or watch), cached for
 * 30 s so rotated credentials are picked up. Values are never logged or put in errors.
 * A name that is not a DNS-1123 object name (e.g. `../../shop/secrets/token`) is refused
 * before any request, whatever the CRD in the cluster let through.
 */
import { LRUCache } from "lru-cache";
import type { KubeApi } from "../k8s/client.js";
import { KubeApiError } from "../k8s/client.js";
import { DNS_SUBDOMAIN_PATTERN } from "../api/common.js";
import { SourceConfigError } from "./source.js";

/** How long a Secret read is reused (rotated credentials are picked up after this). */
const TTL_MS = 30_000;
/** The most Secrets kept: mapping specs name them, so their number is the tenants' choice. */
const MAX_CACHED = 10_000;

/** Reads Secret data. */
export interface SecretReader {
  /** All keys of a Secret, decoded. */
  read(namespace: string, name: string): Promise<Record<string, string>>;
}

/** A {@link SecretReader} over the Kubernetes API. */
export class KubeSecretReader implements SecretReader {
  private readonly cache = new LRUCache<string, { at: number; data: Promise<Record<string, string>> }>({
    max: MAX_CACHED,
  });

  constructor(private readonly client: KubeApi) {}

  read(namespace: string, name: string): Promise<Record<string, string>> {
    if (!isObjectName(namespace) || !isObjectName(name))
      return Promise.reject(
        new SourceConfigError(
          `Secret name ${JSON.stringify(name.slice(0, 64))} is not a valid object name: a mapping reads only a Secret of its own namespace, by name`,
        ),
      );
    const key = `${namespace}/${name}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < TTL_MS) return hit.data;
    const data = this.fetch(namespace, name);
    this.cache.set(key, { at: Date.now(), data });
    // A failed read is not kept (the next read asks again) — unless a newer read replaced it.
    data.catch(() => {
      if (this.cache.peek(key)?.data === data) this.cache.delete(key);
    });
    return data;
  }

  private async fetch(namespace: string, name: string): Promise<Record<string, string>> {
    try {
      const s = await this.client.get<{ data?: Record<string, string> }>(
        `/api/v1/namespaces/${namespace}/secrets/${name}`,
      );
      return Object.fromEntries(
        Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
      );
    } catch (err) {
      if (err instanceof KubeApiError && (err.statusCode === 404 || err.statusCode === 403)) {
        throw new SourceConfigError(
          err.statusCode === 404
            ? `Secret ${namespace}/${name} not found`
            : `Governor may not read Secret ${namespace}/${name}: grant its ServiceAccount "get" on it (see README: Secrets)`,
        );
      }
      throw err;
    }
  }
}

const OBJECT_NAME = new RegExp(DNS_SUBDOMAIN_PATTERN);
function isObjectName(s: string): boolean {
  return s.length <= 253 && OBJECT_NAME.test(s);
}

/** One key of a Secret, or a clear error. */
export async function secretKey(
  reader: SecretReader,
  namespace: string,
  ref: { name: string; key: string },
): Promise<string> {
  const data = await reader.read(namespace, ref.name);
  const value = data[ref.key];
  if (value === undefined)
    throw new SourceConfigError(`Secret ${namespace}/${ref.name} has no key "${ref.key}"`);
  return value;
}
