import { expect } from "chai";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import {
  ReplayError,
  type ReplayOptions,
  matrixPoints,
  renderReplay,
  replayTarget,
  withChanges,
} from "./replay.js";
import type { HpaView } from "../autoscaling/decide.js";

const NOW = Date.UTC(2026, 11, 7, 12, 0, 0);

/** A read-only stub apiserver: path → body (404 otherwise); records the paths asked. */
function stub(routes: Record<string, unknown>): { client: KubeClient; asked: string[] } {
  const asked: string[] = [];
  const client = {
    get: async (path: string, params?: Record<string, string>) => {
      asked.push(path);
      const route = routes[path];
      if (typeof route === "function") return (route as (p?: Record<string, string>) => unknown)(params);
      if (path in routes) return route;
      throw new KubeApiError(404, "NotFound", `GET ${path}: 404`, { message: "not found" });
    },
  } as unknown as KubeClient;
  return { client, asked };
}

const hpa: HpaView = {
  spec: {
    minReplicas: 1,
    maxReplicas: 10,
    metrics: [
      {
        type: "External",
        external: { metric: { name: "queue" }, target: { type: "AverageValue", averageValue: "10" } },
      },
    ],
  },
};
const mapping = (source: object) => ({
  metadata: { name: "queue" },
  spec: { metric: "queue", subject: { external: {} }, source },
});
const routes = (source: object) => ({
  "/apis/governor.dev/v1alpha1/namespaces/n/metricmappings": { items: [mapping(source)] },
  "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/w": hpa,
});
const matrix = (series: { metric: Record<string, string>; values: [number, string][] }[]) =>
  JSON.stringify({ status: "success", data: { resultType: "matrix", result: series } });
const HISTORY = "/apis/history.governor.dev/v1alpha1";
/** A `MetricMappingHistory` as Governor answers it. */
const kept = (atMs: number[], sum: number[], count: number[]) => ({
  kind: "MetricMappingHistory",
  apiVersion: "history.governor.dev/v1alpha1",
  capacity: 100,
  points: { atMs, sum, count },
});
const options = {
  target: "hpa/w",
  namespace: "n",
  sinceMs: 60_000,
  stepMs: 15_000,
  set: new Map(),
  namespaceLabel: "namespace",
  nowMs: NOW,
};

