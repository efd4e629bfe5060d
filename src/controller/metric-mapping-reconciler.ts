/**
 * The MetricMapping reconciler. For each mapping: validate what the CRD schema cannot
 * (the subject resource exists and is namespaced), pick the winner among mappings
 * claiming the same (namespace, subject, metric) — the oldest — and
 * make the {@link MappingProvider} serve it with a running sampler; write `status`
 * (conditions Ready and SourceHealthy, value, objects, lastSampleTime) and Events on
 * transitions. Every replica serves; only the leader writes status and Events.
 */
import { TokenBucket } from "../util/token-bucket.js";
import { createHash } from "node:crypto";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Condition } from "../api/common.js";
import { API_VERSION, durationMs } from "../api/common.js";
import { MetricMappingSpec, type MetricMappingStatus } from "../api/metric-mapping.js";
import type { KubeClient } from "../k8s/client.js";
import { KubeApiError } from "../k8s/client.js";
import type { PodIndex } from "../k8s/pod-index.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import type { ActiveMapping, MappingProvider } from "../metrics/mapping-provider.js";
import { MetricUnavailableError, parseGroupResource, type GroupResource } from "../metrics/provider.js";
import { formatQuantity, parseQuantity } from "../metrics/quantity.js";
import { Sampler, type SamplerState } from "../metrics/sampler.js";
import { buildSource, sourceKind } from "../sources/index.js";
import type { DestinationPolicy } from "../sources/destination-policy.js";
import type { SecretReader } from "../sources/secrets.js";
import { SourceConfigError } from "../sources/source.js";
import type { LabelSelector } from "../selectors/label-selector.js";
import { findCondition, sameConditions, setCondition, type ConditionUpdate } from "./conditions.js";
import { type Controller, objectKey, splitKey, startController } from "./controller.js";
import type { EventRecorder } from "./events.js";
import type { ReconcileResult } from "./work-queue.js";

/** A MetricMapping as stored. */
export interface MetricMappingObject extends KubernetesObject {
  spec?: unknown;
  status?: MetricMappingStatus;
}

/** Options of {@link MetricMappingReconciler}. */
export interface MetricMappingReconcilerOptions {
  client: KubeClient;
  provider: MappingProvider;
  mapper: ResourceMapper;
  pods: PodIndex;
  events: EventRecorder;
  logger: Logger;
  /** Reads Secrets that sources reference. */
  secrets: SecretReader;
  /** Where HTTP sources may connect. @default DEFAULT_DESTINATION_POLICY */
  sourcePolicy?: DestinationPolicy;
  /** The most an HTTP source may read from one answer, in bytes. @default MAX_RESPONSE_BYTES */
  sourceMaxResponseBytes?: number;
  /** Whether `kubernetes` counts may read beyond a mapping's namespace. @default false */
  clusterWideCounts?: boolean;
  /** Whether this replica writes status (the leader). */
  isLeader: () => boolean;
  /** Sampler outcomes, for /metrics. */
  observeSample?: (outcome: "ok" | "error", seconds: number) => void;
  /** Minimum time between status writes that only change the value. @default 10000 */
  statusValueIntervalMs?: number;
  /**
   * Status writes that only change the value, per second across all mappings (burst
   * twice that). Condition changes are never held back. With 10,000 mappings whose
   * values move every sample, this keeps the apiserver at 20 writes/s instead of ~700.
   * @default 20
   */
  statusValueWritesPerSecond?: number;
  /**
   * Called when a mapping's spec may have changed, or whether it can serve at all (see
   * {@link MetricMappingReconciler.problem}): HPAs built from mappings follow.
   */
  onMappingChange?: (namespace: string) => void;
  /** Called after every attempt of a mapping's sampler (ScalableWorkloads that scale to zero read it). */
  onSampled?: (namespace: string, name: string) => void;
}

interface Running {
  hash: string;
  active: ActiveMapping;
}

const PATH = `/apis/${API_VERSION}/metricmappings`;

/**
 * `Ready` reasons that mean a mapping can never serve as written, until someone edits it
 * (a source that fails or a conflict are passing states: the HPA holds meanwhile).
 */
const CONFIGURATION_PROBLEMS = new Set([
  "InvalidSpec",
  "InvalidSource",
  "UnknownResource",
  "ClusterScopedSubject",
]);

