/**
 * `http`: GETs a URL and picks one number from its JSON with a JSONPath expression
 * (jsonpath-plus, script evaluation disabled), in the parse worker (src/sources/answers.ts).
 * Headers come from a source-credential Secret in the mapping's namespace: only the keys
 * `headersSecret.keys` lists, each sent as the header of its name — never `Host` or a
 * connection-level header, never a value with a line break. A path that matches nothing,
 * several things, or something that is not a number is an error, never a 0.
 */
import { z } from "zod";
import { ObjectName, SOURCE_CREDENTIAL_LABEL, durationMs, withRules } from "../api/common.js";
import { sharedAnswerDecoder } from "./answer-decoder.js";
import { getBytes, redact } from "./http-client.js";
import { DEFAULT_TENANT_HEADER, type QueryScope } from "./promql-scope.js";
import { headerValue } from "./secrets.js";
import { type MetricSource, type SampleRequest, type SampleValue, SourceConfigError } from "./source.js";
import type { OutboundContext } from "./outbound.js";
import { MAX_URL_LENGTH, SourceTimeout, backendOf, defineSource, required } from "./kind.js";

/** The longest JSONPath. */
const MAX_JSON_PATH_LENGTH = 1024;

/**
 * Header names a source never sends from a Secret: `Host` (it would redirect a request that
 * passed the destination policy to another virtual host) and the connection-level
 * (hop-by-hop) headers, which govern the connection and the message's framing, not the
 * request: written by a tenant they could smuggle a second request or break the pool's
 * connections. Lower-case; compared case-insensitively.
 */
export const FORBIDDEN_SOURCE_HEADERS = [
  "host",
  "connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-authenticate",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
  "expect",
] as const;

/**
 * A header name a `headersSecret` may list: an HTTP token (RFC 9110) that is also a Secret
 * key (`[-._a-zA-Z0-9]`, a subset of the token characters), since the value is that key's.
 */
export const HEADER_NAME_PATTERN = "^[-._a-zA-Z0-9]+$";
/** The longest header name a `headersSecret` may list. */
export const MAX_HEADER_NAME_LENGTH = 64;
/** The most headers a `headersSecret` may list. */
export const MAX_SECRET_HEADERS = 16;

const FORBIDDEN_HEADER_MESSAGE = `must not be Host or a connection-level header (${FORBIDDEN_SOURCE_HEADERS.join(", ")})`;
const MISSING_KEYS_MESSAGE =
  "list the Secret's keys to send as headers, e.g. keys: [X-Api-Key] (only the listed keys are sent)";

const HeaderName = withRules(
  z
    .string()
    .min(1)
    .max(MAX_HEADER_NAME_LENGTH)
    .regex(
      new RegExp(HEADER_NAME_PATTERN),
      "must be a header name that is also a Secret key: letters, digits, '-', '_' and '.'",
    ),
  [
    {
      rule: `!(self.lowerAscii() in [${FORBIDDEN_SOURCE_HEADERS.map((h) => `'${h}'`).join(", ")}])`,
      message: FORBIDDEN_HEADER_MESSAGE,
      check: (self) => !(FORBIDDEN_SOURCE_HEADERS as readonly string[]).includes(self.toLowerCase()),
    },
  ],
);

/**
 * `headersSecret`: the Secret and which of its keys are sent as headers. `keys` is
 * optional in the CRD's structure and required by a rule, so that the apiserver's message
 * for an object written before it existed says what to do (a missing required field
 * would only say "Required value", and stop the apiserver from checking the rules). The
 * http source checks its spec against this again before it runs (a CRD installed by an
 * older release lets through what this refuses).
 */
export const HeadersSecret = withRules(
  z.object({
    name: ObjectName,
    keys: withRules(z.array(HeaderName).min(1).max(MAX_SECRET_HEADERS), [
      {
        rule: "self.all(k, self.exists_one(j, j.lowerAscii() == k.lowerAscii()))",
        message: "list each header once (header names are case-insensitive)",
        check: (self) => new Set(self.map((k) => k.toLowerCase())).size === self.length,
      },
    ])
      .optional()
      .meta({
        description: `Required. The Secret's keys to send, each as the header of that name with the key's value (1 to ${MAX_SECRET_HEADERS}; never Host or a connection-level header). Other keys are not sent.`,
      }),
  }),
  [{ rule: "has(self.keys)", message: MISSING_KEYS_MESSAGE, check: (self) => self.keys !== undefined }],
).meta({
  description: `A Secret of the mapping's namespace, labelled ${SOURCE_CREDENTIAL_LABEL}=true, whose listed keys are sent as request headers.`,
});

/** `spec.source.http`. */
export const HttpSpec = z
  .object({
    url: z.url().max(MAX_URL_LENGTH),
    jsonPath: z
      .string()
      .min(1)
      .max(MAX_JSON_PATH_LENGTH)
      .meta({ description: "JSONPath to a number in the response, e.g. $.queue.depth." }),
    headersSecret: HeadersSecret.optional(),
    timeout: SourceTimeout,
  })
  .meta({ description: "GET a URL and pick a number from its JSON." });

type Spec = z.output<typeof HttpSpec>;

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
  readonly backend: string;
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
    this.backend = backendOf(spec.url);
    // Bound to their namespace by label or by tenant, queries go through the prometheus source only.
    if ((ctx.scope?.namespaceLabel !== null || ctx.scope?.tenantFromNamespace) && isQueryApi(spec.url))
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
      // Where the admin makes each namespace its own tenant, no mapping sends another's ID.
      const tenantHeader = (ctx.scope?.tenantHeader ?? DEFAULT_TENANT_HEADER).toLowerCase();
      if (
        ctx.scope?.tenantFromNamespace &&
        this.headersSecret.keys.some((k) => k.toLowerCase() === tenantHeader)
      )
        throw new SourceConfigError(
          `headersSecret.keys: ${ctx.scope.tenantHeader ?? DEFAULT_TENANT_HEADER} is the tenant header, which Governor sets to the mapping's namespace (--prometheus-tenant-from-namespace)`,
        );
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

/** The `http` source kind. */
export const http = defineSource({
  kind: "http",
  schema: HttpSpec,
  build: (spec, ctx) =>
    new HttpSource(spec, {
      namespace: ctx.namespace,
      secrets: required(ctx.secrets, "http", "Secret access"),
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      scope: ctx.prometheusScope,
    }),
});
