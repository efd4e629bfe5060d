import { expect } from "chai";
import type { Condition } from "../../src/api/common.js";
import { applyYaml, freshNamespace, kubectl, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { governorCliAsync } from "../support/governor-cli.js";
import { GovernorProcess } from "../support/governor-process.js";
import { JsonEndpoint } from "../support/json-endpoint.js";

interface Sw {
  spec: { replicas: number };
  status?: {
    readyReplicas?: number;
    conditions?: Condition[];
    activation?: { belowThresholdSince?: string };
  };
}
interface Hpa {
  status?: { conditions?: { type: string; status: string; reason: string }[] };
}

const COOLDOWN_S = 15;

/**
 * Scale to zero with the real HPA: a queue-depth External metric wakes a worker at 0
 * replicas, the HPA takes it from 1 to N, and after the cooldown at 0 Governor puts it back
 * to 0 — and never moves it on a metric it cannot read. Runs on whichever Kubernetes the
 * suite runs on (GOVERNOR_K8S_VERSION; `npm run test:matrix` for the oldest and newest).
 */
describe("scale to zero and back with the real HPA (e2e)", function () {
  this.timeout(300_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let ns: Awaited<ReturnType<typeof freshNamespace>> | undefined;
  const queue = new JsonEndpoint();

  const sw = () =>
    cluster.client.get<Sw>(`/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/scalableworkloads/worker`);
  const active = async () => (await sw()).status?.conditions?.find((c) => c.type === "Active");
  const hpaCondition = async (type: string) =>
    (
      await cluster.client.get<Hpa>(
        `/apis/autoscaling/v2/namespaces/${ns!.name}/horizontalpodautoscalers/worker`,
      )
    ).status?.conditions?.find((c) => c.type === type);
  const replicas = async () => (await sw()).spec.replicas;
  const deploymentReplicas = async () =>
    (
      await cluster.client.get<{ spec: { replicas: number } }>(
        `/apis/apps/v1/namespaces/${ns!.name}/deployments/worker`,
      )
    ).spec.replicas;
  const until = (what: string, check: () => Promise<unknown>, timeoutMs: number) =>
    eventually(check, { timeoutMs, intervalMs: 500, what });
  /** `governor explain sw/worker`, as a user runs it (without blocking: the queue endpoint lives in this process). */
  const explain = () => governorCliAsync(cluster, "explain", "sw/worker", "-n", ns!.name);
  /** Asserts the replicas stay at `n` for `seconds`. */
  const holds = async (n: number, seconds: number, why: string) => {
    for (let i = 0; i < seconds; i++) {
      expect(await replicas(), why).to.equal(n);
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster);
    await governor.start();
    await queue.start();
  });
  beforeEach(async () => {
    ns = await freshNamespace(cluster, "zero", { podNetwork: true });
  });
  afterEach(async function () {
    if (this.currentTest?.state === "failed" && ns) {
      const describe = await kubectl(cluster, "describe", "sw,hpa,mm", "-n", ns.name).catch(
        (e: Error) => e.message,
      );
      console.error(`--- Governor log tail ---\n${governor.tail()}\n--- kubectl describe ---\n${describe}`);
    }
    await ns?.delete();
    ns = undefined;
  });
  after(async () => {
    queue.stop();
    await governor?.stop();
  });

  const workload = (cooldown: string) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue-depth}
spec:
  metric: queue_depth
  subject: {external: {labels: {queue: jobs}}}
  interval: 1s
  staleAfter: 4s
  source: {http: {url: "${queue.url}", jsonPath: "$.stats.value"}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: worker}
spec:
  replicas: 1
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
      - name: app
        image: governor-sample-app:test
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
  autoscaling:
    minReplicas: 0
    maxReplicas: 5
    metrics: [{mapping: queue-depth, target: {averageValue: "10"}}]
    activation: {mapping: queue-depth, threshold: "0", cooldown: ${cooldown}}
    behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`;

  it("an idle queue takes the worker to 0 after the cooldown; work wakes it and the HPA takes it on; idle again, back to 0", async () => {
    queue.value = 0;
    applyYaml(cluster, ns!.name, workload(`${COOLDOWN_S}s`));
    await until(
      "the cooldown starts",
      async () => expect(await active()).to.include({ status: "True", reason: "CoolingDown" }),
      30_000,
    );
    const since = Date.parse((await sw()).status!.activation!.belowThresholdSince!);
    await until("the worker is at 0", async () => expect(await replicas()).to.equal(0), 60_000);
    expect(Date.now() - since, "not before the cooldown").to.be.at.least(COOLDOWN_S * 1000 - 1000);
    await until(
      "the Deployment follows and the status says why",
      async () => {
        expect(await deploymentReplicas()).to.equal(0);
        const s = await sw();
        expect(s.status?.conditions?.find((c) => c.type === "Active")).to.include({
          status: "False",
          reason: "ScaledToZero",
        });
        expect(s.status?.conditions?.find((c) => c.type === "Autoscaling")).to.include({
          status: "True",
          reason: "ScaledToZero",
        });
      },
      30_000,
    );
    // The HPA's own state at 0: it stands still rather than scaling up to its minimum of 1.
    await until(
      "the HPA reports scaling disabled at 0",
      async () =>
        expect(await hpaCondition("ScalingActive")).to.include({
          status: "False",
          reason: "ScalingDisabled",
        }),
      30_000,
    );
    await holds(0, 5, "the HPA does not fight 0 (its minReplicas is 1)");
    const idle = await explain();
    expect(idle.out, idle.out)
      .to.contain("idle at 0 (ScaledToZero)")
      .and.to.contain("at 0 replicas, so no pods");
    expect(idle.code, `explain finds nothing broken at 0:\n${idle.out}`).to.equal(0);

    const woke = Date.now();
    queue.value = 35;
    await until("work wakes the worker", async () => expect(await replicas()).to.be.at.least(1), 10_000);
    const wakeMs = Date.now() - woke;
    expect(wakeMs, "within one interval (1 s) plus one reconcile").to.be.below(5_000);
    await until(
      "the HPA takes it on: 35 at 10 per replica → 4",
      async () => expect(await replicas()).to.equal(4),
      60_000,
    );
    await until(
      "the first pods are Ready",
      async () => expect((await sw()).status?.readyReplicas ?? 0).to.be.at.least(1),
      60_000,
    );

    queue.value = 5;
    await until(
      "less work: the HPA goes back to 1",
      async () => expect(await replicas()).to.equal(1),
      60_000,
    );
    await holds(1, 5, "5 queued is above the threshold: it stays awake");
    expect(await active()).to.include({ status: "True", reason: "AboveThreshold" });

    queue.value = 0;
    await until(
      "idle again: the cooldown starts",
      async () => expect(await active()).to.include({ reason: "CoolingDown" }),
      10_000,
    );
    await holds(1, 5, "inside the cooldown it stays at 1");
    await until("then back to 0", async () => expect(await replicas()).to.equal(0), 60_000);

    const events = await kubectl(
      cluster,
      "get",
      "events",
      "-n",
      ns!.name,
      "-o",
      "jsonpath={.items[*].reason}",
    );
    expect(events.split(" ")).to.include.members(["ScaledToZero", "ScaledFromZero"]);
  });

  it("a dead activation metric holds the worker where it is: at 1 past the cooldown, and at 0 with a condition saying why", async () => {
    queue.value = 3;
    applyYaml(cluster, ns!.name, workload("5s"));
    await until(
      "awake at 1",
      async () => expect(await active()).to.include({ status: "True", reason: "AboveThreshold" }),
      30_000,
    );
    expect(await replicas()).to.equal(1);

    queue.stop();
    await until(
      "the metric is reported unreadable",
      async () =>
        expect(await active()).to.include({ status: "Unknown", reason: "ActivationMetricUnavailable" }),
      30_000,
    );
    await holds(1, 10, "no value is not an idle queue: it stays at 1 past its 5 s cooldown");

    queue.value = 0;
    await queue.start();
    await until(
      "back, and idle: to 0 after the cooldown",
      async () => expect(await replicas()).to.equal(0),
      60_000,
    );

    queue.stop();
    await until(
      "the metric is reported unreadable at 0",
      async () => {
        const a = await active();
        expect(a).to.include({ status: "Unknown", reason: "ActivationMetricUnavailable" });
        expect(a?.message).to.contain("holding at 0 replicas");
      },
      30_000,
    );
    await holds(0, 5, "no value wakes nothing");
    const held = await explain();
    expect(held.code).to.equal(1);
    expect(held.out).to.contain("scale to zero is holding the replicas (ActivationMetricUnavailable)");
    const hint = await kubectl(cluster, "get", "sw", "worker", "-n", ns!.name, "-o", "wide");
    expect(hint)
      .to.match(/ACTIVE/)
      .and.to.match(/Unknown/)
      .and.to.contain("holding at 0 replicas");
    await queue.start();
  });
});
