/**
 * Every adapter behind one APIService (ADR 0024): KEDA (its ScaledObject's external
 * metric), prometheus-adapter (a custom rule on a Service and an external rule) and
 * Governor's own mapping, at once, through the real aggregator and the real HPA controller.
 * KEDA holds `v1beta1.external.metrics.k8s.io` and prometheus-adapter the custom group, as
 * a cluster that runs both has it — so the adapter's external metric cannot be read at all —
 * and each is declared as a MetricsUpstream (KEDA's CA from the
 * APIService Governor takes over, the adapter's from a Secret Governor is granted), and
 * Governor takes over all three APIServices. Each adapter killed in turn, the others' HPAs
 * keep their metrics; `governor uninstall` gives each its APIServices back.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { KubeApiError } from "../../src/k8s/client.js";
import { REPLACED_ANNOTATION, buildLocalService } from "../../src/manifests/api-service.js";
import { type KedaProcesses, kedaBuild, startKeda } from "../support/keda.js";
import {
  type PrometheusAdapterProcess,
  QUEUE_EXTERNAL_RULES,
  startPrometheusAdapter,
} from "../support/prometheus-adapter.js";
import {
  ROOT,
  applyYaml,
  freshNamespace,
  installCrds,
  kubectl,
  type TestCluster,
  useCluster,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";
import { type TestPrometheus, scrapedSeries } from "../support/prometheus.js";
import { deploymentYaml, externalAverage, hpaYaml } from "../support/workloads.js";

const APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices";
const EXTERNAL = "v1beta1.external.metrics.k8s.io";
const CUSTOM = ["v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"];
const MUS = "/apis/governor.dev/v1alpha1/metricsupstreams";

interface ApiService {
  metadata: { annotations?: Record<string, string> };
  spec: { service?: { namespace: string; name: string; port: number }; caBundle?: string };
}

interface MetricsUpstream {
  status?: {
    metrics?: number;
    lastError?: string;
    conditions?: { type: string; status: string; reason: string }[];
  };
}

/** prometheus-adapter's rules: `queue_depth` of a Service (custom), `queue_messages` (external). */
const ADAPTER_CONFIG = `rules:
- seriesQuery: 'e2e_queue_messages{namespace!="",service!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      service: {resource: service}
  name: {matches: "^e2e_queue_messages$", as: "queue_depth"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
${QUEUE_EXTERNAL_RULES}`;