/** Samplers one MetricMapping with `{{selector}}` runs at once (one per distinct selector). */
export const MAX_SELECTOR_SAMPLERS = 32;

/** See the module comment. */
export class MetricMappingReconciler {
  private controller?: Controller<MetricMappingObject>;
  private readonly running = new Map<string, Running>();
  private readonly lastStatusWrite = new Map<string, number>();
  private readonly valueWrites: TokenBucket;
  private readonly log: Logger;

  constructor(private readonly opts: MetricMappingReconcilerOptions) {
    this.log = opts.logger.child({ controller: "metricmapping" });
    const perSecond = opts.statusValueWritesPerSecond ?? 20;
    this.valueWrites = new TokenBucket(perSecond, 2 * perSecond);
  }

  /** Starts watching MetricMappings. */
  start(): Controller<MetricMappingObject> {
    this.controller = startController<MetricMappingObject>({
      // Reconciles mostly wait on status writes: more in flight loads 10,000 mappings
      // (a restart, a failover) several times faster. The apiserver's flow control bounds it.
      concurrency: 16,
      name: "metricmapping",
      client: this.opts.client,
      path: PATH,
      reconcile: (key) => this.reconcile(key),
      logger: this.opts.logger,
    });
    return this.controller;
  }

  /** Stops watching and every sampler. */
  async stop(): Promise<void> {
    await this.controller?.stop();
    for (const [key, r] of this.running) {
      this.opts.provider.deactivate(key);
      await r.active.sampler.stop();
    }
    this.running.clear();
  }

  /** Re-runs every mapping (e.g. after becoming leader, to write status). */
  resyncAll(): void {
    for (const m of this.controller?.informer.list() ?? []) this.controller?.queue.add(objectKey(m));
  }

  /** A MetricMapping from the cache. */
  get(namespace: string, name: string): MetricMappingObject | undefined {
    return this.controller?.informer.get(name, namespace);
  }

  /** Why a mapping can never serve as written (see CONFIGURATION_PROBLEMS), if it cannot. */
  problem(namespace: string, name: string): { reason: string; message: string } | undefined {
    return this.problems.get(`${namespace}/${name}`);
  }

  private readonly problems = new Map<string, { reason: string; message: string }>();
  /** `namespace/name` → the Ready and SourceHealthy states last logged. */
  private readonly logged = new Map<string, { ready?: string; health?: string }>();

  /** Records whether `key` has a configuration problem; a change is news for HPAs. */
  private noteProblem(
    key: string,
    namespace: string,
    ready: Omit<ConditionUpdate, "type"> | undefined,
  ): void {
    const next =
      ready && CONFIGURATION_PROBLEMS.has(ready.reason)
        ? { reason: ready.reason, message: ready.message }
        : undefined;
    const previous = this.problems.get(key);
    if (previous?.reason === next?.reason && previous?.message === next?.message) return;
    if (next) this.problems.set(key, next);
    else this.problems.delete(key);
    this.opts.onMappingChange?.(namespace);
  }

  /**
   * Logs a mapping's Ready and SourceHealthy transitions, once each (every replica logs
   * what it sees; only the leader writes status): warn for what needs a look, info when
   * it serves again.
   */
  private logTransitions(key: string, conditions: readonly Condition[]): void {
    const seen = this.logged.get(key) ?? {};
    const ready = findCondition(conditions, "Ready");
    const health = findCondition(conditions, "SourceHealthy");
    const readyNow = ready && `${ready.status}/${ready.reason}`;
    if (ready && readyNow !== seen.ready) {
      const fields = { mapping: key, reason: ready.reason };
      if (ready.status === "True" && ready.reason === "Serving") this.log.info(fields, ready.message);
      else if (ready.status === "Unknown") this.log.debug(fields, ready.message);
      else this.log.warn(fields, ready.message);
    }
    const healthNow = health && `${health.status}/${health.reason}`;
    if (health && healthNow !== seen.health) {
      const fields = { mapping: key, reason: health.reason };
      if (health.status === "False") this.log.warn(fields, `source failing: ${health.message}`);
      else if (health.status === "True" && seen.health?.startsWith("False"))
        this.log.info(fields, "source recovered: the last sample succeeded");
    }
    this.logged.set(key, { ready: readyNow, health: healthNow });
  }

