/**
 * The ScalableWorkload reconciler: carries `spec.replicas` (set by the HPA or
 * `kubectl scale` through the /scale subresource) onto a Deployment it owns (built from
 * `template`, server-side applied) or onto the referenced Deployment/StatefulSet (through
 * its /scale subresource); keeps `status.replicas/readyReplicas/selector` current from
 * the workload; and writes and owns the HPA when `spec.autoscaling` is set. Everything it
 * creates carries an owner reference, so deleting the ScalableWorkload garbage-collects it.
 */
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { API_VERSION } from "../api/common.js";
import { MetricMappingSpec } from "../api/metric-mapping.js";
import { ScalableWorkloadSpec, type ScalableWorkloadStatus } from "../api/scalable-workload.js";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import { startInformer, type ResilientInformer } from "../k8s/informer.js";
import { buildDeployment, buildHpa, type ResolvedMetric } from "../manifests/workload.js";
import { LabelSelector } from "../selectors/label-selector.js";
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

/** Options of {@link ScalableWorkloadReconciler}. */
export interface ScalableWorkloadReconcilerOptions {
  client: KubeClient;
  events: EventRecorder;
  logger: Logger;
  /** The MetricMapping `namespace/name`, from the MetricMapping informer. */
  getMapping: (namespace: string, name: string) => { spec?: unknown } | undefined;
  /** Whether this replica may write (the leader). */
  isLeader: () => boolean;
  /** @default "governor" */
  fieldManager?: string;
}

