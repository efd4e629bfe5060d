import { expect } from "chai";
import { pino } from "pino";
import type { Condition } from "../api/common.js";
import type { KubeObject } from "../k8s/client.js";
import { eventually as poll } from "../../test/support/eventually.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { EventRecorder } from "./events.js";
import type { MappingView } from "./hpa.js";
import { InformerCache } from "../k8s/informer-cache.js";
import { ScalableWorkloadReconciler } from "./scalable-workload-reconciler.js";

const NS = "shop";
const SWS = `/apis/governor.dev/v1alpha1/namespaces/${NS}/scalableworkloads`;
const DEPLOYMENTS = `/apis/apps/v1/namespaces/${NS}/deployments`;
const HPAS = `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers`;

interface Stored extends KubeObject {
  spec?: { replicas?: number; [k: string]: unknown };
  status?: { conditions?: Condition[]; mode?: string; selector?: string; workload?: string };
}

/** A ScalableWorkload reconciler on an in-memory apiserver; `mappings` are the MetricMappings it can see. */
function setUp(mappings: Record<string, MappingView> = {}) {
  const kube = new FakeKube();
  const cache = new InformerCache(kube, pino({ level: "silent" }));
  const reconciler = new ScalableWorkloadReconciler({
    client: kube,
    cache,
    events: new EventRecorder(kube, "governor", pino({ level: "silent" })),
    logger: pino({ level: "silent" }),
    getMapping: (_ns, name) => mappings[name],
  });
  reconciler.start();
  const sw = (name: string, spec: Record<string, unknown>) =>
    kube.seed(`${SWS}/${name}`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      metadata: { name, namespace: NS },
      spec,
    });
  const peek = (path: string) => kube.peek<Stored>(path);
  const condition = (name: string, type = "Ready") =>
    peek(`${SWS}/${name}`)?.status?.conditions?.find((c) => c.type === type);
  const events = () =>
    kube
      .paths(`/api/v1/namespaces/${NS}/events/`)
      .map((p) => kube.peek<{ reason: string; message: string }>(p)!);
  return {
    cache,
    kube,
    reconciler,
    sw,
    peek,
    condition,
    events,
  };
}

const template = {
  metadata: { labels: { app: "web" } },
  spec: { containers: [{ name: "web", image: "example.invalid/web:1" }] },
};
const owned = (replicas: number, extra: Record<string, unknown> = {}) => ({
  replicas,
  selector: { matchLabels: { app: "web" } },
  template,
  ...extra,
});

/** Polls `check` every few ms, 2 s at most, until it stops throwing. */
const eventually = (check: () => void) => poll(check, { timeoutMs: 2000, intervalMs: 5 });

const quiet = () => new Promise((r) => setTimeout(r, 50));

