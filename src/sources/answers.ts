/**
 * What a source's answer means, as pure functions of its bytes: the one number a JSONPath
 * picks from an `http` source's JSON, a Prometheus query's result, the selected series of
 * a pod's exposition. They run on the event loop for small answers and in the parse worker
 * for large ones (src/sources/answer-decoder.ts), so they import nothing that does I/O.
 */
import { JSONPath } from "jsonpath-plus";
import { boundedText, quote } from "../util/bounded-text.js";
import { type SeriesSummary, selectSeries } from "./exposition.js";
import type { SampleValue } from "./source.js";
import { type OtlpBatch, type OtlpEncoding, decodeOtlp } from "./otlp-decode.js";

/** A Prometheus API answer (`/api/v1/query`). */
export interface PromResponse {
  status: "success" | "error";
  error?: string;
  errorType?: string;
  data?: {
    resultType: "vector" | "scalar" | "matrix" | "string";
    result: unknown;
  };
}

/**
 * The most series one answer may carry: a mapping describes at most this many objects (an
 * HPA's pods, a namespace's Services). Beyond it the answer is a source error, before any
 * per-series work — the response size limit bounds the bytes, this the values kept.
 */
export const MAX_SERIES = 50_000;

/** The longest Kubernetes object name (a DNS-1123 subdomain). */
const MAX_OBJECT_NAME = 253;

/** What to make of an answer. */
export type AnswerJob =
  | { kind: "json-path"; path: string }
  | { kind: "prometheus"; nameLabel?: string }
  | { kind: "prometheus-range" }
  | { kind: "exposition"; series: string; matchLabels?: Record<string, string> }
  | { kind: "otlp"; encoding: OtlpEncoding; metrics: string[]; keep?: string[] };

/** A series' points over time: when (ms since the epoch) and the value. */
export interface RangePoints {
  atMs: number[];
  values: number[];
}

/** What each kind of job gives. */
export interface AnswerResults {
  "json-path": number;
  prometheus: SampleValue;
  "prometheus-range": RangePoints;
  exposition: SeriesSummary;
  otlp: OtlpBatch;
}

/** The most points of a range answer (Prometheus' own limit for one series of a range query). */
export const MAX_RANGE_POINTS = 11_000;

const utf8 = new TextDecoder();

/** Decodes `body` as `job` says; throws an Error with a short, single-line message. */
export function decodeAnswer<K extends AnswerJob["kind"]>(
  body: Uint8Array,
  job: Extract<AnswerJob, { kind: K }>,
): AnswerResults[K];
export function decodeAnswer(body: Uint8Array, job: AnswerJob): AnswerResults[AnswerJob["kind"]] {
  if (job.kind === "otlp")
    return decodeOtlp(
      job.encoding === "protobuf"
        ? { protobuf: body }
        : { json: parseJson(utf8.decode(body), "an OTLP export") },
      job.metrics,
      job.keep,
    );
  const text = utf8.decode(body);
  switch (job.kind) {
    case "json-path":
      return pickNumber(parseJson(text, "JSON"), job.path);
    case "prometheus":
      return toSampleValue(parseJson(text, "a Prometheus answer") as PromResponse, job.nameLabel);
    case "prometheus-range":
      return toRangePoints(parseJson(text, "a Prometheus answer") as PromResponse);
    case "exposition":
      return selectSeries(text, job.series, job.matchLabels);
  }
}

/**
 * The most values (objects, arrays, and the entries between their commas) an answer's
 * JSON may have. `JSON.parse` cannot be interrupted, and its memory follows the values, not
 * the bytes (10 MiB of `{},` is 3.5 million objects): counted first, in one pass. A
 * Prometheus answer with {@link MAX_SERIES} series of ten labels counts about 800,000;
 * a million empty objects outgrow the worker's heap, which only the worker dies of.
 */
export const MAX_JSON_VALUES = 1_000_000;
/** The deepest an answer's JSON may nest. */
export const MAX_JSON_DEPTH = 256;

/** Refuses JSON with more values or deeper nesting than the bounds, in one linear pass. */
export function checkJsonShape(text: string): void {
  let values = 1;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x2c /* , */) values++;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      values++;
      if (++depth > MAX_JSON_DEPTH)
        throw new Error(`the response nests deeper than ${MAX_JSON_DEPTH} levels`);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
    if (values > MAX_JSON_VALUES)
      throw new Error(`the response has more than ${MAX_JSON_VALUES.toLocaleString("en")} JSON values`);
  }
}

