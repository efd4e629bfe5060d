import { expect } from "chai";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { SdkPusher } from "../../test/support/otlp.js";
import { FakeClock } from "../../test/support/fake-clock.js";
import { Sampler, finiteOnly } from "../metrics/sampler.js";
import { type OtlpBatch, OtlpBatchBuilder, type OtlpPoint, decodeOtlp, pointOf } from "./otlp-decode.js";
import { OtlpStore } from "./otlp-store.js";
import { OtlpSource, OtlpSpec, quantile } from "./otlp.js";
import type { SampleValue } from "./source.js";

const points = (b: OtlpBatch) => b.key.map((_, i) => pointOf(b, i));

const decode = async (pusher: SdkPusher, encoding: "protobuf" | "json", metrics: string[]) =>
  decodeOtlp(
    encoding === "protobuf"
      ? { protobuf: await pusher.body("protobuf") }
      : { json: JSON.parse(new TextDecoder().decode(await pusher.body("json"))) as unknown },
    metrics,
  );

const signal = new AbortController().signal;

/** A batch of one point of `metric` (a gauge unless `extra` says otherwise). */
function batch(
  metric: string,
  attributes: Record<string, string>,
  extra: Partial<OtlpPoint> = {},
): OtlpBatch {
  const point: OtlpPoint = {
    metric,
    type: "gauge",
    cumulative: false,
    monotonic: false,
    attributes,
    startMs: 0,
    atMs: 1000,
    value: 1,
    ...extra,
  };
  return new OtlpBatchBuilder().add(point).finish();
}

