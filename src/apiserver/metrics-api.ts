/**
 * Routing and answers of the metrics APIs: discovery, custom metrics (v1beta1, v1beta2),
 * external metrics (v1beta1), aggregated discovery (apidiscovery.k8s.io/v2), OpenAPI. Takes
 * a method, a URL, the Accept and If-None-Match headers, asks the {@link MetricsProvider},
 * and returns a status code and a JSON body; every failure is a `metav1.Status`. Knows
 * nothing of TLS, users or sources.
 *
 * (A little over 350 lines: one route table for three group-versions and their discovery,
 * kept together so the wire contract in DESIGN.md can be checked against one file.)
 */
import { formatGroupResource, parseGroupResource } from "../api/group-resource.js";
import { createHash } from "node:crypto";
import {
  type CustomMetricInfo,
  type CustomMetricValue,
  type ExternalMetricInfo,
  type MetricQuery,
  type MetricsProvider,
  MetricBadRequestError,
} from "../metrics/provider.js";
import { HISTORY_PAGE_POINTS, type HistoryPage } from "../metrics/history.js";
import { answerFor } from "../errors.js";
import { LabelSelector, SelectorParseError } from "../selectors/label-selector.js";
import { type Cancellation, ClientGoneError } from "../util/deadline.js";
import { boundedText } from "../util/bounded-text.js";
import { tryDecodeURIComponent } from "../util/uri.js";
import {
  AGGREGATED_DISCOVERY_V2,
  CUSTOM_GROUP,
  EXTERNAL_GROUP,
  GROUP_VERSIONS,
  HISTORY_GROUP,
  JsonText,
  PLACEHOLDER_RESOURCE,
  aggregatedDiscovery,
  apiGroup,
  apiGroupList,
  customResourceList,
  customValueListV1beta1,
  customValueListV1beta2,
  externalResourceList,
  externalValueList,
  historyResourceList,
  metricMappingHistory,
  openApiV2,
  openApiV3Discovery,
  statusBody,
} from "./wire.js";

/** What kind of request this was, for metrics and logs (a small fixed set). */
export const RouteKinds = {
  Discovery: "discovery",
  AggregatedDiscovery: "aggregated_discovery",
  CustomObject: "custom_object",
  CustomSelector: "custom_selector",
  External: "external",
  History: "history",
  OpenApi: "openapi",
  Health: "health",
  Unknown: "unknown",
} as const;
export type RouteKind = (typeof RouteKinds)[keyof typeof RouteKinds];

/** An answer to write. */
export interface ApiResponse {
  status: number;
  body: unknown;
  kind: RouteKind;
  /** @default "application/json" */
  contentType?: string;
  /** An entity tag: a later request with `If-None-Match` equal to it gets a 304. */
  etag?: string;
  /** For a 500: what went wrong, for the log only (the body never says). */
  cause?: unknown;
  /**
   * The upstream adapter's own answer, passed on as it is — a 5xx included: its body is what
   * the upstream tells any caller allowed to ask it, not Governor's internals.
   */
  forwarded?: boolean;
  /**
   * Which upstream answered and why (`MetricsUpstream kafka (metrics: kafka_*)`), sent as
   * the `Governor-Upstream` header, which the aggregator passes on (`governor explain` reads it).
   */
  routedTo?: string;
  /** Number of items in a metric list, for logs. */
  items?: number;
}

/** The parts of a request target the API reads (a `URL` has them). */
export interface RequestTarget {
  pathname: string;
  searchParams: URLSearchParams;
}

/**
 * The next in the chain, as k8s.io/apiserver chains its handlers: what answers the metric
 * requests Governor's provider does not serve (an upstream adapter, src/upstream/). This
 * API serves what its provider serves and hands the rest over as it came; it knows
 * nothing of where the delegate sends it.
 */
