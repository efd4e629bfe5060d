import { execFileSync, spawnSync } from "node:child_process";
import { isIP } from "node:net";
import { join } from "node:path";
import { expect } from "chai";
import { parseAllDocuments } from "yaml";
import { installCrds, kubectl, ROOT, useCluster } from "../support/cluster.js";
import { SOURCES } from "../../src/sources/registry.js";

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs: string[];
}
interface Obj {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  rules?: Rule[];
  roleRef?: { kind: string; name: string };
  spec?: Record<string, unknown>;
}

const render = (dir: string): Obj[] =>
  parseAllDocuments(execFileSync("kubectl", ["kustomize", join(ROOT, dir)], { encoding: "utf8" }))
    .map((d) => d.toJSON() as Obj)
    .filter(Boolean);

describe("config/ (kustomize)", () => {
  const objects = render("config/default");
  const rules = objects
    .filter((o) => o.kind === "ClusterRole" || o.kind === "Role")
    .flatMap((o) => (o.rules ?? []).map((r) => ({ owner: o, rule: r })));

  it("renders the CRDs, RBAC, namespace, Deployment and PodDisruptionBudget", () => {
    const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(kinds).to.include.members([
      "CustomResourceDefinition/metricmappings.governor.dev",
      "CustomResourceDefinition/scalableworkloads.governor.dev",
      "CustomResourceDefinition/metricsupstreams.governor.dev",
      "Namespace/governor-system",
      "Deployment/governor",
      "PodDisruptionBudget/governor",
      "ServiceAccount/governor",
    ]);
  });

  it("config/beside-keda is config/default with Governor forwarding external metrics to KEDA's metrics server", () => {
    const deployment = (objs: Obj[]) => objs.find((o) => o.kind === "Deployment")!;
    type Spec = { template: { spec: { containers: { args: string[] }[] } } };
    const args = (objs: Obj[]) =>
      (deployment(objs).spec as unknown as Spec).template.spec.containers[0]!.args;
    const beside = render("config/beside-keda");
    expect(args(beside)).to.deep.equal([
      ...args(objects),
      "--forward-external=keda/keda-operator-metrics-apiserver:443",
    ]);
    expect(beside.map((o) => `${o.kind}/${o.metadata.name}`).sort()).to.deep.equal(
      objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(),
    );
  });

  it("grants no wildcard verbs, resources or groups (metric names aside, which are open-ended)", () => {
    for (const { owner, rule } of rules) {
      if (owner.metadata.name === "governor-hpa-metrics-reader") {
        expect(rule.apiGroups).to.have.members(["custom.metrics.k8s.io", "external.metrics.k8s.io"]);
        expect(rule.verbs).to.have.members(["get", "list"]);
        continue;
      }
      for (const field of [rule.verbs, rule.resources ?? [], rule.apiGroups ?? []]) {
        expect(field, `${owner.kind}/${owner.metadata.name}`).to.not.include("*");
      }
    }
  });

  it("reads Secrets only in its own namespace, and only its own certificate Secret", () => {
    const secretRules = rules.filter(({ rule }) => rule.resources?.includes("secrets"));
    expect(secretRules.length).to.be.greaterThan(0);
    for (const { owner, rule } of secretRules) {
      expect(owner.kind).to.equal("Role");
      expect(owner.metadata.namespace).to.equal("governor-system");
      const reads = rule.verbs.filter((v) => ["get", "list", "watch", "update", "delete"].includes(v));
      if (reads.length) expect(rule.resourceNames).to.deep.equal(["governor-serving-cert"]);
    }
  });

  it("lets nobody it ships write MetricsUpstreams: where Governor forwards its credentials is a cluster admin's call", () => {
    const mu = rules.filter(({ rule }) => rule.resources?.some((r) => r.startsWith("metricsupstreams")));
    expect(mu.map(({ owner }) => owner.metadata.name)).to.deep.equal(["governor", "governor"]);
    for (const { rule } of mu)
      if (rule.resources!.includes("metricsupstreams"))
        expect(rule.verbs).to.have.members(["get", "list", "watch"]);
    for (const o of objects.filter((o) => o.kind === "ClusterRole"))
      expect(o.metadata.labels ?? {}, o.metadata.name).to.not.have.any.keys(
        "rbac.authorization.k8s.io/aggregate-to-admin",
        "rbac.authorization.k8s.io/aggregate-to-edit",
      );
  });

  it("limits APIService access to its own four APIServices (create aside, which RBAC cannot limit by name)", () => {
    for (const { rule } of rules.filter(({ rule }) => rule.resources?.includes("apiservices"))) {
      if (rule.verbs.some((v) => v !== "create")) {
        expect(rule.resourceNames).to.have.members([
          "v1beta1.custom.metrics.k8s.io",
          "v1beta2.custom.metrics.k8s.io",
          "v1beta1.external.metrics.k8s.io",
          "v1alpha1.history.governor.dev",
        ]);
      }
    }
  });

  it("binds system:auth-delegator and the extension-apiserver-authentication reader in kube-system", () => {
    const crb = objects.find(
      (o) => o.kind === "ClusterRoleBinding" && o.roleRef?.name === "system:auth-delegator",
    );
    expect(crb).to.not.equal(undefined);
    const rb = objects.find(
      (o) => o.kind === "RoleBinding" && o.roleRef?.name === "extension-apiserver-authentication-reader",
    );
    expect(rb?.metadata.namespace).to.equal("kube-system");
  });

  it("runs two replicas with probes, resource requests and a restricted security context", () => {
    const d = objects.find((o) => o.kind === "Deployment") as unknown as {
      spec: {
        replicas: number;
        template: { spec: { securityContext: Record<string, unknown>; containers: Record<string, any>[] } };
      };
    };
    expect(d.spec.replicas).to.equal(2);
    const pod = d.spec.template.spec;
    expect(pod.securityContext).to.include({ runAsNonRoot: true });
    const c = pod.containers[0]!;
    expect(c.readinessProbe.httpGet.path).to.equal("/readyz");
    expect(c.livenessProbe.httpGet.path).to.equal("/livez");
    expect(c.resources.requests).to.have.keys("cpu", "memory");
    expect(c.securityContext).to.deep.include({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
  });

  describe("API Priority and Fairness (config/apf, part of config/default)", () => {
    /**
     * The built-in FlowSchemas that carry the HPA controller, and the catch-alls tenants fall
     * into (k8s.io/apiserver v0.37.2, pkg/apis/flowcontrol/bootstrap/default.go).
     */
    const BUILT_IN = {
      "kube-controller-manager": 800, // user system:kube-controller-manager
      "kube-system-service-accounts": 900, // kube-system/horizontal-pod-autoscaler among them
      "service-accounts": 9000,
      "global-default": 9900,
    };
    const find = (kind: string) =>
      objects.find((o) => o.kind === kind && o.metadata.name === "governor-metrics-readers") as any;

    it("puts tenants' reads of both metrics APIs, by any user, into a level of their own, queued per user", () => {
      const fs = find("FlowSchema");
      expect(fs, "FlowSchema governor-metrics-readers").to.not.equal(undefined);
      expect(fs.spec.priorityLevelConfiguration.name).to.equal("governor-metrics-readers");
      expect(fs.spec.distinguisherMethod).to.deep.equal({ type: "ByUser" });
      expect(fs.spec.rules).to.have.length(1);
      const [rule] = fs.spec.rules;
      expect(rule.subjects).to.have.deep.members([
        { kind: "Group", group: { name: "system:authenticated" } },
        { kind: "Group", group: { name: "system:unauthenticated" } },
      ]);
      expect(rule.resourceRules).to.deep.equal([
        {
          verbs: ["get", "list", "watch"],
          apiGroups: ["custom.metrics.k8s.io", "external.metrics.k8s.io"],
          resources: ["*"],
          namespaces: ["*"],
          clusterScope: true,
        },
      ]);
      // Discovery of a version (/apis/<group>/<version>) is a non-resource request.
      expect(rule.nonResourceRules).to.deep.equal([
        {
          verbs: ["get"],
          nonResourceURLs: ["/apis/custom.metrics.k8s.io/*", "/apis/external.metrics.k8s.io/*"],
        },
      ]);
    });

    it("is matched after the built-in schemas that carry the HPA controller, and before the ones tenants would fall into", () => {
      const precedence = find("FlowSchema").spec.matchingPrecedence as number;
      expect(precedence).to.be.greaterThan(BUILT_IN["kube-controller-manager"]);
      expect(precedence).to.be.greaterThan(BUILT_IN["kube-system-service-accounts"]);
      expect(precedence).to.be.lessThan(BUILT_IN["service-accounts"]);
      expect(precedence).to.be.lessThan(BUILT_IN["global-default"]);
    });

    it("gives that level a few seats that it neither lends nor grows by borrowing, with queues", () => {
      const plc = find("PriorityLevelConfiguration");
      expect(plc, "PriorityLevelConfiguration governor-metrics-readers").to.not.equal(undefined);
      expect(plc.spec.type).to.equal("Limited");
      const limited = plc.spec.limited;
      // The built-in levels hold 245 shares: 2 is about 5 of the default 600 seats.
      expect(limited.nominalConcurrencyShares).to.be.within(1, 5);
      expect(limited.lendablePercent).to.equal(0);
      expect(limited.borrowingLimitPercent).to.equal(0);
      expect(limited.limitResponse).to.deep.equal({
        type: "Queue",
        queuing: { queues: 16, handSize: 4, queueLengthLimit: 50 },
      });
    });
  });

  describe("the NetworkPolicy (config/network-policy, applied beside an install)", () => {
    const policies = render("config/network-policy");
    const policy = policies[0] as any;
    const pod = (objects.find((o) => o.kind === "Deployment") as any).spec.template;
    const container = pod.spec.containers[0];
    const portNamed = (name: string): number =>
      container.ports.find((p: { name: string }) => p.name === name).containerPort;
    const rulesFor = (port: number) =>
      (policy.spec.ingress as { ports?: { port: number }[]; from?: unknown[] }[]).filter(
        (r) => !r.ports || r.ports.some((p) => p.port === port),
      );

    it("is not part of config/default, and is one NetworkPolicy for Governor's pods that leaves egress alone", () => {
      expect(objects.map((o) => o.kind)).to.not.include("NetworkPolicy");
      expect(policies.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)).to.deep.equal([
        "NetworkPolicy/governor-system/governor",
      ]);
      expect(policy.spec.podSelector).to.deep.equal({ matchLabels: pod.metadata.labels });
      expect(policy.spec.policyTypes).to.deep.equal(["Ingress"]);
    });

    it("lets only the control plane's ipBlock reach the metrics API port, which is --secure-port and the probes' port", () => {
      const api = portNamed("https");
      expect(container.args).to.include(`--secure-port=${api}`);
      // The kubelet probes this port from the pod's own node, which NetworkPolicy always allows.
      expect(container.readinessProbe.httpGet.port).to.equal("https");
      expect(container.livenessProbe.httpGet.port).to.equal("https");
      expect(rulesFor(api)).to.deep.equal([
        { ports: [{ protocol: "TCP", port: api }], from: [{ ipBlock: { cidr: "CONTROL-PLANE-CIDR" } }] },
      ]);
    });

    it("ships a placeholder that is not a CIDR, so the apiserver refuses the policy until it is set", () => {
      const cidr = policy.spec.ingress[0].from[0].ipBlock.cidr as string;
      expect(isIP(cidr.split("/")[0]!)).to.equal(0);
    });

    it("keeps /metrics reachable from anywhere, as without the policy", () => {
      const metrics = portNamed("metrics");
      expect(container.args).to.include(`--metrics-port=${metrics}`);
      expect(rulesFor(metrics)).to.deep.equal([{ ports: [{ protocol: "TCP", port: metrics }] }]);
    });
  });

  describe("on the real apiserver (integration)", function () {
    this.timeout(120_000);
    before(async function () {
      this.timeout(60 * 60_000);
      const cluster = await useCluster();
      await kubectl(cluster, "apply", "-k", join(ROOT, "config/crd"));
      await kubectl(cluster, "apply", "-f", join(ROOT, "config/manager/namespace.yaml"));
      await kubectl(cluster, "apply", "-k", join(ROOT, "config/rbac"));
    });

    /** "yes" or "no" (kubectl exits 1 for "no"). */
    const can = async (...args: string[]) => {
      const cluster = await useCluster();
      const r = spawnSync(
        "kubectl",
        ["auth", "can-i", "--as=system:serviceaccount:governor-system:governor", ...args],
        {
          env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
          encoding: "utf8",
        },
      );
      return r.stdout.trim();
    };

    /** Whether a ServiceAccount may `verb` the external metric queue_depth in namespace shop. */
    const mayReadMetric = async (namespace: string, name: string, verb: string) => {
      const cluster = await useCluster();
      const review = await cluster.client.create<{ status: { allowed: boolean } }>(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
          apiVersion: "authorization.k8s.io/v1",
          kind: "SubjectAccessReview",
          spec: {
            user: `system:serviceaccount:${namespace}:${name}`,
            groups: ["system:serviceaccounts", `system:serviceaccounts:${namespace}`, "system:authenticated"],
            resourceAttributes: {
              namespace: "shop",
              verb,
              group: "external.metrics.k8s.io",
              resource: "queue_depth",
            },
          },
        },
      );
      return review.status.allowed;
    };

    it("accepts the API Priority and Fairness objects, and refuses the NetworkPolicy until its CIDR is set (server dry run)", async () => {
      const cluster = await useCluster();
      const apf = await kubectl(cluster, "apply", "--dry-run=server", "-k", join(ROOT, "config/apf"));
      expect(apf).to.contain("flowschema.flowcontrol.apiserver.k8s.io/governor-metrics-readers");
      expect(apf).to.contain(
        "prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/governor-metrics-readers",
      );
      const unset = await kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "-k",
        join(ROOT, "config/network-policy"),
      ).then(
        () => "accepted",
        (err: Error) => err.message,
      );
      expect(unset).to.contain("ipBlock.cidr");
      const set = spawnSync("kubectl", ["apply", "--dry-run=server", "-f", "-"], {
        input: execFileSync("kubectl", ["kustomize", join(ROOT, "config/network-policy")], {
          encoding: "utf8",
        }).replace("CONTROL-PLANE-CIDR", "10.0.0.10/32"),
        env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
        encoding: "utf8",
      });
      expect(set.status, set.stderr).to.equal(0);
      expect(set.stdout).to.contain("networkpolicy.networking.k8s.io/governor");
    });

    it("lets the HPA controller read external metrics, which its built-in role does not (custom metrics only)", async () => {
      expect(await mayReadMetric("kube-system", "horizontal-pod-autoscaler", "list")).to.equal(true);
    });

    it("lets Governor's service account do what it needs, and nothing broader", async () => {
      expect(await can("create", "subjectaccessreviews.authorization.k8s.io")).to.equal("yes");
      expect(await can("create", "tokenreviews.authentication.k8s.io")).to.equal("yes");
      expect(await can("get", "configmaps/extension-apiserver-authentication", "-n", "kube-system")).to.equal(
        "yes",
      );
      expect(
        await can("patch", "metricmappings.governor.dev", "--subresource=status", "-n", "shop"),
      ).to.equal("yes");
      expect(await can("get", "secrets/governor-serving-cert", "-n", "governor-system")).to.equal("yes");
      expect(
        await can("update", "apiservices.apiregistration.k8s.io/v1beta1.external.metrics.k8s.io"),
      ).to.equal("yes");
      expect(await can("get", "secrets", "-n", "shop")).to.equal("no");
      expect(await can("get", "secrets/other", "-n", "governor-system")).to.equal("no");
      expect(await can("update", "apiservices.apiregistration.k8s.io/v1beta1.metrics.k8s.io")).to.match(
        /^no/,
      );
      expect(await can("delete", "pods", "-n", "shop")).to.equal("no");
      // An upstream adapter it forwards to authorizes it as it authorizes the HPA (ADR 0011).
      // (kubectl auth can-i answers "no" for resources discovery does not list: ask directly.)
      expect(await mayReadMetric("governor-system", "governor", "get")).to.equal(true);
      expect(await can("get", "services", "-n", "keda")).to.equal("yes");
      // MetricsUpstreams (ADR 0024): read and their status written, never made or changed.
      expect(await can("watch", "metricsupstreams.governor.dev")).to.equal("yes");
      expect(await can("patch", "metricsupstreams.governor.dev", "--subresource=status")).to.equal("yes");
      expect(await can("create", "metricsupstreams.governor.dev")).to.equal("no");
      expect(await can("update", "metricsupstreams.governor.dev/x")).to.equal("no");
    });
  });
});

describe("config/samples (integration)", function () {
  this.timeout(120_000);
  it("are accepted by the real apiserver: one MetricMapping per source kind, a ScalableWorkload with autoscaling and one that scales to zero", async function () {
    this.timeout(60 * 60_000);
    const cluster = await useCluster();
    await installCrds(cluster);
    const out = await kubectl(
      cluster,
      "apply",
      "--dry-run=server",
      "-n",
      "default",
      "-k",
      join(ROOT, "config/samples"),
    );
    expect(out).to.contain("scalableworkload.governor.dev/worker created (server dry run)");
    expect(out).to.contain("scalableworkload.governor.dev/batch-consumer created (server dry run)");
    const samples = render("config/samples").filter((o) => o.kind === "MetricMapping");
    const kinds = samples.map((o) => Object.keys((o.spec as { source: object }).source)[0]).sort();
    expect(kinds).to.deep.equal(Object.keys(SOURCES).sort());
  });
});
