/**
 * `governor replay`: the HPA's algorithm over a stretch of history (src/autoscaling/replay.ts)
 * for an HPA or a ScalableWorkload whose metrics Governor serves. A `prometheus` source's
 * history is Prometheus's: its query, rendered and bound to its namespace as Governor sends
 * it, asked as a range query (`/api/v1/query_range`, one point a sync) — through the
 * apiserver's service proxy to the mapping's Service, or at `--prometheus-url`. Any other
 * source's history is the samples Governor kept (`--history-points`), read from
 * `history.governor.dev` through the aggregator (`--from history` reads every metric there).
 * Then every sync replayed, with `--set` changes to targets, bounds, tolerance and behavior.
 * Reads only, as your kubeconfig's user.
 */
import { buildHpa } from "../manifests/workload.js";
import { ScalableWorkloadSpec } from "../api/scalable-workload.js";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import { type HpaMetricSpec, type HpaView } from "../autoscaling/decide.js";
import { MAX_REPLAY_STEPS, type ReplayStep, type Sample, replay } from "../autoscaling/replay.js";
import { resolveMetric } from "../controller/hpa.js";
import { MetricMappingSpec } from "../sources/registry.js";
import { renderQuery } from "../sources/prometheus.js";
import { scopeQuery } from "../sources/promql-scope.js";
import { parseQuantity } from "../api/quantity.js";
import { HISTORY_PAGE_POINTS, MAX_HISTORY_POINTS } from "../metrics/history.js";
import { boundedText } from "../util/bounded-text.js";
import { type ChartMetric, replayChart } from "./replay-chart.js";

/** A replay that cannot be made, said plainly. */
export class ReplayError extends Error {}

/** Where a replay reads histories (see {@link ReplayOptions.from}). */
export const REPLAY_FROM = ["auto", "prometheus", "history"] as const;
export type ReplayFrom = (typeof REPLAY_FROM)[number];

/** Governor's kept samples of a mapping, through the aggregator (src/metrics/history.ts). */
const HISTORY = "/apis/history.governor.dev/v1alpha1";

export interface ReplayOptions {
  /** `hpa/NAME` or `sw/NAME`. */
  target: string;
  namespace: string;
  sinceMs: number;
  stepMs: number;
  /** `--set`: `METRIC=TARGET`, `minReplicas`, `maxReplicas`, `tolerance`, `scaleUp|scaleDown.stabilizationWindowSeconds`. */
  set: ReadonlyMap<string, string>;
  /** Prometheus at this URL for every metric, instead of each mapping's Service through the apiserver. */
  prometheusUrl?: string;
  /** The series label Governor binds queries by (`--prometheus-namespace-label`). */
  namespaceLabel: string;
  /**
   * Where histories come from: `auto` (Prometheus for prometheus sources, Governor's kept
   * samples for the others), `prometheus` (prometheus sources only), `history` (Governor's
   * kept samples for every metric). @default "auto"
   */
  from?: ReplayFrom;
  nowMs?: number;
}

export interface ReplayResult {
  target: string;
  namespace: string;
  /**
   * Each metric: its MetricMapping, its target (`averageValue`: per pod or replica), where
   * its history came from and the query asked (for Prometheus), or since when Governor kept
   * its samples.
   */
  metrics: {
    name: string;
    mapping: string;
    type: string;
    target: string;
    averageValue: boolean;
    from: "prometheus" | "history";
    query?: string;
    /** The first kept sample (history), RFC 3339. */
    keptSince?: string;
  }[];
  /** The HPA's metrics replay could not read, and why: its decisions leave them out. */
  skipped: { metric: string; why: string }[];
  steps: ReplayStep[];
  svg: string;
}

interface MappingObject {
  metadata: { name: string };
  spec: unknown;
}

