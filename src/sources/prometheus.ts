/**
 * `prometheus`: an instant query (`/api/v1/query`) over a keep-alive pool. The query is a
 * template: `{{namespace}}` is the mapping's namespace, `{{names}}` a regex alternation of
 * the subject objects' names (escaped; `.+` when the subject's objects are not tracked).
 * Whatever the author wrote, every selector of the rendered query is then bound to the
 * mapping's namespace (src/sources/promql-scope.ts): no tenant reads another namespace
 * through a mapping. A vector
 * result maps to objects by `nameLabel`; a scalar, or a single sample without
 * `nameLabel`, is one value for the whole subject. No data is an error, never a 0.
 */
import { z } from "zod";
import { SecretKeyRef, SecretRef, SOURCE_CREDENTIAL_LABEL, durationMs, withRules } from "../api/common.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import { sharedAnswerDecoder } from "./answer-decoder.js";
import { MAX_RANGE_POINTS, type PromResponse } from "./answers.js";
import { HttpStatusError, getBytes } from "./http-client.js";
import { boundedText } from "../util/bounded-text.js";
import { DEFAULT_TENANT_HEADER, MAX_QUERY_BYTES, type QueryScope, scopeQuery } from "./promql-scope.js";
import { headerValue, secretKey } from "./secrets.js";
import { type MetricSource, type SampleRequest, type SampleValue, SourceConfigError } from "./source.js";
import type { OutboundContext } from "./outbound.js";
import { MAX_NAME_LENGTH, MAX_URL_LENGTH, SourceTimeout, backendOf, defineSource, required } from "./kind.js";

/** Tenant IDs as Cortex and Mimir accept them. */
const TENANT_PATTERN = "^[a-zA-Z0-9!._*'()-]+$";
const MAX_TENANT_LENGTH = 150;
/** Query parameter names a mapping may add. */
const QUERY_PARAMETER_PATTERN = "^[A-Za-z_][A-Za-z0-9_.-]*$";
const MAX_QUERY_PARAMETERS = 16;
const MAX_QUERY_PARAMETER_VALUE = 1024;
/** The parameters Governor sets itself. */
const RESERVED_QUERY_PARAMETERS = ["query", "time", "timeout"] as const;

/** `spec.source.prometheus`. */
export const PrometheusSpec = z
  .object({
    address: z
      .url()
      .max(MAX_URL_LENGTH)
      .meta({ description: "Base URL of the Prometheus server, e.g. http://prometheus.monitoring:9090." }),
    query: z.string().min(1).max(MAX_QUERY_BYTES).meta({
      description:
        "PromQL instant query (at most 16 KiB). {{namespace}} is the mapping's namespace, {{names}} a regex alternation of the objects asked for, {{selector}} the HPA's label selector as matchers. Every selector of the query is bound to the mapping's namespace, whatever it says.",
    }),
    nameLabel: z.string().max(MAX_NAME_LENGTH).optional().meta({
      description:
        "Label of the result naming the object (e.g. pod). Unset: the query returns one scalar/sample.",
    }),
    timeout: SourceTimeout,
    bearerTokenSecret: SecretKeyRef.optional(),
    basicAuthSecret: SecretRef.optional().meta({
      description: `A Secret with keys username and password, sent as HTTP basic auth; labelled ${SOURCE_CREDENTIAL_LABEL}=true.`,
    }),
    caSecret: SecretKeyRef.optional(),
    tenant: z
      .string()
      .min(1)
      .max(MAX_TENANT_LENGTH)
      .regex(new RegExp(TENANT_PATTERN), "must be a tenant ID: letters, digits and ! - _ . * ' ( )")
      .refine((t) => t !== "." && t !== "..", "must not be . or ..")
      .optional()
      .meta({
        description: `The tenant of a multi-tenant server (Cortex, Mimir, Thanos receive), sent as its tenant header (X-Scope-OrgID unless the admin names another). Where the admin makes every tenant its mapping's namespace, only that namespace is accepted.`,
      }),
    queryParameters: withRules(
      z.record(
        z.string().regex(new RegExp(QUERY_PARAMETER_PATTERN)).max(MAX_NAME_LENGTH),
        z.string().max(MAX_QUERY_PARAMETER_VALUE),
      ),
      [
        {
          rule: `self.size() <= ${MAX_QUERY_PARAMETERS}`,
          message: `at most ${MAX_QUERY_PARAMETERS} parameters`,
          check: (self) => Object.keys(self).length <= MAX_QUERY_PARAMETERS,
        },
      ],
    )
      // Checked by the operator (InvalidSpec), not at admission: a CEL rule over a map's
      // keys has no bound on their length for the apiserver to estimate its cost.
      .refine(
        (self) =>
          !Object.keys(self).some((k) => (RESERVED_QUERY_PARAMETERS as readonly string[]).includes(k)),
        `must not set ${RESERVED_QUERY_PARAMETERS.join(", ")}: Governor sends them`,
      )
      .optional()
      .meta({
        description: `More parameters of every query request, e.g. dedup: "true" or partial_response: "false" for Thanos (at most ${MAX_QUERY_PARAMETERS}; never ${RESERVED_QUERY_PARAMETERS.join(", ")}).`,
      }),
  })
  .meta({ description: "Read the value from a Prometheus instant query." });
