/**
 * `governor explain`, as a user runs it from a checkout (`npx governor explain …` is the
 * same program): with everything in place every link of the HPA's chain holds, and with
 * each link broken in turn — the HPA's RBAC, a scale target without pods or missing, a
 * MetricMapping that cannot sample, a deleted MetricMapping, Governor stopped — exactly
 * that link is reported broken, with its fix, and the command exits 1.
 */
import { expect } from "chai";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import { applyYaml, freshNamespace, kubectl, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { governorCli } from "../support/governor-cli.js";
import { GovernorProcess } from "../support/governor-process.js";

const METRIC = "explain_load";

describe("governor explain follows the HPA's chain and names the broken link (e2e)", function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let kubelet: StandInKubelet;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  const explain = (...args: string[]) => governorCli(cluster, "explain", ...args);
  const failures = (out: string) => out.split("\n").filter((l) => l.startsWith("  ✗"));

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster);
    await governor.start();
    ns = await freshNamespace(cluster, "explain");
    kubelet = startStandInKubelet(cluster.client, { namespace: ns.name });
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec: {metric: ${METRIC}, subject: {resource: pods}, interval: 2s, staleAfter: 10s, source: {static: {value: "2"}}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
  autoscaling:
    maxReplicas: 2
    metrics: [{mapping: load, target: {averageValue: "10"}}]
`,
    );
    await eventually(
      async () => {
        const sw = await cluster.client.get<{ status?: { conditions?: { type: string; reason: string }[] } }>(
          `/apis/governor.dev/v1alpha1/namespaces/${ns.name}/scalableworkloads/web`,
        );
        expect(sw.status?.conditions?.find((c) => c.type === "Autoscaling")?.reason).to.equal(
          "ValidMetricFound",
        );
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: "the HPA reads the metric" },
    );
  });
  after(async () => {
    await governor?.stop();
    await kubelet?.stop();
    await ns?.delete();
  });

  it("with everything in place, every link holds for hpa/, sw/ and mm/, and it exits 0", () => {
    const hpa = explain(`hpa/web`, "-n", ns.name);
    expect(hpa.code, hpa.out + hpa.err).to.equal(0);
    expect(failures(hpa.out)).to.deep.equal([]);
    for (const line of [
      /✓ its \/scale selector \(app=web\) matches 1 pod\(s\), 1 Ready/,
      /✓ APIService v1beta2\.custom\.metrics\.k8s\.io is Available and points at Governor \(governor-system\/governor\)/,
      new RegExp(`✓ discovery lists pods/${METRIC}`),
      /✓ MetricMapping load serves it \(Ready: Serving\)/,
      /✓ the metrics API answers 1 value\(s\): web-[a-z0-9-]+=2, sampled \d+ s ago/,
      new RegExp(
        `✓ the HPA controller \\(system:serviceaccount:kube-system:horizontal-pod-autoscaler\\) may get pods/${METRIC} in custom\\.metrics\\.k8s\\.io`,
      ),
      /✓ ScalingActive=True \(ValidMetricFound\)/,
    ])
      expect(hpa.out).to.match(line);
    const sw = explain(`sw/web`, "-n", ns.name);
    expect(sw.code, sw.out).to.equal(0);
    expect(sw.out).to.match(/✓ Ready \(Reconciled\)/);
    const mm = explain(`mm/load`, "-n", ns.name);
    expect(mm.code, mm.out).to.equal(0);
    expect(mm.out).to.match(/✓ MetricMapping load serves it/);
  });

  it("says when the HPA controller may not read the metric, and which grant fixes it", () => {
    const r = explain(`hpa/web`, "-n", ns.name, "--hpa-user", `system:serviceaccount:${ns.name}:nobody`);
    expect(r.code).to.equal(1);
    expect(failures(r.out)).to.have.length(1);
    expect(r.out).to.match(new RegExp(`✗ the HPA controller .* may not get pods/${METRIC}`));
    expect(r.out).to.contain("fix: bind it to a ClusterRole that may get and list custom.metrics.k8s.io");
  });

  it("says when the scale target matches no pods, or does not exist", async () => {
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: apps/v1
kind: Deployment
metadata: {name: idle}
spec:
  replicas: 0
  selector: {matchLabels: {app: idle}}
  template:
    metadata: {labels: {app: idle}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: idle}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}
  maxReplicas: 2
  metrics: [{type: Pods, pods: {metric: {name: ${METRIC}}, target: {type: AverageValue, averageValue: "10"}}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ghost}
spec:
  scaleTargetRef: {apiVersion: governor.dev/v1alpha1, kind: ScalableWorkload, name: ghost}
  maxReplicas: 2
  metrics: [{type: Pods, pods: {metric: {name: ${METRIC}}, target: {type: AverageValue, averageValue: "10"}}}]
`,
    );
    await eventually(async () => {
      const r = explain(`hpa/idle`, "-n", ns.name);
      expect(r.code).to.equal(1);
      expect(failures(r.out).join("\n")).to.match(/✗ its \/scale selector \(app=idle\) matches no pods/);
    });
    const ghost = explain(`hpa/ghost`, "-n", ns.name);
    expect(ghost.code).to.equal(1);
    expect(ghost.out).to.match(/✗ its \/scale subresource cannot be read/);
    expect(ghost.out).to.contain(`fix: ScalableWorkload ghost does not exist in ${ns.name}`);
  });

  it("says when the MetricMapping cannot sample its source, and that the API answers 503", async () => {
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec:
  metric: ${METRIC}
  subject: {resource: pods}
  interval: 2s
  staleAfter: 10s
  source: {http: {url: "http://127.0.0.1:9/depth", jsonPath: "$.depth", timeout: 1s}}
`,
    );
    await eventually(
      () => {
        const r = explain(`hpa/web`, "-n", ns.name);
        expect(r.code).to.equal(1);
        const broken = failures(r.out).join("\n");
        expect(broken).to.match(/✗ MetricMapping load is not Ready \(NoValue\)/);
        expect(broken).to.match(/✗ the metrics API answers 503/);
        expect(r.out).to.match(
          /fix: its source fails \(the last sample failed: GET http:\/\/127\.0\.0\.1:9\/depth: connection refused/,
        );
      },
      { timeoutMs: 30_000, intervalMs: 1000, what: "explain reports the failing source" },
    );
  });

  it("says when no MetricMapping serves the metric", async () => {
    await kubectl(cluster, "delete", "mm", "load", "-n", ns.name);
    // (Governor drops the HPA it wrote for sw/web with its last usable metric; hpa/idle is
    // someone's own HPA on the same metric.)
    await eventually(
      () => {
        const r = explain(`hpa/idle`, "-n", ns.name);
        expect(r.code).to.equal(1);
        const broken = failures(r.out).join("\n");
        expect(broken).to.contain(`✗ no MetricMapping in ${ns.name} has metric ${METRIC} for pods`);
        expect(broken).to.contain(`✗ discovery does not list pods/${METRIC}`);
      },
      { timeoutMs: 30_000, intervalMs: 1000, what: "explain reports the missing mapping" },
    );
  });

  it("says when the APIService is not Available because Governor is not running", async () => {
    await governor.terminate();
    await eventually(
      () => {
        const r = explain(`hpa/idle`, "-n", ns.name);
        expect(r.code).to.equal(1);
        expect(failures(r.out).join("\n")).to.match(
          /✗ APIService v1beta2\.custom\.metrics\.k8s\.io is not Available/,
        );
        expect(r.out).to.contain("fix: the aggregator cannot reach Governor");
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "explain reports the unavailable APIService" },
    );
  });
});
