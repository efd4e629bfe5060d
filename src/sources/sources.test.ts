import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import type { Counter, Registry } from "prom-client";
import { requestCounterApp } from "../../tools/demo/fake-app.js";
import { SOURCE_CREDENTIAL_LABEL } from "../api/common.js";
import { buildCRD } from "../../hack/crd.js";
import { FORBIDDEN_SOURCE_HEADERS } from "./http.js";
import { MetricMappingKind, MetricMappingSpec, buildSource } from "./registry.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { destinationPolicy } from "./destination-policy.js";
import { MAX_RANGE_POINTS, MAX_SERIES, pickNumber, toRangePoints, toSampleValue } from "./answers.js";
import { HttpSource } from "./http.js";
import { PrometheusSource, PrometheusSpec, renderQuery } from "./prometheus.js";
import { type QueryScope, QueryScopeError } from "./promql-scope.js";
import { ScrapeSource, counterRate } from "./scrape.js";
import { KubeSecretReader, type SecretReader } from "./secrets.js";
import { SourceConfigError } from "./source.js";
import { StaticSource } from "./static.js";

function serve(
  handler: (
    url: URL,
    headers: Record<string, string | string[] | undefined>,
  ) => { status?: number; body: string },
  host = "127.0.0.1",
) {
  return new Promise<{ server: Server; base: string; port: number }>((resolve) => {
    const server = createServer((req, res) => {
      const r = handler(new URL(req.url ?? "/", "http://x"), req.headers);
      res.writeHead(r.status ?? 200, { "content-type": "application/json" }).end(r.body);
    });
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, base: `http://${host}:${port}`, port });
    });
  });
}
const signal = () => AbortSignal.timeout(5000);
/** These tests' sources listen on loopback, which the default policy refuses. */
const loopback = destinationPolicy({ allow: ["127.0.0.0/8"] });
const secrets: SecretReader = {
  read: async (_ns, name, keys): Promise<Record<string, string>> => {
    const data: Record<string, string> =
      name === "prom-token"
        ? { token: "s3cret\n" }
        : name === "prom-basic"
          ? { username: "gov", password: "pw" }
          : { "X-Api-Key": "k" };
    return Object.fromEntries(keys.map((k) => [k, data[k]!]));
  },
};

