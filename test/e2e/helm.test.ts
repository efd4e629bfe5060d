/**
 * The Helm chart (charts/governor) as users run it, with helm built from its Go module
 * (hack/helm.sh): it lints; with default values it renders exactly what `kubectl apply -k
 * config/default` applies (less the Namespace), so the two cannot drift (the API Priority and
 * Fairness objects included; the NetworkPolicy, opt-in, as config/network-policy); the apiserver
 * accepts it (server-side dry run); `helm install` runs two Ready replicas on the node
 * agent's Nodes with the APIServices Available; `helm upgrade` rolls them; `helm uninstall`
 * leaves no APIService behind, so the namespace deletes without hanging.
 */
import { execFile, execFileSync } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { parseAllDocuments } from "yaml";
import { ROOT, kubectl, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { buildOnce, requireNodeAgent } from "../support/in-cluster.js";

const execFileP = promisify(execFile);
const SYSTEM = "governor-system";
const CHART = join(ROOT, "charts/governor");
const APISERVICES = [
  "v1beta1.custom.metrics.k8s.io",
  "v1beta2.custom.metrics.k8s.io",
  "v1beta1.external.metrics.k8s.io",
];

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; annotations?: Record<string, string> };
  spec?: { template?: { spec?: { containers?: { args?: string[]; ports?: unknown[] }[] } } };
}

