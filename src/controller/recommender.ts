/**
 * The recommendation of every ScalableWorkload with `spec.autoscaling` (ADR 0021): at the
 * HPA controller's sync period, what its algorithm (src/autoscaling/) chooses from the
 * values Governor serves — read from the provider as the HPA reads them through the
 * aggregator, with the pods of the workload's selector and the replicas of its scale
 * target — into `status.recommendation`, an Event `Recommended` on each change, and
 * {@link Recommender.current} for `/metrics`. In mode Shadow that is all that happens:
 * nothing acts on it; in mode Scale the HPA Governor wrote decides the same way.
 *
 * It remembers what the controller remembers of an HPA (recommendations of the
 * stabilization windows, changes of the replicas for behavior's policies) per
 * ScalableWorkload, on the leader, from when it started leading, as the controller does
 * from its own start. The changes of the replicas are the ones it observes (by whoever
 * made them), counted from the moment its informer sees them.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { API_VERSION } from "../api/common.js";
import { parseGroupResource } from "../api/group-resource.js";
import { ScalableWorkloadSpec, type ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { type HpaView, type Reading, behaviorOf, decide } from "../autoscaling/decide.js";
import { type Recommendation, recommendationOf, sameRecommendation } from "../autoscaling/recommend.js";
import type { PodFacts } from "../autoscaling/proposals.js";
import {
  type Behavior,
  type ControllerConfig,
  type HpaMemory,
  newMemory,
  recordScale,
} from "../autoscaling/sync.js";
import { KubeApiError, type KubeApi } from "../k8s/client.js";
import type { InformerCache, SharedInformer } from "../k8s/informer-cache.js";
import type { PodIndex } from "../k8s/pod-index.js";
import { buildHpa } from "../manifests/workload.js";
import type { MetricsProvider } from "../metrics/provider.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { boundedText } from "../util/bounded-text.js";
import { type Cancellation, DeadlineExceededError } from "../util/deadline.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";
import type { Runnable } from "../util/runnable.js";
import type { EventRecorder } from "./events.js";
import { type Hpa, type MappingView, planHpa } from "./hpa.js";
import { WORKLOAD_PATHS, type Workload } from "./workload-target.js";

/** Options of {@link Recommender}. */
export interface RecommenderOptions {
  client: KubeApi;
  cache: InformerCache;
  events: EventRecorder;
  logger: Logger;
  getMapping: (namespace: string, name: string) => MappingView;
  /** What the metrics API serves: the values the HPA reads. */
  provider: MetricsProvider;
  pods: PodIndex;
  /** The HPA controller's `--horizontal-pod-autoscaler-sync-period`. @default 15 s */
  periodMs?: number;
  /** The HPA controller's tolerance and stabilization flags. @default DEFAULT_CONTROLLER */
  controller?: ControllerConfig;
  clock?: Clock;
}

/** A ScalableWorkload as stored. */
interface SwObject extends KubernetesObject {
  spec?: unknown;
  status?: ScalableWorkloadStatus;
}

/** A pod as a pass lists it: what the algorithm reads of it, and its labels to select it by. */
type ListedPod = PodFacts & { labels: Record<string, string> };

/** What is remembered of one ScalableWorkload between syncs. */
interface Remembered {
  uid: string;
  memory: HpaMemory;
  /** Its scale target (`Kind/namespace/name`: this ScalableWorkload, or in Shadow its workload) and its replicas when last seen. */
  target?: string;
  replicas?: number;
  behavior?: Behavior;
  recommendation?: Recommendation;
}

/**
 * How long a read may wait (for a first sample, a discovery): a mapping whose source hangs
 * holds the pass, which reads one ScalableWorkload after another, for no longer.
 */
const READ_WAIT_MS = 1_000;
/** How long a pass runs before it lets the event loop take a turn (as the work queue's workers do). */
const TURN_MS = 10;
/** The longest message stored. */
const MESSAGE_CHARS = 512;

/** See the module comment. */
export class Recommender implements Runnable {
  readonly name = "recommendations";
  /** It writes status and Events; and the controller's memory is one per cluster. */
  readonly needsLeader = true;
  private readonly workloads: SharedInformer<SwObject>;
  private readonly deployments: SharedInformer<Workload>;
  private readonly statefulSets: SharedInformer<Workload>;
  private readonly hpas: SharedInformer<Hpa>;
  private readonly remembered = new Map<string, Remembered>();
  private readonly clock: Clock;
  private readonly periodMs: number;
  private timer?: Timer;
  private pass?: Promise<void>;
  private stopped = false;
  /** Scale target (`Kind/namespace/name`) → keys of the ScalableWorkloads that start from its replicas. */
  private readonly byTarget = new Map<string, Set<string>>();
  private readonly unsubscribe: (() => void)[] = [];
  /** The reads of the ScalableWorkload being synced, if one waits: stop() ends them. */
  private reading?: AbortController;
  private readonly log: Logger;

