/**
 * The metrics API's delegate for one group when Governor sits in front of several adapters
 * (ADR 0024): a request for a metric no MetricMapping serves goes to the MetricsUpstream
 * whose route claims it (routes.ts), else to the catch-all (`--forward-*`), else it is a
 * 404 naming the upstreams asked. Discovery merges every upstream's list (each read on its
 * own schedule: one that is down keeps its last list and hides nobody's) behind Governor's.
 */
import { statusBody } from "../apiserver/wire.js";
import { quote } from "../util/bounded-text.js";
import { ClientGoneError } from "../util/deadline.js";
import {
  customId,
  errorResponse,
  type ApiResponse,
  type DelegatedRequest,
  type MetricsDelegate,
} from "../apiserver/metrics-api.js";
import { formatGroupResource } from "../api/group-resource.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";
import type { CustomMetricInfo, ExternalMetricInfo } from "../metrics/provider.js";
import { type Route, type RouteChoice, type RouteTarget, choose, globMatch } from "./routes.js";
import type { ForwardedApi, Upstream } from "./upstream.js";

/** An upstream with its route. */
export interface RoutedUpstream extends Route {
  upstream: Pick<Upstream, "description" | "serve" | "serves" | "listCustomMetrics" | "listExternalMetrics">;
}

/** Who answers a metric, and why (for `governor explain`, the ShadowsUpstream condition, the log). */
export interface Answerer {
  upstream: RoutedUpstream["upstream"];
  /** `MetricsUpstream kafka` or `the catch-all`. */
  name: string;
  why: string;
}

/** Names listed in a 404 before "and N more". */
const NAMED_IN_404 = 8;
/** The longest metric name routed (a metric name's limit): the glob bound of routes.ts. */
const MAX_METRIC_CHARS = 253;
/** The most entries merged discovery lists (each upstream is capped at 20,000 on its own). */
const MAX_MERGED = 100_000;

/** See the module comment. */
export class UpstreamRouter implements MetricsDelegate {
  private routes: readonly RoutedUpstream[] = [];
  private version = 0;
  private merged?: { own: unknown; version: number; lists: readonly unknown[]; list: readonly unknown[] };

  constructor(
    private readonly api: ForwardedApi,
    private readonly opts: {
      /** The `--forward-*` upstream: what no route claims goes there. */
      catchAll?: RoutedUpstream["upstream"];
      /** A namespace's labels from the cache (for routes with a namespace selector). */
      labelsOf?: (namespace: string) => Readonly<Record<string, string>> | undefined;
    } = {},
  ) {}

  get description(): string {
    const names = this.routes.map((r) => r.name);
    if (this.opts.catchAll) names.push(this.opts.catchAll.description);
    return names.length === 1 ? names[0]! : `the upstream ${this.api} metrics adapters (${names.join(", ")})`;
  }

  /** Whether there is any upstream to ask. */
  get active(): boolean {
    return this.routes.length > 0 || this.opts.catchAll !== undefined;
  }

  /** The MetricsUpstreams' routes now (every replica sets the same, from its cache). */
  set(routes: readonly RoutedUpstream[]): void {
    this.routes = [...routes].sort((a, b) => b.priority - a.priority || (a.name < b.name ? -1 : 1));
    this.version++;
    this.merged = undefined;
  }

  /** Who answers `target` when no MetricMapping does, and why; undefined: nobody. */
  answerer(target: RouteTarget): Answerer | undefined {
    const chosen: RouteChoice<RoutedUpstream> | undefined = choose(
      this.routes,
      target,
      this.opts.labelsOf ?? (() => undefined),
    );
    if (chosen) return { upstream: chosen.route.upstream, name: chosen.route.name, why: chosen.why };
    const all = this.opts.catchAll;
    if (all)
      return {
        upstream: all,
        name: all.description,
        why: `${this.routes.length ? "no MetricsUpstream's route claims it; " : ""}the catch-all, --forward-${this.api}`,
      };
    return undefined;
  }