type Spec = z.output<typeof PrometheusSpec>;

/** Escapes text for use inside a PromQL regex inside a double-quoted string. */
export function promRegexEscape(text: string): string {
  return text
    .replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"');
}

/** Escapes text for a double-quoted PromQL string. */
function promString(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
}

/**
 * PromQL label matchers for a Kubernetes selector, comma-joined, to put inside `{…}`.
 * Label keys become Prometheus label names the way Kubernetes service discovery
 * relabelling does (`app.kubernetes.io/name` → `app_kubernetes_io_name`).
 */
export function selectorMatchers(selector: LabelSelector | undefined): string {
  if (!selector) return "";
  const name = (key: string) => key.replace(/[^a-zA-Z0-9_]/g, "_").replace(/^([0-9])/, "_$1");
  const alternation = (values: readonly string[]) => values.map(promRegexEscape).join("|");
  return selector.requirements
    .map((r) => {
      const k = name(r.key);
      const v = r.values[0] ?? "";
      switch (r.operator) {
        case "=":
        case "==":
          return `${k}="${promString(v)}"`;
        case "!=":
          return `${k}!="${promString(v)}"`;
        case "in":
          return `${k}=~"${alternation(r.values)}"`;
        case "notin":
          return `${k}!~"${alternation(r.values)}"`;
        case "exists":
          return `${k}!=""`;
        case "!":
          return `${k}=""`;
        case "gt":
        case "lt":
          return `${k}=~"-?[0-9]+"`; // the comparison itself is applied to the objects afterwards
      }
    })
    .join(",");
}

/** The most times `{{names}}` or `{{selector}}` may appear in a query. */
export const MAX_PLACEHOLDERS = 4;
/** The longest rendered query (objects' names make it longer than what its author wrote). */
export const MAX_RENDERED_QUERY_BYTES = 256 * 1024;
/** The longest `{{selector}}` rendering: an HPA's selector is a few labels. */
export const MAX_SELECTOR_MATCHERS_BYTES = 2048;

/**
 * Renders the query template. Its length is worked out before the query is built: many
 * placeholders times many long names would otherwise build megabytes per sample before
 * any bound could refuse them.
 */
export function renderQuery(
  template: string,
  vars: { namespace: string; names?: readonly string[]; selector?: LabelSelector },
): string {
  const names = vars.names && vars.names.length > 0 ? vars.names.map(promRegexEscape).join("|") : ".+";
  const matchers = selectorMatchers(vars.selector);
  if (matchers.length > MAX_SELECTOR_MATCHERS_BYTES)
    throw new Error(
      `the HPA's label selector makes ${matchers.length} bytes of matchers; a {{selector}} query takes at most ${MAX_SELECTOR_MATCHERS_BYTES}`,
    );
  const count = (placeholder: string) => template.split(placeholder).length - 1;
  const length =
    template.length +
    count("{{namespace}}") * (vars.namespace.length - "{{namespace}}".length) +
    count("{{names}}") * (names.length - "{{names}}".length) +
    count("{{selector}}") * (matchers.length - "{{selector}}".length);
  if (length > MAX_RENDERED_QUERY_BYTES)
    throw new Error(
      `the query would be ${length} bytes long with the names of ${vars.names?.length ?? 0} objects; at most ${MAX_RENDERED_QUERY_BYTES} (aggregate by a label instead of naming each object)`,
    );
  return template
    .replaceAll("{{namespace}}", vars.namespace)
    .replaceAll("{{names}}", names)
    .replaceAll("{{selector}}", matchers);
}

