import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { pino } from "pino";
import type { Condition } from "../api/common.js";
import { MappingProvider, type SubjectLister } from "../metrics/mapping-provider.js";
import { formatQuantity } from "../api/quantity.js";
import { eventually as poll } from "../../test/support/eventually.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { EventRecorder } from "./events.js";
import { InformerCache } from "../k8s/informer-cache.js";
import { METRIC_MAPPINGS_PATH } from "../api/metric-mapping.js";
import type { MetricMappingObject } from "../sources/registry.js";
import { MetricMappingReconciler } from "./metric-mapping-reconciler.js";
import { type DestinationPolicy, destinationPolicy } from "../sources/destination-policy.js";

const NS = "shop";
const MAPPINGS = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

const pods: SubjectLister = {
  describe: async () => ({ kind: "Pod", apiVersion: "v1", namespaced: true }),
  list: async () => [],
  get: () => undefined,
};

/** A MetricMapping reconciler on an in-memory apiserver, with the cluster serving pods and nodes. */
function setUp(
  opts: { leader?: boolean; sourcePolicy?: DestinationPolicy; before?: (kube: FakeKube) => void } = {},
) {
  const kube = new FakeKube();
  opts.before?.(kube);
  const provider = new MappingProvider(pods, formatQuantity);
  const cache = new InformerCache(kube, pino({ level: "silent" }));
  let reconciles = 0;
  const reconciler = new MetricMappingReconciler({
    client: kube,
    informer: cache.informer(METRIC_MAPPINGS_PATH),
    provider,
    mapper: {
      lookup: async (gr) =>
        gr.group === "" && gr.resource === "pods"
          ? { group: "", version: "v1", resource: "pods", kind: "Pod", namespaced: true, apiVersion: "v1" }
          : gr.group === "" && gr.resource === "nodes"
            ? {
                group: "",
                version: "v1",
                resource: "nodes",
                kind: "Node",
                namespaced: false,
                apiVersion: "v1",
              }
            : undefined,
    },
    pods: { list: () => [], get: () => undefined, version: () => 0 },
    secrets: { read: async () => ({}) },
    events: new EventRecorder(kube, "governor", pino({ level: "silent" })),
    logger: pino({ level: "silent" }),
    observeReconcile: () => void reconciles++,
    ...(opts.sourcePolicy ? { sourcePolicy: opts.sourcePolicy } : {}),
  });
  const controller = reconciler.start();
  if (opts.leader ?? true) reconciler.statusWriter.start();
  const mapping = (name: string, spec: Record<string, unknown>, created?: string) =>
    kube.seed(`${MAPPINGS}/${name}`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name, namespace: NS, ...(created ? { creationTimestamp: created } : {}) },
      spec,
    });
  const stored = (name: string) => kube.peek<MetricMappingObject>(`${MAPPINGS}/${name}`);
  const ready = (name: string): Condition | undefined =>
    stored(name)?.status?.conditions?.find((c) => c.type === "Ready");
  const statusWrites = (name: string) =>
    kube.calls.filter((c) => c.path === `${MAPPINGS}/${name}/status`).length;
  return {
    reconciles: () => reconciles,
    cache,
    kube,
    provider,
    reconciler,
    controller,
    mapping,
    stored,
    ready,
    statusWrites,
    becomeLeader: () => reconciler.statusWriter.start(),
  };
}

const staticSpec = (metric: string, value = "5") => ({
  metric,
  subject: { resource: "pods" },
  source: { static: { value } },
});

/** Polls `check` every few ms, 2 s at most, until it stops throwing. */
const eventually = (check: () => void) => poll(check, { timeoutMs: 2000, intervalMs: 5 });

/**
 * Waits until the cache holds each named mapping as stored (the echoes of its own writes
 * delivered) and the work queue has nothing waiting or running: what has not happened by
 * then is not about to (a reconcile due later, on a timer, aside).
 */
const settled = (t: ReturnType<typeof setUp>, ...names: string[]) =>
  eventually(() => {
    for (const name of names)
      expect(t.controller.informer.get(name, NS)?.metadata?.resourceVersion, name).to.equal(
        t.stored(name)?.metadata?.resourceVersion,
      );
    expect(t.controller.queue.idle, "work queue idle").to.equal(true);
  });

