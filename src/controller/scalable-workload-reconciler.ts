/**
 * The ScalableWorkload reconciler: carries `spec.replicas` (set by the HPA or
 * `kubectl scale` through the /scale subresource) onto a Deployment it owns (built from
 * `template`, server-side applied) or onto the referenced Deployment/StatefulSet (through
 * its /scale subresource); keeps `status.replicas/readyReplicas/selector` current from
 * the workload; and writes and owns the HPA when `spec.autoscaling` is set. With
 * `minReplicas: 0` it also moves the workload 0 ↔ 1 on its activation metric (the rule is
 * in `activation.ts`), re-deciding after every sample of that metric. Everything it
 * creates carries an owner reference, so deleting the ScalableWorkload garbage-collects it.
 *
 * Layout: the writes to the workload and the HPA are in workload-target.ts, the HPA's plan
 * in hpa.ts, the conditions in workload-status.ts, the activation rule in activation.ts.
 * (A little over 350 lines: what stays is the reconcile, activation's re-decisions and the
 * status write, which share the reconciler's informers and its indexes of references.)
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { API_VERSION, durationMs, specProblems } from "../api/common.js";
import { ScalableWorkloadSpec, type ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { KubeApiError, type KubeApi } from "../k8s/client.js";
import type { InformerCache, SharedInformer } from "../k8s/informer-cache.js";
import type { Runnable } from "../util/runnable.js";
import { formatQuantity, parseQuantity } from "../api/quantity.js";
import { type ActivationDecision, type ActivationReading, decideActivation } from "./activation.js";
import { findCondition } from "./conditions.js";
import { type Hpa, type MappingView, hpaFingerprint } from "./hpa.js";
import { type Controller, objectKey, splitKey, startController } from "./controller.js";
import type { EventRecorder } from "./events.js";
import type { MappingListener } from "./metric-mapping-reconciler.js";
import type { QueueStats, ReconcileResult } from "./work-queue.js";
import {
  type TargetDeps,
  type Workload,
  WORKLOAD_PATHS,
  reconcileHpa,
  resolveWorkload,
} from "./workload-target.js";
import { type WorkloadConditions, workloadStatus } from "./workload-status.js";

/** A ScalableWorkload as stored. */
interface ScalableWorkloadObject extends KubernetesObject {
  spec?: unknown;
  status?: ScalableWorkloadStatus;
}

/** Options of {@link ScalableWorkloadReconciler}. */
export interface ScalableWorkloadReconcilerOptions {
  client: KubeApi;
  events: EventRecorder;
  logger: Logger;
  /**
   * A MetricMapping as the MetricMapping reconciler sees it: its spec, and the problem
   * that keeps it from ever serving (an invalid source, an unknown resource…), if any.
   */
  getMapping: (namespace: string, name: string) => MappingView;
  /** The manager's shared informers (ScalableWorkloads, Deployments, StatefulSets, HPAs). */
  cache: InformerCache;
  /**
   * Reads the activation metric of a ScalableWorkload that scales to zero: the MetricMapping
   * `mapping` in `namespace`, for the object `objectName` (see `readActivation`).
   */
  readActivation?: (namespace: string, mapping: string, objectName: string) => ActivationReading;
  /** @default () => new Date() */
  now?: () => Date;
  /** @default "governor" */
  fieldManager?: string;
  /** Reconcile durations and failures, for /metrics. */
  observeReconcile?: (controller: string, seconds: number, failed: boolean) => void;
  /** Each time the controller starts: its work queue, for /metrics. */
  watchQueue?: (controller: string, stats: QueueStats) => void;
}

const SW_PATH = `/apis/${API_VERSION}/scalableworkloads`;
const HPA_PATH = "/apis/autoscaling/v2/horizontalpodautoscalers";

/** The ScalableWorkload as the subject of an Event. */
function eventSubject(sw: ScalableWorkloadObject) {
  return {
    apiVersion: API_VERSION,
    kind: "ScalableWorkload",
    namespace: sw.metadata?.namespace ?? "",
    name: sw.metadata?.name ?? "",
    uid: sw.metadata?.uid,
  };
}

