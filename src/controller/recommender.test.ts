import { expect } from "chai";
import { pino } from "pino";
import type { KubeObject } from "../k8s/client.js";
import { InformerCache } from "../k8s/informer-cache.js";
import type { PodIndex, PodInfo } from "../k8s/pod-index.js";
import {
  type CustomMetricValue,
  type ExternalMetricValue,
  type MetricsProvider,
  MetricUnavailableError,
} from "../metrics/provider.js";
import { untilCancelled } from "../util/deadline.js";
import { FakeClock } from "../../test/support/fake-clock.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { EventRecorder } from "./events.js";
import type { MappingView } from "./hpa.js";
import { Recommender } from "./recommender.js";

const NS = "shop";
const SW = `/apis/governor.dev/v1alpha1/namespaces/${NS}/scalableworkloads/web`;
const DEPLOYMENT = `/apis/apps/v1/namespaces/${NS}/deployments/web`;
const SYNC_MS = 15_000;

const mappingSpec = (subject: object, metric: string) => ({
  metric,
  subject,
  source: { static: { value: "1" } },
});
const MAPPINGS: Record<string, MappingView> = {
  queue: { spec: mappingSpec({ external: {} }, "queue_depth") },
  rps: { spec: mappingSpec({ resource: "pods" }, "rps") },
  "ns-load": { spec: mappingSpec({ resource: "namespaces" }, "ns_load") },
};

interface Recommended {
  replicas: number;
  metric?: string;
  reason: string;
  message?: string;
  time: string;
}

/** A recommender over an in-memory apiserver, a provider answering `values`, and `pods`. */
function setUp() {
  const clock = new FakeClock();
  const kube = new FakeKube();
  const log = pino({ level: "silent" });
  const cache = new InformerCache(kube, log);
  /** A value, an error, or `"hang"`: a source that never answers. */
  const values: { queue_depth?: string | Error; rps?: Record<string, string> } = {};
  const at = clock.now();
  const askedByName: string[] = [];
  const provider: MetricsProvider = {
    listCustomMetrics: () => [],
    listExternalMetrics: () => [],
    getMetricByName: async (req) => {
      askedByName.push(`${req.groupResource.resource}/${req.name}`);
      return {
        describedObject: { kind: "Namespace", apiVersion: "v1", name: req.name },
        metric: req.metric,
        timestamp: at,
        value: "73",
      };
    },
    getMetricBySelector: async (req) =>
      Object.entries(values.rps ?? {}).map(([name, value]): CustomMetricValue => ({
        describedObject: { kind: "Pod", apiVersion: "v1", namespace: req.namespace, name },
        metric: req.metric,
        timestamp: at,
        value,
      })),
    getExternalMetric: async (req): Promise<ExternalMetricValue[]> => {
      const v = values.queue_depth;
      if (v instanceof Error) throw v;
      // A source that never answers: the provider waits for its first sample until cancelled.
      if (v === "hang") return untilCancelled(new Promise<never>(() => {}), req.cancel);
      return v === undefined ? [] : [{ metric: req.metric, labels: {}, timestamp: at, value: v }];
    },
  };
  let pods: PodInfo[] = [];
  const podIndex: PodIndex = { list: () => pods, get: () => undefined, version: () => 0 };
  const recommender = new Recommender({
    client: kube,
    cache,
    events: new EventRecorder(kube, "governor", log),
    logger: log,
    getMapping: (_ns, name) => MAPPINGS[name],
    provider,
    pods: podIndex,
    clock,
    periodMs: SYNC_MS,
  });
  const deployment = (replicas: number) =>
    kube.seed(DEPLOYMENT, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: NS },
      spec: { replicas, selector: { matchLabels: { app: "web" } } },
      status: { replicas },
    });
  /** A ScalableWorkload as its reconciler leaves it: its workload resolved in status. */
  const sw = (autoscaling: Record<string, unknown>, replicas = 2) =>
    kube.seed(SW, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      metadata: { name: "web", namespace: NS, uid: "u1" },
      spec: {
        replicas,
        workloadRef: { apiVersion: "apps/v1", kind: "Deployment", name: "web" },
        autoscaling: { minReplicas: 1, maxReplicas: 10, ...autoscaling },
      },
      status: {
        replicas,
        selector: "app=web",
        workload: "Deployment/web",
        ...(kube.peek<{ status?: object }>(SW)?.status ?? {}),
      },
    });
  /** One sync, then the clock moves on a period (the informers see the writes first). */
  const sync = async () => {
    await new Promise((r) => setTimeout(r, 5));
    await recommender.syncAll();
    await clock.advance(SYNC_MS);
  };
  const recommendation = () =>
    kube.peek<{ status?: { recommendation?: Recommended } }>(SW)?.status?.recommendation;
  const events = () =>
    kube
      .paths(`/api/v1/namespaces/${NS}/events/`)
      .map((p) => kube.peek<{ reason: string; message: string }>(p)!)
      .filter((e) => e.reason === "Recommended");
  const statusWrites = () => kube.calls.filter((c) => c.path === `${SW}/status`).length;
  return {
    clock,
    kube,
    cache,
    recommender,
    values,
    setPods: (p: PodInfo[]) => (pods = p),
    deployment,
    sw,
    sync,
    recommendation,
    events,
    statusWrites,
    askedByName,
  };
}

