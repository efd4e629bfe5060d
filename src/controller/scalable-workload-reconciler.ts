/**
 * The ScalableWorkload reconciler: carries `spec.replicas` (set by the HPA or
 * `kubectl scale` through the /scale subresource) onto a Deployment it owns (built from
 * `template`, server-side applied) or onto the referenced Deployment/StatefulSet (through
 * its /scale subresource); keeps `status.replicas/readyReplicas/selector` current from
 * the workload; and writes and owns the HPA when `spec.autoscaling` is set. With
 * `minReplicas: 0` it also moves the workload 0 ↔ 1 on its activation metric (the rule is
 * in `activation.ts`), re-deciding after every sample of that metric. Everything it
 * creates carries an owner reference, so deleting the ScalableWorkload garbage-collects it.
 */
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { API_VERSION, durationMs } from "../api/common.js";
import { MetricMappingSpec } from "../api/metric-mapping.js";
import { ScalableWorkloadSpec, type ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import { startInformer, type ResilientInformer } from "../k8s/informer.js";
import { buildDeployment, buildHpa, type Owner, type ResolvedMetric } from "../manifests/workload.js";
import { formatQuantity, parseQuantity } from "../metrics/quantity.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { type ActivationDecision, type ActivationReading, decideActivation } from "./activation.js";
import { findCondition, sameConditions, setCondition, type ConditionUpdate } from "./conditions.js";
import { type Controller, objectKey, splitKey, startController } from "./controller.js";
import type { EventRecorder } from "./events.js";
import type { ReconcileResult } from "./work-queue.js";

/** A ScalableWorkload as stored. */
interface ScalableWorkloadObject extends KubernetesObject {
  spec?: unknown;
  status?: ScalableWorkloadStatus;
}

interface Workload extends KubernetesObject {
  spec?: {
    replicas?: number;
    selector?: {
      matchLabels?: Record<string, string>;
      matchExpressions?: { key: string; operator: string; values?: string[] }[];
    };
  };
  status?: { replicas?: number; readyReplicas?: number; observedGeneration?: number };
}

interface Hpa extends KubernetesObject {
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

/** Options of {@link ScalableWorkloadReconciler}. */
export interface ScalableWorkloadReconcilerOptions {
  client: KubeClient;
  events: EventRecorder;
  logger: Logger;
  /**
   * A MetricMapping as the MetricMapping reconciler sees it: its spec, and the problem
   * that keeps it from ever serving (an invalid source, an unknown resource…), if any.
   */
  getMapping: (
    namespace: string,
    name: string,
  ) => { spec?: unknown; problem?: { reason: string; message: string } } | undefined;
  /** Whether this replica may write (the leader). */
  isLeader: () => boolean;
  /**
   * Reads the activation metric of a ScalableWorkload that scales to zero: the MetricMapping
   * `mapping` in `namespace`, for the object `objectName` (see `readActivation`).
   */
  readActivation?: (namespace: string, mapping: string, objectName: string) => ActivationReading;
  /** @default () => new Date() */
  now?: () => Date;
  /** @default "governor" */
  fieldManager?: string;
}

const SW_PATH = `/apis/${API_VERSION}/scalableworkloads`;
const HPA_PATH = "/apis/autoscaling/v2/horizontalpodautoscalers";
/** A condition this reconciler decides (the type is added where it is set). */
type Problem = Omit<ConditionUpdate, "type">;

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
const WORKLOAD_PATHS = { Deployment: "deployments", StatefulSet: "statefulsets" } as const;

/** See the module comment. */
export class ScalableWorkloadReconciler {
  private controller?: Controller<ScalableWorkloadObject>;
  private deployments?: ResilientInformer<Workload>;
  private statefulSets?: ResilientInformer<Workload>;
  private hpas?: ResilientInformer<Hpa>;
  /** `namespace/name` of an owned HPA → {@link hpaFingerprint} when last seen. */
  private readonly hpaSeen = new Map<string, string>();
  /** `Kind/namespace/name` of a referenced workload → keys of ScalableWorkloads referencing it. */
  private readonly refs = new Map<string, Set<string>>();
  /** `namespace/name` of an activation MetricMapping → keys of ScalableWorkloads it wakes. */
  private readonly activations = new Map<string, Set<string>>();
  private readonly log: Logger;

  constructor(private readonly opts: ScalableWorkloadReconcilerOptions) {
    this.log = opts.logger.child({ controller: "scalableworkload" });
  }

  /** Starts the informers and workers. */
  start(): Controller<ScalableWorkloadObject> {
    const client = this.opts.client;
    const watch = (kind: "Deployment" | "StatefulSet") => {
      const path = `/apis/apps/v1/${WORKLOAD_PATHS[kind]}`;
      const onChange = (w: Workload) => this.enqueueFor(kind, w);
      return startInformer<Workload>(
        client.kubeConfig,
        path,
        () => client.get<KubernetesListObject<Workload>>(path),
        {
          add: onChange,
          update: onChange,
          delete: onChange,
          error: (err, retryIn) =>
            this.log.warn({ err: String(err), retryIn, kind }, "watch failed; restarting"),
        },
      );
    };
    this.deployments = watch("Deployment");
    this.statefulSets = watch("StatefulSet");
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
    this.hpas = startInformer<Hpa>(
      client.kubeConfig,
      HPA_PATH,
      () => client.get<KubernetesListObject<Hpa>>(HPA_PATH),
      {
        add: (h) => onHpa(h),
        update: (h) => onHpa(h),
        delete: (h) => onHpa(h, true),
        error: (err, retryIn) =>
          this.log.warn(
            { err: String(err), retryIn, kind: "HorizontalPodAutoscaler" },
            "watch failed; restarting",
          ),
      },
    );
    this.controller = startController<ScalableWorkloadObject>({
      name: "scalableworkload",
      client,
      path: SW_PATH,
      reconcile: (key) => this.reconcile(key),
      logger: this.opts.logger,
    });
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

  async stop(): Promise<void> {
    await this.controller?.stop();
    await this.deployments?.stop();
    await this.statefulSets?.stop();
    await this.hpas?.stop();
  }

  /**
   * After every sample of a MetricMapping: the ScalableWorkloads it activates are
   * reconciled when the activation rule would now move them or say something new (most
   * samples change neither, and a reconcile applies the workload and the HPA).
   */
  activationSampled(namespace: string, name: string): void {
    if (!this.opts.isLeader()) return;
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
    const sw = this.controller!.informer.get(name, namespace);
    for (const set of this.refs.values()) set.delete(key);
    for (const set of this.activations.values()) set.delete(key);
    if (!sw || sw.metadata?.deletionTimestamp) return; // owned objects are garbage-collected
    if (!this.opts.isLeader()) return;
    // "Not in the cache" must mean "does not exist" before anything is created or adopted.
    await Promise.all([this.deployments!.synced, this.statefulSets!.synced, this.hpas!.synced]);
    const owner = { name, namespace, uid: sw.metadata?.uid ?? "" };
    const parsed = ScalableWorkloadSpec.safeParse(sw.spec);
    if (!parsed.success) {
      const message = parsed.error.issues
        .map((i) => `${i.path.join(".") || "spec"}: ${i.message}`)
        .join("; ");
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
    const resolved = await this.resolveWorkload(sw, key, owner, spec);
    if ("problem" in resolved)
      return this.writeStatus(sw, {}, { ready: resolved.problem, ...extra }, resolved.retryMs);
    const { kind, workload, selector } = resolved;

    const hpa = await this.reconcileHpa(owner, spec);
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

  /**
   * The workload to drive, with its replicas carried over: the owned Deployment (applied
   * from the template) or the referenced one; or why there is none.
   */
  private async resolveWorkload(
    sw: ScalableWorkloadObject,
    key: string,
    owner: Owner,
    spec: ScalableWorkloadSpec,
  ): Promise<
    | { kind: "Deployment" | "StatefulSet"; workload: Workload; selector: LabelSelector }
    | { problem: Problem; retryMs?: number }
  > {
    const { name, namespace } = owner;
    if (spec.template) {
      let selector: LabelSelector;
      try {
        selector = LabelSelector.fromObject(spec.selector); // required with template: a schema rule
      } catch (err) {
        return { problem: { status: "False", reason: "InvalidSelector", message: (err as Error).message } };
      }
      const labels =
        (spec.template as { metadata?: { labels?: Record<string, string> } }).metadata?.labels ?? {};
      if (selector.empty || !selector.matches(labels)) {
        return {
          problem: {
            status: "False",
            reason: "InvalidSelector",
            message: `spec.selector (${selector.toString() || "empty"}) must select the template's labels`,
          },
        };
      }
      const path = `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`;
      const existing = this.deployments!.get(name, namespace);
      if (existing && !existing.metadata?.ownerReferences?.some((r) => r.uid === owner.uid)) {
        return {
          problem: {
            status: "False",
            reason: "DeploymentExists",
            message: `a Deployment named ${name} exists and is not owned by this ScalableWorkload; use spec.workloadRef to drive it`,
          },
        };
      }
      const workload = await this.opts.client.apply<Workload>(path, buildDeployment(owner, spec), {
        fieldManager: this.opts.fieldManager ?? "governor",
      });
      if (existing?.spec?.replicas !== undefined && existing.spec.replicas !== spec.replicas) {
        this.scaled(sw, "Deployment", name, existing.spec.replicas, spec.replicas);
      }
      return { kind: "Deployment", workload, selector };
    }
    const ref = spec.workloadRef!;
    const kind = ref.kind;
    this.track(this.refs, `${kind}/${namespace}/${ref.name}`, key);
    const informer = kind === "Deployment" ? this.deployments! : this.statefulSets!;
    const workload = informer.get(ref.name, namespace);
    if (!workload) {
      return {
        problem: {
          status: "False",
          reason: "WorkloadNotFound",
          message: `${kind} ${ref.name} not found in namespace ${namespace}`,
        },
        retryMs: 30_000,
      };
    }
    let selector: LabelSelector;
    try {
      selector = LabelSelector.fromObject(workload.spec?.selector);
    } catch (err) {
      return {
        problem: {
          status: "False",
          reason: "InvalidSelector",
          message: `${kind} ${ref.name}: ${(err as Error).message}`,
        },
      };
    }
    if (workload.spec?.replicas !== spec.replicas) {
      await this.opts.client.mergePatch(
        `/apis/apps/v1/namespaces/${namespace}/${WORKLOAD_PATHS[kind]}/${ref.name}/scale`,
        { spec: { replicas: spec.replicas } },
      );
      this.scaled(sw, kind, ref.name, workload.spec?.replicas, spec.replicas);
    }
    return { kind, workload, selector };
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
   * Applies the owned HPA with the metrics whose MetricMapping can serve, and deletes it
   * when none can (or `spec.autoscaling` is gone): an HPA metric that can never be read
   * only makes the HPA fail. Returns a problem for `Ready`, if any, and the `Autoscaling`
   * condition, read from the HPA's own status.
   */
  private async reconcileHpa(
    owner: Owner,
    spec: ScalableWorkloadSpec,
  ): Promise<{ problem?: Problem; autoscaling?: Problem }> {
    const path = `/apis/autoscaling/v2/namespaces/${owner.namespace}/horizontalpodautoscalers/${owner.name}`;
    const existing = this.hpas!.get(owner.name, owner.namespace);
    const ours = existing?.metadata?.ownerReferences?.some((r) => r.uid === owner.uid) ?? false;
    if (!spec.autoscaling) {
      if (ours) await this.opts.client.delete(path);
      return {};
    }
    // Never adopt: an HPA of the same name that this ScalableWorkload did not create may
    // be another team's, and applying over it would take it over.
    if (existing && !ours)
      return {
        problem: {
          status: "False",
          reason: "HorizontalPodAutoscalerExists",
          message: `spec.autoscaling: a HorizontalPodAutoscaler named ${owner.name} exists and is not owned by this ScalableWorkload; Governor leaves it alone (delete it, or drop spec.autoscaling)`,
        },
      };
    const metrics: ResolvedMetric[] = [];
    const unusable: string[] = [];
    let missing = false;
    for (const entry of spec.autoscaling.metrics) {
      const mapping = this.opts.getMapping(owner.namespace, entry.mapping);
      const parsed = MetricMappingSpec.safeParse(mapping?.spec);
      if (!mapping) {
        missing = true;
        unusable.push(`MetricMapping ${entry.mapping} not found`);
      } else if (!parsed.success) {
        unusable.push(`MetricMapping ${entry.mapping} is invalid (InvalidSpec)`);
      } else if (mapping.problem) {
        unusable.push(
          `MetricMapping ${entry.mapping} cannot serve (${mapping.problem.reason}: ${mapping.problem.message})`,
        );
      } else {
        metrics.push(resolveMetric(parsed.data, entry, owner.name));
      }
    }
    if (metrics.length > 0) {
      await this.opts.client.apply(path, buildHpa(owner, spec, metrics), {
        fieldManager: this.opts.fieldManager ?? "governor",
      });
    } else if (ours) {
      await this.opts.client.delete(path);
    }
    const autoscaling: Problem =
      metrics.length > 0
        ? spec.replicas === 0 && spec.autoscaling.activation
          ? {
              status: "True",
              reason: "ScaledToZero",
              message:
                "the workload is at 0 replicas: the HorizontalPodAutoscaler stands still (ScalingDisabled) until the activation metric wakes it",
            }
          : hpaHealth(ours ? existing : undefined)
        : {
            status: "False",
            reason: "NoUsableMetric",
            message:
              "no metric of spec.autoscaling can be served, so no HorizontalPodAutoscaler is kept; the replicas stay as they are",
          };
    if (unusable.length === 0) return { autoscaling };
    return {
      autoscaling,
      problem: {
        status: "False",
        reason: missing ? "MappingNotFound" : "MappingInvalid",
        message: `spec.autoscaling: ${unusable.join("; ")} (namespace ${owner.namespace}); ${
          metrics.length > 0
            ? `the HorizontalPodAutoscaler scales on the other ${metrics.length} metric(s)`
            : "no HorizontalPodAutoscaler is kept until one can serve"
        }`,
      },
    };
  }

  /**
   * Writes `status` with the `Ready` condition, and `Autoscaling` and `Active` where they
   * apply (each removed where it does not), if anything changed. `recheckMs`: when the
   * activation rule changes with time alone; `requeueMs`: a retry for a problem.
   */
  private async writeStatus(
    sw: ScalableWorkloadObject,
    status: ScalableWorkloadStatus,
    c: {
      ready: Problem;
      autoscaling?: Problem;
      active?: Problem;
      activation?: ScalableWorkloadStatus["activation"];
      recheckMs?: number;
    },
    requeueMs?: number,
  ): Promise<ReconcileResult> {
    const { ready, autoscaling } = c;
    const generation = sw.metadata?.generation;
    const old = sw.status ?? {};
    let conditions = setCondition(old.conditions, { type: "Ready", ...ready }, generation);
    for (const [type, update] of [
      ["Autoscaling", autoscaling],
      ["Active", c.active],
    ] as const) {
      conditions = update
        ? setCondition(conditions, { type, ...update }, generation)
        : conditions.filter((x) => x.type !== type);
    }
    const next: ScalableWorkloadStatus = {
      ...status,
      ...(c.activation ? { activation: c.activation } : {}),
      observedGeneration: generation,
      conditions,
    };
    const same =
      sameConditions(old.conditions, conditions) &&
      old.observedGeneration === generation &&
      old.mode === next.mode &&
      old.replicas === next.replicas &&
      old.readyReplicas === next.readyReplicas &&
      old.selector === next.selector &&
      old.workload === next.workload &&
      JSON.stringify(old.activation ?? null) === JSON.stringify(next.activation ?? null);
    if (!same) {
      for (const [type, now] of [
        ["Ready", ready],
        ["Autoscaling", autoscaling],
      ] as const) {
        const before = findCondition(old.conditions, type);
        if (now?.status === "False" && (before?.status !== "False" || before.reason !== now.reason)) {
          this.opts.events.record(eventSubject(sw), "Warning", now.reason, now.message);
          this.log.warn(
            { scalableWorkload: objectKey(sw), condition: type, reason: now.reason },
            now.message,
          );
        }
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

/** How the HPA reads one `spec.autoscaling.metrics` entry, from its MetricMapping's subject. */
function resolveMetric(
  m: MetricMappingSpec,
  entry: NonNullable<ScalableWorkloadSpec["autoscaling"]>["metrics"][number],
  ownerName: string,
): ResolvedMetric {
  const target = entry.target;
  if (m.subject.external)
    return { type: "External", metric: m.metric, labels: m.subject.external.labels ?? {}, target };
  if (m.subject.resource === "pods") return { type: "Pods", metric: m.metric, target };
  return {
    type: "Object",
    metric: m.metric,
    object: entry.object ?? { apiVersion: API_VERSION, kind: "ScalableWorkload", name: ownerName },
    target,
  };
}

/** What the HPA's own conditions say: whether it can scale and read its metrics. */
function hpaHealth(hpa: Hpa | undefined): Problem {
  const conditions = hpa?.status?.conditions ?? [];
  const able = conditions.find((c) => c.type === "AbleToScale");
  const active = conditions.find((c) => c.type === "ScalingActive");
  if (!able || !active)
    return {
      status: "Unknown",
      reason: "Pending",
      message: "the HorizontalPodAutoscaler has not evaluated its metrics yet",
    };
  for (const c of [able, active]) {
    if (c.status !== "True")
      return {
        status: "False",
        reason: c.reason || c.type,
        message: `HorizontalPodAutoscaler ${c.type}: ${c.message ?? ""}`.trim(),
      };
  }
  return {
    status: "True",
    reason: active.reason || "ValidMetricFound",
    message: `HorizontalPodAutoscaler ScalingActive: ${active.message ?? ""}`.trim(),
  };
}

/** The HPA fields that decide {@link hpaHealth}: a change of anything else is not news. */
function hpaFingerprint(hpa: Hpa): string {
  return (hpa.status?.conditions ?? [])
    .filter((c) => c.type === "AbleToScale" || c.type === "ScalingActive")
    .map((c) => `${c.type}=${c.status}/${c.reason ?? ""}`)
    .sort()
    .join(",");
}
