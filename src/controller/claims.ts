/**
 * Which MetricMapping serves a metric when several claim it. A claim is (namespace,
 * subject resource or "external", metric); among the mappings with the same claim the
 * oldest (by creationTimestamp, then name) is served and the others report `Conflict`.
 */
import { type GroupResource, parseGroupResource } from "../api/group-resource.js";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { MetricMappingSpec } from "../sources/registry.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import type { ActiveMapping } from "../metrics/mapping-provider.js";

/** What a mapping claims, or why it cannot claim anything (its Ready reason and message). */
export type Claim =
  | { id: string; describe: string; subject: ActiveMapping["subject"] }
  | { problem: string; reason: string; retryMs?: number };

/** Resolves a spec's claim: the subject resource must exist and be namespaced (or be `namespaces`). */
export async function resolveClaim(mapper: ResourceMapper, spec: MetricMappingSpec): Promise<Claim> {
  if (spec.subject.external) {
    // (Lower-case external names are a schema rule: see MetricMappingSpec.)
    return {
      id: `external|${spec.metric}`,
      describe: "external metrics",
      subject: { kind: "external", labels: spec.subject.external.labels ?? {} },
    };
  }
  const gr = parseGroupResource(spec.subject.resource!);
  let mapping;
  try {
    mapping = await mapper.lookup(gr);
  } catch (err) {
    return {
      reason: "DiscoveryFailed",
      problem: `could not look up ${spec.subject.resource}: ${(err as Error).message}`,
      retryMs: 10_000,
    };
  }
  if (!mapping) {
    return {
      reason: "UnknownResource",
      problem: `the cluster serves no resource "${spec.subject.resource}" (write plural.group, e.g. deployments.apps)`,
      retryMs: 30_000,
    };
  }
  const isNamespaces = gr.group === "" && gr.resource === "namespaces";
  if (!mapping.namespaced && !isNamespaces) {
    return {
      reason: "ClusterScopedSubject",
      problem: `${spec.subject.resource} are cluster-scoped; a MetricMapping serves objects of its own namespace (use an external metric, e.g. a kubernetes count, instead)`,
    };
  }
  return {
    id: `resource|${gr.resource}.${gr.group}|${spec.metric}`,
    describe: spec.subject.resource!,
    subject: resourceSubject(gr),
  };
}

/** The subjects {@link resourceSubject} keeps one copy of: one per resource the cluster serves. */
const SUBJECTS_KEPT = 1000;
const subjects = new Map<string, ActiveMapping["subject"]>();

/**
 * The subject "objects of `gr`", one frozen copy per resource for every mapping of it (each
 * running mapping holds its subject: two objects a mapping otherwise). Only resources the
 * cluster serves get here, and at most {@link SUBJECTS_KEPT} are kept.
 */
function resourceSubject(gr: GroupResource): ActiveMapping["subject"] {
  const key = `${gr.resource}.${gr.group}`;
  const known = subjects.get(key);
  if (known) return known;
  const subject = Object.freeze({ kind: "resource" as const, groupResource: Object.freeze({ ...gr }) });
  if (subjects.size < SUBJECTS_KEPT) subjects.set(key, subject);
  return subject;
}

/** Who claims what: mapping key (`namespace/name`) ↔ `namespace|claim id`. */
export class ClaimIndex {
  private readonly claims = new Map<string, string>();
  /**
   * Who claims each claim: its one key, or a set while there are rivals (nearly every claim
   * has one claimant, and a set costs about 100 bytes more).
   */
  private readonly claimants = new Map<string, string | Set<string>>();

  /**
   * Records what `key` claims (undefined: nothing) and returns the other mappings that
   * share its old or new claim — one of them may now win or lose. No change: none.
   */
  set(key: string, namespace: string, id: string | undefined): string[] {
    const next = id === undefined ? undefined : `${namespace}|${id}`;
    const previous = this.claims.get(key);
    if (previous === next) return [];
    if (previous) this.remove(previous, key);
    if (next) {
      this.claims.set(key, next);
      this.add(next, key);
    } else {
      this.claims.delete(key);
    }
    const affected: string[] = [];
    for (const claim of [previous, next])
      if (claim) for (const k of this.claimantsOf(claim)) if (k !== key) affected.push(k);
    return affected;
  }

  /** The keys of the mappings claiming `id` in `namespace`. */
  claiming(namespace: string, id: string): readonly string[] {
    return this.claimantsOf(`${namespace}|${id}`);
  }

  private claimantsOf(claim: string): string[] {
    const held = this.claimants.get(claim);
    return held === undefined ? [] : typeof held === "string" ? [held] : [...held];
  }

  private add(claim: string, key: string): void {
    const held = this.claimants.get(claim);
    if (held === undefined) this.claimants.set(claim, key);
    else if (typeof held !== "string") held.add(key);
    else if (held !== key) this.claimants.set(claim, new Set([held, key]));
  }

  private remove(claim: string, key: string): void {
    const held = this.claimants.get(claim);
    if (held === key) this.claimants.delete(claim);
    else if (held instanceof Set) {
      held.delete(key);
      if (held.size === 1) this.claimants.set(claim, held.values().next().value!);
    }
  }
}

/** The winner among rival mappings (deleted ones excluded): the oldest, then by name. */
export function oldest<T extends KubernetesObject>(rivals: readonly (T | undefined)[]): T | undefined {
  // As stored the timestamp is RFC 3339 text (typed Date by client-node): read either.
  const created = (o: T) => {
    const t = o.metadata?.creationTimestamp;
    return t ? new Date(t).getTime() : 0;
  };
  return rivals
    .filter((o): o is T => o !== undefined && !o.metadata?.deletionTimestamp)
    .sort(
      (a, b) => created(a) - created(b) || ((a.metadata?.name ?? "") < (b.metadata?.name ?? "") ? -1 : 1),
    )[0];
}