const pod = (name: string): PodInfo => ({
  name,
  namespace: NS,
  labels: { app: "web" },
  ready: true,
  terminating: false,
  phase: "Running",
  hostNetwork: false,
});

const queueShadow = (extra: Record<string, unknown> = {}) => ({
  mode: "Shadow",
  metrics: [{ mapping: "queue", target: { averageValue: "10" } }],
  ...extra,
});

describe("ScalableWorkload recommendations (the HPA's algorithm on Governor's own values)", () => {
  let t: ReturnType<typeof setUp>;
  afterEach(async () => {
    await t?.recommender.stop();
    await t?.cache.stop();
  });

  it("a Shadow workload recommends what the HPA would choose from the live workload's replicas, and says so in an Event", async () => {
    t = setUp();
    t.deployment(4); // the live autoscaler keeps 4
    t.sw(queueShadow(), 1); // spec.replicas is not what Shadow starts from
    t.values.queue_depth = "70";
    await t.sync();
    // External averageValue: ceil(70 / 10) = 7, from the Deployment's 4 (at most 2 × 4 at once).
    expect(t.recommendation()).to.include({ replicas: 7, metric: "queue", reason: "AboveTarget" });
    expect(t.events().map((e) => e.message)).to.deep.equal([
      "7 replica(s): AboveTarget (queue): queue is above its target",
    ]);
    expect([...t.recommender.current()]).to.deep.equal([{ namespace: NS, name: "web", replicas: 7 }]);
  });

  it("a scale-down waits out the stabilization window, as the HPA's does, and status is written only when the recommendation changes", async () => {
    t = setUp();
    t.deployment(5);
    t.sw(queueShadow(), 5);
    t.values.queue_depth = "50";
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 5, reason: "WithinTolerance" });
    const writes = t.statusWrites();
    t.values.queue_depth = "20"; // asks for 2
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 5, reason: "ScaleDownStabilized" });
    // 300 s of the default window: the 5 of the first sync holds until it is older than that
    // (at exactly 300 s it still counts, as in the controller).
    for (let i = 0; i < 19; i++) await t.sync();
    expect(t.recommendation()).to.include({ replicas: 5, reason: "ScaleDownStabilized" });
    expect(t.statusWrites()).to.equal(writes + 1);
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 2, reason: "BelowTarget" });
    expect(t.events().map((e) => e.message.split(":")[0])).to.deep.equal([
      "5 replica(s)",
      "2 replica(s) (was 5)",
    ]);
  });

  it("a scale-up policy counts the changes of the replicas it has seen, by whoever made them", async () => {
    t = setUp();
    const behavior = {
      scaleUp: { stabilizationWindowSeconds: 0, policies: [{ type: "Pods", value: 2, periodSeconds: 60 }] },
    };
    t.deployment(2);
    t.sw(queueShadow({ behavior }), 2);
    t.values.queue_depth = "100"; // asks for 10
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 4, reason: "ScaleUpLimit" });
    t.deployment(4); // the live autoscaler added 2
    await t.sync();
    // 2 added within the last 60 s: the policy allows 2 more than the start of the period.
    expect(t.recommendation()).to.include({ replicas: 4, reason: "ScaleUpLimit" });
    for (let i = 0; i < 4; i++) await t.sync();
    expect(t.recommendation()).to.include({ replicas: 6, reason: "ScaleUpLimit" });
  });

  it("a change of the replicas counts for behavior's policies from the moment it is seen, not from the next sync", async () => {
    t = setUp();
    const behavior = {
      scaleUp: { stabilizationWindowSeconds: 0, policies: [{ type: "Pods", value: 2, periodSeconds: 50 }] },
    };
    t.deployment(2);
    t.sw(queueShadow({ behavior }), 2);
    t.values.queue_depth = "100"; // asks for 10
    await new Promise((r) => setTimeout(r, 5));
    t.recommender.start();
    const advance = async (ms: number) => {
      await t.clock.advance(ms);
      await new Promise((r) => setTimeout(r, 20));
    };
    await advance(0); // the first pass, at 0 s
    expect(t.recommendation()).to.include({ replicas: 4, reason: "ScaleUpLimit" });
    await advance(1_000);
    t.deployment(4); // the live autoscaler adds 2 at 1 s, between two syncs
    await advance(59_000); // passes at 15, 30, 45 and 60 s
    // At 60 s the change of 1 s is out of the 50 s period: 2 more. Counted from the sync
    // at 15 s that would first see it, it would still hold the workload at 4.
    expect(t.recommendation()).to.include({ replicas: 6, reason: "ScaleUpLimit" });
  });

  it("a metric that cannot be read recommends no change and says why, as the HPA's ScalingActive does", async () => {
    t = setUp();
    t.deployment(3);
    t.sw(queueShadow(), 3);
    t.values.queue_depth = new MetricUnavailableError("the latest sample failed: connection refused");
    await t.sync();
    const r = t.recommendation();
    expect(r).to.include({ replicas: 3, reason: "FailedGetExternalMetric" });
    expect(r?.message).to.match(/unable to compute the replica count: .*connection refused/);
    expect(r).to.not.have.property("metric");
  });

  it("a metric whose source never answers holds the pass for a second, not forever", async () => {
    t = setUp();
    t.deployment(3);
    t.sw(queueShadow(), 3);
    t.values.queue_depth = "hang";
    await new Promise((r) => setTimeout(r, 5));
    const started = performance.now();
    await t.recommender.syncAll();
    expect(performance.now() - started).to.be.within(900, 3000);
    expect(t.recommendation()).to.include({ replicas: 3, reason: "FailedGetExternalMetric" });
  });

  it("a failing metric after a deciding one leaves no stale metric in status, and a steady failure writes nothing more", async () => {
    t = setUp();
    t.deployment(4);
    t.sw(queueShadow(), 4);
    t.values.queue_depth = "70";
    await t.sync();
    expect(t.recommendation()).to.include({ metric: "queue", reason: "AboveTarget" });
    t.values.queue_depth = new MetricUnavailableError("the latest sample failed: timeout");
    await t.sync();
    expect(t.recommendation()).to.include({ reason: "FailedGetExternalMetric" });
    expect(t.recommendation()).to.not.have.property("metric");
    const writes = t.statusWrites();
    for (let i = 0; i < 3; i++) await t.sync();
    expect(t.statusWrites()).to.equal(writes);
    expect(t.events()).to.have.length(2);
  });

  it("never reads another namespace's Namespace metric for a ScalableWorkload (the provider would serve it)", async () => {
    t = setUp();
    t.deployment(2);
    const object = { apiVersion: "v1", kind: "Namespace", name: "victim" };
    t.sw({ mode: "Shadow", metrics: [{ mapping: "ns-load", object, target: { value: "10" } }] }, 2);
    await t.sync();
    expect(t.askedByName).to.deep.equal([]);
    expect(t.recommendation()).to.include({ replicas: 2, reason: "FailedGetObjectMetric" });
    expect(t.recommendation()?.message).to.contain(`own namespace (${NS}) only`);
    t.sw(
      {
        mode: "Shadow",
        metrics: [{ mapping: "ns-load", object: { ...object, name: NS }, target: { value: "10" } }],
      },
      2,
    );
    await t.sync();
    expect(t.askedByName).to.deep.equal([`namespaces/${NS}`]);
  });

  it("a Pods metric is averaged over the workload's pods", async () => {
    t = setUp();
    t.deployment(2);
    t.sw({ mode: "Shadow", metrics: [{ mapping: "rps", target: { averageValue: "10" } }] }, 2);
    t.setPods([pod("a"), pod("b")]);
    t.values.rps = { a: "15", b: "15" };
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 3, metric: "rps", reason: "AboveTarget" });
  });

  it("a pod without a value damps a scale-down as the HPA's does: taken to use exactly the target", async () => {
    t = setUp();
    t.deployment(3);
    const behavior = { scaleDown: { stabilizationWindowSeconds: 0 } };
    t.sw({ mode: "Shadow", behavior, metrics: [{ mapping: "rps", target: { averageValue: "10" } }] }, 3);
    t.setPods([pod("a"), pod("b"), pod("c")]);
    t.values.rps = { a: "5", b: "5" }; // c has none yet
    await t.sync();
    // (5 + 5 + 10) / 3 against 10 → ceil(0.666 × 3) = 2; the two values alone would say 1.
    expect(t.recommendation()).to.include({ replicas: 2, metric: "rps", reason: "BelowTarget" });
  });

  it("drops the recommendation when spec.autoscaling goes, and forgets what it remembered", async () => {
    t = setUp();
    t.deployment(3);
    t.sw(queueShadow(), 3);
    t.values.queue_depth = "30";
    await t.sync();
    expect(t.recommendation()).to.include({ replicas: 3 });
    const stored = t.kube.peek<KubeObject & { spec: Record<string, unknown> }>(SW)!;
    delete stored.spec.autoscaling;
    t.kube.seed(SW, stored);
    await t.sync();
    expect(t.recommendation()).to.equal(undefined);
    expect([...t.recommender.current()]).to.deep.equal([]);
  });
});
