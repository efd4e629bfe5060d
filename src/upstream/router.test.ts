import { expect } from "chai";
import { FakeProvider } from "../../test/support/fake-provider.js";
import { MetricsApi } from "../apiserver/metrics-api.js";
import { JsonText } from "../apiserver/wire.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { UpstreamRouter, type RoutedUpstream } from "./router.js";
import { UpstreamUnavailableError } from "./upstream.js";
import { type Route, choose, globMatch } from "./routes.js";

describe("routes: which upstream answers a metric", () => {
  it("matches metric globs: * any run, ? one character, the whole name", () => {
    for (const [glob, name, want] of [
      ["kafka_*", "kafka_lag", true],
      ["kafka_*", "kafka_", true],
      ["kafka_*", "my_kafka_lag", false],
      ["s*-prometheus", "sqs-prometheus", true],
      ["s*-prometheus", "s-prometheus", true],
      ["s*-prometheus", "sqs-prometheus-x", false],
      ["queue?", "queue1", true],
      ["queue?", "queue", false],
      ["*", "anything", true],
      ["a*b*c", "aXXbYYc", true],
      ["a*b*c", "aXXbYY", false],
      ["exact", "exact", true],
      ["exact", "exactly", false],
    ] as const)
      expect(globMatch(glob, name), `${glob} ~ ${name}`).to.equal(want);
  });

  it("matches a glob built to backtrack against a long name in well under a millisecond per call", () => {
    const glob = `${"*a".repeat(60)}*b`;
    const name = "a".repeat(253);
    const started = performance.now();
    for (let i = 0; i < 100; i++) expect(globMatch(glob, name)).to.equal(false);
    // Quadratic at worst (|glob|·|name| ≈ 31,000 steps), never exponential.
    expect(performance.now() - started).to.be.below(1000);
  });

  const route = (name: string, over: Partial<Route> = {}, lists: string[] = []): Route => ({
    name,
    priority: 0,
    lists: (id) => lists.includes(id),
    ...over,
  });
  const none = () => undefined;

  it("sends a metric to the route whose globs claim it, else to the upstream that lists it", () => {
    const kafka = route("kafka", { metrics: ["kafka_*"] });
    const keda = route("keda", {}, ["queue_messages"]);
    const at = (metric: string) => choose([kafka, keda], { namespace: "shop", metric, id: metric }, none);
    expect(at("kafka_lag")?.route.name).to.equal("kafka");
    expect(at("kafka_lag")?.why).to.equal("metrics: kafka_*");
    expect(at("queue_messages")?.route.name).to.equal("keda");
    expect(at("queue_messages")?.why).to.equal("it lists the metric");
    expect(at("orders")).to.equal(undefined);
  });

  it("takes the highest priority where routes overlap, then one that lists the metric, then the name", () => {
    const target = { namespace: "shop", metric: "kafka_lag", id: "kafka_lag" };
    const a = route("a", { metrics: ["kafka_*"] });
    const b = route("b", { metrics: ["*"] }, ["kafka_lag"]);
    const c = route("c", { metrics: ["kafka_lag"], priority: 10 });
    expect(choose([a, b], target, none)?.route.name).to.equal("b"); // b lists it
    expect(choose([b, a, c], target, none)?.route.name).to.equal("c");
    expect(choose([b, a, c], target, none)?.why).to.equal("metrics: kafka_lag; priority 10");
    const z = route("z", { metrics: ["kafka_*"] });
    expect(choose([z, a], target, none)?.route.name).to.equal("a");
  });

  it("serves only the namespaces a route names or selects, never a cluster-scoped request", () => {
    const named = route("named", { metrics: ["*"], namespaces: { names: new Set(["team-a"]) } });
    const selected = route("selected", {
      metrics: ["*"],
      namespaces: { selector: LabelSelector.fromObject({ matchLabels: { tier: "queue" } }) },
    });
    const labels = (ns: string): Record<string, string> | undefined =>
      ns === "team-b" ? { tier: "queue" } : ns === "team-c" ? {} : undefined;
    const at = (namespace: string | undefined) =>
      choose([named, selected], { namespace, metric: "m", id: "m" }, labels)?.route.name;
    expect(at("team-a")).to.equal("named");
    expect(at("team-b")).to.equal("selected");
    expect(at("team-c")).to.equal(undefined);
    expect(at("team-unknown")).to.equal(undefined);
    expect(at(undefined)).to.equal(undefined);
  });
});