export interface MetricsDelegate {
  /** Names it in errors: "the upstream external metrics adapter (Service keda/…:443)". */
  readonly description: string;
  /** False while it has nobody to ask: requests go straight to the provider. @default true */
  readonly active?: boolean;
  /** Discovery: `own` and the delegate's custom metrics that do not clash with them (the same array while neither changes). */
  mergeCustom(own: readonly CustomMetricInfo[]): readonly CustomMetricInfo[];
  /** As {@link mergeCustom}, for external metrics. */
  mergeExternal(own: readonly ExternalMetricInfo[]): readonly ExternalMetricInfo[];
  /**
   * Its answer to a request for a metric the provider does not serve; undefined when it has
   * nobody to ask (the provider answers then, as without a delegate).
   */
  serve(request: DelegatedRequest): Promise<ApiResponse> | undefined;
}

/** A metrics request as it came: `/apis/{group}/{version}/{rest…}?{query}`. */
export interface DelegatedRequest {
  group: string;
  version: string;
  /** The path's segments after the version, decoded. */
  rest: readonly string[];
  query: URLSearchParams;
  kind: RouteKind;
  /** The metric asked for: its name, its discovery id, the namespace it is asked in. */
  target: { namespace?: string; metric: string; id: string };
  cancel?: Cancellation;
}

/** The samples a replica keeps of each mapping, by `namespace/name` (src/metrics/history.ts). */
export interface HistoryReader {
  /** Points kept per mapping. */
  readonly points: number;
  get(key: string): { page(sinceMs: number, limit: number): HistoryPage } | undefined;
}

/** Which groups this server serves (to sit beside KEDA, serve custom only), and where the rest goes. */
export interface MetricsApiOptions {
  custom: boolean;
  external: boolean;
  /** Serve `history.governor.dev` from these (`--history-points` above 0). @default not served */
  history?: HistoryReader;
  /** Per group, what answers every metric request the provider does not serve. */
  delegates?: { custom?: MetricsDelegate; external?: MetricsDelegate };
}

const EMPTY_POINTS = { atMs: [], sum: [], count: [] };

const NOT_ACCEPTABLE = statusBody(
  406,
  "NotAcceptable",
  'only "application/json" is served here, and aggregated discovery (apidiscovery.k8s.io/v2) at /apis; no protobuf',
);

/** See the module comment. */
export class MetricsApi {
  private readonly discoveryCache = new Map<string, { list: readonly unknown[]; body: JsonText }>();
  private aggregated?: {
    custom: readonly unknown[];
    external: readonly unknown[];
    body: JsonText;
    etag: string;
  };
  /** Serialized answers per answer object (one value, or a selector's array), by version and metricLabelSelector. */
  private readonly rendered = new WeakMap<object, Map<string, JsonText>>();

  constructor(
    private readonly provider: MetricsProvider,
    private readonly opts: MetricsApiOptions = { custom: true, external: true },
  ) {}

  /** The groups served, in discovery order. */
  get groups(): string[] {
    return [
      ...(this.opts.custom ? [CUSTOM_GROUP] : []),
      ...(this.opts.external ? [EXTERNAL_GROUP] : []),
      ...(this.opts.history ? [HISTORY_GROUP] : []),
    ];
  }

  /**
   * Answers one request (`url` is a URL or the server's split request target). Throws
   * only {@link ClientGoneError} (`cancel` aborted because the client left); a passed
   * deadline is a 504 Status, unexpected errors a 500 Status.
   */
  handle(
    method: string,
    url: RequestTarget,
    accept: string | undefined,
    ifNoneMatch?: string,
    cancel?: Cancellation,
  ): Promise<ApiResponse> {
    return this.route(method, url, accept, ifNoneMatch, cancel).catch((err: unknown) => {
      if (err instanceof ClientGoneError) throw err; // nobody to answer: the server drops it
      return errorResponse(err, routeKind(url.pathname));
    });
  }

