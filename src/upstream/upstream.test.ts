import { expect } from "chai";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { createCA, issueCertificate, type KeyPair } from "../certs/certs.js";
import { FakeProvider } from "../../test/support/fake-provider.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { MetricsApi } from "../apiserver/metrics-api.js";
import { type ForwardedApi, Upstream, parseUpstreamService } from "./upstream.js";
import { UpstreamRouter, shadowedBy } from "./router.js";
import { EXTERNAL_GROUP, JsonText } from "../apiserver/wire.js";

const SERVICE = "/api/v1/namespaces/metrics/services/adapter";
const E = "/apis/external.metrics.k8s.io/v1beta1";

/** What the fake upstream answers a path with. */
type Answer = { status: number; body: string; contentType?: string };

const valueList = (metric: string, value: string) =>
  JSON.stringify({
    kind: "ExternalMetricValueList",
    apiVersion: "external.metrics.k8s.io/v1beta1",
    metadata: {},
    items: [{ metricName: metric, metricLabels: {}, timestamp: "2026-12-01T00:00:00Z", value }],
  });

const discovery = (...names: string[]) =>
  JSON.stringify({
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: "external.metrics.k8s.io/v1beta1",
    resources: names.map((name) => ({
      name,
      namespaced: true,
      kind: "ExternalMetricValueList",
      verbs: ["get"],
    })),
  });

