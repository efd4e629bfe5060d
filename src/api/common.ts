/**
 * Schema pieces shared by Governor's CRDs. Every schema here is zod (validated in the
 * operator) and also the source of the CRD's OpenAPI schema (`npm run generate`), so
 * what the apiserver enforces at admission and what the operator accepts are one
 * definition.
 */
import { z } from "zod";
import { QUANTITY_PATTERN } from "../metrics/quantity.js";

export const GROUP = "governor.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** `15s`, `1m30s`, `500ms`, `2h`: Go duration syntax without the units nobody needs. */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";

/** A duration string, e.g. `15s`. */
export const Duration = z
  .string()
  .regex(new RegExp(DURATION_PATTERN), "must be a duration such as 15s, 2m or 1h30m");

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

/** A reference to a Secret in the object's own namespace. */
export const SecretRef = z
  .object({ name: ObjectName })
  .meta({ description: "A Secret in the same namespace." });

/** A reference to a key of a Secret in the object's own namespace. */
export const SecretKeyRef = z
  .object({ name: ObjectName, key: SecretDataKey })
  .meta({ description: "A key of a Secret in the same namespace." });

/**
 * Marks an object schema as "exactly one of these keys": the operator checks it, and the
 * generated CRD expresses it as `oneOf: [{required: [a]}, {required: [b]}, …]`, which
 * Kubernetes enforces at admission (CEL is not available before 1.25).
 */
export const ONE_OF_KEY = "x-governor-exactly-one-of";

/** Adds the zod check and the CRD marker for "exactly one of `keys`". */
export function exactlyOneOf<T extends z.ZodObject>(schema: T, keys: readonly string[], what: string) {
  return schema
    .superRefine((value: Record<string, unknown>, ctx) => {
      const set = keys.filter((k) => value[k] !== undefined);
      if (set.length !== 1) {
        ctx.addIssue({
          code: "custom",
          message: `${what}: set exactly one of ${keys.join(", ")} (found ${set.length === 0 ? "none" : set.join(", ")})`,
        });
      }
    })
    .meta({ [ONE_OF_KEY]: [...keys] });
}
