/**
 * `governor simulate`, as a user runs it from a checkout, against the real HPA controller of
 * the local control plane: what simulate says an HPA's next sync will choose when a metric
 * changes (`--set`) is what the controller chooses when the metric does change — for a
 * ScalableWorkload's HPA on a Pods metric, and for a plain HPA on a Deployment with an
 * External metric and a scale-up policy that limits it.
 */
import { expect } from "chai";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import { applyYaml, freshNamespace, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { governorCli } from "../support/governor-cli.js";
import { GovernorProcess } from "../support/governor-process.js";
import { deploymentYaml, externalAverage, hpaYaml } from "../support/workloads.js";

interface HpaStatus {
  status?: {
    desiredReplicas?: number;
    currentReplicas?: number;
    conditions?: { type: string; status: string; reason?: string }[];
  };
}

interface SimulationJson {
  specReplicas: number;
  metrics: { metric: string; current?: string; proposal?: number; whatIf?: boolean }[];
  next: { desiredReplicas: number; conditions: Record<string, { reason: string }> };
}

describe("governor simulate says what the HPA's next sync will choose (e2e, the real HPA controller)", function () {
  this.timeout(240_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let kubelet: StandInKubelet;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  const simulate = (...args: string[]) => governorCli(cluster, "simulate", ...args);
  const simulateJson = (...args: string[]): SimulationJson => {
    const r = simulate(...args, "-n", ns.name, "-o", "json");
    expect(r.code, r.out + r.err).to.equal(0);
    return JSON.parse(r.out) as SimulationJson;
  };
  const hpa = (name: string) =>
    cluster.client.get<HpaStatus>(
      `/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/${name}`,
    );
  /** Waits for the HPA's first desiredReplicas other than `from`, and returns it. */
  const nextDecision = async (name: string, from: number): Promise<number> => {
    let seen = from;
    await eventually(
      async () => {
        seen = (await hpa(name)).status?.desiredReplicas ?? from;
        expect(seen).to.not.equal(from);
      },
      { timeoutMs: 60_000, intervalMs: 100, what: `the HPA ${name} decides anew` },
    );
    return seen;
  };
  const settled = (name: string, replicas: number) =>
    eventually(
      async () => {
        const s = (await hpa(name)).status;
        expect(s?.currentReplicas).to.equal(replicas);
        expect(s?.desiredReplicas).to.equal(replicas);
        expect(s?.conditions?.find((c) => c.type === "ScalingActive")?.reason).to.equal("ValidMetricFound");
      },
      { timeoutMs: 90_000, intervalMs: 500, what: `the HPA ${name} settles at ${replicas}` },
    );

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster);
    await governor.start();
    ns = await freshNamespace(cluster, "simulate");
    kubelet = startStandInKubelet(cluster.client, { namespace: ns.name });
  });
  after(async () => {
    await governor?.stop();
    await kubelet?.stop();
    await ns?.delete();
  });

  it("a ScalableWorkload's Pods metric: --set before the change gives the replicas the HPA then chooses", async () => {
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec: {metric: sim_load, subject: {resource: pods}, interval: 1s, staleAfter: 10s, source: {static: {value: "2"}}}
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
    maxReplicas: 4
    metrics: [{mapping: load, target: {averageValue: "10"}}]
`,
    );
    await settled("web", 1);
    const now = simulate("sw/web", "-n", ns.name);
    expect(now.code, now.out + now.err).to.equal(0);
    expect(now.out).to.match(/1\. Pods sim_load, target average 10 per pod: current 2 → 1 replica\(s\)/);
    expect(now.out).to.match(/next sync: 1 replica\(s\) \(no change/);

    const predicted = simulateJson("sw/web", "--set", "sim_load=25");
    expect(predicted.metrics[0]).to.include({ current: "25", proposal: 3, whatIf: true });
    expect(predicted.next.desiredReplicas).to.equal(3);

    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec: {metric: sim_load, subject: {resource: pods}, interval: 1s, staleAfter: 10s, source: {static: {value: "25"}}}
`,
    );
    expect(await nextDecision("web", 1)).to.equal(predicted.next.desiredReplicas);
  });

  it("a plain HPA's External metric with a scale-up policy: the limit simulate names is the one the HPA applies", async () => {
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec: {metric: sim_queue, subject: {external: {}}, interval: 1s, staleAfter: 10s, source: {static: {value: "60"}}}
---
${deploymentYaml("worker", 2)}---
${hpaYaml("worker", { maxReplicas: 10, metrics: externalAverage("sim_queue", "30"), behavior: "{scaleUp: {policies: [{type: Pods, value: 1, periodSeconds: 60}]}}" })}`,
    );
    await settled("worker", 2);
    const predicted = simulateJson("hpa/worker", "--set", "sim_queue=150");
    // 150 / 30 asks for 5; one pod a minute lets 3.
    expect(predicted.metrics[0]).to.include({ current: "75", proposal: 5 });
    expect(predicted.next.desiredReplicas).to.equal(3);
    expect(predicted.next.conditions.ScalingLimited?.reason).to.equal("ScaleUpLimit");

    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec: {metric: sim_queue, subject: {external: {}}, interval: 1s, staleAfter: 10s, source: {static: {value: "150"}}}
`,
    );
    expect(await nextDecision("worker", 2)).to.equal(predicted.next.desiredReplicas);
    const limited = (await hpa("worker")).status?.conditions?.find((c) => c.type === "ScalingLimited");
    expect(limited?.reason).to.equal("ScaleUpLimit");
  });

  it("says plainly when there is no such HPA", () => {
    const r = simulate("hpa/nothing", "-n", ns.name);
    expect(r.code).to.equal(1);
    expect(r.err).to.contain(`governor: HorizontalPodAutoscaler nothing not found in namespace ${ns.name}`);
  });
});