/** The short explanation in a Prometheus API error body, if the body is one. */
export function prometheusError(body: string): string | undefined {
  try {
    const b = JSON.parse(body) as Partial<PromResponse>;
    if (b.status !== "error" || typeof b.error !== "string") return undefined;
    return `Prometheus: ${boundedText(String(b.errorType ?? "error"), 40)}: ${boundedText(b.error, 200)}`;
  } catch {
    return undefined;
  }
}

/** See the module comment. */
export class PrometheusSource implements MetricSource {
  readonly needsObjects: boolean;
  readonly perSelector: boolean;
  readonly backend: string;
  private readonly timeoutMs: number;
  private readonly namespaceLabel: string | null;
  /** The last query rendered and its scoped form (pods change rarely; parsing is not free). */
  private lastScoped?: { rendered: string; scoped: string };

  /**
   * Throws {@link QueryScopeError} when the query cannot be bound to the namespace (not
   * valid PromQL, or it names another namespace): the mapping is invalid, not failing.
   */
  constructor(
    private readonly spec: Spec,
    private readonly ctx: OutboundContext & { scope?: QueryScope },
  ) {
    this.needsObjects = spec.query.includes("{{names}}");
    this.perSelector = spec.query.includes("{{selector}}");
    this.timeoutMs = durationMs(spec.timeout);
    this.backend = backendOf(spec.address);
    this.namespaceLabel = ctx.scope ? ctx.scope.namespaceLabel : "namespace";
    for (const placeholder of ["{{names}}", "{{selector}}"])
      if (spec.query.split(placeholder).length - 1 > MAX_PLACEHOLDERS)
        throw new SourceConfigError(`the query has ${placeholder} more than ${MAX_PLACEHOLDERS} times`);
    if (spec.query.length > MAX_QUERY_BYTES)
      throw new SourceConfigError(`the query is longer than ${MAX_QUERY_BYTES} characters`);
    // Checked once as written, so a query that can never be scoped is refused up front.
    this.scoped(renderQuery(spec.query, { namespace: ctx.namespace, names: ["x"] }));
    if (ctx.scope?.tenantFromNamespace && spec.tenant !== undefined && spec.tenant !== ctx.namespace)
      throw new SourceConfigError(
        `the tenant of this mapping's queries is its namespace, ${ctx.namespace} (Governor runs with --prometheus-tenant-from-namespace): remove tenant`,
      );
    const tenant = ctx.scope?.tenantFromNamespace ? ctx.namespace : spec.tenant;
    if (tenant !== undefined) this.tenant = [ctx.scope?.tenantHeader ?? DEFAULT_TENANT_HEADER, tenant];
  }

  /** The tenant header and its value, if queries carry one. */
  private readonly tenant?: [string, string];

  /** `rendered` with every selector bound to the mapping's namespace. */
  private scoped(rendered: string): string {
    if (this.namespaceLabel === null) return rendered;
    if (this.lastScoped?.rendered === rendered) return this.lastScoped.scoped;
    const scoped = scopeQuery(rendered, {
      namespace: this.ctx.namespace,
      label: this.namespaceLabel,
      maxBytes: MAX_RENDERED_QUERY_BYTES,
    });
    this.lastScoped = { rendered, scoped };
    return scoped;
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const query = this.scoped(
      renderQuery(this.spec.query, {
        namespace: this.ctx.namespace,
        names: req.objects?.map((o) => o.name),
        selector: req.selector,
      }),
    );
    const body = await this.get("api/v1/query", { query }, req.signal);
    const decoder = this.ctx.decoder ?? sharedAnswerDecoder();
    return decoder.decode(
      body,
      { kind: "prometheus", nameLabel: this.spec.nameLabel },
      { tenant: this.ctx.namespace, signal: req.signal },
    );
  }