describe("Governor in front of KEDA and prometheus-adapter at once, with its own mappings (e2e)", function () {
  this.timeout(900_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>> | undefined;
  let stopQueue: (() => Promise<void>) | undefined;
  let prometheus: TestPrometheus | undefined;
  let adapter: PrometheusAdapterProcess | undefined;
  let keda: KedaProcesses | undefined;
  let kedaCrds: string[] = [];
  let governor: GovernorProcess | undefined;
  let ca: KeyPair;
  let queueMessages = 30;
  let startAdapter: (port?: number) => Promise<PrometheusAdapterProcess>;
  /** KEDA's metric as its HPA asks for it: `s0-prometheus` with the ScaledObject's selector. */
  let kedaMetric: { path: string; labelSelector: string };

  const apply = (yaml: string) => applyYaml(cluster, ns!.name, yaml);
  const replicas = async (name: string) =>
    (
      await cluster.client.get<{ spec: { replicas: number } }>(
        `/apis/apps/v1/namespaces/${ns!.name}/deployments/${name}`,
      )
    ).spec.replicas;
  /** The replicas of the adapters' workloads and, once it exists, of Governor's (`mine`). */
  const all = async (withMine = true) => ({
    keda: await replicas("keda-app"),
    adapterExternal: await replicas("adapter-external"),
    adapterCustom: await replicas("adapter-custom"),
    ...(withMine ? { mine: await replicas("mine") } : {}),
  });
  const apiService = (name: string) => cluster.client.get<ApiService>(`${APISERVICES}/${name}`);
  const external = (metric: string) =>
    `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns!.name}/${metric}`;
  const backlog = (value: number) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: governor-backlog}
spec: {metric: governor_backlog, subject: {external: {}}, interval: 1s, source: {static: {value: "${value}"}}}
`;
  /** What each metric's read through the aggregator gives now: a value, or the status and message. */
  const reads = async () => {
    const read = async (path: string, labelSelector?: string) =>
      cluster.client
        .get<{ items: { value: string }[] }>(path, labelSelector ? { labelSelector } : undefined)
        .then(
          (l) => l.items.map((i) => i.value).join(","),
          (e: unknown) =>
            e instanceof KubeApiError ? `${e.statusCode} ${e.message.slice(0, 160)}` : String(e),
        );
    return {
      keda: await read(kedaMetric.path, kedaMetric.labelSelector),
      adapterExternal: await read(external("queue_messages")),
      adapterCustom: await read(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns!.name}/services/orders/queue_depth`,
      ),
      mine: await read(external("governor_backlog")),
    };
  };

  before(async function () {
    this.timeout(1_800_000); // KEDA's first build, on a fresh machine
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "upstreams");
    const dir = mkdtempSync(join(tmpdir(), "governor-upstreams-"));
    const queue = await scrapedSeries(
      () =>
        `# TYPE e2e_queue_messages gauge\ne2e_queue_messages{queue="orders",service="orders"} ${queueMessages}\n`,
      { namespace: ns.name },
    );
    prometheus = queue.prometheus;
    stopQueue = queue.stop;

    // Both adapters as a cluster runs them: certificates for their Services, Services, APIServices.
    ca = await createCA("e2e-upstreams-ca");
    const tlsFor = async (service: string) => {
      const leaf = await issueCertificate(ca, {
        commonName: `${service}.${ns!.name}.svc`,
        dnsNames: [`${service}.${ns!.name}.svc`],
        ipAddresses: ["127.0.0.1"],
        usage: "server",
      });
      writeFileSync(join(dir, `${service}.crt`), leaf.cert);
      writeFileSync(join(dir, `${service}.key`), leaf.key);
      return { certFile: join(dir, `${service}.crt`), keyFile: join(dir, `${service}.key`), ca: ca.cert };
    };
    const adapterTls = await tlsFor("prometheus-adapter");
    startAdapter = (port?: number) =>
      startPrometheusAdapter({
        dir,
        kubeconfig: cluster.kubeconfigPath,
        tls: adapterTls,
        prometheusUrl: prometheus!.url,
        config: ADAPTER_CONFIG,
        port,
      });
    adapter = await startAdapter();
    const build = kedaBuild();
    kedaCrds = build.crds.flatMap((f) => ["-f", f]);
    await kubectl(cluster, "apply", "--server-side", ...kedaCrds);
    await kubectl(cluster, "wait", "--for=condition=Established", ...kedaCrds);
    keda = await startKeda({
      build,
      dir,
      kubeconfig: cluster.kubeconfigPath,
      namespace: ns.name,
      grpcCa: await createCA("e2e-upstreams-keda-grpc-ca"),
      tls: await tlsFor("keda-metrics-apiserver"),
    });
    const register = async (name: string, service: string, port: number) => {
      await cluster.client.createOrReplace(`/api/v1/namespaces/${ns!.name}/services/${service}`, {
        ...buildLocalService({ namespace: ns!.name, name: service, port }),
      });
      const [version, ...group] = name.split(".");
      await cluster.client.createOrReplace(`${APISERVICES}/${name}`, {
        apiVersion: "apiregistration.k8s.io/v1",
        kind: "APIService",
        metadata: { name },
        spec: {
          group: group.join("."),
          version,
          service: { namespace: ns!.name, name: service, port },
          caBundle: Buffer.from(ca.cert).toString("base64"),
          groupPriorityMinimum: 100,
          versionPriority: 100,
        },
      });
    };
    await register(EXTERNAL, "keda-metrics-apiserver", keda.port);
    for (const name of CUSTOM) await register(name, "prometheus-adapter", adapter.port);

    // One HPA on each adapter's metrics (AverageValue 10: replicas = value / 10).
    apply(`${deploymentYaml("keda-app")}---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: keda-app}
spec:
  scaleTargetRef: {name: keda-app}
  minReplicaCount: 1
  maxReplicaCount: 8
  advanced: {horizontalPodAutoscalerConfig: {behavior: {scaleDown: {stabilizationWindowSeconds: 0}}}}
  triggers:
  - type: prometheus
    metadata:
      serverAddress: ${prometheus.url}
      query: 'sum(e2e_queue_messages{namespace="${ns.name}"})'
      threshold: "10"
      ignoreNullValues: "false"
`);
    const fast = "{scaleDown: {stabilizationWindowSeconds: 0}}";
    apply(
      `${deploymentYaml("adapter-external")}---\n${hpaYaml("adapter-external", { maxReplicas: 8, metrics: externalAverage("queue_messages", "10"), behavior: fast })}`,
    );
    apply(`${deploymentYaml("adapter-custom")}---
apiVersion: v1
kind: Service
metadata: {name: orders}
spec: {ports: [{port: 80}], selector: {app: orders}}
---
${hpaYaml("adapter-custom", {
  maxReplicas: 8,
  metrics:
    '[{type: Object, object: {describedObject: {apiVersion: v1, kind: Service, name: orders}, metric: {name: queue_depth}, target: {type: AverageValue, averageValue: "10"}}}]',
  behavior: fast,
})}`);
    kedaMetric = await eventually(
      async () => {
        const hpa = await cluster.client.get<{
          spec: {
            metrics: {
              external: { metric: { name: string; selector?: { matchLabels?: Record<string, string> } } };
            }[];
          };
        }>(`/apis/autoscaling/v2/namespaces/${ns!.name}/horizontalpodautoscalers/keda-hpa-keda-app`);
        const m = hpa.spec.metrics[0]!.external.metric;
        const labels = Object.entries(m.selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
        return { path: external(m.name), labelSelector: labels.join(",") };
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "KEDA's HPA" },
    );
    // Before Governor: one adapter per group. The adapter's external metric cannot be read —
    // the external APIService is KEDA's, which knows no such metric — so its HPA stays at 1.
    await eventually(
      async () =>
        expect(await all(false)).to.deep.equal({
          keda: 3,
          adapterExternal: 1,
          adapterCustom: 3,
        }),
      {
        timeoutMs: 180_000,
        intervalMs: 1000,
        what: "KEDA's and the adapter's custom HPA scaled to 3 on a queue of 30 before Governor came",
      },
    ).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}\nreads: ${JSON.stringify(await reads())}`);
    });
    const before = await reads();
    console.log(`      before Governor: ${JSON.stringify(before)}`);
    expect(before.adapterExternal).to.match(/^500 .*scaledObject name is not specified/);

    // Each adapter declared as a MetricsUpstream: KEDA's CA from the APIService Governor takes
    // over; the adapter's from a Secret, which Governor may read because it is granted here.
    await installCrds(cluster); // Governor's, MetricsUpstream among them (its start applies them too)
    writeFileSync(join(dir, "ca.crt"), ca.cert);
    await kubectl(
      cluster,
      "create",
      "secret",
      "generic",
      "adapter-ca",
      `--from-file=ca.crt=${join(dir, "ca.crt")}`,
      "-n",
      ns.name,
    );
    await kubectl(
      cluster,
      "create",
      "role",
      "governor-ca",
      "--verb=get",
      "--resource=secrets",
      "--resource-name=adapter-ca",
      "-n",
      ns.name,
    );
    await kubectl(
      cluster,
      "create",
      "rolebinding",
      "governor-ca",
      "--role=governor-ca",
      "--serviceaccount=governor-system:governor",
      "-n",
      ns.name,
    );
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricsUpstream
metadata: {name: e2e-keda}
spec:
  service: {namespace: ${ns.name}, name: keda-metrics-apiserver, port: ${keda.port}}
  groups: [external.metrics.k8s.io]
  metrics: ["s*-prometheus"]
---
apiVersion: governor.dev/v1alpha1
kind: MetricsUpstream
metadata: {name: e2e-prometheus-adapter}
spec:
  service: {namespace: ${ns.name}, name: prometheus-adapter, port: ${adapter.port}}
  groups: [custom.metrics.k8s.io, external.metrics.k8s.io]
  caSecretRef: {namespace: ${ns.name}, name: adapter-ca}
`,
    );
    governor = new GovernorProcess(cluster, { takeOver: false });
    await governor.start();
  });

  after(async () => {
    await governor?.terminate();
    // No APIService may be left pointing at an adapter that is going away.
    for (const name of [EXTERNAL, ...CUSTOM])
      await cluster?.client.delete(`${APISERVICES}/${name}`).catch(() => false);
    await governor?.uninstall();
    await kubectl(
      cluster,
      "delete",
      "metricsupstreams.governor.dev",
      "e2e-keda",
      "e2e-prometheus-adapter",
      "--ignore-not-found",
    ).catch(() => "");
    // Its ScaledObjects carry the operator's finalizer: deleted while it still runs.
    if (ns)
      await kubectl(
        cluster,
        "delete",
        "scaledobjects.keda.sh",
        "--all",
        "-n",
        ns.name,
        "--timeout=60s",
      ).catch(() => "");
    await keda?.stop();
    if (kedaCrds.length) await kubectl(cluster, "delete", "--ignore-not-found", ...kedaCrds).catch(() => "");
    await adapter?.stop();
    await stopQueue?.();
    await ns?.delete();
  });

  afterEach(async function () {
    if (this.currentTest?.state === "failed")
      console.error(
        `--- reads ---\n${JSON.stringify(await reads().catch(() => ({})))}\n--- Governor log tail ---\n${governor?.tail(60)}\n--- KEDA ---\n${keda?.log().slice(-2000)}\n--- prometheus-adapter ---\n${adapter?.log().slice(-2000)}`,
      );
  });

  it("takes over every adapter's APIServices, keeping each to give back; HPAs on KEDA's, the adapter's custom and external and Governor's metrics all scale", async () => {
    await eventually(
      async () => {
        for (const [name, owner] of [
          [EXTERNAL, "keda-metrics-apiserver"],
          ...CUSTOM.map((c) => [c, "prometheus-adapter"]),
        ] as const) {
          const held = await apiService(name);
          expect(held.spec.service, name).to.include({ namespace: "governor-system", name: "governor" });
          const kept = JSON.parse(held.metadata.annotations?.[REPLACED_ANNOTATION] ?? "{}") as {
            spec?: ApiService["spec"];
          };
          expect(kept.spec?.service, name).to.include({ namespace: ns!.name, name: owner });
        }
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "Governor holding the three APIServices" },
    );
    apply(backlog(40));
    apply(
      `${deploymentYaml("mine")}---\n${hpaYaml("mine", { maxReplicas: 8, metrics: externalAverage("governor_backlog", "10"), behavior: "{scaleDown: {stabilizationWindowSeconds: 0}}" })}`,
    );
    queueMessages = 50;
    await eventually(
      async () =>
        expect(await all()).to.deep.equal({ keda: 5, adapterExternal: 5, adapterCustom: 5, mine: 4 }),
      {
        timeoutMs: 180_000,
        intervalMs: 1000,
        what: "queue 50 → each adapter's HPA 5, backlog 40 → mine 4",
      },
    );
    console.log(`      through Governor: ${JSON.stringify(await reads())}`);
    await eventually(
      async () => {
        for (const name of ["e2e-keda", "e2e-prometheus-adapter"]) {
          const mu = await cluster.client.get<MetricsUpstream>(`${MUS}/${name}`);
          expect(mu.status?.conditions?.[0], name).to.include({
            type: "Available",
            status: "True",
            reason: "Listed",
          });
        }
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: "both MetricsUpstreams Available" },
    );
    const explained = spawnSync(
      "npm",
      ["run", "--silent", "governor", "--", "explain", "hpa/adapter-external", "-n", ns!.name],
      { cwd: ROOT, env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath }, encoding: "utf8" },
    );
    expect(explained.stdout, explained.stderr).to.include(
      "Governor forwards it to MetricsUpstream e2e-prometheus-adapter (it lists the metric)",
    );
  });

  it("loses only the killed adapter's metrics: the others' HPAs keep scaling, its metric is a 503 naming it, its MetricsUpstream says why", async () => {
    // KEDA's metrics server down: the adapter's and Governor's metrics go on.
    await keda!.adapter.stop();
    queueMessages = 60;
    apply(backlog(20));
    await eventually(
      async () =>
        expect(await all()).to.deep.equal({ keda: 5, adapterExternal: 6, adapterCustom: 6, mine: 2 }),
      {
        timeoutMs: 180_000,
        intervalMs: 1000,
        what: "KEDA down: queue 60 → the adapter's HPAs 6, backlog 20 → mine 2, KEDA's holds 5",
      },
    );
    const withoutKeda = await reads();
    console.log(`      KEDA killed: ${JSON.stringify(withoutKeda)}`);
    expect(withoutKeda.keda).to.match(/^503 .*MetricsUpstream e2e-keda \(Service/);
    await eventually(
      async () => {
        const mu = await cluster.client.get<MetricsUpstream>(`${MUS}/e2e-keda`);
        expect(mu.status?.conditions?.[0]).to.include({ status: "False", reason: "DiscoveryFailed" });
        expect(mu.status?.lastError).to.include("MetricsUpstream e2e-keda");
      },
      { timeoutMs: 90_000, intervalMs: 1000, what: "MetricsUpstream e2e-keda saying its adapter is down" },
    );
    await keda!.restartAdapter();
    await eventually(async () => expect(await replicas("keda-app")).to.equal(6), {
      timeoutMs: 180_000,
      intervalMs: 1000,
      what: "KEDA back: its HPA 6",
    });

    // prometheus-adapter down: KEDA's and Governor's metrics go on.
    await adapter!.stop();
    queueMessages = 70;
    apply(backlog(30));
    await eventually(
      async () =>
        expect(await all()).to.deep.equal({ keda: 7, adapterExternal: 6, adapterCustom: 6, mine: 3 }),
      {
        timeoutMs: 180_000,
        intervalMs: 1000,
        what: "the adapter down: queue 70 → KEDA's HPA 7, backlog 30 → mine 3, the adapter's hold 6",
      },
    );
    const withoutAdapter = await reads();
    console.log(`      prometheus-adapter killed: ${JSON.stringify(withoutAdapter)}`);
    expect(withoutAdapter.adapterExternal).to.match(/^503 .*MetricsUpstream e2e-prometheus-adapter/);
    expect(withoutAdapter.adapterCustom).to.match(/^503 .*MetricsUpstream e2e-prometheus-adapter/);
    adapter = await startAdapter(adapter!.port);
    await eventually(
      async () => expect(await all()).to.deep.include({ adapterExternal: 7, adapterCustom: 7 }),
      {
        timeoutMs: 180_000,
        intervalMs: 1000,
        what: "the adapter back: its HPAs 7",
      },
    );
  });

  it("governor uninstall gives each adapter its APIServices back: KEDA's and the adapter's custom HPAs keep scaling, its external metric has no way in again", async () => {
    await governor!.terminate();
    const r = await governor!.uninstall();
    expect(r.code, r.output).to.equal(0);
    expect((await apiService(EXTERNAL)).spec.service).to.include({
      namespace: ns!.name,
      name: "keda-metrics-apiserver",
    });
    for (const name of CUSTOM)
      expect((await apiService(name)).spec.service, name).to.include({
        namespace: ns!.name,
        name: "prometheus-adapter",
      });
    queueMessages = 40;
    await eventually(async () => expect(await all()).to.deep.include({ keda: 4, adapterCustom: 4 }), {
      timeoutMs: 180_000,
      intervalMs: 1000,
      what: "queue 40 → KEDA's and the adapter's custom HPA 4, served by the adapters alone again",
    });
    // As before Governor: the adapter's external metric has no way in, and its HPA holds.
    const after = await reads();
    console.log(`      after uninstall: ${JSON.stringify(after)}`);
    expect(after.adapterExternal).to.match(/^500 .*scaledObject name is not specified/);
    expect(await replicas("adapter-external")).to.equal(7);
  });
});
