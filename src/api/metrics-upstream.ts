/**
 * MetricsUpstream (`mu`, cluster-scoped): another metrics adapter Governor sits in front of
 * (ADR 0024). Governor answers every metric a MetricMapping serves in the request's
 * namespace; the rest of a group goes to the upstream whose route claims the metric, and a
 * request no route claims to the catch-all (`--forward-*`), if there is one. The zod
 * schema is the single source of truth for the CRD (`crds/governor.dev_metricsupstreams.yaml`).
 */
import { z } from "zod";
import {
  API_VERSION,
  ConditionSchema,
  LabelSelectorSchema,
  ObjectName,
  SecretDataKey,
  withRules,
} from "./common.js";

/** The groups an upstream can answer for. */
export const UPSTREAM_GROUPS = ["custom.metrics.k8s.io", "external.metrics.k8s.io"] as const;

/**
 * A route's metric name: a name, or a glob where `*` is any run of characters and `?` one
 * (`kafka_*`, `s*-prometheus`). The characters of a metric name and the two wildcards only.
 */
export const METRIC_GLOB_PATTERN = "^[A-Za-z0-9_:.*?-]+$";

/** A DNS-1123 label: a namespace's or Service's name. */
const DnsLabel = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must be a DNS label: lower-case letters, digits and '-'");

const Service = z
  .object({
    namespace: DnsLabel,
    name: DnsLabel,
    port: z.number().int().min(1).max(65535).default(443),
  })
  .meta({ description: "The upstream adapter's Service, as its APIService names it." });

const SecretKeySelector = z
  .object({
    namespace: DnsLabel,
    name: ObjectName,
    key: SecretDataKey.default("ca.crt"),
  })
  .meta({
    description:
      "A Secret holding the upstream's CA (PEM) under key (default ca.crt). Governor needs get on it: a Role and RoleBinding in that namespace.",
  });

const Namespaces = withRules(
  z.object({
    names: z.array(DnsLabel).min(1).max(256).optional().meta({ description: "These namespaces only." }),
    selector: LabelSelectorSchema.optional().meta({ description: "Namespaces whose labels match." }),
  }),
  [
    {
      rule: "[has(self.names), has(self.selector)].exists_one(x, x)",
      message: "namespaces: set exactly one of names, selector",
      check: (self) => (self.names === undefined) !== (self.selector === undefined),
    },
  ],
).meta({ description: "The namespaces this route serves: a list, or a label selector over Namespaces." });

const fields = z.object({
  service: Service,
  groups: z.array(z.enum(UPSTREAM_GROUPS)).min(1).max(2).meta({
    description: "The metrics APIs it answers: custom.metrics.k8s.io and/or external.metrics.k8s.io.",
  }),
  caBundle: z
    .string()
    .max(65536)
    .regex(/^[A-Za-z0-9+/=\s]+$/, "must be base64")
    .optional()
    .meta({
      description:
        "The CA (base64 PEM, as an APIService's caBundle) its serving certificate is checked against. Unset, with no caSecretRef: the caBundle of the APIService Governor took over from it.",
    }),
  caSecretRef: SecretKeySelector.optional(),
  metrics: z
    .array(
      z
        .string()
        .min(1)
        .max(253)
        .regex(new RegExp(METRIC_GLOB_PATTERN), "must be a metric name or a glob of one (* and ?)"),
    )
    .min(1)
    .max(64)
    .optional()
    .meta({
      description:
        "The metrics this route claims: names or globs (kafka_*, s*-prometheus). Unset: the metrics the upstream lists in its discovery.",
    }),
  namespaces: Namespaces.optional(),
  priority: z.number().int().min(-1000).max(1000).default(0).meta({
    description:
      "Where routes overlap the highest priority wins (then an upstream that lists the metric, then the name).",
  }),
});

const spec = withRules(fields, [
  {
    rule: "!has(self.caBundle) || !has(self.caSecretRef)",
    message: "set at most one of caBundle, caSecretRef",
    check: (self) => self.caBundle === undefined || self.caSecretRef === undefined,
  },
  {
    rule: "self.groups.all(g, self.groups.exists_one(h, h == g))",
    message: "groups: each group once",
    fieldPath: ".groups",
    check: (self) => new Set(self.groups).size === self.groups.length,
  },
]);

const status = z.object({
  observedGeneration: z.number().int().optional(),
  conditions: z.array(ConditionSchema).optional(),
  service: z.string().optional().meta({ description: "namespace/name:port (for display)." }),
  metrics: z
    .number()
    .int()
    .optional()
    .meta({ description: "Metrics it listed in its discovery when last read." }),
  latency: z.string().optional().meta({ description: "How long its last discovery read took." }),
  lastError: z.string().optional().meta({ description: "Why its last discovery read failed, if it did." }),
  lastDiscoveryTime: z.string().optional(),
});

export type MetricsUpstreamSpec = z.output<typeof spec>;
export type MetricsUpstreamStatus = z.output<typeof status>;

/** A MetricsUpstream as read from the apiserver. */
export interface MetricsUpstreamObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; uid?: string; generation?: number; resourceVersion?: string };
  spec?: unknown;
  status?: MetricsUpstreamStatus;
}

export const MetricsUpstreamKind = {
  kind: "MetricsUpstream",
  plural: "metricsupstreams",
  singular: "metricsupstream",
  shortNames: ["mu"],
  scope: "Cluster",
  spec,
  status,
  printerColumns: [
    { name: "Service", type: "string", jsonPath: ".status.service" },
    { name: "Available", type: "string", jsonPath: '.status.conditions[?(@.type=="Available")].status' },
    { name: "Metrics", type: "integer", jsonPath: ".status.metrics" },
    { name: "Latency", type: "string", jsonPath: ".status.latency" },
    { name: "Last-Error", type: "string", jsonPath: ".status.lastError" },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    { name: "Priority", type: "integer", priority: 1, jsonPath: ".spec.priority" },
    { name: "Groups", type: "string", priority: 1, jsonPath: ".spec.groups" },
  ],
} as const;

/** Where MetricsUpstreams are watched. */
export const METRICS_UPSTREAMS_PATH = `/apis/${API_VERSION}/metricsupstreams`;
