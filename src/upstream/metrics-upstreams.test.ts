import { expect } from "chai";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { Registry } from "prom-client";
import { eventually } from "../../test/support/eventually.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { FakeProvider } from "../../test/support/fake-provider.js";
import { METRICS_UPSTREAMS_PATH } from "../api/metrics-upstream.js";
import { MetricsApi } from "../apiserver/metrics-api.js";
import { JsonText } from "../apiserver/wire.js";
import { createCA, issueCertificate, type KeyPair } from "../certs/certs.js";
import { InformerCache } from "../k8s/informer-cache.js";
import { MetricsUpstreams } from "./metrics-upstreams.js";
import { UpstreamRouter } from "./router.js";

const E = "/apis/external.metrics.k8s.io/v1beta1";

/** A fake adapter over HTTPS: lists `metrics` and answers each with its own name as the value. */
async function adapter(ca: KeyPair, name: string, metrics: string[]) {
  const leaf = await issueCertificate(ca, {
    commonName: name,
    dnsNames: [`${name}.adapters.svc`],
    usage: "server",
  });
  const server: Server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    const url = req.url ?? "";
    if (url === E) counted.discoveryReads++;
    const body =
      url === E
        ? {
            kind: "APIResourceList",
            groupVersion: "external.metrics.k8s.io/v1beta1",
            resources: metrics.map((m) => ({ name: m, namespaced: true })),
          }
        : url.startsWith(`${E}/namespaces/`)
          ? {
              kind: "ExternalMetricValueList",
              apiVersion: "external.metrics.k8s.io/v1beta1",
              metadata: {},
              items: [
                {
                  metricName: url.split("/").pop(),
                  metricLabels: {},
                  timestamp: "2026-12-07T00:00:00Z",
                  value: name,
                },
              ],
            }
          : undefined;
    res.writeHead(body ? 200 : 404, { "content-type": "application/json" }).end(JSON.stringify(body ?? {}));
  });
  const counted = { discoveryReads: 0 };
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { server, port: (server.address() as AddressInfo).port, counted };
}