/** The most points one range query may answer per series, as Prometheus allows (11,000). */
const MAX_POINTS = 11_000;
/** The syncs asked in one range query. */
const CHUNK_STEPS = 10_000;
/** The most bytes of one Prometheus answer read. */
const MAX_ANSWER_BYTES = 64 << 20;

/** See the module comment. */
export async function replayTarget(
  client: KubeClient,
  o: ReplayOptions,
  fetchText: (url: string) => Promise<string> = fetchBounded,
): Promise<ReplayResult> {
  const nowMs = o.nowMs ?? Date.now();
  const fromMs = Math.floor((nowMs - o.sinceMs) / o.stepMs) * o.stepMs;
  // A value older than this at a sync is none (the metrics API would have served none).
  const staleMs = Math.max(5 * 60_000, 2 * o.stepMs);
  if (o.sinceMs / o.stepMs > MAX_REPLAY_STEPS)
    throw new ReplayError(`--since / --step is more than ${MAX_REPLAY_STEPS} syncs`);
  const [kind, name] = o.target.split("/");
  if (!name || (kind !== "hpa" && kind !== "sw"))
    throw new ReplayError(`${boundedText(o.target, 80)}: expected hpa/NAME or sw/NAME`);
  const mappings = (
    await client.get<{ items: MappingObject[] }>(
      `/apis/governor.dev/v1alpha1/namespaces/${o.namespace}/metricmappings`,
    )
  ).items;
  const specOf = (m: MappingObject) => MetricMappingSpec.safeParse(m.spec);
  let hpa: HpaView;
  let mappingOf: (metric: HpaMetricSpec, i: number) => MappingObject | undefined;
  if (kind === "sw") {
    const sw = await getOr<{ spec?: unknown }>(
      client,
      `/apis/governor.dev/v1alpha1/namespaces/${o.namespace}/scalableworkloads/${name}`,
      `ScalableWorkload ${name}`,
    );
    const spec = ScalableWorkloadSpec.safeParse(sw.spec);
    if (!spec.success || !spec.data.autoscaling)
      throw new ReplayError(`ScalableWorkload ${name} has no valid spec.autoscaling`);
    const a = spec.data.autoscaling;
    const used = a.metrics.map((e) => {
      const m = mappings.find((x) => x.metadata.name === e.mapping);
      const parsed = m && specOf(m);
      if (!m || !parsed?.success) throw new ReplayError(`MetricMapping ${e.mapping} not found or invalid`);
      return { m, metric: resolveMetric(parsed.data, e, name) };
    });
    hpa = {
      spec: buildHpa(
        { namespace: o.namespace, name, uid: "" },
        spec.data,
        used.map((u) => u.metric),
      ).spec,
    };
    mappingOf = (_, i) => used[i]?.m;
  } else {
    hpa = await getOr(
      client,
      `/apis/autoscaling/v2/namespaces/${o.namespace}/horizontalpodautoscalers/${name}`,
      `HorizontalPodAutoscaler ${name}`,
    );
    // The mapping that serves the metric: Governor's, of the same name and kind of subject.
    mappingOf = (metric) =>
      mappings.find((m) => {
        const s = specOf(m);
        if (!s.success) return false;
        const subject = s.data.subject;
        const metricName = (metric.pods ?? metric.object ?? metric.external)?.metric.name;
        if (s.data.metric !== metricName) return false;
        if (metric.type === "External") return subject.external !== undefined;
        if (metric.type === "Pods") return subject.resource === "pods";
        return subject.resource !== undefined && subject.resource !== "pods";
      });
  }
  hpa = withChanges(hpa, o.set);
  const metrics: ReplayResult["metrics"] = [];
  const series: Sample[][] = [];
  let actual: Sample[] | undefined;
  const replayed: HpaMetricSpec[] = [];
  const skipped: ReplayResult["skipped"] = [];
  for (const [i, metric] of (hpa.spec.metrics ?? []).entries()) {
    const metricName =
      (metric.pods ?? metric.object ?? metric.external)?.metric.name ??
      metric.resource?.name ??
      metric.containerResource?.name ??
      metric.type;
    const skip = (why: string) => skipped.push({ metric: metricName, why });
    if (metric.type === "Resource" || metric.type === "ContainerResource") {
      skip("a resource metric, metrics-server's");
      continue;
    }
    const m = mappingOf(metric, i);
    if (!m) {
      skip(`no MetricMapping of Governor's in ${o.namespace} serves it`);
      continue;
    }
    const spec = specOf(m);
    const prom = spec.success
      ? (
          spec.data.source as {
            prometheus?: {
              address: string;
              query: string;
              nameLabel?: string;
              tenant?: string;
              bearerTokenSecret?: unknown;
              basicAuthSecret?: unknown;
            };
          }
        ).prometheus
      : undefined;
    const from = o.from ?? "auto";
    // What Governor itself kept: every metric with --from history, else those Prometheus cannot give.
    if (from === "history" || (from === "auto" && (!prom || sendsCredentials(prom)))) {
      // From the start's last value on: the one in force at the first sync.
      const kept = await keptSeries(client, o, m.metadata.name, metric, nowMs - fromMs + staleMs);
      if ("why" in kept) {
        skip(kept.why);
        continue;
      }
      series.push(kept.values);
      if (metric.type === "Pods" && !actual) actual = kept.count;
      metrics.push({
        ...described(metricName, m.metadata.name, metric),
        from: "history",
        ...(kept.since !== undefined ? { keptSince: new Date(kept.since).toISOString() } : {}),
      });
      replayed.push(metric);
      continue;
    }
    if (!prom) {
      skip(`MetricMapping ${m.metadata.name} does not read Prometheus (--from prometheus)`);
      continue;
    }
    if (sendsCredentials(prom)) {
      skip(`MetricMapping ${m.metadata.name} sends credentials or a tenant, which replay does not`);
      continue;
    }
    let query: string;
    try {
      const rendered = renderQuery(prom.query, {
        namespace: o.namespace,
        ...(metric.object ? { names: [metric.object.describedObject.name] } : {}),
      });
      query = scopeQuery(rendered, { namespace: o.namespace, label: o.namespaceLabel, maxBytes: 256 * 1024 });
    } catch (err) {
      throw new ReplayError(`MetricMapping ${m.metadata.name}: ${boundedText((err as Error).message, 300)}`);
    }
    const base = o.prometheusUrl ?? serviceProxy(prom.address);
    const values: Sample[] = [];
    const count: Sample[] = [];
    // Prometheus answers at most 11,000 points a series: a long stretch is asked in parts.
    for (let start = fromMs; start <= nowMs; start += CHUNK_STEPS * o.stepMs) {
      const end = Math.min(nowMs, start + (CHUNK_STEPS - 1) * o.stepMs);
      const params = {
        query,
        start: String(start / 1000),
        end: String(end / 1000),
        step: `${o.stepMs / 1000}s`,
      };
      const text = await (
        o.prometheusUrl
          ? fetchText(
              `${base.replace(/\/$/, "")}/api/v1/query_range?${new URLSearchParams(params).toString()}`,
            )
          : client.get(`${base}/api/v1/query_range`, params).then((answer) => JSON.stringify(answer))
      ).catch((err: unknown) => {
        const message =
          err instanceof KubeApiError ? `${err.statusCode} ${err.message}` : (err as Error).message;
        throw new ReplayError(
          `Prometheus (${boundedText(base, 120)}): ${boundedText(message, 300)}${o.prometheusUrl ? "" : " (through the apiserver's service proxy, which needs get on services/proxy; or give --prometheus-url)"}`,
        );
      });
      const points = matrixPoints(text, metric.type, prom.nameLabel, metric.object?.describedObject.name);
      values.push(...points.values);
      count.push(...points.count);
    }
    series.push(values);
    replayed.push(metric);
    if (metric.type === "Pods" && !actual) actual = count;
    metrics.push({ ...described(metricName, m.metadata.name, metric), from: "prometheus", query });
  }
  if (replayed.length === 0)
    throw new ReplayError(
      `nothing to replay: ${skipped.map((x) => `${x.metric}: ${x.why}`).join("; ")}`.slice(0, 1000),
    );
  const steps = replay({
    hpa: { ...hpa, spec: { ...hpa.spec, metrics: replayed } },
    series,
    ...(actual ? { actual } : {}),
    fromMs,
    toMs: nowMs,
    stepMs: o.stepMs,
    staleMs,
  });
  const chartMetrics: ChartMetric[] = metrics.map((m) => ({
    name: m.name,
    target: parseQuantity(m.target) ?? 0,
    perReplica: m.averageValue && m.type !== "Pods",
  }));
  return {
    target: o.target,
    namespace: o.namespace,
    metrics,
    skipped,
    steps,
    svg: replayChart(`replay of ${o.target} in ${o.namespace}`, chartMetrics, steps),
  };
}

