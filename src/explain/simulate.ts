/**
 * `governor simulate hpa/NAME | sw/NAME`: reads what the HPA controller reads at a sync —
 * the HPA, its target's `/scale`, the pods of the scale's selector, each metric's values
 * through the aggregator exactly as the HPA asks for them (so metrics other adapters serve
 * count too) — and prints the replicas its next sync will choose, metric by metric
 * (decide.ts). `--set metric=value` asks "what if". It only reads.
 */
import { parseQuantity } from "../api/quantity.js";
import type { PodFacts } from "../autoscaling/proposals.js";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import {
  type Decision,
  type HpaMetricSpec,
  type HpaView,
  type Reading,
  decide,
  formatMilli,
} from "../autoscaling/decide.js";
import { queryFor, resolveDescribed, resourceOf } from "./explain.js";

export { formatMilli };

export interface SimulateTarget {
  kind: "hpa" | "sw";
  name: string;
  namespace: string;
}

interface Hpa extends HpaView {
  metadata?: { name?: string };
  spec: HpaView["spec"] & { scaleTargetRef: { apiVersion?: string; kind: string; name: string } };
}

interface Pod {
  metadata?: { name?: string; deletionTimestamp?: string };
  status?: { phase?: string; conditions?: { type: string; status: string }[] };
}

/** What simulate read and what it decided. */
export interface Simulation extends Decision {
  hpa: string;
  namespace: string;
  target: string;
}

/** A request simulate cannot answer (no such HPA, no /scale): a message for the user. */
export class SimulateError extends Error {}

export async function simulate(
  client: KubeClient,
  target: SimulateTarget,
  set: ReadonlyMap<string, string> = new Map(),
): Promise<Simulation> {
  const { namespace } = target;
  // A ScalableWorkload's HPA is the one Governor writes for it, under its name.
  const hpa = await client.getOrUndefined<Hpa>(
    `/apis/autoscaling/v2/namespaces/${namespace}/horizontalpodautoscalers/${target.name}`,
  );
  if (!hpa)
    throw new SimulateError(
      target.kind === "sw"
        ? `ScalableWorkload ${target.name} in ${namespace} has no HPA (no spec.autoscaling, or Governor has not written it yet)`
        : `HorizontalPodAutoscaler ${target.name} not found in namespace ${namespace}`,
    );
  const ref = hpa.spec.scaleTargetRef;
  const resource = await resourceOf(client, ref.apiVersion ?? "v1", ref.kind);
  if (!resource)
    throw new SimulateError(`the cluster serves no kind ${ref.kind} in ${ref.apiVersion ?? "v1"}`);
  const base = ref.apiVersion?.includes("/") ? `/apis/${ref.apiVersion}` : `/api/${ref.apiVersion ?? "v1"}`;
  const scale = await client
    .get<{ spec?: { replicas?: number }; status?: { replicas?: number; selector?: string } }>(
      `${base}/namespaces/${namespace}/${resource}/${ref.name}/scale`,
    )
    .catch((err: unknown) => {
      throw new SimulateError(
        `the /scale of ${ref.kind} ${ref.name} cannot be read: ${(err as Error).message}`,
      );
    });
  const selector = scale.status?.selector ?? "";
  if (!selector)
    throw new SimulateError(
      `the /scale of ${ref.kind} ${ref.name} has no selector: the HPA does nothing (ScalingActive=False, InvalidSelector)`,
    );
  const pods = selector
    ? (
        await client.get<{ items: Pod[] }>(`/api/v1/namespaces/${namespace}/pods`, {
          labelSelector: selector,
        })
      ).items.map(podFacts)
    : [];
  const readings: Reading[] = [];
  for (const m of hpa.spec.metrics ?? [])
    readings.push(
      await read(client, namespace, m, selector).catch((err: unknown) => ({
        error: `cannot be read: ${(err as Error).message.slice(0, 300)}`,
      })),
    );
  for (const metric of set.keys()) {
    const named = (hpa.spec.metrics ?? []).filter((m) => metricName(m) === metric);
    if (named.length === 0)
      throw new SimulateError(`--set ${metric}: hpa/${target.name} has no metric of that name`);
    if (named.every((m) => m.type === "Resource" || m.type === "ContainerResource"))
      throw new SimulateError(
        `--set ${metric}: a resource metric, which simulate does not read (metrics-server serves it)`,
      );
  }
  const decision = decide({
    nowMs: Date.now(),
    hpa,
    specReplicas: scale.spec?.replicas ?? 0,
    statusReplicas: scale.status?.replicas ?? 0,
    pods,
    readings,
    set,
  });
  return { ...decision, hpa: target.name, namespace, target: `${ref.kind}/${ref.name}` };
}

const metricName = (m: HpaMetricSpec): string =>
  (m.pods ?? m.object ?? m.external)?.metric.name ?? m.resource?.name ?? m.containerResource?.name ?? "";

function podFacts(p: Pod): PodFacts {
  const phase = p.status?.phase;
  return {
    name: p.metadata?.name ?? "",
    phase:
      phase === "Pending" || phase === "Running" || phase === "Succeeded" || phase === "Failed"
        ? phase
        : "Unknown",
    deleting: p.metadata?.deletionTimestamp !== undefined,
    ready: p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
  };
}

