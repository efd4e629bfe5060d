import { expect } from "chai";
import { pino } from "pino";
import { FakeApp } from "../../tools/demo/fake-app.js";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import { InformerPodIndex } from "../../src/k8s/pod-index.js";
import { applyYaml, freshNamespace, kubectl, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";
import { JsonEndpoint } from "../support/json-endpoint.js";
import { autoscaledWorkload } from "../support/workloads.js";
import { freePort } from "../support/ports.js";

interface Hpa {
  status?: {
    currentReplicas?: number;
    desiredReplicas?: number;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe("the real HPA scales real targets on Governor's metrics (e2e)", function () {
  this.timeout(300_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let kubelet: StandInKubelet;
  let pods: InformerPodIndex;
  let ns: Awaited<ReturnType<typeof freshNamespace>> | undefined;
  const json = new JsonEndpoint();

  const apply = (yaml: string) => applyYaml(cluster, ns!.name, yaml);
  const hpa = (name: string) =>
    cluster.client.get<Hpa>(`/apis/autoscaling/v2/namespaces/${ns!.name}/horizontalpodautoscalers/${name}`);
  const swReplicas = async (name: string) =>
    (
      await cluster.client.get<{ spec: { replicas: number } }>(
        `/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/scalableworkloads/${name}`,
      )
    ).spec.replicas;
  const condition = async (name: string, type: string) =>
    (await hpa(name)).status?.conditions?.find((c) => c.type === type);
  /** Waits until the ScalableWorkload `name` has `n` replicas. */
  const replicasReach = (name: string, n: number, what: string, timeoutMs = 90_000) =>
    eventually(async () => expect(await swReplicas(name)).to.equal(n), { timeoutMs, intervalMs: 1000, what });

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster);
    await governor.start();
    kubelet = startStandInKubelet(cluster.client);
    pods = new InformerPodIndex(cluster.client, pino({ level: "silent" }));
    await pods.synced;
  });
  beforeEach(async function () {
    ns = await freshNamespace(cluster, "e2e");
  });
  afterEach(async function () {
    if (this.currentTest?.state === "failed" && ns) {
      const describe = await kubectl(cluster, "describe", "hpa", "-n", ns.name).catch(
        (e: Error) => e.message,
      );
      const events = await kubectl(cluster, "get", "events", "-n", ns.name, "--sort-by=.lastTimestamp").catch(
        (e: Error) => e.message,
      );
      const mms = await kubectl(cluster, "get", "mm", "-n", ns.name, "-o", "yaml").catch(
        (e: Error) => e.message,
      );
      console.error(
        `--- Governor log tail ---\n${governor.tail()}\n--- kubectl describe hpa ---\n${describe}\n--- events ---\n${events}\n--- MetricMappings ---\n${mms}`,
      );
    }
    await ns?.delete();
    ns = undefined;
  });
  after(async () => {
    await cluster?.client.delete(
      "/apis/rbac.authorization.k8s.io/v1/clusterroles/governor-e2e-count-configmaps",
    );
    json.stop();
    await governor?.stop();
    await kubelet?.stop();
    await pods?.stop();
  });

  it("Pods metric from a request counter: replicas rise in proportion to load, and fall back to the minimum when it stops", async () => {
    const port = await freePort();
    const app = new FakeApp(pods, ns!.name, { app: "web" }, port);
    app.start();
    try {
      apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: http-requests}
spec:
  metric: http_requests
  subject: {resource: pods}
  interval: 2s
  source: {scrape: {port: ${port}, series: http_requests_total, rate: true}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: example.invalid/web}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: governor.dev/v1alpha1, kind: ScalableWorkload, name: web}
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: Pods, pods: {metric: {name: http_requests}, target: {type: AverageValue, averageValue: "10"}}}]
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`);
      app.rate = 45;
      await eventually(async () => expect(await swReplicas("web")).to.equal(5), {
        timeoutMs: 90_000,
        intervalMs: 1000,
        what: "45 req/s at 10 per pod → 5 replicas",
      });
      expect(await condition("web", "AbleToScale")).to.include({ status: "True" });
      expect(await condition("web", "ScalingActive")).to.include({
        status: "True",
        reason: "ValidMetricFound",
      });
      await eventually(async () => {
        const row = (await kubectl(cluster, "get", "hpa", "web", "-n", ns!.name, "--no-headers"))
          .trim()
          .split(/\s+/);
        const [, reference, targets, min, max, replicas] = row;
        expect({ reference, min, max, replicas }).to.deep.equal({
          reference: "ScalableWorkload/web",
          min: "1",
          max: "8",
          replicas: "5",
        });
        expect(targets).to.match(/^\d+m?\/10$/);
      });
      app.rate = 0;
      await eventually(async () => expect(await swReplicas("web")).to.equal(1), {
        timeoutMs: 90_000,
        intervalMs: 1000,
        what: "back to the minimum",
      });
    } finally {
      await app.stop();
    }
  });

  it("Object metric on a Service (HTTP JSON) with a Value target scales a Deployment", async () => {
    json.value = 250;
    if (!json.port) await json.start();
    apply(`apiVersion: v1
kind: Service
metadata: {name: frontend}
spec: {ports: [{port: 80}], selector: {app: frontend}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend}
spec:
  replicas: 1
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend}}
    spec: {containers: [{name: web, image: example.invalid/frontend}]}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: frontend-rps}