  /**
   * The query's values from `fromMs` to `toMs`, one every `stepMs` (a range query, bound to
   * the namespace as every query is): for a query of one value, not one per object or per
   * HPA selector.
   */
  async history(
    fromMs: number,
    toMs: number,
    stepMs: number,
    signal: AbortSignal,
  ): Promise<{ atMs: number[]; values: number[] }> {
    if (this.needsObjects || this.perSelector || this.spec.nameLabel)
      throw new Error("the query gives one value per object or per HPA selector: it has no single history");
    const points = Math.floor((toMs - fromMs) / stepMs) + 1;
    if (!(stepMs >= 1000) || points < 1 || points > MAX_RANGE_POINTS)
      throw new Error(`a range of ${points} points of ${stepMs} ms is not one Prometheus answers`);
    const query = this.scoped(renderQuery(this.spec.query, { namespace: this.ctx.namespace }));
    const seconds = (ms: number) => String(Math.floor(ms / 1000));
    const body = await this.get(
      "api/v1/query_range",
      { query, start: seconds(fromMs), end: seconds(toMs), step: `${Math.round(stepMs / 1000)}s` },
      signal,
    );
    const decoder = this.ctx.decoder ?? sharedAnswerDecoder();
    return decoder.decode(body, { kind: "prometheus-range" }, { tenant: this.ctx.namespace, signal });
  }

  /** A GET of the Prometheus API at `path` with the mapping's credentials, tenant and parameters. */
  private async get(path: string, params: Record<string, string>, signal: AbortSignal): Promise<Buffer> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.tenant) headers[this.tenant[0]] = this.tenant[1];
    if (this.spec.bearerTokenSecret) {
      const ref = this.spec.bearerTokenSecret;
      // Surrounding whitespace (a token file's final newline) is not part of the token.
      const token = (await secretKey(this.ctx.secrets, this.ctx.namespace, ref)).trim();
      headers.authorization = `Bearer ${headerValue(token, `Secret ${this.ctx.namespace}/${ref.name} key "${ref.key}"`)}`;
    }
    if (this.spec.basicAuthSecret) {
      const ref = this.spec.basicAuthSecret;
      const user = await secretKey(this.ctx.secrets, this.ctx.namespace, { name: ref.name, key: "username" });
      const password = await secretKey(this.ctx.secrets, this.ctx.namespace, {
        name: ref.name,
        key: "password",
      });
      headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
    }
    const ca = this.spec.caSecret
      ? await secretKey(this.ctx.secrets, this.ctx.namespace, this.spec.caSecret)
      : undefined;
    const url = new URL(path, this.spec.address.endsWith("/") ? this.spec.address : `${this.spec.address}/`);
    for (const [k, v] of Object.entries(this.spec.queryParameters ?? {})) url.searchParams.set(k, v);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    url.searchParams.set("timeout", `${Math.max(1, Math.floor(this.timeoutMs / 1000))}s`);
    try {
      return await getBytes(url.toString(), {
        headers,
        tenant: this.ctx.namespace,
        signal,
        timeoutMs: this.timeoutMs,
        ca,
        policy: this.ctx.policy,
        maxBytes: this.ctx.maxResponseBytes,
      });
    } catch (err) {
      // Prometheus explains bad queries in a JSON error body with HTTP 400/422: say that
      // (a short, Prometheus-shaped message), never other bytes of the answer.
      if (err instanceof HttpStatusError && (err.statusCode === 400 || err.statusCode === 422)) {
        const explained = prometheusError(err.body);
        if (explained) throw new Error(explained);
      }
      throw err;
    }
  }
}

/** The `prometheus` source kind. */
export const prometheus = defineSource({
  kind: "prometheus",
  schema: PrometheusSpec,
  build: (spec, ctx) =>
    new PrometheusSource(spec, {
      namespace: ctx.namespace,
      secrets: required(ctx.secrets, "prometheus", "Secret access"),
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      scope: ctx.prometheusScope,
    }),
});
