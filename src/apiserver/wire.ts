/**
 * The JSON bodies of the metrics APIs, exactly as the Go types in `k8s.io/metrics` and
 * `k8s.io/apimachinery` serialize: field names, `null` where Go has no `omitempty`,
 * quantity strings, RFC 3339 timestamps at second precision.
 */
import { formatGroupResource } from "../api/group-resource.js";
import type {
  CustomMetricInfo,
  CustomMetricValue,
  ExternalMetricInfo,
  ExternalMetricValue,
} from "../metrics/provider.js";

import type { LabelSelectorObject } from "../selectors/label-selector.js";

export const CUSTOM_GROUP = "custom.metrics.k8s.io";
export const EXTERNAL_GROUP = "external.metrics.k8s.io";
/** Governor's own: the samples each replica keeps of a MetricMapping (src/metrics/history.ts). */
export const HISTORY_GROUP = "history.governor.dev";

/** Served versions per group, preferred first. */
export const GROUP_VERSIONS: Record<string, readonly string[]> = {
  [CUSTOM_GROUP]: ["v1beta2", "v1beta1"],
  [EXTERNAL_GROUP]: ["v1beta1"],
  [HISTORY_GROUP]: ["v1alpha1"],
};

/**
 * Listed in discovery when a group has no live metric, because clients treat an empty
 * `resources` list as a failed discovery. A GET of it answers 404.
 */
export const PLACEHOLDER_RESOURCE = "governor-no-metrics-yet";

/** RFC 3339 UTC, second precision: what `metav1.Time` marshals to. */
export function rfc3339(d: Date | number): string {
  // Every item of a selector answer carries the same sample time: format it once.
  const ms = typeof d === "number" ? d : d.getTime();
  if (ms !== lastFormatted.ms) {
    lastFormatted.ms = ms;
    lastFormatted.text = new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  }
  return lastFormatted.text;
}
const lastFormatted = { ms: NaN, text: "" };

/** A body already serialized to JSON (sent as is; its bytes encoded once, when first sent). */
export class JsonText {
  private encoded?: Buffer;
  constructor(readonly text: string) {}
  get bytes(): Buffer {
    return (this.encoded ??= Buffer.from(this.text, "utf8"));
  }
}

/** `metav1.Status` for an error. */
export function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

/** `metav1.APIGroupList` for `GET /apis`. */
export function apiGroupList(groups: readonly string[]) {
  return { kind: "APIGroupList", apiVersion: "v1", groups: groups.map((g) => apiGroupEntry(g)) };
}

/** `metav1.APIGroup` for `GET /apis/{group}`. */
export function apiGroup(group: string) {
  return { kind: "APIGroup", apiVersion: "v1", ...apiGroupEntry(group) };
}

function apiGroupEntry(group: string) {
  const versions = (GROUP_VERSIONS[group] ?? []).map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { name: group, versions, preferredVersion: versions[0] };
}

/** `metav1.APIResourceList` for `GET /apis/custom.metrics.k8s.io/{version}`; never empty. */
export function customResourceList(version: string, metrics: readonly CustomMetricInfo[]) {
  const seen = new Set<string>();
  const resources = [];
  for (const m of metrics) {
    const name = `${formatGroupResource(m.groupResource)}/${m.metric}`;
    if (seen.has(name)) continue;
    seen.add(name);
    resources.push({
      name,
      singularName: "",
      namespaced: m.namespaced,
      kind: "MetricValueList",
      verbs: ["get"],
    });
  }
  resources.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (resources.length === 0) {
    resources.push({
      name: PLACEHOLDER_RESOURCE,
      singularName: "",
      namespaced: true,
      kind: "MetricValueList",
      verbs: ["get"],
    });
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion: `${CUSTOM_GROUP}/${version}`, resources };
}

/** `metav1.APIResourceList` for `GET /apis/external.metrics.k8s.io/v1beta1`; never empty. */
export function externalResourceList(version: string, metrics: readonly ExternalMetricInfo[]) {
  const names = [...new Set(metrics.map((m) => m.metric))].sort();
  if (names.length === 0) names.push(PLACEHOLDER_RESOURCE);
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: `${EXTERNAL_GROUP}/${version}`,
    resources: names.map((name) => ({
      name,
      singularName: "",
      namespaced: true,
      kind: "ExternalMetricValueList",
      verbs: ["get"],
    })),
  };
}

/** `metav1.APIResourceList` for `GET /apis/history.governor.dev/v1alpha1`: one resource, read by name. */
export function historyResourceList(version: string) {
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: `${HISTORY_GROUP}/${version}`,
    resources: [
      {
        name: "metricmappings",
        singularName: "",
        namespaced: true,
        kind: "MetricMappingHistory",
        verbs: ["get"],
      },
    ],
  };
}

/**
 * A MetricMapping's kept samples, oldest first, as columns (src/metrics/history.ts);
 * `metadata.continue`, when more follow, is the `continue` of the next page's request.
 */
export function metricMappingHistory(
  namespace: string,
  name: string,
  capacity: number,
  points: { atMs: readonly number[]; sum: readonly number[]; count: readonly number[] },
  nextMs?: number,
) {
  return {
    kind: "MetricMappingHistory",
    apiVersion: `${HISTORY_GROUP}/v1alpha1`,
    metadata: { name, namespace, ...(nextMs !== undefined ? { continue: String(nextMs) } : {}) },
    capacity,
    points,
  };
}

