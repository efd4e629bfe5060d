/**
 * What a source kind is: one file under src/sources/ that exports its part of the
 * MetricMapping schema (`spec.source.<kind>`, from which the CRD is generated) and the
 * builder of its {@link MetricSource}, put together by {@link defineSource};
 * src/sources/registry.ts lists the kinds. Also the schema pieces kinds share.
 */
import type { z } from "zod";
import { Duration, durationBetween, withRules } from "../api/common.js";
import type { KubeApi } from "../k8s/client.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import type { AnswerDecoder } from "./answer-decoder.js";
import type { DestinationPolicy } from "./destination-policy.js";
import type { OtlpStore } from "./otlp-store.js";
import type { QueryScope } from "./promql-scope.js";
import type { SecretReader } from "./secrets.js";
import { type MetricSource, type SampleValue, SourceConfigError } from "./source.js";

/** A MetricMapping as this replica serves it: what a formula reads of its inputs. */
export interface ServedMapping {
  readonly staleAfterMs: number;
  readonly sampler: {
    readonly state: { readonly last?: { value: SampleValue; atMs: number }; readonly error?: string };
    readonly source: MetricSource;
    /** Counts as a read (an idle sampler goes back to its interval). */
    markRead(): void;
  };
  /** Its kept samples (`--history-points`) taken at or after `sinceMs`, oldest first; none when it keeps none. */
  recorded?(sinceMs: number): { atMs: number[]; sum: number[]; count: number[] } | undefined;
}

/** The MetricMappings this replica serves, by namespace and name (the MetricMapping reconciler). */
export interface MappingReader {
  /** The mapping, or why it is not served ("does not exist", its Ready condition), for a message. */
  read(namespace: string, name: string): ServedMapping | string;
}

/** What a source may use besides its spec: the mapping's namespace and the operator's parts and settings. */
export interface SourceContext {
  namespace: string;
  /** The mapping's own name. */
  name?: string;
  /** The other mappings (a formula's inputs). */
  mappings?: MappingReader;
  /** The mapping's sampling interval, in ms. */
  intervalMs?: number;
  /** The mapping's `staleAfter`, in ms. */
  staleAfterMs?: number;
  client?: KubeApi;
  mapper?: ResourceMapper;
  secrets?: SecretReader;
  /** Where sources may connect. @default DEFAULT_DESTINATION_POLICY */
  policy?: DestinationPolicy;
  /** The most a source may read from one answer, in bytes. @default MAX_RESPONSE_BYTES */
  maxResponseBytes?: number;
  /** Decodes sources' answers. @default sharedAnswerDecoder() */
  decoder?: AnswerDecoder;
  /** Whether `kubernetes` counts may read beyond the mapping's namespace. @default false */
  clusterWideCounts?: boolean;
  /** How Prometheus queries are bound to the namespace. @default { namespaceLabel: "namespace" } */
  prometheusScope?: QueryScope;
  /** Whether `scrape` reads pods on their node's network. @default false */
  hostNetworkScrape?: boolean;
  /** What pushers sent over OTLP; unset when the receiver is off. */
  otlp?: OtlpStore;
}

/** One kind of source: see the module comment. */
export interface SourceDefinition<S extends z.ZodType = z.ZodType> {
  /** Its key under `spec.source`. */
  readonly kind: string;
  /** Its part of the MetricMapping schema. */
  readonly schema: S;
  /** The only subject resource it can describe (`pods` for scrape), and what a mapping with another is told. */
  readonly subject?: { resource: string; message: string };
  /** Builds the source; throws {@link SourceConfigError} for a spec it cannot run. */
  build(spec: z.output<S>, ctx: SourceContext): MetricSource;
  /** The window of the rate it serves when the mapping names none, for a sampling interval. */
  rateWindowMs?(spec: z.output<S>, intervalMs: number): number | undefined;
}

/** A source kind, its types carried from its schema to its builder. */
export function defineSource<S extends z.ZodType>(definition: SourceDefinition<S>): SourceDefinition<S> {
  return definition;
}

/** `ctx`'s part a source kind cannot run without. */
export function required<T>(value: T | undefined, kind: string, what: string): T {
  if (value === undefined) throw new SourceConfigError(`the ${kind} source needs ${what}`);
  return value;
}

/**
 * The backend (ADR 0018) of a URL's requests: its origin, with a host's final dot dropped
 * and a Service's `….svc.cluster.local` written `….svc`, so that those spellings of one
 * server share its budget. Other names of one server (a Service's short name, its
 * ClusterIP) are other backends.
 */
export function backendOf(url: string): string {
  const u = new URL(url);
  u.hostname = u.hostname.replace(/\.+$/, "").replace(/\.svc\.cluster\.local$/, ".svc");
  return u.origin;
}

/** The longest URL (a Prometheus address, an HTTP source's URL, a scrape path). */
export const MAX_URL_LENGTH = 2048;
/** The longest series or label name. */
export const MAX_NAME_LENGTH = 256;

/** How long one source request may take. */
export const SourceTimeout = withRules(Duration, [durationBetween("100ms", "1m", "timeout")])
  .default("5s")
  .meta({ description: "How long one request to the source may take (100ms to 1m)." });
