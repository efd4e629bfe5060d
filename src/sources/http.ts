/**
 * `http`: GETs a URL and picks one number from its JSON with a JSONPath expression
 * (jsonpath-plus, script evaluation disabled), in the parse worker (src/sources/answers.ts). Headers come from a Secret in the mapping's
 * namespace (every key is a header). A path that matches nothing, several things, or
 * something that is not a number is an error, never a 0.
 */
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import { durationMs } from "../api/common.js";
import { sharedAnswerDecoder } from "./answer-decoder.js";
import { getBytes, redact } from "./http-client.js";
import type { MetricSource, OutboundContext, SampleRequest, SampleValue } from "./source.js";

type Spec = NonNullable<MetricMappingSpec["source"]["http"]>;

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
    const body = await getBytes(this.spec.url, {
      headers,
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