function parseJson(text: string, what: string): unknown {
  checkJsonShape(text);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the response is not ${what} (${text.length} characters)`);
  }
}

/** Picks the single number `path` selects in `json`. */
export function pickNumber(json: unknown, path: string): number {
  const matches = JSONPath<unknown[]>({ path, json: json as object, wrap: true, eval: false });
  if (matches.length === 0) throw new Error(`jsonPath ${path} matched nothing`);
  if (matches.length > 1)
    throw new Error(`jsonPath ${path} matched ${matches.length} values; it must select one`);
  const v = matches[0];
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n))
    throw new Error(
      `jsonPath ${path} selected ${v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`}, not a number`,
    );
  return n;
}

/**
 * Converts a Prometheus answer to a sample value. Prometheus' own words (`error`,
 * `errorType`) are quoted short: the answer comes from an address a tenant chose.
 */
export function toSampleValue(body: PromResponse, nameLabel: string | undefined): SampleValue {
  if (body?.status !== "success" || !body.data)
    throw new Error(
      `Prometheus: ${boundedText(String(body?.errorType ?? "error"), 40)}: ${boundedText(String(body?.error ?? "no data"), 200)}`,
    );
  const { resultType, result } = body.data;
  if (resultType === "scalar") return { kind: "scalar", value: Number((result as [number, string])[1]) };
  if (resultType !== "vector")
    throw new Error(
      `Prometheus returned a ${quote(String(resultType), 20)}; an instant vector or scalar is needed`,
    );
  if (!Array.isArray(result)) throw new Error("Prometheus returned a vector that is not a list");
  const vector = result as { metric?: Record<string, string>; value?: [number, string] }[];
  if (vector.length > MAX_SERIES)
    throw new Error(
      `the query returned ${vector.length} series; a mapping uses at most ${MAX_SERIES} (narrow the query, or aggregate)`,
    );
  if (!nameLabel) {
    if (vector.length === 0) throw new Error("the query returned no data");
    if (vector.length > 1)
      throw new Error(
        `the query returned ${vector.length} series; set nameLabel or aggregate (e.g. sum(...))`,
      );
    return { kind: "scalar", value: Number(vector[0]?.value?.[1]) };
  }
  const values = new Map<string, number>();
  for (const s of vector) {
    const name = s?.metric?.[nameLabel];
    // Objects are Kubernetes objects: a longer name names none, and is not kept.
    if (typeof name !== "string" || name.length > MAX_OBJECT_NAME) continue;
    const v = Number(s.value?.[1]);
    if (Number.isFinite(v)) values.set(name, (values.get(name) ?? 0) + v);
  }
  return { kind: "objects", values };
}

/**
 * The one series of a Prometheus range answer (`/api/v1/query_range`, a matrix), its
 * non-finite points left out. None, or more than one, is an error, as for an instant query
 * without `nameLabel`.
 */
export function toRangePoints(body: PromResponse): RangePoints {
  if (body?.status !== "success" || !body.data)
    throw new Error(
      `Prometheus: ${boundedText(String(body?.errorType ?? "error"), 40)}: ${boundedText(String(body?.error ?? "no data"), 200)}`,
    );
  const { resultType, result } = body.data;
  if (resultType !== "matrix" || !Array.isArray(result))
    throw new Error(`Prometheus returned a ${quote(String(resultType), 20)}; a range query gives a matrix`);
  if (result.length === 0) throw new Error("the query returned no data over the range");
  if (result.length > 1)
    throw new Error(`the query returned ${result.length} series over the range; aggregate (e.g. sum(...))`);
  const points = (result[0] as { values?: unknown }).values;
  if (!Array.isArray(points)) throw new Error("Prometheus returned a series without values");
  if (points.length > MAX_RANGE_POINTS)
    throw new Error(`the range answer has ${points.length} points; at most ${MAX_RANGE_POINTS}`);
  const out: RangePoints = { atMs: [], values: [] };
  for (const p of points as [unknown, unknown][]) {
    const at = Number(Array.isArray(p) ? p[0] : NaN) * 1000;
    const v = Number(Array.isArray(p) ? p[1] : NaN);
    if (!Number.isFinite(at) || !Number.isFinite(v)) continue;
    out.atMs.push(at);
    out.values.push(v);
  }
  return out;
}