  private readonly seenGenerations = new Map<string, number | undefined>();
  /** `namespace/name` → `namespace|claim` of each mapping that claims a metric. */
  private readonly claims = new Map<string, string>();
  /** `namespace|claim` → the mappings claiming it (the oldest is served). */
  private readonly claimants = new Map<string, Set<string>>();

  private async reconcile(key: string): Promise<ReconcileResult | void> {
    const { namespace, name } = splitKey(key);
    const obj = this.controller!.informer.get(name, namespace);
    if (this.seenGenerations.get(key) !== obj?.metadata?.generation || !obj) {
      this.seenGenerations.set(key, obj?.metadata?.generation);
      if (!obj) this.seenGenerations.delete(key);
      this.opts.onMappingChange?.(namespace);
    }
    if (!obj || obj.metadata?.deletionTimestamp) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      this.noteProblem(key, namespace, undefined);
      this.logged.delete(key);
      this.lastStatusWrite.delete(key);
      return;
    }
    const parsed = MetricMappingSpec.safeParse(obj.spec);
    if (!parsed.success) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      const message = parsed.error.issues
        .map((i) => `${i.path.join(".") || "spec"}: ${i.message}`)
        .join("; ");
      return this.writeStatus(obj, { ready: { status: "False", reason: "InvalidSpec", message } });
    }
    const spec = parsed.data;
    const claim = await this.claimOf(namespace, spec);
    if ("problem" in claim) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      return this.writeStatus(
        obj,
        { ready: { status: "False", reason: claim.reason, message: claim.problem }, spec },
        claim.retryMs,
      );
    }
    this.setClaim(key, namespace, claim.id);
    const winner = this.winnerFor(namespace, claim.id);
    if (winner && objectKey(winner) !== key) {
      await this.retire(key);
      return this.writeStatus(obj, {
        spec,
        ready: {
          status: "False",
          reason: "Conflict",
          message: `metric "${spec.metric}" for ${claim.describe} is already served by MetricMapping ${winner.metadata?.name} (the older mapping wins)`,
        },
      });
    }

    const hash = createHash("sha256").update(JSON.stringify(spec)).digest("hex");
    let running = this.running.get(key);
    if (!running || running.hash !== hash) {
      let active: ActiveMapping;
      try {
        active = this.build(key, namespace, spec, claim.subject);
      } catch (err) {
        if (!(err instanceof SourceConfigError)) throw err;
        await this.retire(key);
        return this.writeStatus(obj, {
          spec,
          ready: { status: "False", reason: "InvalidSource", message: err.message },
        });
      }
      const previous = running;
      running = { hash, active };
      this.running.set(key, running);
      this.opts.provider.activate(active);
      active.sampler.start();
      if (previous) await previous.active.sampler.stop();
      this.log.debug({ mapping: key, metric: spec.metric }, "sampler started");
    }
    return this.writeStatus(obj, { spec, active: running.active });
  }

  private build(
    key: string,
    namespace: string,
    spec: MetricMappingSpec,
    subject: ActiveMapping["subject"],
  ): ActiveMapping {
    const ctx = {
      namespace,
      client: this.opts.client,
      mapper: this.opts.mapper,
      secrets: this.opts.secrets,
      policy: this.opts.sourcePolicy,
      maxResponseBytes: this.opts.sourceMaxResponseBytes,
      clusterWideCounts: this.opts.clusterWideCounts,
    };
    const source = buildSource(spec, ctx);
    const isPods =
      subject.kind === "resource" &&
      subject.groupResource.group === "" &&
      subject.groupResource.resource === "pods";
    const intervalMs = durationMs(spec.interval);
    const samplerFor = (
      src: typeof source,
      selector?: LabelSelector,
      onSample?: (state: SamplerState) => void,
    ) =>
      new Sampler(src, {
        intervalMs,
        request: () => ({
          namespace,
          ...(selector ? { selector } : {}),
          ...(src.needsObjects && isPods
            ? {
                objects: this.opts.pods
                  .list(namespace, selector && ((labels) => selector.matches(labels)))
                  .filter((p) => !p.terminating)
                  .map((p) => ({ name: p.name, ip: p.ip, labels: p.labels })),
              }
            : {}),
        }),
        onSample,
        observe: this.opts.observeSample,
      });
    // Reconcile after a sample only when it changes what the status shows (value, health):
    // 10,000 steady mappings would otherwise reconcile ~700 times a second for nothing.
    // Staleness is time-driven and has its own requeue.
    let shown: string | undefined;
    const sampler = samplerFor(source, undefined, (state) => {
      this.opts.onSampled?.(namespace, splitKey(key).name);
      const now = statusFingerprint(state);
      if (now === shown) return;
      shown = now;
      this.controller?.queue.add(key);
    });
    const fallback = spec.fallback ? parseQuantity(spec.fallback.value) : undefined;
    const active: ActiveMapping = {
      key,
      namespace,
      metric: spec.metric,
      subject,
      sampler,
      staleAfterMs: durationMs(spec.staleAfter),
      ...(fallback !== undefined ? { fallback: { value: fallback, text: spec.fallback!.value } } : {}),
      // A rate's window: as declared, else (scrape rates) the time between two samples.
      ...(spec.window
        ? { windowSeconds: Math.round(durationMs(spec.window) / 1000) }
        : spec.source.scrape?.rate
          ? { windowSeconds: Math.round(intervalMs / 1000) }
          : {}),
    };
    if (source.perSelector) {
      // One sampler per selector the HPAs ask with; one left unused for 10 intervals stops.
      // At most MAX_SELECTOR_SAMPLERS at once: each queries the source every interval, and
      // the selectors come from whoever can call the metrics API.
      const bySelector = new Map<string, { sampler: Sampler; usedAt: number }>();
      active.forSelector = (selector) => {
        const k = selector.toString();
        let entry = bySelector.get(k);
        if (!entry && bySelector.size >= MAX_SELECTOR_SAMPLERS)
          throw new MetricUnavailableError(
            `MetricMapping ${key} already samples ${MAX_SELECTOR_SAMPLERS} different label selectors, its limit; a selector unused for 10 intervals is released`,
          );
        if (!entry) {
          entry = { sampler: samplerFor(buildSource(spec, ctx), selector), usedAt: 0 };
          bySelector.set(k, entry);
          entry.sampler.start();
        }
        entry.usedAt = Date.now();
        return entry.sampler;
      };
      const sweep = setInterval(() => {
        for (const [k, e] of bySelector) {
          if (Date.now() - e.usedAt > 10 * intervalMs) {
            bySelector.delete(k);
            void e.sampler.stop();
          }
        }
      }, intervalMs * 10);
      sweep.unref();
      sampler.onStop(async () => {
        clearInterval(sweep);
        await Promise.all([...bySelector.values()].map((e) => e.sampler.stop()));
        bySelector.clear();
      });
    }
    return active;
  }

  private async retire(key: string): Promise<void> {
    const r = this.running.get(key);
    if (!r) return;
    this.running.delete(key);
    this.opts.provider.deactivate(key);
    await r.active.sampler.stop();
    this.log.info({ mapping: key }, "stopped serving the metric");
  }

  /** What a mapping claims, or why it cannot claim anything. */
  private async claimOf(
    namespace: string,
    spec: MetricMappingSpec,
  ): Promise<
    | { id: string; describe: string; subject: ActiveMapping["subject"] }
    | { problem: string; reason: string; retryMs?: number }
  > {
    if (spec.subject.external) {
      // (Lower-case external names are a schema rule: see MetricMappingSpec.)
      return {
        id: `external|${spec.metric}`,
        describe: "external metrics",
        subject: { kind: "external", labels: spec.subject.external.labels ?? {} },
      };
    }
    const gr: GroupResource = parseGroupResource(spec.subject.resource!);
    let mapping;
    try {
      mapping = await this.opts.mapper.lookup(gr);
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
      subject: { kind: "resource", groupResource: gr },
    };
  }

  /**
   * Records what `key` claims (undefined: nothing). When that changes, the mappings that
   * share the old or the new claim are reconciled again: one of them may now win or lose.
   * Reconciles that change nothing enqueue nobody.
   */
  private setClaim(key: string, namespace: string, id: string | undefined): void {
    const next = id === undefined ? undefined : `${namespace}|${id}`;
    const previous = this.claims.get(key);
    if (previous === next) return;
    if (previous) {
      const set = this.claimants.get(previous);
      set?.delete(key);
      if (set?.size === 0) this.claimants.delete(previous);
    }
    if (next) {
      this.claims.set(key, next);
      let set = this.claimants.get(next);
      if (!set) this.claimants.set(next, (set = new Set()));
      set.add(key);
    } else {
      this.claims.delete(key);
    }
    for (const claim of [previous, next]) {
      for (const k of (claim && this.claimants.get(claim)) || [])
        if (k !== key) this.controller?.queue.add(k);
    }
  }

  /** The oldest mapping in `namespace` that claims `id`. */
  private winnerFor(namespace: string, id: string): MetricMappingObject | undefined {
    const rivals: MetricMappingObject[] = [];
    for (const key of this.claimants.get(`${namespace}|${id}`) ?? []) {
      const o = this.controller!.informer.get(splitKey(key).name, namespace);
      if (o && !o.metadata?.deletionTimestamp) rivals.push(o);
    }
    rivals.sort((a, b) => {
      const ta = String(a.metadata?.creationTimestamp ?? "");
      const tb = String(b.metadata?.creationTimestamp ?? "");
      return ta < tb ? -1 : ta > tb ? 1 : (a.metadata?.name ?? "") < (b.metadata?.name ?? "") ? -1 : 1;
    });
    return rivals[0];
  }

  /** Computes and (as leader, when it changed) writes status; returns when to look again. */
  private async writeStatus(
    obj: MetricMappingObject,
    what: { spec?: MetricMappingSpec; active?: ActiveMapping; ready?: Omit<ConditionUpdate, "type"> },
    retryMs?: number,
  ): Promise<ReconcileResult> {
    const key = objectKey(obj);
    const generation = obj.metadata?.generation;
    const old = obj.status ?? {};
    let conditions: Condition[] = old.conditions ?? [];
    const status: MetricMappingStatus = { observedGeneration: generation };
    if (what.spec) {
      status.subject = what.spec.subject.external ? "external" : what.spec.subject.resource;
      status.source = sourceKind(what.spec.source) as MetricMappingStatus["source"];
    }
    let requeue = retryMs;
    if (what.active) {
      const state = what.active.sampler.state;
      const health = sourceHealth(state);
      conditions = setCondition(conditions, { type: "SourceHealthy", ...health }, generation);
      conditions = setCondition(
        conditions,
        { type: "Ready", ...readiness(what.active, state, Date.now()) },
        generation,
      );
      if (state.last) {
        const v = state.last.value;
        if (v.kind === "scalar") {
          status.value = formatQuantity(v.value);
        } else {
          const values = [...v.values.values()];
          status.objects = values.length;
          status.value = values.length
            ? `avg ${formatQuantity(values.reduce((a, b) => a + b, 0) / values.length)}`
            : "no objects";
        }
        status.lastSampleTime = state.last.at.toISOString().replace(/\.\d+Z$/, "Z");
      }
      // Staleness changes with time alone: look again when it would flip (once; a stale
      // value stays stale until a new sample, which brings the mapping back by itself).
      const untilStale = state.last ? what.active.staleAfterMs - (Date.now() - state.last.at.getTime()) : -1;
      if (untilStale >= 0) requeue = Math.max(1000, untilStale + 100);
    } else if (what.ready) {
      conditions = setCondition(conditions, { type: "Ready", ...what.ready }, generation);
      conditions = conditions.filter((c) => c.type !== "SourceHealthy");
    }
    status.conditions = conditions;
    this.noteProblem(key, obj.metadata?.namespace ?? "", what.active ? undefined : what.ready);
    this.logTransitions(key, conditions);
    if (!this.opts.isLeader()) return requeue !== undefined ? { requeueAfterMs: requeue } : {};

    // A transition (status or reason of a condition, or a new generation) is written at
    // once; a changed message or value only under the value cadence and write budget, so a
    // source outage over many mappings costs one write each, not one per failed sample.
    const conditionsChanged =
      !sameConditions(old.conditions, conditions, { ignoreMessages: true }) ||
      old.observedGeneration !== generation;
    const valueChanged =
      old.value !== status.value ||
      old.objects !== status.objects ||
      old.subject !== status.subject ||
      old.source !== status.source ||
      !sameConditions(old.conditions, conditions);
    if (!conditionsChanged && !valueChanged) return requeue !== undefined ? { requeueAfterMs: requeue } : {};
    const interval = this.opts.statusValueIntervalMs ?? 10_000;
    const since = Date.now() - (this.lastStatusWrite.get(key) ?? 0);
    if (!conditionsChanged && since < interval) return { requeueAfterMs: interval - since };
    // Out of budget: skip, not requeue at once (10,000 requeues would be their own storm);
    // the next changed sample, or the staleness check below, brings this mapping back.
    if (!conditionsChanged && !this.valueWrites.take())
      return requeue !== undefined ? { requeueAfterMs: requeue } : {};

    this.announce(obj, old.conditions, conditions);
    try {
      await this.opts.client.mergePatch(
        `/apis/${API_VERSION}/namespaces/${obj.metadata?.namespace}/metricmappings/${obj.metadata?.name}/status`,
        {
          status: {
            ...status,
            value: status.value ?? null,
            objects: status.objects ?? null,
            lastSampleTime: status.lastSampleTime ?? null,
          },
        },
      );
      this.lastStatusWrite.set(key, Date.now());
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) return {};
      throw err;
    }
    return requeue !== undefined ? { requeueAfterMs: requeue } : {};
  }

  private announce(
    obj: MetricMappingObject,
    before: readonly Condition[] | undefined,
    after: readonly Condition[],
  ): void {
    const subject = {
      apiVersion: API_VERSION,
      kind: "MetricMapping",
      namespace: obj.metadata?.namespace ?? "",
      name: obj.metadata?.name ?? "",
      uid: obj.metadata?.uid,
    };
    for (const type of ["Ready", "SourceHealthy"]) {
      const was = findCondition(before, type);
      const now = findCondition(after, type);
      if (!now || (was?.status === now.status && was?.reason === now.reason)) continue;
      if (now.status === "False") this.opts.events.record(subject, "Warning", now.reason, now.message);
      else if (now.status === "True" && was)
        this.opts.events.record(subject, "Normal", now.reason, now.message);
    }
  }
}