  constructor(private readonly opts: RecommenderOptions) {
    this.clock = opts.clock ?? systemClock;
    this.periodMs = opts.periodMs ?? 15_000;
    this.log = opts.logger.child({ controller: "recommendations" });
    this.workloads = opts.cache.informer<SwObject>(`/apis/${API_VERSION}/scalableworkloads`);
    this.deployments = opts.cache.informer<Workload>(`/apis/apps/v1/${WORKLOAD_PATHS.Deployment}`);
    this.statefulSets = opts.cache.informer<Workload>(`/apis/apps/v1/${WORKLOAD_PATHS.StatefulSet}`);
    this.hpas = opts.cache.informer<Hpa>("/apis/autoscaling/v2/horizontalpodautoscalers");
  }

  start(): void {
    this.stopped = false;
    // A change of a scale target's replicas counts for behavior's policies from the moment
    // it is seen, as the controller counts its own rescale from the moment it makes it.
    const seen =
      (kind: string) => (o: { metadata?: { namespace?: string; name?: string }; spec?: unknown }) => {
        const replicas = (o.spec as { replicas?: unknown } | undefined)?.replicas;
        if (typeof replicas !== "number") return;
        const target = `${kind}/${o.metadata?.namespace}/${o.metadata?.name}`;
        for (const key of this.byTarget.get(target) ?? []) this.observe(this.remembered.get(key), replicas);
      };
    for (const [kind, informer] of [
      ["ScalableWorkload", this.workloads],
      ["Deployment", this.deployments],
      ["StatefulSet", this.statefulSets],
    ] as const)
      this.unsubscribe.push(informer.subscribe({ update: seen(kind) }));
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const unsubscribe of this.unsubscribe.splice(0)) unsubscribe();
    this.reading?.abort(new Error("the recommender stopped"));
    this.timer?.cancel();
    this.timer = undefined;
    await this.pass;
    // A new leader starts with no memory, as a restarted controller does.
    this.remembered.clear();
    this.byTarget.clear();
  }

  /** The recommendation of each ScalableWorkload, as this leader last made it. */
  *current(): Iterable<{ namespace: string; name: string; replicas: number }> {
    for (const [key, r] of this.remembered) {
      if (!r.recommendation) continue;
      const slash = key.indexOf("/");
      yield {
        namespace: key.slice(0, slash),
        name: key.slice(slash + 1),
        replicas: r.recommendation.replicas,
      };
    }
  }

  /** One sync of every ScalableWorkload, now (tests; the timer calls it every period). */
  async syncAll(): Promise<void> {
    await Promise.all([
      this.workloads.synced,
      this.deployments.synced,
      this.statefulSets.synced,
      this.hpas.synced,
    ]);
    const seen = new Set<string>();
    // Each namespace's pods, listed once a pass (a namespace may hold many ScalableWorkloads).
    const pods = new Map<string, ListedPod[]>();
    let turn = performance.now();
    for (const sw of this.workloads.list()) {
      if (performance.now() - turn > TURN_MS) {
        await new Promise((r) => setImmediate(r));
        turn = performance.now();
      }
      if (this.stopped) return;
      const key = `${sw.metadata?.namespace}/${sw.metadata?.name}`;
      seen.add(key);
      try {
        await this.syncOne(key, sw, pods);
      } catch (err) {
        this.log.warn({ err, scalableWorkload: key }, "could not make a recommendation");
      }
    }
    for (const [key, r] of this.remembered) if (!seen.has(key)) this.forget(key, r);
  }

  /** `replicas` seen on `r`'s scale target: a change counts for its behavior's policies. */
  private observe(r: Remembered | undefined, replicas: number): void {
    if (!r) return;
    if (r.replicas !== undefined && r.replicas !== replicas && r.behavior)
      recordScale(r.behavior, r.memory, r.replicas, replicas, this.clock.now());
    r.replicas = replicas;
  }

  private untrack(key: string, r: Remembered): void {
    if (!r.target) return;
    const keys = this.byTarget.get(r.target);
    keys?.delete(key);
    if (keys?.size === 0) this.byTarget.delete(r.target);
  }

  private forget(key: string, r: Remembered): void {
    this.untrack(key, r);
    this.remembered.delete(key);
  }

  private schedule(ms: number): void {
    this.timer = this.clock.after(ms, () => {
      if (this.stopped) return;
      const started = this.clock.now();
      this.pass = this.syncAll()
        .catch((err: unknown) => this.log.warn({ err }, "recommendations failed"))
        .finally(() => {
          if (!this.stopped) this.schedule(Math.max(0, started + this.periodMs - this.clock.now()));
        });
    });
  }

  private async syncOne(key: string, sw: SwObject, podsByNamespace: Map<string, ListedPod[]>): Promise<void> {
    const parsed = ScalableWorkloadSpec.safeParse(sw.spec);
    const spec = parsed.success ? parsed.data : undefined;
    const namespace = sw.metadata?.namespace ?? "";
    const name = sw.metadata?.name ?? "";
    const uid = sw.metadata?.uid ?? "";
    let r = this.remembered.get(key);
    if (!spec?.autoscaling || sw.metadata?.deletionTimestamp) {
      if (r) this.forget(key, r);
      if (sw.status?.recommendation) await this.write(sw, null);
      return;
    }
    if (!r || r.uid !== uid) {
      if (r) this.untrack(key, r);
      this.remembered.set(key, (r = { uid, memory: newMemory() }));
    }
    const scale = this.scaleOf(sw, spec);
    if (!scale) {
      // No workload (yet, or any more): the reconciler says why; nothing to recommend.
      r.recommendation = undefined;
      if (sw.status?.recommendation) await this.write(sw, null);
      return;
    }
    const nowMs = this.clock.now();
    const owner = { namespace, name, uid };
    const withAutoscaling = { ...spec, autoscaling: spec.autoscaling };
    const behavior = behaviorOf(spec.autoscaling.behavior);
    r.behavior = behavior;
    if (r.target !== scale.target) {
      this.untrack(key, r);
      r.target = scale.target;
      let keys = this.byTarget.get(scale.target);
      if (!keys) this.byTarget.set(scale.target, (keys = new Set()));
      keys.add(key);
    }
    // One not seen as it happened (before this ScalableWorkload was tracked) counts from now.
    this.observe(r, scale.spec);

    const plan = planHpa(owner, withAutoscaling, this.opts.getMapping, undefined);
    let next: Recommendation;
    if (plan.metrics.length === 0) {
      next = { replicas: scale.spec, reason: plan.autoscaling.reason, message: plan.autoscaling.message };
    } else {
      // Its own HPA's ScaledToZero, in mode Scale; never another's of the same name.
      const ours = this.hpas.get(name, namespace);
      const hpa: HpaView = {
        spec: buildHpa(owner, withAutoscaling, plan.metrics).spec,
        ...(spec.autoscaling.mode === "Scale" && ours?.metadata?.ownerReferences?.some((o) => o.uid === uid)
          ? { status: ours.status }
          : {}),
      };
      let listed = podsByNamespace.get(namespace);
      if (!listed)
        podsByNamespace.set(
          namespace,
          (listed = this.opts.pods.list(namespace).map((p) => ({
            name: p.name,
            labels: p.labels,
            phase: p.phase,
            deleting: p.terminating,
            ready: p.ready,
          }))),
        );
      const pods = listed.filter((p) => scale.selector.matches(p.labels));
      const readings: Reading[] = [];
      const deadline = this.readDeadline();
      try {
        for (const [i, m] of (hpa.spec.metrics ?? []).entries())
          readings.push(await this.read(namespace, m, plan.mappings[i]!, scale.selector, deadline));
      } finally {
        deadline.dispose();
      }
      if (this.stopped) return; // no write after leadership is lost
      const decision = decide({
        nowMs,
        hpa,
        specReplicas: scale.spec,
        statusReplicas: scale.status,
        pods,
        readings,
        memory: r.memory,
        ...(this.opts.controller ? { controller: this.opts.controller } : {}),
      });
      next = recommendationOf(decision, plan.mappings);
    }
    next = { ...next, message: boundedText(next.message, MESSAGE_CHARS) };
    const stored = sw.status?.recommendation;
    r.recommendation = next;
    if (sameRecommendation(stored, next)) return;
    await this.write(sw, { ...next, time: new Date(nowMs).toISOString().replace(/\.\d+Z$/, "Z") });
    if (stored?.replicas !== next.replicas || stored.metric !== next.metric)
      this.opts.events.record(
        { apiVersion: API_VERSION, kind: "ScalableWorkload", namespace, name, uid },
        "Normal",
        "Recommended",
        `${next.replicas} replica(s)${stored ? ` (was ${stored.replicas})` : ""}: ${next.reason}${next.metric ? ` (${next.metric})` : ""}: ${next.message}`,
      );
  }

  /**
   * The replicas the HPA would start from (its scale target's /scale: this ScalableWorkload
   * in mode Scale; in mode Shadow, the workload the live autoscaler moves) and the pods'
   * selector, once the reconciler has resolved the workload.
   */
  private scaleOf(
    sw: SwObject,
    spec: ScalableWorkloadSpec,
  ): { target: string; spec: number; status: number; selector: LabelSelector } | undefined {
    const text = sw.status?.selector;
    if (!text || !sw.status?.workload) return undefined;
    let selector: LabelSelector;
    try {
      selector = LabelSelector.parse(text);
    } catch {
      return undefined;
    }
    const namespace = sw.metadata?.namespace ?? "";
    if (spec.autoscaling?.mode !== "Shadow")
      return {
        target: `ScalableWorkload/${namespace}/${sw.metadata?.name}`,
        spec: spec.replicas,
        status: sw.status.replicas ?? 0,
        selector,
      };
    const [kind, name] = sw.status.workload.split("/");
    const informer =
      kind === "Deployment" ? this.deployments : kind === "StatefulSet" ? this.statefulSets : undefined;
    const w = name ? informer?.get(name, namespace) : undefined;
    if (!w) return undefined;
    return {
      target: `${kind}/${namespace}/${name}`,
      spec: w.spec?.replicas ?? 1,
      status: w.status?.replicas ?? 0,
      selector,
    };
  }

  /**
   * One deadline for all the reads of one ScalableWorkload (armed only if one has to wait),
   * which stop() also ends.
   */
  private readDeadline(): Cancellation & { dispose(): void } {
    let controller: AbortController | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (): AbortController => {
      const c = (controller = new AbortController());
      timer = setTimeout(() => c.abort(new DeadlineExceededError(READ_WAIT_MS)), READ_WAIT_MS);
      this.reading = c;
      return c;
    };
    return {
      get signal() {
        return (controller ?? arm()).signal;
      },
      dispose: () => {
        clearTimeout(timer);
        if (controller && this.reading === controller) this.reading = undefined;
      },
    };
  }

  /** One metric's values, from the provider as the metrics API answers the HPA. */
  private async read(
    namespace: string,
    m: NonNullable<HpaView["spec"]["metrics"]>[number],
    mapping: string,
    pods: LabelSelector,
    cancel: Cancellation,
  ): Promise<Reading> {
    try {
      if (m.type === "Pods" && m.pods) {
        const values = await this.opts.provider.getMetricBySelector({
          groupResource: { group: "", resource: "pods" },
          namespace,
          selector: pods,
          metric: m.pods.metric.name,
          metricSelector: LabelSelector.fromObject(m.pods.metric.selector as never),
          cancel,
        });
        return { values: values.map((v) => ({ name: v.describedObject.name, value: v.value })) };
      }
      if (m.type === "Object" && m.object) {
        const resource = (
          this.opts.getMapping(namespace, mapping)?.spec as { subject?: { resource?: string } }
        )?.subject?.resource;
        const groupResource = parseGroupResource(resource ?? "");
        const objectName = m.object.describedObject.name;
        // A Namespace's metric is its own namespace's mapping's: never read another's for this one.
        if (groupResource.group === "" && groupResource.resource === "namespaces" && objectName !== namespace)
          return {
            error: `a Namespace metric is read for this ScalableWorkload's own namespace (${namespace}) only`,
          };
        const v = await this.opts.provider.getMetricByName({
          groupResource,
          namespace,
          name: objectName,
          metric: m.object.metric.name,
          metricSelector: LabelSelector.fromObject(m.object.metric.selector as never),
          cancel,
        });
        return { values: [{ name: v.describedObject.name, value: v.value }] };
      }
      if (m.type === "External" && m.external) {
        const values = await this.opts.provider.getExternalMetric({
          namespace,
          metric: m.external.metric.name,
          metricSelector: LabelSelector.fromObject(m.external.metric.selector as never),
          cancel,
        });
        return { values: values.map((v) => ({ value: v.value })) };
      }
      return { error: `a ${m.type} metric is not read` };
    } catch (err) {
      return { error: boundedText((err as Error).message, 300) };
    }
  }

  /** Writes `status.recommendation` (null removes it); a ScalableWorkload gone meanwhile is no error. */
  private async write(
    sw: SwObject,
    recommendation: (Recommendation & { time: string }) | null,
  ): Promise<void> {
    try {
      await this.opts.client.mergePatch(
        `/apis/${API_VERSION}/namespaces/${sw.metadata?.namespace}/scalableworkloads/${sw.metadata?.name}/status`,
        // A merge patch keeps what it does not name: a field a recommendation lacks is null.
        {
          status: {
            recommendation: recommendation && {
              ...recommendation,
              metric: recommendation.metric ?? null,
            },
          },
        },
      );
    } catch (err) {
      if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
    }
  }
}
