/**
 * ScalableWorkload (`sw`): a scale target with a `/scale` subresource. The HPA (or
 * `kubectl scale`) sets `.spec.replicas`; Governor carries it onto a Deployment it owns
 * (from `template`) or onto an existing Deployment/StatefulSet (`workloadRef`), and can
 * write the HPA itself (`autoscaling`).
 */
import { z } from "zod";
import {
  ConditionSchema,
  Duration,
  LabelSelectorSchema,
  ObjectName,
  Quantity,
  durationBetween,
  exactlyOne,
  withRules,
} from "./common.js";

const MetricTarget = withRules(
  z.object({
    averageValue: Quantity.optional().meta({
      description: "Target per pod (Pods metrics) or per replica (Object/External).",
    }),
    value: Quantity.optional().meta({ description: "Target for the whole value (Object/External metrics)." }),
  }),
  [exactlyOne(["averageValue", "value"], "target")],
);

const MetricObject = z
  .object({ apiVersion: z.string().min(1).max(253), kind: z.string().min(1).max(63), name: ObjectName })
  .optional()
  .meta({
    description:
      "For a mapping whose subject is not pods: the object to read the metric of. Default: this ScalableWorkload.",
  });

const AutoscalingMetric = z.object({
  mapping: ObjectName.meta({ description: "Name of a MetricMapping in the same namespace." }),
  object: MetricObject,
  target: MetricTarget,
});

/** One direction of `behavior`, within the limits the apiserver holds an HPA's to. */
const ScalingRules = z.object({
  stabilizationWindowSeconds: z.number().int().min(0).max(3600).optional().meta({
    description: "0 to 3600: the window of recommendations a change is held against.",
  }),
  selectPolicy: z.enum(["Max", "Min", "Disabled"]).optional(),
  policies: z
    .array(
      z.object({
        type: z.enum(["Pods", "Percent"]),
        value: z.number().int().min(1).max(1_000_000),
        periodSeconds: z.number().int().min(1).max(1800),
      }),
    )
    .min(1)
    .max(10)
    .optional(),
  tolerance: Quantity.optional().meta({
    description:
      'The ratio within which a metric counts as at its target, as a quantity string ("0.05", 50m).',
  }),
});

/**
 * What wakes a workload at 0 replicas and lets it go back there (`minReplicas: 0`).
 * Governor moves 0 → 1 and back to 0 itself; the HPA scales between 1 and maxReplicas.
 */
const Activation = z
  .object({
    mapping: ObjectName.meta({
      description:
        "Name of a MetricMapping in the same namespace whose subject is external or an object (not pods: with no pods there is nothing to read).",
    }),
    object: MetricObject,
    threshold: Quantity.default("0").meta({
      description:
        "The workload is active while the value is above this (default 0), separate from the HPA's targets.",
    }),
    cooldown: withRules(Duration, [durationBetween("0s", "24h", "cooldown")])
      .default("5m")
      .meta({
        description:
          "How long the value must stay at or below the threshold before the workload goes to 0 (0s to 24h).",
      }),
  })
  .meta({
    description:
      "With minReplicas 0: the metric that wakes the workload (0 → 1) and, after the cooldown at or below its threshold, lets it go back to 0. A failing or stale value never changes the replicas.",
  });

/** ScalableWorkload `.spec`. */
export const ScalableWorkloadSpec = withRules(
  z.object({
    replicas: z
      .number()
      .int()
      .min(0)
      .default(1)
      .meta({ description: "Desired replicas; the /scale subresource's spec." }),
    selector: LabelSelectorSchema.optional().meta({
      description:
        "Pods of the workload. Required with template (must match its labels); taken from the workload with workloadRef.",
    }),
    template: z.looseObject({}).optional().meta({
      description: "A PodTemplateSpec: Governor owns a Deployment built from it.",
      "x-kubernetes-preserve-unknown-fields": true,
    }),
    workloadRef: z
      .object({
        apiVersion: z.enum(["apps/v1"]),
        kind: z.enum(["Deployment", "StatefulSet"]),
        name: ObjectName,
      })
      .optional()
      .meta({
        description: "Drive the replicas of an existing Deployment or StatefulSet in the same namespace.",
      }),
    autoscaling: withRules(
      z.object({
        minReplicas: z.number().int().min(0).default(1).meta({
          description: "0 lets the workload idle at no replicas: needs activation.",
        }),
        maxReplicas: z.number().int().min(1),
        mode: z.enum(["Scale", "Shadow"]).default("Scale").meta({
          description:
            "Scale (default): Governor writes and owns the HPA that scales the workload. Shadow: no HPA and no change to the replicas; Governor computes what the HPA would choose at each sync into status.recommendation (an Event on each change, governor_recommended_replicas on /metrics), to run a new metric beside the live autoscaler and compare.",
        }),
        activation: Activation.optional(),
        metrics: z.array(AutoscalingMetric).min(1).max(16),
        behavior: z
          .object({ scaleUp: ScalingRules.optional(), scaleDown: ScalingRules.optional() })
          .optional()
          .meta({
            description:
              "HorizontalPodAutoscaler behavior (autoscaling/v2), with the HPA's own limits: copied onto the HPA, and what recommendations use.",
          }),
      }),
      [
        {
          rule: "self.minReplicas <= self.maxReplicas",
          message: "minReplicas must not exceed maxReplicas",
          fieldPath: ".minReplicas",
          check: (self) => self.minReplicas <= self.maxReplicas,
        },
        {
          rule: "self.minReplicas == 0 ? has(self.activation) : !has(self.activation)",
          message:
            "minReplicas 0 needs activation (the External or Object metric that wakes the workload), and activation needs minReplicas 0",
          fieldPath: ".activation",
          check: (self) => (self.minReplicas === 0) === (self.activation !== undefined),
        },
        {
          rule: "!has(self.mode) || self.mode != 'Shadow' || !has(self.activation)",
          message:
            "mode Shadow never moves the replicas, so it runs no activation: shadow a configuration with minReplicas 1 or more",
          fieldPath: ".mode",
          check: (self) => self.mode !== "Shadow" || self.activation === undefined,
        },
      ],
    )
      .optional()
      .meta({
        description:
          "Governor writes and owns an HPA targeting this ScalableWorkload (or, in mode Shadow, only records what it would do).",
      }),
  }),
  [
    exactlyOne(["template", "workloadRef"], "spec"),
    {
      rule: "!has(self.template) || has(self.selector)",
      message: "spec.selector is required with spec.template (it must select the template's labels)",
      fieldPath: ".selector",
      check: (self) => !self.template || self.selector !== undefined,
    },
  ],
);
export type ScalableWorkloadSpec = z.infer<typeof ScalableWorkloadSpec>;

