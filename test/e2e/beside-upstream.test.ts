/**
 * Governor in front of a real upstream adapter (ADR 0011), once for each of the two a
 * cluster is likely to run, both built from their Go modules: prometheus-adapter, and KEDA
 * (its operator, which runs the scalers, and its metrics server). The upstream holds
 * `v1beta1.external.metrics.k8s.io` as a cluster that runs it has it, and an HPA scales on
 * one of its metrics (a queue gauge in Prometheus). Governor starts with `--forward-external`
 * naming the upstream's Service (and without `--take-over-apiservices`: naming the upstream
 * is the one explicit step), takes the APIService over, serves its own external metric and
 * passes the upstream's on. The real HPA controller scales on both; the upstream's metrics
 * server killed, Governor's metric keeps working and the APIService stays Available;
 * `governor uninstall` gives the upstream its APIService back.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { parseServingSecret } from "../../src/certs/serving-secret.js";
import { KubeApiError } from "../../src/k8s/client.js";
import { REPLACED_ANNOTATION, buildLocalService } from "../../src/manifests/api-service.js";
import { httpsGet } from "../support/https-get.js";
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
  kubectl,
  type TestCluster,
  useCluster,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { governorCliAsync } from "../support/governor-cli.js";
import { GovernorProcess } from "../support/governor-process.js";
import { type TestPrometheus, scrapedSeries } from "../support/prometheus.js";

const APISERVICE = "v1beta1.external.metrics.k8s.io";
const APISERVICE_PATH = `/apis/apiregistration.k8s.io/v1/apiservices/${APISERVICE}`;

interface ApiService {
  metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: { service?: { namespace: string; name: string; port: number }; caBundle?: string };
  status?: { conditions?: { type: string; status: string; message?: string }[] };
}

interface Hpa {
  spec: {
    metrics: {
      external: { metric: { name: string; selector?: { matchLabels?: Record<string, string> } } };
    }[];
  };
}

const deployment = (name: string) => `apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec: {containers: [{name: app, image: example.invalid/${name}}]}
`;

/** A Deployment and an HPA on one external metric (AverageValue 10 → replicas = value / 10). */
const scaledOn = (name: string, metric: string) => `${deployment(name)}---
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

/** What the scenario knows of a running upstream adapter, and does to it. */
interface Upstream {
  /** Its metrics server's port (its Service's and APIService's). */
  port: number;
  /** The objects that make an HPA on one of its metrics (the queue gauge, AverageValue 10)
   * scale the Deployment `theirs`, and that HPA's name. */
  theirs: string;
  hpa: string;
  /** Metrics its discovery lists that the test checks (none of KEDA's: it lists only the
   * placeholder `externalmetrics`; its metric names are per ScaledObject). */
  listed: string[];
  /** Kills its metrics server, the process the APIService points at. */
  kill(): Promise<void>;
  /** Starts its metrics server again, on the same port. */
  revive(): Promise<void>;
  log(): string;
  /** Removes what it made in the cluster (while it still runs) and stops it. */
  teardown(): Promise<void>;
}

/** What an upstream is started with. */
interface UpstreamContext {
  cluster: TestCluster;
  namespace: string;
  dir: string;
  /** Its serving certificate (for its Service's name) and key files, and their CA. */
  tls: { certFile: string; keyFile: string; ca: string };
  prometheusUrl: string;
}

interface UpstreamKind {
  name: string;
  /** Its Service's name, and its APIService's `app.kubernetes.io/name`. */
  service: string;
  start(ctx: UpstreamContext): Promise<Upstream>;
}

/** One external rule: the queue gauge, per namespace, as `queue_messages`. */
const PROMETHEUS_ADAPTER_CONFIG = `rules: []\n${QUEUE_EXTERNAL_RULES}`;

const PROMETHEUS_ADAPTER: UpstreamKind = {
  name: "prometheus-adapter",
  service: "prometheus-adapter",
  async start(ctx) {
    const start = (port?: number) =>
      startPrometheusAdapter({
        dir: ctx.dir,
        kubeconfig: ctx.cluster.kubeconfigPath,
        tls: ctx.tls,
        prometheusUrl: ctx.prometheusUrl,
        config: PROMETHEUS_ADAPTER_CONFIG,
        port,
      });
    let adapter: PrometheusAdapterProcess = await start();
    return {
      port: adapter.port,
      theirs: scaledOn("theirs", "queue_messages"),
      hpa: "theirs",
      listed: ["queue_messages"],
      kill: () => adapter.stop(),
      revive: async () => {
        adapter = await start(adapter.port);
      },
      log: () => adapter.log().slice(-3000),
      teardown: () => adapter.stop(),
    };
  },
};

/** KEDA's operator and metrics server; a ScaledObject with a Prometheus trigger on the queue
 * gauge, from which KEDA makes the HPA `keda-hpa-theirs`. */
const KEDA: UpstreamKind = {
  name: "KEDA",
  service: "keda-metrics-apiserver",
  async start(ctx) {
    const build = kedaBuild();
    const crds = build.crds.flatMap((f) => ["-f", f]);
    await kubectl(ctx.cluster, "apply", "--server-side", ...crds);
    await kubectl(ctx.cluster, "wait", "--for=condition=Established", ...crds);
    const keda: KedaProcesses = await startKeda({
      build,
      dir: ctx.dir,
      kubeconfig: ctx.cluster.kubeconfigPath,
      namespace: ctx.namespace,
      grpcCa: await createCA("e2e-keda-grpc-ca"),
      tls: ctx.tls,
    });
    return {
      port: keda.port,
      theirs: `${deployment("theirs")}---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: theirs}