describe("forwarding to an upstream metrics adapter", function () {
  this.timeout(20_000);
  let ca: KeyPair;
  let server: Server;
  let port: number;
  let kube: FakeKube;
  let provider: FakeProvider;
  const seen: { path: string; authorization?: string }[] = [];
  let answer: (path: string) => Answer;
  const upstreams: Upstream[] = [];

  const upstream = (over: Partial<ConstructorParameters<typeof Upstream>[0]> = {}) => {
    const u = new Upstream({
      api: "external",
      group: EXTERNAL_GROUP,
      versions: ["v1beta1"],
      service: { namespace: "metrics", name: "adapter", port },
      client: kube,
      identity: async () => ({ headers: { authorization: "Bearer governor-token" } }),
      logger: pino({ level: "silent" }),
      ...over,
    });
    upstreams.push(u);
    return u;
  };
  const trusted = (over: Partial<ConstructorParameters<typeof Upstream>[0]> = {}) => {
    const u = upstream(over);
    u.setTrust({ ca: ca.cert, from: "test" });
    return u;
  };
  const ask = (api: MetricsApi, path: string) => {
    const q = path.indexOf("?");
    return api.handle(
      "GET",
      {
        pathname: q < 0 ? path : path.slice(0, q),
        searchParams: new URLSearchParams(q < 0 ? "" : path.slice(q + 1)),
      },
      "application/json",
    );
  };
  const text = (body: unknown) => (body instanceof JsonText ? body.bytes.toString() : JSON.stringify(body));

  before(async () => {
    ca = await createCA("upstream-ca");
    const leaf = await issueCertificate(ca, {
      commonName: "adapter",
      dnsNames: ["adapter.metrics.svc"],
      usage: "server",
    });
    server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
      seen.push({ path: req.url ?? "", authorization: req.headers.authorization });
      const a = answer(req.url ?? "");
      res.writeHead(a.status, { "content-type": a.contentType ?? "application/json" }).end(a.body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as AddressInfo).port;
  });
  after(() => server.close());
  beforeEach(() => {
    kube = new FakeKube();
    kube.seed(SERVICE, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "metrics", name: "adapter" },
      spec: { type: "ExternalName", externalName: "127.0.0.1" },
    });
    provider = new FakeProvider();
    provider.external.push({ namespace: "shop", metric: "governor_backlog", value: "40" });
    seen.length = 0;
    answer = (path) =>
      path.startsWith(`${E}/namespaces/`)
        ? { status: 200, body: valueList("queue_messages", "30") }
        : path === E
          ? { status: 200, body: discovery("queue_messages", "governor_backlog") }
          : { status: 404, body: "{}" };
  });
  afterEach(async () => {
    for (const u of upstreams.splice(0)) await u.stop();
  });

  it("passes a request for a metric Governor does not serve to the upstream, as Governor, and hands back the answer as it is", async () => {
    const api = new MetricsApi(provider, {
      custom: true,
      external: true,
      delegates: { external: trusted() },
    });
    const r = await ask(api, `${E}/namespaces/shop/queue_messages?labelSelector=queue%3Dorders&junk=1`);
    expect(r.status).to.equal(200);
    expect(text(r.body)).to.equal(valueList("queue_messages", "30"));
    expect(seen).to.deep.equal([
      {
        path: `${E}/namespaces/shop/queue_messages?labelSelector=queue%3Dorders`,
        authorization: "Bearer governor-token",
      },
    ]);
  });

  it("answers a metric a mapping serves itself, never asking the upstream (Governor wins a clash)", async () => {
    const api = new MetricsApi(provider, {
      custom: true,
      external: true,
      delegates: { external: trusted() },
    });
    const r = await ask(api, `${E}/namespaces/shop/governor_backlog`);
    expect(r.status).to.equal(200);
    expect(JSON.parse(text(r.body)).items[0].value).to.equal("40");
    expect(seen).to.deep.equal([]);
  });

  it("passes on the upstream's own errors with their status (404 for a metric neither serves)", async () => {
    answer = () => ({ status: 404, body: '{"kind":"Status","code":404,"message":"no such metric"}' });
    const api = new MetricsApi(provider, {
      custom: true,
      external: true,
      delegates: { external: trusted() },
    });
    const r = await ask(api, `${E}/namespaces/shop/nothing`);
    expect(r.status).to.equal(404);
    expect(JSON.parse(text(r.body)).message).to.equal("no such metric");
  });

  it("lists the upstream's metrics in discovery beside Governor's, once each, and keeps them while it is down", async () => {
    const u = trusted();
    const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: u } });
    await u.refresh();
    const names = async () =>
      (JSON.parse(text((await ask(api, E)).body)) as { resources: { name: string }[] }).resources.map(
        (r) => r.name,
      );
    expect(await names()).to.deep.equal(["governor_backlog", "queue_messages"]);
    answer = () => ({ status: 503, body: "{}" });
    await u.refresh();
    expect(u.lastError).to.match(/answered 503/);
    expect(await names()).to.deep.equal(["governor_backlog", "queue_messages"]);
  });

  it("answers 503 naming the upstream when it cannot be reached, and Governor's own metrics still answer", async () => {
    const u = trusted({ service: { namespace: "metrics", name: "adapter", port: 1 } });
    const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: u } });
    const r = await ask(api, `${E}/namespaces/shop/queue_messages`);
    expect(r.status).to.equal(503);
    expect(JSON.parse(text(r.body)).message).to.match(
      /the upstream external metrics adapter \(Service metrics\/adapter:1\) is unavailable: connection refused/,
    );
    expect((await ask(api, `${E}/namespaces/shop/governor_backlog`)).status).to.equal(200);
  });

  it("sends nothing — not even its token — without the upstream's CA, or when the upstream's APIService skipped verification", async () => {
    const insecure = upstream();
    insecure.setTrust({ insecure: true, from: "test" });
    for (const u of [upstream(), insecure]) {
      const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: u } });
      const r = await ask(api, `${E}/namespaces/shop/queue_messages`);
      expect(r.status).to.equal(503);
      expect(JSON.parse(text(r.body)).message).to.match(/CA is not known yet|insecureSkipTLSVerify/);
    }
    expect(seen).to.deep.equal([]);
  });

  it("refuses an upstream whose certificate its CA did not sign", async () => {
    const u = upstream();
    u.setTrust({ ca: (await createCA("someone-else")).cert, from: "test" });
    const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: u } });
    const r = await ask(api, `${E}/namespaces/shop/queue_messages`);
    expect(r.status).to.equal(503);
    expect(seen).to.deep.equal([]);
  });

  it("refuses a path segment that would read differently once decoded again (400), and never forwards it", async () => {
    const api = new MetricsApi(provider, {
      custom: true,
      external: true,
      delegates: { external: trusted() },
    });
    const r = await ask(api, `${E}/namespaces/shop/a%2F..%2Fb`);
    expect(r.status).to.equal(400);
    expect(seen).to.deep.equal([]);
  });

  it("does not pass on an answer larger than its limit, or one that is not JSON", async () => {
    answer = () => ({ status: 200, body: "x".repeat(4096) });
    const api = new MetricsApi(provider, {
      custom: true,
      external: true,
      delegates: { external: trusted({ maxResponseBytes: 1024 }) },
    });
    expect((await ask(api, `${E}/namespaces/shop/queue_messages`)).status).to.equal(503);
    answer = () => ({ status: 200, body: "<html>", contentType: "text/html" });
    const r = await ask(api, `${E}/namespaces/shop/queue_messages`);
    expect(r.status).to.equal(503);
    expect(JSON.parse(text(r.body)).message).to.match(/not JSON/);
  });

  it("keeps running when an adapter answers discovery with null or a list: it lists nothing, and says why", async () => {
    for (const body of ["null", "[1,2]", "42"]) {
      answer = (path) => (path === E ? { status: 200, body } : { status: 404, body: "{}" });
      const u = trusted();
      await u.refresh();
      expect(u.listExternalMetrics(), body).to.deep.equal([]);
      expect(u.lastError, body).to.match(/not an APIResourceList/);
    }
  });

  it("reads its Service as namespace/name:port and refuses anything else", () => {
    expect(parseUpstreamService("keda/keda-operator-metrics-apiserver:443")).to.deep.equal({
      namespace: "keda",
      name: "keda-operator-metrics-apiserver",
      port: 443,
    });
    for (const bad of ["keda/keda", "keda/../x:443", "Keda/x:443", "keda/x:0", "keda/x:70000", "/x:1"])
      expect(() => parseUpstreamService(bad), bad).to.throw(/namespace\/name:port/);
  });
});

