/**
 * What Governor took over, and giving it back (ADR 0011). When Governor replaces another
 * adapter's APIService (`--take-over-apiservices`, or forwarding to that adapter), it keeps
 * the replaced one in an annotation on its own; `uninstall`, or forwarding turned off, puts
 * it back as it was — if its Service still exists, since an APIService pointing at a
 * missing Service would break discovery and namespace deletion. The replaced APIService
 * also says how to check the upstream's certificate (its `caBundle`).
 */
import type { Logger } from "pino";
import { splitPem } from "../certs/certs.js";
import type { KubeApi } from "../k8s/client.js";
import { API_VERSIONS, type GovernorApi, REPLACED_ANNOTATION } from "../manifests/api-service.js";

/** An APIService's spec, as far as Governor reads it. */
export interface ApiServiceSpec {
  service?: { namespace?: string; name?: string; port?: number } | null;
  caBundle?: string;
  insecureSkipTLSVerify?: boolean;
  [field: string]: unknown;
}

/** An APIService as read. */
export interface ApiServiceObject {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: ApiServiceSpec;
}

/** What an APIService Governor replaced looked like (the annotation's JSON). */
interface ReplacedApiService {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  spec: ApiServiceSpec;
}

/** The Service of an upstream adapter, as `forward` names it. */
export interface UpstreamRef {
  namespace: string;
  name: string;
  port: number;
}

/** How the aggregator was told to check an upstream's certificate (its APIService's spec). */
export interface UpstreamApiServiceTrust {
  /** PEM. */
  caBundle?: string;
  insecureSkipTLSVerify: boolean;
}

/** Which of Governor's APIs a group is. */
export function apiOf(group: string): GovernorApi {
  const apis = Object.keys(API_VERSIONS) as GovernorApi[];
  return apis.find((api) => API_VERSIONS[api][0].group === group) ?? "custom";
}

/** Whether an APIService's spec points at `upstream`'s Service. */
export function pointsAt(spec: ApiServiceSpec | undefined, upstream: UpstreamRef): boolean {
  const svc = spec?.service;
  return svc?.namespace === upstream.namespace && svc.name === upstream.name;
}

/** The annotation that keeps `existing` (being taken over) to give back later. */
export function keepReplaced(existing: ApiServiceObject): string {
  const { group: _group, version: _version, ...spec } = existing.spec ?? {};
  return JSON.stringify({
    ...(existing.metadata?.labels ? { labels: existing.metadata.labels } : {}),
    ...(existing.metadata?.annotations ? { annotations: existing.metadata.annotations } : {}),
    spec,
  } satisfies ReplacedApiService);
}

/** The annotation Governor's own APIService carries, if any. */
export function keptAnnotation(ours: ApiServiceObject | undefined): string | undefined {
  return ours?.metadata?.annotations?.[REPLACED_ANNOTATION];
}

/** Whether two base64 caBundles have a certificate in common (Governor's own bundle mid-rotation has two). */
export function sharesCA(a: string, b: string): boolean {
  const theirs = new Set(splitPem(Buffer.from(a, "base64").toString("utf8")).map((c) => c.trim()));
  return splitPem(Buffer.from(b, "base64").toString("utf8")).some((c) => theirs.has(c.trim()));
}

/**
 * Puts back the APIService Governor's `ours` replaced, if it kept one and that one's
 * Service still exists; returns the line saying so, or undefined (nothing given back).
 */
export async function giveBack(
  client: KubeApi,
  log: Logger,
  name: string,
  ours: ApiServiceObject,
): Promise<string | undefined> {
  const kept = replacedOf(ours);
  const svc = kept?.spec.service;
  if (!kept || !svc?.namespace || !svc.name) return undefined;
  const exists = await client.getOrUndefined(`/api/v1/namespaces/${svc.namespace}/services/${svc.name}`);
  if (!exists) {
    log.warn(
      { apiService: name, service: `${svc.namespace}/${svc.name}` },
      "not giving back the APIService Governor replaced: its Service no longer exists",
    );
    return undefined;
  }
  const [group, version] = [name.slice(name.indexOf(".") + 1), name.slice(0, name.indexOf("."))];
  await client.createOrReplace(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`, {
    apiVersion: "apiregistration.k8s.io/v1",
    kind: "APIService",
    metadata: {
      name,
      ...(kept.labels ? { labels: kept.labels } : {}),
      ...(kept.annotations ? { annotations: kept.annotations } : {}),
    },
    spec: { group, version, ...kept.spec },
  });
  log.info({ apiService: name, service: `${svc.namespace}/${svc.name}` }, "gave back APIService");
  return `gave back apiservice/${name} to Service ${svc.namespace}/${svc.name}`;
}

/** The metrics APIs' APIServices as they are now, by API (absent ones left out). */
export type MetricsApiServices = Record<"custom" | "external", ApiServiceObject[]>;

/** Reads the metrics APIs' APIServices: three GETs, for all the upstreams of a sync. */
export async function readMetricsApiServices(
  client: Pick<KubeApi, "getOrUndefined">,
): Promise<MetricsApiServices> {
  const out: MetricsApiServices = { custom: [], external: [] };
  for (const api of ["custom", "external"] as const)
    for (const gv of API_VERSIONS[api]) {
      const a = await client.getOrUndefined<ApiServiceObject>(
        `/apis/apiregistration.k8s.io/v1/apiservices/${gv.version}.${gv.group}`,
      );
      if (a) out[api].push(a);
    }
  return out;
}

/**
 * How `api`'s upstream is to be checked: from an APIService while it still points at the
 * upstream, else from one Governor kept; undefined when none says. `api`'s own APIServices
 * first, then the other metrics API's: an adapter serving both groups (as
 * prometheus-adapter can) has one certificate, and may hold only one of the two.
 */
export function trustIn(
  apiServices: MetricsApiServices,
  api: "custom" | "external",
  upstream: UpstreamRef,
): UpstreamApiServiceTrust | undefined {
  const other = api === "custom" ? "external" : "custom";
  for (const a of [...apiServices[api], ...apiServices[other]]) {
    const spec = pointsAt(a.spec, upstream) ? a.spec : replacedOf(a)?.spec;
    if (spec && pointsAt(spec, upstream))
      return {
        caBundle: spec.caBundle ? Buffer.from(spec.caBundle, "base64").toString("utf8") : undefined,
        insecureSkipTLSVerify: spec.insecureSkipTLSVerify === true,
      };
  }
  return undefined;
}

/** {@link trustIn} over the APIServices as they are now. */
export async function upstreamTrust(
  client: KubeApi,
  api: "custom" | "external",
  upstream: UpstreamRef,
): Promise<UpstreamApiServiceTrust | undefined> {
  return trustIn(await readMetricsApiServices(client), api, upstream);
}

/** The APIService kept in Governor's annotation, if there is one and it parses. */
function replacedOf(a: ApiServiceObject): ReplacedApiService | undefined {
  const text = keptAnnotation(a);
  if (!text) return undefined;
  try {
    const kept = JSON.parse(text) as ReplacedApiService;
    return typeof kept?.spec === "object" && kept.spec !== null ? kept : undefined;
  } catch {
    return undefined;
  }
}
