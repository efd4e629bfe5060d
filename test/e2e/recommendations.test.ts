/**
 * A ScalableWorkload's recommendation against the real HPA controller of the local control
 * plane: a scripted load (an External and a Pods metric, each from an HTTP endpoint the test
 * sets) drives a ScalableWorkload's own HPA (mode Scale) and a plain HPA on a Deployment
 * with a Shadow ScalableWorkload beside it, both with a scale-up policy and a scale-down
 * stabilization window. Sync by sync (every period of the controller's 2 s), the
 * controller's `desiredReplicas` and Governor's `status.recommendation` must be identical at
 * least 95 % of the time, and every difference explained — printed either way.
 */
import { expect } from "chai";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import { applyYaml, freshNamespace, kubectl, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";
import { JsonEndpoint } from "../support/json-endpoint.js";
import { deploymentYaml, hpaYaml } from "../support/workloads.js";
import { type Timeline, compareBySync, describeComparison, see } from "../support/timelines.js";

/** The local control plane's `--horizontal-pod-autoscaler-sync-period` (hack/cluster.sh). */
const SYNC_MS = 2_000;

interface Hpa {
  status?: { desiredReplicas?: number; conditions?: { type: string; status: string; reason?: string }[] };
}
interface Sw {
  status?: {
    recommendation?: { replicas: number; metric?: string; reason: string };
    conditions?: { type: string; reason?: string }[];
  };
}

/**
 * The load, step by step: queue depth (External, target 30 per replica) and each pod's load
 * (Pods, target 10). Few decisions, each held long: a decision the two make a sync apart
 * differs for up to a period, and the rest of the time they must agree.
 */
const SCRIPT: { queue: number; load: number; holdS: number }[] = [
  { queue: 30, load: 10, holdS: 20 }, // the pods metric keeps 2 (the queue asks 1)
  { queue: 240, load: 10, holdS: 60 }, // the queue asks 8: 3 pods per 10 s, 2 → 5 → 8
  { queue: 120, load: 1, holdS: 60 }, // the queue asks 4: the 20 s window holds 8, then 4
  { queue: 0, load: 1, holdS: 60 }, // the pods metric asks 1: after the window, 1
];

describe("a ScalableWorkload's recommendation is the HPA's decision, sync by sync (e2e, the real HPA controller)", function () {
  this.timeout(420_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let kubelet: StandInKubelet;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  const queue = new JsonEndpoint();
  const load = new JsonEndpoint();

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster, {
      extraArgs: [`--horizontal-pod-autoscaler-sync-period=${SYNC_MS / 1000}s`],
    });
    await governor.start();
    await Promise.all([queue.start(), load.start()]);
    ns = await freshNamespace(cluster, "recommend");
    kubelet = startStandInKubelet(cluster.client, { namespace: ns.name });
  });
  after(async () => {
    queue.stop();
    load.stop();
    await governor?.stop();
    await kubelet?.stop();
    await ns?.delete();
  });
  afterEach(async function () {
    if (this.currentTest?.state !== "failed") return;
    const describe = await kubectl(cluster, "describe", "sw,hpa", "-n", ns.name).catch(
      (e: Error) => e.message,
    );
    console.error(`--- Governor log tail ---\n${governor.tail()}\n--- kubectl describe ---\n${describe}`);
  });

  const get = <T>(path: string) => cluster.client.get<T>(`${path.replace("NS", ns.name)}`);
  const hpa = (name: string) =>
    get<Hpa>(`/apis/autoscaling/v2/namespaces/NS/horizontalpodautoscalers/${name}`).then(
      (h) => h.status?.desiredReplicas,
      () => undefined,
    );
  /** `ScalableWorkload: metric` of each recommendation seen: which metrics decided. */
  const deciding = new Set<string>();
  const recommended = (name: string) =>
    get<Sw>(`/apis/governor.dev/v1alpha1/namespaces/NS/scalableworkloads/${name}`).then(
      (s) => {
        const r = s.status?.recommendation;
        if (r?.metric) deciding.add(`${name}: ${r.metric}`);
        return r?.replicas;
      },
      () => undefined,
    );

  it("for a ScalableWorkload's own HPA, and for a Shadow one beside a plain HPA on a Deployment", async () => {
    queue.value = SCRIPT[0]!.queue;
    load.value = SCRIPT[0]!.load;
    const metrics = (kind: "sw" | "hpa") =>
      kind === "sw"
        ? `[{mapping: queue, target: {averageValue: "30"}}, {mapping: load, target: {averageValue: "10"}}]`
        : `[{type: External, external: {metric: {name: rec_queue}, target: {type: AverageValue, averageValue: "30"}}},
           {type: Pods, pods: {metric: {name: rec_load}, target: {type: AverageValue, averageValue: "10"}}}]`;
    const behavior = `{scaleUp: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 3, periodSeconds: 10}]},
              scaleDown: {stabilizationWindowSeconds: 20}}`;
    const pod = `{containers: [{name: app, image: example.invalid/app}]}`;
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec: {metric: rec_queue, subject: {external: {}}, interval: 1s, staleAfter: 10s, source: {http: {url: "${queue.url}", jsonPath: "$.stats.value"}}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec: {metric: rec_load, subject: {resource: pods}, interval: 1s, staleAfter: 10s, source: {http: {url: "${load.url}", jsonPath: "$.stats.value"}}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: ${pod}}
  autoscaling: {minReplicas: 1, maxReplicas: 8, metrics: ${metrics("sw")}, behavior: ${behavior}}
---
${deploymentYaml("worker", 2)}---
${hpaYaml("worker", { maxReplicas: 8, metrics: metrics("hpa"), behavior })}---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: worker-shadow}
spec:
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: worker}
  autoscaling: {mode: Shadow, minReplicas: 1, maxReplicas: 8, metrics: ${metrics("sw")}, behavior: ${behavior}}
`,
    );
    // Both pairs deciding 2, the first step's answer, before the script starts.
    await eventually(
      async () => {
        for (const v of [
          await hpa("web"),
          await recommended("web"),
          await hpa("worker"),
          await recommended("worker-shadow"),
        ])
          expect(v).to.equal(2);
      },
      { timeoutMs: 90_000, intervalMs: 500, what: "both HPAs and both recommendations at 2" },
    );

    const pairs = {
      web: { hpa: [] as Timeline, governor: [] as Timeline },
      worker: { hpa: [] as Timeline, governor: [] as Timeline },
    };
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const [a, b, c, d] = await Promise.all([
          hpa("web"),
          recommended("web"),
          hpa("worker"),
          recommended("worker-shadow"),
        ]);
        const at = Date.now();
        see(pairs.web.hpa, at, a);
        see(pairs.web.governor, at, b);
        see(pairs.worker.hpa, at, c);
        see(pairs.worker.governor, at, d);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const start = Date.now();
    for (const step of SCRIPT) {
      queue.value = step.queue;
      load.value = step.load;
      await new Promise((r) => setTimeout(r, step.holdS * 1000));
    }
    watching = false;
    await watcher;
    const end = Date.now();

    const report: string[] = [];
    const results = Object.entries(pairs).map(([name, p]) => {
      const c = compareBySync(p.hpa, p.governor, {
        fromMs: start,
        toMs: end,
        periodMs: SYNC_MS,
        marginMs: 500,
      });
      const at = (t: Timeline) =>
        t.map((s) => `${s.value}@+${((s.atMs - start) / 1000).toFixed(1)}s`).join(" ");
      report.push(
        ...describeComparison(
          name === "web"
            ? "ScalableWorkload web (mode Scale)"
            : "HPA worker, with worker-shadow (mode Shadow) beside it",
          c,
          start,
        ),
        `  the HPA's desiredReplicas: ${at(p.hpa)}`,
        `  Governor's recommendation: ${at(p.governor)}`,
      );
      return { c, decided: new Set(p.hpa.map((s) => s.value)).size };
    });
    report.push(`deciding metrics seen: ${[...deciding].sort().join(", ")}`);
    console.log(report.join("\n"));
    // Both metrics decided at some step, on both.
    expect([...deciding].sort()).to.deep.equal([
      "web: load",
      "web: queue",
      "worker-shadow: load",
      "worker-shadow: queue",
    ]);
    for (const { c, decided } of results) {
      expect(c.same / c.instants, report.join("\n")).to.be.at.least(0.95);
      expect(
        c.differences.filter((d) => d.explanation === undefined),
        report.join("\n"),
      ).to.deep.equal([]);
      // The script moved both: two flat lines would prove nothing.
      expect(decided, report.join("\n")).to.be.at.least(4);
    }
  });
});
