/**
 * MetricMapping (`mm`): one metric, which objects it describes, and where its value
 * comes from. The zod schema is the single source of truth for the CRD
 * (`crds/governor.dev_metricmappings.yaml`). Where the value comes from is each source
 * kind's own part (its file under src/sources/): {@link metricMappingKind} builds the kind
 * around them, and src/sources/registry.ts calls it with every source kind — import
 * `MetricMappingSpec` and `MetricMappingKind` from there.
 */
import { z } from "zod";
import {
  API_VERSION,
  ConditionSchema,
  Duration,
  Quantity,
  StringMap,
  type ValidationRule,
  durationBetween,
  durationMs,
  exactlyOne,
  withRules,
} from "./common.js";
import { GROUP_RESOURCE_PATTERN } from "./group-resource.js";

/** Metric names: no `/` (it separates path segments), at most 253 characters. */
export const METRIC_NAME_PATTERN = "^[A-Za-z_:][A-Za-z0-9_:.-]*$";

export const Subject = withRules(
  z.object({
    resource: z
      .string()
      .regex(
        new RegExp(GROUP_RESOURCE_PATTERN),
        "must be a plural resource, qualified by group unless core (pods, deployments.apps)",
      )
      .optional()
      .meta({
        description:
          "The kind of object the metric describes, as plural.group: pods, services, deployments.apps, namespaces.",
      }),
    external: z
      .object({
        labels: StringMap.optional().meta({
          description: "Labels of the series, matched by the HPA's metric selector.",
        }),
      })
      .optional()
      .meta({
        description:
          "Serve on external.metrics.k8s.io, attached to no object. The metric name must be lower-case.",
      }),
  }),
  [exactlyOne(["resource", "external"], "subject")],
).meta({ description: "What the metric describes: exactly one of resource or external." });

/** A mapping's subject, as its schema reads it. */
export type MetricMappingSubject = z.output<typeof Subject>;

/** A rule over a spec's subject and source. */
export type SourceRule = ValidationRule<{ subject: MetricMappingSubject; source: Record<string, unknown> }>;

/** The sources a MetricMapping kind is built around (src/sources/registry.ts). */
export interface MappingSources<S extends z.ZodType<Record<string, unknown>>> {
  /** `spec.source`: one optional field per kind, exactly one of them set. */
  schema: S;
  /** Their names, in CRD order. */
  kinds: readonly [string, ...string[]];
  /** Rules tying a source to the subject (scrape reads pods only). */
  rules: readonly SourceRule[];
}

/** The MetricMapping kind (spec, status, columns) around `sources`. */
export function metricMappingKind<S extends z.ZodType<Record<string, unknown>>>(sources: MappingSources<S>) {
  const fields = z.object({
    metric: z
      .string()
      .min(1)
      .max(253)
      .regex(
        new RegExp(METRIC_NAME_PATTERN),
        "must be a metric name: letters, digits, _ : . -, not starting with a digit",
      )
      .meta({ description: "The metric name the HPA asks for." }),
    subject: Subject,
    source: sources.schema,
    interval: withRules(Duration, [durationBetween("1s", "1h", "interval")])
      .default("15s")
      .meta({ description: "How often the source is sampled (1s to 1h)." }),
    staleAfter: withRules(Duration, [durationBetween("1s", "24h", "staleAfter")])
      .default("2m")
      .meta({
        description: "A value older than this is never served as current (1s to 24h, at least interval).",
      }),
    window: withRules(Duration, [durationBetween("1s", "24h", "window")])
      .optional()
      .meta({
        description: "The window a rate is computed over, reported to the HPA (1s to 24h).",
      }),
    fallback: z.object({ value: Quantity }).optional().meta({
      description: "Served once the value is stale. Unset: a stale metric answers 503 and the HPA holds.",
    }),
  });
  type Fields = z.output<typeof fields>;
  const spec = withRules(fields, [
    {
      rule: "!has(self.interval) || !has(self.staleAfter) || duration(self.staleAfter) >= duration(self.interval)",
      message: "staleAfter must be at least interval: every value would be stale before the next sample",
      fieldPath: ".staleAfter",
      check: (self) => durationMs(self.staleAfter) >= durationMs(self.interval),
    },
    {
      rule: "!has(self.subject.external) || self.metric == self.metric.lowerAscii()",
      message:
        "an external metric's name must be lower-case: the HPA (client-go) lower-cases it before asking, so it could never be found",
      fieldPath: ".metric",
      check: (self) => !self.subject.external || self.metric === self.metric.toLowerCase(),
    },
    // A source rule reads the spec's subject and source, which TypeScript cannot see through S.
    ...(sources.rules as readonly unknown[] as readonly ValidationRule<Fields>[]),
  ]);
  const status = z.object({
    observedGeneration: z.number().int().optional(),
    conditions: z.array(ConditionSchema).optional(),
    value: z
      .string()
      .optional()
      .meta({ description: "Last sampled value, or a summary for per-object metrics." }),
    objects: z.number().int().optional().meta({ description: "Objects that have a current value." }),
    lastSampleTime: z.string().optional(),
    subject: z.string().optional().meta({ description: "The subject resource, or external (for display)." }),
    source: z.enum(sources.kinds).optional().meta({ description: "The kind of source (for display)." }),
  });
  return {
    kind: "MetricMapping",
    plural: "metricmappings",
    singular: "metricmapping",
    shortNames: ["mm"],
    spec,
    status,
    printerColumns: [
      { name: "Metric", type: "string", jsonPath: ".spec.metric" },
      { name: "Subject", type: "string", jsonPath: ".status.subject" },
      { name: "Source", type: "string", jsonPath: ".status.source" },
      { name: "Value", type: "string", jsonPath: ".status.value" },
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      {
        name: "Reason",
        type: "string",
        jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
        description: "Why it is (not) ready: Serving, ServingFallback, Stale, InvalidSource…",
      },
      {
        name: "Source-Healthy",
        type: "string",
        jsonPath: '.status.conditions[?(@.type=="SourceHealthy")].status',
        description: "Whether the source's last sample succeeded (False while a fallback is served).",
      },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
      {
        name: "Last-Sample",
        type: "date",
        priority: 1,
        jsonPath: ".status.lastSampleTime",
      },
      {
        name: "Message",
        type: "string",
        priority: 1,
        jsonPath: '.status.conditions[?(@.type=="Ready")].message',
      },
    ],
  } as const;
}

/** Where MetricMappings are watched, in every namespace. */
export const METRIC_MAPPINGS_PATH = `/apis/${API_VERSION}/metricmappings`;