  serve(req: DelegatedRequest): Promise<ApiResponse> | undefined {
    if (!this.active) return undefined;
    if (req.target.metric.length > MAX_METRIC_CHARS)
      return Promise.resolve({
        status: 404,
        body: statusBody(404, "NotFound", `a metric name is at most ${MAX_METRIC_CHARS} characters`),
        kind: req.kind,
      });
    const who = this.answerer(req.target);
    if (who) {
      // Said on failures too (a 503 from an adapter that is down): that is when explain needs it.
      const routedTo = `${who.name} (${who.why})`;
      return who.upstream.serve(req).then(
        (a) => ({ ...a, routedTo }),
        (err: unknown) => {
          if (err instanceof ClientGoneError) throw err; // nobody to answer
          return { ...errorResponse(err, req.kind), routedTo };
        },
      );
    }
    const names = this.routes.map((r) => r.name);
    const more = names.length > NAMED_IN_404 ? ` and ${names.length - NAMED_IN_404} more` : "";
    // A namespace name is at most 63 characters; the path's may be anything.
    const where = req.target.namespace ? ` in namespace ${req.target.namespace.slice(0, 63)}` : "";
    return Promise.resolve({
      status: 404,
      body: statusBody(
        404,
        "NotFound",
        `no MetricMapping${where} serves ${this.api} metric ${quote(req.target.id, 300)}, and no upstream's route claims it (asked: ${names.slice(0, NAMED_IN_404).join(", ")}${more})`,
      ),
      kind: req.kind,
    });
  }

  mergeCustom(own: readonly CustomMetricInfo[]): readonly CustomMetricInfo[] {
    return this.merge(
      own,
      (u) => u.listCustomMetrics(),
      customId,
      (m) => m.metric,
    );
  }

  mergeExternal(own: readonly ExternalMetricInfo[]): readonly ExternalMetricInfo[] {
    return this.merge(
      own,
      (u) => u.listExternalMetrics(),
      (m) => m.metric,
      (m) => m.metric,
    );
  }

  /**
   * Governor's metrics, then each upstream's that its route could send to it (by priority),
   * then the catch-all's; each id once. The same array while nothing changed.
   */
  private merge<M>(
    own: readonly M[],
    listOf: (u: RoutedUpstream["upstream"]) => readonly unknown[],
    idOf: (m: M) => string,
    nameOf: (m: M) => string,
  ): readonly M[] {
    const sources: { route?: RoutedUpstream; u: RoutedUpstream["upstream"] }[] = this.routes.map((r) => ({
      route: r,
      u: r.upstream,
    }));
    if (this.opts.catchAll) sources.push({ u: this.opts.catchAll });
    if (sources.length === 0) return own;
    const lists = sources.map((s) => listOf(s.u));
    const hit = this.merged;
    if (hit?.own === own && hit.version === this.version && hit.lists.every((l, i) => l === lists[i]))
      return hit.list as readonly M[];
    const seen = new Set(own.map(idOf));
    const list = [...own];
    sources.forEach((s, i) => {
      const globs = s.route?.metrics;
      for (const m of lists[i] as readonly M[]) {
        if (list.length >= MAX_MERGED) break;
        const id = idOf(m);
        if (seen.has(id) || (globs && !globs.some((g) => globMatch(g, nameOf(m))))) continue;
        seen.add(id);
        list.push(m);
      }
    });
    this.merged = { own, version: this.version, lists, list };
    return list;
  }
}

/**
 * What a served mapping's `ShadowsUpstream` condition says when the upstream that would
 * answer its metric in its namespace lists that metric too (Governor's answer wins there),
 * or undefined.
 */
export function shadowedBy(
  m: Pick<ActiveMapping, "namespace" | "metric" | "subject">,
  routers: Partial<Record<ForwardedApi, Pick<UpstreamRouter, "answerer">>>,
): string | undefined {
  const [api, id] =
    m.subject.kind === "external"
      ? (["external", m.metric] as const)
      : (["custom", `${formatGroupResource(m.subject.groupResource)}/${m.metric}`] as const);
  const who = routers[api]?.answerer({ namespace: m.namespace, metric: m.metric, id });
  if (!who?.upstream.serves(api, id)) return undefined;
  return `${who.name} also serves ${api} metric "${id}"; Governor answers it in namespace ${m.namespace}, the upstream everywhere else`;
}