spec:
  scaleTargetRef: {name: theirs}
  minReplicaCount: 1
  maxReplicaCount: 8
  advanced:
    horizontalPodAutoscalerConfig:
      behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
  triggers:
  - type: prometheus
    metadata:
      serverAddress: ${ctx.prometheusUrl}
      query: 'sum(e2e_queue_messages{namespace="${ctx.namespace}"})'
      threshold: "10"
      # An empty answer (a scrape this busy machine missed marks the series stale) is an
      # error, so the HPA holds, rather than KEDA's default of 0, which scales it to 1.
      ignoreNullValues: "false"
`,
      hpa: "keda-hpa-theirs",
      listed: [],
      kill: () => keda.adapter.stop(),
      revive: () => keda.restartAdapter(),
      log: () => keda.log(),
      teardown: async () => {
        // Its ScaledObjects carry the operator's finalizer: deleted while it still runs.
        await kubectl(
          ctx.cluster,
          "delete",
          "scaledobjects.keda.sh",
          "--all",
          "-n",
          ctx.namespace,
          "--timeout=60s",
        );
        await keda.stop();
        await kubectl(ctx.cluster, "delete", "--ignore-not-found", ...crds);
      },
    };
  },
};

for (const kind of [PROMETHEUS_ADAPTER, KEDA])
  describe(`Governor in front of ${kind.name}: one APIService, both adapters' metrics (e2e)`, function () {
    this.timeout(600_000);
    let cluster: TestCluster;
    let ns: Awaited<ReturnType<typeof freshNamespace>> | undefined;
    let stopQueue: (() => Promise<void>) | undefined;
    let prometheus: TestPrometheus | undefined;
    let upstream: Upstream | undefined;
    let governor: GovernorProcess | undefined;
    let ca: KeyPair;
    let queueMessages = 30;
    /** The path and label selector of the upstream's metric, as its HPA asks for it. */
    let their: { path: string; labelSelector?: string };
    /** Asks the aggregator for the upstream's metric, as its HPA does. */
    const theirQuery = () =>
      their.labelSelector ? `?labelSelector=${encodeURIComponent(their.labelSelector)}` : "";
    const getTheirs = () =>
      cluster.client.get<{ items: { value: string }[] }>(their.path, { labelSelector: their.labelSelector });

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

    before(async function () {
      this.timeout(1_800_000); // KEDA's first build, on a fresh machine
      cluster = await useCluster();
      ns = await freshNamespace(cluster, "beside");
      const dir = mkdtempSync(join(tmpdir(), "governor-upstream-"));
      // Prometheus scrapes one queue gauge, labelled with the test's namespace.
      const queue = await scrapedSeries(
        () => `# TYPE e2e_queue_messages gauge\ne2e_queue_messages{queue="orders"} ${queueMessages}\n`,
        { namespace: ns.name },
      );
      prometheus = queue.prometheus;
      stopQueue = queue.stop;

      // The upstream as a cluster runs it: a certificate for its Service name, the Service, its APIService.
      ca = await createCA("e2e-upstream-ca");
      const leaf = await issueCertificate(ca, {
        commonName: `${kind.service}.${ns.name}.svc`,
        dnsNames: [`${kind.service}.${ns.name}.svc`],
        ipAddresses: ["127.0.0.1"],
        usage: "server",
      });
      writeFileSync(join(dir, "tls.crt"), leaf.cert);
      writeFileSync(join(dir, "tls.key"), leaf.key);
      upstream = await kind.start({
        cluster,
        namespace: ns.name,
        dir,
        tls: { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key"), ca: ca.cert },
        prometheusUrl: prometheus.url,
      });
      await cluster.client.create(
        `/api/v1/namespaces/${ns.name}/services`,
        buildLocalService({ namespace: ns.name, name: kind.service, port: upstream.port }),
      );
      await cluster.client.createOrReplace(APISERVICE_PATH, {
        apiVersion: "apiregistration.k8s.io/v1",
        kind: "APIService",
        metadata: { name: APISERVICE, labels: { "app.kubernetes.io/name": kind.service } },
        spec: {
          group: "external.metrics.k8s.io",
          version: "v1beta1",
          service: { namespace: ns.name, name: kind.service, port: upstream.port },
          caBundle: Buffer.from(ca.cert).toString("base64"),
          groupPriorityMinimum: 100,
          versionPriority: 100,
        },
      });
      apply(upstream.theirs);
      their = await eventually(
        async () => {
          const hpa = await cluster.client.get<Hpa>(
            `/apis/autoscaling/v2/namespaces/${ns!.name}/horizontalpodautoscalers/${upstream!.hpa}`,
          );
          const [first] = hpa.spec.metrics;
          if (!first) throw new Error(`HPA ${upstream!.hpa} has no metric`);
          const { name, selector } = first.external.metric;
          const labels = Object.entries(selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
          return { path: externalPath(name), labelSelector: labels.length ? labels.join(",") : undefined };
        },
        { timeoutMs: 60_000, intervalMs: 500, what: `HPA ${upstream.hpa}` },
      );
      await eventually(
        async () => {
          const list = await getTheirs();
          expect(list.items.map((i) => i.value)).to.deep.equal(["30"]);
        },
        { timeoutMs: 120_000, intervalMs: 1000, what: `${kind.name} serving ${their.path} on its own` },
      );
      await eventually(async () => expect(await replicas("theirs")).to.equal(3), {
        timeoutMs: 120_000,
        intervalMs: 1000,
        what: `the HPA on ${kind.name}'s metric scaled to 3 before Governor came`,
      });

      governor = new GovernorProcess(cluster, {
        takeOver: false,
        extraArgs: ["--forward-external", `${ns.name}/${kind.service}:${upstream.port}`],
      });
      await governor.start();
    });

    after(async () => {
      await governor?.terminate();
      // No APIService may be left pointing at an adapter that is going away.
      await cluster?.client.delete(APISERVICE_PATH).catch(() => false);
      await governor?.uninstall();
      await upstream?.teardown();
      await stopQueue?.();
      await ns?.delete();
    });

    afterEach(function () {
      if (this.currentTest?.state === "failed")
        console.error(
          `--- Governor log tail ---\n${governor?.tail(60)}\n--- ${kind.name} log tail ---\n${upstream?.log()}`,
        );
    });

    it(`takes ${kind.name}'s APIService over (keeping it to give back); HPAs on its metric and on Governor's both scale`, async () => {
      await eventually(
        async () => {
          const held = await apiService();
          expect(held.spec.service).to.include({ namespace: "governor-system", name: "governor" });
          const kept = JSON.parse(held.metadata.annotations?.[REPLACED_ANNOTATION] ?? "{}") as {
            spec?: ApiService["spec"];
          };
          expect(kept.spec?.service).to.include({ namespace: ns!.name, name: kind.service });
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
      expect(discovery.resources.map((r) => r.name)).to.include.members([
        "governor_backlog",
        ...upstream!.listed,
      ]);
      const explained = spawnSync(
        "npm",
        ["run", "--silent", "governor", "--", "explain", `hpa/${upstream!.hpa}`, "-n", ns!.name],
        {
          cwd: ROOT,
          env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
          encoding: "utf8",
        },
      );
      expect(explained.stdout, explained.stderr).to.include(
        `Governor forwards it to the upstream external metrics adapter (Service ${ns!.name}/${kind.service}:${upstream!.port}) (the catch-all, --forward-external)`,
      );
    });

    it(`a caller without rights on ${kind.name}'s metric is refused by Governor itself (403), one with rights gets ${kind.name}'s answer`, async () => {
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
        httpsGet(`https://127.0.0.1:${governor!.port}${their.path}${theirQuery()}`, {
          ca: secret.caBundle,
          servername: "localhost",
          headers,
          ...client,
        });
      const refused = await direct({ authorization: `Bearer ${status.token}` });
      expect(refused.status, refused.text).to.equal(403);
      expect(refused.json.message).to.match(/system:serviceaccount:[^:]+:nobody/);
      const admin = await cluster.client.identity();
      // Eventually: an upstream that queries Prometheus on each request (both do) answers 5xx —
      // passed on as it is — for the second after a scrape this busy machine missed.
      await eventually(
        async () => {
          const answered = await direct({ ...admin.headers }, { cert: admin.cert!, key: admin.key! });
          expect(answered.status, answered.text).to.equal(200);
          expect(answered.json.items.map((i: { value: string }) => i.value)).to.deep.equal(["50"]);
        },
        { timeoutMs: 15_000, intervalMs: 500, what: `${kind.name}'s answer through Governor` },
      );
    });

    it(`with ${kind.name}'s metrics server killed, Governor's HPA still scales and the APIService stays Available; ${kind.name}'s metric is a 503 naming it`, async () => {
      await upstream!.kill();
      apply(backlog(20));
      const unavailable: string[] = [];
      await eventually(
        async () => {
          const available = (await apiService()).status?.conditions?.find((c) => c.type === "Available");
          if (available?.status !== "True") unavailable.push(available?.message ?? "no Available condition");
          expect(await replicas("mine")).to.equal(2);
        },
        { timeoutMs: 120_000, intervalMs: 1000, what: "backlog 20 → mine 2, with the upstream gone" },
      );
      expect(unavailable, "the APIService went unavailable").to.deep.equal([]);
      const err = await getTheirs().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KubeApiError);
      expect((err as KubeApiError).statusCode).to.equal(503);
      expect((err as KubeApiError).message).to.include(
        `Service ${ns!.name}/${kind.service}:${upstream!.port}`,
      );
      expect(await replicas("theirs"), `${kind.name}'s HPA holds its replicas`).to.equal(5);
      await upstream!.revive();
    });

    it(`governor uninstall gives ${kind.name} its APIService back as it was, ${kind.name}'s HPA keeps working, and governor simulate on it predicts its next sync`, async () => {
      await governor!.terminate();
      const r = await governor!.uninstall();
      expect(r.code, r.output).to.equal(0);
      expect(r.output).to.include(
        `gave back apiservice/${APISERVICE} to Service ${ns!.name}/${kind.service}`,
      );
      const back = await apiService();
      expect(back.spec.service).to.deep.equal({
        namespace: ns!.name,
        name: kind.service,
        port: upstream!.port,
      });
      expect(back.spec.caBundle).to.equal(Buffer.from(ca.cert).toString("base64"));
      expect(back.metadata.labels).to.include({ "app.kubernetes.io/name": kind.service });
      expect(back.metadata.annotations?.[REPLACED_ANNOTATION]).to.equal(undefined);

      // governor simulate on the HPA that reads the upstream's metric through the aggregator
      // (Governor no longer in the path): now, and what a queue of 70 would do.
      const hpaPath = `/apis/autoscaling/v2/namespaces/${ns!.name}/horizontalpodautoscalers/${upstream!.hpa}`;
      const metric = their.path.split("/").pop()!;
      const simulate = async (...args: string[]) => {
        const r = await governorCliAsync(
          cluster,
          "simulate",
          `hpa/${upstream!.hpa}`,
          "-n",
          ns!.name,
          "-o",
          "json",
          ...args,
        );
        expect(r.code, r.out + r.err).to.equal(0);
        return JSON.parse(r.out) as {
          metrics: { current?: string; proposal?: number }[];
          next: { desiredReplicas: number };
        };
      };
      const now = await eventually(
        async () => {
          const n = await simulate();
          // Read as the HPA reads it: 50 over 5 replicas.
          expect(n.metrics[0]).to.include({ current: "10", proposal: 5 });
          return n;
        },
        { timeoutMs: 30_000, intervalMs: 1000, what: `simulate reading ${kind.name}'s metric` },
      );
      expect(now.next.desiredReplicas).to.equal(5);
      const predicted = await simulate("--set", `${metric}=70`);
      expect(predicted.next.desiredReplicas).to.equal(7);
      queueMessages = 70;
      const decided = await eventually(
        async () => {
          const d = (await cluster.client.get<{ status?: { desiredReplicas?: number } }>(hpaPath)).status
            ?.desiredReplicas;
          expect(d).to.not.equal(5);
          return d;
        },
        { timeoutMs: 120_000, intervalMs: 200, what: `${kind.name}'s HPA deciding anew on a queue of 70` },
      );
      expect(decided, `the HPA's next decision against simulate's --set ${metric}=70`).to.equal(
        predicted.next.desiredReplicas,
      );
      await eventually(async () => expect(await replicas("theirs")).to.equal(7), {
        timeoutMs: 120_000,
        intervalMs: 1000,
        what: `queue 70 → theirs 7, served by ${kind.name} alone again`,
      });
    });
  });