describe("several upstreams behind one metrics API", () => {
  /** An upstream that answers with its own name and lists `metrics`. */
  const fakeUpstream = (name: string, metrics: string[], asked: string[]) => {
    const listed = metrics.map((metric) => ({ metric }));
    return {
      description: `MetricsUpstream ${name} (Service x/${name}:443)`,
      serves: (_api: string, id: string) => metrics.includes(id),
      serve: async () => {
        asked.push(name);
        return { status: 200, body: { answeredBy: name }, kind: "external" as const, forwarded: true };
      },
      listCustomMetrics: () => [],
      listExternalMetrics: () => listed,
    };
  };
  const routed = (u: ReturnType<typeof fakeUpstream>, over: Partial<Route> = {}): RoutedUpstream => ({
    name: u.description.split(" (")[0]!,
    priority: 0,
    lists: (id) => u.serves("external", id),
    upstream: u,
    ...over,
  });
  const E = "/apis/external.metrics.k8s.io/v1beta1";
  const get = async (api: MetricsApi, path: string) => {
    const r = await api.handle(
      "GET",
      { pathname: path, searchParams: new URLSearchParams() },
      "application/json",
    );
    const body = r.body instanceof JsonText ? JSON.parse(r.body.bytes.toString()) : r.body;
    return { status: r.status, body };
  };

  function setUp(catchAll = false) {
    const asked: string[] = [];
    const kafka = fakeUpstream("kafka", ["kafka_lag", "kafka_other"], asked);
    const keda = fakeUpstream("keda", ["queue_messages", "governor_backlog"], asked);
    const rest = fakeUpstream("adapter", ["orders", "queue_messages"], asked);
    const router = new UpstreamRouter("external", catchAll ? { catchAll: rest } : {});
    router.set([routed(kafka, { metrics: ["kafka_lag"] }), routed(keda)]);
    const provider = new FakeProvider();
    provider.external.push({ namespace: "shop", metric: "governor_backlog", value: "40" });
    const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: router } });
    return { api, router, asked };
  }

  it("answers each metric from the upstream whose route claims it, Governor's own first", async () => {
    const { api, asked } = setUp();
    expect((await get(api, `${E}/namespaces/shop/kafka_lag`)).body).to.deep.equal({ answeredBy: "kafka" });
    expect((await get(api, `${E}/namespaces/shop/queue_messages`)).body).to.deep.equal({
      answeredBy: "keda",
    });
    // A mapping serves governor_backlog in shop: Governor answers there, keda everywhere else.
    const own = await get(api, `${E}/namespaces/shop/governor_backlog`);
    expect(own.status).to.equal(200);
    expect(own.body.items[0].value).to.equal("40");
    expect((await get(api, `${E}/namespaces/other/governor_backlog`)).body).to.deep.equal({
      answeredBy: "keda",
    });
    expect(asked).to.deep.equal(["kafka", "keda", "keda"]);
  });

  it("answers a metric no route claims with a 404 naming the upstreams asked, or from the catch-all", async () => {
    const { api } = setUp();
    const r = await get(api, `${E}/namespaces/shop/orders`);
    expect(r.status).to.equal(404);
    expect(r.body.message).to.equal(
      'no MetricMapping in namespace shop serves external metric "orders", and no upstream\'s route claims it (asked: MetricsUpstream kafka, MetricsUpstream keda)',
    );
    // kafka lists kafka_other but its route claims kafka_lag only.
    expect((await get(api, `${E}/namespaces/shop/kafka_other`)).status).to.equal(404);
    const withCatchAll = setUp(true);
    expect((await get(withCatchAll.api, `${E}/namespaces/shop/orders`)).body).to.deep.equal({
      answeredBy: "adapter",
    });
  });

  it("lists every upstream's metrics its route can answer in discovery, each once, Governor's first", async () => {
    const { api } = setUp(true);
    const names = (await get(api, E)).body.resources.map((r: { name: string }) => r.name);
    expect(names).to.deep.equal(["governor_backlog", "kafka_lag", "orders", "queue_messages"]);
  });

  it("keeps the merged list while nothing changed, and makes it anew when routes change", () => {
    const { router } = setUp();
    const own = [{ metric: "governor_backlog" }];
    const first = router.mergeExternal(own);
    expect(router.mergeExternal(own)).to.equal(first);
    router.set([]);
    expect(router.mergeExternal(own)).to.equal(own);
  });

  it("says which upstream answered and why, also when it could not be asked", async () => {
    const { router } = setUp();
    const target = { namespace: "shop", metric: "kafka_lag", id: "kafka_lag" };
    const req = {
      group: "external.metrics.k8s.io",
      version: "v1beta1",
      rest: [],
      query: new URLSearchParams(),
      kind: "external" as const,
      target,
    };
    expect((await router.serve(req))?.routedTo).to.equal("MetricsUpstream kafka (metrics: kafka_lag)");
    const down = new UpstreamRouter("external");
    down.set([
      {
        name: "MetricsUpstream gone",
        priority: 0,
        metrics: ["*"],
        lists: () => false,
        upstream: {
          description: "MetricsUpstream gone (Service x/gone:443)",
          serves: () => false,
          serve: () =>
            Promise.reject(
              new UpstreamUnavailableError("MetricsUpstream gone (Service x/gone:443) is unavailable"),
            ),
          listCustomMetrics: () => [],
          listExternalMetrics: () => [],
        },
      },
    ]);
    const r = await down.serve(req);
    expect(r?.status).to.equal(503);
    expect(r?.routedTo).to.equal("MetricsUpstream gone (metrics: *)");
  });

  it("refuses a metric name longer than a metric name can be before matching any glob", async () => {
    const { api, asked } = setUp(true);
    const r = await get(api, `${E}/namespaces/shop/${"a".repeat(254)}`);
    expect(r.status).to.equal(404);
    expect(r.body.message).to.equal("a metric name is at most 253 characters");
    expect(asked).to.deep.equal([]);
  });

  it("answers as Governor alone when it has no upstream at all", async () => {
    const provider = new FakeProvider();
    const router = new UpstreamRouter("external");
    const api = new MetricsApi(provider, { custom: true, external: true, delegates: { external: router } });
    const r = await get(api, `${E}/namespaces/shop/orders`);
    expect(r.status).to.equal(404);
    expect(r.body.message).to.not.include("upstream");
  });
});