/** See the module comment. */
export class ScalableWorkloadReconciler implements Runnable, MappingListener {
  readonly name = "ScalableWorkload controller";
  /** Everything it does is a write: Deployments, HPAs, /scale, status, Events. */
  readonly needsLeader = true;
  private controller?: Controller<ScalableWorkloadObject>;
  // Shared informers, watching from construction on every replica: a new leader starts warm.
  private readonly workloads: SharedInformer<ScalableWorkloadObject>;
  private readonly deployments: SharedInformer<Workload>;
  private readonly statefulSets: SharedInformer<Workload>;
  private readonly hpas: SharedInformer<Hpa>;
  private readonly unsubscribe: (() => void)[] = [];
  /** `namespace/name` of an owned HPA → {@link hpaFingerprint} when last seen. */
  private readonly hpaSeen = new Map<string, string>();
  /** `Kind/namespace/name` of a referenced workload → keys of ScalableWorkloads referencing it. */
  private readonly refs = new Map<string, Set<string>>();
  /** `namespace/name` of an activation MetricMapping → keys of ScalableWorkloads it wakes. */
  private readonly activations = new Map<string, Set<string>>();
  private readonly log: Logger;

  constructor(private readonly opts: ScalableWorkloadReconcilerOptions) {
    this.log = opts.logger.child({ controller: "scalableworkload" });
    const cache = opts.cache;
    this.workloads = cache.informer<ScalableWorkloadObject>(SW_PATH);
    this.deployments = cache.informer<Workload>(`/apis/apps/v1/${WORKLOAD_PATHS.Deployment}`);
    this.statefulSets = cache.informer<Workload>(`/apis/apps/v1/${WORKLOAD_PATHS.StatefulSet}`);
    this.hpas = cache.informer<Hpa>(HPA_PATH);
  }

  /** Subscribes to the shared informers and starts the workers (the manager does, on leadership). */
  start(): void {
    const watch = (kind: "Deployment" | "StatefulSet", informer: SharedInformer<Workload>) => {
      const onChange = (w: Workload) => this.enqueueFor(kind, w);
      this.unsubscribe.push(informer.subscribe({ add: onChange, update: onChange, delete: onChange }));
    };
    watch("Deployment", this.deployments);
    watch("StatefulSet", this.statefulSets);
    // Owned HPAs: their conditions are the ScalableWorkload's Autoscaling condition. Their
    // status changes with every metric reading; only a change of the conditions is news.
    const onHpa = (h: Hpa, deleted = false) => {
      const key = objectKey(h);
      const seen = deleted ? undefined : hpaFingerprint(h);
      if (this.hpaSeen.get(key) === seen) return;
      if (seen === undefined) this.hpaSeen.delete(key);
      else this.hpaSeen.set(key, seen);
      this.enqueueOwners(h);
    };
    this.unsubscribe.push(
      this.hpas.subscribe({ add: (h) => onHpa(h), update: (h) => onHpa(h), delete: (h) => onHpa(h, true) }),
    );
    this.controller = startController<ScalableWorkloadObject>({
      name: "scalableworkload",
      informer: this.workloads,
      reconcile: (key) => this.reconcile(key),
      logger: this.opts.logger,
      observeReconcile: this.opts.observeReconcile,
    });
    this.opts.watchQueue?.("scalableworkload", this.controller.queue.stats);
  }

  /** The running controller (its queue, for /metrics), while started. */
  get running(): Controller<ScalableWorkloadObject> | undefined {
    return this.controller;
  }

  /** Re-runs every ScalableWorkload (e.g. after becoming leader). */
  resyncAll(): void {
    for (const o of this.controller?.informer.list() ?? []) this.controller?.queue.add(objectKey(o));
  }

  /** ScalableWorkloads whose autoscaling uses a mapping: re-run when mappings change. */
  mappingChanged(namespace: string): void {
    for (const o of this.controller?.informer.list(namespace) ?? []) this.controller?.queue.add(objectKey(o));
  }

  /** Stops the workers and its subscriptions (the informers go on, shared). */
  async stop(): Promise<void> {
    for (const unsubscribe of this.unsubscribe.splice(0)) unsubscribe();
    const controller = this.controller;
    this.controller = undefined;
    await controller?.stop();
    this.hpaSeen.clear();
    this.refs.clear();
    this.activations.clear();
  }