  private async route(
    method: string,
    url: RequestTarget,
    accept: string | undefined,
    ifNoneMatch: string | undefined,
    cancel: Cancellation | undefined,
  ): Promise<ApiResponse> {
    const decoded = url.pathname
      .split("/")
      .filter((s) => s !== "")
      .map(tryDecodeURIComponent);
    if (decoded.includes(undefined))
      return {
        status: 400,
        body: statusBody(400, "BadRequest", "the path holds a malformed %-escape"),
        kind: routeKind(url.pathname),
      };
    const segments = decoded as string[];
    if (segments[0] === "openapi") {
      if (segments[1] === "v2" && segments.length === 2)
        return ok(openApiV2("Governor metrics API"), RouteKinds.OpenApi);
      if (segments[1] === "v3" && segments.length === 2) return ok(openApiV3Discovery(), RouteKinds.OpenApi);
      return notFound(
        `the server could not find the requested resource (${url.pathname})`,
        RouteKinds.OpenApi,
      );
    }
    if (segments[0] !== "apis")
      return notFound(`the server could not find the requested resource (${url.pathname})`);
    if (method !== "GET" && method !== "HEAD") {
      return {
        status: 405,
        body: statusBody(
          405,
          "MethodNotAllowed",
          `${method} is not supported: the metrics APIs are read-only`,
        ),
        kind: RouteKinds.Unknown,
      };
    }
    const [, group, version, ...rest] = segments;
    const media = negotiate(accept, group === undefined);
    if (media === undefined) return { status: 406, body: NOT_ACCEPTABLE, kind: RouteKinds.Discovery };
    if (media === "aggregated") return this.aggregatedDiscovery(ifNoneMatch);
    if (group === undefined) return ok(apiGroupList(this.groups), RouteKinds.Discovery);
    if (!this.groups.includes(group))
      return notFound(`the server could not find the requested resource (${url.pathname})`);
    if (version === undefined) return ok(apiGroup(group), RouteKinds.Discovery);
    if (!(GROUP_VERSIONS[group] ?? []).includes(version))
      return notFound(`the server could not find the requested resource (${group}/${version})`);
    if (group === HISTORY_GROUP)
      return rest.length === 0
        ? ok(historyResourceList(version), RouteKinds.Discovery)
        : this.history(rest, url.searchParams);
    if (rest.length === 0) return ok(this.resourceList(group, version), RouteKinds.Discovery);
    return group === CUSTOM_GROUP
      ? this.custom(version, rest, url.searchParams, cancel)
      : this.external(version, rest, url.searchParams, cancel);
  }

  /**
   * `namespaces/{namespace}/metricmappings/{name}[?sinceSeconds=N][&continue=T]`: the
   * samples this replica kept of the mapping, oldest first, {@link HISTORY_PAGE_POINTS} at
   * most; `metadata.continue` says where the next page starts (`governor replay` reads them).
   */
  private history(rest: string[], query: URLSearchParams): ApiResponse {
    const [ns, namespace, resource, name, ...more] = rest;
    if (
      ns !== "namespaces" ||
      !namespace ||
      resource !== "metricmappings" ||
      !name ||
      more.length > 0 ||
      namespace.includes("/") ||
      name.includes("/")
    )
      return notFound(
        "the server could not find the requested resource: expected namespaces/{namespace}/metricmappings/{name}",
        RouteKinds.History,
      );
    const since = query.get("sinceSeconds");
    const token = query.get("continue");
    const whole = /^[0-9]{1,15}$/;
    const wrong =
      since !== null && token !== null
        ? "give sinceSeconds or continue, not both"
        : since !== null && (!whole.test(since) || Number(since) === 0)
          ? "sinceSeconds must be a positive whole number of seconds"
          : token !== null && !whole.test(token)
            ? "continue must be the metadata.continue of the answer before"
            : undefined;
    if (wrong) return { status: 400, body: statusBody(400, "BadRequest", wrong), kind: RouteKinds.History };
    const history = this.opts.history!;
    const ring = history.get(`${namespace}/${name}`);
    // A later page asked of a replica that keeps none (it restarted): the history ends there.
    if (!ring && token !== null)
      return ok(metricMappingHistory(namespace, name, history.points, EMPTY_POINTS), RouteKinds.History);
    if (!ring)
      return notFound(
        `no samples of MetricMapping ${boundedText(name, 253)} in ${boundedText(namespace, 63)} are kept on this replica: it does not exist, has not sampled since the replica started, or its values depend on the HPA's selector`,
        RouteKinds.History,
      );
    const sinceMs =
      token !== null ? Number(token) : since !== null ? Date.now() - Number(since) * 1000 : -Infinity;
    const page = ring.page(sinceMs, HISTORY_PAGE_POINTS);
    return ok(
      metricMappingHistory(namespace, name, history.points, page.points, page.nextMs),
      RouteKinds.History,
    );
  }