/** One metric's values, asked as the HPA asks (the custom metrics API's newest version first). */
async function read(
  client: KubeClient,
  namespace: string,
  m: HpaMetricSpec,
  selector: string,
): Promise<Reading> {
  const q = queryFor(m, namespace, selector || undefined);
  if (!q) return { skipped: `a ${m.type} metric is read from metrics.k8s.io (metrics-server)` };
  await resolveDescribed(client, namespace, q);
  const versions =
    q.api === "custom"
      ? ["custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1"]
      : ["external.metrics.k8s.io/v1beta1"];
  let last: unknown;
  for (const gv of versions) {
    try {
      const list = await client.get<{
        items: { value: string; describedObject?: { name?: string } }[];
      }>(`/apis/${gv}${q.path}`, q.query);
      return {
        values: list.items.map((i) => ({
          ...(i.describedObject?.name ? { name: i.describedObject.name } : {}),
          value: String(i.value),
        })),
      };
    } catch (err) {
      last = err;
      // Another version only if this one is not served at all.
      if (!(err instanceof KubeApiError && err.statusCode === 404 && gv.endsWith("v1beta2"))) break;
    }
  }
  const code = last instanceof KubeApiError ? ` (${last.statusCode})` : "";
  const message =
    last instanceof KubeApiError
      ? String((last.status as { message?: string } | undefined)?.message ?? last.message)
      : (last as Error).message;
  return { error: `the metrics API answers${code}: ${message.slice(0, 300)}` };
}

/** The simulation as lines a person reads. */
export function renderSimulation(s: Simulation): string {
  const lines: string[] = [];
  lines.push(
    `hpa/${s.hpa} in ${s.namespace} → ${s.target}: ${s.specReplicas} replica(s) (min ${s.minReplicas}, max ${s.maxReplicas}), ${s.pods.total} pod(s), ${s.pods.ready} Ready`,
  );
  for (const [i, m] of s.metrics.entries()) {
    const head = `  ${i + 1}. ${m.type} ${m.metric}${m.whatIf ? " (--set)" : ""}, target ${m.target}: `;
    if (m.skipped) lines.push(`${head}not simulated: ${m.skipped}`);
    else if (m.error !== undefined) lines.push(`${head}no proposal: ${m.error}`);
    else lines.push(`${head}current ${m.current} → ${m.proposal} replica(s)`);
  }
  const n = s.next;
  if (s.undetermined) {
    lines.push(`next sync: undetermined — ${s.undetermined}`);
    if (s.metrics.some((m) => m.proposal !== undefined))
      lines.push(`  the metrics simulate reads alone would give ${n.desiredReplicas} replica(s)`);
    for (const a of s.assumptions) lines.push(`  assumes: ${a}`);
    return `${lines.map(printable).join("\n")}\n`;
  }
  const change =
    n.desiredReplicas > s.specReplicas
      ? "scale up"
      : n.desiredReplicas < s.specReplicas
        ? "scale down"
        : "no change";
  lines.push(
    `next sync: ${n.desiredReplicas} replica(s) (${change}${n.reason ? `: ${n.reason}` : ""})` +
      (n.proposed !== undefined && n.proposed !== n.desiredReplicas
        ? `; the metrics asked for ${n.proposed}`
        : ""),
  );
  for (const [type, c] of Object.entries(n.conditions))
    // The write the HPA would make and a ScaledToZero that stays False say nothing new.
    if (c && c.reason !== "SucceededRescale" && c.reason !== "NotScaledToZero")
      lines.push(`  ${type}=${c.status} ${c.reason}: ${c.message}`);
  if (n.error) lines.push(`  error: ${n.error}`);
  for (const a of s.assumptions) lines.push(`  assumes: ${a}`);
  return `${lines.map(printable).join("\n")}\n`;
}

/** Control characters (a terminal's escape sequences) from cluster or adapter text, shown escaped. */
function printable(line: string): string {
  let out = "";
  for (const ch of line) {
    const c = ch.charCodeAt(0);
    out += c < 0x20 || (c >= 0x7f && c <= 0x9f) ? `\\x${c.toString(16).padStart(2, "0")}` : ch;
  }
  return out;
}

/** `--set` values: `metric=quantity`, each at most once. */
export function parseSet(pairs: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of pairs) {
    const m = /^([A-Za-z0-9_:.-]{1,253})=([+-]?[0-9.]+(?:[eE][+-]?[0-9]+|[a-zA-Z]{1,2})?)$/.exec(p);
    if (!m)
      throw new SimulateError(
        `--set ${p.slice(0, 80)}: expected metric=value (a quantity, e.g. queue_depth=120 or rps=1.5k)`,
      );
    if (parseQuantity(m[2]!) === undefined)
      throw new SimulateError(`--set ${m[1]}: ${m[2]} is not a quantity`);
    if (out.has(m[1]!)) throw new SimulateError(`--set ${m[1]} given twice`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}