describe("sources", () => {
  describe("static", () => {
    it("serves its quantity as a number", async () => {
      expect(await new StaticSource({ value: "1500m" }).sample()).to.deep.equal({
        kind: "scalar",
        value: 1.5,
      });
    });
  });

  describe("prometheus", () => {
    it("binds the namespace and an escaped alternation of object names into the query", () => {
      expect(
        renderQuery('sum by (pod) (rate(x{namespace="{{namespace}}",pod=~"{{names}}"}[1m]))', {
          namespace: "shop",
          names: ["web-1", "a.b"],
        }),
      ).to.equal('sum by (pod) (rate(x{namespace="shop",pod=~"web-1|a\\\\.b"}[1m]))');
      expect(renderQuery('x{pod=~"{{names}}"}', { namespace: "n" })).to.equal('x{pod=~".+"}');
    });

    it("refuses an answer with more series than a mapping may describe, before keeping any", () => {
      const series = (n: number) => ({
        status: "success" as const,
        data: {
          resultType: "vector" as const,
          result: Array.from({ length: n }, (_, i) => ({ metric: { pod: `p${i}` }, value: [0, "1"] })),
        },
      });
      expect(() => toSampleValue(series(MAX_SERIES + 1), "pod")).to.throw(
        `the query returned ${MAX_SERIES + 1} series; a mapping uses at most ${MAX_SERIES}`,
      );
      const ok = toSampleValue(series(MAX_SERIES), "pod");
      expect(ok.kind === "objects" && ok.values.size).to.equal(MAX_SERIES);
    });

    it("reads a query's history as one range query bound to the namespace, with the mapping's credentials", async () => {
      let asked: URL | undefined;
      let auth: string | undefined;
      const { server, base } = await serve((url, headers) => {
        asked = url;
        auth = headers.authorization as string;
        return {
          body: JSON.stringify({
            status: "success",
            data: {
              resultType: "matrix",
              result: [
                {
                  metric: {},
                  values: [
                    [1800, "3"],
                    [2100, "NaN"],
                    [2400, "5.5"],
                  ],
                },
              ],
            },
          }),
        };
      });
      try {
        const src = (nameLabel?: string) =>
          new PrometheusSource(
            {
              address: base,
              query: "sum(x)",
              nameLabel,
              timeout: "2s",
              bearerTokenSecret: { name: "prom-token", key: "token" },
            },
            { namespace: "shop", secrets, policy: loopback },
          );
        const h = await src().history(1_800_000, 2_400_000, 300_000, signal());
        expect(h, "the NaN point left out").to.deep.equal({ atMs: [1_800_000, 2_400_000], values: [3, 5.5] });
        expect(asked?.pathname).to.equal("/api/v1/query_range");
        expect(Object.fromEntries(asked!.searchParams)).to.deep.include({
          query: 'sum(x{namespace="shop"})',
          start: "1800",
          end: "2400",
          step: "300s",
        });
        expect(auth).to.equal("Bearer s3cret");
        await src("pod")
          .history(0, 600_000, 300_000, signal())
          .then(
            () => expect.fail("a history per object"),
            (err: Error) => expect(err.message).to.match(/one value per object/),
          );
        await src()
          .history(0, 300_000 * MAX_RANGE_POINTS, 300_000, signal())
          .then(
            () => expect.fail("too many points"),
            (err: Error) => expect(err.message).to.match(/is not one Prometheus answers/),
          );
      } finally {
        server.close();
      }
    });

    it("reads a range answer's one series, refusing none, several or too many points", () => {
      const matrix = (result: unknown[]) => ({
        status: "success" as const,
        data: { resultType: "matrix" as const, result },
      });
      expect(() => toRangePoints(matrix([]))).to.throw("the query returned no data over the range");
      expect(() => toRangePoints(matrix([{ values: [] }, { values: [] }]))).to.throw(
        /2 series over the range; aggregate/,
      );
      const many = Array.from({ length: MAX_RANGE_POINTS + 1 }, (_, i) => [i, "1"]);
      expect(() => toRangePoints(matrix([{ values: many }]))).to.throw(/at most 11000/);
      expect(() => toRangePoints({ status: "success", data: { resultType: "vector", result: [] } })).to.throw(
        /a range query gives a matrix/,
      );
    });

    it("maps a vector to objects by nameLabel, sends the bearer token, and reports Prometheus' own errors", async () => {
      let auth: string | undefined;
      let sent = "";
      const { server, base } = await serve((url, headers) => {
        auth = headers.authorization as string;
        const q = url.searchParams.get("query") ?? "";
        sent = q;
        if (q.includes("bad("))
          return {
            status: 400,
            body: JSON.stringify({ status: "error", errorType: "bad_data", error: "parse error at char 4" }),
          };
        if (q.includes("empty"))
          return { body: JSON.stringify({ status: "success", data: { resultType: "vector", result: [] } }) };
        return {
          body: JSON.stringify({
            status: "success",
            data: {
              resultType: "vector",
              result: [
                { metric: { pod: "web-1" }, value: [1, "2.5"] },
                { metric: { pod: "web-2" }, value: [1, "4"] },
              ],
            },
          }),
        };
      });
      try {
        const src = (query: string, nameLabel?: string, scope?: QueryScope) =>
          new PrometheusSource(
            {
              address: base,
              query,
              nameLabel,
              timeout: "2s",
              bearerTokenSecret: { name: "prom-token", key: "token" },
            },
            { namespace: "shop", secrets, policy: loopback, scope },
          );
        const v = await src("sum by (pod) (x)", "pod").sample({ namespace: "shop", signal: signal() });
        expect(v.kind).to.equal("objects");
        expect(v.kind === "objects" && Object.fromEntries(v.values)).to.deep.equal({
          "web-1": 2.5,
          "web-2": 4,
        });
        expect(auth).to.equal("Bearer s3cret");
        expect(sent).to.equal('sum by (pod) (x{namespace="shop"})');
        // A query that is not PromQL is refused before it is sent; sent as written (an
        // admin's opt-out), Prometheus' own explanation is the error.
        expect(() => src("bad(")).to.throw(QueryScopeError, /not valid PromQL/);
        const err = await src("bad(", undefined, { namespaceLabel: null })
          .sample({ namespace: "shop", signal: signal() })
          .catch((e: Error) => e.message);
        expect(err).to.equal("Prometheus: bad_data: parse error at char 4");
        const basic = new PrometheusSource(
          {
            address: base,
            query: "sum by (pod) (x)",
            nameLabel: "pod",
            timeout: "2s",
            basicAuthSecret: { name: "prom-basic" },
          },
          { namespace: "shop", secrets, policy: loopback },
        );
        await basic.sample({ namespace: "shop", signal: signal() });
        expect(auth).to.equal(`Basic ${Buffer.from("gov:pw").toString("base64")}`);
        const empty = await src("empty")
          .sample({ namespace: "shop", signal: signal() })
          .catch((e: Error) => e.message);
        expect(empty).to.equal("the query returned no data");
      } finally {
        server.close();
      }
    });

    it("sends a multi-tenant server its tenant and extra parameters; the admin can make the tenant the namespace", async () => {
      const seen: { tenant?: string; thanos?: string; params: Record<string, string> }[] = [];
      const { server, base } = await serve((url, headers) => {
        seen.push({
          tenant: headers["x-scope-orgid"] as string | undefined,
          thanos: headers["thanos-tenant"] as string | undefined,
          params: Object.fromEntries(url.searchParams),
        });
        return {
          body: JSON.stringify({ status: "success", data: { resultType: "scalar", result: [1, "2"] } }),
        };
      });
      try {
        const spec = (extra: object) => PrometheusSpec.parse({ address: base, query: "sum(up)", ...extra });
        const sample = (s: object, scope?: QueryScope) =>
          new PrometheusSource(spec(s), { namespace: "shop", secrets, policy: loopback, scope }).sample({
            namespace: "shop",
            signal: signal(),
          });
        await sample({ tenant: "team-a", queryParameters: { dedup: "true", partial_response: "false" } });
        expect(seen.at(-1)).to.deep.include({ tenant: "team-a" });
        expect(seen.at(-1)!.params).to.include({ dedup: "true", partial_response: "false" });
        expect(seen.at(-1)!.params.query).to.equal('sum(up{namespace="shop"})');
        await sample({});
        expect(seen.at(-1)!.tenant, "no tenant unless asked").to.equal(undefined);
        // The admin binds tenants to namespaces: always sent, never another one.
        const bound = { namespaceLabel: "namespace", tenantFromNamespace: true };
        await sample({}, bound);
        expect(seen.at(-1)!.tenant).to.equal("shop");
        await sample({ tenant: "shop" }, { ...bound, tenantHeader: "THANOS-TENANT" });
        expect(seen.at(-1)).to.deep.include({ thanos: "shop", tenant: undefined });
        expect(() => sample({ tenant: "team-b" }, bound)).to.throw(
          SourceConfigError,
          "the tenant of this mapping's queries is its namespace, shop (Governor runs with --prometheus-tenant-from-namespace): remove tenant",
        );
        // What a spec may not say.
        const problems = (extra: object) =>
          PrometheusSpec.safeParse({ address: base, query: "x", ...extra }).error?.issues.map(
            (i) => i.message,
          );
        expect(problems({ queryParameters: { time: "0" } })).to.deep.equal([
          "must not set query, time, timeout: Governor sends them",
        ]);
        expect(problems({ tenant: "a\r\nX-Evil: 1" })?.[0]).to.match(/must be a tenant ID/);
        expect(problems({ tenant: ".." })).to.deep.equal(["must not be . or .."]);
        expect(
          problems({
            queryParameters: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`p${i}`, "1"])),
          }),
        ).to.deep.equal(["at most 16 parameters"]);
      } finally {
        server.close();
      }
    });

    it("fails with the address when Prometheus is down", async () => {
      const src = new PrometheusSource(
        { address: "http://127.0.0.1:9", query: "up", timeout: "1s" },
        { namespace: "n", secrets, policy: loopback },
      );
      const err = await src.sample({ namespace: "n", signal: signal() }).catch((e: Error) => e.message);
      expect(err).to.equal(
        "GET http://127.0.0.1:9/api/v1/query: connection refused by 127.0.0.1:9 (ECONNREFUSED)",
      );
    });

    it("says a host name that does not resolve once, in words", async () => {
      const src = new PrometheusSource(
        { address: "http://prometheus.governor-test.invalid:9090", query: "up", timeout: "1s" },
        { namespace: "n", secrets, policy: loopback },
      );
      const err = await src.sample({ namespace: "n", signal: signal() }).catch((e: Error) => e.message);
      expect(err).to.match(
        /^GET http:\/\/prometheus\.governor-test\.invalid:9090\/api\/v1\/query: cannot resolve prometheus\.governor-test\.invalid \((ENOTFOUND|EAI_AGAIN)\)$/,
      );
    });
    it("quotes at most 200 characters of a 2xx answer's error, never the rest of it", async () => {
      const secretTail = "internal-admin-token=s3cret";
      const { server, base } = await serve(() => ({
        body: JSON.stringify({
          status: "error",
          errorType: "x".repeat(1000),
          error: `${"e".repeat(5 * 1024 * 1024)}${secretTail}`,
        }),
      }));
      try {
        const err = await new PrometheusSource(
          { address: base, query: "x", timeout: "5s" },
          { namespace: "shop", secrets, policy: loopback },
        )
          .sample({ namespace: "shop", signal: signal() })
          .catch((e: Error) => e.message);
        expect(err).to.be.a("string").with.length.below(300);
        expect(err).to.match(/^Prometheus: x+… \(\d+ more characters\): e+… \(\d+ more characters\)$/);
        expect(err).not.to.include(secretTail);
      } finally {
        server.close();
      }
    });
  });

  describe("http", () => {
    it("refuses a URL of a Prometheus-compatible query API, however its path is written, unless queries may be unscoped", () => {
      const http = (url: string, scope?: QueryScope) => () =>
        new HttpSource(
          { url, jsonPath: "$.data.result[0].value[1]", timeout: "2s" },
          { namespace: "team-a", secrets, scope },
        );
      for (const path of [
        "/api/v1/query?query=sum(x{namespace=%22team-b%22})",
        "/prometheus/api/v1/query_range",
        "/api/v1/%71uery",
        "/api/v1/%2571uery",
        "//api//v1/query",
        "/API/V1/QUERY",
        "/loki/api/v1/query",
        "/federate",
        "/api/v1/series",
        "/api/v1/label/namespace/values",
      ])
        expect(http(`http://prometheus.monitoring:9090${path}`), path).to.throw(
          SourceConfigError,
          /Prometheus query API/,
        );
      for (const path of ["/stats", "/api/v1/queue-depth", "/api/v1/querystats", "/v1/query"])
        expect(http(`http://queue.shop:8080${path}`), path).not.to.throw();
      expect(http("http://prometheus.monitoring:9090/api/v1/query", { namespaceLabel: null })).not.to.throw();
      // Tenants bound to namespaces: no query API through http, unscoped or not.
      expect(
        http("http://mimir.monitoring:8080/prometheus/api/v1/query", {
          namespaceLabel: null,
          tenantFromNamespace: true,
        }),
      ).to.throw(SourceConfigError, /Prometheus query API/);
    });

    it("never sends the tenant header from a Secret where each namespace is its own tenant", () => {
      const http = (keys: string[], scope: QueryScope) => () =>
        new HttpSource(
          {
            url: "http://mimir.monitoring:8080/api/v1/user_stats",
            jsonPath: "$.x",
            timeout: "2s",
            headersSecret: { name: "h", keys },
          },
          { namespace: "team-a", secrets, scope },
        );
      const bound = { namespaceLabel: "namespace", tenantFromNamespace: true };
      expect(http(["x-scope-orgid"], bound)).to.throw(
        SourceConfigError,
        /X-Scope-OrgID is the tenant header/,
      );
      expect(http(["Thanos-Tenant"], { ...bound, tenantHeader: "THANOS-TENANT" })).to.throw(
        SourceConfigError,
        /THANOS-TENANT is the tenant header/,
      );
      expect(http(["X-Scope-OrgID"], { namespaceLabel: "namespace" })).not.to.throw();
      expect(http(["X-Api-Key"], bound)).not.to.throw();
    });

    it("picks one number by JSONPath and sends headers from the Secret", async () => {
      let key: unknown;
      const { server, base } = await serve((_u, h) => {
        key = h["x-api-key"];
        return { body: JSON.stringify({ queue: { depth: 17, name: "orders" }, items: [1, 2] }) };
      });
      try {
        const src = new HttpSource(
          {
            url: `${base}/stats`,
            jsonPath: "$.queue.depth",
            timeout: "2s",
            headersSecret: { name: "hdrs", keys: ["X-Api-Key"] },
          },
          { namespace: "n", secrets, policy: loopback },
        );
        expect(await src.sample({ namespace: "n", signal: signal() })).to.deep.equal({
          kind: "scalar",
          value: 17,
        });
        expect(key).to.equal("k");
      } finally {
        server.close();
      }
    });

    it("refuses paths that match nothing, several values, or no number", () => {
      const doc = { a: { b: "12" }, list: [1, 2], s: "x" };
      expect(pickNumber(doc, "$.a.b")).to.equal(12);
      expect(() => pickNumber(doc, "$.missing")).to.throw(/matched nothing/);
      expect(() => pickNumber(doc, "$.list[*]")).to.throw(/matched 2 values/);
      expect(() => pickNumber(doc, "$.s")).to.throw(/not a number/);
    });
  });

  describe("scrape", () => {
    it("computes a reset-aware per-second rate", () => {
      expect(counterRate({ value: 10, at: 0 }, { value: 30, at: 2000 })).to.equal(10);
      expect(counterRate({ value: 100, at: 0 }, { value: 6, at: 2000 })).to.equal(3);
      expect(counterRate({ value: 1, at: 5 }, { value: 2, at: 5 })).to.equal(undefined);
    });

    it("reads each pod's prom-client endpoint and turns its counter into a rate", async () => {
      const pods: { registry: Registry; counter: Counter; server: Server; ip: string; port: number }[] = [];
      for (const ip of ["127.0.0.21", "127.0.0.22"]) {
        const { registry, counter, server } = requestCounterApp();
        await new Promise<void>((r) => server.listen(0, ip, () => r()));
        pods.push({ registry, counter, server, ip, port: (server.address() as AddressInfo).port });
      }
      try {
        // Both pods listen on their own port here; a real pod set shares one port. Scrape one at a time.
        const sample = async (i: number, src: ScrapeSource) =>
          src.sample({ namespace: "n", objects: [{ name: `pod-${i}`, ip: pods[i]!.ip }], signal: signal() });
        let readingAt = 1_000_000;
        const src0 = new ScrapeSource(
          {
            port: pods[0]!.port,
            path: "/metrics",
            scheme: "http",
            series: "http_requests_total",
            matchLabels: { code: "200" },
            aggregate: "sum",
            rate: true,
            timeout: "2s",
          },
          // Readings taken at the time the test says: the rate is exact, whatever the machine's pace.
          { policy: loopback, now: () => readingAt },
        );
        pods[0]!.counter.inc({ code: "200" }, 100);
        pods[0]!.counter.inc({ code: "500" }, 1000);
        const first = await sample(0, src0);
        expect(first.kind === "objects" && first.values.size).to.equal(0); // one reading is no rate yet
        readingAt += 500;
        pods[0]!.counter.inc({ code: "200" }, 50);
        const second = await sample(0, src0);
        const rate = second.kind === "objects" ? second.values.get("pod-0")! : NaN;
        expect(rate).to.equal(100); // 50 of code 200 in 0.5 s; code 500's 1000 not counted

        const gauge = new ScrapeSource(
          {
            port: pods[1]!.port,
            path: "/metrics",
            scheme: "http",
            series: "http_requests_total",
            aggregate: "sum",
            rate: false,
            timeout: "2s",
          },
          { policy: loopback },
        );
        pods[1]!.counter.inc({ code: "200" }, 7);
        pods[1]!.counter.inc({ code: "404" }, 3);
        const raw = await sample(1, gauge);
        expect(raw.kind === "objects" && raw.values.get("pod-1")).to.equal(10);
      } finally {
        for (const p of pods) p.server.close();
      }
    });

    it("fails with the first error when no pod can be scraped", async () => {
      const src = new ScrapeSource(
        {
          port: 9,
          path: "/metrics",
          scheme: "http",
          series: "x",
          aggregate: "sum",
          rate: false,
          timeout: "1s",
        },
        { policy: loopback },
      );
      const err = await src
        .sample({ namespace: "n", objects: [{ name: "p", ip: "127.0.0.1" }], signal: signal() })
        .catch((e: Error) => e.message);
      expect(err).to.match(
        /^no pod could be scraped: GET http:\/\/127\.0\.0\.1:9\/metrics: connection refused by 127\.0\.0\.1:9 \(ECONNREFUSED\)/,
      );
    });

    it("never reads a pod on its node's network unless the admin allows it", async () => {
      let reads = 0;
      const { server, port } = await serve(() => {
        reads++;
        return { body: "x 3\n" };
      });
      const spec = {
        port,
        path: "/metrics",
        scheme: "http" as const,
        series: "x",
        aggregate: "sum" as const,
        rate: false,
        timeout: "2s",
      };
      const objects = [{ name: "node-exporter", ip: "127.0.0.1", hostNetwork: true }];
      try {
        const err = await new ScrapeSource(spec, { policy: loopback })
          .sample({ namespace: "n", objects, signal: signal() })
          .catch((e: Error) => e.message);
        expect(err).to.match(/uses the node's network.*--allow-host-network-scrape/);
        expect(reads, "requests that reached the node's port").to.equal(0);
        const allowed = await new ScrapeSource(spec, { policy: loopback, allowHostNetwork: true }).sample({
          namespace: "n",
          objects,
          signal: signal(),
        });
        expect(allowed.kind === "objects" && allowed.values.get("node-exporter")).to.equal(3);
      } finally {
        server.close();
      }
    });
  });

  it("reads no more than the admin's --source-max-response-bytes from any HTTP source", async () => {
    const big = "x".repeat(4096);
    const { server, base, port } = await serve((u) =>
      u.pathname === "/api/v1/query"
        ? { body: JSON.stringify({ status: "success", data: { resultType: "vector", result: [] }, big }) }
        : u.pathname === "/metrics"
          ? { body: `# ${big}\nx 1\n` }
          : { body: JSON.stringify({ v: 1, big }) },
    );
    try {
      const ctx = { namespace: "n", secrets, policy: loopback, maxResponseBytes: 1024 };
      const specs = [
        { metric: "m", subject: { external: {} }, source: { prometheus: { address: base, query: "up" } } },
        { metric: "m", subject: { external: {} }, source: { http: { url: `${base}/v`, jsonPath: "$.v" } } },
        { metric: "m", subject: { resource: "pods" }, source: { scrape: { port, series: "x" } } },
      ];
      for (const spec of specs) {
        const src = buildSource(MetricMappingSpec.parse(spec), ctx);
        const err = await src
          .sample({ namespace: "n", objects: [{ name: "p", ip: "127.0.0.1" }], signal: signal() })
          .then(
            () => "no error",
            (e: Error) => e.message,
          );
        expect(err, Object.keys(spec.source)[0]).to.match(/larger than 1 KiB, the limit for a source/);
      }
    } finally {
      server.close();
    }
  });
});

