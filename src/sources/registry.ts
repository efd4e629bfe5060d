/**
 * Every source kind, and the MetricMapping kind built around them. A kind is one file of
 * this folder exporting its schema and builder ({@link defineSource}); adding one is that
 * file and one line in {@link SOURCES}: the CRD (`npm run generate`), the admission
 * rules, status and {@link buildSource} follow from it.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { z } from "zod";
import { durationMs, exactlyOne, withRules } from "../api/common.js";
import { type SourceRule, metricMappingKind } from "../api/metric-mapping.js";
import { forecastSource } from "./forecast.js";
import { formulaSource } from "./formula.js";
import { http } from "./http.js";
import type { SourceContext, SourceDefinition } from "./kind.js";
import { kubernetes } from "./kubernetes.js";
import { otlp } from "./otlp.js";
import { prometheus } from "./prometheus.js";
import { scrape } from "./scrape.js";
import type { MetricSource } from "./source.js";
import { SourceConfigError } from "./source.js";
import { scheduleSource } from "./schedule.js";
import { staticSource } from "./static.js";

/** The source kinds, in CRD order. */
export const SOURCES = {
  prometheus,
  scrape,
  http,
  kubernetes,
  static: staticSource,
  schedule: scheduleSource,
  formula: formulaSource,
  forecast: forecastSource,
  otlp,
} as const;
export type SourceKind = keyof typeof SOURCES;
export const SOURCE_KINDS = Object.keys(SOURCES) as [SourceKind, ...SourceKind[]];

/** The rule "the `kind` source describes `subject.resource` only", for kinds that say so. */
function subjectRule(kind: string, subject: NonNullable<SourceDefinition["subject"]>): SourceRule {
  return {
    rule: `!has(self.source.${kind}) || (has(self.subject.resource) && self.subject.resource == '${subject.resource}')`,
    message: subject.message,
    fieldPath: `.source.${kind}`,
    check: (self) => self.source[kind] === undefined || self.subject.resource === subject.resource,
  };
}

/**
 * The MetricMapping kind with these source kinds in it: `spec.source` with one optional
 * field per kind and exactly one set, the kinds' subject rules, the kinds in status.
 */
export function mappingKindWith<D extends Record<string, SourceDefinition>>(definitions: D) {
  const kinds = Object.keys(definitions) as [keyof D & string, ...(keyof D & string)[]];
  for (const k of kinds)
    if (definitions[k]!.kind !== k) throw new Error(`source kind ${definitions[k]!.kind} is listed as ${k}`);
  type Shape = { [K in keyof D]: z.ZodOptional<D[K]["schema"]> };
  const schema = withRules(
    z.object(Object.fromEntries(kinds.map((k) => [k, definitions[k]!.schema.optional()])) as Shape),
    [exactlyOne(kinds, "source")],
  ).meta({ description: "Where the value comes from: exactly one source." });
  return metricMappingKind({
    schema,
    kinds,
    rules: kinds.flatMap((k) => {
      const subject = definitions[k]!.subject;
      return subject ? [subjectRule(k, subject)] : [];
    }),
  });
}

/** The MetricMapping kind with every source kind in it: what the CRD is generated from. */
export const MetricMappingKind = mappingKindWith(SOURCES);
/** MetricMapping `.spec`. */
export const MetricMappingSpec = MetricMappingKind.spec;
export type MetricMappingSpec = z.output<typeof MetricMappingSpec>;
/** MetricMapping `.status`. */
export const MetricMappingStatus = MetricMappingKind.status;
export type MetricMappingStatus = z.output<typeof MetricMappingStatus>;

/** A MetricMapping as stored (its spec not yet validated). */
export interface MetricMappingObject extends KubernetesObject {
  spec?: unknown;
  status?: MetricMappingStatus;
}

/** The kind of source a spec selects. */
export function sourceKind(source: MetricMappingSpec["source"]): SourceKind {
  const kind = SOURCE_KINDS.find((k) => source[k] !== undefined);
  if (!kind) throw new SourceConfigError("spec.source names no source");
  return kind;
}

/** The definition of the kind a spec selects, with that kind's part of the spec. */
function selected(spec: MetricMappingSpec): { definition: SourceDefinition; source: unknown } {
  const kind = sourceKind(spec.source);
  return { definition: SOURCES[kind], source: spec.source[kind] };
}

/** Builds a source; throws {@link SourceConfigError} for a spec it cannot run. */
export function buildSource(spec: MetricMappingSpec, ctx: SourceContext): MetricSource {
  const { definition, source } = selected(spec);
  return definition.build(source, ctx);
}

/** The window a mapping's rate is computed over: as it declares, else as its source kind says (or none). */
export function rateWindowMs(spec: MetricMappingSpec, intervalMs: number): number | undefined {
  if (spec.window) return durationMs(spec.window);
  const { definition, source } = selected(spec);
  return definition.rateWindowMs?.(source, intervalMs);
}
