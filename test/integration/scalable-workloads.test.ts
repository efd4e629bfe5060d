import { expect } from "chai";
import { pino } from "pino";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { DEFAULT_CONTROLLER } from "../../src/autoscaling/sync.js";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import {
  applyYaml,
  freshNamespace,
  installCrds,
  kubectl,
  type TestCluster,
  useCluster,
  LOOPBACK_SOURCES,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { freePort } from "../support/ports.js";

interface Sw {
  metadata: { uid: string };
  spec: { replicas: number };
  status?: {
    replicas?: number;
    readyReplicas?: number;
    selector?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}
interface Dep {
  metadata: { ownerReferences?: { kind: string; name: string; uid: string }[] };
  spec: { replicas: number };
  status?: { readyReplicas?: number };
}

const SVC = "governor-sw";

describe("ScalableWorkloads (integration)", function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let operator: RunningOperator;
  let kubelet: StandInKubelet;
  const apply = (yaml: string) => applyYaml(cluster, ns.name, yaml);
  const sw = (name: string) =>
    cluster.client.get<Sw>(`/apis/governor.dev/v1alpha1/namespaces/${ns.name}/scalableworkloads/${name}`);
  const dep = (name: string) =>
    cluster.client.get<Dep>(`/apis/apps/v1/namespaces/${ns.name}/deployments/${name}`);

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await installCrds(cluster);
    ns = await freshNamespace(cluster, "workloads");
    kubelet = startStandInKubelet(cluster.client, { namespace: ns.name });
    const port = await freePort();
    operator = await startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: ns.name,
      registration: { mode: "local", serviceName: SVC, port },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: true,
      leaseName: `governor-test-${ns.name}`,
      shutdownDelayMs: 0,
      // Recommendations at the local control plane's HPA period (hack/cluster.sh).
      hpa: { syncPeriodMs: 2_000, controller: DEFAULT_CONTROLLER },
    });
    await eventually(() => expect(operator.isLeader()).to.equal(true), {
      timeoutMs: 10_000,
      what: "leader elected",
    });
  });

  after(async () => {
    await operator?.stop();
    await operator?.registration?.uninstall();
    await kubelet?.stop();
    await ns?.delete();
  });

  it("owns a Deployment built from its template and reports replicas, ready replicas and selector", async () => {
    apply(`apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: worker}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {containers: [{name: worker, image: example.invalid/worker:1}]}
`);
    await eventually(
      async () => {
        const s = await sw("worker");
        const d = await dep("worker");
        expect(d.metadata.ownerReferences?.[0]).to.include({
          kind: "ScalableWorkload",
          name: "worker",
          uid: s.metadata.uid,
        });
        expect(s.status).to.include({ replicas: 2, readyReplicas: 2, selector: "app=worker" });
        expect(s.status?.conditions?.find((c) => c.type === "Ready")?.status).to.equal("True");
      },
      { timeoutMs: 30_000, what: "worker ready" },
    );
  });

  it("carries kubectl scale through the /scale subresource onto the Deployment and its status", async () => {
    await kubectl(cluster, "scale", "-n", ns.name, "sw/worker", "--replicas=4");
    await eventually(
      async () => {
        expect((await dep("worker")).spec.replicas).to.equal(4);
        const s = await sw("worker");
        expect(s.status).to.include({ replicas: 4, readyReplicas: 4 });
      },
      { timeoutMs: 30_000, what: "scaled to 4" },
    );
    const scale = JSON.parse(
      await kubectl(
        cluster,
        "get",
        "--raw",
        `/apis/governor.dev/v1alpha1/namespaces/${ns.name}/scalableworkloads/worker/scale`,
      ),
    );
    expect(scale.status).to.deep.include({ replicas: 4, selector: "app=worker" });
    const events = await kubectl(
      cluster,
      "get",
      "events",
      "-n",
      ns.name,
      "--field-selector",
      "involvedObject.name=worker,reason=Scaled",
      "-o",
      "jsonpath={.items[*].message}",
    );
    expect(events).to.contain("from 2 to 4");
  });

  it("drives an existing Deployment named by workloadRef", async () => {
    await cluster.client.create(`/apis/apps/v1/namespaces/${ns.name}/deployments`, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "db" },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: "db" } },
        template: {
          metadata: { labels: { app: "db" } },
          spec: { containers: [{ name: "db", image: "example.invalid/db" }] },
        },
      },
    });
    apply(`apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: db}
spec:
  replicas: 3
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: db}
`);
    await eventually(
      async () => {
        expect((await dep("db")).spec.replicas).to.equal(3);
        expect((await sw("db")).status).to.include({ replicas: 3, readyReplicas: 3, selector: "app=db" });
      },
      { timeoutMs: 30_000, what: "db at 3" },
    );
  });

  it("writes an HPA for spec.autoscaling that the real HPA controller uses to scale it", async () => {
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec:
  metric: load_per_pod
  subject: {resource: pods}
  source: {static: {value: "2"}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: scaled}
spec:
  replicas: 1
  selector: {matchLabels: {app: scaled}}
  template:
    metadata: {labels: {app: scaled}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
  autoscaling:
    minReplicas: 1
    maxReplicas: 3
    metrics: [{mapping: load, target: {averageValue: "1"}}]
`);
    const hpa = await eventually(
      async () => {
        const h = await cluster.client.get<{
          apiVersion: string;
          spec: { scaleTargetRef: unknown; metrics: unknown[] };
        }>(`/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/scaled`);
        return h;
      },
      { timeoutMs: 15_000, what: "HPA written" },
    );
    expect(hpa.spec.scaleTargetRef).to.deep.equal({
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      name: "scaled",
    });
    // 2 per pod against a target of 1 per pod: the HPA doubles the replicas, up to the maximum.
    await eventually(
      async () => {
        expect((await sw("scaled")).spec.replicas).to.equal(3);
        expect((await dep("scaled")).spec.replicas).to.equal(3);
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: "HPA scaled the ScalableWorkload to 3" },
    );
    // What the HPA itself says is on the ScalableWorkload, and kubectl get shows it.
    await eventually(
      async () => {
        const autoscaling = (await sw("scaled")).status?.conditions?.find((c) => c.type === "Autoscaling");
        expect(autoscaling).to.include({ status: "True", reason: "ValidMetricFound" });
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "Autoscaling condition from the HPA" },
    );
    await eventually(
      async () => {
        const table = await kubectl(cluster, "get", "sw", "scaled", "-n", ns.name);
        expect(table.split("\n")[0]).to.match(
          /^NAME\s+MODE\s+WORKLOAD\s+DESIRED\s+CURRENT\s+READY\s+RECOMMENDED\s+STATUS\s+ACTIVE\s+AUTOSCALING\s+AGE$/,
        );
        // RECOMMENDED: what the HPA's algorithm chooses from Governor's values, as the HPA did.
        expect(table.split("\n")[1]).to.match(
          /^scaled\s+Owned\s+Deployment\/scaled\s+3\s+3\s+3\s+3\s+Reconciled\s+ValidMetricFound\s/,
        );
      },
      { timeoutMs: 30_000, intervalMs: 1000, what: "kubectl get sw with the recommendation" },
    );
  });

  it("keeps an HPA metric only while its MetricMapping can serve, and says which one cannot", async () => {
    const hpaMetrics = async () =>
      (
        await cluster.client.getOrUndefined<{ spec: { metrics: { pods?: { metric: { name: string } } }[] } }>(
          `/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/mixed`,
        )
      )?.spec.metrics.map((m) => m.pods?.metric.name);
    const ready = async () => (await sw("mixed")).status?.conditions?.find((c) => c.type === "Ready");
    /** Mapping `usable` on pods, and `unusable` on `resource`. */
    const mappings = (resource: string) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: usable}
spec: {metric: usable_load, subject: {resource: pods}, source: {static: {value: "1"}}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: unusable}
spec: {metric: unusable_load, subject: {resource: ${resource}}, source: {static: {value: "1"}}}
`;
    apply(`${mappings("nosuchthings.example.com")}---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: mixed}
spec:
  selector: {matchLabels: {app: mixed}}
  template:
    metadata: {labels: {app: mixed}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
  autoscaling:
    maxReplicas: 2
    metrics:
      - {mapping: usable, target: {averageValue: "1"}}
      - {mapping: unusable, target: {averageValue: "1"}}
`);
    await eventually(
      async () => {
        expect(await ready()).to.include({ status: "False", reason: "MappingInvalid" });
        expect((await ready())?.message).to.match(
          /MetricMapping unusable cannot serve \(UnknownResource: .*\); the HorizontalPodAutoscaler scales on the other 1 metric\(s\)/,
        );
        expect(await hpaMetrics()).to.deep.equal(["usable_load"]);
      },
      { timeoutMs: 30_000, what: "only the usable metric in the HPA" },
    );

    // The last usable mapping deleted: no HPA is kept (it could only fail), and status says so.
    await kubectl(cluster, "delete", "mm", "usable", "-n", ns.name);
    await eventually(
      async () => {
        expect(await ready()).to.include({ status: "False", reason: "MappingNotFound" });
        const autoscaling = (await sw("mixed")).status?.conditions?.find((c) => c.type === "Autoscaling");
        expect(autoscaling).to.include({ status: "False", reason: "NoUsableMetric" });
        expect(await hpaMetrics()).to.equal(undefined);
      },
      { timeoutMs: 30_000, what: "HPA removed with its last usable metric" },
    );

    // Both mended: the HPA comes back with both metrics, and the ScalableWorkload is Ready.
    apply(mappings("pods"));
    await eventually(
      async () => {
        expect(await ready()).to.include({ status: "True", reason: "Reconciled" });
        expect(await hpaMetrics()).to.deep.equal(["usable_load", "unusable_load"]);
      },
      { timeoutMs: 30_000, what: "HPA with both metrics again" },
    );
  });

  it("reports a selector that does not select its own template", async () => {
    apply(`apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: [{name: app, image: x}]}
`);
    await eventually(async () => {
      const ready = (await sw("broken")).status?.conditions?.find((c) => c.type === "Ready");
      expect(ready).to.include({ status: "False", reason: "InvalidSelector" });
    });
  });

  it("never takes over another team's HPA of the same name, and says so in its status", async () => {
    apply(`apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: shared-name}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: someone-elses}
  minReplicas: 2
  maxReplicas: 9
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load-shared}
spec: {metric: load_shared, subject: {resource: pods}, source: {static: {value: "2"}}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: shared-name}
spec:
  selector: {matchLabels: {app: shared-name}}
  template:
    metadata: {labels: {app: shared-name}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
  autoscaling: {maxReplicas: 3, metrics: [{mapping: load-shared, target: {averageValue: "1"}}]}
`);
    await eventually(async () => {
      const ready = (await sw("shared-name")).status?.conditions?.find((c) => c.type === "Ready");
      expect(ready).to.include({ status: "False", reason: "HorizontalPodAutoscalerExists" });
      expect(ready?.message).to.match(/not owned by this ScalableWorkload; Governor leaves it alone/);
    });
    const hpa = await cluster.client.get<{
      metadata: { ownerReferences?: unknown[]; managedFields?: { manager: string }[] };
      spec: { scaleTargetRef: { name: string }; maxReplicas: number };
    }>(`/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/shared-name`);
    expect(hpa.metadata.ownerReferences).to.equal(undefined);
    expect(hpa.spec.scaleTargetRef.name).to.equal("someone-elses");
    expect(hpa.spec.maxReplicas).to.equal(9);
    expect(hpa.metadata.managedFields?.map((f) => f.manager)).to.not.include("governor");
  });

  it("garbage-collects its Deployment and HPA when deleted", async () => {
    await kubectl(cluster, "delete", "sw", "-n", ns.name, "scaled");
    await eventually(
      async () => {
        expect(
          await cluster.client.getOrUndefined(`/apis/apps/v1/namespaces/${ns.name}/deployments/scaled`),
        ).to.equal(undefined);
        expect(
          await cluster.client.getOrUndefined(
            `/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/scaled`,
          ),
        ).to.equal(undefined);
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "owned objects deleted" },
    );
  });
});