describe("MetricsUpstreams: several adapters declared as objects", function () {
  this.timeout(20_000);
  let ca: KeyPair;
  let kafka: Awaited<ReturnType<typeof adapter>>;
  let keda: Awaited<ReturnType<typeof adapter>>;
  let kube: FakeKube;
  let cache: InformerCache;
  let running: MetricsUpstreams;
  let api: MetricsApi;
  let registry: Registry;

  const mu = (name: string, spec: Record<string, unknown>) =>
    kube.seed(`${METRICS_UPSTREAMS_PATH}/${name}`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricsUpstream",
      metadata: { name, generation: 1 },
      spec,
    });
  const service = (name: string, port: number) =>
    kube.seed(`/api/v1/namespaces/adapters/services/${name}`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "adapters", name },
      spec: { type: "ExternalName", externalName: "127.0.0.1", ports: [{ port }] },
    });
  const caBundle = () => Buffer.from(ca.cert).toString("base64");
  /** An external-metrics upstream at `service` (on `port`) with the adapters' CA, and `over`. */
  const upstreamAt = (service: string, port: number, over: Record<string, unknown> = {}) => ({
    service: { namespace: "adapters", name: service, port },
    groups: ["external.metrics.k8s.io"],
    caBundle: caBundle(),
    priority: 0,
    ...over,
  });
  const value = async (path: string) => {
    const r = await api.handle(
      "GET",
      { pathname: path, searchParams: new URLSearchParams() },
      "application/json",
    );
    const body = r.body instanceof JsonText ? JSON.parse(r.body.bytes.toString()) : r.body;
    return { status: r.status, body, value: body?.items?.[0]?.value as string | undefined };
  };
  const status = (name: string) =>
    kube.peek<{ status?: Record<string, unknown> }>(`${METRICS_UPSTREAMS_PATH}/${name}`)?.status;

  before(async () => {
    ca = await createCA("adapters-ca");
    kafka = await adapter(ca, "kafka", ["kafka_lag"]);
    keda = await adapter(ca, "keda", ["queue_messages"]);
  });
  after(() => {
    kafka.server.close();
    keda.server.close();
  });
  beforeEach(() => {
    kube = new FakeKube();
    cache = new InformerCache(kube, pino({ level: "silent" }));
    service("kafka", kafka.port);
    service("keda", keda.port);
    registry = new Registry();
    const router = new UpstreamRouter("external");
    running = new MetricsUpstreams({
      client: kube,
      informer: cache.informer(METRICS_UPSTREAMS_PATH),
      namespaces: () => cache.informer("/api/v1/namespaces", { identityOnly: true, keepLabels: true }),
      routers: { external: router },
      identity: async () => ({ headers: { authorization: "Bearer governor" } }),
      logger: pino({ level: "silent" }),
      registry,
      resyncMs: 50,
      self: { namespace: "governor-system", name: "governor", port: 443 },
      upstream: { discoveryIntervalMs: 60_000 },
    });
    api = new MetricsApi(new FakeProvider(), {
      custom: true,
      external: true,
      delegates: { external: router },
    });
  });
  afterEach(async () => {
    await running.leaderPart.stop();
    await running.stop();
    await cache.stop();
  });

  it("routes each metric to the adapter that lists it, and writes each one's status", async () => {
    mu("kafka", upstreamAt("kafka", kafka.port));
    mu("keda", upstreamAt("keda", keda.port));
    await running.start();
    await running.leaderPart.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka"),
    );
    expect((await value(`${E}/namespaces/shop/queue_messages`)).value).to.equal("keda");
    const missing = await value(`${E}/namespaces/shop/orders`);
    expect(missing.status).to.equal(404);
    expect(missing.body.message).to.include("asked: MetricsUpstream kafka, MetricsUpstream keda");
    const names = (await value(E)).body.resources.map((r: { name: string }) => r.name);
    expect(names).to.deep.equal(["kafka_lag", "queue_messages"]);
    await eventually(() => {
      const s = status("kafka");
      expect(s?.service).to.equal(`adapters/kafka:${kafka.port}`);
      expect(s?.metrics).to.equal(1);
      expect(s?.latency).to.match(/^\d+ms$/);
      expect((s?.conditions as { type: string; status: string; reason: string }[])[0]).to.include({
        type: "Available",
        status: "True",
        reason: "Listed",
      });
    });
    const text = await registry.metrics();
    expect(text).to.match(/governor_upstream_requests_total\{upstream="kafka",code="200"\} 1/);
    expect(text).to.match(/governor_upstream_metrics\{upstream="keda",api="external"\} 1/);
  });

  it("keeps answering from the others when one adapter's Service is gone, and says why in its status", async () => {
    mu("kafka", upstreamAt("kafka", kafka.port));
    mu("keda", upstreamAt("gone", keda.port, { metrics: ["queue_*"] }));
    await running.start();
    await running.leaderPart.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka"),
    );
    const down = await value(`${E}/namespaces/shop/queue_messages`);
    expect(down.status).to.equal(503);
    expect(down.body.message).to.include("MetricsUpstream keda (Service adapters/gone");
    await eventually(() => {
      const s = status("keda");
      const available = (s?.conditions as { status: string; reason: string }[] | undefined)?.[0];
      expect(available).to.include({ status: "False", reason: "DiscoveryFailed" });
      expect(s?.lastError).to.include("the Service does not exist");
    });
  });

  it("says a spec it cannot use in status and routes nothing to it", async () => {
    mu("bad", upstreamAt("kafka", kafka.port, { caSecretRef: { namespace: "adapters", name: "ca" } }));
    mu("junk-ca", {
      service: { namespace: "adapters", name: "kafka", port: kafka.port },
      groups: ["external.metrics.k8s.io"],
      caBundle: Buffer.from("not a certificate").toString("base64"),
      priority: 0,
    });
    await running.start();
    await running.leaderPart.start();
    await eventually(() => {
      const bad = (status("bad")?.conditions as { reason: string; message: string }[] | undefined)?.[0];
      expect(bad?.reason).to.equal("InvalidSpec");
      expect(bad?.message).to.include("set at most one of caBundle, caSecretRef");
      const junk = (status("junk-ca")?.conditions as { reason: string; message: string }[] | undefined)?.[0];
      expect(junk?.message).to.equal("caBundle: no PEM certificate in it");
    });
    const r = await value(`${E}/namespaces/shop/kafka_lag`);
    expect(r.status).to.equal(404);
  });

  it("reads a CA from a Secret, keeps it while a later read fails, and says it cannot without one", async () => {
    mu("kafka", {
      service: { namespace: "adapters", name: "kafka", port: kafka.port },
      groups: ["external.metrics.k8s.io"],
      caSecretRef: { namespace: "adapters", name: "kafka-ca", key: "ca.crt" },
      priority: 0,
    });
    kube.seed("/api/v1/namespaces/adapters/secrets/kafka-ca", {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: "adapters", name: "kafka-ca" },
      data: { "ca.crt": caBundle() },
    });
    await running.start();
    await running.leaderPart.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka"),
    );
    for (let i = 0; i < 1000; i++)
      kube.failNext(403, { path: "/api/v1/namespaces/adapters/secrets/kafka-ca" });
    await eventually(() => {
      const c = (status("kafka")?.conditions as { reason: string; message: string }[] | undefined)?.[0];
      expect(c?.reason).to.equal("Listed");
      expect(c?.message).to.include("Governor may not read it");
      expect(c?.message).to.include("the CA read before stays in use");
    });
    expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka");
    // Another, whose Secret Governor never could read: no CA, nothing sent, and said so.
    for (let i = 0; i < 1000; i++)
      kube.failNext(403, { path: "/api/v1/namespaces/adapters/secrets/keda-ca" });
    mu("keda", {
      service: { namespace: "adapters", name: "keda", port: keda.port },
      groups: ["external.metrics.k8s.io"],
      caSecretRef: { namespace: "adapters", name: "keda-ca" },
      priority: 0,
    });
    await eventually(() => {
      const c = (status("keda")?.conditions as { reason: string; message: string }[] | undefined)?.[0];
      expect(c?.reason).to.equal("CAUnavailable");
    });
    const refused = await value(`${E}/namespaces/shop/queue_messages`);
    expect(refused.status).to.equal(404); // it lists nothing: it was never asked
  });

  it("keeps an upstream's connections, list and trust when only its route changes: no gap in answers", async () => {
    const spec = upstreamAt("kafka", kafka.port, { metrics: ["kafka_*"] });
    mu("kafka", spec);
    await running.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka"),
    );
    const reads = kafka.counted.discoveryReads;
    mu("kafka", { ...spec, metrics: ["kafka_*", "orders"], priority: 5 });
    const answers: number[] = [];
    await eventually(async () => {
      const r = await value(`${E}/namespaces/shop/orders`);
      answers.push((await value(`${E}/namespaces/shop/kafka_lag`)).status);
      expect(r.value).to.equal("kafka");
    });
    expect(
      answers.every((s) => s === 200),
      `kafka_lag while the route changed: ${answers.join(",")}`,
    ).to.equal(true);
    // The same Upstream: its list kept (a new one would read the adapter's discovery first).
    expect(kafka.counted.discoveryReads).to.equal(reads);
  });

  it("takes a CA from the APIService pointing at the upstream's Service when the spec gives none, the other metrics API's too", async () => {
    kube.seed("/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io", {
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: { name: "v1beta2.custom.metrics.k8s.io" },
      spec: { service: { namespace: "adapters", name: "kafka", port: kafka.port }, caBundle: caBundle() },
    });
    mu("kafka", {
      service: { namespace: "adapters", name: "kafka", port: kafka.port },
      groups: ["external.metrics.k8s.io"],
      priority: 0,
    });
    await running.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/kafka_lag`)).value).to.equal("kafka"),
    );
  });

  it("refuses an upstream naming Governor's own Service, and clears what a status no longer says", async () => {
    const spec = upstreamAt("kafka", kafka.port);
    mu("loop", { ...spec, service: { namespace: "governor-system", name: "governor", port: 443 } });
    mu("kafka", spec);
    await running.start();
    await running.leaderPart.start();
    await eventually(() => {
      expect(status("kafka")?.metrics).to.equal(1);
      const loop = (status("loop")?.conditions as { reason: string; message: string }[] | undefined)?.[0];
      expect(loop?.reason).to.equal("InvalidSpec");
      expect(loop?.message).to.include("Governor's own Service");
    });
    mu("kafka", { ...spec, groups: ["custom.metrics.k8s.io"] }); // a group this Governor does not serve here
    await eventually(() => {
      const c = (status("kafka")?.conditions as { reason: string }[] | undefined)?.[0];
      expect(c?.reason).to.equal("NotServed");
      expect(status("kafka")).to.not.have.property("metrics");
    });
  });

  it("moves a route when its object changes, and drops it when it is deleted", async () => {
    mu("kafka", upstreamAt("kafka", kafka.port, { metrics: ["*"] }));
    await running.start();
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/anything`)).value).to.equal("kafka"),
    );
    mu("kafka", upstreamAt("keda", keda.port, { metrics: ["*"] }));
    await eventually(async () =>
      expect((await value(`${E}/namespaces/shop/anything`)).value).to.equal("keda"),
    );
    await kube.delete(`${METRICS_UPSTREAMS_PATH}/kafka`);
    await eventually(async () => expect((await value(`${E}/namespaces/shop/anything`)).status).to.equal(404));
  });
});