describe("MetricMapping reconciler (on an in-memory apiserver)", () => {
  let t: ReturnType<typeof setUp>;
  afterEach(async () => {
    await t?.reconciler.stop();
    await t?.cache.stop();
  });

  it("serves a new mapping and says Ready with its value, observing the spec's generation", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second", "7"));
    await eventually(() => expect(t.ready("requests")).to.include({ status: "True", reason: "Serving" }));
    expect(t.provider.active(`${NS}/requests`)?.metric).to.equal("requests_per_second");
    expect(t.stored("requests")?.status).to.include({ value: "7", observedGeneration: 1 });
  });

  it("writes a steady mapping's status once, not again on every resync", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second"));
    await eventually(() => expect(t.ready("requests")?.status).to.equal("True"));
    await settled(t, "requests");
    // One write took it to Ready with its value.
    expect(t.statusWrites("requests")).to.equal(1);
    const reconciled = t.reconciles();
    for (let i = 0; i < 5; i++) {
      t.reconciler.resyncAll();
      // Each resync is reconciled (the proof that nothing was written is a reconcile that ran).
      await eventually(() => expect(t.reconciles()).to.be.above(reconciled + i));
    }
    await settled(t, "requests");
    expect(t.statusWrites("requests")).to.equal(1);
  });

  it("reconciles a new mapping once — the reconcile that starts its sampler writes the first value — and not again for the echo of its own status write", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second"));
    await eventually(() => expect(t.ready("requests")?.status).to.equal("True"));
    await settled(t, "requests");
    expect(t.statusWrites("requests")).to.equal(1);
    expect(t.reconciles()).to.equal(1);
  });

  describe("with a source that answers after 1.5 s", () => {
    let server: Server;
    let url: string;
    before(async () => {
      server = createServer((_req, res) => {
        setTimeout(() => res.end(JSON.stringify({ depth: 3 })), 1500);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/queue`;
    });
    after(() => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    });
    const slowSpec = (metric: string) => ({
      metric,
      subject: { external: {} },
      source: { http: { url, jsonPath: "$.depth" } },
    });
    const loopback = destinationPolicy({ allow: ["127.0.0.0/8"] });

    it("a reconcile waits no more than a second for the first sample; the sample's end writes it", async () => {
      t = setUp({ sourcePolicy: loopback });
      t.mapping("queue", slowSpec("queue_depth"));
      await eventually(() => expect(t.reconciles()).to.equal(1));
      expect(t.statusWrites("queue")).to.equal(0);
      await poll(() => expect(t.ready("queue")).to.include({ status: "True", reason: "Serving" }), {
        timeoutMs: 4000,
        intervalMs: 20,
      });
      expect(t.stored("queue")?.status?.value).to.equal("3");
      expect(t.reconciles()).to.equal(2);
    });

    it("a start of 80 mappings holds workers for a second at most once, not once per 16 mappings", async () => {
      t = setUp({
        sourcePolicy: loopback,
        before: (kube) => {
          for (let i = 0; i < 80; i++)
            kube.seed(`${MAPPINGS}/q${i}`, {
              apiVersion: "governor.dev/v1alpha1",
              kind: "MetricMapping",
              metadata: { name: `q${i}`, namespace: NS },
              spec: slowSpec(`queue_${i}`),
            });
        },
      });
      // Waiting for every first sample, 16 at a time, would take 5 s at least; the last 16 wait 1 s.
      const started = Date.now();
      await poll(() => expect(t.reconciler.initialProgress()).to.deep.equal({ done: 80, total: 80 }), {
        timeoutMs: 8000,
        intervalMs: 10,
      });
      expect(Date.now() - started).to.be.below(3000);
    });
  });

  describe("mappings that would send the same request", () => {
    let server: Server;
    let url: string;
    let queries = 0;
    before(async () => {
      server = createServer((_req, res) => {
        queries++;
        res.end(JSON.stringify({ depth: 3 }));
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/queue`;
    });
    after(() => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    });
    const spec = (metric: string, interval = "1s") => ({
      metric,
      interval,
      subject: { external: {} },
      source: { http: { url, jsonPath: "$.depth" } },
    });
    const inNamespace = (kube: FakeKube, namespace: string, name: string, body: object) =>
      kube.seed(`/apis/governor.dev/v1alpha1/namespaces/${namespace}/metricmappings/${name}`, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name, namespace },
        spec: body,
      });
    /** Queries the server answers over `ms`. */
    const queriesOver = async (ms: number) => {
      const q0 = queries;
      await new Promise((r) => setTimeout(r, ms));
      return queries - q0;
    };

    it("share one query per interval in one namespace; another namespace, or another interval, queries on its own", async () => {
      t = setUp({ sourcePolicy: destinationPolicy({ allow: ["127.0.0.0/8"] }) });
      for (let i = 0; i < 10; i++) t.mapping(`queue-${i}`, spec(`queue_depth_${i}`));
      await eventually(() =>
        expect(t.provider.active(`${NS}/queue-9`)?.sampler.state.attemptedAtMs).to.not.equal(undefined),
      );
      // Ten mappings, one sampler: about one query a second (±10 % jitter), not ten.
      expect(await queriesOver(3000)).to.be.within(2, 4);
      for (let i = 0; i < 10; i++)
        await eventually(() =>
          expect(t.ready(`queue-${i}`)).to.include({ status: "True", reason: "Serving" }),
        );
      inNamespace(t.kube, "warehouse", "queue", spec("queue_depth"));
      t.mapping("queue-slow", spec("queue_depth_slow", "2s"));
      for (const key of ["warehouse/queue", `${NS}/queue-slow`])
        await eventually(() =>
          expect(t.provider.active(key)?.sampler.state.attemptedAtMs).to.not.equal(undefined),
        );
      // shop's sampler each second, warehouse's each second, shop's 2 s mapping every other:
      // about 10. Shop's alone would be 4; one query per mapping, over 40. (A busy machine's
      // late timers take one or two off, never add: 7 is the least that shows the others query.)
      expect(await queriesOver(4000)).to.be.within(7, 12);
    });

    it("a value that changes every sample is reconciled when its status may be written (every 10 s), not every sample; a follower never", async () => {
      let depth = 0;
      const moving = createServer((_req, res) => res.end(JSON.stringify({ depth: ++depth })));
      await new Promise<void>((r) => moving.listen(0, "127.0.0.1", r));
      const movingUrl = `http://127.0.0.1:${(moving.address() as AddressInfo).port}/queue`;
      try {
        for (const leader of [true, false]) {
          t = setUp({ leader, sourcePolicy: destinationPolicy({ allow: ["127.0.0.0/8"] }) });
          t.mapping("moving", {
            ...spec("moving"),
            source: { http: { url: movingUrl, jsonPath: "$.depth" } },
          });
          await eventually(() => expect(t.reconciles()).to.equal(1));
          if (!leader)
            // What the leader, elsewhere, wrote.
            await t.kube.mergePatch(`${MAPPINGS}/moving/status`, {
              status: {
                conditions: [
                  { type: "Ready", status: "True", reason: "Serving", message: "", lastTransitionTime: "" },
                ],
              },
            });
          await eventually(() => expect(t.ready("moving")?.reason).to.equal("Serving"));
          await settled(t, "moving");
          const r0 = t.reconciles();
          const d0 = depth;
          await new Promise((r) => setTimeout(r, 3500));
          expect(depth - d0, "samples").to.be.at.least(3);
          expect(t.reconciles() - r0, leader ? "leader" : "follower").to.equal(0);
          await t.reconciler.stop();
          await t.cache.stop();
        }
      } finally {
        moving.closeAllConnections();
        moving.close();
      }
    });

    it("a mapping deleted or edited leaves the others sharing and sampling", async () => {
      t = setUp({ sourcePolicy: destinationPolicy({ allow: ["127.0.0.0/8"] }) });
      t.mapping("a", spec("a"));
      t.mapping("b", spec("b"));
      t.mapping("c", spec("c"));
      await eventually(() => expect(t.ready("c")?.status).to.equal("True"));
      await t.kube.delete(`${MAPPINGS}/a`);
      await eventually(() => expect(t.provider.active(`${NS}/a`)).to.equal(undefined));
      expect(await queriesOver(2500)).to.be.within(2, 3);
      // b now samples every 2 s on its own; c keeps the 1 s sampler it shared.
      t.mapping("b", spec("b", "2s"));
      await eventually(() =>
        expect(t.provider.active(`${NS}/b`)?.sampler).to.not.equal(t.provider.active(`${NS}/c`)?.sampler),
      );
      // Each sampler's own attempts, not a total a phase can shift: intervals of 2 s and 1 s,
      // each ±10 % jitter and up to half a 100 ms slot, give 1–3 and 3–5 in 4 s.
      const counts = { b: 0, c: 0 };
      const off = (["b", "c"] as const).map((m) =>
        t.provider.active(`${NS}/${m}`)!.sampler.listen(() => counts[m]++),
      );
      const queries = await queriesOver(4000);
      for (const f of off) f();
      expect(counts.b, "b's own samples at 2 s").to.be.within(1, 3);
      expect(counts.c, "c's samples at 1 s").to.be.within(3, 5);
      expect(queries, "one query per attempt, nothing else").to.be.within(
        counts.b + counts.c - 1,
        counts.b + counts.c + 1,
      );
      expect(t.ready("c")?.status).to.equal("True");
    });
  });

  it("says what is wrong with a spec the schema let through, and serves nothing for it", async () => {
    t = setUp();
    t.mapping("broken", { metric: "Not A Metric Name", subject: { resource: "pods" }, source: {} });
    await eventually(() => expect(t.ready("broken")).to.include({ status: "False", reason: "InvalidSpec" }));
    expect(t.ready("broken")?.message).to.match(/metric/);
    expect(t.provider.active(`${NS}/broken`)).to.equal(undefined);
  });

  it("refuses a cluster-scoped subject and one the cluster does not serve, naming each", async () => {
    t = setUp();
    t.mapping("nodes", { ...staticSpec("x"), subject: { resource: "nodes" } });
    t.mapping("widgets", { ...staticSpec("y"), subject: { resource: "widgets.example.com" } });
    await eventually(() => {
      expect(t.ready("nodes")?.reason).to.equal("ClusterScopedSubject");
      expect(t.ready("widgets")?.reason).to.equal("UnknownResource");
    });
    expect(t.reconciler.problem(NS, "nodes")?.reason).to.equal("ClusterScopedSubject");
  });

  it("of two mappings for one metric the older serves and the younger reports Conflict, until the older is deleted", async () => {
    t = setUp();
    t.mapping("first", staticSpec("queue_depth", "1"), "2026-01-01T00:00:00Z");
    t.mapping("second", staticSpec("queue_depth", "2"), "2026-01-02T00:00:00Z");
    await eventually(() => {
      expect(t.ready("first")?.reason).to.equal("Serving");
      expect(t.ready("second")).to.include({ status: "False", reason: "Conflict" });
    });
    expect(t.ready("second")?.message).to.include("MetricMapping first");
    expect(t.provider.active(`${NS}/first`)).to.not.equal(undefined);
    expect(t.provider.active(`${NS}/second`)).to.equal(undefined);

    await t.kube.delete(`${MAPPINGS}/first`);
    await eventually(() => expect(t.ready("second")?.reason).to.equal("Serving"));
    expect(t.provider.active(`${NS}/first`)).to.equal(undefined);
    expect(t.stored("second")?.status?.value).to.equal("2");
  });

  it("a replica that is not the leader serves but writes no status; once leader, it writes", async () => {
    t = setUp({ leader: false });
    t.mapping("requests", staticSpec("requests_per_second"));
    await eventually(() => expect(t.provider.active(`${NS}/requests`)).to.not.equal(undefined));
    await settled(t, "requests");
    expect(t.statusWrites("requests")).to.equal(0);
    t.becomeLeader();
    await eventually(() => expect(t.ready("requests")?.status).to.equal("True"));
  });

  it("follows an edit of the spec: the new value is served and the new generation observed", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second", "5"));
    await eventually(() => expect(t.stored("requests")?.status?.value).to.equal("5"));
    t.mapping("requests", staticSpec("requests_per_second", "9"));
    await eventually(() =>
      expect(t.stored("requests")?.status).to.include({ value: "9", observedGeneration: 2 }),
    );
  });

  it("follows a mapping deleted and made again between two watches (same name and generation, a new uid)", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second", "5"));
    await eventually(() => expect(t.stored("requests")?.status?.value).to.equal("5"));
    t.kube.recreate(`${MAPPINGS}/requests`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: "requests", namespace: NS },
      spec: staticSpec("requests_per_second", "9"),
    });
    await eventually(() => expect(t.stored("requests")?.status?.value).to.equal("9"));
  });

  it("stops serving a deleted mapping", async () => {
    t = setUp();
    t.mapping("requests", staticSpec("requests_per_second"));
    await eventually(() => expect(t.provider.active(`${NS}/requests`)).to.not.equal(undefined));
    await t.kube.delete(`${MAPPINGS}/requests`);
    await eventually(() => expect(t.provider.active(`${NS}/requests`)).to.equal(undefined));
  });

  it("keeps going when a status write fails: the next attempt writes it", async () => {
    t = setUp();
    t.kube.failNext(500, { method: "mergePatch", path: `${MAPPINGS}/requests/status` });
    t.mapping("requests", staticSpec("requests_per_second"));
    await eventually(() => expect(t.ready("requests")?.status).to.equal("True"));
    expect(t.statusWrites("requests")).to.be.at.least(2);
  });
});