  /**
   * Governor's custom metrics and, with a delegate, the delegate's that do not clash with
   * them (Governor's win a clash): the same array until either side changes.
   */
  private customMetrics(): readonly CustomMetricInfo[] {
    const own = this.provider.listCustomMetrics();
    return this.opts.delegates?.custom?.mergeCustom(own) ?? own;
  }

  /** As {@link customMetrics}, for external metrics. */
  private externalMetrics(): readonly ExternalMetricInfo[] {
    const own = this.provider.listExternalMetrics();
    return this.opts.delegates?.external?.mergeExternal(own) ?? own;
  }

  /** Whether Governor answers a request for this metric itself (else its delegate does). */
  private serves(q: MetricQuery): boolean {
    if (this.provider.serves) return this.provider.serves(q);
    if (q.api === "external") return this.provider.listExternalMetrics().some((m) => m.metric === q.metric);
    const id = `${formatGroupResource(q.groupResource)}/${q.metric}`;
    return this.provider.listCustomMetrics().some((m) => customId(m) === id);
  }

  /**
   * A group-version's resource list, serialized once per change of the provider's metric
   * list (the provider hands out the same array until it changes): with 10,000 mappings it
   * is a megabyte of JSON, and discovery is asked often.
   */
  private resourceList(group: string, version: string): JsonText {
    const list = group === CUSTOM_GROUP ? this.customMetrics() : this.externalMetrics();
    const key = `${group}/${version}`;
    const hit = this.discoveryCache.get(key);
    if (hit?.list === list) return hit.body;
    const body = new JsonText(
      JSON.stringify(
        group === CUSTOM_GROUP
          ? customResourceList(version, list as CustomMetricInfo[])
          : externalResourceList(version, list),
      ),
    );
    this.discoveryCache.set(key, { list, body });
    return body;
  }

  /** The aggregated discovery document, serialized and hashed once per change of the metric lists. */
  private aggregatedDiscovery(ifNoneMatch: string | undefined): ApiResponse {
    const custom = this.opts.custom ? this.customMetrics() : [];
    const external = this.opts.external ? this.externalMetrics() : [];
    const hit = this.aggregated;
    const doc =
      hit?.custom === custom && hit.external === external
        ? hit
        : (() => {
            const text = JSON.stringify(aggregatedDiscovery(this.groups, custom, external));
            const etag = `"${createHash("sha256").update(text).digest("hex").slice(0, 32)}"`;
            return (this.aggregated = { custom, external, body: new JsonText(text), etag });
          })();
    const common = {
      kind: RouteKinds.AggregatedDiscovery,
      contentType: AGGREGATED_DISCOVERY_V2,
      etag: doc.etag,
    };
    if (ifNoneMatch === doc.etag) return { status: 304, body: undefined, ...common };
    return { status: 200, body: doc.body, ...common };
  }