/** A metric as the result names it: its mapping, type and target. */
function described(name: string, mapping: string, metric: HpaMetricSpec) {
  const t = (metric.pods ?? metric.object ?? metric.external)?.target;
  return {
    name,
    mapping,
    type: metric.type,
    target: t?.averageValue ?? t?.value ?? "",
    averageValue: t?.averageValue !== undefined,
  };
}

function sendsCredentials(prom: { tenant?: string; bearerTokenSecret?: unknown; basicAuthSecret?: unknown }) {
  return Boolean(prom.bearerTokenSecret || prom.basicAuthSecret || prom.tenant);
}

/**
 * The samples Governor kept of a mapping (`history.governor.dev`), as the metric's values:
 * an External metric the sum, a Pods metric the average and how many pods had one, an
 * Object metric its one object's value (a mapping of several objects keeps only their
 * total: not replayed). Or why there are none.
 */
async function keptSeries(
  client: KubeClient,
  o: ReplayOptions,
  mapping: string,
  metric: HpaMetricSpec,
  sinceMs: number,
): Promise<{ values: Sample[]; count: Sample[]; since?: number } | { why: string }> {
  const at: number[] = [];
  const sum: number[] = [];
  const count: number[] = [];
  // Page by page, as Governor answers (a bounded number of points each).
  let token: string | undefined;
  for (let page = 0; page === 0 || token !== undefined; page++) {
    let answer: {
      metadata?: { continue?: unknown };
      points?: { atMs?: unknown; sum?: unknown; count?: unknown };
    };
    try {
      answer = await client.get(
        `${HISTORY}/namespaces/${o.namespace}/metricmappings/${mapping}`,
        token === undefined ? { sinceSeconds: String(Math.ceil(sinceMs / 1000)) } : { continue: token },
      );
    } catch (err) {
      if (!(err instanceof KubeApiError)) throw err;
      const why = boundedText(err.message, 300);
      if (err.statusCode === 404 && !why.includes("MetricMapping"))
        return {
          why: `Governor keeps no samples of its sources here (history.governor.dev is not served: start it with --history-points)`,
        };
      return { why: `Governor's samples of MetricMapping ${mapping}: ${err.statusCode} ${why}` };
    }
    const p = answer.points;
    const columns = [p?.atMs, p?.sum, p?.count];
    const next = answer.metadata?.continue;
    const bad = () =>
      new ReplayError(`Governor answered MetricMapping ${mapping}'s samples in a form replay does not read`);
    if (
      !columns.every(Array.isArray) ||
      new Set(columns.map((c) => (c as unknown[]).length)).size !== 1 ||
      (next !== undefined && typeof next !== "string") ||
      page > MAX_HISTORY_POINTS / HISTORY_PAGE_POINTS
    )
      throw bad();
    const [t, v, c] = columns as unknown[][];
    for (let i = 0; i < t!.length; i++) {
      const atMs = t![i];
      const value = v![i];
      const n = c![i];
      // Numbers, in time order (replay looks values up by time).
      if (
        typeof atMs !== "number" ||
        typeof value !== "number" ||
        typeof n !== "number" ||
        !Number.isFinite(value) ||
        !(Number.isInteger(n) && n >= 0) ||
        !(atMs > (at.at(-1) ?? -Infinity))
      )
        throw bad();
      at.push(atMs);
      sum.push(value);
      count.push(n);
    }
    token = next;
  }
  const values: Sample[] = [];
  const counts: Sample[] = [];
  for (let i = 0; i < at.length; i++) {
    const n = count[i]!;
    if (n === 0) continue;
    if (metric.type === "Object" && n > 1)
      return {
        why: `MetricMapping ${mapping} samples ${n} objects: Governor keeps their total, not each one's (replay it from Prometheus)`,
      };
    values.push({ atMs: at[i]!, value: metric.type === "Pods" ? sum[i]! / n : sum[i]! });
    counts.push({ atMs: at[i]!, value: n });
  }
  if (values.length === 0)
    return { why: `Governor holds no samples of MetricMapping ${mapping} in this stretch` };
  return { values, count: counts, since: values[0]!.atMs };
}

