/**
 * `governor explain hpa/NAME | mm/NAME | sw/NAME`: follows the chain the HPA uses for each
 * of its metrics and says which link holds and which is broken, with the fix:
 *
 *   APIService registered, Governor's and Available → discovery lists the metric → a
 *   MetricMapping in that namespace serves it and is Ready → the metrics API answers with
 *   a fresh value (asked exactly as the HPA asks) → the HPA controller may read it (a
 *   SubjectAccessReview for the attributes Governor itself checks) → the scale target's
 *   `/scale` selector matches pods.
 *
 * It only reads (and asks one SubjectAccessReview per metric); it needs the rights of
 * someone who may read these objects and call the metrics APIs.
 *
 * (One file, longer than most: it is the chain, read top to bottom, link by link.)
 */
import { API_VERSION } from "../api/common.js";
import type { KubeClient } from "../k8s/client.js";
import { KubeApiError } from "../k8s/client.js";
import { accessReviewSpec } from "../apiserver/authz.js";
import { requestInfo } from "../apiserver/request-info.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { REPLACED_ANNOTATION } from "../manifests/api-service.js";

/** One link of the chain: holds (`ok`), broken (`fail`, with a fix), or a caveat (`warn`). */
export interface Link {
  state: "ok" | "fail" | "warn" | "skip";
  text: string;
  fix?: string;
}

/** The links checked for one thing (a metric of an HPA, a scale target, a mapping). */
export interface Section {
  title: string;
  links: Link[];
}

/** What to explain. */
export interface ExplainTarget {
  kind: "hpa" | "mm" | "sw";
  name: string;
  namespace: string;
}

/** Options of {@link explain}. */
export interface ExplainOptions {
  /** The identity the HPA controller reads metrics as. */
  hpaUser: { name: string; groups: string[] };
  /** Where Governor's Service is (its APIServices point there). */
  governorService: { namespace: string; name: string };
}

/** The HPA controller with kube-controller-manager's `--use-service-account-credentials`. */
export const DEFAULT_HPA_USER = {
  name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
  groups: ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
};

const API = {
  custom: { group: "custom.metrics.k8s.io", versions: ["v1beta2", "v1beta1"] },
  external: { group: "external.metrics.k8s.io", versions: ["v1beta1"] },
} as const;
const GOVERNOR = `/apis/${API_VERSION}`;

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface MetricIdentifier {
  name: string;
  selector?: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] };
}
export interface HpaMetric {
  type: string;
  pods?: { metric: MetricIdentifier };
  object?: { metric: MetricIdentifier; describedObject: { apiVersion: string; kind: string; name: string } };
  external?: { metric: MetricIdentifier };
}
interface Hpa {
  spec: {
    scaleTargetRef: { apiVersion?: string; kind: string; name: string };
    metrics?: HpaMetric[];
  };
  status?: { conditions?: Condition[] };
}
type Subject = { resource?: string; external?: object } | undefined;
interface Mapping {
  metadata: { name: string; creationTimestamp?: string };
  spec?: { metric?: string; subject?: Subject };
  status?: { conditions?: Condition[]; value?: string; lastSampleTime?: string };
}

/** What one HPA metric (or a mapping) asks of the metrics API. */
export interface MetricQuery {
  api: keyof typeof API;
  metric: string;
  /** The discovery name: `pods/x`, `deployments.apps/x`, or the external metric's name. */
  discoveryName: string;
  /** Decides whether a MetricMapping's subject serves this query. */
  subjectMatches: (subject: Subject) => boolean;
  /** An Object metric's object: its resource is looked up by discovery before asking. */
  describedObject?: { apiVersion: string; kind: string; name: string };
  /** The path after `/apis/{group}/{version}`, and its query. */
  path: string;
  query: Record<string, string>;
  describe: string;
}