  private async custom(
    version: string,
    rest: string[],
    query: URLSearchParams,
    cancel: Cancellation | undefined,
  ): Promise<ApiResponse> {
    const target = customTarget(rest);
    if (!target)
      return notFound(
        `the server could not find the requested resource: expected {resource}/{name}/{metric}`,
      );
    const { namespace, resource, name, metric, bySelector } = target;
    const groupResource = parseGroupResource(resource);
    const kind = bySelector ? RouteKinds.CustomSelector : RouteKinds.CustomObject;
    const delegate = this.opts.delegates?.custom?.active === false ? undefined : this.opts.delegates?.custom;
    // A namespace metric describes the Namespace itself: the mappings of that namespace serve it.
    const servedIn = namespace ?? (resource === "namespaces" ? name : undefined);
    if (delegate && !this.serves({ api: "custom", namespace: servedIn, groupResource, metric })) {
      const id = `${formatGroupResource(groupResource)}/${metric}`;
      const target = { namespace: servedIn, metric, id };
      const answer = delegate.serve({ group: CUSTOM_GROUP, version, rest, query, kind, target, cancel });
      if (answer) return answer;
    }
    if (resource === PLACEHOLDER_RESOURCE || metric === PLACEHOLDER_RESOURCE)
      return notFound("no metrics are configured yet: create a MetricMapping");

    const metricSelector = parseSelector(query.get("metricLabelSelector"), "metricLabelSelector");
    const echo = metricSelector.empty ? null : metricSelector.toObject();
    const render = (values: readonly CustomMetricValue[]) =>
      version === "v1beta1" ? customValueListV1beta1(values, echo) : customValueListV1beta2(values, echo);
    if (bySelector) {
      const selector = parseSelector(query.get("labelSelector"), "labelSelector");
      const values = await this.provider.getMetricBySelector({
        groupResource,
        namespace,
        selector,
        metric,
        metricSelector,
        cancel,
      });
      return { ...ok(this.serialized(values, version, query, render), kind), items: values.length };
    }
    const value = await this.provider.getMetricByName({
      groupResource,
      namespace,
      name,
      metric,
      metricSelector,
      cancel,
    });
    return {
      ...ok(
        this.serialized(value, version, query, () => render([value])),
        kind,
      ),
      items: 1,
    };
  }

  /**
   * An answer serialized once per answer object (the provider hands out the same object
   * while the answer is unchanged), per version and metricLabelSelector.
   */
  private serialized<T extends object>(
    answer: T,
    version: string,
    query: URLSearchParams,
    render: (answer: T) => unknown,
  ): JsonText {
    const key = `${version}|${query.get("metricLabelSelector") ?? ""}`;
    let forAnswer = this.rendered.get(answer);
    let body = forAnswer?.get(key);
    if (!body) {
      body = new JsonText(JSON.stringify(render(answer)));
      if (!forAnswer) this.rendered.set(answer, (forAnswer = new Map<string, JsonText>()));
      forAnswer.set(key, body);
    }
    return body;
  }

  private async external(
    version: string,
    rest: string[],
    query: URLSearchParams,
    cancel: Cancellation | undefined,
  ): Promise<ApiResponse> {
    if (rest.length !== 3 || rest[0] !== "namespaces") {
      return notFound(
        "the server could not find the requested resource: expected namespaces/{namespace}/{metric}",
        RouteKinds.External,
      );
    }
    const [, namespace, metric] = rest as [string, string, string];
    const delegate =
      this.opts.delegates?.external?.active === false ? undefined : this.opts.delegates?.external;
    if (delegate && !this.serves({ api: "external", namespace, metric })) {
      const answer = delegate.serve({
        group: EXTERNAL_GROUP,
        version,
        rest,
        query,
        kind: RouteKinds.External,
        target: { namespace, metric, id: metric },
        cancel,
      });
      if (answer) return answer;
    }
    if (metric === PLACEHOLDER_RESOURCE)
      return notFound("no external metrics are configured yet: create a MetricMapping", RouteKinds.External);
    const metricSelector = parseSelector(query.get("labelSelector"), "labelSelector");
    const values = await this.provider.getExternalMetric({ namespace, metric, metricSelector, cancel });
    return { ...ok(externalValueList(values), RouteKinds.External), items: values.length };
  }
}

/** `pods/requests_per_second`: a custom metric's name in discovery, and what a clash compares. */
export function customId(m: CustomMetricInfo): string {
  return `${formatGroupResource(m.groupResource)}/${m.metric}`;
}