/** The media type of aggregated discovery (Kubernetes ≥ 1.30 asks `GET /apis` for it). */
export const AGGREGATED_DISCOVERY_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const NO_KIND = { group: "", version: "", kind: "" };

/**
 * `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList` for `GET /apis`: every group, version
 * and resource in one document, so the aggregator makes one request per refresh (a 304
 * while nothing changed) instead of one per group-version. Resources are built from the
 * same lists as the legacy documents and shaped as kube-apiserver converts those lists
 * itself: a custom metric `pods/http_requests` is the subresource `http_requests` of a
 * parent `pods` that has no verbs of its own (so `kubectl api-resources` lists external
 * metrics, not custom ones — as with any custom metrics adapter).
 */
export function aggregatedDiscovery(
  groups: readonly string[],
  custom: readonly CustomMetricInfo[],
  external: readonly ExternalMetricInfo[],
) {
  const versionsOf = (group: string) =>
    (GROUP_VERSIONS[group] ?? []).map((version) => {
      const list =
        group === CUSTOM_GROUP
          ? customResourceList(version, custom)
          : group === HISTORY_GROUP
            ? historyResourceList(version)
            : externalResourceList(version, external);
      return { version, resources: toResourceDiscovery(list.resources), freshness: "Current" };
    });
  return {
    kind: "APIGroupDiscoveryList",
    apiVersion: "apidiscovery.k8s.io/v2",
    metadata: {},
    items: groups.map((name) => ({ metadata: { name }, versions: versionsOf(name) })),
  };
}

/** Legacy `APIResource`s → `APIResourceDiscovery`s, as kube-apiserver converts them. */
function toResourceDiscovery(
  list: readonly { name: string; namespaced: boolean; kind: string; verbs: readonly string[] }[],
) {
  const scopeOf = (namespaced: boolean) => (namespaced ? "Namespaced" : "Cluster");
  type Parent = {
    resource: string;
    responseKind: typeof NO_KIND;
    scope: string;
    singularResource: string;
    verbs?: readonly string[];
    subresources?: { subresource: string; responseKind: typeof NO_KIND; verbs: readonly string[] }[];
  };
  const parents = new Map<string, Parent>();
  for (const r of list) {
    if (r.name.includes("/")) continue;
    parents.set(r.name, {
      resource: r.name,
      responseKind: { ...NO_KIND, kind: r.kind },
      scope: scopeOf(r.namespaced),
      singularResource: "",
      verbs: r.verbs,
    });
  }
  for (const r of list) {
    const slash = r.name.indexOf("/");
    if (slash < 0) continue;
    const name = r.name.slice(0, slash);
    let parent = parents.get(name);
    if (!parent) {
      parent = { resource: name, responseKind: NO_KIND, scope: scopeOf(r.namespaced), singularResource: "" };
      parents.set(name, parent);
    }
    (parent.subresources ??= []).push({
      subresource: r.name.slice(slash + 1),
      responseKind: { ...NO_KIND, kind: r.kind },
      verbs: r.verbs,
    });
  }
  return [...parents.values()];
}

/** `custom_metrics/v1beta2.MetricValueList`. */
export function customValueListV1beta2(
  values: readonly CustomMetricValue[],
  selector: LabelSelectorObject | null,
) {
  return {
    kind: "MetricValueList",
    apiVersion: `${CUSTOM_GROUP}/v1beta2`,
    metadata: {},
    items: values.map((v) => ({
      describedObject: describedObject(v),
      metric: { name: v.metric, selector },
      timestamp: rfc3339(v.timestamp),
      ...(v.windowSeconds !== undefined ? { windowSeconds: v.windowSeconds } : {}),
      value: v.value,
    })),
  };
}

/** `custom_metrics/v1beta1.MetricValueList`: `metricName`, `window`, top-level `selector`. */
export function customValueListV1beta1(
  values: readonly CustomMetricValue[],
  selector: LabelSelectorObject | null,
) {
  return {
    kind: "MetricValueList",
    apiVersion: `${CUSTOM_GROUP}/v1beta1`,
    metadata: {},
    items: values.map((v) => ({
      describedObject: describedObject(v),
      metricName: v.metric,
      timestamp: rfc3339(v.timestamp),
      ...(v.windowSeconds !== undefined ? { window: v.windowSeconds } : {}),
      value: v.value,
      selector,
    })),
  };
}

/** `external_metrics/v1beta1.ExternalMetricValueList`. */
export function externalValueList(values: readonly ExternalMetricValue[]) {
  return {
    kind: "ExternalMetricValueList",
    apiVersion: `${EXTERNAL_GROUP}/v1beta1`,
    metadata: {},
    items: values.map((v) => ({
      metricName: v.metric,
      metricLabels: v.labels,
      timestamp: rfc3339(v.timestamp),
      ...(v.windowSeconds !== undefined ? { window: v.windowSeconds } : {}),
      value: v.value,
    })),
  };
}

function describedObject(v: CustomMetricValue) {
  const o = v.describedObject;
  return {
    kind: o.kind,
    ...(o.namespace ? { namespace: o.namespace } : {}),
    name: o.name,
    apiVersion: o.apiVersion,
  };
}

/** A minimal valid OpenAPI v2 document (the aggregator fetches it after registration). */
export function openApiV2(title: string) {
  return { swagger: "2.0", info: { title, version: "v1alpha1" }, paths: {}, definitions: {} };
}

/** The OpenAPI v3 discovery document: no group-versions published. */
export function openApiV3Discovery() {
  return { paths: {} };
}