describe("prometheus {{selector}}", () => {
  it("turns the HPA's label selector into PromQL matchers, with Kubernetes-style label names", async () => {
    const { LabelSelector } = await import("../selectors/label-selector.js");
    const { selectorMatchers } = await import("./prometheus.js");
    expect(
      selectorMatchers(
        LabelSelector.parse("app.kubernetes.io/name=web,tier in (a,b.c),env!=prod,!canary,track"),
      ),
    ).to.equal(String.raw`app_kubernetes_io_name="web",canary="",env!="prod",tier=~"a|b\\.c",track!=""`);
  });
});

describe("Secrets sent to sources", () => {
  const CREDENTIAL = { [SOURCE_CREDENTIAL_LABEL]: "true" };
  const secretPath = (name: string) => `/api/v1/namespaces/shop/secrets/${name}`;
  const secret = (data: Record<string, string>, labels?: Record<string, string>) => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: labels ? { labels } : {},
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  });
  /** A server answering both Prometheus and JSON, recording each request's headers. */
  const recording = async () => {
    const requests: Record<string, string | string[] | undefined>[] = [];
    const served = await serve((u, headers) => {
      requests.push(headers);
      return u.pathname === "/api/v1/query"
        ? { body: JSON.stringify({ status: "success", data: { resultType: "scalar", result: [0, "1"] } }) }
        : { body: JSON.stringify({ v: 1 }) };
    });
    return { ...served, requests };
  };
  const httpSpec = (base: string, keys: string[], name = "api-creds") => ({
    url: `${base}/v`,
    jsonPath: "$.v",
    timeout: "2s",
    headersSecret: { name, keys },
  });
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e as Error,
    );

  it("refuses a Secret not labelled as a source credential, for each of the four references, before any request", async () => {
    const { server, base, requests } = await recording();
    try {
      const kube = new FakeKube();
      const data = {
        "X-Api-Key": "k",
        token: "t",
        username: "u",
        password: "p",
        "ca.crt": "not used on http",
      };
      kube.seed(secretPath("db-password"), secret(data));
      const ctx = { namespace: "shop", secrets: new KubeSecretReader(kube), policy: loopback };
      const prometheus = (refs: object) =>
        new PrometheusSource({ address: base, query: "up", timeout: "2s", ...refs }, ctx);
      const sources = {
        headersSecret: new HttpSource(httpSpec(base, ["X-Api-Key"], "db-password"), ctx),
        bearerTokenSecret: prometheus({ bearerTokenSecret: { name: "db-password", key: "token" } }),
        basicAuthSecret: prometheus({ basicAuthSecret: { name: "db-password" } }),
        caSecret: prometheus({ caSecret: { name: "db-password", key: "ca.crt" } }),
      };
      for (const [ref, src] of Object.entries(sources)) {
        const err = await failure(src.sample({ namespace: "shop", signal: signal() }));
        expect(err, ref).to.be.instanceOf(SourceConfigError);
        expect(err?.message, ref).to.equal(
          "Secret shop/db-password is not marked as a source credential: label it governor.dev/source-credential=true to let MetricMappings send it",
        );
      }
      expect(requests, "requests made").to.have.length(0);

      // Labelled by its owner, the same Secret is used by each of them (a refusal is not cached).
      kube.seed(secretPath("db-password"), secret(data, CREDENTIAL));
      for (const [ref, src] of Object.entries(sources))
        expect(await failure(src.sample({ namespace: "shop", signal: signal() })), ref).to.equal(undefined);
      expect(requests.map((h) => h.authorization)).to.deep.equal([
        undefined,
        "Bearer t",
        `Basic ${Buffer.from("u:p").toString("base64")}`,
        undefined,
      ]);
      expect(requests[0]!["x-api-key"]).to.equal("k");
    } finally {
      server.close();
    }
  });

  it("sends only the keys the mapping lists, never the Secret's others", async () => {
    const { server, base, port, requests } = await recording();
    try {
      const kube = new FakeKube();
      kube.seed(
        secretPath("api-creds"),
        secret(
          { "X-Api-Key": "k", "X-Admin-Token": "admin", host: "evil.example", Accept: "text/html" },
          CREDENTIAL,
        ),
      );
      const ctx = { namespace: "shop", secrets: new KubeSecretReader(kube), policy: loopback };
      await new HttpSource(httpSpec(base, ["X-Api-Key"]), ctx).sample({
        namespace: "shop",
        signal: signal(),
      });
      expect(requests).to.have.length(1);
      const h = requests[0]!;
      expect(h["x-api-key"]).to.equal("k");
      expect(h["x-admin-token"]).to.equal(undefined);
      expect(h.host).to.equal(`127.0.0.1:${port}`);
      expect(h.accept).to.equal("application/json");
      const missing = await failure(
        new HttpSource(httpSpec(base, ["X-Api-Key", "X-Tenant"]), ctx).sample({
          namespace: "shop",
          signal: signal(),
        }),
      );
      expect(missing).to.be.instanceOf(SourceConfigError);
      expect(missing?.message).to.equal('Secret shop/api-creds has no key "X-Tenant"');
      expect(requests).to.have.length(1);
    } finally {
      server.close();
    }
  });

  it("never sends a value with a line break or another control character", async () => {
    const { server, base, requests } = await recording();
    try {
      const kube = new FakeKube();
      kube.seed(
        secretPath("api-creds"),
        secret({ "X-Api-Key": "k\r\nHost: evil.example", token: "t\r\nX-Injected: 1\n" }, CREDENTIAL),
      );
      const ctx = { namespace: "shop", secrets: new KubeSecretReader(kube), policy: loopback };
      const sources = [
        new HttpSource(httpSpec(base, ["X-Api-Key"]), ctx),
        new PrometheusSource(
          {
            address: base,
            query: "up",
            timeout: "2s",
            bearerTokenSecret: { name: "api-creds", key: "token" },
          },
          ctx,
        ),
      ];
      for (const src of sources) {
        const err = await failure(src.sample({ namespace: "shop", signal: signal() }));
        expect(err).to.be.instanceOf(SourceConfigError);
        expect(err?.message).to.match(
          /^Secret shop\/api-creds key "(X-Api-Key|token)" cannot be sent as a header/,
        );
        expect(err?.message).not.to.include("evil");
      }
      expect(requests).to.have.length(0);
    } finally {
      server.close();
    }
  });

  describe("header names: refused at admission (the CRD and the operator's schema) and by the source", () => {
    const mapping = (headersSecret: object) => ({
      metric: "m",
      subject: { external: {} },
      source: { http: { url: "http://q.shop/v", jsonPath: "$.v", headersSecret } },
    });
    const ctx = { namespace: "shop", secrets, policy: loopback };
    const problems = (spec: object) => {
      const r = MetricMappingSpec.safeParse(spec);
      return r.success
        ? "accepted"
        : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    };
    const refusedBySource = (headersSecret: { name: string; keys?: string[] }) => {
      try {
        new HttpSource({ url: "http://q.shop/v", jsonPath: "$.v", timeout: "2s", headersSecret }, ctx);
        return "accepted";
      } catch (err) {
        expect(err).to.be.instanceOf(SourceConfigError);
        return (err as Error).message;
      }
    };
    /** The CRD's schema of headersSecret. */
    type Node = { required?: string[]; properties?: Record<string, Node>; items?: Node } & Record<
      string,
      unknown
    >;
    const crdSpec = buildCRD(MetricMappingKind).spec.versions[0]!.schema.openAPIV3Schema.properties
      .spec as Node;
    const headersSecretSchema = crdSpec.properties!.source!.properties!.http!.properties!.headersSecret!;
    const keysSchema = headersSecretSchema.properties!.keys!;
    const rules = (n: Node) =>
      (n["x-kubernetes-validations"] as { rule: string; message: string }[]).map((r) => r.rule);

    for (const name of new Set([
      "Host",
      "Connection",
      "Transfer-Encoding",
      "HOST",
      ...FORBIDDEN_SOURCE_HEADERS,
    ])) {
      it(`refuses keys: [${name}]`, () => {
        const message = "must not be Host or a connection-level header";
        expect(problems(mapping({ name: "api-creds", keys: ["X-Api-Key", name] }))).to.equal(
          `source.http.headersSecret.keys.1: ${message} (${FORBIDDEN_SOURCE_HEADERS.join(", ")})`,
        );
        expect(refusedBySource({ name: "api-creds", keys: [name] })).to.match(
          new RegExp(`^headersSecret.keys.0: ${message}`),
        );
        // The CRD's rule, lower-casing as the check does.
        expect(rules(keysSchema.items!)[0])
          .to.match(/^!\(self\.lowerAscii\(\) in \[/)
          .and.include(`'${name.toLowerCase()}'`);
      });
    }

    it("refuses a headersSecret without keys, saying to list them (a change from sending every key)", () => {
      const message =
        "list the Secret's keys to send as headers, e.g. keys: [X-Api-Key] (only the listed keys are sent)";
      expect(problems(mapping({ name: "api-creds" }))).to.equal(`source.http.headersSecret: ${message}`);
      expect(refusedBySource({ name: "api-creds" })).to.equal(`headersSecret: ${message}`);
      // At admission by a rule, not `required`: a missing required field would stop the
      // apiserver before the rules, and say only "Required value".
      expect(headersSecretSchema.required ?? []).not.to.include("keys");
      expect(rules(headersSecretSchema)).to.deep.equal(["has(self.keys)"]);
    });

    it("refuses names that are not header tokens and Secret keys, more than 16, or one twice", () => {
      for (const keys of [
        [],
        ["X Api"],
        ["X-Api:"],
        ["x".repeat(65)],
        Array.from({ length: 17 }, (_, i) => `K${i}`),
      ])
        expect(problems(mapping({ name: "api-creds", keys })), JSON.stringify(keys)).to.match(
          /^source\.http\.headersSecret\.keys/,
        );
      expect(problems(mapping({ name: "api-creds", keys: ["X-Api-Key", "x-api-key"] }))).to.equal(
        "source.http.headersSecret.keys: list each header once (header names are case-insensitive)",
      );
      expect(
        problems(mapping({ name: "api-creds", keys: ["X-Api-Key", "Authorization", "x".repeat(64)] })),
      ).to.equal("accepted");
      expect(keysSchema).to.include({ minItems: 1, maxItems: 16 });
      expect(keysSchema.items).to.include({ minLength: 1, maxLength: 64, pattern: "^[-._a-zA-Z0-9]+$" });
    });
  });
});