/**
 * What a custom-metrics path asks for: `[namespaces/{ns}/]{resource}/{name|*}/{metric}`, or
 * `namespaces/{ns}/metrics/{metric}` (a metric of the Namespace object itself).
 */
function customTarget(
  rest: readonly string[],
): { namespace?: string; resource: string; name: string; metric: string; bySelector: boolean } | undefined {
  let namespace: string | undefined;
  let parts = rest;
  if (parts[0] === "namespaces" && parts.length >= 2) {
    namespace = parts[1]!;
    parts = parts.slice(2);
    if (parts.length === 2 && parts[0] === "metrics")
      return { resource: "namespaces", name: namespace, metric: parts[1]!, bySelector: false };
  }
  if (parts.length !== 3) return undefined;
  const [resource, name, metric] = parts as [string, string, string];
  return { namespace, resource, name, metric, bySelector: name === "*" };
}

/** Classifies a path without serving it (for metrics of requests refused before routing). */
export function routeKind(pathname: string): RouteKind {
  const s = pathname.split("/").filter((x) => x !== "");
  if (s[0] === "openapi") return RouteKinds.OpenApi;
  if (s[0] !== "apis") return RouteKinds.Unknown;
  if (s.length <= 3) return RouteKinds.Discovery;
  if (s[1] === EXTERNAL_GROUP) return RouteKinds.External;
  if (s[1] === HISTORY_GROUP) return RouteKinds.History;
  if (s[1] === CUSTOM_GROUP) {
    const rest = s[3] === "namespaces" ? s.slice(5) : s.slice(3);
    return rest[1] === "*" ? RouteKinds.CustomSelector : RouteKinds.CustomObject;
  }
  return RouteKinds.Unknown;
}

function ok(body: unknown, kind: RouteKind): ApiResponse {
  return { status: 200, body, kind };
}

function notFound(message: string, kind: RouteKind = RouteKinds.Unknown): ApiResponse {
  return { status: 404, body: statusBody(404, "NotFound", message), kind };
}

function parseSelector(text: string | null, param: string): LabelSelector {
  if (text === null || text === "") return LabelSelector.everything();
  try {
    return LabelSelector.parse(text);
  } catch (err) {
    if (err instanceof SelectorParseError)
      throw new MetricBadRequestError(`invalid ${param} "${text}": ${err.message}`);
    throw err;
  }
}

/** Maps an error to its Status by its code (the table in src/errors.ts); anything else is a 500. */
export function errorResponse(err: unknown, kind: RouteKind): ApiResponse {
  const answer = answerFor(err);
  if (answer)
    return { status: answer.status, body: statusBody(answer.status, answer.reason, answer.message), kind };
  // Internal details (apiserver errors, stack traces) are for the log, not for callers.
  return { status: 500, body: statusBody(500, "InternalError", "internal error"), kind, cause: err };
}

/**
 * The media type to answer with, from the Accept header's ranges in order: `"json"` for
 * plain `application/json` or a wildcard range (so the HPA's protobuf-first header gets
 * JSON), `"aggregated"` for aggregated discovery v2 where it is served (`GET /apis`),
 * `undefined` when nothing acceptable is served (406: other profiles, v2beta1, protobuf).
 */
export function negotiate(
  accept: string | undefined,
  aggregatedServed: boolean,
): "json" | "aggregated" | undefined {
  if (!accept || accept.trim() === "") return "json";
  for (const range of accept.split(",")) {
    const [type = "", ...params] = range.split(";").map((s) => s.trim().toLowerCase());
    const q = params.find((p) => p.startsWith("q="));
    if (q && Number(q.slice(2)) === 0) continue;
    const profile = params.filter((p) => /^(g|v|as)=/.test(p));
    if (profile.length > 0) {
      const v2 =
        profile.includes("g=apidiscovery.k8s.io") &&
        profile.includes("v=v2") &&
        profile.includes("as=apigroupdiscoverylist");
      if (v2 && aggregatedServed && type === "application/json") return "aggregated";
      continue;
    }
    if (type === "application/json" || type === "*/*" || type === "application/*") return "json";
  }
  return undefined;
}
