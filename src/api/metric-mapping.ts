/**
 * MetricMapping (`mm`): one metric, which objects it describes, and where its value
 * comes from. The zod schema is the single source of truth for the CRD
 * (`crds/governor.dev_metricmappings.yaml`).
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { z } from "zod";
import {
  API_VERSION,
  ConditionSchema,
  DNS_SUBDOMAIN_PATTERN,
  Duration,
  ObjectName,
  Quantity,
  SecretKeyRef,
  SOURCE_CREDENTIAL_LABEL,
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

/** The longest URL (a Prometheus address, an HTTP source's URL, a scrape path). */
const MAX_URL_LENGTH = 2048;
/** The longest query: what src/sources/promql-scope.ts parses. */
const MAX_QUERY_BYTES = 16 * 1024;
/** The longest series or label name. */
const MAX_NAME_LENGTH = 256;
/** The longest JSONPath. */
const MAX_JSON_PATH_LENGTH = 1024;
/** The most labels a scrape source matches. */
const MAX_MATCH_LABELS = 32;

const Prometheus = z
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
    timeout: Timeout,
    bearerTokenSecret: SecretKeyRef.optional(),
    basicAuthSecret: SecretRef.optional().meta({
      description: `A Secret with keys username and password, sent as HTTP basic auth; labelled ${SOURCE_CREDENTIAL_LABEL}=true.`,
    }),
    caSecret: SecretKeyRef.optional(),
  })
  .meta({ description: "Read the value from a Prometheus instant query." });

const Scrape = z
  .object({
    port: z.number().int().min(1).max(65535),
    path: z.string().max(MAX_URL_LENGTH).regex(/^\//, "must start with /").default("/metrics"),
    scheme: z.enum(["http", "https"]).default("http"),
    series: z
      .string()
      .min(1)
      .max(MAX_NAME_LENGTH)
      .meta({ description: "Name of the series to read, e.g. http_requests_total." }),
    matchLabels: withRules(StringMap, [
      {
        rule: `self.size() <= ${MAX_MATCH_LABELS}`,
        message: `at most ${MAX_MATCH_LABELS} labels`,
        check: (self) => Object.keys(self).length <= MAX_MATCH_LABELS,
      },
    ])
      .optional()
      .meta({ description: `Only samples with these labels (at most ${MAX_MATCH_LABELS}).` }),
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

const Http = z
  .object({
    url: z.url().max(MAX_URL_LENGTH),
    jsonPath: z
      .string()
      .min(1)
      .max(MAX_JSON_PATH_LENGTH)
      .meta({ description: "JSONPath to a number in the response, e.g. $.queue.depth." }),
    headersSecret: HeadersSecret.optional(),
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

/** A MetricMapping as stored (its spec not yet validated). */
export interface MetricMappingObject extends KubernetesObject {
  spec?: unknown;
  status?: MetricMappingStatus;
}

/** Where MetricMappings are watched, in every namespace. */
export const METRIC_MAPPINGS_PATH = `/apis/${API_VERSION}/metricmappings`;