const objects = (text: string): Obj[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
const key = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;

describe("the Helm chart: lint, the same objects as config/default, install, upgrade, uninstall (e2e)", function () {
  this.timeout(300_000);
  let cluster: TestCluster;
  let helmBin: string;
  const helm = async (...args: string[]) =>
    (
      await execFileP(helmBin, args, {
        env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
        maxBuffer: 16 << 20,
      })
    ).stdout;

  before(async function () {
    this.timeout(60 * 60_000);
    helmBin = execFileSync("bash", [join(ROOT, "hack/helm.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    }).trim();
    cluster = await useCluster();
  });

  it("passes helm lint, with the defaults and with every option turned on", async () => {
    await helm("lint", "--strict", CHART);
    await helm(
      "lint",
      "--strict",
      CHART,
      "--set",
      "serviceMonitor.enabled=true,apis=external,takeOverAPIServices=true,logLevel=debug",
      "--set",
      "sourcePolicy.allowCIDRs={10.0.0.0/8},sourcePolicy.denyCIDRs={10.1.0.0/16}",
      "--set",
      "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.10/32}",
      "--set",
      "prometheusNamespaceLabel=kubernetes_namespace,allowUnscopedPrometheusQueries=true,allowHostNetworkScrape=true",
      "--set-json",
      'sourceBackendBudget={"qps":0,"overrides":{"http://prometheus.monitoring:9090":20}}',
      "--set",
      "otlp.enabled=true,otlp.audience=metrics,otlp.maxRequestBytes=8Mi",
    );
  });

  it("otlp.enabled opens OTLP's port on the pods, passes its limits, and lets the NetworkPolicy admit pushers and the replicas relaying to each other", async () => {
    const rendered = objects(
      await helm(
        "template",
        "governor",
        CHART,
        "--set",
        "otlp.enabled=true,otlp.audience=metrics,otlp.pointsPerSecond=500,otlp.maxSeriesPerNamespace=2000",
        "--set",
        "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.10/32}",
        "--set-json",
        'otlp.from=[{"namespaceSelector":{"matchLabels":{"otlp":"push"}}}]',
      ),
    );
    const container = rendered.find((o) => o.kind === "Deployment")!.spec?.template?.spec?.containers?.[0];
    expect(container?.args).to.include.members([
      "--otlp-port=4318",
      "--otlp-audience=metrics",
      "--otlp-points-per-second=500",
      "--otlp-max-series-per-namespace=2000",
    ]);
    expect(container?.ports).to.deep.include({ name: "otlp-http", containerPort: 4318 });
    const policy = rendered.find((o) => o.kind === "NetworkPolicy") as Obj & {
      spec: { ingress: { ports: { port: number }[]; from?: unknown[] }[] };
    };
    expect(policy.spec.ingress.find((r) => r.ports[0]?.port === 4318)?.from).to.deep.equal([
      { namespaceSelector: { matchLabels: { otlp: "push" } } },
      // The other replicas, relaying pushes.
      {
        podSelector: {
          matchLabels: { "app.kubernetes.io/name": "governor", "app.kubernetes.io/component": "operator" },
        },
      },
    ]);
  });

  it("renders with default values exactly what kubectl apply -k config/default applies, less the Namespace", async () => {
    const chart = objects(await helm("template", "governor", CHART, "--namespace", SYSTEM))
      // The pre-delete hook exists only in the chart: kubectl users run `governor uninstall`.
      .filter((o) => !o.metadata.annotations?.["helm.sh/hook"])
      .map((o) => {
        const { annotations = {}, ...rest } = o.metadata;
        const kept = Object.entries(annotations).filter(([k]) => k !== "helm.sh/resource-policy");
        return {
          ...o,
          metadata: { ...rest, ...(kept.length ? { annotations: Object.fromEntries(kept) } : {}) },
        };
      });
    const kustomize = objects(await kubectl(cluster, "kustomize", join(ROOT, "config/default"))).filter(
      (o) => o.kind !== "Namespace",
    );
    expect(chart.map(key).sort()).to.deep.equal(kustomize.map(key).sort());
    const byKey = new Map(kustomize.map((o) => [key(o), o]));
    for (const o of chart) expect(o, key(o)).to.deep.equal(byKey.get(key(o)));
  });

  it("renders the options into the Deployment's flags and a ServiceMonitor when asked", async () => {
    const rendered = objects(
      await helm(
        "template",
        "governor",
        CHART,
        "--namespace",
        "ops",
        "--set",
        "apis=external,takeOverAPIServices=true,serviceMonitor.enabled=true,replicas=3",
        "--set",
        "sourcePolicy.allowCIDRs={10.0.0.0/8,192.168.0.0/16}",
        "--set",
        "forward.external=keda/keda-operator-metrics-apiserver:443",
        "--set",
        "prometheusTenant.header=THANOS-TENANT,prometheusTenant.fromNamespace=true,sourceBackendBudget.qps=40",
        "--set-json",
        'sourceBackendBudget.overrides={"https://mimir.example":400,"http://prometheus.monitoring:9090":12.5}',
        "--set",
        "horizontalPodAutoscaler.syncPeriod=30s,horizontalPodAutoscaler.tolerance=0.05",
      ),
    );
    const deployment = rendered.find((o) => o.kind === "Deployment")!;
    expect(deployment.metadata.namespace).to.equal("ops");
    expect(deployment.spec?.template?.spec?.containers?.[0]?.args).to.include.members([
      "--apis=external",
      "--take-over-apiservices",
      "--source-allow-cidrs=10.0.0.0/8,192.168.0.0/16",
      "--forward-external=keda/keda-operator-metrics-apiserver:443",
      "--prometheus-tenant-header=THANOS-TENANT",
      "--prometheus-tenant-from-namespace",
      "--source-backend-qps=40",
      "--source-backend-qps-overrides=http://prometheus.monitoring:9090=12.5,https://mimir.example=400",
      "--horizontal-pod-autoscaler-sync-period=30s",
      "--horizontal-pod-autoscaler-tolerance=0.05",
    ]);
    expect(rendered.map((o) => o.kind)).to.include("ServiceMonitor");
    const binding = rendered.find(
      (o) => o.kind === "ClusterRoleBinding" && o.metadata.name === "governor",
    ) as (Obj & { subjects: { namespace: string }[] }) | undefined;
    expect(binding?.subjects[0]?.namespace).to.equal("ops");
    const refused = await helm("template", "governor", CHART, "--set", "apis=everything").catch(
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(refused).to.contain("apis must be all, custom or external");
    const noCA = await helm(
      "template",
      "governor",
      CHART,
      "--set",
      "registration=none,tls.secretName=t,forward.custom=monitoring/prometheus-adapter:443",
    ).catch((err: { stderr?: string }) => err.stderr ?? "");
    expect(noCA).to.contain("forward needs registration: cluster");
  });

  it("renders the API Priority and Fairness objects by default and no NetworkPolicy; apf.enabled=false drops them", async () => {
    const byDefault = objects(await helm("template", "governor", CHART, "--namespace", SYSTEM));
    const apf = (objs: Obj[]) =>
      objs
        .filter((o) => o.apiVersion === "flowcontrol.apiserver.k8s.io/v1")
        .map(key)
        .sort();
    expect(apf(byDefault)).to.deep.equal([
      "FlowSchema//governor-metrics-readers",
      "PriorityLevelConfiguration//governor-metrics-readers",
    ]);
    expect(byDefault.map((o) => o.kind)).to.not.include("NetworkPolicy");
    const off = objects(await helm("template", "governor", CHART, "--set", "apf.enabled=false"));
    expect(apf(off)).to.deep.equal([]);
  });

  it("networkPolicy.enabled with the control plane's CIDRs renders config/network-policy's policy with them", async () => {
    const rendered = objects(
      await helm(
        "template",
        "governor",
        CHART,
        "--namespace",
        SYSTEM,
        "--set",
        "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.10/32,10.0.0.11/32}",
      ),
    );
    const policies = rendered.filter((o) => o.kind === "NetworkPolicy");
    expect(policies.map(key)).to.deep.equal([`NetworkPolicy/${SYSTEM}/governor`]);
    // config/network-policy with its placeholder set to the same CIDRs.
    const [kustomized] = objects(
      await kubectl(cluster, "kustomize", join(ROOT, "config/network-policy")),
    ) as (Obj & { spec: { ingress: { from?: unknown[] }[] } })[];
    kustomized!.spec.ingress[0]!.from = [
      { ipBlock: { cidr: "10.0.0.10/32" } },
      { ipBlock: { cidr: "10.0.0.11/32" } },
    ];
    expect(policies[0]).to.deep.equal(kustomized);

    const scoped = objects(
      await helm(
        "template",
        "governor",
        CHART,
        "--set",
        "networkPolicy.enabled=true,networkPolicy.apiServerCIDRs={10.0.0.10/32}",
        "--set-json",
        'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]',
      ),
    ).find((o) => o.kind === "NetworkPolicy") as unknown as {
      spec: { ingress: { ports: { port: number }[]; from?: unknown[] }[] };
    };
    expect(scoped.spec.ingress[1]).to.deep.equal({
      ports: [{ protocol: "TCP", port: 8080 }],
      from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } }],
    });
  });

  it("networkPolicy.enabled without apiServerCIDRs fails to render, saying why", async () => {
    const refused = await helm("template", "governor", CHART, "--set", "networkPolicy.enabled=true").then(
      () => "rendered",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(refused).to.contain("networkPolicy.enabled needs networkPolicy.apiServerCIDRs");
  });

  describe("on the local control plane, with Governor's pods run by the node agent", () => {
    const apiServices = async () => {
      const names = await kubectl(cluster, "get", "apiservices", "-o", "name");
      return APISERVICES.filter((a) => names.includes(`apiservice.apiregistration.k8s.io/${a}`));
    };

    before(async function () {
      this.timeout(300_000);
      await requireNodeAgent(cluster);
      buildOnce();
      // Earlier suites installed with kubectl (config/local); the chart's objects have the
      // same names, and Helm adopts nothing it did not create. Start from a clean cluster.
      await kubectl(cluster, "delete", "apiservice", ...APISERVICES, "--ignore-not-found");
      await kubectl(cluster, "delete", "-k", join(ROOT, "config/local"), "--ignore-not-found", "--wait=true");
      await kubectl(cluster, "create", "namespace", SYSTEM);
    });

    it("is accepted by the apiserver (helm template | kubectl apply --dry-run=server)", async () => {
      const rendered = await helm("template", "governor", CHART, "--namespace", SYSTEM);
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const cp = execFile(
          "kubectl",
          ["apply", "--dry-run=server", "-f", "-"],
          { env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath } },
          (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: stdout + stderr }),
        );
        cp.stdin!.end(rendered);
      });
      expect(r.code, r.out).to.equal(0);
      expect(r.out).to.contain("deployment.apps/governor created (server dry run)");
    });

    it("helm install: two Ready replicas, and the APIServices Available with the CA Governor made", async () => {
      await helm("install", "governor", CHART, "--namespace", SYSTEM, "--wait", "--timeout", "4m");
      const deployment = await cluster.client.get<{ status?: { readyReplicas?: number } }>(
        `/apis/apps/v1/namespaces/${SYSTEM}/deployments/governor`,
      );
      expect(deployment.status?.readyReplicas).to.equal(2);
      await eventually(
        async () => {
          for (const name of APISERVICES) {
            const s = await cluster.client.get<{
              status?: { conditions?: { type: string; status: string }[] };
            }>(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`);
            expect(s.status?.conditions?.find((c) => c.type === "Available")?.status, name).to.equal("True");
          }
        },
        { timeoutMs: 90_000, intervalMs: 500, what: "APIServices Available" },
      );
      // The aggregator's proxy can still answer 503 for a moment after Available turns True.
      await eventually(
        async () => {
          const discovery = await cluster.client.get<{ resources: unknown[] }>(
            "/apis/custom.metrics.k8s.io/v1beta2",
          );
          expect(discovery.resources.length).to.be.greaterThan(0);
        },
        { timeoutMs: 30_000, intervalMs: 500, what: "discovery through the aggregator" },
      );
    });

    it("helm upgrade rolls the replicas onto the new values and keeps the APIServices Available", async () => {
      await helm(
        "upgrade",
        "governor",
        CHART,
        "--namespace",
        SYSTEM,
        "--set",
        "logLevel=debug",
        "--wait",
        "--timeout",
        "4m",
      );
      const deployment = await cluster.client.get<Obj>(
        `/apis/apps/v1/namespaces/${SYSTEM}/deployments/governor`,
      );
      expect(deployment.spec?.template?.spec?.containers?.[0]?.args).to.include("--log-level=debug");
      await eventually(
        async () =>
          expect(
            (await cluster.client.get<{ resources: unknown[] }>("/apis/custom.metrics.k8s.io/v1beta2"))
              .resources,
          ).to.not.be.empty,
        { timeoutMs: 60_000, what: "metrics API served after the upgrade" },
      );
    });

    it("helm uninstall leaves no APIService, Service or Secret behind, keeps the CRDs, and the namespace deletes", async () => {
      const out = await helm("uninstall", "governor", "--namespace", SYSTEM, "--wait", "--timeout", "4m");
      expect(out).to.contain('release "governor" uninstalled');
      expect(await apiServices()).to.deep.equal([]);
      expect(await cluster.client.getOrUndefined(`/api/v1/namespaces/${SYSTEM}/services/governor`)).to.equal(
        undefined,
      );
      expect(
        await cluster.client.getOrUndefined(`/api/v1/namespaces/${SYSTEM}/secrets/governor-serving-cert`),
      ).to.equal(undefined);
      expect(
        await cluster.client.getOrUndefined(
          "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/metricmappings.governor.dev",
        ),
        "CRDs are kept (deleting them would delete every MetricMapping)",
      ).to.not.equal(undefined);
      await kubectl(cluster, "delete", "namespace", SYSTEM, "--wait=false");
      await eventually(
        async () => {
          const ns = await cluster.client.getOrUndefined<{
            status?: { conditions?: { type: string; status: string; message: string }[] };
          }>(`/api/v1/namespaces/${SYSTEM}`);
          const stuck = ns?.status?.conditions?.find((c) => c.status === "True" && /Failure/.test(c.type));
          if (stuck) throw new Error(`${stuck.type}: ${stuck.message}`);
          if (ns) throw new Error("still there");
        },
        { timeoutMs: 90_000, intervalMs: 500, what: "namespace deleted" },
      );
    });
  });
});