spec:
  metric: requests_per_second
  subject: {resource: services}
  interval: 1s
  source: {http: {url: "${json.url}", jsonPath: "$.stats.value"}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: frontend}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: frontend}
  minReplicas: 1
  maxReplicas: 4
  metrics:
    - type: Object
      object:
        describedObject: {apiVersion: v1, kind: Service, name: frontend}
        metric: {name: requests_per_second}
        target: {type: Value, value: "100"}
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`);
    const deployment = async () =>
      (
        await cluster.client.get<{ spec: { replicas: number } }>(
          `/apis/apps/v1/namespaces/${ns!.name}/deployments/frontend`,
        )
      ).spec.replicas;
    await eventually(async () => expect(await deployment()).to.equal(4), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "250 against 100 → up to the maximum of 4",
    });
    json.value = 20;
    await eventually(async () => expect(await deployment()).to.equal(1), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "20 against 100 → the minimum",
    });
  });

  it("a ScalableWorkload as the scale target, on a count of Kubernetes objects, with kubectl scale by hand in between", async () => {
    // Counting a kind Governor cannot read by default: grant it, as docs/reference.md says (Read access to other kinds).
    apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: governor-e2e-count-configmaps
  labels: {governor.dev/aggregate-to-subject-reader: "true"}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}]
`);
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: pending-work}
spec:
  metric: pending_work
  subject: {external: {}}
  interval: 1s
  source: {kubernetes: {count: {resource: configmaps, labelSelector: "work=pending"}}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: worker}