async function getOr<T>(client: KubeClient, path: string, what: string): Promise<T> {
  try {
    return await client.get<T>(path);
  } catch (err) {
    if (err instanceof KubeApiError && err.statusCode === 404) throw new ReplayError(`${what} not found`);
    throw err;
  }
}

/** `--set` applied to the HPA's spec. */
export function withChanges(hpa: HpaView, set: ReadonlyMap<string, string>): HpaView {
  const spec = structuredClone(hpa.spec);
  for (const [key, value] of set) {
    const n = Number(value);
    if (key === "minReplicas" || key === "maxReplicas") {
      if (!Number.isInteger(n) || n < 0)
        throw new ReplayError(`--set ${key}: ${value} is not a replica count`);
      spec[key] = n;
    } else if (key === "tolerance") {
      if (parseQuantity(value) === undefined)
        throw new ReplayError(`--set tolerance: ${value} is not a quantity`);
      spec.behavior = {
        ...spec.behavior,
        scaleUp: { ...spec.behavior?.scaleUp, tolerance: value },
        scaleDown: { ...spec.behavior?.scaleDown, tolerance: value },
      };
    } else if (
      key === "scaleUp.stabilizationWindowSeconds" ||
      key === "scaleDown.stabilizationWindowSeconds"
    ) {
      if (!Number.isInteger(n) || n < 0 || n > 3600)
        throw new ReplayError(`--set ${key}: ${value} is not 0 to 3600 seconds`);
      const side = key.startsWith("scaleUp") ? "scaleUp" : "scaleDown";
      spec.behavior = {
        ...spec.behavior,
        [side]: { ...spec.behavior?.[side], stabilizationWindowSeconds: n },
      };
    } else {
      const m = spec.metrics?.find((x) => (x.pods ?? x.object ?? x.external)?.metric.name === key);
      const t = m && (m.pods ?? m.object ?? m.external)?.target;
      if (!t)
        throw new ReplayError(
          `--set ${boundedText(key, 80)}: not a metric of this HPA, nor minReplicas, maxReplicas, tolerance or a stabilization window`,
        );
      if (parseQuantity(value) === undefined)
        throw new ReplayError(`--set ${key}: ${value} is not a quantity`);
      if (t.averageValue !== undefined) t.averageValue = value;
      else t.value = value;
    }
  }
  return { ...hpa, spec };
}

