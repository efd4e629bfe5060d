/**
 * Discovery on a current Kubernetes: how Governor's metrics look to kubectl, to
 * kube-apiserver's aggregated discovery and to the namespace controller, with Governor
 * running as its own process with the shipped RBAC.
 */
import { request } from "node:http";
import { expect } from "chai";
import {
  applyYaml,
  freshNamespace,
  installCrds,
  kubectl,
  type TestCluster,
  useCluster,
} from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";

const V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

interface GroupDiscovery {
  metadata: { name: string };
  versions: {
    version: string;
    resources: { resource: string; verbs?: string[]; subresources?: { subresource: string }[] }[];
  }[];
}

/** Governor's `governor_apiserver_requests_total` counters, as `kind code` → count. */
function requestCounts(port: number): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    request({ host: "127.0.0.1", port, path: "/metrics" }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => {
        const counts = new Map<string, number>();
        for (const m of text.matchAll(
          /^governor_apiserver_requests_total\{kind="([^"]+)",code="(\d+)"\} (\d+)/gm,
        ))
          counts.set(`${m[1]} ${m[2]}`, Number(m[3]));
        resolve(counts);
      });
    })
      .on("error", reject)
      .end();
  });
}

describe("discovery of Governor's metrics on Kubernetes 1.3x (integration)", function () {
  this.timeout(360_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  before(async function () {
    this.timeout(240_000);
    cluster = await useCluster();
    // The mappings exist before Governor starts, so the aggregator's first fetch of its
    // discovery (when the APIServices appear) can already list them.
    await installCrds(cluster);
    ns = await freshNamespace(cluster, "discovery");
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: requests}
spec: {metric: http_requests, subject: {resource: pods}, source: {static: {value: "3"}}}
---
apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec: {metric: queue_depth, subject: {external: {}}, source: {static: {value: "7"}}}
`,
    );
    governor = new GovernorProcess(cluster);
    await governor.start();
  });
  after(async () => {
    // Gone before Governor stops: later suites must not see this namespace's mappings.
    await ns?.deleteAndWait();
    await governor?.stop();
  });

  it("appears in kube-apiserver's aggregated discovery: custom metrics under their resource, external ones by name", async () => {
    // kube-apiserver refetches an aggregated server's discovery once a minute per
    // APIService (and backs off after a failed fetch): allow three cycles.
    const started = Date.now();
    await eventually(
      async () => {
        const list = await cluster.client.request<{ items: GroupDiscovery[] }>("GET", "/apis", {
          accept: V2,
        });
        const custom = list.items.find((g) => g.metadata.name === "custom.metrics.k8s.io");
        const v1beta2 = custom?.versions.find((v) => v.version === "v1beta2");
        const pods = v1beta2?.resources.find((r) => r.resource === "pods");
        expect(pods?.subresources?.map((s) => s.subresource)).to.include("http_requests");
        const external = list.items.find((g) => g.metadata.name === "external.metrics.k8s.io");
        expect(external?.versions[0]?.resources.map((r) => r.resource)).to.include("queue_depth");
      },
      { timeoutMs: 200_000, intervalMs: 500, what: "the new metrics in the aggregated discovery document" },
    );
    console.log(`      in kube-apiserver's discovery after ${((Date.now() - started) / 1000).toFixed(0)} s`);
  });

  it("is asked for aggregated discovery v2 by the aggregator, and never answers it 406", async () => {
    const counts = await requestCounts(governor.metricsPort);
    expect(counts.get("aggregated_discovery 200") ?? 0).to.be.greaterThan(0);
    for (const [key, n] of counts) expect(key, `${n} answers`).to.not.match(/ 406$/);
  });

  it("kubectl api-resources lists the external metrics with the release's kubectl", async () => {
    const out = await kubectl(
      cluster,
      "api-resources",
      "--api-group=external.metrics.k8s.io",
      "--no-headers",
    );
    expect(out).to.match(
      /^queue_depth\s+external\.metrics\.k8s\.io\/v1beta1\s+true\s+ExternalMetricValueList$/m,
    );
    // Custom metrics are subresources (pods/http_requests) by the API's design: kubectl
    // lists no resource of that group, as with any custom metrics adapter.
    const custom = await kubectl(
      cluster,
      "api-resources",
      "--api-group=custom.metrics.k8s.io",
      "--no-headers",
    );
    expect(custom.trim()).to.equal("");
  });

  it("lets a namespace holding MetricMappings be deleted, within seconds", async () => {
    const doomed = await freshNamespace(cluster, "doomed");
    applyYaml(
      cluster,
      doomed.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: m}
spec: {metric: doomed_metric, subject: {resource: pods}, source: {static: {value: "1"}}}
`,
    );
    const started = Date.now();
    await doomed.delete();
    await eventually(
      async () => {
        const left = await cluster.client.getOrUndefined<{
          status?: { conditions?: { type: string; status: string; message: string }[] };
        }>(`/api/v1/namespaces/${doomed.name}`);
        const failure = left?.status?.conditions?.find(
          (c) => c.type === "NamespaceDeletionDiscoveryFailure" && c.status === "True",
        );
        if (failure) throw new Error(`discovery failure: ${failure.message}`);
        if (left) throw new Error("still terminating");
      },
      { timeoutMs: 60_000, intervalMs: 100, what: "the namespace to be gone" },
    );
    const seconds = (Date.now() - started) / 1000;
    console.log(`      namespace deleted in ${seconds.toFixed(1)} s`);
    expect(seconds).to.be.lessThan(30);
  });
});
