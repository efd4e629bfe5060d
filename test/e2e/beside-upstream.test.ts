/**
 * Governor in front of a real upstream adapter (ADR 0011): prometheus-adapter, built from
 * its Go module, holds `v1beta1.external.metrics.k8s.io` as a cluster that runs it has it.
 * Governor starts with `--forward-external` naming the adapter's Service (and without
 * `--take-over-apiservices`: naming the upstream is the one explicit step), takes the
 * APIService over, serves its own external metric and passes the adapter's on. The real
 * HPA controller scales on both; the adapter killed, Governor's metric keeps working and the
 * APIService stays Available; `governor uninstall` gives the adapter its APIService back.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { parseServingSecret } from "../../src/certs/serving-secret.js";
import { KubeApiError } from "../../src/k8s/client.js";
import { REPLACED_ANNOTATION, buildLocalService } from "../../src/manifests/api-service.js";
import { httpsGet } from "../../src/testing/https-get.js";
import {
  type PrometheusAdapterProcess,
  startPrometheusAdapter,
} from "../../src/testing/prometheus-adapter.js";
import { ROOT, applyYaml, freshNamespace, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";
import { TestPrometheus } from "../support/prometheus.js";

const APISERVICE = "v1beta1.external.metrics.k8s.io";
const APISERVICE_PATH = `/apis/apiregistration.k8s.io/v1/apiservices/${APISERVICE}`;
const ADAPTER = "prometheus-adapter";

/** One external rule: the queue gauge, per namespace, as `queue_messages`. */
const ADAPTER_CONFIG = `rules: []
externalRules:
- seriesQuery: 'e2e_queue_messages{namespace!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
  name: {matches: "^e2e_(.*)$", as: "\${1}"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
`;

interface ApiService {
  metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: { service?: { namespace: string; name: string; port: number }; caBundle?: string };
  status?: { conditions?: { type: string; status: string; message?: string }[] };
}

/** A Deployment and an HPA on one external metric (AverageValue 10 → replicas = value / 10). */
const scaledOn = (name: string, metric: string) => `apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec: {containers: [{name: app, image: example.invalid/${name}}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ${name}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ${name}}
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: External, external: {metric: {name: ${metric}}, target: {type: AverageValue, averageValue: "10"}}}]
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
`;

const backlog = (value: number) => `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: governor-backlog}
spec:
  metric: governor_backlog
  subject: {external: {}}
  interval: 1s
  source: {static: {value: "${value}"}}
`;

