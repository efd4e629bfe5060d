/**
 * Builds the {@link MetricSource} for a MetricMapping's `spec.source`. Sources that need
 * the cluster (Secrets, informers) get it through {@link SourceContext}.
 */
import type { MetricMappingSpec } from "../api/metric-mapping.js";
import type { MetricSource } from "./source.js";
import { SourceConfigError } from "./source.js";
import { StaticSource } from "./static.js";

/** What sources may use besides their spec. */
export interface SourceContext {
  namespace: string;
}

/** The kind of source a spec selects. */
export function sourceKind(spec: MetricMappingSpec["source"]): string {
  return Object.keys(spec).find((k) => (spec as Record<string, unknown>)[k] !== undefined) ?? "none";
}

/** Builds a source; throws {@link SourceConfigError} for a spec it cannot run. */
export function buildSource(spec: MetricMappingSpec, _ctx: SourceContext): MetricSource {
  const s = spec.source;
  if (s.static) return new StaticSource(s.static);
  throw new SourceConfigError(`the ${sourceKind(s)} source is not available in this version of Governor`);
}
