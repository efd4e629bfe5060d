import { expect } from "chai";
import { pino } from "pino";
import { startStandInKubelet, type StandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import { InformerPodIndex } from "../../src/k8s/pod-index.js";
import { parseQuantity } from "../../src/api/quantity.js";
import { applyYaml, freshNamespace, kubectl, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";
import { SdkPusher, startCollector, type RunningCollector } from "../support/otlp.js";
import { freePort } from "../support/ports.js";

/** The name Governor's serving certificate is for (registration local). */
const SERVER_NAME = "governor.governor-system.svc";

describe("the real HPA scales on what pods push over OTLP (e2e)", function () {
  this.timeout(300_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let kubelet: StandInKubelet;
  let pods: InformerPodIndex;
  let otlpPort: number;
  let ca: string;
  const namespaces: Awaited<ReturnType<typeof freshNamespace>>[] = [];
  const loops: NodeJS.Timeout[] = [];
  const closers: (() => Promise<void>)[] = [];

  const otlpUrl = () => `https://127.0.0.1:${otlpPort}/v1/metrics`;
  const swReplicas = async (ns: string, name: string) =>
    (
      await cluster.client.get<{ spec: { replicas: number } }>(
        `/apis/governor.dev/v1alpha1/namespaces/${ns}/scalableworkloads/${name}`,
      )
    ).spec.replicas;
  const replicasReach = (ns: string, name: string, n: number, what: string) =>
    eventually(async () => expect(await swReplicas(ns, name)).to.equal(n), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      what,
    });
  const external = async (ns: string, metric: string) =>
    cluster.client
      .get<{ items: { value: string }[] }>(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns}/${metric}`)
      .then((r) => r.items[0]?.value);
  /** A namespace with a ServiceAccount `worker` and a token of it for Governor's audience. */
  const tenant = async (prefix: string) => {
    const ns = await freshNamespace(cluster, prefix);
    namespaces.push(ns);
    await cluster.client.create(`/api/v1/namespaces/${ns.name}/serviceaccounts`, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "worker" },
    });
    const { status } = await cluster.client.request<{ status: { token: string } }>(
      "POST",
      `/api/v1/namespaces/${ns.name}/serviceaccounts/worker/token`,
      {
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { audiences: ["governor"], expirationSeconds: 3600 },
        },
      },
    );
    return { name: ns.name, token: status.token };
  };
  /** Exports what `pusher` has every second to `url` until the returned function is called. */
  const everySecond = (pusher: SdkPusher, target: Parameters<SdkPusher["export"]>[0]) => {
    let running = true;
    const tick = () =>
      void pusher.export(target).finally(() => {
        if (running) loops.push(setTimeout(tick, 1000));
      });
    tick();
    return () => {
      running = false;
    };
  };
  const autoscaled = (
    name: string,
    mapping: string,
    averageValue: string,
  ) => `apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: ${name}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec: {containers: [{name: ${name}, image: example.invalid/${name}}]}
  autoscaling:
    minReplicas: 1
    maxReplicas: 10
    metrics: [{mapping: ${mapping}, target: {averageValue: "${averageValue}"}}]
    behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`;

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    otlpPort = await freePort();
    governor = new GovernorProcess(cluster, { extraArgs: [`--otlp-port=${otlpPort}`] });
    await governor.start();
    const apiService = await cluster.client.get<{ spec: { caBundle: string } }>(
      "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
    );
    ca = Buffer.from(apiService.spec.caBundle, "base64").toString("utf8");
    kubelet = startStandInKubelet(cluster.client);
    pods = new InformerPodIndex(cluster.client, pino({ level: "silent" }));
    await pods.synced;
  });
  afterEach(async function () {
    for (const t of loops.splice(0)) clearTimeout(t);
    for (const close of closers.splice(0)) await close();
    if (this.currentTest?.state === "failed")
      for (const ns of namespaces)
        console.error(
          `--- ${ns.name}: MetricMappings and HPAs ---\n${await kubectl(cluster, "get", "mm,hpa", "-n", ns.name, "-o", "yaml").catch((e: Error) => e.message)}`,
        );
    for (const ns of namespaces.splice(0)) await ns.delete();
  });
  let failed = false;
  afterEach(function () {
    if (this.currentTest?.state === "failed") failed = true;
  });
  after(async () => {
    if (failed) console.error(`--- Governor log tail ---\n${governor?.tail()}`);
    await governor?.stop();
    await kubelet?.stop();
    await pods?.stop();
  });

  it("a queue gauge pushed with the JavaScript SDK scales a workload; another namespace pushing the same names changes nothing; a stopped pusher holds it, never 0", async () => {
    const a = await tenant("otlp-a");
    const b = await tenant("otlp-b");
    const queue = `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec:
  metric: otlp_e2e_queue
  subject: {external: {}}
  interval: 2s
  staleAfter: 10s
  source: {otlp: {metric: queue.depth, attributes: {queue: jobs}}}
`;
    applyYaml(cluster, a.name, `${queue}---\n${autoscaled("worker", "queue", "10")}`);
    applyYaml(cluster, b.name, queue);
    let depthA = 35;
    const pusherA = new SdkPusher({ "k8s.pod.name": "producer-0", "service.name": "producer" });
    pusherA.meter
      .createObservableGauge("queue.depth")
      .addCallback((r) => r.observe(depthA, { queue: "jobs" }));
    closers.push(() => pusherA.shutdown());
    const stopA = everySecond(pusherA, {
      url: otlpUrl(),
      token: a.token,
      ca,
      servername: SERVER_NAME,
      encoding: "protobuf",
    });
    await replicasReach(a.name, "worker", 4, "35 queued at 10 a replica: 4 replicas");

    // Team B pushes the same metric, claiming team A's namespace and pod, with a far larger value.
    const intruder = new SdkPusher({ "k8s.pod.name": "producer-0", "k8s.namespace.name": a.name });
    intruder.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(500, { queue: "jobs" }));
    closers.push(() => intruder.shutdown());
    const stopB = everySecond(intruder, {
      url: otlpUrl(),
      token: b.token,
      ca,
      servername: SERVER_NAME,
      encoding: "json",
    });
    // Its pushes arrive (its own namespace serves them), and team A's value is still its own.
    await eventually(async () => expect(await external(b.name, "otlp_e2e_queue")).to.equal("500"), {
      timeoutMs: 30_000,
      what: "team B's push served in team B",
    });
    expect(await external(a.name, "otlp_e2e_queue")).to.equal("35");
    depthA = 65;
    await replicasReach(a.name, "worker", 7, "65 queued: 7 replicas (team B's 500 never counted)");
    stopB();

    // The pusher stops: the value goes stale and the HPA holds 7 replicas, never scaling on a 0.
    stopA();
    await eventually(
      async () => {
        const hpa = await cluster.client.get<{
          status?: { conditions?: { type: string; status: string; reason: string }[] };
        }>(`/apis/autoscaling/v2/namespaces/${a.name}/horizontalpodautoscalers/worker`);
        expect(hpa.status?.conditions?.find((c) => c.type === "ScalingActive")).to.include({
          status: "False",
          reason: "FailedGetExternalMetric",
        });
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "the HPA cannot read the stale metric" },
    );
    expect(await swReplicas(a.name, "worker")).to.equal(7);
  });

  it("a request counter forwarded by the OpenTelemetry Collector scales a workload on its per-second rate", async () => {
    const a = await tenant("otlp-c");
    applyYaml(
      cluster,
      a.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: requests}
spec:
  metric: otlp_e2e_requests_per_second
  subject: {external: {}}
  interval: 2s
  staleAfter: 10s
  source: {otlp: {metric: http.server.requests, rate: true}}
---
${autoscaled("web", "requests", "10")}`,
    );
    const collector: RunningCollector = await startCollector({
      governor: otlpUrl(),
      ca,
      token: a.token,
      serverName: SERVER_NAME,
    });
    closers.push(() => collector.stop());
    // Two pods' SDKs send their counters to the Collector: 20 and 30 requests a second.
    for (const [pod, perSecond] of [
      ["web-0", 20],
      ["web-1", 30],
    ] as const) {
      const app = new SdkPusher({ "k8s.pod.name": pod });
      const counter = app.meter.createCounter("http.server.requests");
      loops.push(setInterval(() => counter.add(perSecond / 10, { route: "/" }), 100));
      closers.push(() => app.shutdown());
      everySecond(app, { url: collector.url, ca, encoding: "protobuf" });
    }
    await replicasReach(a.name, "web", 5, "50 requests a second at 10 a replica: 5 replicas");
    const rate = parseQuantity((await external(a.name, "otlp_e2e_requests_per_second")) ?? "");
    expect(rate).to.be.within(40, 60);
  });
});