describe("prometheus query templates against a tenant's pods", () => {
  const template = 'sum by (pod) (rate(http_requests_total{pod=~"{{names}}"}[1m]))';
  it("renders the names of a thousand pods, longer than any query an author writes", () => {
    const names = Array.from({ length: 1000 }, (_, i) => `web-deployment-7d9f8c6b5-${i}`);
    const q = renderQuery(template, { namespace: "shop", names });
    expect(q.length).to.be.above(16 * 1024);
    expect(
      new PrometheusSource(
        { address: "http://p:9090", query: template, timeout: "5s" },
        { namespace: "shop", secrets },
      ),
    ).to.be.ok;
  });
  it("refuses to build a query past 256 KiB, before building it", () => {
    const names = Array.from({ length: 1100 }, (_, i) => `${"x".repeat(240)}-${i}`);
    const t = performance.now();
    expect(() => renderQuery(`${template} + ${template}`, { namespace: "shop", names })).to.throw(
      /would be \d+ bytes long with the names of 1100 objects; at most 262144/,
    );
    expect(performance.now() - t).to.be.below(50);
  });
  it("refuses a template with a placeholder more than four times", () => {
    const many = Array(5).fill('x{pod=~"{{names}}"}').join(" + ");
    expect(
      () =>
        new PrometheusSource(
          { address: "http://p:9090", query: many, timeout: "5s" },
          { namespace: "shop", secrets },
        ),
    ).to.throw(SourceConfigError, /more than 4 times/);
  });
});