describe("otlp: what pods push over OTLP, decoded with the OpenTelemetry schema", () => {
  let pusher: SdkPusher;
  beforeEach(() => {
    pusher = new SdkPusher({ "k8s.pod.name": "web-1", "service.name": "web" });
    pusher.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(42, { queue: "jobs" }));
    const requests = pusher.meter.createCounter("http.server.requests");
    requests.add(5, { route: "/" });
    requests.add(2, { route: "/cart" });
    const latency = pusher.meter.createHistogram("latency", {
      advice: { explicitBucketBoundaries: [0.1, 1, 10] },
    });
    for (const v of [0.05, 0.5, 0.7, 5]) latency.record(v);
  });
  afterEach(() => pusher.shutdown());

  for (const encoding of ["protobuf", "json"] as const)
    it(`reads the JavaScript SDK's ${encoding} export: gauges, sums and histograms with the resource's and the point's attributes`, async () => {
      const b = await decode(pusher, encoding, ["queue.depth", "http.server.requests", "latency"]);
      expect(b.rejected).to.equal(0);
      const byMetric = (m: string) => points(b).filter((p) => p.metric === m);
      const [gauge] = byMetric("queue.depth");
      expect(gauge).to.include({ type: "gauge", value: 42 });
      expect(gauge!.attributes).to.deep.equal({
        "k8s.pod.name": "web-1",
        "service.name": "web",
        queue: "jobs",
      });
      expect(
        byMetric("http.server.requests").map((p) => [p.attributes.route, p.value, p.cumulative, p.monotonic]),
      ).to.deep.equal([
        ["/", 5, true, true],
        ["/cart", 2, true, true],
      ]);
      const [h] = byMetric("latency");
      expect(h!.histogram).to.deep.equal({ count: 4, sum: 6.25, bounds: [0.1, 1, 10], counts: [1, 2, 1, 0] });
      expect(gauge!.atMs).to.be.closeTo(Date.now(), 60_000);
    });

  it("keeps only the metrics some mapping reads and counts the rest as dropped", async () => {
    const b = await decode(pusher, "protobuf", ["queue.depth"]);
    expect(points(b).map((p) => p.metric)).to.deep.equal(["queue.depth"]);
    expect(b.unselected).to.equal(3); // two counter series, one histogram
  });

  it("refuses a body that is not an export with a short message, and a nesting bomb without a crash", () => {
    expect(() => decodeOtlp({ protobuf: new Uint8Array([0xff, 0xff, 0xff]) }, ["x"])).to.throw(
      /not an OTLP ExportMetricsServiceRequest/,
    );
    expect(() => decodeOtlp({ json: { resourceMetrics: "no" } }, ["x"])).to.throw(/not an OTLP/);
    // An attribute whose value is a list holding a list … 2,000 deep, in a resource.
    let value = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .string("leaf")
      .finish(); // AnyValue{string_value}
    for (let i = 0; i < 2000; i++) {
      const array = new BinaryWriter()
        .uint32((1 << 3) | 2)
        .bytes(value)
        .finish(); // ArrayValue{values}
      value = new BinaryWriter()
        .uint32((5 << 3) | 2)
        .bytes(array)
        .finish(); // AnyValue{array_value}
    }
    const kv = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .string("k")
      .uint32((2 << 3) | 2)
      .bytes(value)
      .finish();
    const resource = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .bytes(kv)
      .finish();
    const rm = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .bytes(resource)
      .finish();
    const request = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .bytes(rm)
      .finish();
    const started = performance.now();
    expect(() => decodeOtlp({ protobuf: request }, ["x"])).to.throw(/not an OTLP/);
    expect(performance.now() - started).to.be.below(200);
  });

  it("rejects points past the bounds (long attributes, bad histograms, non-finite values) and says why", () => {
    const json = (metrics: unknown[], resource: unknown[] = []) => ({
      resourceMetrics: [{ resource: { attributes: resource }, scopeMetrics: [{ metrics }] }],
    });
    const gauge = (name: string, point: Record<string, unknown>) => ({
      name,
      gauge: { dataPoints: [{ timeUnixNano: "1", ...point }] },
    });
    const long = decodeOtlp(
      {
        json: json([
          gauge("g", { asDouble: 1, attributes: [{ key: "a", value: { stringValue: "x".repeat(1025) } }] }),
        ]),
      },
      ["g"],
    );
    expect(long).to.include({ rejected: 1 });
    expect(long.rejectedReason).to.match(/longer than 1024 characters/);
    const many = Array.from({ length: 65 }, (_, i) => ({ key: `k${i}`, value: { intValue: "1" } }));
    expect(decodeOtlp({ json: json([gauge("g", { asDouble: 1 })], many) }, ["g"]).rejectedReason).to.match(
      /more than 64 attributes/,
    );
    expect(decodeOtlp({ json: json([gauge("g", { asDouble: "NaN" })]) }, ["g"]).rejectedReason).to.match(
      /finite/,
    );
    const histogram = (counts: string[], bounds: number[]) => ({
      name: "h",
      histogram: {
        aggregationTemporality: 2,
        dataPoints: [{ count: "3", bucketCounts: counts, explicitBounds: bounds }],
      },
    });
    expect(decodeOtlp({ json: json([histogram(["1", "2"], [1, 2])]) }, ["h"]).rejectedReason).to.match(
      /do not match/,
    );
    expect(decodeOtlp({ json: json([histogram(["1", "1", "1"], [2, 1])]) }, ["h"]).rejectedReason).to.match(
      /not increasing/,
    );
    const summary = decodeOtlp({ json: json([{ name: "s", summary: { dataPoints: [{}, {}] } }]) }, ["s"]);
    expect(summary).to.include({ rejected: 2 });
    expect(summary.rejectedReason).to.match(/summary, which Governor does not read/);
    // Bounds without counts are refused past the bucket limit too (they would be kept per series).
    const bounds = Array.from({ length: 600 }, (_, i) => i);
    const boundsOnly = decodeOtlp(
      { json: json([{ name: "h", histogram: { dataPoints: [{ count: "1", explicitBounds: bounds }] } }]) },
      ["h"],
    );
    expect(boundsOnly.rejectedReason).to.match(/more than 512 buckets/);
    const countOnly = decodeOtlp(
      { json: json([{ name: "h", histogram: { dataPoints: [{ count: "1", explicitBounds: [1, 2] }] } }]) },
      ["h"],
    );
    expect(pointOf(countOnly, 0).histogram?.bounds).to.deep.equal([]);
    // Attributes are bounded in characters together, the resource's with the point's.
    const wide = Array.from({ length: 40 }, (_, i) => ({
      key: `key-${i}`,
      value: { stringValue: "v".repeat(100) },
    }));
    expect(decodeOtlp({ json: json([gauge("g", { asDouble: 1 })], wide) }, ["g"]).rejectedReason).to.match(
      /attributes of more than 4096 characters/,
    );
    // A point that says it has no value is neither kept nor rejected.
    expect(decodeOtlp({ json: json([gauge("g", { flags: 1 })]) }, ["g"])).to.deep.include({
      key: [],
      rejected: 0,
    });
  });
});

