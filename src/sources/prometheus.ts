/**
 * `prometheus`: an instant query (`/api/v1/query`) over a keep-alive pool. The query is a
 * template: `{{namespace}}` is the mapping's namespace (always bound: no tenant reads
 * another namespace through a mapping), `{{names}}` a regex alternation of the subject
 * objects' names (escaped; `.+` when the subject's objects are not tracked). A vector
 * result maps to objects by `nameLabel`; a scalar, or a single sample without
 * `nameLabel`, is one value for the whole subject. No data is an error, never a 0.
 */
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import { durationMs } from "../api/common.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import { sharedAnswerDecoder } from "./answer-decoder.js";
import type { PromResponse } from "./answers.js";
import { HttpStatusError, getBytes } from "./http-client.js";
import { boundedText } from "../util/bounded-text.js";
import { secretKey } from "./secrets.js";
import type { MetricSource, OutboundContext, SampleRequest, SampleValue } from "./source.js";

type Spec = NonNullable<MetricMappingSpec["source"]["prometheus"]>;

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

/** Renders the query template. */
export function renderQuery(
  template: string,
  vars: { namespace: string; names?: readonly string[]; selector?: LabelSelector },
): string {
  const names = vars.names && vars.names.length > 0 ? vars.names.map(promRegexEscape).join("|") : ".+";
  return template
    .replaceAll("{{namespace}}", vars.namespace)
    .replaceAll("{{names}}", names)
    .replaceAll("{{selector}}", selectorMatchers(vars.selector));
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
  private readonly timeoutMs: number;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: OutboundContext,
  ) {
    this.needsObjects = spec.query.includes("{{names}}");
    this.perSelector = spec.query.includes("{{selector}}");
    this.timeoutMs = durationMs(spec.timeout);
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const query = renderQuery(this.spec.query, {
      namespace: req.namespace,
      names: req.objects?.map((o) => o.name),
      selector: req.selector,
    });
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.spec.bearerTokenSecret) {
      headers.authorization = `Bearer ${(await secretKey(this.ctx.secrets, this.ctx.namespace, this.spec.bearerTokenSecret)).trim()}`;
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
    const url = new URL(
      "api/v1/query",
      this.spec.address.endsWith("/") ? this.spec.address : `${this.spec.address}/`,
    );
    url.searchParams.set("query", query);
    url.searchParams.set("timeout", `${Math.max(1, Math.floor(this.timeoutMs / 1000))}s`);
    let body: Buffer;
    try {
      body = await getBytes(url.toString(), {
        headers,
        signal: req.signal,
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
    const decoder = this.ctx.decoder ?? sharedAnswerDecoder();
    return decoder.decode(
      body,
      { kind: "prometheus", nameLabel: this.spec.nameLabel },
      { tenant: this.ctx.namespace, signal: req.signal },
    );
  }
}
