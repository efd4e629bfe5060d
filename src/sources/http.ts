/**
 * `http`: GETs a URL and picks one number from its JSON with a JSONPath expression
 * (jsonpath-plus, script evaluation disabled), in the parse worker (src/sources/answers.ts).
 * Headers come from a source-credential Secret in the mapping's namespace: only the keys
 * `headersSecret.keys` lists, each sent as the header of its name — never `Host` or a
 * connection-level header, never a value with a line break. A path that matches nothing,
 * several things, or something that is not a number is an error, never a 0.
 */
import { HeadersSecret, type MetricMappingSpec } from "../api/metric-mapping.js";
import { durationMs } from "../api/common.js";
import { sharedAnswerDecoder } from "./answer-decoder.js";
import { getBytes, redact } from "./http-client.js";
import type { QueryScope } from "./prometheus.js";
import { headerValue } from "./secrets.js";
import { type MetricSource, type SampleRequest, type SampleValue, SourceConfigError } from "./source.js";
import type { OutboundContext } from "./outbound.js";

type Spec = NonNullable<MetricMappingSpec["source"]["http"]>;

/**
 * Paths of Prometheus-compatible query APIs (Prometheus, Thanos, Cortex, Mimir, and Loki's
 * `/loki/api/v1/…`, under any prefix): read through `http`, a query would reach every
 * namespace's series with Governor's network position, unscoped. The `prometheus` source
 * binds every query to the mapping's namespace instead.
 */
const QUERY_API =
  /\/api\/v1\/(query|query_range|query_exemplars|series|labels?|read|export|federate|tail)(\/|$)|\/federate$/;

/** Whether `url`'s path, decoded as the server will decode it, is a query API's. */
export function isQueryApi(url: string): boolean {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    return false;
  }
  // %-escapes decoded (repeatedly: a proxy in front may decode once more), slashes
  // collapsed, case folded: routers differ, so the most permissive reading counts.
  for (let i = 0; i < 3; i++) {
    const decoded = tryDecode(path);
    if (decoded === path) break;
    path = decoded;
  }
  return QUERY_API.test(path.replace(/\/+/g, "/").toLowerCase());
}

function tryDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** See the module comment. */
export class HttpSource implements MetricSource {
  readonly needsObjects = false;
  private readonly timeoutMs: number;
  /** The Secret and the headers to send from it, as checked. */
  private readonly headersSecret?: { name: string; keys: readonly string[] };

  /**
   * Throws {@link SourceConfigError} for a `headersSecret` the CRD should have refused
   * (no `keys`, `Host`, a connection-level header…): a CRD installed by an older release
   * lets them through.
   */
  constructor(
    private readonly spec: Spec,
    private readonly ctx: OutboundContext & { scope?: QueryScope },
  ) {
    this.timeoutMs = durationMs(spec.timeout);
    if (ctx.scope?.namespaceLabel !== null && isQueryApi(spec.url))
      throw new SourceConfigError(
        `${redact(spec.url)} is a Prometheus query API: use the prometheus source, which binds the query to this namespace`,
      );
    if (spec.headersSecret) {
      const checked = HeadersSecret.safeParse(spec.headersSecret);
      if (!checked.success)
        throw new SourceConfigError(
          checked.error.issues
            .map((i) => `${["headersSecret", ...i.path].join(".")}: ${i.message}`)
            .join("; "),
        );
      // A rule of HeadersSecret makes `keys` present.
      this.headersSecret = { name: checked.data.name, keys: checked.data.keys ?? [] };
    }
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const headers: [string, string][] = [["accept", "application/json"]];
    if (this.headersSecret) {
      const { name, keys } = this.headersSecret;
      const values = await this.ctx.secrets.read(this.ctx.namespace, name, keys);
      for (const key of keys) {
        const value = Object.hasOwn(values, key) ? values[key] : undefined;
        const secret = `Secret ${this.ctx.namespace}/${name}`;
        if (typeof value !== "string") throw new SourceConfigError(`${secret} has no key "${key}"`);
        headers.push([key.toLowerCase(), headerValue(value, `${secret} key "${key}"`)]);
      }
    }
    const body = await getBytes(this.spec.url, {
      // fromEntries: a listed key replaces `accept`, and a key named __proto__ is a header.
      headers: Object.fromEntries(headers),
      tenant: this.ctx.namespace,
      signal: req.signal,
      timeoutMs: this.timeoutMs,
      policy: this.ctx.policy,
      maxBytes: this.ctx.maxResponseBytes,
    });
    const decoder = this.ctx.decoder ?? sharedAnswerDecoder();
    try {
      const value = await decoder.decode(
        body,
        { kind: "json-path", path: this.spec.jsonPath },
        { tenant: this.ctx.namespace, signal: req.signal },
      );
      return { kind: "scalar", value };
    } catch (err) {
      throw new Error(`${redact(this.spec.url)}: ${(err as Error).message}`);
    }
  }
}
