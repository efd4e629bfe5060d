import { expect } from "chai";
import type { IncomingMessage } from "node:http";
import { Agent } from "node:https";
import { eventually } from "../../test/support/eventually.js";
import type { JsonText } from "./wire.js";
import { pino } from "pino";
import { createCA, issueCertificate, type KeyPair } from "../certs/certs.js";
import { FakeProvider } from "../../test/support/fake-provider.js";
import { httpsGet, type HttpsGetOptions } from "../../test/support/https-get.js";
import { DelegatingAuthenticator, type UserInfo } from "./authn.js";
import { DelegatingAuthorizer, type SubjectAccessReviewSpec } from "./authz.js";
import { PromApiServerMetrics } from "./instrumentation.js";
import { MetricsApi } from "./metrics-api.js";
import { HISTORY_PAGE_POINTS, MappingHistories } from "../metrics/history.js";
import { MetricsApiServer } from "./server.js";
import type { GovernorError } from "../errors.js";
import { untilCancelled } from "../util/deadline.js";

const T = new Date("2026-11-22T10:00:00.123Z");
const C = "/apis/custom.metrics.k8s.io";
const E = "/apis/external.metrics.k8s.io/v1beta1";

describe("metrics API server", function () {
  this.timeout(20_000);
  let servingCA: KeyPair, clientCA: KeyPair, proxyCA: KeyPair;
  let admin: KeyPair, alice: KeyPair, proxy: KeyPair, rogueProxy: KeyPair, stranger: KeyPair;
  let server: MetricsApiServer;
  let base: string;
  let metrics: PromApiServerMetrics;
  const provider = new FakeProvider();
  const reviews: SubjectAccessReviewSpec[] = [];
  const allowed = new Set<string>(["proxied-hpa"]);
  let reviewerDown = false;
  let authzClockMs = 0;

  const get = (path: string, creds: KeyPair | null = admin, opts: HttpsGetOptions = {}) =>
    httpsGet(base + path, {
      ca: servingCA.cert,
      servername: "governor.governor-system.svc",
      ...(creds ? { cert: creds.cert, key: creds.key } : {}),
      ...opts,
    });

  /** A server of its own for one test (client certificates only, everyone allowed), and how to call it as admin. */
  const ownServer = async (
    api: MetricsApi,
    extra: Partial<ConstructorParameters<typeof MetricsApiServer>[0]>,
  ) => {
    const authenticator = new DelegatingAuthenticator({ review: async () => undefined });
    authenticator.setConfig({ clientCA: clientCA.cert });
    const own = new MetricsApiServer({
      api,
      authenticator,
      authorizer: new DelegatingAuthorizer({ review: async () => ({ allowed: true, reason: "" }) }),
      logger: pino({ level: "silent" }),
      metrics: new PromApiServerMetrics(undefined, { defaultMetrics: false }),
      tls: await issueCertificate(servingCA, {
        commonName: "governor",
        dnsNames: ["governor.governor-system.svc"],
        usage: "server",
      }),
      host: "127.0.0.1",
      port: 0,
      shutdownDelayMs: 0,
      ...extra,
    });
    const { port } = await own.listen();
    const opts = {
      ca: servingCA.cert,
      servername: "governor.governor-system.svc",
      cert: admin.cert,
      key: admin.key,
    };
    return { server: own, port, opts };
  };

  before(async () => {
    [servingCA, clientCA, proxyCA] = await Promise.all([
      createCA("serving-ca"),
      createCA("client-ca"),
      createCA("front-proxy-ca"),
    ]);
    const otherCA = await createCA("someone-else");
    const serving = await issueCertificate(servingCA, {
      commonName: "governor",
      dnsNames: ["governor.governor-system.svc"],
      usage: "server",
    });
    [admin, alice, proxy, rogueProxy, stranger] = await Promise.all([
      issueCertificate(clientCA, { commonName: "admin", organizations: ["system:masters"], usage: "client" }),
      issueCertificate(clientCA, { commonName: "alice", organizations: ["dev"], usage: "client" }),
      issueCertificate(proxyCA, { commonName: "front-proxy-client", usage: "client" }),
      issueCertificate(proxyCA, { commonName: "rogue-proxy", usage: "client" }),
      issueCertificate(otherCA, { commonName: "admin", organizations: ["system:masters"], usage: "client" }),
    ]);
    metrics = new PromApiServerMetrics(undefined, { defaultMetrics: false });
    const authenticator = new DelegatingAuthenticator(
      {
        review: async (token): Promise<UserInfo | undefined> =>
          token === "good-token" ? { name: "bob", groups: ["system:authenticated"], extra: {} } : undefined,
      },
      { onCache: (r) => metrics.authnCache(r) },
    );
    authenticator.setConfig({
      clientCA: clientCA.cert,
      requestHeader: {
        clientCA: proxyCA.cert,
        allowedNames: ["front-proxy-client"],
        usernameHeaders: ["X-Remote-User"],
        groupHeaders: ["X-Remote-Group"],
        extraHeaderPrefixes: ["X-Remote-Extra-"],
      },
    });
    const authorizer = new DelegatingAuthorizer(
      {
        review: async (spec) => {
          if (reviewerDown) throw new Error("connect ECONNREFUSED");
          reviews.push(spec);
          return { allowed: allowed.has(spec.user), reason: "" };
        },
      },
      // Decisions live 10 s of a clock the tests move (authzClockMs), never of the machine's.
      { ttlMs: 10_000, onCache: (r) => metrics.authzCache(r), now: () => Date.now() + authzClockMs },
    );
    server = new MetricsApiServer({
      api: new MetricsApi(provider),
      authenticator,
      authorizer,
      logger: pino({ level: "silent" }),
      metrics,
      tls: serving,
      host: "127.0.0.1",
      port: 0,
      shutdownDelayMs: 0,
    });
    const addr = await server.listen();
    base = `https://127.0.0.1:${addr.port}`;

    const pod = (name: string, app: string, value: string) => ({
      groupResource: { group: "", resource: "pods" },
      object: { kind: "Pod", namespace: "shop", name, apiVersion: "v1" },
      labels: { app },
      metric: "http_requests",
      value,
      metricLabels: { code: "200" },
      timestamp: T,
      windowSeconds: 60,
    });
    provider.objects.push(
      pod("web-1", "web", "1500m"),
      pod("web-2", "web", "2"),
      pod("api-1", "api", "7"),
      {
        groupResource: { group: "apps", resource: "deployments" },
        object: { kind: "Deployment", namespace: "shop", name: "web", apiVersion: "apps/v1" },
        metric: "queue_depth",
        value: "42",
        timestamp: T,
      },
      {
        groupResource: { group: "", resource: "nodes" },
        object: { kind: "Node", name: "node-1", apiVersion: "v1" },
        metric: "load",
        value: "3",
        timestamp: T,
      },
      {
        groupResource: { group: "", resource: "namespaces" },
        object: { kind: "Namespace", name: "shop", apiVersion: "v1" },
        metric: "open_orders",
        value: "12",
        timestamp: T,
      },
      {
        groupResource: { group: "", resource: "services" },
        object: { kind: "Service", namespace: "shop", name: "down", apiVersion: "v1" },
        metric: "rps",
        value: "1",
        unavailable: true,
      },
    );
    provider.external.push(
      { namespace: "shop", metric: "queue_depth", labels: { queue: "orders" }, value: "30", timestamp: T },
      { namespace: "shop", metric: "queue_depth", labels: { queue: "emails" }, value: "5", timestamp: T },
      { namespace: "shop", metric: "stale_queue", value: "5", unavailable: true },
    );
  });

  after(async () => {
    await server?.shutdown();
  });

  describe("answers every path form with the right status and item count", () => {
    const table: [string, number, number?][] = [
      [`${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`, 200, 1],
      [`${C}/v1beta1/namespaces/shop/pods/web-1/http_requests`, 200, 1],
      [`${C}/v1beta2/namespaces/shop/pods/*/http_requests?labelSelector=app%3Dweb`, 200, 2],
      [`${C}/v1beta1/namespaces/shop/pods/*/http_requests?labelSelector=app%3Dweb`, 200, 2],
      [`${C}/v1beta2/namespaces/shop/pods/*/http_requests`, 200, 3],
      [`${C}/v1beta2/namespaces/shop/pods/*/http_requests?labelSelector=app%3Dnone`, 200, 0],
      [
        `${C}/v1beta2/namespaces/shop/pods/*/http_requests?labelSelector=app%20in%20(web,api)&metricLabelSelector=code%3D200`,
        200,
        3,
      ],
      [`${C}/v1beta2/namespaces/shop/pods/*/http_requests?metricLabelSelector=code%3D500`, 200, 0],
      [`${C}/v1beta2/namespaces/shop/deployments.apps/web/queue_depth`, 200, 1],
      [`${C}/v1beta1/namespaces/shop/deployments.apps/web/queue_depth`, 200, 1],
      [`${C}/v1beta2/nodes/node-1/load`, 200, 1],
      [`${C}/v1beta1/nodes/*/load`, 200, 1],
      [`${C}/v1beta2/namespaces/shop/metrics/open_orders`, 200, 1],
      [`${C}/v1beta1/namespaces/shop/metrics/open_orders`, 200, 1],
      [`${E}/namespaces/shop/queue_depth`, 200, 2],
      [`${E}/namespaces/shop/queue_depth?labelSelector=queue%3Dorders`, 200, 1],
      [`${E}/namespaces/shop/queue_depth?labelSelector=queue%3Dnone`, 200, 0],
      // errors
      [`${C}/v1beta2/namespaces/shop/pods/web-%zz/http_requests`, 400],
      [`${C}/v1beta2/namespaces/shop/pods/*/http%E0%A4%A`, 400],
      [`${C}/v1beta2/namespaces/shop/pods/web-9/http_requests`, 404],
      [`${C}/v1beta2/namespaces/shop/pods/web-1/no_such_metric`, 404],
      [`${C}/v1beta2/namespaces/other/deployments.apps/web/queue_depth`, 404],
      [`${C}/v1beta2/namespaces/shop/pods/*/no_such_metric?labelSelector=app%3Dweb`, 404],
      [`${C}/v1beta2/namespaces/shop/pods/*/http_requests?labelSelector=app%3D%3D%3Dweb`, 400],
      [`${C}/v1beta2/namespaces/shop/pods/web-1/http_requests?metricLabelSelector=in%20(`, 400],
      [`${E}/namespaces/shop/queue_depth?labelSelector=%21`, 400],
      [`${C}/v1beta2/namespaces/shop/services/down/rps`, 503],
      [`${E}/namespaces/shop/stale_queue`, 503],
      [`${E}/namespaces/shop/missing`, 404],
      [`${C}/v1beta3/namespaces/shop/pods/web-1/http_requests`, 404],
      [`${C}/v1beta2/namespaces/shop/pods/web-1`, 404],
      [`${C}/v1beta2/namespaces/shop/pods/web-1/http_requests/extra`, 404],
      [`${E}/queue_depth`, 404],
      ["/apis/metrics.k8s.io/v1beta1", 404],
      ["/api/v1/pods", 404],
    ];
    for (const [path, status, items] of table) {
      it(`GET ${path.replace(/^\/apis\//, "")} → ${status}${items !== undefined ? `, ${items} items` : ""}`, async () => {
        const res = await get(path);
        expect(res.status, res.text).to.equal(status);
        expect(res.headers["content-type"]).to.equal("application/json");
        if (status === 200) expect(res.json.items).to.have.length(items!);
        else {
          expect(res.json).to.include({ kind: "Status", apiVersion: "v1", status: "Failure", code: status });
          expect(res.json.reason).to.equal(
            { 400: "BadRequest", 404: "NotFound", 503: "ServiceUnavailable" }[status],
          );
          expect(res.json.message).to.be.a("string").and.not.empty;
        }
      });
    }
  });

  describe("wire format", () => {
    it("serves v1beta2 bodies as k8s.io/metrics serializes them (metric.name, null selector, windowSeconds)", async () => {
      const res = await get(`${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`);
      expect(res.json).to.deep.equal({
        kind: "MetricValueList",
        apiVersion: "custom.metrics.k8s.io/v1beta2",
        metadata: {},
        items: [
          {
            describedObject: { kind: "Pod", namespace: "shop", name: "web-1", apiVersion: "v1" },
            metric: { name: "http_requests", selector: null },
            timestamp: "2026-11-22T10:00:00Z",
            windowSeconds: 60,
            value: "1500m",
          },
        ],
      });
    });

    it("serves v1beta1 bodies with metricName, window and a top-level selector echoing metricLabelSelector", async () => {
      const res = await get(
        `${C}/v1beta1/namespaces/shop/pods/web-2/http_requests?metricLabelSelector=code%3D200`,
      );
      expect(res.json.apiVersion).to.equal("custom.metrics.k8s.io/v1beta1");
      expect(res.json.items[0]).to.deep.equal({
        describedObject: { kind: "Pod", namespace: "shop", name: "web-2", apiVersion: "v1" },
        metricName: "http_requests",
        timestamp: "2026-11-22T10:00:00Z",
        window: 60,
        value: "2",
        selector: { matchLabels: { code: "200" } },
      });
    });

    it("serves external values with metricName and metricLabels, for the HPA to sum", async () => {
      const res = await get(`${E}/namespaces/shop/queue_depth`);
      expect(res.json.kind).to.equal("ExternalMetricValueList");
      expect(res.json.items).to.deep.include({
        metricName: "queue_depth",
        metricLabels: { queue: "orders" },
        timestamp: "2026-11-22T10:00:00Z",
        value: "30",
      });
    });

    it("leaves out the namespace of cluster-scoped objects", async () => {
      const res = await get(`${C}/v1beta2/nodes/node-1/load`);
      expect(res.json.items[0].describedObject).to.deep.equal({
        kind: "Node",
        name: "node-1",
        apiVersion: "v1",
      });
    });

    it("lists live metrics in discovery, namespaced or not", async () => {
      const res = await get(`${C}/v1beta2`);
      expect(res.json.kind).to.equal("APIResourceList");
      expect(res.json.groupVersion).to.equal("custom.metrics.k8s.io/v1beta2");
      const byName = Object.fromEntries(
        (res.json.resources as { name: string; namespaced: boolean }[]).map((r) => [r.name, r]),
      );
      expect(byName["pods/http_requests"]).to.deep.include({
        namespaced: true,
        kind: "MetricValueList",
        verbs: ["get"],
      });
      expect(byName["deployments.apps/queue_depth"]).to.deep.include({ namespaced: true });
      expect(byName["nodes/load"]).to.deep.include({ namespaced: false });
      expect(byName["namespaces/open_orders"]).to.deep.include({ namespaced: false });
      const ext = await get(E);
      expect((ext.json.resources as { name: string; kind: string }[]).map((r) => r.name)).to.deep.equal([
        "queue_depth",
        "stale_queue",
      ]);
      expect(ext.json.resources[0].kind).to.equal("ExternalMetricValueList");
    });

    it("never lists an empty resources list, even with no metrics at all", async () => {
      const empty = new MetricsApi(new FakeProvider());
      const custom = await empty.handle("GET", new URL(`https://x${C}/v1beta1`), undefined);
      const external = await empty.handle("GET", new URL(`https://x${E}`), undefined);
      const resources = (body: unknown) =>
        (JSON.parse((body as JsonText).text) as { resources: unknown[] }).resources;
      expect(resources(custom.body)).to.have.length(1);
      expect(resources(external.body)).to.have.length(1);
      const placeholder = await empty.handle(
        "GET",
        new URL(`https://x${E}/namespaces/a/governor-no-metrics-yet`),
        undefined,
      );
      expect(placeholder.status).to.equal(404);
    });

    it("keeps serving discovery from one serialized body until the metric list changes", async () => {
      let list = [{ groupResource: { group: "", resource: "pods" }, namespaced: true, metric: "a" }];
      const provider = Object.assign(new FakeProvider(), { listCustomMetrics: () => list });
      const api = new MetricsApi(provider);
      const get = async () => (await api.handle("GET", new URL(`https://x${C}/v1beta2`), undefined)).body;
      const first = await get();
      expect(await get()).to.equal(first);
      list = [...list, { groupResource: { group: "", resource: "pods" }, namespaced: true, metric: "b" }];
      const changed = (await get()) as JsonText;
      expect(changed).to.not.equal(first);
      expect(JSON.parse(changed.text).resources.map((r: { name: string }) => r.name)).to.deep.equal([
        "pods/a",
        "pods/b",
      ]);
    });

    it("serves group discovery with v1beta2 preferred", async () => {
      const all = await get("/apis");
      expect(all.json.kind).to.equal("APIGroupList");
      expect((all.json.groups as { name: string }[]).map((g) => g.name)).to.deep.equal([
        "custom.metrics.k8s.io",
        "external.metrics.k8s.io",
      ]);
      const group = await get("/apis/custom.metrics.k8s.io");
      expect(group.json.preferredVersion).to.deep.equal({
        groupVersion: "custom.metrics.k8s.io/v1beta2",
        version: "v1beta2",
      });
      expect(group.json.versions).to.have.length(2);
    });

    it("answers JSON to the HPA's protobuf-first Accept header", async () => {
      const res = await get(`${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`, admin, {
        headers: { accept: "application/vnd.kubernetes.protobuf, */*" },
      });
      expect(res.status).to.equal(200);
      expect(res.headers["content-type"]).to.equal("application/json");
    });

    it("serves aggregated discovery v2 at /apis with an ETag, 304 while unchanged, and 406 for what it does not serve", async () => {
      const v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
      const res = await get("/apis", admin, { headers: { accept: v2 } });
      expect(res.status).to.equal(200);
      expect(res.headers["content-type"]).to.equal(v2);
      expect(res.json.kind).to.equal("APIGroupDiscoveryList");
      const custom = res.json.items[0];
      expect(custom.metadata.name).to.equal("custom.metrics.k8s.io");
      expect(custom.versions.map((v: { version: string }) => v.version)).to.deep.equal([
        "v1beta2",
        "v1beta1",
      ]);
      const pods = custom.versions[0].resources.find((r: { resource: string }) => r.resource === "pods");
      expect(pods.scope).to.equal("Namespaced");
      expect(pods.verbs, "a parent of metrics only has no verbs of its own").to.equal(undefined);
      expect(pods.subresources).to.deep.include({
        subresource: "http_requests",
        responseKind: { group: "", version: "", kind: "MetricValueList" },
        verbs: ["get"],
      });
      const external = res.json.items[1].versions[0].resources.map((r: { resource: string }) => r.resource);
      expect(external).to.include("queue_depth");

      const etag = res.headers.etag as string;
      expect(etag).to.match(/^"[0-9a-f]{32}"$/);
      const again = await get("/apis", admin, { headers: { accept: v2, "if-none-match": etag } });
      expect(again.status).to.equal(304);
      expect(again.text).to.equal("");

      const v2beta1Only = await get("/apis", admin, {
        headers: { accept: "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList" },
      });
      expect(v2beta1Only.status).to.equal(406);
      expect(v2beta1Only.json.reason).to.equal("NotAcceptable");
      const notHere = await get(`${C}/v1beta2`, admin, { headers: { accept: v2 } });
      expect(notHere.status, "aggregated discovery is served at /apis only").to.equal(406);
      const withFallback = await get(`${C}/v1beta2`, admin, {
        headers: { accept: `${v2},application/json` },
      });
      expect(withFallback.status).to.equal(200);
      expect(withFallback.json.kind).to.equal("APIResourceList");
    });

    it("changes the aggregated discovery ETag when the metrics change", async () => {
      const v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
      const before = (await get("/apis", admin, { headers: { accept: v2 } })).headers.etag;
      const api = new MetricsApi(new FakeProvider());
      const empty = await api.handle("GET", new URL("https://x/apis"), v2);
      expect(empty.etag).to.not.equal(before);
      const cached = await api.handle("GET", new URL("https://x/apis"), v2, empty.etag);
      expect(cached.status).to.equal(304);
    });

    it("serves minimal OpenAPI documents", async () => {
      const v2 = await get("/openapi/v2");
      expect(v2.status).to.equal(200);
      expect(v2.json.swagger).to.equal("2.0");
      const v3 = await get("/openapi/v3");
      expect(v3.status).to.equal(200);
      expect(v3.json.paths).to.deep.equal({});
    });

    it("serves the samples kept of a mapping as history.governor.dev, listed in discovery only when kept", async () => {
      const history = new MappingHistories(3);
      const ring = history.ringOf({ onStop: () => {} });
      history.attach("team-a/shop", ring);
      for (let i = 1; i <= 5; i++) ring.record(Date.now() - (5 - i) * 60_000, { kind: "scalar", value: i });
      const api = new MetricsApi(provider, { custom: true, external: true, history });
      const H = "/apis/history.governor.dev/v1alpha1";
      const body = async (path: string) => {
        const res = await api.handle("GET", new URL(`https://x${path}`), undefined);
        return { status: res.status, json: JSON.parse(JSON.stringify(res.body)) };
      };
      const all = await body(`${H}/namespaces/team-a/metricmappings/shop`);
      expect(all.status).to.equal(200);
      expect(all.json).to.include({ kind: "MetricMappingHistory", capacity: 3 });
      expect(all.json.metadata).to.deep.equal({ name: "shop", namespace: "team-a" });
      expect(all.json.points.sum).to.deep.equal([3, 4, 5]);
      const recent = await body(`${H}/namespaces/team-a/metricmappings/shop?sinceSeconds=90`);
      expect(recent.json.points.sum).to.deep.equal([4, 5]);
      expect((await body(`${H}/namespaces/team-b/metricmappings/shop`)).status).to.equal(404);
      expect((await body(`${H}/namespaces/team-a/metricmappings/shop?sinceSeconds=-1`)).status).to.equal(400);
      for (const q of [
        "continue=x",
        "continue=",
        "continue=1e3",
        "sinceSeconds=0",
        "sinceSeconds=60&continue=5",
      ])
        expect((await body(`${H}/namespaces/team-a/metricmappings/shop?${q}`)).status, q).to.equal(400);
      // A later page asked of a replica that keeps none (it restarted): the history ends there.
      const ended = await body(`${H}/namespaces/team-b/metricmappings/shop?continue=5`);
      expect([ended.status, ended.json.points.atMs, ended.json.metadata.continue]).to.deep.equal([
        200,
        [],
        undefined,
      ]);
      expect((await body(`${H}/namespaces/team-a%2Fshop/metricmappings/x`)).status).to.equal(404);
      expect((await body(`${H}/namespaces/team-a/metricmappings`)).status).to.equal(404);
      expect((await body(H)).json.resources.map((r: { name: string }) => r.name)).to.deep.equal([
        "metricmappings",
      ]);
      expect((await body("/apis")).json.groups.map((g: { name: string }) => g.name)).to.include(
        "history.governor.dev",
      );
      const v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
      const aggregated = await api.handle("GET", new URL("https://x/apis"), v2);
      expect(
        JSON.parse((aggregated.body as JsonText).text).items.map(
          (g: { metadata: { name: string } }) => g.metadata.name,
        ),
      ).to.include("history.governor.dev");
      // Without kept samples the group is not served at all.
      const without = new MetricsApi(provider);
      expect(
        (
          await without.handle(
            "GET",
            new URL(`https://x${H}/namespaces/team-a/metricmappings/shop`),
            undefined,
          )
        ).status,
      ).to.equal(404);
      expect(
        JSON.stringify((await without.handle("GET", new URL("https://x/apis"), undefined)).body),
      ).to.not.contain("history");
    });

    it("answers a long history in pages of a bounded size, each naming the next", async () => {
      const history = new MappingHistories(2 * HISTORY_PAGE_POINTS + 10);
      const ring = history.ringOf({ onStop: () => {} });
      history.attach("a/m", ring);
      const t0 = Date.now() - 3_600_000;
      for (let i = 0; i < 2 * HISTORY_PAGE_POINTS + 10; i++)
        ring.record(t0 + i * 100, { kind: "scalar", value: i });
      const api = new MetricsApi(provider, { custom: true, external: true, history });
      const sizes: number[] = [];
      let path = "/apis/history.governor.dev/v1alpha1/namespaces/a/metricmappings/m";
      for (;;) {
        const res = await api.handle("GET", new URL(`https://x${path}`), undefined);
        const json = JSON.parse(JSON.stringify(res.body));
        sizes.push(json.points.atMs.length);
        if (!json.metadata.continue) break;
        path = `/apis/history.governor.dev/v1alpha1/namespaces/a/metricmappings/m?continue=${json.metadata.continue}`;
      }
      expect(sizes).to.deep.equal([HISTORY_PAGE_POINTS, HISTORY_PAGE_POINTS, 10]);
    });

    it("refuses writes with 405", async () => {
      const api = new MetricsApi(provider);
      const res = await api.handle(
        "POST",
        new URL(`https://x${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`),
        undefined,
      );
      expect(res.status).to.equal(405);
    });
  });

  describe("authentication and authorization", () => {
    const podPath = `${C}/v1beta2/namespaces/shop/pods/*/http_requests?labelSelector=app%3Dweb`;

    it("health endpoints need no credentials", async () => {
      for (const path of ["/healthz", "/livez", "/readyz"]) {
        const res = await get(path, null);
        expect(res.status, path).to.equal(200);
      }
    });

    it("ignores spoofed X-Remote-User headers without a front-proxy certificate: anonymous → 401, without asking the apiserver", async () => {
      reviews.length = 0;
      const res = await get(podPath, null, {
        headers: { "X-Remote-User": "proxied-hpa", "X-Remote-Group": "system:masters" },
      });
      expect(res.status).to.equal(401);
      expect(res.json.reason).to.equal("Unauthorized");
      expect(reviews, "SubjectAccessReviews made").to.deep.equal([]);
    });

    it("ignores X-Remote-* headers from an ordinary client certificate", async () => {
      reviews.length = 0;
      const res = await get(podPath, alice, {
        headers: { "X-Remote-User": "proxied-hpa", "X-Remote-Group": "system:masters" },
      });
      expect(res.status).to.equal(403);
      expect(reviews[0]?.user).to.equal("alice");
    });

    it("rejects a front-proxy certificate whose CN is not allowed with 401", async () => {
      const res = await get(podPath, rogueProxy, { headers: { "X-Remote-User": "proxied-hpa" } });
      expect(res.status).to.equal(401);
      expect(res.json).to.include({ kind: "Status", reason: "Unauthorized", code: 401 });
    });

    it("rejects a certificate from an unknown CA with 401, whatever it claims", async () => {
      const res = await get(podPath, stranger);
      expect(res.status).to.equal(401);
    });

    it("trusts X-Remote-* from the front proxy and sends kube-apiserver's SubjectAccessReview attributes", async () => {
      reviews.length = 0;
      const res = await get(podPath, proxy, {
        headers: {
          "X-Remote-User": "proxied-hpa",
          "X-Remote-Group": ["system:serviceaccounts", "system:authenticated"],
          "X-Remote-Extra-Scopes": "a",
        },
      });
      expect(res.status, res.text).to.equal(200);
      expect(reviews[0]).to.deep.equal({
        user: "proxied-hpa",
        groups: ["system:serviceaccounts", "system:authenticated"],
        extra: { scopes: ["a"] },
        resourceAttributes: {
          namespace: "shop",
          verb: "get",
          group: "custom.metrics.k8s.io",
          version: "v1beta2",
          resource: "pods",
          subresource: "http_requests",
          name: "*",
        },
      });
    });

    it("reviews external metrics as verb list on the metric's resource", async () => {
      reviews.length = 0;
      await get(`${E}/namespaces/shop/queue_depth`, proxy, { headers: { "X-Remote-User": "ext-user" } });
      expect(reviews[0]?.resourceAttributes).to.deep.include({
        verb: "list",
        resource: "queue_depth",
        namespace: "shop",
        name: "",
      });
    });

    it("puts every authenticated user in system:authenticated, as kube-apiserver does (the aggregator sends no groups)", async () => {
      reviews.length = 0;
      await get("/openapi/v2", proxy, { headers: { "X-Remote-User": "system:aggregator" } });
      expect(reviews[0]).to.deep.include({ user: "system:aggregator", groups: ["system:authenticated"] });
      expect(reviews[0]?.nonResourceAttributes).to.deep.equal({ path: "/openapi/v2", verb: "get" });
    });

    it("members of system:masters need no review", async () => {
      reviews.length = 0;
      const res = await get(podPath, proxy, {
        headers: { "X-Remote-User": "agg", "X-Remote-Group": "system:masters" },
      });
      expect(res.status).to.equal(200);
      expect(reviews).to.have.length(0);
    });

    it("authenticates front-proxy extras named __proto__, constructor or toString, and reviews with them", async () => {
      reviews.length = 0;
      const res = await get(podPath, proxy, {
        headers: {
          "X-Remote-User": "proxied-hpa",
          "X-Remote-Extra-__proto__": "p",
          "X-Remote-Extra-Constructor": "c",
          "X-Remote-Extra-toString": "t",
          "X-Remote-Extra-hasOwnProperty": "h",
        },
      });
      expect(res.status, res.text).to.equal(200);
      const extra = JSON.parse(JSON.stringify(reviews[0]?.extra)) as Record<string, string[]>;
      expect(Object.keys(extra).sort()).to.deep.equal([
        "__proto__",
        "constructor",
        "hasownproperty",
        "tostring",
      ]);
      expect(extra["__proto__"]).to.deep.equal(["p"]);
    });

    it("answers 429 TooManyRequests with Retry-After once new bearer tokens exceed the review budget", async () => {
      const reviewed: string[] = [];
      const authenticator = new DelegatingAuthenticator(
        { review: async (t) => (reviewed.push(t), undefined) },
        { tokenReviewBurst: 1, tokenReviewsPerSecond: 0.001 },
      );
      authenticator.setConfig({ clientCA: clientCA.cert });
      const { server: own, port, opts } = await ownServer(new MetricsApi(provider), { authenticator });
      try {
        const url = `https://127.0.0.1:${port}${C}/v1beta2`;
        const withToken = (token: string) =>
          httpsGet(url, {
            ...opts,
            cert: undefined,
            key: undefined,
            headers: { authorization: `Bearer ${token}` },
          });
        const first = await withToken("junk-1");
        expect(first.status).to.equal(401);
        const second = await withToken("junk-2");
        expect(second.status).to.equal(429);
        expect(second.headers["retry-after"]).to.equal("1");
        expect(second.json).to.include({ kind: "Status", reason: "TooManyRequests", code: 429 });
        const again = await withToken("junk-1");
        expect(again.status, "a rejected token is answered from the cache").to.equal(401);
        expect((await httpsGet(url, opts)).status, "client certificates are not limited").to.equal(200);
        expect(reviewed).to.deep.equal(["junk-1"]);
      } finally {
        await own.shutdown();
      }
    });

    it("accepts valid bearer tokens and rejects others with 401", async () => {
      allowed.add("bob");
      try {
        const ok = await get(podPath, null, { headers: { authorization: "Bearer good-token" } });
        expect(ok.status).to.equal(200);
        const bad = await get(podPath, null, { headers: { authorization: "Bearer forged" } });
        expect(bad.status).to.equal(401);
      } finally {
        allowed.delete("bob");
      }
    });

    it("answers 500, never allows, when the access review cannot be made", async () => {
      reviewerDown = true;
      try {
        const res = await get(`${C}/v1beta2/namespaces/shop/pods/web-2/http_requests`, proxy, {
          headers: { "X-Remote-User": "fresh-user" },
        });
        expect(res.status).to.equal(500);
        expect(res.json.reason).to.equal("InternalError");
        expect(res.json.message, "no internal detail reaches the caller").to.not.match(/ECONNREFUSED/);
        expect(res.json.message).to.match(
          /^internal error \(request [-0-9a-f]+; the details are in Governor's log\)$/,
        );
      } finally {
        reviewerDown = false;
      }
    });

    it("passes on an upstream adapter's own 500 as it said it, where Governor's own 500s say only where to look", async () => {
      const theirs = {
        kind: "Status",
        apiVersion: "v1",
        status: "Failure",
        message: "prometheus metrics 'prometheus' target may be lost, the result is empty",
        code: 500,
      };
      class ForwardingApi extends MetricsApi {
        override async handle(...args: Parameters<MetricsApi["handle"]>) {
          const own = await super.handle(...args);
          return { status: 500, body: theirs, kind: own.kind, forwarded: true };
        }
      }
      const { server: fronting, port, opts } = await ownServer(new ForwardingApi(provider), {});
      try {
        const res = await httpsGet(`https://127.0.0.1:${port}${E}/namespaces/shop/s0-prometheus`, opts);
        expect(res.status).to.equal(500);
        expect(res.json).to.deep.equal(theirs);
      } finally {
        await fronting.shutdown();
      }
    });

    it("echoes the apiserver's Audit-ID, but replaces one that is long or odd with a fresh id", async () => {
      const path = `${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`;
      const uuid = "3f2b9c1e-0d6a-4f7e-9a51-2c8e5b7d4a10";
      const echoed = await get(path, proxy, {
        headers: { "X-Remote-User": "proxied-hpa", "Audit-ID": uuid },
      });
      expect(echoed.headers["audit-id"]).to.equal(uuid);
      for (const odd of ["x".repeat(4000), "a b", "id;drop"]) {
        const res = await get(path, proxy, { headers: { "X-Remote-User": "proxied-hpa", "Audit-ID": odd } });
        expect(res.status).to.equal(200);
        expect(res.headers["audit-id"]).to.match(
          /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
        );
      }
    });

    it("answers 429 with Retry-After beyond its in-flight limit, and health checks still", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let entered = 0;
      class SlowApi extends MetricsApi {
        override async handle(...args: Parameters<MetricsApi["handle"]>) {
          entered++;
          await gate;
          return super.handle(...args);
        }
      }
      const { server: limited, port, opts } = await ownServer(new SlowApi(provider), { maxInFlight: 2 });
      try {
        const url = `https://127.0.0.1:${port}${C}/v1beta2`;
        const held = [httpsGet(url, opts), httpsGet(url, opts)];
        await eventually(() => expect(entered).to.equal(2)); // both in flight, waiting at the gate
        const refused = await httpsGet(url, opts);
        expect(refused.status).to.equal(429);
        expect(refused.headers["retry-after"]).to.equal("1");
        expect(refused.json.reason).to.equal("TooManyRequests");
        expect((await httpsGet(`https://127.0.0.1:${port}/healthz`, opts)).status).to.equal(200);
        release();
        expect((await Promise.all(held)).map((r) => r.status)).to.deep.equal([200, 200]);
        expect((await httpsGet(url, opts)).status, "served again once below the limit").to.equal(200);
      } finally {
        release();
        await limited.shutdown();
      }
    });

    it("answers 504 Timeout when no value comes within the request's deadline, and stops waiting at once when the client leaves", async () => {
      const ended: string[] = [];
      class WaitingProvider extends FakeProvider {
        // As the MetricMapping provider waits for a first sample that does not come.
        override getExternalMetric(req: Parameters<FakeProvider["getExternalMetric"]>[0]) {
          return untilCancelled(new Promise<never>(() => {}), req.cancel).catch((err: GovernorError) => {
            ended.push(err.code);
            throw err;
          });
        }
      }
      const {
        server: waiting,
        port,
        opts,
      } = await ownServer(new MetricsApi(new WaitingProvider()), {
        requestDeadlineMs: 1500,
      });
      try {
        const url = `https://127.0.0.1:${port}${E}/namespaces/shop/queue_depth`;
        const t0 = Date.now();
        await httpsGet(url, { ...opts, timeoutMs: 200 }).catch(() => undefined); // the client gives up
        while (ended.length === 0 && Date.now() - t0 < 1200) await new Promise((r) => setTimeout(r, 20));
        expect(ended).to.deep.equal(["GOV_ERR_CLIENT_GONE"]);
        expect(Date.now() - t0, "stopped long before the deadline").to.be.below(1200);

        const timedOut = await httpsGet(url, opts);
        expect(timedOut.status).to.equal(504);
        expect(timedOut.json.reason).to.equal("Timeout");
        expect(timedOut.json.message).to.equal("the request did not complete within 1.5s");
        expect(ended).to.deep.equal(["GOV_ERR_CLIENT_GONE", "GOV_ERR_REQUEST_TIMEOUT"]);
      } finally {
        await waiting.shutdown();
      }
    });

    it("caches decisions, and picks up a new grant once the cache entry expires", async () => {
      const path = `${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`;
      const headers = { "X-Remote-User": "late-grant" };
      expect((await get(path, proxy, { headers })).status).to.equal(403);
      allowed.add("late-grant");
      expect((await get(path, proxy, { headers })).status, "still cached").to.equal(403);
      authzClockMs += 10_001; // the entry's 10 s are over
      expect((await get(path, proxy, { headers })).status).to.equal(200);
      const text = await metrics.registry.metrics();
      expect(text).to.match(/governor_apiserver_auth_cache_total\{cache="authz",result="hit"\} [1-9]/);
    });
  });

  describe("fair dispatch on the request path", () => {
    it("answers a second user's request while a flooding user's wait their turns, and refuses the flood past its queue", async () => {
      const seen = new Map<string, number>();
      // Users named by a header; every request allowed: only dispatch decides who goes first.
      const authenticator = {
        acceptedCAs: () => [clientCA.cert],
        authenticate: (req: IncomingMessage): UserInfo => {
          const name = String(req.headers["x-test-user"]);
          seen.set(name, (seen.get(name) ?? 0) + 1);
          return { name, groups: ["system:authenticated"], extra: {} };
        },
      };
      // Turns run only when the test says: what waits, waits.
      const turns: (() => void)[] = [];
      const {
        server: own,
        port,
        opts,
      } = await ownServer(new MetricsApi(provider), {
        authenticator,
        authorizer: { authorize: () => ({ allowed: true, reason: "" }) },
        fairness: { defer: (fn) => turns.push(fn), maxQueuedPerUser: 10 },
      });
      const agent = new Agent({ keepAlive: true, maxSockets: 32 });
      const url = `https://127.0.0.1:${port}${C}/v1beta2/namespaces/shop/pods/web-1/http_requests`;
      const answered: string[] = [];
      const ask = (user: string) =>
        httpsGet(url, { ...opts, agent, headers: { "x-test-user": user } }).then((r) => {
          answered.push(`${user} ${r.status}`);
          return r;
        });
      try {
        const flood = Array.from({ length: 15 }, () => ask("flood"));
        // Authentication, authorization and dispatch are synchronous here: seen is submitted.
        await eventually(() => expect(seen.get("flood")).to.equal(15));
        const hpa = await ask("hpa");
        expect(hpa.status).to.equal(200);
        // The flood's first request ran at once; its other ten still wait their turns.
        expect(answered.filter((a) => a === "flood 200").length).to.be.at.most(1);
        await eventually(() => {
          for (const turn of turns.splice(0)) turn();
          expect(answered).to.have.length(16);
        });
        await Promise.all(flood);
        expect(answered.filter((a) => a === "flood 200")).to.have.length(11);
        expect(answered.filter((a) => a === "flood 429")).to.have.length(4);
      } finally {
        agent.destroy();
        await own.shutdown();
      }
    });
  });

  describe("operability", () => {
    it("counts requests by kind and code on /metrics", async () => {
      const text = await metrics.registry.metrics();
      expect(text).to.match(/governor_apiserver_requests_total\{kind="custom_selector",code="200"\} [1-9]/);
      expect(text).to.match(/governor_apiserver_requests_total\{kind="external",code="503"\} 1/);
      expect(text).to.contain("governor_apiserver_request_duration_seconds_bucket");
    });

    it("swaps the serving certificate without a restart", async () => {
      const newCA = await createCA("rotated-ca");
      const leaf = await issueCertificate(newCA, {
        commonName: "governor",
        dnsNames: ["governor.governor-system.svc"],
        usage: "server",
      });
      server.setServingCertificate(leaf.cert, leaf.key);
      const res = await httpsGet(`${base}/healthz`, {
        ca: newCA.cert,
        servername: "governor.governor-system.svc",
      });
      expect(res.status).to.equal(200);
      const old = await httpsGet(`${base}/healthz`, {
        ca: servingCA.cert,
        servername: "governor.governor-system.svc",
      }).catch((e: Error) => e);
      expect(old).to.be.instanceOf(Error);
    });
  });
});