const SW_PATH = "/apis/governor.dev/v1alpha1/scalableworkloads";

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
  /** `Kind/namespace/name` of a referenced workload → keys of ScalableWorkloads referencing it. */
  private readonly refs = new Map<string, Set<string>>();
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
  }

  private enqueueFor(kind: string, w: Workload): void {
    for (const ref of w.metadata?.ownerReferences ?? []) {
      if (ref.kind === "ScalableWorkload" && ref.apiVersion === API_VERSION)
        this.controller?.queue.add(`${w.metadata?.namespace}/${ref.name}`);
    }
    for (const key of this.refs.get(`${kind}/${w.metadata?.namespace}/${w.metadata?.name}`) ?? [])
      this.controller?.queue.add(key);
  }

  private async reconcile(key: string): Promise<ReconcileResult | void> {
    const { namespace, name } = splitKey(key);
    const sw = this.controller!.informer.get(name, namespace);
    for (const set of this.refs.values()) set.delete(key);
    if (!sw || sw.metadata?.deletionTimestamp) return; // owned objects are garbage-collected
    if (!this.opts.isLeader()) return;
    const owner = { name, namespace, uid: sw.metadata?.uid ?? "" };
    const parsed = ScalableWorkloadSpec.safeParse(sw.spec);
    if (!parsed.success) {
      const message = parsed.error.issues
        .map((i) => `${i.path.join(".") || "spec"}: ${i.message}`)
        .join("; ");
      return this.writeStatus(sw, {}, { status: "False", reason: "InvalidSpec", message });
    }
    const spec = parsed.data;
    let workload: Workload | undefined;
    let kind: "Deployment" | "StatefulSet";
    let selector: LabelSelector;

    if (spec.template) {
      kind = "Deployment";
      try {
        selector = LabelSelector.fromObject(spec.selector); // required with template: a schema rule
      } catch (err) {
        return this.writeStatus(
          sw,
          {},
          { status: "False", reason: "InvalidSelector", message: (err as Error).message },
        );
      }
      const labels =
        (spec.template as { metadata?: { labels?: Record<string, string> } }).metadata?.labels ?? {};
      if (selector.empty || !selector.matches(labels)) {
        return this.writeStatus(
          sw,
          {},
          {
            status: "False",
            reason: "InvalidSelector",
            message: `spec.selector (${selector.toString() || "empty"}) must select the template's labels`,
          },
        );
      }
      const path = `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`;
      const existing = this.deployments!.get(name, namespace);
      const foreign = existing && !existing.metadata?.ownerReferences?.some((r) => r.uid === owner.uid);
      if (foreign) {
        return this.writeStatus(
          sw,
          {},
          {
            status: "False",
            reason: "DeploymentExists",
            message: `a Deployment named ${name} exists and is not owned by this ScalableWorkload; use spec.workloadRef to drive it`,
          },
        );
      }
      workload = await this.opts.client.apply<Workload>(path, buildDeployment(owner, spec), {
        fieldManager: this.opts.fieldManager ?? "governor",
      });
      if (existing?.spec?.replicas !== undefined && existing.spec.replicas !== spec.replicas) {
        this.scaled(sw, "Deployment", name, existing.spec.replicas, spec.replicas);
      }
    } else {
      const ref = spec.workloadRef!;
      kind = ref.kind;
      this.track(`${kind}/${namespace}/${ref.name}`, key);
      const informer = kind === "Deployment" ? this.deployments! : this.statefulSets!;
      workload = informer.get(ref.name, namespace);
      if (!workload) {
        return this.writeStatus(
          sw,
          {},
          {
            status: "False",
            reason: "WorkloadNotFound",
            message: `${kind} ${ref.name} not found in namespace ${namespace}`,
          },
          30_000,
        );
      }
      try {
        selector = LabelSelector.fromObject(workload.spec?.selector);
      } catch (err) {
        return this.writeStatus(
          sw,
          {},
          {
            status: "False",
            reason: "InvalidSelector",
            message: `${kind} ${ref.name}: ${(err as Error).message}`,
          },
        );
      }
      if (workload.spec?.replicas !== spec.replicas) {
        await this.opts.client.mergePatch(
          `/apis/apps/v1/namespaces/${namespace}/${WORKLOAD_PATHS[kind]}/${ref.name}/scale`,
          {
            spec: { replicas: spec.replicas },
          },
        );
        this.scaled(sw, kind, ref.name, workload.spec?.replicas, spec.replicas);
      }
    }

    const hpaProblem = await this.reconcileHpa(owner, spec);
    const status: ScalableWorkloadStatus = {
      replicas: workload.status?.replicas ?? 0,
      readyReplicas: workload.status?.readyReplicas ?? 0,
      selector: selector.toString(),
      workload: `${kind}/${workload.metadata?.name ?? name}`,
    };
    if (hpaProblem)
      return this.writeStatus(
        sw,
        status,
        { status: "False", reason: hpaProblem.reason, message: hpaProblem.message },
        30_000,
      );
    return this.writeStatus(sw, status, {
      status: "True",
      reason: "Reconciled",
      message: `${kind} ${workload.metadata?.name ?? name}: ${status.readyReplicas}/${spec.replicas} ready`,
    });
  }

  private track(refKey: string, swKey: string): void {
    let set = this.refs.get(refKey);
    if (!set) this.refs.set(refKey, (set = new Set()));
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

  /** Applies or deletes the owned HPA; returns a problem to report, if any. */
  private async reconcileHpa(
    owner: { name: string; namespace: string; uid: string },
    spec: ScalableWorkloadSpec,
  ) {
    const path = `/apis/autoscaling/v2/namespaces/${owner.namespace}/horizontalpodautoscalers/${owner.name}`;
    const existing = await this.opts.client.getOrUndefined<KubernetesObject>(path);
    const ours = existing?.metadata?.ownerReferences?.some((r) => r.uid === owner.uid) ?? false;
    if (!spec.autoscaling) {
      if (ours) await this.opts.client.delete(path);
      return undefined;
    }
    // Never adopt: an HPA of the same name that this ScalableWorkload did not create may
    // be another team's, and applying over it would take it over.
    if (existing && !ours)
      return {
        reason: "HorizontalPodAutoscalerExists",
        message: `spec.autoscaling: a HorizontalPodAutoscaler named ${owner.name} exists and is not owned by this ScalableWorkload; Governor leaves it alone (delete it, or drop spec.autoscaling)`,
      };
    const metrics: ResolvedMetric[] = [];
    for (const entry of spec.autoscaling.metrics) {
      const mapping = this.opts.getMapping(owner.namespace, entry.mapping);
      const parsed = MetricMappingSpec.safeParse(mapping?.spec);
      if (!mapping || !parsed.success) {
        return {
          reason: "MappingNotFound",
          message: `spec.autoscaling: MetricMapping ${entry.mapping} ${mapping ? "is invalid" : "not found"} in namespace ${owner.namespace}`,
        };
      }
      const m = parsed.data;
      const target = entry.target;
      if (m.subject.external)
        metrics.push({ type: "External", metric: m.metric, labels: m.subject.external.labels ?? {}, target });
      else if (m.subject.resource === "pods") metrics.push({ type: "Pods", metric: m.metric, target });
      else {
        metrics.push({
          type: "Object",
          metric: m.metric,
          object: entry.object ?? { apiVersion: API_VERSION, kind: "ScalableWorkload", name: owner.name },
          target,
        });
      }
    }
    await this.opts.client.apply(path, buildHpa(owner, spec, metrics), {
      fieldManager: this.opts.fieldManager ?? "governor",
    });
    return undefined;
  }

  private async writeStatus(
    sw: ScalableWorkloadObject,
    status: ScalableWorkloadStatus,
    ready: Omit<ConditionUpdate, "type">,
    requeueMs?: number,
  ): Promise<ReconcileResult> {
    const generation = sw.metadata?.generation;
    const old = sw.status ?? {};
    const conditions = setCondition(old.conditions, { type: "Ready", ...ready }, generation);
    const next = { ...status, observedGeneration: generation, conditions };
    const same =
      sameConditions(old.conditions, conditions) &&
      old.observedGeneration === generation &&
      old.replicas === next.replicas &&
      old.readyReplicas === next.readyReplicas &&
      old.selector === next.selector &&
      old.workload === next.workload;
    if (!same) {
      const before = findCondition(old.conditions, "Ready");
      if (ready.status === "False" && (before?.status !== "False" || before.reason !== ready.reason)) {
        this.opts.events.record(eventSubject(sw), "Warning", ready.reason, ready.message);
      }
      try {
        await this.opts.client.mergePatch(
          `${SW_PATH.replace("/scalableworkloads", "")}/namespaces/${sw.metadata?.namespace}/scalableworkloads/${sw.metadata?.name}/status`,
          { status: next },
        );
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 404)) throw err;
      }
    }
    return requeueMs !== undefined ? { requeueAfterMs: requeueMs } : {};
  }
}
