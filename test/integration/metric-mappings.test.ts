import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { httpsGet } from "../../src/testing/https-get.js";
import {
  applyYaml,
  freshNamespace,
  installCrds,
  kubectl,
  type TestCluster,
  useCluster,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";

interface Status {
  value?: string;
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

describe("MetricMappings drive the metrics API (integration)", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let operator: RunningOperator;
  let ca: KeyPair;
  const asAggregator = () => ({
    ca: ca.cert,
    servername: "localhost",
    cert: readFileSync(join(cluster.dir, "pki/front-proxy-client.crt"), "utf8"),
    key: readFileSync(join(cluster.dir, "pki/front-proxy-client.key"), "utf8"),
    headers: { "X-Remote-User": "system:kube-aggregator", "X-Remote-Group": "system:masters" },
  });
  const get = (path: string) =>
    httpsGet(`https://127.0.0.1:${operator.api.address.port}${path}`, asAggregator());
  const apply = (yaml: string) => applyYaml(cluster, ns.name, yaml);
  const mm = (name: string, metric: string, subject: string, value: string, extra = "") =>
    `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: ${name}}
spec:
  metric: ${metric}
  subject: ${subject}
  source: {static: {value: "${value}"}}
${extra}`;
  const status = async (name: string) =>
    (
      await cluster.client.get<{ status?: Status }>(
        `/apis/governor.dev/v1alpha1/namespaces/${ns.name}/metricmappings/${name}`,
      )
    ).status ?? {};
  const condition = (s: Status, type: string) => s.conditions?.find((c) => c.type === type);

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await installCrds(cluster);
    ns = await freshNamespace(cluster, "mappings");
    ca = await createCA("mm-test");
    const tls = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "server",
    });
    operator = await startOperator({
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: ns.name,
      tls,
      host: "127.0.0.1",
      port: 0,
      apis: { custom: true, external: true },
      leaderElect: false,
      registration: { mode: "none", serviceName: "governor", port: 0 },
      shutdownDelayMs: 0,
    });
    for (const name of ["web-1", "web-2"]) {
      await cluster.client.create(`/api/v1/namespaces/${ns.name}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, labels: { app: "web" } },
        spec: { containers: [{ name: "web", image: "example.invalid/web" }] },
      });
    }
  });

  after(async () => {
    await operator?.stop();
    await ns?.delete();
  });

  it("serves a new mapping in discovery and answers it within one second of kubectl apply", async () => {
    const started = Date.now();
    apply(mm("rps", "http_requests", "{resource: pods}", "1500m"));
    await eventually(
      async () => {
        const d = await get("/apis/custom.metrics.k8s.io/v1beta2");
        expect(d.json.resources.map((r: { name: string }) => r.name)).to.include("pods/http_requests");
        const v = await get(
          `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/http_requests?labelSelector=app%3Dweb`,
        );
        expect(v.status).to.equal(200);
        expect(v.json.items).to.have.length(2);
      },
      { timeoutMs: 5000, intervalMs: 10, what: "servable" },
    );
    const elapsed = Date.now() - started; // includes kubectl's own start-up
    console.log(`      apply → servable: ${elapsed} ms (kubectl apply included)`);
    expect(elapsed).to.be.below(1000);
  });

  it("shows the value and the source's health in status", async () => {
    await eventually(async () => {
      const s = await status("rps");
      expect(s.value).to.equal("1500m");
      expect(condition(s, "Ready")).to.include({ status: "True", reason: "Serving" });
      expect(condition(s, "SourceHealthy")).to.include({ status: "True" });
    });
    const printed = await kubectl(cluster, "get", "mm", "-n", ns.name, "rps");
    expect(printed).to.match(/rps\s+http_requests\s+pods\s+static\s+1500m\s+True/);
  });

  it("serves an edited mapping's new value at once", async () => {
    apply(mm("rps", "http_requests", "{resource: pods}", "4"));
    await eventually(
      async () => {
        const v = await get(
          `/apis/custom.metrics.k8s.io/v1beta1/namespaces/${ns.name}/pods/web-1/http_requests`,
        );
        expect(v.json.items[0].value).to.equal("4");
      },
      { timeoutMs: 1000, intervalMs: 10, what: "new value" },
    );
  });

  it("gives a metric claimed twice to the older mapping; the newer says why, and takes over when the older goes", async () => {
    apply(mm("rps-copy", "http_requests", "{resource: pods}", "99"));
    await eventually(async () => {
      const s = await status("rps-copy");
      expect(condition(s, "Ready")).to.include({ status: "False", reason: "Conflict" });
      expect(condition(s, "Ready")!.message).to.contain("already served by MetricMapping rps");
    });
    const v = await get(`/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/http_requests`);
    expect(v.json.items[0].value).to.equal("4");

    await kubectl(cluster, "delete", "mm", "-n", ns.name, "rps");
    await eventually(async () => {
      const w = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/http_requests`,
      );
      expect(w.json.items[0].value).to.equal("99");
      expect(condition(await status("rps-copy"), "Ready")).to.include({ status: "True" });
    });
  });

  it("stops serving a deleted mapping", async () => {
    await kubectl(cluster, "delete", "mm", "-n", ns.name, "rps-copy");
    await eventually(async () => {
      const v = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/http_requests`,
      );
      expect(v.status).to.equal(404);
      const d = await get("/apis/custom.metrics.k8s.io/v1beta2");
      expect(d.json.resources.map((r: { name: string }) => r.name)).to.not.include("pods/http_requests");
    });
  });

  it("serves external metrics, object metrics by name and by selector, and namespace metrics", async () => {
    apply(
      [
        mm("queue", "queue_depth", "{external: {labels: {queue: orders}}}", "30"),
        mm("svc", "requests_per_second", "{resource: services}", "250"),
        mm("ns", "open_orders", "{resource: namespaces}", "12"),
      ].join("---\n"),
    );
    await cluster.client.create(`/api/v1/namespaces/${ns.name}/services`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "shop", labels: { tier: "front" } },
      spec: { ports: [{ port: 80 }] },
    });
    await eventually(async () => {
      const ext = await get(
        `/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/queue_depth?labelSelector=queue%3Dorders`,
      );
      expect(ext.json.items).to.have.length(1);
      expect(ext.json.items[0]).to.include({ metricName: "queue_depth", value: "30" });
      const svc = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/services/shop/requests_per_second`,
      );
      expect(svc.json.items[0].describedObject).to.deep.equal({
        kind: "Service",
        namespace: ns.name,
        name: "shop",
        apiVersion: "v1",
      });
      const sel = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/services/*/requests_per_second?labelSelector=tier%3Dfront`,
      );
      expect(sel.json.items).to.have.length(1);
      const nsm = await get(`/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/metrics/open_orders`);
      expect(nsm.json.items[0].describedObject).to.deep.equal({
        kind: "Namespace",
        name: ns.name,
        apiVersion: "v1",
      });
      expect(nsm.json.items[0].value).to.equal("12");
    });
    const d = await get("/apis/custom.metrics.k8s.io/v1beta2");
    const ns_ = d.json.resources.find((r: { name: string }) => r.name === "namespaces/open_orders");
    expect(ns_.namespaced).to.equal(false);
  });

  it("reports what only the operator can judge in status.conditions", async () => {
    apply(
      [
        mm("upper", "QueueDepth", "{external: {}}", "1"),
        mm("nowhere", "x", "{resource: widgets.example.com}", "1"),
        mm("nodes", "load", "{resource: nodes}", "1"),
      ].join("---\n"),
    );
    await eventually(async () => {
      expect(condition(await status("upper"), "Ready")).to.include({
        status: "False",
        reason: "InvalidMetricName",
      });
      expect(condition(await status("nowhere"), "Ready")).to.include({
        status: "False",
        reason: "UnknownResource",
      });
      expect(condition(await status("nodes"), "Ready")).to.include({
        status: "False",
        reason: "ClusterScopedSubject",
      });
    });
    const events = await kubectl(
      cluster,
      "get",
      "events",
      "-n",
      ns.name,
      "--field-selector",
      "involvedObject.name=upper",
      "-o",
      "jsonpath={.items[*].reason}",
    );
    expect(events).to.contain("InvalidMetricName");
  });

  describe("admission: the CRD schema rejects bad MetricMappings with a clear message", () => {
    const cases: [string, string, RegExp][] = [
      [
        "no metric",
        "spec: {subject: {resource: pods}, source: {static: {value: '1'}}}",
        /spec.metric: Required value/,
      ],
      [
        "two sources",
        "spec: {metric: x, subject: {resource: pods}, source: {static: {value: '1'}, http: {url: 'http://q/s', jsonPath: '$.a'}}}",
        /spec.source.*must validate one and only one schema \(oneOf\)/,
      ],
      [
        "no source",
        "spec: {metric: x, subject: {resource: pods}, source: {}}",
        /spec.source.*must validate one and only one schema \(oneOf\)/,
      ],
      [
        "a bad interval",
        "spec: {metric: x, interval: soon, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.interval in body should match/,
      ],
      [
        "a bad quantity",
        "spec: {metric: x, subject: {external: {}}, source: {static: {value: five}}}",
        /spec.source.static.value in body should match/,
      ],
      [
        "a bad subject resource",
        "spec: {metric: x, subject: {resource: Pods}, source: {static: {value: '1'}}}",
        /spec.subject.resource in body should match/,
      ],
      [
        "a Secret name that climbs into another namespace",
        "spec: {metric: x, subject: {external: {}}, source: {http: {url: 'http://q/s', jsonPath: '$.a', headersSecret: {name: '../../victim/secrets/creds'}}}}",
        /spec.source.http.headersSecret.name in body should match/,
      ],
      [
        "a bearer-token Secret name with a slash",
        "spec: {metric: x, subject: {external: {}}, source: {prometheus: {address: 'http://p:9090', query: up, bearerTokenSecret: {name: 'governor-system/governor-serving-cert', key: tls.key}}}}",
        /spec.source.prometheus.bearerTokenSecret.name in body should match/,
      ],
      [
        "a metric name with a slash",
        "spec: {metric: a/b, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.metric in body should match/,
      ],
    ];
    for (const [what, spec, message] of cases) {
      it(`rejects ${what}`, async () => {
        const yaml = `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: bad}\n${spec}\n`;
        const r = spawnSync("kubectl", ["create", "--validate=false", "-n", ns.name, "-f", "-"], {
          input: yaml,
          env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
          encoding: "utf8",
        });
        expect(r.status).to.not.equal(0);
        expect(r.stderr).to.match(message);
      });
    }

    it("rejects a ScalableWorkload with a bad selector operator, or both a template and a workloadRef", async () => {
      const create = (spec: string) =>
        spawnSync("kubectl", ["create", "--validate=false", "-n", ns.name, "-f", "-"], {
          input: `apiVersion: governor.dev/v1alpha1\nkind: ScalableWorkload\nmetadata: {name: bad}\n${spec}\n`,
          env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
          encoding: "utf8",
        }).stderr;
      expect(
        create(
          "spec: {selector: {matchExpressions: [{key: a, operator: Near}]}, workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}}",
        ),
      ).to.match(/spec.selector.matchExpressions\[0\].operator: Unsupported value: "Near"/);
      expect(
        create(
          "spec: {selector: {matchLabels: {a: b}}, template: {}, workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}}",
        ),
      ).to.match(/must validate one and only one schema \(oneOf\)/);
    });
  });

  it("never serves another namespace's mapping", async () => {
    const other = await freshNamespace(cluster, "other");
    try {
      const v = await get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${other.name}/queue_depth`);
      expect(v.status).to.equal(404);
    } finally {
      await other.delete();
    }
  });
});
