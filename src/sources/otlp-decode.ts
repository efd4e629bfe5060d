/**
 * What an OTLP/HTTP metrics export (`ExportMetricsServiceRequest`, protobuf or JSON) says,
 * reduced to the data points of the metrics some mapping reads: everything else is counted
 * and dropped here, so memory follows what mappings select, not what pushers send. The
 * schema is the OpenTelemetry project's own (src/sources/otlp-schema.ts, from its published
 * Go module); @bufbuild/protobuf decodes by it. Pure, like src/sources/answers.ts: it runs
 * on the event loop for small bodies and in the parse worker for large ones.
 */
import {
  createFileRegistry,
  create,
  fromBinary,
  fromJson,
  toBinary,
  toJsonString,
  type DescMessage,
  type JsonValue,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { createHash } from "node:crypto";
import { OTLP_METRICS_DESCRIPTORS } from "./otlp-schema.js";

/** The resource attribute naming the pod a series is from (OpenTelemetry's semantic conventions). */
export const POD_NAME_ATTRIBUTE = "k8s.pod.name";
/** The resource attribute holding the pod's uid, where it names no pod name. */
export const POD_UID_ATTRIBUTE = "k8s.pod.uid";

/** How a body is encoded (its Content-Type). */
export type OtlpEncoding = "protobuf" | "json";

/** The longest attribute key kept. */
export const MAX_ATTRIBUTE_KEY = 256;
/** The longest attribute value kept. */
export const MAX_ATTRIBUTE_VALUE = 1024;
/** The most attributes (a resource's and a point's together) a data point may have. */
export const MAX_ATTRIBUTES = 64;
/** The most characters a data point's attributes (keys and values, the resource's and its own) may have together. */
export const MAX_ATTRIBUTE_CHARS = 4096;
/** A series key longer than this is kept as its digest. */
const MAX_PLAIN_KEY = 128;
/** The most buckets a histogram point may have. */
export const MAX_BUCKETS = 512;
/** The longest metric name (OpenTelemetry's instrument names are at most 255 characters). */
export const MAX_METRIC_NAME = 255;
/** How deep messages may nest (attributes holding lists of lists…). */
const RECURSION_LIMIT = 32;

/** One data point of a selected metric. */
export interface OtlpPoint {
  metric: string;
  type: "gauge" | "sum" | "histogram";
  /** Sums and histograms: cumulative (else delta) temporality. */
  cumulative: boolean;
  /** Sums: monotonic. */
  monotonic: boolean;
  /** The resource's attributes, then the point's (a point's own win), as strings. */
  attributes: Record<string, string>;
  /** The point's start and time, in ms since the epoch (the pusher's clock); 0 when unset. */
  startMs: number;
  atMs: number;
  /** Gauges and sums: the value. Histograms: the count. */
  value: number;
  histogram?: { count: number; sum?: number; bounds: number[]; counts: number[] };
}

/**
 * What one export held: its kept points in columns (handed from the parse worker to the
 * event loop in a few copies, not one object per point), each point's attributes as its
 * series key ({@link seriesKey}).
 */
export interface OtlpBatch {
  /** The metric names points refer to, by index. */
  metrics: string[];
  /** Per point: its metric's index in `metrics`. */
  metric: Uint32Array;
  /** Per point: its attributes' series key (their digest, when long). */
  key: string[];
  /** Per point: the attributes mappings can match on ({@link OtlpBatchBuilder}'s `keep`), as a series key. */
  kept: string[];
  /** Per point: its type (0 gauge, 1 sum, 2 histogram), +4 when cumulative, +8 when monotonic. */
  flags: Uint8Array;
  startMs: Float64Array;
  atMs: Float64Array;
  value: Float64Array;
  /** Per point: a histogram's buckets, for histogram points only. */
  histograms: (OtlpPoint["histogram"] | null)[];
  /** Data points of metrics no mapping reads, dropped. */
  unselected: number;
  /** Data points of selected metrics refused, and why the first was. */
  rejected: number;
  rejectedReason?: string;
}

const TYPES = ["gauge", "sum", "histogram"] as const;

/** Point `i` of a batch, as one object (its attributes from its key). */
export function pointOf(batch: OtlpBatch, i: number): OtlpPoint {
  const flags = batch.flags[i]!;
  return {
    metric: batch.metrics[batch.metric[i]!]!,
    type: TYPES[flags & 3]!,
    cumulative: (flags & 4) !== 0,
    monotonic: (flags & 8) !== 0,
    attributes: attributesOfKey(batch.kept[i]!),
    startMs: batch.startMs[i]!,
    atMs: batch.atMs[i]!,
    value: batch.value[i]!,
    ...(batch.histograms[i] ? { histogram: batch.histograms[i] } : {}),
  };
}

/**
 * Builds an {@link OtlpBatch} point by point: each point's series key from all its
 * attributes, and of its attributes only those in `keep` (what the namespace's mappings
 * match on; every one when unset), so a series holds no more than mappings read of it.
 */
export class OtlpBatchBuilder {
  constructor(private readonly keep?: ReadonlySet<string>) {}

  private readonly metrics: string[] = [];
  private readonly metricIndex = new Map<string, number>();
  private readonly metric: number[] = [];
  private readonly key: string[] = [];
  private readonly kept: string[] = [];
  private readonly flags: number[] = [];
  private readonly startMs: number[] = [];
  private readonly atMs: number[] = [];
  private readonly value: number[] = [];
  private readonly histograms: (OtlpPoint["histogram"] | null)[] = [];
  unselected = 0;
  rejected = 0;
  rejectedReason?: string;

  add(p: OtlpPoint): this {
    let m = this.metricIndex.get(p.metric);
    if (m === undefined) {
      m = this.metrics.push(p.metric) - 1;
      this.metricIndex.set(p.metric, m);
    }
    this.metric.push(m);
    const key = seriesKey(p.attributes);
    this.key.push(
      key.length > MAX_PLAIN_KEY ? `#${createHash("sha256").update(key).digest("base64url")}` : key,
    );
    const keep = this.keep;
    if (!keep) this.kept.push(key);
    else {
      const kept = Object.create(null) as Record<string, string>;
      for (const k of keep) if (p.attributes[k] !== undefined) kept[k] = p.attributes[k];
      this.kept.push(seriesKey(kept));
    }
    this.flags.push(TYPES.indexOf(p.type) + (p.cumulative ? 4 : 0) + (p.monotonic ? 8 : 0));
    this.startMs.push(p.startMs);
    this.atMs.push(p.atMs);
    this.value.push(p.value);
    this.histograms.push(p.histogram ?? null);
    return this;
  }

  reject(n: number, why: string): void {
    this.rejected += n;
    this.rejectedReason ??= why;
  }

  finish(): OtlpBatch {
    return {
      metrics: this.metrics,
      metric: Uint32Array.from(this.metric),
      key: this.key,
      kept: this.kept,
      flags: Uint8Array.from(this.flags),
      startMs: Float64Array.from(this.startMs),
      atMs: Float64Array.from(this.atMs),
      value: Float64Array.from(this.value),
      histograms: this.histograms,
      unselected: this.unselected,
      rejected: this.rejected,
      ...(this.rejectedReason !== undefined ? { rejectedReason: this.rejectedReason } : {}),
    };
  }
}

/** A series' identity among its metric's: its attributes, in key order. */
export function seriesKey(attributes: Readonly<Record<string, string>>): string {
  const keys = Object.keys(attributes).sort();
  return JSON.stringify(keys.map((k) => [k, attributes[k]]));
}

/** The attributes a series key stands for, in a dictionary without a prototype. */
export function attributesOfKey(key: string): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
  for (const [k, v] of JSON.parse(key) as [string, string][]) out[k] = v;
  return out;
}