/** Runs the checks for `target`. */
export async function explain(
  client: KubeClient,
  target: ExplainTarget,
  opts: ExplainOptions,
): Promise<Section[]> {
  switch (target.kind) {
    case "hpa":
      return explainHpa(client, target.namespace, target.name, opts);
    case "mm":
      return explainMapping(client, target.namespace, target.name, opts);
    case "sw":
      return explainWorkload(client, target.namespace, target.name, opts);
  }
}

/** Prints sections as ✓/✗ lines with the fix under each broken link. */
export function render(sections: Section[]): string {
  const mark = { ok: "✓", fail: "✗", warn: "!", skip: "-" } as const;
  const lines: string[] = [];
  for (const s of sections) {
    lines.push(s.title);
    for (const l of s.links) {
      lines.push(`  ${mark[l.state]} ${l.text}`);
      if (l.fix) lines.push(`      fix: ${l.fix}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** Whether any link is broken. */
export function broken(sections: Section[]): boolean {
  return sections.some((s) => s.links.some((l) => l.state === "fail"));
}

async function explainHpa(
  client: KubeClient,
  namespace: string,
  name: string,
  opts: ExplainOptions,
): Promise<Section[]> {
  const hpa = await client.getOrUndefined<Hpa>(
    `/apis/autoscaling/v2/namespaces/${namespace}/horizontalpodautoscalers/${name}`,
  );
  if (!hpa)
    return [
      {
        title: `hpa/${name} in ${namespace}`,
        links: [
          {
            state: "fail",
            text: `HorizontalPodAutoscaler ${name} not found in namespace ${namespace}`,
            fix: "check the name and -n",
          },
        ],
      },
    ];
  const scale = await scaleTarget(client, namespace, hpa.spec.scaleTargetRef);
  const sections: Section[] = [scale.section];
  const metrics = hpa.spec.metrics ?? [];
  for (const [i, m] of metrics.entries()) {
    const title = `hpa/${name} in ${namespace}, metric ${i + 1} of ${metrics.length}: ${m.type}`;
    const query = queryFor(m, namespace, scale.selector);
    if (!query) {
      sections.push({
        title,
        links: [
          {
            state: "skip",
            text: `a ${m.type} metric is served by metrics.k8s.io (metrics-server), not by Governor`,
          },
        ],
      });
      continue;
    }
    sections.push({
      title: `${title} ${query.metric} (${query.describe})`,
      links: await metricLinks(client, namespace, query, opts, true),
    });
  }
  const active = hpa.status?.conditions?.find((c) => c.type === "ScalingActive");
  if (active)
    sections.push({
      title: `hpa/${name}: what the HPA itself says`,
      links: [
        {
          // At 0 replicas the HPA disables itself: that is scale to zero at rest, not a fault.
          state: active.status === "True" ? "ok" : active.reason === "ScalingDisabled" ? "warn" : "fail",
          text: `ScalingActive=${active.status} (${active.reason ?? ""}): ${active.message ?? ""}`,
        },
      ],
    });
  return sections;
}

async function explainMapping(
  client: KubeClient,
  namespace: string,
  name: string,
  opts: ExplainOptions,
): Promise<Section[]> {
  const mapping = await client.getOrUndefined<Mapping>(
    `${GOVERNOR}/namespaces/${namespace}/metricmappings/${name}`,
  );
  const title = `mm/${name} in ${namespace}`;
  if (!mapping)
    return [
      {
        title,
        links: [{ state: "fail", text: `MetricMapping ${name} not found in namespace ${namespace}` }],
      },
    ];
  const metric = mapping.spec?.metric ?? "";
  const subject = mapping.spec?.subject;
  let query: MetricQuery;
  if (subject?.external) {
    query = externalQuery(metric, namespace, undefined);
  } else {
    // The API names a resource as the mapping does: `pods`, `deployments.apps`.
    const resource = subject?.resource ?? "";
    query = {
      api: "custom",
      metric,
      discoveryName: `${resource}/${metric}`,
      subjectMatches: (s) => s?.resource === resource,
      path: `/namespaces/${namespace}/${resource}/*/${metric}`,
      query: {},
      describe: `every object of ${resource} in ${namespace}`,
    };
  }
  return [
    {
      title: `${title}: ${metric} (${query.describe})`,
      links: await metricLinks(client, namespace, query, opts, false),
    },
  ];
}

async function explainWorkload(
  client: KubeClient,
  namespace: string,
  name: string,
  opts: ExplainOptions,
): Promise<Section[]> {
  const sw = await client.getOrUndefined<{
    spec?: { autoscaling?: unknown };
    status?: { conditions?: Condition[] };
  }>(`${GOVERNOR}/namespaces/${namespace}/scalableworkloads/${name}`);
  const title = `sw/${name} in ${namespace}`;
  if (!sw)
    return [
      {
        title,
        links: [{ state: "fail", text: `ScalableWorkload ${name} not found in namespace ${namespace}` }],
      },
    ];
  const links: Link[] = [];
  const ready = sw.status?.conditions?.find((c) => c.type === "Ready");
  links.push(
    ready?.status === "True"
      ? { state: "ok", text: `Ready (${ready.reason ?? ""}): ${ready.message ?? ""}` }
      : {
          state: "fail",
          text: ready
            ? `not Ready (${ready.reason ?? ""}): ${ready.message ?? ""}`
            : "no status yet: is Governor running?",
          fix: ready
            ? "see the message; kubectl describe sw " + name
            : "start Governor (its leader writes status)",
        },
  );
  const active = sw.status?.conditions?.find((c) => c.type === "Active");
  if (active)
    links.push(
      active.status === "Unknown"
        ? {
            state: "fail",
            text: `scale to zero is holding the replicas (${active.reason ?? ""}): ${active.message ?? ""}`,
            fix: "fix the activation MetricMapping: governor explain mm/<spec.autoscaling.activation.mapping>",
          }
        : {
            state: "ok",
            text: `${active.status === "True" ? "active" : "idle at 0"} (${active.reason ?? ""}): ${active.message ?? ""}`,
          },
    );
  const sections: Section[] = [{ title, links }];
  if (!sw.spec?.autoscaling) {
    sections.push(
      (
        await scaleTarget(client, namespace, {
          apiVersion: API_VERSION,
          kind: "ScalableWorkload",
          name,
        })
      ).section,
    );
    links.push({ state: "skip", text: "no spec.autoscaling: Governor writes no HPA for it" });
    return sections;
  }
  return [...sections, ...(await explainHpa(client, namespace, name, opts))];
}

/** The scale target's `/scale` selector and the pods it matches. */
async function scaleTarget(
  client: KubeClient,
  namespace: string,
  ref: { apiVersion?: string; kind: string; name: string },
): Promise<{ section: Section; selector?: string }> {
  const title = `scale target ${ref.kind}/${ref.name} in ${namespace}`;
  const resource = await resourceOf(client, ref.apiVersion ?? "v1", ref.kind);
  if (!resource)
    return {
      section: {
        title,
        links: [{ state: "fail", text: `the cluster serves no kind ${ref.kind} in ${ref.apiVersion}` }],
      },
    };
  const base = ref.apiVersion?.includes("/") ? `/apis/${ref.apiVersion}` : `/api/${ref.apiVersion ?? "v1"}`;
  let scale: { spec?: { replicas?: number }; status?: { selector?: string; replicas?: number } };
  try {
    scale = await client.get(`${base}/namespaces/${namespace}/${resource}/${ref.name}/scale`);
  } catch (err) {
    return {
      section: {
        title,
        links: [
          {
            state: "fail",
            text: `its /scale subresource cannot be read: ${(err as Error).message}`,
            fix:
              err instanceof KubeApiError && err.statusCode === 404
                ? `${ref.kind} ${ref.name} does not exist in ${namespace} (or has no /scale subresource)`
                : undefined,
          },
        ],
      },
    };
  }
  const selector = scale.status?.selector ?? "";
  if (!selector)
    return {
      section: {
        title,
        links: [
          {
            state: "fail",
            text: "its /scale status has no selector: the HPA cannot find its pods",
            fix: ref.kind === "ScalableWorkload" ? "see the ScalableWorkload's Ready condition" : undefined,
          },
        ],
      },
    };
  const pods = await client.get<{
    items: { status?: { conditions?: Condition[] }; metadata?: { deletionTimestamp?: string } }[];
  }>(`/api/v1/namespaces/${namespace}/pods`, { labelSelector: selector });
  const live = pods.items.filter((p) => !p.metadata?.deletionTimestamp);
  // Scale's spec.replicas is omitempty: absent means 0. At 0 on purpose (a ScalableWorkload
  // that scales to zero) no pods is right; anything else at 0 has the HPA disabled.
  if ((scale.spec?.replicas ?? 0) === 0 && live.length === 0 && (await scalesToZero(client, namespace, ref)))
    return {
      section: {
        title,
        links: [
          {
            state: "skip",
            text: `at 0 replicas, so no pods (the HPA stands still at 0 until something scales it up)`,
          },
        ],
      },
      selector,
    };
  const readyCount = live.filter((p) =>
    p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
  ).length;
  const link: Link =
    live.length === 0
      ? {
          state: "fail",
          text: `its /scale selector (${selector}) matches no pods in ${namespace}`,
          fix: "Pods metrics and Object metrics with a Value target need pods: check the workload's selector and that its pods exist",
        }
      : {
          state: readyCount === 0 ? "warn" : "ok",
          text: `its /scale selector (${selector}) matches ${live.length} pod(s), ${readyCount} Ready`,
        };
  return { section: { title, links: [link] }, selector };
}

/** Whether `ref` is a ScalableWorkload with `minReplicas: 0` (it idles at 0 replicas by design). */
async function scalesToZero(
  client: KubeClient,
  namespace: string,
  ref: { apiVersion?: string; kind: string; name: string },
): Promise<boolean> {
  if (ref.kind !== "ScalableWorkload" || ref.apiVersion !== API_VERSION) return false;
  const sw = await client.getOrUndefined<{ spec?: { autoscaling?: { minReplicas?: number } } }>(
    `${GOVERNOR}/namespaces/${namespace}/scalableworkloads/${ref.name}`,
  );
  return sw?.spec?.autoscaling?.minReplicas === 0;
}

/** The metrics-API request the HPA makes for `m`, or undefined for resource metrics. */
export function queryFor(
  m: HpaMetric,
  namespace: string,
  scaleSelector: string | undefined,
): MetricQuery | undefined {
  if (m.type === "Pods" && m.pods) {
    const metric = m.pods.metric.name;
    return {
      api: "custom",
      metric,
      discoveryName: `pods/${metric}`,
      subjectMatches: (s) => s?.resource === "pods",
      path: `/namespaces/${namespace}/pods/*/${metric}`,
      query: {
        ...(scaleSelector ? { labelSelector: scaleSelector } : {}),
        ...metricSelector(m.pods.metric),
      },
      describe: `the pods of the scale target`,
    };
  }
  if (m.type === "Object" && m.object) {
    const metric = m.object.metric.name;
    const d = m.object.describedObject;
    // Discovery name, path and subject are set in metricLinks, once the kind's resource is known.
    return {
      api: "custom",
      metric,
      discoveryName: "",
      subjectMatches: () => false,
      path: "",
      query: metricSelector(m.object.metric),
      describe: `${d.kind} ${d.name}`,
      describedObject: d,
    };
  }
  if (m.type === "External" && m.external)
    return externalQuery(m.external.metric.name, namespace, m.external.metric);
  return undefined;
}

function externalQuery(metric: string, namespace: string, id: MetricIdentifier | undefined): MetricQuery {
  return {
    api: "external",
    metric,
    discoveryName: metric,
    subjectMatches: (s) => s?.external !== undefined,
    path: `/namespaces/${namespace}/${metric}`,
    query: id?.selector ? { labelSelector: LabelSelector.fromObject(id.selector as never).toString() } : {},
    describe: "external",
  };
}

function metricSelector(id: MetricIdentifier): Record<string, string> {
  return id.selector
    ? { metricLabelSelector: LabelSelector.fromObject(id.selector as never).toString() }
    : {};
}

/**
 * An Object metric names a kind; the API path and discovery name use its resource
 * (`services`, `deployments.apps`), as the HPA's client does: fills them in.
 */
export async function resolveDescribed(client: KubeClient, namespace: string, q: MetricQuery): Promise<void> {
  const described = q.describedObject;
  if (!described) return;
  // apiVersion may be left out (the core group's objects).
  const apiVersion = described.apiVersion || "v1";
  const plural = (await resourceOf(client, apiVersion, described.kind)) ?? `${described.kind.toLowerCase()}s`;
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0]! : "";
  const resource = group ? `${plural}.${group}` : plural;
  q.discoveryName = `${resource}/${q.metric}`;
  // A Namespace's metric is asked root-scoped, of the HPA's own namespace (client-go's getForNamespace).
  q.path =
    resource === "namespaces"
      ? `/namespaces/${namespace}/metrics/${q.metric}`
      : `/namespaces/${namespace}/${resource}/${described.name}/${q.metric}`;
  q.subjectMatches = (s) => s?.resource === resource;
}

/** The links of one metric: APIService, discovery, mapping, value, and (for an HPA) RBAC. */
async function metricLinks(
  client: KubeClient,
  namespace: string,
  q: MetricQuery,
  opts: ExplainOptions,
  forHpa: boolean,
): Promise<Link[]> {
  const links: Link[] = [];
  await resolveDescribed(client, namespace, q);

  const { group } = API[q.api];
  let version: string = API[q.api].versions[0];
  let apiServiceOk = false;
  /** The upstream adapter Governor forwards this API to (ADR 0011), if it does. */
  let forwardsTo: string | undefined;
  for (const v of API[q.api].versions) {
    const svc = await client.getOrUndefined<{
      metadata?: { annotations?: Record<string, string> };
      spec?: { service?: { namespace?: string; name?: string } };
      status?: { conditions?: Condition[] };
    }>(`/apis/apiregistration.k8s.io/v1/apiservices/${v}.${group}`);
    if (!svc) continue;
    version = v;
    const owner = svc.spec?.service
      ? `${svc.spec.service.namespace}/${svc.spec.service.name}`
      : "the apiserver itself";
    const ours =
      svc.spec?.service?.namespace === opts.governorService.namespace &&
      svc.spec.service.name === opts.governorService.name;
    const available = svc.status?.conditions?.find((c) => c.type === "Available");
    const kept = ours ? svc.metadata?.annotations?.[REPLACED_ANNOTATION] : undefined;
    if (kept) {
      try {
        const up = (JSON.parse(kept) as { spec?: { service?: { namespace?: string; name?: string } } }).spec
          ?.service;
        if (up) forwardsTo = `the upstream adapter (Service ${up.namespace}/${up.name})`;
      } catch {
        // not Governor's annotation after all: nothing forwarded
      }
    }
    if (!ours)
      links.push({
        state: "fail",
        text: `APIService ${v}.${group} points at ${owner}, not at Governor (${opts.governorService.namespace}/${opts.governorService.name})`,
        fix: `another adapter serves this API: put Governor in front of it with --forward-${q.api}=${owner}:<port> (docs/install.md: Beside KEDA / prometheus-adapter), or replace it with --take-over-apiservices`,
      });
    else if (available?.status !== "True")
      links.push({
        state: "fail",
        text: `APIService ${v}.${group} is not Available: ${available?.reason ?? ""} ${available?.message ?? ""}`.trim(),
        fix: "the aggregator cannot reach Governor: is it running and Ready? (docs/troubleshooting.md)",
      });
    else {
      apiServiceOk = true;
      links.push({
        state: "ok",
        text: `APIService ${v}.${group} is Available and points at Governor (${owner})`,
      });
    }
    break;
  }
  if (links.length === 0)
    links.push({
      state: "fail",
      text: `no APIService serves ${group}`,
      fix: "start Governor: it registers its APIServices (or check its log for APIServiceConflict)",
    });
  const base = `/apis/${group}/${version}`;

  if (apiServiceOk) {
    try {
      const discovery = await client.get<{ resources: { name: string }[] }>(base);
      links.push(
        discovery.resources.some((r) => r.name === q.discoveryName)
          ? { state: "ok", text: `discovery lists ${q.discoveryName}` }
          : {
              state: "fail",
              text: `discovery does not list ${q.discoveryName}`,
              fix: "no Ready MetricMapping serves this metric for these objects (see the next line)",
            },
      );
    } catch (err) {
      links.push({ state: "fail", text: `discovery failed: ${(err as Error).message}` });
    }
  } else links.push({ state: "skip", text: "discovery: not asked (no Available APIService of Governor's)" });

  // The value first: a forwarded answer says which upstream gave it and why (Governor-Upstream).
  const path = `${base}${q.path}`;
  const seen: { routedTo?: string } = {};
  const value: Link = apiServiceOk
    ? await valueLink(client, path, q, seen)
    : { state: "skip", text: "value: not asked (no Available APIService of Governor's)" };
  links.push(await mappingLink(client, namespace, q, seen.routedTo ?? forwardsTo));
  links.push(value);

  if (forHpa) links.push(await accessLink(client, path, q, opts));
  return links;
}

async function mappingLink(
  client: KubeClient,
  namespace: string,
  q: MetricQuery,
  forwardsTo: string | undefined,
): Promise<Link> {
  const list = await client.get<{ items: Mapping[] }>(`${GOVERNOR}/namespaces/${namespace}/metricmappings`);
  const candidates = list.items
    .filter((m) => m.spec?.metric === q.metric && q.subjectMatches(m.spec?.subject))
    .sort((a, b) => String(a.metadata.creationTimestamp).localeCompare(String(b.metadata.creationTimestamp)));
  if (candidates.length === 0 && forwardsTo)
    return {
      state: "ok",
      text: `no MetricMapping in ${namespace} has metric ${q.metric}: Governor forwards it to ${forwardsTo}, which answers the value below`,
    };
  if (candidates.length === 0)
    return {
      state: "fail",
      text: `no MetricMapping in ${namespace} has metric ${q.metric} for ${q.api === "external" ? "external metrics" : q.discoveryName.split("/")[0]}`,
      fix: `kubectl apply -n ${namespace} a MetricMapping with spec.metric: ${q.metric} (config/samples/ has one per source)`,
    };
  // The oldest claims the metric (Governor's rule); newer ones say Conflict.
  const m = candidates[0]!;
  const condition = (type: string) => m.status?.conditions?.find((c) => c.type === type);
  const ready = condition("Ready");
  const health = condition("SourceHealthy");
  if (ready?.status === "True") {
    if (health?.status === "False")
      return {
        state: "warn",
        text: `MetricMapping ${m.metadata.name} serves it (${ready.reason}), but its source fails: ${health.message ?? ""}`,
        fix: "fix the source; until then the fallback value is served",
      };
    return { state: "ok", text: `MetricMapping ${m.metadata.name} serves it (Ready: ${ready.reason ?? ""})` };
  }
  const reason = ready?.reason ?? "";
  const fix =
    reason === "Stale" || reason === "NoValue"
      ? `its source fails${health?.message ? ` (${health.message})` : ""}: fix the source, or set spec.fallback`
      : ready
        ? `edit the mapping: ${ready.message ?? reason}`
        : "no status yet: is Governor running? (its leader writes status)";
  return {
    state: "fail",
    text: `MetricMapping ${m.metadata.name} is not Ready${ready ? ` (${reason}): ${ready.message ?? ""}` : ""}`,
    fix,
  };
}

/** The value as the HPA reads it; `seen.routedTo` gets the upstream that answered, if one did (Governor-Upstream). */
async function valueLink(
  client: KubeClient,
  path: string,
  q: MetricQuery,
  seen: { routedTo?: string },
): Promise<Link> {
  try {
    const list = await client.request<{
      items: { value: string; timestamp?: string; describedObject?: { name?: string } }[];
    }>("GET", path, {
      query: q.query,
      onHeaders: (h) => {
        const v = h["governor-upstream"];
        if (typeof v === "string") seen.routedTo = v.slice(0, 300);
      },
    });
    if (list.items.length === 0)
      return {
        state: "fail",
        text: `the metrics API answers, with no values for ${q.describe}`,
        fix: "no objects match: check the selectors",
      };
    const newest = Math.max(...list.items.map((i) => Date.parse(i.timestamp ?? "") || 0));
    const age = newest ? `, sampled ${Math.max(0, Math.round((Date.now() - newest) / 1000))} s ago` : "";
    const values = list.items
      .slice(0, 3)
      .map((i) => (i.describedObject?.name ? `${i.describedObject.name}=${i.value}` : i.value));
    return {
      state: "ok",
      text: `the metrics API answers ${list.items.length} value(s): ${values.join(", ")}${list.items.length > 3 ? ", …" : ""}${age}`,
    };
  } catch (err) {
    const code = err instanceof KubeApiError ? err.statusCode : 0;
    const message =
      err instanceof KubeApiError
        ? String((err.status as { message?: string } | undefined)?.message ?? err.message)
        : (err as Error).message;
    return {
      state: "fail",
      text: `the metrics API answers ${code || "an error"}: ${message}`,
      fix:
        code === 503
          ? "the value is stale or not sampled yet: see the MetricMapping's SourceHealthy condition"
          : code === 404
            ? "no Ready MetricMapping serves this metric for these objects"
            : code === 403
              ? "you may not read it yourself (explain needs the rights to read metrics)"
              : undefined,
    };
  }
}

async function accessLink(
  client: KubeClient,
  path: string,
  q: MetricQuery,
  opts: ExplainOptions,
): Promise<Link> {
  const info = requestInfo("GET", path);
  const review = await client.create<{ status?: { allowed?: boolean; reason?: string } }>(
    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SubjectAccessReview",
      // The review Governor itself sends for this request, for the HPA controller.
      spec: accessReviewSpec({ ...opts.hpaUser, extra: {} }, info),
    },
  );
  const what = `${info.verb} ${info.resource}${info.subresource ? `/${info.subresource}` : ""} in ${info.apiGroup} (namespace ${info.namespace})`;
  return review.status?.allowed
    ? { state: "ok", text: `the HPA controller (${opts.hpaUser.name}) may ${what}` }
    : {
        state: "fail",
        text: `the HPA controller (${opts.hpaUser.name}) may not ${what}${review.status?.reason ? `: ${review.status.reason}` : ""}`,
        fix: `bind it to a ClusterRole that may get and list ${q.api === "external" ? "external" : "custom"}.metrics.k8s.io (config/rbac's governor-hpa-metrics-reader)`,
      };
}

/** The resource (plural) of `kind` in `apiVersion`, from discovery. */
export async function resourceOf(
  client: KubeClient,
  apiVersion: string,
  kind: string,
): Promise<string | undefined> {
  const path = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const list = await client.getOrUndefined<{ resources: { name: string; kind: string }[] }>(path);
  return list?.resources.find((r) => r.kind === kind && !r.name.includes("/"))?.name;
}