spec:
  replicas: 1
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {containers: [{name: worker, image: example.invalid/worker}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: worker}
spec:
  scaleTargetRef: {apiVersion: governor.dev/v1alpha1, kind: ScalableWorkload, name: worker}
  minReplicas: 1
  maxReplicas: 10
  metrics: [{type: External, external: {metric: {name: pending_work}, target: {type: AverageValue, averageValue: "2"}}}]
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`);
    for (let i = 0; i < 6; i++) {
      await cluster.client.create(`/api/v1/namespaces/${ns!.name}/configmaps`, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: `item-${i}`, labels: { work: "pending" } },
      });
    }
    await eventually(async () => expect(await swReplicas("worker")).to.equal(3), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "6 items at 2 per replica → 3",
    });
    await kubectl(cluster, "scale", "-n", ns!.name, "sw/worker", "--replicas=1");
    expect(await swReplicas("worker")).to.equal(1);
    await eventually(async () => expect(await swReplicas("worker")).to.equal(3), {
      timeoutMs: 60_000,
      intervalMs: 1000,
      what: "the HPA corrects the manual scale",
    });
    await kubectl(cluster, "delete", "configmaps", "-n", ns!.name, "-l", "work=pending");
    await eventually(async () => expect(await swReplicas("worker")).to.equal(1), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "no work → the minimum",
    });
  });

  it("an external metric with spec.autoscaling (Governor writes the HPA); when the source goes away the HPA holds, and it resumes when it returns", async () => {
    json.value = 30;
    if (!json.port) await json.start();
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue-depth}
spec:
  metric: queue_depth
  subject: {external: {labels: {queue: orders}}}
  interval: 1s
  staleAfter: 5s
  source: {http: {url: "${json.url}", jsonPath: "$.stats.value"}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: consumer}
spec:
  replicas: 1
  selector: {matchLabels: {app: consumer}}
  template:
    metadata: {labels: {app: consumer}}
    spec: {containers: [{name: consumer, image: example.invalid/consumer}]}
  autoscaling:
    minReplicas: 1
    maxReplicas: 10
    metrics: [{mapping: queue-depth, target: {averageValue: "10"}}]
    behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`);
    await eventually(async () => expect(await swReplicas("consumer")).to.equal(3), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "30 queued at 10 per replica → 3",
    });

    json.stop();
    await eventually(
      async () => {
        const active = await condition("consumer", "ScalingActive");
        expect(active).to.include({ status: "False", reason: "FailedGetExternalMetric" });
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "the HPA reports it cannot get the metric" },
    );
    await eventually(
      async () => {
        const mm = await cluster.client.get<{
          status?: { conditions?: { type: string; status: string; message: string }[] };
        }>(`/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/metricmappings/queue-depth`);
        expect(mm.status?.conditions?.find((c) => c.type === "SourceHealthy")).to.include({
          status: "False",
        });
        expect(mm.status?.conditions?.find((c) => c.type === "Ready")).to.include({
          status: "False",
          reason: "Stale",
        });
      },
      { timeoutMs: 10_000, what: "the MetricMapping says why" },
    );
    for (let i = 0; i < 10; i++) {
      expect(await swReplicas("consumer"), "the HPA holds; no scale-down to the minimum").to.equal(3);
      await new Promise((r) => setTimeout(r, 1000));
    }

    json.value = 50;
    await json.start();
    await eventually(async () => expect(await swReplicas("consumer")).to.equal(5), {
      timeoutMs: 90_000,
      intervalMs: 1000,
      what: "scaling resumes: 50 → 5",
    });
  });

  it("a formula over two mappings: replicas follow the larger signal, and hold — not fall to the other signal — while one input fails", async function () {
    this.timeout(360_000);
    json.value = 20;
    if (!json.port) await json.start();
    const rps = (value: string) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: rps}
spec:
  metric: requests_per_second
  subject: {external: {}}
  interval: 1s
  source: {static: {value: "${value}"}}
`;
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue-depth}
spec:
  metric: queue_depth
  subject: {external: {}}
  interval: 1s
  staleAfter: 5s
  source: {http: {url: "${json.url}", jsonPath: "$.stats.value"}}
---
${rps("300")}---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: work}
spec:
  metric: work
  subject: {external: {}}
  interval: 1s
  staleAfter: 5s
  source:
    formula:
      expression: "math.greatest(queue / 10.0, rps / 100.0)"
      inputs: {queue: {mapping: queue-depth}, rps: {mapping: rps}}
---
${autoscaledWorkload("worker", '[{mapping: work, target: {averageValue: "1"}}]')}`);
    await replicasReach("worker", 3, "max(20 / 10, 300 / 100) → 3");
    json.value = 60;
    await replicasReach("worker", 6, "the queue grows: max(60 / 10, 300 / 100) → 6");

    json.stop();
    await eventually(
      async () => {
        const mm = await cluster.client.get<{
          status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
        }>(`/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/metricmappings/work`);
        expect(mm.status?.conditions?.find((c) => c.type === "Ready")).to.include({ reason: "Stale" });
        expect(mm.status?.conditions?.find((c) => c.type === "SourceHealthy")?.message).to.match(
          /input queue: MetricMapping queue-depth (is stale|has no value)/,
        );
        expect(await condition("worker", "ScalingActive")).to.include({
          status: "False",
          reason: "FailedGetExternalMetric",
        });
      },
      {
        timeoutMs: 60_000,
        intervalMs: 1000,
        what: "the formula stale, naming its input; the HPA cannot get it",
      },
    );
    for (let i = 0; i < 10; i++) {
      expect(await swReplicas("worker"), "the HPA holds; rps alone (3) is not served").to.equal(6);
      await new Promise((r) => setTimeout(r, 1000));
    }

    json.value = 20;
    await json.start();
    apply(rps("900"));
    await replicasReach("worker", 9, "both back, the other signal now larger: max(20 / 10, 900 / 100) → 9");
  });

  it("a forecast of a pattern that repeats every minute: replicas rise before the input does, once two seasons are learnt", async function () {
    // A compressed day: the load is 10 from second 30 to 45 of every minute, 2 otherwise;
    // the forecast looks 20 s ahead over a 1-minute season (60 buckets of a second).
    this.timeout(480_000);
    const busy = (t: number) => (t % 60_000 >= 30_000 && t % 60_000 < 45_000 ? 10 : 2);
    json.value = busy(Date.now());
    if (!json.port) await json.start();
    const follow = setInterval(() => (json.value = busy(Date.now())), 50);
    try {
      apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load}
spec:
  metric: load
  subject: {external: {}}
  interval: 1s
  source: {http: {url: "${json.url}", jsonPath: "$.stats.value"}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: load-ahead}
spec:
  metric: load_ahead
  subject: {external: {}}
  interval: 1s
  source:
    forecast: {mapping: load, lead: 20s, season: 1m, method: holt-winters}
---
${autoscaledWorkload("ahead", '[{mapping: load-ahead, target: {averageValue: "2"}}]')}`);
      const forecast = async () =>
        (
          await cluster.client.get<{
            status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
          }>(`/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/metricmappings/load-ahead`)
        ).status?.conditions?.find((c) => c.type === "Forecast");
      await eventually(async () => expect(await forecast()).to.include({ reason: "TooLittleHistory" }), {
        timeoutMs: 30_000,
        intervalMs: 1000,
        what: "learning: the current value served, the condition says so",
      });
      await eventually(
        async () => expect(await forecast()).to.include({ status: "True", reason: "Forecasting" }),
        {
          timeoutMs: 180_000,
          intervalMs: 1000,
          what: "two seasons learnt",
        },
      );
      // Each minute from here: when did the workload reach 4 replicas, against the rise at second 30?
      // The first scale-up of each minute counts.
      const leads: number[] = [];
      const minutes = new Set<number>();
      let previous = await swReplicas("ahead");
      const until = Date.now() + 130_000;
      while (Date.now() < until && leads.length < 2) {
        const r = await swReplicas("ahead");
        const now = Date.now();
        const second = (now % 60_000) / 1000;
        const minute = Math.floor(now / 60_000);
        if (previous < 4 && r >= 4 && second > 5 && second < 45 && !minutes.has(minute)) {
          minutes.add(minute);
          leads.push(30 - second);
        }
        previous = r;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(leads, "a scale-up to 4 in each of two minutes").to.have.length(2);
      for (const lead of leads)
        expect(
          lead,
          `scaled up ${lead.toFixed(1)} s before the load rose (leads: ${leads.join(", ")})`,
        ).to.be.above(3);
      console.log(`      scaled up ${leads.map((l) => l.toFixed(1)).join(" s and ")} s before the load rose`);
    } finally {
      clearInterval(follow);
    }
  });

  it("a schedule with a ramp: replicas climb step by step to the entry's value, hold, and fall back to the default's", async function () {
    // A compressed day: an entry starts every 2 minutes, ramps 2 → 8 over 40 s, holds to the
    // minute and ends; at 2 per replica that is 1 → 2 → 3 → 4 replicas and back to 1.
    this.timeout(420_000);
    apply(`apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: office-hours}
spec:
  metric: office_hours
  subject: {external: {}}
  interval: 1s
  source:
    schedule:
      timeZone: Europe/Berlin
      default: "2"
      entries: [{cron: "*/2 * * * *", duration: 1m, value: "8", rampUp: 40s}]
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: office}
spec:
  replicas: 1
  selector: {matchLabels: {app: office}}
  template:
    metadata: {labels: {app: office}}
    spec: {containers: [{name: office, image: example.invalid/office}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: office}
spec:
  scaleTargetRef: {apiVersion: governor.dev/v1alpha1, kind: ScalableWorkload, name: office}
  minReplicas: 1
  maxReplicas: 10
  metrics: [{type: External, external: {metric: {name: office_hours}, target: {type: AverageValue, averageValue: "2"}}}]
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`);
    // Follow one whole start: from replicas at the default's 1, up to 4, and back to 1.
    const seen: number[] = [];
    const note = async () => {
      const r = await swReplicas("office");
      if (seen.at(-1) !== r) seen.push(r);
      return r;
    };
    // Between starts: the mapping serves the default, the HPA has read it and holds 1 replica.
    await eventually(
      async () => {
        const mm = await cluster.client.get<{ status?: { value?: string } }>(
          `/apis/governor.dev/v1alpha1/namespaces/${ns!.name}/metricmappings/office-hours`,
        );
        const read = (
          (await hpa("office")) as {
            status?: { currentMetrics?: { external?: { current?: { averageValue?: string } } }[] };
          }
        ).status?.currentMetrics?.[0]?.external?.current?.averageValue;
        expect([mm.status?.value, read, await note()]).to.deep.equal(["2", "2", 1]);
      },
      { timeoutMs: 150_000, intervalMs: 1000, what: "the default served, read by the HPA, 1 replica" },
    );
    seen.length = 0;
    seen.push(1);
    await eventually(async () => expect(await note()).to.equal(4), {
      timeoutMs: 180_000,
      intervalMs: 1000,
      what: "the entry's 8 at 2 per replica → 4",
    });
    expect(
      seen.slice(0, -1).some((r) => r === 2 || r === 3),
      `a step on the way up (replicas seen: ${seen.join(" → ")})`,
    ).to.equal(true);
    await eventually(async () => expect(await note()).to.equal(1), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      what: "the entry over → the default's 1",
    });
  });
});