  /**
   * After every sample of a MetricMapping: the ScalableWorkloads it activates are
   * reconciled when the activation rule would now move them or say something new (most
   * samples change neither, and a reconcile applies the workload and the HPA).
   */
  activationSampled(namespace: string, name: string): void {
    for (const key of this.activations.get(`${namespace}/${name}`) ?? []) {
      // One that failed waits for its backoff: a sample every second must not undo it.
      if (this.controller?.queue.failing(key)) continue;
      const { namespace: ns, name: swName } = splitKey(key);
      const sw = this.controller?.informer.get(swName, ns);
      const parsed = ScalableWorkloadSpec.safeParse(sw?.spec);
      const d = sw && parsed.success ? this.decideActivation(sw, parsed.data) : undefined;
      if (!d) continue;
      const was = findCondition(sw!.status?.conditions, "Active");
      if (
        d.replicas !== undefined ||
        was?.status !== d.condition.status ||
        was.reason !== d.condition.reason ||
        sw!.status?.activation?.belowThresholdSince !== d.status.belowThresholdSince
      )
        this.controller?.queue.add(key);
    }
  }

  /** The activation rule for `sw` now, if it scales to zero. */
  private decideActivation(
    sw: ScalableWorkloadObject,
    spec: ScalableWorkloadSpec,
  ): ActivationDecision | undefined {
    const a = spec.autoscaling?.activation;
    if (!a || !this.opts.readActivation) return undefined;
    const namespace = sw.metadata?.namespace ?? "";
    return decideActivation({
      now: this.opts.now?.() ?? new Date(),
      replicas: spec.replicas,
      metric: a.mapping,
      threshold: parseQuantity(a.threshold) ?? 0,
      thresholdText: a.threshold,
      cooldownMs: durationMs(a.cooldown),
      cooldownText: a.cooldown,
      reading: this.opts.readActivation(namespace, a.mapping, a.object?.name ?? sw.metadata?.name ?? ""),
      previous: sw.status?.activation,
      previousCondition: findCondition(sw.status?.conditions, "Active"),
      format: formatQuantity,
    });
  }

  private enqueueFor(kind: string, w: Workload): void {
    this.enqueueOwners(w);
    for (const key of this.refs.get(`${kind}/${w.metadata?.namespace}/${w.metadata?.name}`) ?? [])
      this.controller?.queue.add(key);
  }

  /** Reconciles the ScalableWorkload that owns `o`, if one does. */
  private enqueueOwners(o: KubernetesObject): void {
    for (const ref of o.metadata?.ownerReferences ?? []) {
      if (ref.kind === "ScalableWorkload" && ref.apiVersion === API_VERSION)
        this.controller?.queue.add(`${o.metadata?.namespace}/${ref.name}`);
    }
  }

  private async reconcile(key: string): Promise<ReconcileResult | void> {
    const { namespace, name } = splitKey(key);
    const sw = this.workloads.get(name, namespace);
    for (const set of this.refs.values()) set.delete(key);
    for (const set of this.activations.values()) set.delete(key);
    if (!sw || sw.metadata?.deletionTimestamp) return; // owned objects are garbage-collected
    // "Not in the cache" must mean "does not exist" before anything is created or adopted.
    await Promise.all([this.deployments.synced, this.statefulSets.synced, this.hpas.synced]);
    const owner = { name, namespace, uid: sw.metadata?.uid ?? "" };
    const parsed = ScalableWorkloadSpec.safeParse(sw.spec);
    if (!parsed.success) {
      const message = specProblems(parsed.error);
      return this.writeStatus(sw, {}, { ready: { status: "False", reason: "InvalidSpec", message } });
    }
    let spec = parsed.data;
    const activation = this.decideActivation(sw, spec);
    if (activation) {
      this.track(this.activations, `${namespace}/${spec.autoscaling!.activation!.mapping}`, key);
      if (activation.replicas !== undefined && activation.replicas !== spec.replicas) {
        await this.moveReplicas(sw, activation.replicas);
        spec = { ...spec, replicas: activation.replicas };
      }
      if (activation.event) {
        const e = activation.event;
        this.opts.events.record(eventSubject(sw), e.type, e.reason, e.message);
      }
    }
    const extra = activation
      ? { active: activation.condition, activation: activation.status, recheckMs: activation.recheckInMs }
      : {};
    const target = this.targetDeps(sw, key);
    const resolved = await resolveWorkload(target, owner, spec);
    if ("problem" in resolved)
      return this.writeStatus(sw, {}, { ready: resolved.problem, ...extra }, resolved.retryMs);
    const { kind, workload, selector } = resolved;

    const hpa = await reconcileHpa(target, owner, spec);
    const status: ScalableWorkloadStatus = {
      mode: spec.template ? "Owned" : "Reference",
      replicas: workload.status?.replicas ?? 0,
      readyReplicas: workload.status?.readyReplicas ?? 0,
      selector: selector.toString(),
      workload: `${kind}/${workload.metadata?.name ?? name}`,
    };
    if (hpa.problem)
      return this.writeStatus(
        sw,
        status,
        { ready: hpa.problem, autoscaling: hpa.autoscaling, ...extra },
        30_000,
      );
    return this.writeStatus(sw, status, {
      ready: {
        status: "True",
        reason: "Reconciled",
        message: `${kind} ${workload.metadata?.name ?? name}: ${status.readyReplicas}/${spec.replicas} ready`,
      },
      autoscaling: hpa.autoscaling,
      ...extra,
    });
  }