/** What of a sampler's state the status shows (see writeStatus): equal text, equal status. */
function statusFingerprint(state: SamplerState): string {
  const v = state.last?.value;
  let value = "";
  if (v?.kind === "scalar") value = String(v.value);
  else if (v) {
    let sum = 0;
    for (const x of v.values.values()) sum += x;
    value = `${v.values.size}:${sum}`;
  }
  return `${state.attemptedAt ? 1 : 0}|${state.error ?? ""}|${value}`;
}

function sourceHealth(state: SamplerState): Omit<ConditionUpdate, "type"> {
  if (!state.attemptedAt)
    return { status: "Unknown", reason: "Sampling", message: "waiting for the first sample" };
  if (state.error)
    return {
      status: "False",
      reason: "SourceError",
      message: `the last sample failed: ${state.error}`,
    };
  return { status: "True", reason: "Sampled", message: "the last sample succeeded" };
}

function readiness(m: ActiveMapping, state: SamplerState, now: number): Omit<ConditionUpdate, "type"> {
  const what = m.subject.kind === "external" ? `external metric "${m.metric}"` : `metric "${m.metric}"`;
  const age = state.last ? now - state.last.at.getTime() : Infinity;
  if (state.last && age <= m.staleAfterMs)
    return { status: "True", reason: "Serving", message: `serving ${what}` };
  if (m.fallback) {
    return {
      status: "True",
      reason: "ServingFallback",
      message: `serving the fallback value ${m.fallback.text} for ${what}: ${state.last ? "the last value is stale" : "no value sampled yet"}`,
    };
  }
  if (!state.last) {
    return state.attemptedAt
      ? {
          status: "False",
          reason: "NoValue",
          message: `no value sampled yet for ${what}; requests get 503 until one is`,
        }
      : { status: "Unknown", reason: "Sampling", message: `waiting for the first sample of ${what}` };
  }
  return {
    status: "False",
    reason: "Stale",
    message: `the last value of ${what} (status.lastSampleTime) is older than staleAfter (${Math.round(m.staleAfterMs / 1000)}s) and no fallback is set: requests get 503 and the HPA holds`,
  };
}