describe("Governor in front of prometheus-adapter: one APIService, both adapters' metrics (e2e)", function () {
  this.timeout(600_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>> | undefined;
  let target: Server | undefined;
  let prometheus: TestPrometheus | undefined;
  let adapter: PrometheusAdapterProcess | undefined;
  let governor: GovernorProcess | undefined;
  let ca: KeyPair;
  let dir: string;
  let queueMessages = 30;

  const apply = (yaml: string) => applyYaml(cluster, ns!.name, yaml);
  const replicas = async (name: string) =>
    (
      await cluster.client.get<{ spec: { replicas: number } }>(
        `/apis/apps/v1/namespaces/${ns!.name}/deployments/${name}`,
      )
    ).spec.replicas;
  const apiService = () => cluster.client.get<ApiService>(APISERVICE_PATH);
  const externalPath = (metric: string) =>
    `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns!.name}/${metric}`;
  const startAdapter = async (port?: number) => {
    adapter = await startPrometheusAdapter({
      dir,
      kubeconfig: cluster.kubeconfigPath,
      tls: { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key"), ca: ca.cert },
      prometheusUrl: prometheus!.url,
      config: ADAPTER_CONFIG,
      port,
    });
  };

  before(async function () {
    this.timeout(600_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "beside");
    dir = mkdtempSync(join(tmpdir(), "governor-upstream-"));
    // Prometheus scrapes one queue gauge, labelled with the test's namespace.
    target = createServer((_req, res) => {
      res
        .writeHead(200, { "content-type": "text/plain; version=0.0.4" })
        .end(`# TYPE e2e_queue_messages gauge\ne2e_queue_messages{queue="orders"} ${queueMessages}\n`);
    });
    await new Promise<void>((r) => target!.listen(0, "127.0.0.1", () => r()));
    prometheus = new TestPrometheus([
      { address: `127.0.0.1:${(target.address() as AddressInfo).port}`, labels: { namespace: ns.name } },
    ]);
    await prometheus.start();

    // The adapter as a cluster runs it: a certificate for its Service name, the Service, its APIService.
    ca = await createCA("e2e-upstream-ca");
    const leaf = await issueCertificate(ca, {
      commonName: `${ADAPTER}.${ns.name}.svc`,
      dnsNames: [`${ADAPTER}.${ns.name}.svc`],
      ipAddresses: ["127.0.0.1"],
      usage: "server",
    });
    writeFileSync(join(dir, "tls.crt"), leaf.cert);
    writeFileSync(join(dir, "tls.key"), leaf.key);
    await startAdapter();
    await cluster.client.create(
      `/api/v1/namespaces/${ns.name}/services`,
      buildLocalService({ namespace: ns.name, name: ADAPTER, port: adapter!.port }),
    );
    await cluster.client.createOrReplace(APISERVICE_PATH, {
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: { name: APISERVICE, labels: { "app.kubernetes.io/name": ADAPTER } },
      spec: {
        group: "external.metrics.k8s.io",
        version: "v1beta1",
        service: { namespace: ns.name, name: ADAPTER, port: adapter!.port },
        caBundle: Buffer.from(ca.cert).toString("base64"),
        groupPriorityMinimum: 100,
        versionPriority: 100,
      },
    });
    await eventually(
      async () => {
        const list = await cluster.client.get<{ items: { value: string }[] }>(externalPath("queue_messages"));
        expect(list.items.map((i) => i.value)).to.deep.equal(["30"]);
      },
      { timeoutMs: 120_000, intervalMs: 1000, what: "prometheus-adapter serving queue_messages on its own" },
    );
    apply(scaledOn("theirs", "queue_messages"));
    await eventually(async () => expect(await replicas("theirs")).to.equal(3), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      what: "the HPA on the adapter's metric scaled to 3 before Governor came",
    });

    governor = new GovernorProcess(cluster, {
      takeOver: false,
      extraArgs: ["--forward-external", `${ns.name}/${ADAPTER}:${adapter!.port}`],
    });
    await governor.start();
  });

  after(async () => {
    await governor?.terminate();
    // No APIService may be left pointing at an adapter that is going away.
    await cluster?.client.delete(APISERVICE_PATH).catch(() => false);
    await governor?.uninstall();
    await adapter?.stop();
    await prometheus?.stop();
    target?.close();
    await ns?.delete();
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed")
      console.error(
        `--- Governor log tail ---\n${governor?.tail(60)}\n--- adapter log tail ---\n${adapter?.log().slice(-3000)}`,
      );
  });

  it("takes the adapter's APIService over (keeping it to give back); HPAs on its metric and on Governor's both scale", async () => {
    await eventually(
      async () => {
        const held = await apiService();
        expect(held.spec.service).to.include({ namespace: "governor-system", name: "governor" });
        const kept = JSON.parse(held.metadata.annotations?.[REPLACED_ANNOTATION] ?? "{}") as {
          spec?: ApiService["spec"];
        };
        expect(kept.spec?.service).to.include({ namespace: ns!.name, name: ADAPTER });
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "Governor holding the APIService" },
    );
    apply(backlog(40));
    apply(scaledOn("mine", "governor_backlog"));
    queueMessages = 50;
    await eventually(
      async () =>
        expect({ theirs: await replicas("theirs"), mine: await replicas("mine") }).to.deep.equal({
          theirs: 5,
          mine: 4,
        }),
      { timeoutMs: 120_000, intervalMs: 1000, what: "queue 50 → theirs 5, backlog 40 → mine 4" },
    );
    const discovery = await cluster.client.get<{ resources: { name: string }[] }>(
      "/apis/external.metrics.k8s.io/v1beta1",
    );
    expect(discovery.resources.map((r) => r.name)).to.include.members(["governor_backlog", "queue_messages"]);
    const explained = spawnSync(
      "npm",
      ["run", "--silent", "governor", "--", "explain", "hpa/theirs", "-n", ns!.name],
      {
        cwd: ROOT,
        env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
        encoding: "utf8",
      },
    );
    expect(explained.stdout, explained.stderr).to.include(
      `Governor forwards it to the upstream adapter (Service ${ns!.name}/${ADAPTER})`,
    );
  });

  it("a caller without rights on the adapter's metric is refused by Governor itself (403), one with rights gets the adapter's answer", async () => {
    await cluster.client.create(`/api/v1/namespaces/${ns!.name}/serviceaccounts`, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "nobody" },
    });
    const { status } = await cluster.client.create<{ status: { token: string } }>(
      `/api/v1/namespaces/${ns!.name}/serviceaccounts/nobody/token`,
      { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 600 } },
    );
    const secret = parseServingSecret(
      await cluster.client.get("/api/v1/namespaces/governor-system/secrets/governor-serving-cert"),
    )!;
    const direct = (headers: Record<string, string>, client?: { cert: string; key: string }) =>
      httpsGet(`https://127.0.0.1:${governor!.port}${externalPath("queue_messages")}`, {
        ca: secret.caBundle,
        servername: "localhost",
        headers,
        ...client,
      });
    const refused = await direct({ authorization: `Bearer ${status.token}` });
    expect(refused.status, refused.text).to.equal(403);
    expect(refused.json.message).to.match(/system:serviceaccount:[^:]+:nobody/);
    const admin = await cluster.client.identity();
    const answered = await direct({ ...admin.headers }, { cert: admin.cert!, key: admin.key! });
    expect(answered.status, answered.text).to.equal(200);
    expect(answered.json.items.map((i: { value: string }) => i.value)).to.deep.equal(["50"]);
  });

  it("with the adapter killed, Governor's HPA still scales and the APIService stays Available; the adapter's metric is a 503 naming it", async () => {
    const port = adapter!.port;
    await adapter!.stop();
    apply(backlog(20));
    const unavailable: string[] = [];
    await eventually(
      async () => {
        const available = (await apiService()).status?.conditions?.find((c) => c.type === "Available");
        if (available?.status !== "True") unavailable.push(available?.message ?? "no Available condition");
        expect(await replicas("mine")).to.equal(2);
      },
      { timeoutMs: 120_000, intervalMs: 1000, what: "backlog 20 → mine 2, with the adapter gone" },
    );
    expect(unavailable, "the APIService went unavailable").to.deep.equal([]);
    const err = await cluster.client.get(externalPath("queue_messages")).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(KubeApiError);
    expect((err as KubeApiError).statusCode).to.equal(503);
    expect((err as KubeApiError).message).to.include(`Service ${ns!.name}/${ADAPTER}:${port}`);
    expect(await replicas("theirs"), "the adapter's HPA holds its replicas").to.equal(5);
    await startAdapter(port);
  });

  it("governor uninstall gives the adapter its APIService back as it was, and the adapter's HPA keeps working", async () => {
    await governor!.terminate();
    const r = await governor!.uninstall();
    expect(r.code, r.output).to.equal(0);
    expect(r.output).to.include(`gave back apiservice/${APISERVICE} to Service ${ns!.name}/${ADAPTER}`);
    const back = await apiService();
    expect(back.spec.service).to.deep.equal({ namespace: ns!.name, name: ADAPTER, port: adapter!.port });
    expect(back.spec.caBundle).to.equal(Buffer.from(ca.cert).toString("base64"));
    expect(back.metadata.labels).to.include({ "app.kubernetes.io/name": ADAPTER });
    expect(back.metadata.annotations?.[REPLACED_ANNOTATION]).to.equal(undefined);
    queueMessages = 70;
    await eventually(async () => expect(await replicas("theirs")).to.equal(7), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      what: "queue 70 → theirs 7, served by the adapter alone again",
    });
  });
});