describe("a mapping whose metric the upstream serves too (ShadowsUpstream)", () => {
  /** Upstreams that list one metric each: external `queue`, custom `deployments.apps/http_requests`. */
  const catchAll = (api: ForwardedApi, description: string, lists: string) =>
    new UpstreamRouter(api, {
      catchAll: {
        description,
        serves: (a: ForwardedApi, name: string) => a === api && name === lists,
        serve: () => Promise.reject(new Error("not asked")),
        listCustomMetrics: () => [],
        listExternalMetrics: () => [],
      },
    });
  const upstreams = {
    external: catchAll("external", "the upstream external metrics adapter (Service keda/keda:443)", "queue"),
    custom: catchAll(
      "custom",
      "the upstream custom metrics adapter (Service monitoring/adapter:443)",
      "deployments.apps/http_requests",
    ),
  };
  const external = (metric: string) => ({
    namespace: "shop",
    metric,
    subject: { kind: "external" as const, labels: {} },
  });
  const custom = (metric: string, group: string, resource: string) => ({
    namespace: "shop",
    metric,
    subject: { kind: "resource" as const, groupResource: { group, resource } },
  });

  it("names the upstream, the metric and where each answers, for an external metric both serve", () => {
    expect(shadowedBy(external("queue"), upstreams)).to.equal(
      'the upstream external metrics adapter (Service keda/keda:443) also serves external metric "queue"; ' +
        "Governor answers it in namespace shop, the upstream everywhere else",
    );
  });

  it("matches a custom metric by its group-resource and name, as the upstream's discovery lists it", () => {
    expect(shadowedBy(custom("http_requests", "apps", "deployments"), upstreams)).to.include(
      'also serves custom metric "deployments.apps/http_requests"',
    );
    expect(shadowedBy(custom("http_requests", "", "pods"), upstreams)).to.equal(undefined);
  });

  it("says nothing when the upstream does not serve the metric, or nothing is forwarded for that API", () => {
    expect(shadowedBy(external("orders"), upstreams)).to.equal(undefined);
    expect(shadowedBy(external("queue"), { custom: upstreams.custom })).to.equal(undefined);
    expect(shadowedBy(external("queue"), {})).to.equal(undefined);
  });
});