interface Schemas {
  request: DescMessage;
  response: DescMessage;
  status?: DescMessage;
}

let schemas: Schemas | undefined;

/** The schema's message types, read from the descriptors once. */
function otlpSchemas(): Schemas {
  if (schemas) return schemas;
  const set = fromBinary(FileDescriptorSetSchema, base64Decode(OTLP_METRICS_DESCRIPTORS));
  const registry = createFileRegistry(set);
  const message = (name: string): DescMessage => {
    const m = registry.getMessage(name);
    if (!m) throw new Error(`the OTLP schema has no ${name}`);
    return m;
  };
  schemas = {
    request: message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"),
    response: message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse"),
  };
  return schemas;
}

/* The decoded messages, as far as they are read (field names as @bufbuild/protobuf gives them). */
interface AnyValue {
  value:
    | { case: "stringValue"; value: string }
    | { case: "boolValue"; value: boolean }
    | { case: "intValue"; value: bigint }
    | { case: "doubleValue"; value: number }
    | { case: string | undefined; value?: unknown };
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface NumberPoint {
  attributes: KeyValue[];
  startTimeUnixNano: bigint;
  timeUnixNano: bigint;
  value: { case: "asDouble"; value: number } | { case: "asInt"; value: bigint } | { case: undefined };
  flags: number;
}
interface HistogramPoint {
  attributes: KeyValue[];
  startTimeUnixNano: bigint;
  timeUnixNano: bigint;
  count: bigint;
  sum?: number;
  bucketCounts: bigint[];
  explicitBounds: number[];
  flags: number;
}
interface Metric {
  name: string;
  data:
    | { case: "gauge"; value: { dataPoints: NumberPoint[] } }
    | {
        case: "sum";
        value: { dataPoints: NumberPoint[]; aggregationTemporality: number; isMonotonic: boolean };
      }
    | { case: "histogram"; value: { dataPoints: HistogramPoint[]; aggregationTemporality: number } }
    | { case: string | undefined; value?: { dataPoints?: unknown[] } };
}
interface Request {
  resourceMetrics: { resource?: { attributes: KeyValue[] }; scopeMetrics: { metrics: Metric[] }[] }[];
}

/** AGGREGATION_TEMPORALITY_CUMULATIVE. */
const CUMULATIVE = 2;
/** DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK: the point says there is no value. */
const NO_RECORDED_VALUE = 1;

/**
 * Decodes an export (protobuf bytes, or the JSON encoding already parsed) and keeps the
 * points of `metrics` (the names some mapping of the pusher's namespace reads). Throws an
 * Error with a short message when it is not an ExportMetricsServiceRequest.
 */
export function decodeOtlp(
  body: { protobuf: Uint8Array } | { json: unknown },
  metrics: readonly string[],
  keep?: readonly string[],
): OtlpBatch {
  const { request } = otlpSchemas();
  let message: Request;
  try {
    message = ("protobuf" in body
      ? fromBinary(request, body.protobuf, {
          readUnknownFields: false,
          recursionLimit: RECURSION_LIMIT,
        })
      : fromJson(request, body.json as JsonValue, {
          ignoreUnknownFields: true,
          recursionLimit: RECURSION_LIMIT,
        })) as unknown as Request;
  } catch (err) {
    throw new Error(`not an OTLP ExportMetricsServiceRequest: ${firstLine(err)}`);
  }
  return selectPoints(message, new Set(metrics), keep && new Set(keep));
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n", 1)[0]!.slice(0, 200);
}

function selectPoints(
  message: Request,
  selected: ReadonlySet<string>,
  keep: ReadonlySet<string> | undefined,
): OtlpBatch {
  const batch = new OtlpBatchBuilder(keep);
  const reject = (n: number, why: string) => batch.reject(n, why);
  for (const rm of message.resourceMetrics) {
    let resource: Record<string, string> | undefined;
    let resourceChars = 0;
    for (const sm of rm.scopeMetrics)
      for (const m of sm.metrics) {
        const points = m.data.value?.dataPoints ?? [];
        if (!selected.has(m.name)) {
          batch.unselected += points.length;
          continue;
        }
        const type = m.data.case;
        if (type !== "gauge" && type !== "sum" && type !== "histogram") {
          reject(
            points.length,
            `metric ${m.name} is a ${type ?? "metric without data"}, which Governor does not read`,
          );
          continue;
        }
        if (resource === undefined) {
          const r = attributesOf(
            rm.resource?.attributes ?? [],
            Object.create(null) as Record<string, string>,
          );
          if (typeof r === "string") {
            reject(countPoints(rm), `the resource's attributes: ${r}`);
            break;
          }
          resource = r;
          for (const k in r) resourceChars += k.length + r[k]!.length;
        }
        const data = m.data as Extract<Metric["data"], { case: "gauge" | "sum" | "histogram" }>;
        const cumulative =
          "aggregationTemporality" in data.value && data.value.aggregationTemporality === CUMULATIVE;
        const monotonic = data.case === "sum" && data.value.isMonotonic;
        for (const p of data.value.dataPoints) {
          if ((p.flags & NO_RECORDED_VALUE) !== 0) continue;
          const attributes = attributesOf(p.attributes, { ...resource }, resourceChars);
          if (typeof attributes === "string") {
            reject(1, `a point of ${m.name}: ${attributes}`);
            continue;
          }
          const point = toPoint(m.name, data.case, cumulative, monotonic, attributes, p);
          if (typeof point === "string") reject(1, `a point of ${m.name}: ${point}`);
          else batch.add(point);
        }
      }
  }
  return batch.finish();
}

function countPoints(rm: Request["resourceMetrics"][number]): number {
  let n = 0;
  for (const sm of rm.scopeMetrics) for (const m of sm.metrics) n += m.data.value?.dataPoints?.length ?? 0;
  return n;
}

/**
 * `kvs` added to `into` as strings, or why they cannot be. Lists, maps and bytes are left
 * out. `chars` is what `into` holds already (a resource's attributes, under a point's).
 */
function attributesOf(
  kvs: KeyValue[],
  into: Record<string, string>,
  chars = 0,
): Record<string, string> | string {
  if (kvs.length > MAX_ATTRIBUTES) return `more than ${MAX_ATTRIBUTES} attributes`;
  for (const kv of kvs) {
    if (kv.key.length > MAX_ATTRIBUTE_KEY)
      return `an attribute key is longer than ${MAX_ATTRIBUTE_KEY} characters`;
    const v = kv.value?.value;
    let s: string;
    switch (v?.case) {
      case "stringValue":
        s = v.value as string;
        break;
      case "boolValue":
      case "intValue":
      case "doubleValue":
        s = String(v.value);
        break;
      default:
        continue;
    }
    if (s.length > MAX_ATTRIBUTE_VALUE)
      return `attribute ${kv.key.slice(0, 64)} is longer than ${MAX_ATTRIBUTE_VALUE} characters`;
    chars += kv.key.length + s.length;
    if (chars > MAX_ATTRIBUTE_CHARS) return `attributes of more than ${MAX_ATTRIBUTE_CHARS} characters`;
    into[kv.key] = s;
  }
  if (Object.keys(into).length > MAX_ATTRIBUTES) return `more than ${MAX_ATTRIBUTES} attributes`;
  return into;
}

const nanosToMs = (n: bigint): number => Number(n / 1_000_000n);

function toPoint(
  metric: string,
  type: "gauge" | "sum" | "histogram",
  cumulative: boolean,
  monotonic: boolean,
  attributes: Record<string, string>,
  p: NumberPoint | HistogramPoint,
): OtlpPoint | string {
  const base = {
    metric,
    type,
    cumulative,
    monotonic,
    attributes,
    startMs: nanosToMs(p.startTimeUnixNano),
    atMs: nanosToMs(p.timeUnixNano),
  };
  if (type !== "histogram") {
    const v = (p as NumberPoint).value;
    const value = v.case === "asDouble" ? v.value : v.case === "asInt" ? Number(v.value) : undefined;
    if (value === undefined) return "no value";
    if (!Number.isFinite(value)) return "a value that is not a finite number";
    return { ...base, value };
  }
  const h = p as HistogramPoint;
  if (h.bucketCounts.length > MAX_BUCKETS || h.explicitBounds.length >= MAX_BUCKETS)
    return `more than ${MAX_BUCKETS} buckets`;
  // Bounds without counts (a histogram of count and sum only) are as good as none.
  if (h.bucketCounts.length > 0 && h.bucketCounts.length !== h.explicitBounds.length + 1)
    return "bucket counts and bounds do not match";
  const bounds = h.bucketCounts.length > 0 ? h.explicitBounds : [];
  for (let i = 1; i < bounds.length; i++)
    if (!(bounds[i]! > bounds[i - 1]!)) return "bucket bounds are not increasing";
  const count = Number(h.count);
  if (h.sum !== undefined && !Number.isFinite(h.sum)) return "a sum that is not a finite number";
  return {
    ...base,
    value: count,
    histogram: { count, sum: h.sum, bounds, counts: h.bucketCounts.map(Number) },
  };
}

/**
 * The answer to an export, encoded as the request was: an ExportMetricsServiceResponse, with
 * `partial_success` when points were rejected.
 */
export function encodeOtlpResponse(
  encoding: OtlpEncoding,
  rejected?: { points: number; message: string },
): Uint8Array | string {
  const { response } = otlpSchemas();
  const init = rejected
    ? { partialSuccess: { rejectedDataPoints: BigInt(rejected.points), errorMessage: rejected.message } }
    : {};
  const msg = create(response, init as never);
  return encoding === "protobuf" ? toBinary(response, msg) : toJsonString(response, msg);
}
