import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { request } from "undici";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import {
  applyYaml,
  freshNamespace,
  kubectl,
  LOOPBACK_SOURCES,
  ROOT,
  type TestCluster,
  useCluster,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { freePort } from "../support/ports.js";
import { TestPrometheus } from "../support/prometheus.js";
import { RateLimitingProxy } from "../support/rate-limiting-proxy.js";

const CROWD = 40;

describe("a backend's query budget against a Prometheus that answers 429 past 10 queries/s (integration)", function () {
  this.timeout(240_000);
  let cluster: TestCluster;
  let crowd: Awaited<ReturnType<typeof freshNamespace>>;
  let small: Awaited<ReturnType<typeof freshNamespace>>;
  let operator: RunningOperator;
  let prometheus: TestPrometheus;
  let proxy: RateLimitingProxy;
  let backend: string;
  const mappings = (ns: string) =>
    cluster.client.get<{
      items: {
        metadata: { name: string };
        status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
      }[];
    }>(`/apis/governor.dev/v1alpha1/namespaces/${ns}/metricmappings`);
  const condition = (m: Awaited<ReturnType<typeof mappings>>["items"][number], type: string) =>
    m.status?.conditions?.find((c) => c.type === type);

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await kubectl(cluster, "apply", "-k", join(ROOT, "crds"));
    await kubectl(cluster, "wait", "--for=condition=Established", "crd/metricmappings.governor.dev");
    crowd = await freshNamespace(cluster, "budget-crowd");
    small = await freshNamespace(cluster, "budget-small");
    prometheus = new TestPrometheus([]);
    await prometheus.start();
    proxy = new RateLimitingProxy(prometheus.url, 10);
    backend = await proxy.start();
    const port = await freePort();
    operator = await startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: small.name,
      registration: { mode: "local", serviceName: "governor-budget", port },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: false,
      shutdownDelayMs: 0,
      // Five times what the proxy allows: Governor must find the real rate from its 429s.
      backendQps: { qps: 50 },
      metricsEndpoint: { port: await freePort(), host: "127.0.0.1" },
    });
    // 40 mappings of one team every second (40 queries/s), one of another team.
    const mapping = (name: string, metric: string, value: number) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: ${name}}
spec:
  metric: ${metric}
  subject: {external: {}}
  interval: 1s
  staleAfter: 30s
  source: {prometheus: {address: "${backend}", query: "vector(${value})"}}
`;
    applyYaml(
      cluster,
      crowd.name,
      Array.from({ length: CROWD }, (_, i) => mapping(`crowd-${i}`, `crowd_${i}`, 1000 + i)).join("---\n"),
    );
    applyYaml(
      cluster,
      small.name,
      `${mapping("small", "small_value", 7)}---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: app, image: example.invalid/app}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: app}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{type: External, external: {metric: {name: small_value}, target: {type: Value, value: "100"}}}]
`,
    );
  });

  after(async () => {
    await operator?.stop();
    await operator?.registration?.uninstall();
    proxy?.stop();
    await prometheus?.stop();
    await crowd?.delete();
    await small?.delete();
  });

  it("every mapping serves, and the HPA reads its value, while the backend takes a quarter of the queries they ask for", async () => {
    await eventually(
      async () => {
        for (const [ns, n] of [
          [crowd.name, CROWD],
          [small.name, 1],
        ] as const) {
          const list = await mappings(ns);
          expect(list.items).to.have.length(n);
          for (const m of list.items)
            expect(condition(m, "Ready"), m.metadata.name).to.include({ status: "True", reason: "Serving" });
        }
        const v = await cluster.client.get<{ items: { value: string }[] }>(
          `/apis/external.metrics.k8s.io/v1beta1/namespaces/${crowd.name}/crowd_39`,
        );
        expect(v.items[0]?.value).to.equal("1039");
        const hpa = await cluster.client.get<{
          status?: { currentMetrics?: { external?: { current?: { value?: string } } }[] };
        }>(`/apis/autoscaling/v2/namespaces/${small.name}/horizontalpodautoscalers/app`);
        expect(hpa.status?.currentMetrics?.[0]?.external?.current?.value).to.equal("7");
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: "every mapping serving and the HPA reading its value" },
    );
  });

  it("says in each crowded mapping's status that the backend throttles it, and by how much", async () => {
    await eventually(
      async () => {
        const list = await mappings(crowd.name);
        const throttled = list.items.map((m) => condition(m, "Throttled"));
        expect(throttled.filter((c) => c?.status === "True").length).to.be.at.least(CROWD - 2);
        const c = throttled.find((t) => t?.status === "True")!;
        expect(c.reason).to.equal("BackendBudget");
        expect(c.message).to.match(
          new RegExp(
            `^${backend.replace(/[.:/]/g, "\\$&")} (answered|lately answered) that it is busy.*queries/s for now: the last sample waited \\d+ s for its turn, so this mapping samples about every \\d+ s instead of every 1 s$`,
          ),
        );
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "Throttled on the crowded mappings" },
    );
  });

  it("settles under the backend's rate: few 429s, and the small team's mapping keeps its turns", async () => {
    const before = new Map(proxy.sent);
    const refusedBefore = proxy.refused;
    await new Promise((r) => setTimeout(r, 20_000));
    const sent = proxy.since(before);
    const total = [...sent.values()].reduce((a, b) => a + b, 0);
    const refused = proxy.refused - refusedBefore;
    // At most 10/s for 20 s passed on, and at least half that (the rate halves at a 429 and
    // grows back); refused: a small part of what was sent, not the 3 in 4 a fixed 40/s would get.
    expect(total).to.be.within(100, 220);
    expect(refused / (total + refused), `${refused} refused, ${total} passed`).to.be.below(0.25);
    // Turns go round the namespaces: the one mapping of the small team is asked far more
    // often than each of the 40 of the crowd (about every second or two against every 4).
    const smallQueries = sent.get("vector(7)") ?? 0;
    const crowdEach = [...sent]
      .filter(([q]) => q !== "vector(7)")
      .map(([, n]) => n)
      .sort((a, b) => a - b);
    const median = crowdEach[Math.floor(crowdEach.length / 2)]!;
    expect(smallQueries, `small ${smallQueries}, crowd median ${median}`).to.be.at.least(2 * median);
  });

  it("shows each backend's budget, slowed namespaces, waits and 429s on /metrics", async () => {
    const r = await request(`http://127.0.0.1:${operator.metricsAddress!.port}/metrics`);
    const text = await r.body.text();
    const value = (name: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${name}{backend="${backend}"}`));
      return line === undefined ? undefined : Number(line.split(" ").at(-1));
    };
    expect(value("governor_backend_budget_qps")).to.equal(50);
    expect(value("governor_backend_slowed_namespaces")).to.be.within(1, 2);
    expect(value("governor_backend_busy_answers_total")).to.be.above(0);
    expect(value("governor_backend_queries_total")).to.be.above(100);
    expect(value("governor_backend_wait_seconds_total")).to.be.above(10);
    expect(value("governor_backend_waiting")).to.be.within(0, CROWD + 1);
  });
});
