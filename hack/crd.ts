/**
 * Generates CustomResourceDefinitions from the zod schemas: a structural OpenAPI v3
 * schema (no `additionalProperties: false`, no JSON-Schema-only keywords), CEL validation
 * rules (`x-kubernetes-validations`), defaults, descriptions, printer columns, short names,
 * the `governor` category, and the status (and scale) subresources.
 */
import { z } from "zod";
import { GROUP, VERSION } from "../src/api/common.js";

/** What the generator needs to know about a kind. */
export interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: readonly string[];
  /** @default "Namespaced" */
  scope?: "Namespaced" | "Cluster";
  spec: z.ZodType;
  status: z.ZodType;
  /** `priority: 1` columns are shown by `kubectl get -o wide` only. */
  printerColumns: readonly {
    name: string;
    type: string;
    jsonPath: string;
    description?: string;
    priority?: number;
  }[];
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath: string };
}

type Json = Record<string, unknown>;

const DROP_KEYS = new Set(["$schema", "propertyNames", "id", "$id"]);
/** Formats Kubernetes knows; others (zod's `starts_with`…) are dropped, the pattern stays. */
const KUBERNETES_FORMATS = new Set([
  "int32",
  "int64",
  "float",
  "double",
  "byte",
  "date",
  "date-time",
  "uri",
  "email",
  "hostname",
  "ipv4",
  "ipv6",
  "uuid",
  "duration",
]);

/** Rewrites a JSON Schema (zod output) into a Kubernetes structural schema. */
export function toStructural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(toStructural);
  if (node === null || typeof node !== "object") return node;
  const out: Json = {};
  for (const [key, value] of Object.entries(node as Json)) {
    if (DROP_KEYS.has(key)) continue;
    if (key === "additionalProperties") {
      // false (zod's strictness) and {} (loose objects) have no place in a structural schema.
      if (
        value === false ||
        value === true ||
        (typeof value === "object" && value && Object.keys(value).length === 0)
      )
        continue;
    }
    if (
      (key === "minimum" && value === Number.MIN_SAFE_INTEGER) ||
      (key === "maximum" && value === Number.MAX_SAFE_INTEGER)
    )
      continue;
    if (key === "format" && !KUBERNETES_FORMATS.has(String(value))) continue;
    out[key] = toStructural(value);
  }
  if (out["x-kubernetes-preserve-unknown-fields"] === true) delete out.properties;
  return out;
}

function schemaOf(t: z.ZodType): Json {
  return toStructural(z.toJSONSchema(t, { io: "input", unrepresentable: "any" })) as Json;
}

/** The CRD object for a kind (apiextensions.k8s.io/v1). */
export function buildCRD(def: KindDefinition) {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${def.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "governor", "app.kubernetes.io/part-of": "governor" },
    },
    spec: {
      group: GROUP,
      scope: def.scope ?? "Namespaced",
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: ["governor"],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: `${def.kind} (${GROUP}/${VERSION}).`,
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: schemaOf(def.spec),
                status: schemaOf(def.status),
              },
            },
          },
          subresources: { status: {}, ...(def.scale ? { scale: { ...def.scale } } : {}) },
          additionalPrinterColumns: def.printerColumns.map((c) => ({ ...c })),
        },
      ],
    },
  };
}