describe("governor replay reads the history as Governor would have sampled it", () => {
  it("asks Prometheus one range query per metric, its query bound to the namespace as Governor binds it", async () => {
    const { client } = stub(
      routes({ prometheus: { address: "http://prometheus.monitoring:9090", query: "sum(queue_depth)" } }),
    );
    const asked: string[] = [];
    const points: [number, string][] = [0, 1, 2, 3, 4].map((i) => [(NOW - 60_000 + i * 15_000) / 1000, "45"]);
    const r = await replayTarget(
      client,
      { ...options, prometheusUrl: "http://127.0.0.1:9090" },
      async (url) => {
        asked.push(url);
        return matrix([{ metric: {}, values: points }]);
      },
    );
    const url = new URL(asked[0]!);
    expect(url.pathname).to.equal("/api/v1/query_range");
    expect(url.searchParams.get("query")).to.equal('sum(queue_depth{namespace="n"})');
    expect(url.searchParams.get("step")).to.equal("15s");
    expect(r.steps.map((s) => s.replicas)).to.deep.equal([4, 5, 5, 5, 5]);
    expect(r.svg).to.match(/^<svg /);
  });

  it("asks a long stretch in parts of 10,000 syncs, as Prometheus answers at most 11,000 points a series", async () => {
    const { client } = stub(
      routes({ prometheus: { address: "http://prometheus.monitoring:9090", query: "sum(q)" } }),
    );
    const asked: URL[] = [];
    const r = await replayTarget(
      client,
      { ...options, sinceMs: 25_000 * 15_000, prometheusUrl: "http://127.0.0.1:9090" },
      async (url) => {
        asked.push(new URL(url));
        return matrix([]);
      },
    );
    const seconds = (u: URL, p: string) => Number(u.searchParams.get(p));
    expect(asked).to.have.length(3);
    expect(asked.map((u) => (seconds(u, "end") - seconds(u, "start")) / 15 + 1)).to.deep.equal([
      10_000, 10_000, 5_001,
    ]);
    expect(seconds(asked[1]!, "start") - seconds(asked[0]!, "end")).to.equal(15);
    expect(r.steps).to.have.length(25_001);
  });

  it("reaches a mapping's Prometheus Service through the apiserver's service proxy when no URL is given", async () => {
    const source = { prometheus: { address: "http://prometheus.monitoring.svc:9090", query: "sum(q)" } };
    const proxied = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/api/v1/query_range";
    const { client, asked } = stub({
      ...routes(source),
      [proxied]: { status: "success", data: { resultType: "matrix", result: [] } },
    });
    await replayTarget(client, options);
    expect(asked).to.include(proxied);
  });

  it("says plainly what it cannot replay: a metric Governor does not serve, a source that is not Prometheus, one with credentials", async () => {
    const cases: [object, ReplayOptions["from"], RegExp][] = [
      [
        { static: { value: "1" } },
        "prometheus",
        /nothing to replay: queue: MetricMapping queue does not read Prometheus/,
      ],
      [
        { prometheus: { address: "http://p.m:9090", query: "q", tenant: "t" } },
        "prometheus",
        /sends credentials or a tenant/,
      ],
      [
        { static: { value: "1" } },
        "auto",
        /nothing to replay: queue: Governor keeps no samples of its sources here \(history.governor.dev is not served: start it with --history-points\)/,
      ],
    ];
    for (const [source, from, message] of cases) {
      const { client } = stub(routes(source));
      const err = await replayTarget(client, { ...options, from }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ReplayError);
      expect((err as Error).message).to.match(message);
    }
    const { client } = stub({
      ...routes({ static: { value: "1" } }),
      "/apis/governor.dev/v1alpha1/namespaces/n/metricmappings": { items: [] },
    });
    const err = (await replayTarget(client, options).catch((e: unknown) => e)) as Error;
    expect(err.message).to.match(/no MetricMapping of Governor's in n serves it/);
  });

  it("replays the metrics it can read and names the others (cpu, another adapter's), which the HPA also weighs", async () => {
    const both: HpaView = {
      spec: {
        ...hpa.spec,
        metrics: [
          { type: "Resource", resource: { name: "cpu" } },
          ...(hpa.spec.metrics ?? []),
          {
            type: "External",
            external: { metric: { name: "s0-kafka" }, target: { type: "AverageValue", averageValue: "5" } },
          },
        ],
      },
    };
    const { client } = stub({
      ...routes({ prometheus: { address: "http://p.m:9090", query: "sum(q)" } }),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/w": both,
    });
    const r = await replayTarget(client, { ...options, prometheusUrl: "http://127.0.0.1:9090" }, async () =>
      matrix([{ metric: {}, values: [[(NOW - 60_000) / 1000, "45"]] }]),
    );
    expect(r.metrics.map((m) => m.name)).to.deep.equal(["queue"]);
    expect(r.skipped).to.deep.equal([
      { metric: "cpu", why: "a resource metric, metrics-server's" },
      { metric: "s0-kafka", why: "no MetricMapping of Governor's in n serves it" },
    ]);
    expect(renderReplay(r)).to.contain("the HPA also weighs those");
  });

  it("replays a source Prometheus does not hold from the samples Governor kept, and says since when", async () => {
    const at = [0, 1, 2, 3, 4].map((i) => NOW - 60_000 + i * 15_000 - 3_000);
    const { client, asked } = stub({
      ...routes({ static: { value: "45" } }),
      [`${HISTORY}/namespaces/n/metricmappings/queue`]: kept(at, [45, 45, 45, 45, 45], [1, 1, 1, 1, 1]),
    });
    const r = await replayTarget(client, options);
    expect(asked).to.include(`${HISTORY}/namespaces/n/metricmappings/queue`);
    expect(r.metrics).to.deep.include({
      name: "queue",
      mapping: "queue",
      type: "External",
      target: "10",
      averageValue: true,
      from: "history",
      keptSince: new Date(at[0]!).toISOString(),
    });
    // The first sync has the sample of 3 s before it; all ask for 45 / 10 → 5, from 1 replica 4 (the scale-up limit).
    expect(r.steps.map((x) => x.replicas)).to.deep.equal([4, 5, 5, 5, 5]);
    expect(renderReplay(r)).to.contain(
      `from Governor's samples since ${new Date(at[0]!).toISOString().replace(".000", "")}`,
    );
  });

  it("takes a Pods metric's kept samples as the average over the pods that had one, and leaves out an Object mapping of several objects", async () => {
    const pods: HpaView = {
      spec: {
        minReplicas: 1,
        maxReplicas: 10,
        metrics: [
          {
            type: "Pods",
            pods: { metric: { name: "rps" }, target: { type: "AverageValue", averageValue: "10" } },
          },
          {
            type: "Object",
            object: {
              metric: { name: "lag" },
              describedObject: { apiVersion: "v1", kind: "Service", name: "shop" },
              target: { type: "Value", value: "5" },
            },
          },
        ],
      },
    };
    const at = [NOW - 30_000, NOW - 15_000, NOW];
    const { client } = stub({
      "/apis/governor.dev/v1alpha1/namespaces/n/metricmappings": {
        items: [
          {
            metadata: { name: "rps" },
            spec: { metric: "rps", subject: { resource: "pods" }, source: { static: { value: "1" } } },
          },
          {
            metadata: { name: "lag" },
            spec: { metric: "lag", subject: { resource: "services" }, source: { static: { value: "1" } } },
          },
        ],
      },
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/w": pods,
      // 3 pods with 60 in all: 20 each → 6 replicas; the lag mapping samples two Services.
      [`${HISTORY}/namespaces/n/metricmappings/rps`]: kept(at, [60, 60, 60], [3, 3, 3]),
      [`${HISTORY}/namespaces/n/metricmappings/lag`]: kept(at, [9, 9, 9], [2, 2, 2]),
    });
    const r = await replayTarget(client, { ...options, sinceMs: 30_000 });
    expect(r.steps.map((x) => [x.values[0], x.actual])).to.deep.equal([
      [20, 3],
      [20, 3],
      [20, 3],
    ]);
    expect(r.steps.at(-1)!.replicas).to.equal(6);
    expect(r.skipped).to.deep.equal([
      {
        metric: "lag",
        why: "MetricMapping lag samples 2 objects: Governor keeps their total, not each one's (replay it from Prometheus)",
      },
    ]);
  });

  it("reads a long history of kept samples page by page, as Governor answers it", async () => {
    const at = Array.from({ length: 12 }, (_, i) => NOW - 55_000 + i * 5_000);
    const asked: (Record<string, string> | undefined)[] = [];
    const { client } = stub({
      ...routes({ static: { value: "1" } }),
      // Pages of 5 points; each says where the next starts.
      [`${HISTORY}/namespaces/n/metricmappings/queue`]: (params?: Record<string, string>) => {
        asked.push(params);
        const from = params?.continue === undefined ? 0 : at.indexOf(Number(params.continue));
        const page = at.slice(from, from + 5);
        const answer = kept(
          page,
          page.map((_, i) => from + i),
          page.map(() => 1),
        );
        return from + 5 < at.length ? { ...answer, metadata: { continue: String(at[from + 5]) } } : answer;
      },
    });
    const r = await replayTarget(client, options);
    expect(asked).to.deep.equal([
      // From the value in force at the first sync: the stretch and the 5 minutes a value lasts.
      { sinceSeconds: "360" },
      { continue: String(at[5]) },
      { continue: String(at[10]) },
    ]);
    expect(r.steps.at(-1)!.values).to.deep.equal([11]);
  });

  it("refuses kept samples out of time order or not numbers, rather than replaying them", async () => {
    for (const points of [
      kept([NOW - 1_000, NOW - 2_000], [1, 1], [1, 1]),
      kept([NOW - 1_000], ["1"] as unknown as number[], [1]),
      kept([NOW - 1_000], [1], [1, 1]),
    ]) {
      const { client } = stub({
        ...routes({ static: { value: "1" } }),
        [`${HISTORY}/namespaces/n/metricmappings/queue`]: points,
      });
      const err = await replayTarget(client, options).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(ReplayError);
      expect((err as Error).message).to.contain("in a form replay does not read");
    }
  });

  it("--from history reads even a prometheus source's kept samples", async () => {
    const { client } = stub({
      ...routes({ prometheus: { address: "http://p.m:9090", query: "sum(q)" } }),
      [`${HISTORY}/namespaces/n/metricmappings/queue`]: kept([NOW - 1_000], [30], [1]),
    });
    const r = await replayTarget(client, { ...options, from: "history" }, () => {
      throw new Error("Prometheus must not be asked");
    });
    expect(r.metrics[0]!.from).to.equal("history");
    expect(r.steps.at(-1)!.values).to.deep.equal([30]);
  });

  it("--set changes a target, the bounds, the tolerance and the windows, and refuses what the HPA does not have", () => {
    const changed = withChanges(
      hpa,
      new Map([
        ["queue", "20"],
        ["maxReplicas", "4"],
        ["tolerance", "0.05"],
        ["scaleDown.stabilizationWindowSeconds", "60"],
      ]),
    );
    expect(changed.spec.metrics?.[0]?.external?.target.averageValue).to.equal("20");
    expect(changed.spec.maxReplicas).to.equal(4);
    expect(changed.spec.behavior?.scaleDown).to.deep.equal({
      tolerance: "0.05",
      stabilizationWindowSeconds: 60,
    });
    expect(hpa.spec.metrics?.[0]?.external?.target.averageValue, "the HPA read stays as it was").to.equal(
      "10",
    );
    expect(() => withChanges(hpa, new Map([["rps", "5"]]))).to.throw(/not a metric of this HPA/);
    expect(() => withChanges(hpa, new Map([["scaleUp.stabilizationWindowSeconds", "7200"]]))).to.throw(
      /0 to 3600/,
    );
  });

  it("sums an External metric's series, averages a Pods metric's and counts them, takes an Object's own series", () => {
    const two = [
      {
        metric: { pod: "a" },
        values: [
          [1, "10"],
          [2, "30"],
        ] as [number, string][],
      },
      { metric: { pod: "b" }, values: [[1, "20"]] as [number, string][] },
    ];
    expect(matrixPoints(matrix(two), "External", undefined, undefined).values).to.deep.equal([
      { atMs: 1000, value: 30 },
      { atMs: 2000, value: 30 },
    ]);
    const pods = matrixPoints(matrix(two), "Pods", "pod", undefined);
    expect(pods.values[0]).to.deep.equal({ atMs: 1000, value: 15 });
    expect(pods.count.map((c) => c.value)).to.deep.equal([2, 1]);
    expect(matrixPoints(matrix(two), "Object", "pod", "b").values).to.deep.equal([{ atMs: 1000, value: 20 }]);
    expect(() =>
      matrixPoints('{"status":"error","error":"bad query"}', "External", undefined, undefined),
    ).to.throw(/Prometheus: bad query/);
  });
});