describe("otlp source: series of the mapping's namespace as a value", () => {
  const spec = (s: Record<string, unknown>) => OtlpSpec.parse({ metric: "m", ...s });
  let now = 100_000;
  const clock = () => now;
  let store: OtlpStore;
  const source = (s: Record<string, unknown> = {}, namespace = "team-a") =>
    new OtlpSource(spec(s), { namespace, store, windowMs: 30_000, now: clock });
  beforeEach(() => {
    now = 100_000;
    store = new OtlpStore({ now: clock });
  });

  it("serves each pod its own series by k8s.pod.name, and one value for an external metric", async () => {
    const perPod = source({ aggregate: "sum" });
    store.ingest("team-a", batch("m", { "k8s.pod.name": "web-1", queue: "a" }, { value: 3 }));
    store.ingest("team-a", batch("m", { "k8s.pod.name": "web-1", queue: "b" }, { value: 4 }));
    store.ingest("team-a", batch("m", { "k8s.pod.name": "web-2" }, { value: 10 }));
    store.ingest("team-a", batch("m", { "k8s.pod.name": "not-mine" }, { value: 99 }));
    store.ingest("team-a", batch("m", { "k8s.pod.uid": "uid-of-web-3" }, { value: 6 }));
    const objects = [{ name: "web-1" }, { name: "web-2" }, { name: "web-3", uid: "uid-of-web-3" }];
    const v = await perPod.sample({ namespace: "team-a", objects, signal });
    expect(v.kind === "objects" && [...v.values]).to.deep.equal([
      ["web-1", 7],
      ["web-2", 10],
      ["web-3", 6],
    ]);
    const external = await source({ attributes: { queue: "b" } }).sample({ namespace: "team-a", signal });
    expect(external).to.deep.include({ kind: "scalar", value: 4 });
    for (const [aggregate, value] of [
      ["avg", 24.4],
      ["max", 99],
      ["min", 3],
      ["last", 6],
    ] as const)
      expect(await source({ aggregate }).sample({ namespace: "team-a", signal })).to.deep.include({ value });
  });

  it("never reads another namespace's series, whatever its attributes say", async () => {
    const mine = source({}, "team-a");
    source({}, "team-b");
    store.ingest(
      "team-b",
      batch("m", { "k8s.namespace.name": "team-a", "k8s.pod.name": "web-1" }, { value: 5 }),
    );
    let error: Error | undefined;
    await mine.sample({ namespace: "team-a", signal }).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/nothing of metric "m" was pushed from this namespace/);
    // A namespace no mapping reads keeps nothing at all.
    expect(store.ingest("team-c", batch("m", {})).accepted).to.equal(0);
  });

  it("leaves out series not pushed within staleAfter less one interval, and dates the value by its oldest point", async () => {
    const s = source();
    store.ingest("team-a", batch("m", { pod: "a" }, { value: 1 }));
    now += 20_000;
    store.ingest("team-a", batch("m", { pod: "b" }, { value: 2 }));
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.equal({
      kind: "scalar",
      value: 3,
      observedAtMs: 100_000,
    });
    now += 15_000; // pod a's point is 35 s old: past the 30 s window
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.equal({
      kind: "scalar",
      value: 2,
      observedAtMs: 120_000,
    });
    now += 20_000;
    let error: Error | undefined;
    await s.sample({ namespace: "team-a", signal }).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/was pushed in the last 30 s/);
  });

  it("makes a sum's per-second rate from two cumulative points, counting a restart from zero", async () => {
    const s = source({ rate: true });
    const point = (value: number, atMs: number, startMs = 1) =>
      batch("m", {}, { type: "sum", cumulative: true, monotonic: true, value, atMs, startMs });
    store.ingest("team-a", point(100, 10_000));
    let error: Error | undefined;
    await s.sample({ namespace: "team-a", signal }).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/waiting for a second point to make a rate/);
    store.ingest("team-a", point(150, 20_000));
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.include({ value: 5 });
    store.ingest("team-a", point(30, 30_000, 25_000)); // restarted at 25 s: 30 since then
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.include({ value: 3 });
    // A late retry of an older point changes nothing.
    store.ingest("team-a", point(10_000, 15_000));
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.include({ value: 3 });
  });

  it("makes a delta sum's rate over its own interval, and refuses a rate of a gauge", async () => {
    const delta = source({ rate: true });
    const gauge = source({ rate: true }, "team-b");
    store.ingest(
      "team-a",
      batch("m", {}, { type: "sum", cumulative: false, value: 50, startMs: 10_000, atMs: 20_000 }),
    );
    expect(await delta.sample({ namespace: "team-a", signal })).to.deep.include({ value: 5 });
    store.ingest("team-b", batch("m", {}));
    let error: Error | undefined;
    await gauge.sample({ namespace: "team-b", signal }).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/rate: true reads sums and histograms; "m" is a gauge/);
  });

  it("estimates a histogram's quantile from the buckets filled since its last point, and rates its count", async () => {
    const point = (counts: number[], atMs: number) =>
      batch(
        "m",
        {},
        {
          type: "histogram",
          cumulative: true,
          startMs: 1,
          atMs,
          value: counts.reduce((a, b) => a + b),
          histogram: { count: counts.reduce((a, b) => a + b), sum: 0, bounds: [1, 2, 4], counts },
        },
      );
    const p90 = source({ histogram: "quantile", quantile: 0.9 });
    const countRate = source({ histogram: "count", rate: true });
    store.ingest("team-a", point([100, 0, 0, 0], 10_000)); // a long quiet past, all below 1
    expect(await p90.sample({ namespace: "team-a", signal })).to.deep.include({ value: 0.9 });
    store.ingest("team-a", point([100, 0, 10, 0], 20_000)); // ten new, all between 2 and 4
    expect(await p90.sample({ namespace: "team-a", signal })).to.deep.include({ value: 3.8 });
    expect(await countRate.sample({ namespace: "team-a", signal })).to.deep.include({ value: 1 });
  });

  it("estimates quantiles as Prometheus' histogram_quantile does", () => {
    expect(quantile(0.5, [1, 2, 4], [0, 10, 0, 0])).to.equal(1.5);
    expect(quantile(0.99, [1, 2, 4], [0, 0, 0, 10])).to.equal(4); // in the open bucket: its lower bound
    expect(quantile(0.5, [1], [0, 0])).to.equal(undefined);
  });

  it("keeps at most its series per namespace, and forgets a metric when no mapping reads it any more", () => {
    const small = new OtlpStore({ maxSeriesPerNamespace: 2, now: clock });
    const release = small.select("team-a", "m");
    small.select("team-b", "m");
    const three = ["1", "2", "3"]
      .reduce((b, p) => b.add({ ...pointOf(batch("m", { p }), 0) }), new OtlpBatchBuilder())
      .finish();
    expect(small.ingest("team-a", three)).to.deep.equal({ accepted: 2, overLimit: 1 });
    expect(small.ingest("team-b", three)).to.deep.equal({ accepted: 2, overLimit: 1 });
    expect(small.ingest("team-a", batch("m", { p: "1" }, { atMs: 2000 }))).to.deep.equal({
      accepted: 1,
      overLimit: 0,
    });
    release();
    expect(small.seriesCount("team-a")).to.equal(0);
    expect(small.selected("team-a")).to.deep.equal([]);
    expect(small.seriesCount("team-b")).to.equal(2);
  });

  it("keeps of a series only the attributes mappings match on and the pod's name, its key a digest when long, within the namespace's bytes", async () => {
    const mine = source({ attributes: { queue: "jobs" } });
    const attributes: Record<string, string> = { "k8s.pod.name": "web-1", queue: "jobs" };
    for (let i = 0; i < 30; i++) attributes[`extra-${i}`] = "x".repeat(50);
    const b = decodeOtlp(
      {
        json: {
          resourceMetrics: [
            {
              scopeMetrics: [
                {
                  metrics: [
                    {
                      name: "m",
                      gauge: {
                        dataPoints: [
                          {
                            timeUnixNano: "1",
                            asDouble: 4,
                            attributes: Object.entries(attributes).map(([key, v]) => ({
                              key,
                              value: { stringValue: v },
                            })),
                          },
                        ],
                      },
                    },
                  ],
                },
              ],
            },
          ],
        },
      },
      ["m"],
      store.kept("team-a"),
    );
    expect(store.ingest("team-a", b).accepted).to.equal(1);
    const [series] = [...store.series("team-a", "m")];
    expect({ ...series!.attributes }).to.deep.equal({ "k8s.pod.name": "web-1", queue: "jobs" });
    expect(series!.key).to.match(/^#[A-Za-z0-9_-]{43}$/);
    expect(await mine.sample({ namespace: "team-a", signal })).to.deep.include({ value: 4 });
    // A namespace's series are bounded in bytes as well as in number.
    const tight = new OtlpStore({ maxBytesPerNamespace: 2000, now: clock });
    tight.select("team-a", "m");
    const many = Array.from({ length: 20 }, (_, i) => i)
      .reduce((bb, i) => bb.add(pointOf(batch("m", { i: String(i) }), 0)), new OtlpBatchBuilder())
      .finish();
    const kept = tight.ingest("team-a", many);
    expect(kept.overLimit).to.be.above(0);
    expect(tight.bytes("team-a")).to.be.at.most(2000);
  });

  it("says in its value's note (the Pushed condition) that pushes were refused, for two minutes after the last", async () => {
    const s = source();
    store.ingest("team-a", batch("m", {}, { value: 1 }));
    expect(await s.sample({ namespace: "team-a", signal })).to.not.have.property("note");
    store.refused("team-a", undefined, {
      pushes: 1,
      points: 0,
      reason: "namespace team-a pushes more data points per second than it may",
    });
    store.refused("team-a", "m", {
      pushes: 0,
      points: 40,
      reason: "the namespace keeps as many series as it may (10000, 16 MiB)",
    });
    store.refused("team-a", "other", { pushes: 9, points: 9, reason: "not read: never counted" });
    expect(await s.sample({ namespace: "team-a", signal })).to.deep.include({
      note: {
        type: "Pushed",
        status: "False",
        reason: "PushesRefused",
        message:
          "1 push and 40 points of this namespace refused in the last 2 minutes; the last: the namespace keeps as many series as it may (10000, 16 MiB)",
      },
    });
    now += 121_000;
    store.ingest("team-a", batch("m", {}, { value: 1, atMs: 5000 }));
    expect(await s.sample({ namespace: "team-a", signal })).to.not.have.property("note");
  });

  it("spec: a quantile goes with histogram: quantile, and only with it", () => {
    expect(OtlpSpec.safeParse({ metric: "m", histogram: "quantile" }).success).to.equal(false);
    expect(OtlpSpec.safeParse({ metric: "m", quantile: 0.5 }).success).to.equal(false);
    expect(OtlpSpec.safeParse({ metric: "m", histogram: "quantile", quantile: 0.5 }).success).to.equal(true);
    expect(OtlpSpec.safeParse({ metric: "9bad" }).success).to.equal(false);
  });
});