/** An http(s) address of a Service (`name.namespace[.svc…]:port`) as the apiserver's proxy path to it. */
function serviceProxy(address: string): string {
  const u = new URL(address);
  const [svc, ns] = u.hostname.split(".");
  if (!svc || !ns)
    throw new ReplayError(
      `${boundedText(address, 120)} is not a Service (name.namespace): give --prometheus-url`,
    );
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  const scheme = u.protocol === "https:" ? "https:" : "";
  return `/api/v1/namespaces/${ns}/services/${scheme}${svc}:${port}/proxy${u.pathname.replace(/\/$/, "")}`;
}

/** A range query's answer as one value per step (summed, averaged or the object's) and, for pods, how many had one. */
export function matrixPoints(
  text: string,
  type: string,
  nameLabel: string | undefined,
  objectName: string | undefined,
): { values: Sample[]; count: Sample[] } {
  let body: {
    status?: string;
    error?: string;
    data?: {
      resultType?: string;
      result?: { metric?: Record<string, string>; values?: [number, string][] }[];
    };
  };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    throw new ReplayError("Prometheus answered something that is not JSON");
  }
  if (body.status !== "success")
    throw new ReplayError(`Prometheus: ${boundedText(body.error ?? "an error", 300)}`);
  if (body.data?.resultType !== "matrix")
    throw new ReplayError(
      `Prometheus answered a ${boundedText(String(body.data?.resultType), 40)}, not a matrix`,
    );
  let result = body.data.result ?? [];
  if (type === "Object" && nameLabel && objectName)
    result = result.filter((r) => r.metric?.[nameLabel] === objectName);
  const byTime = new Map<number, number[]>();
  for (const r of result)
    for (const [ts, v] of (r.values ?? []).slice(0, MAX_POINTS)) {
      const x = Number(v);
      if (!Number.isFinite(x)) continue;
      const at = Math.round(ts * 1000);
      const list = byTime.get(at) ?? [];
      list.push(x);
      byTime.set(at, list);
    }
  const values: Sample[] = [];
  const count: Sample[] = [];
  for (const at of [...byTime.keys()].sort((a, b) => a - b)) {
    const list = byTime.get(at)!;
    const sum = list.reduce((a, b) => a + b, 0);
    values.push({ atMs: at, value: type === "Pods" ? sum / list.length : sum });
    count.push({ atMs: at, value: list.length });
  }
  return { values, count };
}