  /**
   * Sets the replicas for the activation rule through the /scale subresource (as the HPA
   * does), on the version the rule was decided from: if the HPA or a user changed it since,
   * the apiserver refuses (409) and the reconcile runs again on what is there now.
   */
  private async moveReplicas(sw: ScalableWorkloadObject, replicas: number): Promise<void> {
    await this.opts.client.mergePatch(
      `/apis/${API_VERSION}/namespaces/${sw.metadata?.namespace}/scalableworkloads/${sw.metadata?.name}/scale`,
      { metadata: { resourceVersion: sw.metadata?.resourceVersion }, spec: { replicas } },
    );
  }

  /** What workload-target.ts needs to resolve and write `sw`'s workload and HPA. */
  private targetDeps(sw: ScalableWorkloadObject, key: string): TargetDeps {
    return {
      client: this.opts.client,
      fieldManager: this.opts.fieldManager ?? "governor",
      deployments: this.deployments,
      statefulSets: this.statefulSets,
      hpas: this.hpas,
      getMapping: this.opts.getMapping,
      track: (refKey) => this.track(this.refs, refKey, key),
      scaled: (kind, name, from, to) => this.scaled(sw, kind, name, from, to),
    };
  }

  private track(index: Map<string, Set<string>>, refKey: string, swKey: string): void {
    let set = index.get(refKey);
    if (!set) index.set(refKey, (set = new Set()));
    set.add(swKey);
  }

  private scaled(
    sw: ScalableWorkloadObject,
    kind: string,
    name: string,
    from: number | undefined,
    to: number,
  ): void {
    this.opts.events.record(
      eventSubject(sw),
      "Normal",
      "Scaled",
      `scaled ${kind} ${name} from ${from ?? 0} to ${to} replicas`,
    );
  }

  /**
   * Writes `status` with the conditions (workload-status.ts), if anything changed, and
   * announces new failures. `recheckMs`: when the activation rule changes with time alone;
   * `requeueMs`: a retry for a problem.
   */
  private async writeStatus(
    sw: ScalableWorkloadObject,
    status: ScalableWorkloadStatus,
    c: WorkloadConditions & { recheckMs?: number },
    requeueMs?: number,
  ): Promise<ReconcileResult> {
    const { next, changed, failures } = workloadStatus(sw.status ?? {}, sw.metadata?.generation, status, c);
    if (changed) {
      for (const { type, condition } of failures) {
        this.opts.events.record(eventSubject(sw), "Warning", condition.reason, condition.message);
        this.log.warn(
          { scalableWorkload: objectKey(sw), condition: type, reason: condition.reason },
          condition.message,
        );
      }
      try {
        await this.opts.client.mergePatch(
          `/apis/${API_VERSION}/namespaces/${sw.metadata?.namespace}/scalableworkloads/${sw.metadata?.name}/status`,
          // A merge patch keeps what it does not mention: null removes it (a cooldown's
          // start left behind would cut the next cooldown short).
          {
            status: {
              ...next,
              activation: next.activation
                ? {
                    value: next.activation.value ?? null,
                    belowThresholdSince: next.activation.belowThresholdSince ?? null,
                  }
                : null,
            },
          },
        );
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
      }
    }
    const after = [requeueMs, c.recheckMs].filter((x) => x !== undefined);
    return after.length ? { requeueAfterMs: Math.min(...after) } : {};
  }
}
