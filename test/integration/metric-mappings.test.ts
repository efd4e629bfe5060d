import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { expect } from "chai";
import { pino } from "pino";
import { parse as parseYaml } from "yaml";
import { MetricMappingSpec } from "../../src/sources/registry.js";
import { ScalableWorkloadSpec } from "../../src/api/scalable-workload.js";
import { MetricsUpstreamKind } from "../../src/api/metrics-upstream.js";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { httpsGet } from "../support/https-get.js";
import {
  applyYaml,
  freshNamespace,
  installCrds,
  kubectl,
  type TestCluster,
  useCluster,
  LOOPBACK_SOURCES,
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

  let tls: KeyPair;
  const start = () =>
    startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
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

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await installCrds(cluster);
    ns = await freshNamespace(cluster, "mappings");
    ca = await createCA("mm-test");
    tls = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "server",
    });
    operator = await start();
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

  // The metric's name is this suite's own: discovery lists every namespace's metrics, and a
  // namespace another suite is still deleting must not make these assertions pass or fail.
  it("serves a new mapping in discovery and answers it within one second of kubectl apply", async () => {
    apply(mm("rps", "mm_suite_requests", "{resource: pods}", "1500m"));
    const started = Date.now(); // the apply has returned: the object is stored
    await eventually(
      async () => {
        const d = await get("/apis/custom.metrics.k8s.io/v1beta2");
        expect(d.json.resources.map((r: { name: string }) => r.name)).to.include("pods/mm_suite_requests");
        const v = await get(
          `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/mm_suite_requests?labelSelector=app%3Dweb`,
        );
        expect(v.status).to.equal(200);
        expect(v.json.items).to.have.length(2);
      },
      { timeoutMs: 5000, intervalMs: 10, what: "servable" },
    );
    const elapsed = Date.now() - started;
    console.log(`      apply → servable: ${elapsed} ms after kubectl apply returned`);
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
    expect(printed).to.match(/rps\s+mm_suite_requests\s+pods\s+static\s+1500m\s+True/);
  });

  it("keeps a Ready mapping Ready across a restart of Governor: never Unknown, at most one status write", async () => {
    const seen: { ready?: string; reason?: string }[] = [];
    const watch = cluster.client.informer<
      { metadata: { name?: string }; status?: Status } & KubernetesObject
    >(`/apis/governor.dev/v1alpha1/namespaces/${ns.name}/metricmappings`, {
      update: (o) => {
        if (o.metadata.name !== "rps") return;
        const ready = condition(o.status ?? {}, "Ready");
        seen.push({ ready: ready?.status, reason: ready?.reason });
      },
    });
    try {
      await watch.synced;
      await operator.stop();
      operator = await start();
      await eventually(
        async () =>
          expect(
            (
              await get(
                `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/mm_suite_requests`,
              )
            ).status,
          ).to.equal(200),
        { what: "served again" },
      );
      await new Promise((r) => setTimeout(r, 3000)); // a status written after its first sample would show by now
    } finally {
      await watch.stop();
    }
    // Nothing changed: at most a write of the new sample time, and Ready never anything but True.
    expect(seen.length, JSON.stringify(seen)).to.be.at.most(1);
    expect(seen.filter((s) => s.ready !== "True" || s.reason !== "Serving")).to.deep.equal([]);
  });

  it("serves an edited mapping's new value at once", async () => {
    apply(mm("rps", "mm_suite_requests", "{resource: pods}", "4"));
    await eventually(
      async () => {
        const v = await get(
          `/apis/custom.metrics.k8s.io/v1beta1/namespaces/${ns.name}/pods/web-1/mm_suite_requests`,
        );
        expect(v.json.items[0].value).to.equal("4");
      },
      { timeoutMs: 1000, intervalMs: 10, what: "new value" },
    );
  });

  it("gives a metric claimed twice to the older mapping; the newer says why, and takes over when the older goes", async () => {
    apply(mm("rps-copy", "mm_suite_requests", "{resource: pods}", "99"));
    await eventually(async () => {
      const s = await status("rps-copy");
      expect(condition(s, "Ready")).to.include({ status: "False", reason: "Conflict" });
      expect(condition(s, "Ready")!.message).to.contain("already served by MetricMapping rps");
    });
    const v = await get(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/mm_suite_requests`,
    );
    expect(v.json.items[0].value).to.equal("4");

    await kubectl(cluster, "delete", "mm", "-n", ns.name, "rps");
    await eventually(async () => {
      const w = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/mm_suite_requests`,
      );
      expect(w.json.items[0].value).to.equal("99");
      expect(condition(await status("rps-copy"), "Ready")).to.include({ status: "True" });
    });
  });

  it("stops serving a deleted mapping", async () => {
    await kubectl(cluster, "delete", "mm", "-n", ns.name, "rps-copy");
    await eventually(async () => {
      const v = await get(
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/web-1/mm_suite_requests`,
      );
      expect(v.status).to.equal(404);
      const d = await get("/apis/custom.metrics.k8s.io/v1beta2");
      expect(d.json.resources.map((r: { name: string }) => r.name)).to.not.include("pods/mm_suite_requests");
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

  it("answers a repeated selector query with the pods as they are now: one created or relabeled since the last answer counts", async () => {
    // One sample for the whole test (interval 1h): only the pods change between answers.
    apply(mm("pod-load", "pod_load", "{resource: pods}", "3", "  interval: 1h\n  staleAfter: 2h"));
    const pod = (name: string) =>
      cluster.client.create(`/api/v1/namespaces/${ns.name}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, labels: { app: "changing" } },
        spec: { containers: [{ name: "app", image: "example.invalid/web:1" }] },
      });
    const names = async () =>
      (
        (
          await get(
            `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns.name}/pods/*/pod_load?labelSelector=app%3Dchanging`,
          )
        ).json.items as { describedObject: { name: string } }[]
      )
        .map((i) => i.describedObject.name)
        .sort();
    await pod("web-a");
    await eventually(async () => expect(await names()).to.deep.equal(["web-a"]));
    expect(await names(), "asked again: the kept answer").to.deep.equal(["web-a"]);
    await pod("web-b");
    await eventually(async () => expect(await names()).to.deep.equal(["web-a", "web-b"]));
    await cluster.client.mergePatch(`/api/v1/namespaces/${ns.name}/pods/web-a`, {
      metadata: { labels: { app: "other" } },
    });
    await eventually(async () => expect(await names()).to.deep.equal(["web-b"]));
  });

  it("reports what only the operator can judge in status.conditions", async () => {
    apply(
      [
        mm("nowhere", "x", "{resource: widgets.example.com}", "1"),
        mm("nodes", "load", "{resource: nodes}", "1"),
      ].join("---\n"),
    );
    await eventually(async () => {
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
      "involvedObject.name=nowhere",
      "-o",
      "jsonpath={.items[*].reason}",
    );
    expect(events).to.contain("UnknownResource");
    // kubectl get says why without -o yaml; -o wide adds the message.
    const table = (await kubectl(cluster, "get", "mm", "nowhere", "-n", ns.name)).split("\n");
    expect(table[0]).to.match(
      /^NAME\s+METRIC\s+SUBJECT\s+SOURCE\s+VALUE\s+READY\s+REASON\s+SOURCE-HEALTHY\s+AGE$/,
    );
    expect(table[1]).to.match(
      /^nowhere\s+x\s+widgets\.example\.com\s+static\s+(?:<none>\s+)?False\s+UnknownResource\s/,
    );
    const wide = await kubectl(cluster, "get", "mm", "nowhere", "-n", ns.name, "-o", "wide");
    expect(wide)
      .to.match(/LAST-SAMPLE\s+MESSAGE/)
      .and.to.contain('the cluster serves no resource "widgets.example.com"');
  });

  const ANY_VALUE = '(?:"[^"]*": )?';
  describe("admission: the CRD schema and its CEL rules reject bad objects with a clear message, and the operator agrees", () => {
    // [what, kind, spec, what kubectl says, what the operator's schema says]. Before the
    // message, 1.37 prints the value or nothing, 1.34 the value's type ("object").
    const cases: [
      string,
      "MetricMapping" | "ScalableWorkload" | "MetricsUpstream",
      string,
      RegExp,
      RegExp,
    ][] = [
      [
        "no metric",
        "MetricMapping",
        "{subject: {resource: pods}, source: {static: {value: '1'}}}",
        /spec.metric: Required value/,
        /expected string/,
      ],
      [
        "two sources",
        "MetricMapping",
        "{metric: x, subject: {resource: pods}, source: {static: {value: '1'}, http: {url: 'http://q/s', jsonPath: '$.a'}}}",
        /spec.source: Invalid value: (?:"[^"]*": )?source: set exactly one of prometheus, scrape, http, kubernetes, static, schedule, formula, forecast/,
        /source: set exactly one of prometheus, scrape, http, kubernetes, static, schedule, formula, forecast/,
      ],
      [
        "no source",
        "MetricMapping",
        "{metric: x, subject: {resource: pods}, source: {}}",
        /spec.source: Invalid value: (?:"[^"]*": )?source: set exactly one of/,
        /source: set exactly one of/,
      ],
      [
        "both subjects",
        "MetricMapping",
        "{metric: x, subject: {resource: pods, external: {}}, source: {static: {value: '1'}}}",
        /spec.subject: Invalid value: (?:"[^"]*": )?subject: set exactly one of resource, external/,
        /subject: set exactly one of resource, external/,
      ],
      [
        "a bad interval",
        "MetricMapping",
        "{metric: x, interval: soon, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.interval in body should match/,
        /must be a duration such as 15s/,
      ],
      ...(["0s", "1ms", "600h"] as const).map(
        (interval): [string, "MetricMapping", string, RegExp, RegExp] => [
          `an interval of ${interval}`,
          "MetricMapping",
          `{metric: x, interval: ${interval}, staleAfter: 24h, subject: {external: {}}, source: {static: {value: '1'}}}`,
          new RegExp(`spec.interval: Invalid value: ${ANY_VALUE}interval must be between 1s and 1h`),
          /interval must be between 1s and 1h/,
        ],
      ),
      [
        "staleAfter shorter than interval",
        "MetricMapping",
        "{metric: x, interval: 1m, staleAfter: 30s, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.staleAfter: Invalid value: (?:"[^"]*": )?staleAfter must be at least interval/,
        /staleAfter must be at least interval/,
      ],
      [
        "a source timeout of 10m",
        "MetricMapping",
        "{metric: x, subject: {external: {}}, source: {http: {url: 'http://q/s', jsonPath: '$.a', timeout: 10m}}}",
        /spec.source.http.timeout: Invalid value: (?:"[^"]*": )?timeout must be between 100ms and 1m/,
        /timeout must be between 100ms and 1m/,
      ],
      [
        "an external metric with upper-case letters",
        "MetricMapping",
        "{metric: QueueDepth, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.metric: Invalid value: (?:"[^"]*": )?an external metric's name must be lower-case/,
        /an external metric's name must be lower-case/,
      ],
      [
        "a scrape source on services",
        "MetricMapping",
        "{metric: x, subject: {resource: services}, source: {scrape: {port: 8080, series: a}}}",
        /spec.source.scrape: Invalid value: (?:"[^"]*": )?the scrape source reads pods/,
        /the scrape source reads pods/,
      ],
      [
        "a bad quantity",
        "MetricMapping",
        "{metric: x, subject: {external: {}}, source: {static: {value: five}}}",
        /spec.source.static.value in body should match/,
        /must be a Kubernetes quantity/,
      ],
      [
        "a bad subject resource",
        "MetricMapping",
        "{metric: x, subject: {resource: Pods}, source: {static: {value: '1'}}}",
        /spec.subject.resource in body should match/,
        /must be a plural resource/,
      ],
      [
        "a Secret name that climbs into another namespace",
        "MetricMapping",
        "{metric: x, subject: {external: {}}, source: {http: {url: 'http://q/s', jsonPath: '$.a', headersSecret: {name: '../../victim/secrets/creds', keys: [X-Api-Key]}}}}",
        /spec.source.http.headersSecret.name in body should match/,
        /must be an object name/,
      ],
      [
        "a headersSecret without keys (it used to send every key)",
        "MetricMapping",
        "{metric: x, subject: {external: {}}, source: {http: {url: 'http://q/s', jsonPath: '$.a', headersSecret: {name: api-creds}}}}",
        /spec.source.http.headersSecret: Invalid value: (?:"[^"]*": )?list the Secret's keys to send as headers/,
        /list the Secret's keys to send as headers/,
      ],
      ...(["Host", "Connection", "transfer-encoding"] as const).map(
        (header): [string, "MetricMapping", string, RegExp, RegExp] => [
          `a headersSecret sending ${header}`,
          "MetricMapping",
          `{metric: x, subject: {external: {}}, source: {http: {url: 'http://q/s', jsonPath: '$.a', headersSecret: {name: api-creds, keys: [X-Api-Key, ${header}]}}}}`,
          new RegExp(
            `spec.source.http.headersSecret.keys\\[1\\]: Invalid value: ${ANY_VALUE}must not be Host or a connection-level header`,
          ),
          /must not be Host or a connection-level header/,
        ],
      ),
      [
        "a bearer-token Secret name with a slash",
        "MetricMapping",
        "{metric: x, subject: {external: {}}, source: {prometheus: {address: 'http://p:9090', query: up, bearerTokenSecret: {name: 'governor-system/governor-serving-cert', key: tls.key}}}}",
        /spec.source.prometheus.bearerTokenSecret.name in body should match/,
        /must be an object name/,
      ],
      [
        "a metric name with a slash",
        "MetricMapping",
        "{metric: a/b, subject: {external: {}}, source: {static: {value: '1'}}}",
        /spec.metric in body should match/,
        /must be a metric name/,
      ],
      [
        "a bad selector operator",
        "ScalableWorkload",
        "{selector: {matchExpressions: [{key: a, operator: Near}]}, workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}}",
        /spec.selector.matchExpressions\[0\].operator: Unsupported value: "Near"/,
        /Invalid option/,
      ],
      [
        "both a template and a workloadRef",
        "ScalableWorkload",
        "{selector: {matchLabels: {a: b}}, template: {}, workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}}",
        /spec: Invalid value: (?:"[^"]*": )?spec: set exactly one of template, workloadRef/,
        /spec: set exactly one of template, workloadRef/,
      ],
      [
        "a template without a selector",
        "ScalableWorkload",
        "{template: {metadata: {labels: {a: b}}}}",
        /spec.selector: Invalid value: (?:"[^"]*": )?spec.selector is required with spec.template/,
        /spec.selector is required with spec.template/,
      ],
      [
        "minReplicas above maxReplicas",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {minReplicas: 5, maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}]}}",
        /spec.autoscaling.minReplicas: Invalid value: (?:"[^"]*": )?minReplicas must not exceed maxReplicas/,
        /minReplicas must not exceed maxReplicas/,
      ],
      [
        "minReplicas 0 without an activation metric",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {minReplicas: 0, maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}]}}",
        /spec.autoscaling.activation: Invalid value: (?:"[^"]*": )?minReplicas 0 needs activation/,
        /minReplicas 0 needs activation/,
      ],
      [
        "an activation metric without minReplicas 0",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}], activation: {mapping: m}}}",
        /spec.autoscaling.activation: Invalid value: (?:"[^"]*": )?minReplicas 0 needs activation/,
        /activation needs minReplicas 0/,
      ],
      [
        "an activation cooldown of two days",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {minReplicas: 0, maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}], activation: {mapping: m, cooldown: 48h}}}",
        /spec.autoscaling.activation.cooldown: Invalid value: (?:"[^"]*": )?cooldown must be between 0s and 24h/,
        /cooldown must be between 0s and 24h/,
      ],
      [
        "mode Shadow with an activation metric (Shadow never moves replicas)",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {mode: Shadow, minReplicas: 0, maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}], activation: {mapping: m}}}",
        /spec.autoscaling.mode: Invalid value: (?:"[^"]*": )?mode Shadow never moves the replicas/,
        /mode Shadow never moves the replicas/,
      ],
      [
        "a behavior stabilization window of two hours (the HPA's limit is one)",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}], behavior: {scaleDown: {stabilizationWindowSeconds: 7200}}}}",
        /spec.autoscaling.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: 7200: .*less than or equal to 3600/,
        /Too big/,
      ],
      [
        "a behavior policy of 1.5 pods",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {maxReplicas: 2, metrics: [{mapping: m, target: {value: '1'}}], behavior: {scaleUp: {policies: [{type: Pods, value: 1.5, periodSeconds: 60}]}}}}",
        /spec.autoscaling.behavior.scaleUp.policies\[0\].value: Invalid value: "number": .*must be of type integer/,
        /expected int/,
      ],
      [
        "a metric target with both value and averageValue",
        "ScalableWorkload",
        "{workloadRef: {apiVersion: apps/v1, kind: Deployment, name: x}, autoscaling: {maxReplicas: 2, metrics: [{mapping: m, target: {value: '1', averageValue: '1'}}]}}",
        /spec.autoscaling.metrics\[0\].target: Invalid value: (?:"[^"]*": )?target: set exactly one of averageValue, value/,
        /target: set exactly one of averageValue, value/,
      ],
      [
        "an upstream with both a caBundle and a caSecretRef",
        "MetricsUpstream",
        "{service: {namespace: keda, name: keda}, groups: [external.metrics.k8s.io], caBundle: Zm9v, caSecretRef: {namespace: keda, name: ca}}",
        /spec: Invalid value: (?:"[^"]*": )?set at most one of caBundle, caSecretRef/,
        /set at most one of caBundle, caSecretRef/,
      ],
      [
        "an upstream naming a group twice",
        "MetricsUpstream",
        "{service: {namespace: keda, name: keda}, groups: [external.metrics.k8s.io, external.metrics.k8s.io]}",
        /spec.groups: Invalid value: (?:"[^"]*": )?groups: each group once/,
        /groups: each group once/,
      ],
      [
        "an upstream route with a regular expression for a metric",
        "MetricsUpstream",
        "{service: {namespace: keda, name: keda}, groups: [external.metrics.k8s.io], metrics: ['kafka_(lag|size)']}",
        /spec.metrics\[0\] in body should match/,
        /must be a metric name or a glob of one/,
      ],
      [
        "an upstream route with both namespace names and a selector",
        "MetricsUpstream",
        "{service: {namespace: keda, name: keda}, groups: [external.metrics.k8s.io], namespaces: {names: [a], selector: {matchLabels: {a: b}}}}",
        /spec.namespaces: Invalid value: (?:"[^"]*": )?namespaces: set exactly one of names, selector/,
        /namespaces: set exactly one of names, selector/,
      ],
    ];
    for (const [what, kind, spec, admission, operator] of cases) {
      it(`rejects ${what}`, () => {
        const r = spawnSync("kubectl", ["create", "--validate=false", "-n", ns.name, "-f", "-"], {
          input: `apiVersion: governor.dev/v1alpha1\nkind: ${kind}\nmetadata: {name: bad}\nspec: ${spec}\n`,
          env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
          encoding: "utf8",
        });
        expect(r.status, r.stdout).to.not.equal(0);
        expect(r.stderr).to.match(admission);
        const schema =
          kind === "MetricMapping"
            ? MetricMappingSpec
            : kind === "ScalableWorkload"
              ? ScalableWorkloadSpec
              : MetricsUpstreamKind.spec;
        const parsed = schema.safeParse(parseYaml(spec));
        expect(parsed.success, "the operator's schema accepted it").to.equal(false);
        expect(parsed.error?.issues.map((i) => i.message).join("; ")).to.match(operator);
      });
    }
  });

  it("serves a formula over two mappings, follows their edits, refuses a cycle naming it, and goes stale — never 0 — when an input is deleted", async () => {
    const formula = (name: string, metric: string, expression: string, inputs: Record<string, string>) =>
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: ${name}}
spec:
  metric: ${metric}
  subject: {external: {}}
  interval: 1s
  staleAfter: 3s
  source:
    formula:
      expression: "${expression}"
      inputs: {${Object.entries(inputs)
        .map(([v, m]) => `${v}: {mapping: ${m}}`)
        .join(", ")}}
`;
    const fast = "interval: 1s\n  staleAfter: 3s\n";
    apply(
      [
        mm("f-queue", "mm_suite_f_queue", "{external: {}}", "30", `  ${fast}`),
        mm("f-rps", "mm_suite_f_rps", "{external: {}}", "5", `  ${fast}`),
        formula("f-sum", "mm_suite_formula", "queue + rps * 2.0", { queue: "f-queue", rps: "f-rps" }),
      ].join("---\n"),
    );
    const value = async () => {
      const v = await get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${ns.name}/mm_suite_formula`);
      return v.status === 200 ? (v.json.items[0].value as string) : `status ${v.status}`;
    };
    await eventually(async () => expect(await value()).to.equal("40"), { what: "30 + 5 × 2" });
    apply(mm("f-rps", "mm_suite_f_rps", "{external: {}}", "10", `  ${fast}`));
    await eventually(async () => expect(await value()).to.equal("50"), { what: "30 + 10 × 2" });
    expect(condition(await status("f-sum"), "Ready")).to.include({ status: "True", reason: "Serving" });

    // Two formulas reading each other: the one built second is refused, the first names it.
    apply(
      [
        formula("f-ping", "mm_suite_ping", "pong + 1.0", { pong: "f-pong" }),
        formula("f-pong", "mm_suite_pong", "ping + 1.0", { ping: "f-ping" }),
      ].join("---\n"),
    );
    await eventually(
      async () => {
        const [ping, pong] = [await status("f-ping"), await status("f-pong")];
        const refused = [ping, pong].filter((s) => condition(s, "Ready")?.reason === "InvalidSource");
        expect(refused, "one refused").to.have.length(1);
        expect(condition(refused[0]!, "Ready")!.message).to.match(
          /^formula inputs form a cycle: (f-ping → f-pong → f-ping|f-pong → f-ping → f-pong)$/,
        );
        const other = refused[0] === ping ? pong : ping;
        expect(condition(other, "SourceHealthy")!.message).to.match(
          /^the last sample failed: input p[io]ng: MetricMapping f-p[io]ng is not served \(InvalidSource\): formula inputs form a cycle/,
        );
        // A message alone changes status at most every 10 s (the first said its input was not served yet).
      },
      { timeoutMs: 30_000 },
    );

    await kubectl(cluster, "delete", "mm", "-n", ns.name, "f-queue");
    await eventually(async () => {
      expect(condition(await status("f-sum"), "SourceHealthy")!.message).to.equal(
        "the last sample failed: input queue: MetricMapping f-queue does not exist",
      );
      expect(await value(), "stale: refused, not 0").to.equal("status 503");
      expect(condition(await status("f-sum"), "Ready")).to.include({ status: "False", reason: "Stale" });
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