/** ScalableWorkload `.status`. */
export const ScalableWorkloadStatus = z.object({
  observedGeneration: z.number().int().optional(),
  mode: z.enum(["Owned", "Reference"]).optional().meta({
    description:
      "Owned: Governor owns a Deployment built from spec.template; Reference: it drives spec.workloadRef.",
  }),
  replicas: z
    .number()
    .int()
    .optional()
    .meta({ description: "Current replicas of the workload; the /scale subresource's status." }),
  readyReplicas: z.number().int().optional(),
  selector: z
    .string()
    .optional()
    .meta({ description: "The pods' label selector in string form (for the HPA)." }),
  workload: z.string().optional().meta({ description: "Kind/name of the driven workload (for display)." }),
  activation: z
    .object({
      value: z
        .string()
        .optional()
        .meta({ description: "The activation metric's value when it last changed sides." }),
      belowThresholdSince: z.string().optional().meta({
        description:
          "Since when every reading has been at or below the threshold (the cooldown runs from here).",
      }),
    })
    .optional()
    .meta({ description: "With spec.autoscaling.activation: what the Active condition is decided from." }),
  recommendation: z
    .object({
      replicas: z.number().int().meta({
        description: "The replicas the HPA's algorithm chooses at its sync, from the values Governor serves.",
      }),
      metric: z.string().optional().meta({
        description:
          "The MetricMapping whose proposal decides (the largest); absent when none could be computed.",
      }),
      reason: z.string().meta({
        description:
          "Why: AboveTarget, BelowTarget, WithinTolerance, ScaleUpStabilized, ScaleDownStabilized, ScaleUpLimit, ScaleDownLimit, TooFewReplicas, TooManyReplicas, or why no metric could be read (FailedGetPodsMetric…).",
      }),
      message: z.string().optional(),
      time: z.string().meta({ description: "When the recommendation last changed (RFC 3339)." }),
    })
    .optional()
    .meta({
      description:
        "With spec.autoscaling, on the leader: what the HPA's algorithm recommends now (kubectl get sw shows the replicas). In mode Shadow nothing acts on it.",
    }),
  conditions: z.array(ConditionSchema).optional(),
});
export type ScalableWorkloadStatus = z.infer<typeof ScalableWorkloadStatus>;

/** The ScalableWorkload kind, as the CRD generator and reconciler see it. */
export const ScalableWorkloadKind = {
  kind: "ScalableWorkload",
  plural: "scalableworkloads",
  singular: "scalableworkload",
  shortNames: ["sw"],
  spec: ScalableWorkloadSpec,
  status: ScalableWorkloadStatus,
  scale: {
    specReplicasPath: ".spec.replicas",
    statusReplicasPath: ".status.replicas",
    labelSelectorPath: ".status.selector",
  },
  printerColumns: [
    { name: "Mode", type: "string", jsonPath: ".status.mode" },
    { name: "Workload", type: "string", jsonPath: ".status.workload" },
    { name: "Desired", type: "integer", jsonPath: ".spec.replicas" },
    { name: "Current", type: "integer", jsonPath: ".status.replicas" },
    { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas" },
    {
      name: "Recommended",
      type: "integer",
      jsonPath: ".status.recommendation.replicas",
      description:
        "With spec.autoscaling: the replicas the HPA's algorithm chooses now from Governor's values (in mode Shadow, what it would choose).",
    },
    {
      name: "Status",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
      description: "The Ready condition's reason: Reconciled, or what is wrong.",
    },
    {
      name: "Active",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Active")].status',
      description:
        "With minReplicas 0: whether the workload is awake (True) or idle at 0 (False); Unknown while its activation metric cannot be read.",
    },
    {
      name: "Autoscaling",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Autoscaling")].reason',
      description:
        "What the owned HPA says (ValidMetricFound, or why it cannot scale); empty without spec.autoscaling.",
    },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    {
      name: "Message",
      type: "string",
      priority: 1,
      jsonPath: '.status.conditions[?(@.type=="Ready")].message',
    },
    {
      name: "Why",
      type: "string",
      priority: 1,
      jsonPath: ".status.recommendation.reason",
      description: "Why the recommendation is what it is (status.recommendation.message says more).",
    },
    {
      name: "Activation",
      type: "string",
      priority: 1,
      jsonPath: '.status.conditions[?(@.type=="Active")].message',
      description:
        "Why the workload is (not) active: the value against the threshold, when the cooldown ends.",
    },
  ],
} as const;
