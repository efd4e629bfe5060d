/**
 * `http`: GETs a URL and picks one number from its JSON with a JSONPath expression
 * (jsonpath-plus, script evaluation disabled). Headers come from a Secret in the mapping's
 * namespace (every key is a header). A path that matches nothing, several things, or
 * something that is not a number is an error, never a 0.
 */
import { JSONPath } from "jsonpath-plus";
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import { durationMs } from "../api/common.js";
import { getText, redact } from "./http-client.js";
import type { MetricSource, OutboundContext, SampleRequest, SampleValue } from "./source.js";

type Spec = NonNullable<MetricMappingSpec["source"]["http"]>;

/** Picks the single number `path` selects in `json`. */
export function pickNumber(json: unknown, path: string): number {
  const matches = JSONPath<unknown[]>({ path, json: json as object, wrap: true, eval: false });
  if (matches.length === 0) throw new Error(`jsonPath ${path} matched nothing`);
  if (matches.length > 1)
    throw new Error(`jsonPath ${path} matched ${matches.length} values; it must select one`);
  const v = matches[0];
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n))
    throw new Error(
      `jsonPath ${path} selected ${v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`}, not a number`,
    );
  return n;
}

/** See the module comment. */
export class HttpSource implements MetricSource {
  readonly needsObjects = false;
  private readonly timeoutMs: number;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: OutboundContext,
  ) {
    this.timeoutMs = durationMs(spec.timeout);
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.spec.headersSecret)
      Object.assign(headers, await this.ctx.secrets.read(this.ctx.namespace, this.spec.headersSecret.name));
    const text = await getText(this.spec.url, {
      headers,
      signal: req.signal,
      timeoutMs: this.timeoutMs,
      policy: this.ctx.policy,
      maxBytes: this.ctx.maxResponseBytes,
    });
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`the response of ${redact(this.spec.url)} is not JSON (${text.length} characters)`);
    }
    return { kind: "scalar", value: pickNumber(json, this.spec.jsonPath) };
  }
}