describe("otlp: a push wakes the mapping's sampler", () => {
  it("wakes a costly sample at most every ten times its cost, however often pushes come", async () => {
    const clock = new FakeClock(1_000_000);
    let attempts = 0;
    const sampler = new Sampler(
      {
        needsObjects: false,
        sample: async () => {
          attempts++;
          const until = performance.now() + 30; // a sample that costs 30 ms
          while (performance.now() < until);
          return { kind: "scalar", value: 1 };
        },
      },
      { intervalMs: 60_000, request: () => ({ namespace: "team-a" }), clock, random: () => 0.5 },
    );
    await sampler.sampleNow();
    const before = attempts;
    for (let t = 0; t < 100; t++) {
      sampler.wake();
      await clock.advance(10); // a push every 10 ms for a second
    }
    await sampler.stop();
    // One attempt per 300 ms at most (10 × 30 ms), not one per 100 ms.
    expect(attempts - before).to.be.within(2, 4);
  });

  it("a value with non-finite objects left out keeps the time of its data", () => {
    const value = finiteOnly({
      kind: "objects",
      values: new Map([
        ["a", 1],
        ["b", Infinity],
      ]),
      observedAtMs: 5,
    });
    expect(value).to.deep.equal({ kind: "objects", values: new Map([["a", 1]]), observedAtMs: 5 });
  });

  it("samples moments after a push instead of at its next interval, at most once per gap, and dates the value by the push", async () => {
    const clock = new FakeClock(1_000_000);
    const store = new OtlpStore({ now: () => clock.now() });
    const source = new OtlpSource(OtlpSpec.parse({ metric: "m" }), {
      namespace: "team-a",
      store,
      windowMs: 50_000,
      now: () => clock.now(),
    });
    let attempts = 0;
    const sampler = new Sampler(source, {
      intervalMs: 60_000,
      request: () => ({ namespace: "team-a" }),
      onSample: () => attempts++,
      clock,
      random: () => 0.5,
    });
    sampler.onStop(source.onChange(() => sampler.wake()));
    sampler.start();
    await clock.advance(0);
    const before = attempts;
    store.ingest("team-a", batch("m", {}, { value: 7 }));
    store.ingest("team-a", batch("m", {}, { value: 8, atMs: 2000 }));
    await clock.advance(150);
    expect(attempts - before).to.equal(1);
    expect(sampler.state.last?.value).to.deep.include({ value: 8 } satisfies Partial<SampleValue>);
    expect(sampler.state.last?.atMs).to.equal(1_000_000);
    await sampler.stop();
    store.ingest("team-a", batch("m", {}, { value: 9, atMs: 3000 }));
    await clock.advance(1000);
    expect(attempts - before).to.equal(1);
  });
});