async function fetchBounded(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  const body = res.body;
  if (!body) return "";
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) throw new Error(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (!res.ok && !text.startsWith("{")) throw new Error(`HTTP ${res.status}`);
  return text;
}

/** The replay as lines a person reads: each change of the replicas, and a summary. */
export function renderReplay(r: ReplayResult): string {
  const lines = [`replay of ${r.target} in ${r.namespace}: ${r.steps.length} syncs`];
  for (const m of r.metrics)
    lines.push(
      `  ${m.type} ${m.name} (MetricMapping ${m.mapping}), target ${m.target}, ${m.from === "history" ? `from Governor's samples${m.keptSince ? ` since ${m.keptSince.replace(/\.\d+Z$/, "Z")}` : ""}` : "from Prometheus"}`,
    );
  for (const x of r.skipped) lines.push(`  not replayed: ${x.metric}: ${x.why}`);
  if (r.skipped.length > 0)
    lines.push(
      "  the HPA also weighs those: it may have chosen more replicas than this, and fewer only if they asked for fewer too",
    );
  let last: number | undefined;
  for (const s of r.steps) {
    if (s.replicas === last) continue;
    const at = new Date(s.atMs).toISOString().replace(/\.\d+Z$/, "Z");
    const values = s.values.map((v) => (v === undefined ? "-" : +v.toPrecision(4))).join(", ");
    lines.push(
      `  ${at}  ${s.replicas} replica(s)${s.actual !== undefined ? ` (had ${s.actual})` : ""}  values ${values}${s.reason ? `  ${s.reason}` : ""}`,
    );
    last = s.replicas;
  }
  return `${lines.map((l) => boundedText(l, 4096)).join("\n")}\n`;
}