describe("ScalableWorkload reconciler (on an in-memory apiserver)", () => {
  let t: ReturnType<typeof setUp>;
  afterEach(async () => {
    await t?.reconciler.stop();
    await t?.cache.stop();
  });

  it("creates a Deployment it owns from the template, with the ScalableWorkload's replicas", async () => {
    t = setUp();
    t.sw("web", owned(3));
    await eventually(() => expect(t.condition("web")).to.include({ status: "True", reason: "Reconciled" }));
    const d = t.peek(`${DEPLOYMENTS}/web`)!;
    expect(d.spec?.replicas).to.equal(3);
    const sw = t.peek(`${SWS}/web`)!;
    expect(d.metadata?.ownerReferences).to.deep.include({
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      name: "web",
      uid: sw.metadata?.uid,
      controller: true,
      blockOwnerDeletion: true,
    });
    expect(sw.status).to.include({ mode: "Owned", selector: "app=web", workload: "Deployment/web" });
  });

  it("carries a new replica count (kubectl scale, the HPA) onto its Deployment and records it", async () => {
    t = setUp();
    t.sw("web", owned(2));
    await eventually(() => expect(t.peek(`${DEPLOYMENTS}/web`)?.spec?.replicas).to.equal(2));
    await t.kube.mergePatch(`${SWS}/web/scale`, { spec: { replicas: 5 } });
    await eventually(() => expect(t.peek(`${DEPLOYMENTS}/web`)?.spec?.replicas).to.equal(5));
    await eventually(() =>
      expect(t.events().map((e) => e.message)).to.include("scaled Deployment web from 2 to 5 replicas"),
    );
  });

  it("leaves a Deployment of the same name that it does not own alone, and says so", async () => {
    t = setUp();
    t.kube.seed(`${DEPLOYMENTS}/web`, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: NS },
      spec: { replicas: 7, selector: { matchLabels: { app: "theirs" } } },
    });
    t.sw("web", owned(1));
    await eventually(() =>
      expect(t.condition("web")).to.include({ status: "False", reason: "DeploymentExists" }),
    );
    expect(t.peek(`${DEPLOYMENTS}/web`)?.spec?.replicas).to.equal(7);
    expect(
      t.kube.calls.filter((c) => c.path.startsWith(`${DEPLOYMENTS}/web`) && c.method !== "get"),
    ).to.deep.equal([]);
  });

  it("drives a referenced Deployment through /scale once it exists, and reports WorkloadNotFound until then", async () => {
    t = setUp();
    t.sw("api", { replicas: 4, workloadRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" } });
    await eventually(() =>
      expect(t.condition("api")).to.include({ status: "False", reason: "WorkloadNotFound" }),
    );
    t.kube.seed(`${DEPLOYMENTS}/api`, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "api", namespace: NS },
      spec: { replicas: 1, selector: { matchLabels: { app: "api" } } },
      status: { replicas: 1, readyReplicas: 1 },
    });
    // The Deployment's appearance alone brings the ScalableWorkload back (no 30 s retry).
    await eventually(() => expect(t.peek(`${DEPLOYMENTS}/api`)?.spec?.replicas).to.equal(4));
    await eventually(() => expect(t.condition("api")?.reason).to.equal("Reconciled"));
    expect(t.peek(`${SWS}/api`)?.status).to.include({ mode: "Reference", selector: "app=api" });
    expect(t.kube.calls.map((c) => c.path)).to.include(`${DEPLOYMENTS}/api/scale`);
  });

  it("never takes over another team's HPA of the same name", async () => {
    t = setUp({
      requests: {
        spec: { metric: "requests", subject: { resource: "pods" }, source: { static: { value: "1" } } },
      },
    });
    const theirs = {
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: { name: "web", namespace: NS },
      spec: { maxReplicas: 3, scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "theirs" } },
    };
    t.kube.seed(`${HPAS}/web`, theirs);
    t.sw(
      "web",
      owned(1, {
        autoscaling: { maxReplicas: 10, metrics: [{ mapping: "requests", target: { averageValue: "10" } }] },
      }),
    );
    await eventually(() =>
      expect(t.condition("web")).to.include({ status: "False", reason: "HorizontalPodAutoscalerExists" }),
    );
    expect(t.peek(`${HPAS}/web`)?.spec).to.deep.equal(theirs.spec);
  });

  it("writes an HPA for the metrics whose mappings can serve, and deletes it when autoscaling is dropped", async () => {
    t = setUp({
      requests: {
        spec: {
          metric: "requests_per_second",
          subject: { resource: "pods" },
          source: { static: { value: "1" } },
        },
      },
      broken: { spec: {}, problem: { reason: "InvalidSource", message: "no source" } },
    });
    const autoscaling = {
      maxReplicas: 10,
      metrics: [
        { mapping: "requests", target: { averageValue: "10" } },
        { mapping: "broken", target: { averageValue: "1" } },
      ],
    };
    t.sw("web", owned(1, { autoscaling }));
    await eventually(() => expect(t.peek(`${HPAS}/web`)).to.not.equal(undefined));
    const hpa = t.peek(`${HPAS}/web`)!;
    expect(hpa.spec?.scaleTargetRef).to.deep.equal({
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      name: "web",
    });
    const metrics = hpa.spec?.metrics as { pods?: { metric: { name: string } } }[];
    expect(metrics.map((m) => m.pods?.metric.name)).to.deep.equal(["requests_per_second"]);

    t.sw("web", owned(1));
    await eventually(() => expect(t.peek(`${HPAS}/web`)).to.equal(undefined));
  });

  it("in mode Shadow leaves the live autoscaler alone: the Deployment's replicas, its HPA of the same name; and keeps no HPA of its own", async () => {
    t = setUp({
      requests: {
        spec: { metric: "requests", subject: { resource: "pods" }, source: { static: { value: "1" } } },
      },
    });
    const theirs = {
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: { name: "api", namespace: NS },
      spec: { maxReplicas: 9, scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" } },
    };
    t.kube.seed(`${HPAS}/api`, theirs);
    t.kube.seed(`${DEPLOYMENTS}/api`, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "api", namespace: NS },
      spec: { replicas: 5, selector: { matchLabels: { app: "api" } } },
      status: { replicas: 5, readyReplicas: 5 },
    });
    const autoscaling = {
      mode: "Shadow",
      maxReplicas: 10,
      metrics: [{ mapping: "requests", target: { averageValue: "10" } }],
    };
    t.sw("api", {
      replicas: 1,
      workloadRef: { apiVersion: "apps/v1", kind: "Deployment", name: "api" },
      autoscaling,
    });
    await eventually(() =>
      expect(t.condition("api", "Autoscaling")).to.include({ status: "True", reason: "Shadow" }),
    );
    expect(t.condition("api")).to.include({ status: "True", reason: "Reconciled" });
    expect(t.peek(`${SWS}/api`)?.status).to.include({
      replicas: 5,
      selector: "app=api",
      workload: "Deployment/api",
    });
    await quiet();
    expect(t.peek(`${DEPLOYMENTS}/api`)?.spec?.replicas).to.equal(5);
    expect(t.peek(`${HPAS}/api`)?.spec).to.deep.equal(theirs.spec);
    expect(
      t.kube.calls.filter((c) => c.method !== "get" && c.path.startsWith(`${DEPLOYMENTS}/api`)),
    ).to.deep.equal([]);
  });

  it("deletes the HPA it wrote when mode Scale becomes Shadow", async () => {
    t = setUp({
      requests: {
        spec: { metric: "requests", subject: { resource: "pods" }, source: { static: { value: "1" } } },
      },
    });
    const autoscaling = {
      maxReplicas: 10,
      metrics: [{ mapping: "requests", target: { averageValue: "10" } }],
    };
    t.sw("web", owned(2, { autoscaling }));
    await eventually(() => expect(t.peek(`${HPAS}/web`)).to.not.equal(undefined));
    t.sw("web", owned(2, { autoscaling: { ...autoscaling, mode: "Shadow" } }));
    await eventually(() => expect(t.peek(`${HPAS}/web`)).to.equal(undefined));
    expect(t.peek(`${DEPLOYMENTS}/web`)?.spec?.replicas).to.equal(2);
  });

  it("says what is wrong with a spec the schema let through, and creates nothing", async () => {
    t = setUp();
    t.sw("web", { replicas: 1, template });
    await eventually(() => expect(t.condition("web")).to.include({ status: "False", reason: "InvalidSpec" }));
    expect(t.condition("web")?.message).to.match(/selector/);
    await quiet();
    expect(t.kube.paths(DEPLOYMENTS)).to.deep.equal([]);
  });
});
