/**
 * MetricMapping (`mm`): one metric, which objects it describes, and where its value
 * comes from. The zod schema is the single source of truth for the CRD
 * (`crds/governor.dev_metricmappings.yaml`).
 */
import { z } from "zod";
import {
  ConditionSchema,
  DNS_SUBDOMAIN_PATTERN,
  Duration,
  Quantity,
  SecretKeyRef,
  SecretRef,
  StringMap,
  durationBetween,
  durationMs,
  exactlyOne,
  withRules,
} from "./common.js";

/** `pods`, `services`, `deployments.apps`, `scalableworkloads.governor.dev`, `namespaces`, `nodes`… */
export const GROUP_RESOURCE_PATTERN = DNS_SUBDOMAIN_PATTERN;

/** Metric names: no `/` (it separates path segments), at most 253 characters. */
export const METRIC_NAME_PATTERN = "^[A-Za-z_:][A-Za-z0-9_:.-]*$";

const Subject = withRules(
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

/** How long one source request may take. */
const Timeout = withRules(Duration, [durationBetween("100ms", "1m", "timeout")])
  .default("5s")
  .meta({ description: "How long one request to the source may take (100ms to 1m)." });

const Prometheus = z
  .object({
    address: z
      .url()
      .meta({ description: "Base URL of the Prometheus server, e.g. http://prometheus.monitoring:9090." }),
    query: z.string().min(1).meta({
      description:
        "PromQL instant query. {{namespace}} is the mapping's namespace, {{names}} a regex alternation of the objects asked for, {{selector}} the HPA's label selector as matchers.",
    }),
    nameLabel: z.string().optional().meta({
      description:
        "Label of the result naming the object (e.g. pod). Unset: the query returns one scalar/sample.",
    }),
    timeout: Timeout,
    bearerTokenSecret: SecretKeyRef.optional(),
    basicAuthSecret: SecretRef.optional().meta({
      description: "A Secret with keys username and password, sent as HTTP basic auth.",
    }),
    caSecret: SecretKeyRef.optional(),
  })
  .meta({ description: "Read the value from a Prometheus instant query." });

const Scrape = z
  .object({
    port: z.number().int().min(1).max(65535),
    path: z.string().regex(/^\//, "must start with /").default("/metrics"),
    scheme: z.enum(["http", "https"]).default("http"),
    series: z.string().min(1).meta({ description: "Name of the series to read, e.g. http_requests_total." }),
    matchLabels: StringMap.optional().meta({ description: "Only samples with these labels." }),
    aggregate: z
      .enum(["sum", "avg", "max", "min"])
      .default("sum")
      .meta({ description: "How matching samples of one pod combine." }),
    rate: z
      .boolean()
      .default(false)
      .meta({ description: "Treat the series as a counter and serve its per-second rate." }),
    timeout: Timeout,
  })
  .meta({ description: "Read each subject pod's Prometheus text endpoint directly (subject must be pods)." });

const Http = z
  .object({
    url: z.url(),
    jsonPath: z
      .string()
      .min(1)
      .meta({ description: "JSONPath to a number in the response, e.g. $.queue.depth." }),
    headersSecret: SecretRef.optional().meta({
      description: "A Secret whose keys are sent as request headers.",
    }),
    timeout: Timeout,
  })
  .meta({ description: "GET a URL and pick a number from its JSON." });

const KubernetesCount = z
  .object({
    count: z.object({
      resource: z
        .string()
        .regex(new RegExp(GROUP_RESOURCE_PATTERN))
        .meta({ description: "What to count: jobs.batch, pods, nodes…" }),
      labelSelector: z.string().optional(),
      fieldSelector: z.string().optional(),
      allNamespaces: z
        .boolean()
        .default(false)
        .meta({ description: "Count cluster-scoped or all namespaces' objects (needs RBAC)." }),
    }),
  })
  .meta({ description: "Count Kubernetes objects." });

const Static = z
  .object({ value: Quantity })
  .meta({ description: "A fixed value (tests, demos, manual overrides)." });

/** The kinds of source, in CRD order. */
export const SOURCE_KINDS = ["prometheus", "scrape", "http", "kubernetes", "static"] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

const Source = withRules(
  z.object({
    prometheus: Prometheus.optional(),
    scrape: Scrape.optional(),
    http: Http.optional(),
    kubernetes: KubernetesCount.optional(),
    static: Static.optional(),
  }),
  [exactlyOne(SOURCE_KINDS, "source")],
).meta({ description: "Where the value comes from: exactly one source." });

/** MetricMapping `.spec`. */
export const MetricMappingSpec = withRules(
  z.object({
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
    source: Source,
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
  }),
  [
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
    {
      rule: "!has(self.source.scrape) || (has(self.subject.resource) && self.subject.resource == 'pods')",
      message: "the scrape source reads pods: set subject.resource to pods",
      fieldPath: ".source.scrape",
      check: (self) => !self.source.scrape || self.subject.resource === "pods",
    },
  ],
);
export type MetricMappingSpec = z.infer<typeof MetricMappingSpec>;

/** MetricMapping `.status`. */
export const MetricMappingStatus = z.object({
  observedGeneration: z.number().int().optional(),
  conditions: z.array(ConditionSchema).optional(),
  value: z
    .string()
    .optional()
    .meta({ description: "Last sampled value, or a summary for per-object metrics." }),
  objects: z.number().int().optional().meta({ description: "Objects that have a current value." }),
  lastSampleTime: z.string().optional(),
  subject: z.string().optional().meta({ description: "The subject resource, or external (for display)." }),
  source: z.enum(SOURCE_KINDS).optional().meta({ description: "The kind of source (for display)." }),
});
export type MetricMappingStatus = z.infer<typeof MetricMappingStatus>;

/** The MetricMapping kind, as the CRD generator and reconciler see it. */
export const MetricMappingKind = {
  kind: "MetricMapping",
  plural: "metricmappings",
  singular: "metricmapping",
  shortNames: ["mm"],
  spec: MetricMappingSpec,
  status: MetricMappingStatus,
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
