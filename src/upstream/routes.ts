/**
 * Which upstream adapter answers a metric Governor does not serve itself (ADR 0024): each
 * MetricsUpstream's route — the metrics it claims (names or globs; unset, the ones it lists
 * in its discovery) and the namespaces it serves — checked against the request; the
 * highest priority wins, then an upstream that lists the metric, then the name. Pure: the
 * caller says what each upstream lists and what labels a namespace has.
 */
import type { LabelSelector } from "../selectors/label-selector.js";

/** What a request asks for, as routes read it. */
export interface RouteTarget {
  /** The request's namespace; undefined for a cluster-scoped custom metric (nodes…). */
  namespace?: string;
  /** The metric's name. */
  metric: string;
  /** How the upstream's discovery names it: `pods/rps` for a custom metric, the name for an external one. */
  id: string;
}

/** One upstream's route. */
export interface Route {
  /** `MetricsUpstream kafka`. */
  name: string;
  priority: number;
  /** Names or globs; undefined: what the upstream lists. */
  metrics?: readonly string[];
  namespaces?: { names: ReadonlySet<string> } | { selector: LabelSelector };
  /** Whether the upstream listed this metric (its discovery id) when last read. */
  lists(id: string): boolean;
}

/** Why a route was chosen: for `governor explain`, a 404's message and the log. */
export interface RouteChoice<R extends Route> {
  route: R;
  why: string;
}

/**
 * Whether `pattern` matches all of `text`: `*` any run of characters (none too), `?` one.
 * Linear in practice and at worst |pattern|·|text| steps (both at most 253 characters):
 * no regular expression, so no backtracking a pattern could make exponential.
 */
export function globMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let resume = 0;
  while (t < text.length) {
    const c = pattern[p];
    if (c === "?" || (c !== undefined && c !== "*" && c === text[t])) {
      p++;
      t++;
    } else if (c === "*") {
      star = p++;
      resume = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++resume;
    } else return false;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

/**
 * Why `route` claims `target` (`"metrics: kafka_*; namespaces: team-a"`), or undefined when
 * it does not. `labelsOf` gives a namespace's labels (undefined: not known, so a selector
 * does not match).
 */
export function claims(
  route: Route,
  target: RouteTarget,
  labelsOf: (namespace: string) => Readonly<Record<string, string>> | undefined,
): string | undefined {
  const reasons: string[] = [];
  if (route.metrics) {
    const glob = route.metrics.find((g) => globMatch(g, target.metric));
    if (glob === undefined) return undefined;
    reasons.push(`metrics: ${glob}`);
  } else {
    if (!route.lists(target.id)) return undefined;
    reasons.push("it lists the metric");
  }
  const ns = route.namespaces;
  if (ns) {
    if (target.namespace === undefined) return undefined;
    if ("names" in ns) {
      if (!ns.names.has(target.namespace)) return undefined;
      reasons.push(`namespaces: ${target.namespace}`);
    } else {
      const labels = labelsOf(target.namespace);
      if (!labels || !ns.selector.matches(labels)) return undefined;
      reasons.push(`namespace ${target.namespace} matches its selector`);
    }
  }
  return reasons.join("; ");
}

/**
 * The route that answers `target` among `routes`, with why; undefined when none claims it.
 * Highest priority first; at equal priority one whose upstream lists the metric; then the
 * name (so every replica chooses the same).
 */
export function choose<R extends Route>(
  routes: readonly R[],
  target: RouteTarget,
  labelsOf: (namespace: string) => Readonly<Record<string, string>> | undefined,
): RouteChoice<R> | undefined {
  let best: { route: R; why: string; lists: boolean } | undefined;
  for (const route of routes) {
    const why = claims(route, target, labelsOf);
    if (why === undefined) continue;
    const lists = route.lists(target.id);
    if (
      !best ||
      route.priority > best.route.priority ||
      (route.priority === best.route.priority &&
        (lists !== best.lists ? lists : route.name < best.route.name))
    )
      best = { route, why, lists };
  }
  if (!best) return undefined;
  return {
    route: best.route,
    why: `${best.why}${best.route.priority !== 0 ? `; priority ${best.route.priority}` : ""}`,
  };
}
