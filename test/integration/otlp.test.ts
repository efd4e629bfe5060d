import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { createCA, issueCertificate, type KeyPair } from "../../src/certs/certs.js";
import { httpsGet } from "../support/https-get.js";
import { applyYaml, freshNamespace, installCrds, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { SdkPusher, startCollector } from "../support/otlp.js";

describe("OTLP pushes from the JavaScript SDK drive the metrics API (integration)", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let teamA: Awaited<ReturnType<typeof freshNamespace>>;
  let teamB: Awaited<ReturnType<typeof freshNamespace>>;
  let operator: RunningOperator;
  let ca: KeyPair;
  const tokens: Record<string, string> = {};
  const pushers: SdkPusher[] = [];
  const depth: Record<string, number> = {};

  const get = (path: string) =>
    httpsGet(`https://127.0.0.1:${operator.api.address.port}${path}`, {
      ca: ca.cert,
      servername: "localhost",
      cert: readFileSync(join(cluster.dir, "pki/front-proxy-client.crt"), "utf8"),
      key: readFileSync(join(cluster.dir, "pki/front-proxy-client.key"), "utf8"),
      headers: { "X-Remote-User": "system:kube-aggregator", "X-Remote-Group": "system:masters" },
    });
  const otlpUrl = () => `https://localhost:${operator.otlpAddress!.port}/v1/metrics`;
  /** A pod's SDK with a gauge `queue.depth` reading `depth[pod]`. */
  const pod = (name: string, attributes: Record<string, string> = {}) => {
    const p = new SdkPusher({ "k8s.pod.name": name, ...attributes });
    p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(depth[name] ?? 0));
    pushers.push(p);
    return p;
  };
  const push = async (p: SdkPusher, token: string | undefined, encoding: "protobuf" | "json" = "protobuf") =>
    p.export({ url: otlpUrl(), token, ca: ca.cert, encoding });
  /** Team A's token in a file, as a projected volume holds it. */
  let tokenFile: string;
  const tokenFor = async (namespace: string, audiences?: string[]) => {
    const res = await cluster.client.request<{ status: { token: string } }>(
      "POST",
      `/api/v1/namespaces/${namespace}/serviceaccounts/pusher/token`,
      {
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { ...(audiences ? { audiences } : {}), expirationSeconds: 3600 },
        },
      },
    );
    return res.status.token;
  };
  const mapping = (name: string, metric: string, subject: string, source: string, timing: string) =>
    `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: ${name}}
spec:
  metric: ${metric}
  subject: ${subject}
  ${timing}
  source: {otlp: ${source}}`;
  const podValues = async (namespace: string, metric: string) => {
    const r = await get(`/apis/custom.metrics.k8s.io/v1beta2/namespaces/${namespace}/pods/*/${metric}`);
    if (r.status !== 200) throw new Error(`${r.status}: ${r.text}`);
    return Object.fromEntries(
      (r.json.items as { describedObject: { name: string }; value: string }[]).map((i) => [
        i.describedObject.name,
        i.value,
      ]),
    );
  };

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await installCrds(cluster);
    teamA = await freshNamespace(cluster, "otlp-a");
    teamB = await freshNamespace(cluster, "otlp-b");
    ca = await createCA("otlp-test");
    const tls = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "server",
    });
    operator = await startOperator({
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: teamA.name,
      tls,
      host: "127.0.0.1",
      port: 0,
      apis: { custom: true, external: true },
      leaderElect: false,
      registration: { mode: "none", serviceName: "governor", port: 0 },
      shutdownDelayMs: 0,
      otlp: { port: 0, host: "127.0.0.1", audience: "governor" },
    });
    for (const ns of [teamA.name, teamB.name]) {
      await cluster.client.create(`/api/v1/namespaces/${ns}/serviceaccounts`, {
        apiVersion: "v1",
        kind: "ServiceAccount",
        metadata: { name: "pusher" },
      });
      tokens[ns] = await tokenFor(ns, ["governor"]);
    }
    tokenFile = join(mkdtempSync(join(tmpdir(), "otlp-token-")), "token");
    writeFileSync(tokenFile, tokens[teamA.name]!);
    for (const name of ["web-1", "web-2"])
      await cluster.client.create(`/api/v1/namespaces/${teamA.name}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, labels: { app: "web" } },
        spec: { containers: [{ name: "web", image: "example.invalid/web" }] },
      });
    applyYaml(
      cluster,
      teamA.name,
      mapping(
        "queue",
        "otlp_queue_depth",
        "{resource: pods}",
        "{metric: queue.depth}",
        "interval: 30s\n  staleAfter: 40s",
      ),
    );
    applyYaml(
      cluster,
      teamB.name,
      mapping(
        "queue",
        "otlp_queue_depth",
        "{external: {}}",
        "{metric: queue.depth, aggregate: max}",
        "interval: 1s\n  staleAfter: 4s",
      ),
    );
  });

  after(async () => {
    for (const p of pushers) await p.shutdown();
    await operator?.stop();
    await teamA?.delete();
    await teamB?.delete();
  });

  it("serves each pod the value it pushed, moments after the push although the mapping samples every 30 s", async () => {
    const [web1, web2] = [pod("web-1"), pod("web-2")];
    depth["web-1"] = 3;
    depth["web-2"] = 8;
    // The mapping is read once its sampler runs: the first push may come before it selects the metric.
    await eventually(
      async () => {
        expect(await web1.export({ url: otlpUrl(), tokenFile, ca: ca.cert, encoding: "protobuf" })).to.equal(
          undefined,
        );
        expect(await push(web2, tokens[teamA.name], "json")).to.equal(undefined);
        expect(await podValues(teamA.name, "otlp_queue_depth")).to.deep.equal({ "web-1": "3", "web-2": "8" });
      },
      { timeoutMs: 20_000, intervalMs: 500, what: "both pods' pushed values served" },
    );
    depth["web-1"] = 12;
    expect(await push(web1, tokens[teamA.name])).to.equal(undefined);
    const pushed = Date.now();
    await eventually(
      async () =>
        expect(await podValues(teamA.name, "otlp_queue_depth")).to.deep.equal({
          "web-1": "12",
          "web-2": "8",
        }),
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    const ms = Date.now() - pushed;
    console.log(`      push → servable: ${ms} ms (interval 30 s)`);
    expect(ms).to.be.below(2_000);
  });

  it("keeps another namespace's push out, whatever pod or namespace its attributes name", async () => {
    const intruder = pod("web-1", { "k8s.namespace.name": teamA.name });
    depth["web-1"] = 12;
    const before = await podValues(teamA.name, "otlp_queue_depth");
    const spoofed = new SdkPusher({ "k8s.pod.name": "web-1", "k8s.namespace.name": teamA.name });
    pushers.push(spoofed);
    spoofed.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(999));
    expect(await push(spoofed, tokens[teamB.name])).to.equal(undefined);
    // It lands in team B's own namespace, where its External metric reads it.
    await eventually(async () => {
      const r = await get(`/apis/external.metrics.k8s.io/v1beta1/namespaces/${teamB.name}/otlp_queue_depth`);
      expect(r.status, r.text).to.equal(200);
      expect(r.json.items[0].value).to.equal("999");
    });
    expect(await podValues(teamA.name, "otlp_queue_depth")).to.deep.equal(before);
    void intruder;
  });

  it("refuses a token for another audience (the apiserver's) and a push with none", async () => {
    const p = pod("web-2");
    const apiserverToken = await tokenFor(teamA.name);
    const wrong = await push(p, apiserverToken);
    expect(wrong?.message).to.match(/401|Unauthorized/);
    const none = await push(p, undefined);
    expect(none?.message).to.match(/401|Unauthorized/);
  });

  it("takes what an OpenTelemetry Collector forwards with its otlphttp exporter, into the Collector's namespace", async () => {
    const collector = await startCollector({ governor: otlpUrl(), ca: ca.cert, token: tokens[teamB.name]! });
    try {
      const app = new SdkPusher({ "k8s.pod.name": "batch-7" });
      pushers.push(app);
      app.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(1234));
      expect(await app.export({ url: collector.url, ca: ca.cert, encoding: "protobuf" })).to.equal(undefined);
      await eventually(
        async () => {
          const r = await get(
            `/apis/external.metrics.k8s.io/v1beta1/namespaces/${teamB.name}/otlp_queue_depth`,
          );
          expect(r.status, r.text).to.equal(200);
          expect(r.json.items[0].value).to.equal("1234");
        },
        { timeoutMs: 10_000, what: `the Collector's forward served\n${collector.log().slice(-2000)}` },
      );
    } finally {
      await collector.stop();
    }
  });

  it("says on the mapping, in its condition Pushed, that points were refused and why", async () => {
    const p = new SdkPusher({ "k8s.pod.name": "worker-9" });
    pushers.push(p);
    p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(7, { note: "x".repeat(2000) }));
    expect(await push(p, tokens[teamB.name])).to.equal(undefined); // partial success: not an error
    await eventually(
      async () => {
        const mm = await cluster.client.get<{
          status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
        }>(`/apis/governor.dev/v1alpha1/namespaces/${teamB.name}/metricmappings/queue`);
        const pushed = mm.status?.conditions?.find((c) => c.type === "Pushed");
        expect(pushed).to.include({ status: "False", reason: "PushesRefused" });
        expect(pushed?.message).to.match(
          /1 point of this namespace refused in the last 2 minutes; the last: a point of queue.depth: attribute note is longer than 1024 characters/,
        );
      },
      { timeoutMs: 20_000, what: "the Pushed condition" },
    );
  });

  it("goes stale, never 0, when the pusher stops", async () => {
    const p = new SdkPusher({ "k8s.pod.name": "worker" });
    pushers.push(p);
    p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(5));
    expect(await push(p, tokens[teamB.name])).to.equal(undefined);
    const path = `/apis/external.metrics.k8s.io/v1beta1/namespaces/${teamB.name}/otlp_queue_depth`;
    await eventually(async () => expect((await get(path)).status).to.equal(200));
    const stopped = Date.now();
    const seen = new Set<string>();
    const r = await eventually(
      async () => {
        const answer = await get(path);
        if (answer.status === 200) seen.add(answer.json.items[0].value as string);
        expect(answer.status).to.equal(503);
        return answer;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    expect(r.text).to.match(/stale|older than|was pushed/);
    expect([...seen].filter((v) => v === "0")).to.deep.equal([]);
    expect(Date.now() - stopped).to.be.below(8_000);
  });
});
