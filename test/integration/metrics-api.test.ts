import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { serveMetricsApi, type RunningMetricsApi } from "../../src/app/serve-metrics-api.js";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { buildApiServices, buildLocalService, serviceDnsNames } from "../../src/manifests/api-service.js";
import { FakeProvider } from "../support/fake-provider.js";
import { httpsGet } from "../support/https-get.js";
import { freshNamespace, kubectl, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";

const T = new Date("2026-11-22T10:00:00Z");
const SVC = "governor-it";

describe("metrics API through the real kube-aggregator (integration)", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let api: RunningMetricsApi;
  let servingCA: KeyPair;
  let apiServiceNames: string[] = [];
  const provider = new FakeProvider();
  const raw = (path: string, ...extra: string[]) =>
    kubectl(cluster, "get", "--raw", path, ...extra).then((o) => JSON.parse(o));
  const direct = (path: string, opts: Parameters<typeof httpsGet>[1] = {}) =>
    httpsGet(`https://127.0.0.1:${api.address.port}${path}`, {
      ca: servingCA.cert,
      servername: `${SVC}.${ns.name}.svc`,
      ...opts,
    });
  const pki = (f: string) => readFileSync(join(cluster.dir, "pki", f), "utf8");

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "metrics-api");
    servingCA = await createCA("governor-it-ca");
    const serving = await issueCertificate(servingCA, {
      commonName: SVC,
      dnsNames: serviceDnsNames(ns.name, SVC),
      usage: "server",
    });
    const pod = (name: string, app: string, value: string) => ({
      groupResource: { group: "", resource: "pods" },
      object: { kind: "Pod", namespace: ns.name, name, apiVersion: "v1" },
      labels: { app },
      metric: "http_requests",
      value,
      timestamp: T,
      windowSeconds: 60,
    });
    provider.objects.push(pod("web-1", "web", "1500m"), pod("web-2", "web", "2"), pod("db-1", "db", "9"), {
      groupResource: { group: "", resource: "services" },
      object: { kind: "Service", namespace: ns.name, name: "shop", apiVersion: "v1" },
      metric: "requests_per_second",
      value: "250",
      timestamp: T,
    });
    provider.external.push({
      namespace: ns.name,
      metric: "queue_depth",
      labels: { queue: "orders" },
      value: "30",
      timestamp: T,
    });

    api = await serveMetricsApi({
      client: cluster.client,
      provider,
      logger: pino({ level: "silent" }),
      tls: serving,
      host: "127.0.0.1",
      port: 0,
      apis: { custom: true, external: true },
      shutdownDelayMs: 0,
      authCacheTtlMs: 2000,
    });
    await cluster.client.create(
      `/api/v1/namespaces/${ns.name}/services`,
      buildLocalService({ namespace: ns.name, name: SVC, port: api.address.port }),
    );
    const apiServices = buildApiServices({
      service: { namespace: ns.name, name: SVC, port: api.address.port },
      caBundle: servingCA.cert,
    });
    apiServiceNames = apiServices.map((a) => a.metadata.name);
    for (const a of apiServices) {
      // Not server-side apply: the 1.20 aggregator panics on it for APIServices.
      await cluster.client.createOrReplace(
        `/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`,
        a,
      );
    }
  });

  after(async () => {
    for (const name of apiServiceNames)
      await cluster?.client.delete(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`);
    await api?.stop();
    await ns?.delete();
  });

  it("becomes Available: the aggregator verifies the certificate against caBundle and probes discovery", async () => {
    await eventually(
      async () => {
        for (const name of apiServiceNames) {
          const svc = await cluster.client.get<{
            status?: { conditions?: { type: string; status: string; message?: string }[] };
          }>(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`);
          const available = svc.status?.conditions?.find((c) => c.type === "Available");
          expect(available?.status, `${name}: ${available?.message}`).to.equal("True");
        }
        // The aggregator installs its proxy for a group-version shortly after; wait for it too.
        await raw("/apis/custom.metrics.k8s.io/v1beta2");
        await raw("/apis/custom.metrics.k8s.io/v1beta1");
        await raw("/apis/external.metrics.k8s.io/v1beta1");
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "APIServices Available=True" },
    );
  });

  it("lists the live metrics in discovery through kubectl", async () => {
    const v2 = await raw("/apis/custom.metrics.k8s.io/v1beta2");
    expect(v2.resources.map((r: { name: string }) => r.name)).to.include.members([
      "pods/http_requests",
      "services/requests_per_second",
    ]);
    const ext = await raw("/apis/external.metrics.k8s.io/v1beta1");
    expect(ext.resources.map((r: { name: string }) => r.name)).to.deep.equal(["queue_depth"]);
    const groups = await raw("/apis");
    const names = groups.groups.map((g: { name: string }) => g.name);
    expect(names).to.include.members(["custom.metrics.k8s.io", "external.metrics.k8s.io"]);
  });

  it("answers an object metric, a selector metric and an external metric through the aggregator", async () => {
    const obj = await raw(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/services/shop/requests_per_second`,
    );
    expect(obj.items).to.have.length(1);
    expect(obj.items[0]).to.deep.include({ value: "250", timestamp: "2026-11-22T10:00:00Z" });
    expect(obj.items[0].describedObject).to.deep.equal({
      kind: "Service",
      namespace: ns.name,
      name: "shop",
      apiVersion: "v1",
    });

    const sel = await raw(
      `/apis/custom.metrics.k8s.io/v1beta1/namespaces/${ns.name}/pods/*/http_requests?labelSelector=app%3Dweb`,
    );
    expect(
      sel.items.map((i: { describedObject: { name: string } }) => i.describedObject.name).sort(),
    ).to.deep.equal(["web-1", "web-2"]);
    expect(sel.items[0].metricName).to.equal("http_requests");

    const ext = await raw(
      `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/queue_depth?labelSelector=queue%3Dorders`,
    );
    expect(ext.items).to.deep.equal([
      {
        metricName: "queue_depth",
        metricLabels: { queue: "orders" },
        timestamp: "2026-11-22T10:00:00Z",
        value: "30",
      },
    ]);
  });

  it("passes errors through as Kubernetes Status: 404 for an unknown metric, 400 for a bad selector", async () => {
    const notFound = await kubectl(
      cluster,
      "get",
      "--raw",
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/nope`,
    ).catch((e: Error) => e.message);
    expect(notFound).to.match(/NotFound|not found/i);
    const bad = await kubectl(
      cluster,
      "get",
      "--raw",
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/http_requests?labelSelector=a%3D%3D%3Db`,
    ).catch((e: Error) => e.message);
    expect(bad).to.match(/BadRequest|invalid labelSelector/);
  });

  it("lets the HPA's service account read custom metrics (the built-in role, checked by SubjectAccessReview)", async () => {
    const res = await direct(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/http_requests`,
      {
        cert: pki("front-proxy-client.crt"),
        key: pki("front-proxy-client.key"),
        headers: {
          "X-Remote-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
          "X-Remote-Group": [
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated",
          ],
        },
      },
    );
    expect(res.status, res.text).to.equal(200);
    expect(res.json.items).to.have.length(3);
  });

  describe("auth matrix against the cluster's real authentication config and RBAC", () => {
    const path = () => `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/http_requests`;

    it("spoofed X-Remote-* headers without a client certificate → anonymous → 401", async () => {
      const res = await direct(path(), {
        headers: { "X-Remote-User": "admin", "X-Remote-Group": "system:masters" },
      });
      expect(res.status, res.text).to.equal(401);
      expect(res.json.reason).to.equal("Unauthorized");
    });

    it("a front-proxy-CA certificate whose CN is not in requestheader-allowed-names → 401", async () => {
      const dir = mkdtempSync(join(tmpdir(), "governor-it-"));
      const key = join(dir, "rogue.key");
      const csr = join(dir, "rogue.csr");
      const crt = join(dir, "rogue.crt");
      writeFileSync(join(dir, "ext"), "extendedKeyUsage=clientAuth\n");
      execFileSync(
        "openssl",
        [
          "req",
          "-new",
          "-newkey",
          "rsa:2048",
          "-nodes",
          "-subj",
          "/CN=rogue-proxy",
          "-keyout",
          key,
          "-out",
          csr,
        ],
        { stdio: "ignore" },
      );
      execFileSync(
        "openssl",
        [
          "x509",
          "-req",
          "-in",
          csr,
          "-CA",
          join(cluster.dir, "pki/front-proxy-ca.crt"),
          "-CAkey",
          join(cluster.dir, "pki/front-proxy-ca.key"),
          "-CAcreateserial",
          "-CAserial",
          join(dir, "srl"),
          "-days",
          "1",
          "-extfile",
          join(dir, "ext"),
          "-out",
          crt,
        ],
        { stdio: "ignore" },
      );
      const res = await direct(path(), {
        cert: readFileSync(crt, "utf8"),
        key: readFileSync(key, "utf8"),
        headers: { "X-Remote-User": "admin", "X-Remote-Group": "system:masters" },
      });
      expect(res.status, res.text).to.equal(401);
    });

    it("a user without RBAC → 403; granted → 200 within the authorization cache TTL (2 s) and RBAC's own propagation", async () => {
      const asUser = {
        cert: pki("front-proxy-client.crt"),
        key: pki("front-proxy-client.key"),
        headers: { "X-Remote-User": "carol", "X-Remote-Group": "system:authenticated" },
      };
      const denied = await direct(path(), asUser);
      expect(denied.status, denied.text).to.equal(403);
      expect(denied.json.message).to.contain('User "carol"');

      await cluster.client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns.name}/roles`, {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "read-custom-metrics" },
        rules: [{ apiGroups: ["custom.metrics.k8s.io"], resources: ["pods/http_requests"], verbs: ["get"] }],
      });
      await cluster.client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns.name}/rolebindings`, {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "carol-reads-custom-metrics" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "read-custom-metrics" },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "carol" }],
      });
      const started = Date.now();
      await eventually(
        async () => {
          const res = await direct(path(), asUser);
          expect(res.status).to.equal(200);
        },
        { timeoutMs: 15_000, intervalMs: 250, what: "access after the grant" },
      );
      // The denial is cached 2 s (authCacheTtlMs above); the apiserver's RBAC sees the binding
      // within about a second. A denial kept longer than its TTL would take the whole poll.
      const took = Date.now() - started;
      expect(took, `${took} ms from the grant to a 200`).to.be.below(2_000 + 4_000);
    });

    it("kubectl through the aggregator as a user without RBAC is refused, and served once granted (Governor sees the forwarded user)", async () => {
      const err = await kubectl(cluster, "get", "--raw", path(), "--as=dave").catch((e: Error) => e.message);
      expect(err).to.match(/forbidden/i);
      await cluster.client.createOrReplace(
        `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns.name}/roles/dave-reads-metrics`,
        {
          apiVersion: "rbac.authorization.k8s.io/v1",
          kind: "Role",
          metadata: { name: "dave-reads-metrics", namespace: ns.name },
          rules: [
            { apiGroups: ["custom.metrics.k8s.io"], resources: ["pods/http_requests"], verbs: ["get"] },
          ],
        },
      );
      await cluster.client.createOrReplace(
        `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns.name}/rolebindings/dave-reads-metrics`,
        {
          apiVersion: "rbac.authorization.k8s.io/v1",
          kind: "RoleBinding",
          metadata: { name: "dave-reads-metrics", namespace: ns.name },
          roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "dave-reads-metrics" },
          subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "dave" }],
        },
      );
      const served = await eventually(() => raw(path(), "--as=dave"), {
        timeoutMs: 15_000,
        intervalMs: 250,
        what: "dave served",
      });
      expect(served.items[0].value).to.equal("1500m");
    });
  });
});
