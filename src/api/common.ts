/**
 * Schema pieces shared by Governor's CRDs. Every schema here is zod (validated in the
 * operator) and also the source of the CRD's OpenAPI schema (`npm run generate`), so
 * what the apiserver enforces at admission and what the operator accepts are one
 * definition.
 */
import { z } from "zod";
import { QUANTITY_PATTERN } from "./quantity.js";

export const GROUP = "governor.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** `15s`, `1m30s`, `500ms`, `2h`: Go duration syntax without the units nobody needs. */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";

/** A duration string, e.g. `15s` (at most 32 characters, which bounds the CEL rules' cost). */
export const Duration = z
  .string()
  .max(32)
  .regex(new RegExp(DURATION_PATTERN), "must be a duration such as 15s, 2m or 1h30m");

/**
 * What is wrong with a spec, for an `InvalidSpec` condition: each problem as
 * `path.to.field: message` (`spec` for the spec as a whole), joined by "; ".
 */
export function specProblems(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join(".") || "spec"}: ${i.message}`).join("; ");
}

/** Parses a {@link Duration} to milliseconds. */
export function durationMs(text: string): number {
  let total = 0;
  for (const m of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    const n = Number(m[1]);
    total += m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : m[2] === "m" ? n * 60_000 : n * 3_600_000;
  }
  return total;
}

/** A Kubernetes quantity string such as `42`, `1500m`, `2k`. */
export const Quantity = z
  .string()
  .regex(new RegExp(QUANTITY_PATTERN), "must be a Kubernetes quantity such as 42, 1500m or 2k");

/** A label key or value map (`app: web`). */
export const StringMap = z.record(z.string(), z.string());

/** `metav1.LabelSelector`. */
export const LabelSelectorSchema = z
  .object({
    matchLabels: StringMap.optional(),
    matchExpressions: z
      .array(
        z.object({
          key: z.string(),
          operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
          values: z.array(z.string()).optional(),
        }),
      )
      .optional(),
  })
  .meta({ description: "A label selector (matchLabels and/or matchExpressions)." });

/** `metav1.Condition`. */
export const ConditionSchema = z.object({
  type: z.string(),
  status: z.enum(["True", "False", "Unknown"]),
  observedGeneration: z.number().int().optional(),
  lastTransitionTime: z.string(),
  reason: z.string(),
  message: z.string(),
});
export type Condition = z.infer<typeof ConditionSchema>;

/**
 * A DNS-1123 subdomain, the name rule of Secrets, Deployments, MetricMappings and most
 * other objects: lower-case alphanumerics, `-` and `.`, at most 253 characters. It can
 * never be `.`, `..` or contain `/` or `%`, so a name from a CR is always exactly one
 * path segment.
 */
export const DNS_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/** The name of an object in the same namespace (see {@link DNS_SUBDOMAIN_PATTERN}). */
export const ObjectName = z
  .string()
  .min(1)
  .max(253)
  .regex(
    new RegExp(DNS_SUBDOMAIN_PATTERN),
    "must be an object name: lower-case letters, digits, '-' and '.', at most 253 characters",
  );

/** A key of a Secret's `data`: what Kubernetes itself allows (`[-._a-zA-Z0-9]+`). */
export const SecretDataKey = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[-._a-zA-Z0-9]+$/, "must be a Secret key: letters, digits, '-', '_' and '.'");

/**
 * The label a Secret carries when its owner lets MetricMappings send it to a source
 * (`"true"`); Governor reads no other Secret as a source credential. A label, not an
 * annotation: an admin lists every such Secret with `kubectl get secret -A -l
 * governor.dev/source-credential=true`, and admission policies can select on it.
 */
export const SOURCE_CREDENTIAL_LABEL = `${GROUP}/source-credential`;

/** A reference to a source-credential Secret in the object's own namespace. */
export const SecretRef = z
  .object({ name: ObjectName })
  .meta({ description: `A Secret in the same namespace, labelled ${SOURCE_CREDENTIAL_LABEL}=true.` });

/** A reference to a key of a source-credential Secret in the object's own namespace. */
export const SecretKeyRef = z.object({ name: ObjectName, key: SecretDataKey }).meta({
  description: `A key of a Secret in the same namespace, labelled ${SOURCE_CREDENTIAL_LABEL}=true.`,
});

/** The CRD schema key for CEL validation rules (Kubernetes ≥ 1.25; GA in 1.29). */
export const VALIDATIONS_KEY = "x-kubernetes-validations";

/**
 * A validation rule stated once with two evaluators: `rule` is CEL, which the apiserver
 * enforces at admission (`kubectl apply` fails with `message`), and `check` is the same
 * rule in TypeScript, which the operator enforces through zod (for objects written
 * before the rule existed). A test runs both over the same cases.
 */
export interface ValidationRule<T> {
  /** CEL over `self` (the value the rule is attached to). */
  rule: string;
  /** What the user is told, at admission and in `status.conditions`. */
  message: string;
  /** The field the message is about, relative to `self` (`.staleAfter`). */
  fieldPath?: string;
  check: (self: T) => boolean;
}

/** Attaches {@link ValidationRule}s: a zod refinement each, and the CRD's `x-kubernetes-validations`. */
export function withRules<T extends z.ZodType>(schema: T, rules: readonly ValidationRule<z.output<T>>[]) {
  return schema
    .superRefine((value, ctx) => {
      for (const r of rules)
        if (!r.check(value))
          ctx.addIssue({
            code: "custom",
            message: r.message,
            path: r.fieldPath ? r.fieldPath.slice(1).split(".") : [],
          });
    })
    .meta({
      [VALIDATIONS_KEY]: rules.map(({ rule, message, fieldPath }) => ({
        rule,
        message,
        ...(fieldPath ? { fieldPath } : {}),
      })),
    });
}

/** The rule "exactly one of `keys` is set" for an object schema. */
export function exactlyOne(keys: readonly string[], what: string): ValidationRule<Record<string, unknown>> {
  return {
    rule: `[${keys.map((k) => `has(self.${k})`).join(", ")}].exists_one(x, x)`,
    message: `${what}: set exactly one of ${keys.join(", ")}`,
    check: (self) => keys.filter((k) => self[k] !== undefined).length === 1,
  };
}

/** The rule "a duration between `min` and `max`" for a {@link Duration}. */
export function durationBetween(min: string, max: string, what: string): ValidationRule<string> {
  return {
    rule: `duration(self) >= duration('${min}') && duration(self) <= duration('${max}')`,
    message: `${what} must be between ${min} and ${max}`,
    check: (self) => durationMs(self) >= durationMs(min) && durationMs(self) <= durationMs(max),
  };
}
