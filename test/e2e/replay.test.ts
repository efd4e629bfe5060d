/**
 * `governor replay` against what the real HPA controller did: a queue gauge scraped by a
 * real Prometheus, served by a MetricMapping's `prometheus` source to an HPA on a
 * Deployment (2 s syncs). Afterwards, replay over the same stretch — the gauge's history
 * from Prometheus, the algorithm in a closed loop — must choose what the controller chose,
 * sync by sync (differences only where one moved a sync before the other: the HPA read
 * Governor's sample of the moment, replay reads Prometheus at each step), and `--set` of
 * another target must replay to other replicas. The same from the samples Governor kept
 * (`--history-points`, read through the aggregator as `history.governor.dev`), as replay
 * reads every source Prometheus does not hold.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { applyYaml, freshNamespace, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { governorCliAsync } from "../support/governor-cli.js";
import { GovernorProcess } from "../support/governor-process.js";
import { TestPrometheus } from "../support/prometheus.js";
import { deploymentYaml, externalAverage, hpaYaml } from "../support/workloads.js";
import { type Timeline, compareBySync, describeComparison, see } from "../support/timelines.js";

const SYNC_MS = 2_000;

interface ReplayJson {
  steps: { atMs: number; replicas: number; values: (number | null)[] }[];
  metrics: { name: string; query?: string; from: string; keptSince?: string }[];
}

describe("governor replay chooses over history what the HPA chose (e2e, the real HPA controller and Prometheus)", function () {
  this.timeout(420_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;
  let prometheus: TestPrometheus;
  let target: Server;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let queue = 10;

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "replay");
    target = createServer((_req, res) =>
      res
        .writeHead(200, { "content-type": "text/plain; version=0.0.4" })
        .end(`# TYPE e2e_replay_queue gauge\ne2e_replay_queue{queue="orders"} ${queue}\n`),
    );
    await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
    prometheus = new TestPrometheus([
      { address: `127.0.0.1:${(target.address() as AddressInfo).port}`, labels: { namespace: ns.name } },
    ]);
    await prometheus.start();
    governor = new GovernorProcess(cluster, { extraArgs: ["--history-points", "1000"] });
    await governor.start();
  });
  after(async () => {
    await governor?.stop();
    await prometheus?.stop();
    target?.close();
    await ns?.delete();
  });

  const replayJson = async (...args: string[]) => {
    const r = await governorCliAsync(
      cluster,
      "replay",
      "hpa/worker",
      "-n",
      ns.name,
      "--step",
      `${SYNC_MS / 1000}s`,
      "--prometheus-url",
      prometheus.url,
      ...args,
    );
    expect(r.code, r.out + r.err).to.equal(0);
    return r.out;
  };

  it("replays an HPA sync by sync as the controller decided, from Prometheus and from Governor's kept samples, and --set of another target replays to other replicas", async () => {
    applyYaml(
      cluster,
      ns.name,
      `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: queue}
spec:
  metric: replay_queue
  subject: {external: {}}
  interval: 1s
  source: {prometheus: {address: "${prometheus.url}", query: "sum(e2e_replay_queue)"}}
---
${deploymentYaml("worker")}---
${hpaYaml("worker", { maxReplicas: 10, metrics: externalAverage("replay_queue", "10"), behavior: "{scaleDown: {stabilizationWindowSeconds: 10}}" })}`,
    );
    const desired = async () =>
      (
        await cluster.client.get<{ status?: { desiredReplicas?: number } }>(
          `/apis/autoscaling/v2/namespaces/${ns.name}/horizontalpodautoscalers/worker`,
        )
      ).status?.desiredReplicas;
    await eventually(async () => expect(await desired()).to.equal(1), {
      timeoutMs: 90_000,
      intervalMs: 500,
      what: "the HPA deciding 1 on a queue of 10",
    });

    const hpa: Timeline = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        see(hpa, Date.now(), await desired());
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const start = Date.now();
    for (const [value, holdS] of [
      [10, 10],
      [60, 30],
      [25, 40],
    ] as const) {
      queue = value;
      await new Promise((r) => setTimeout(r, holdS * 1000));
    }
    watching = false;
    await watcher;
    const end = Date.now();

    const since = `${Math.ceil((Date.now() - start) / 1000) + 4}s`;
    const at = (t: Timeline) =>
      t.map((s) => `${s.value}@+${((s.atMs - start) / 1000).toFixed(1)}s`).join(" ");
    /** A replay of the stretch (`args`), compared with the HPA sync by sync; its report printed. */
    const replayAgainstHpa = async (what: string, ...args: string[]) => {
      const replayed = JSON.parse(await replayJson("--since", since, ...args, "-o", "json")) as ReplayJson;
      const side: Timeline = [];
      for (const s of replayed.steps) see(side, s.atMs, s.replicas);
      const c = compareBySync(hpa, side, {
        fromMs: start,
        toMs: end,
        periodMs: SYNC_MS,
        marginMs: 2500,
        other: "replay",
      });
      const report = [
        ...describeComparison(`${what} against the HPA`, c, start, "replay"),
        `  the HPA: ${at(hpa)}`,
        `  replay:  ${at(side)}`,
        `  metric: ${JSON.stringify(replayed.metrics[0])}`,
      ].join("\n");
      console.log(report);
      // Each of the 3 decisions may be seen a sync apart (the HPA read Governor's sample of its
      // moment, replay reads history at each step): at most a few of ~40 syncs.
      expect(c.same / c.instants, report).to.be.at.least(0.85);
      expect(
        c.differences.filter((d) => d.explanation === undefined),
        report,
      ).to.deep.equal([]);
      expect(replayed.steps.at(-1)!.replicas, report).to.equal(3);
      return { replayed, report };
    };

    expect(new Set(hpa.map((s) => s.value)).size, at(hpa)).to.be.at.least(3); // 1 → 6 → 3
    const { replayed, report } = await replayAgainstHpa("replay");
    expect(replayed.metrics[0]?.query, report).to.contain(`namespace="${ns.name}"`);

    // The same history with a target of 20: a queue of 25 asks for 2, not 3.
    const changed = JSON.parse(
      await replayJson("--since", since, "--set", "replay_queue=20", "-o", "json"),
    ) as ReplayJson;
    expect(changed.steps.at(-1)!.replicas, report).to.equal(2);

    // The same stretch from the samples Governor kept of the mapping: what the HPA read.
    const kept = await replayAgainstHpa("replay of Governor's kept samples", "--from", "history");
    expect(kept.replayed.metrics[0]?.from, kept.report).to.equal("history");
    expect(Date.parse(kept.replayed.metrics[0]!.keptSince!), kept.report).to.be.below(start);

    const svg = await replayJson("--since", since, "-o", "svg");
    expect(svg).to.match(/^<svg [^>]*>/);
    expect(svg).to.contain("replay_queue");
    const file = join(mkdtempSync(join(tmpdir(), "governor-replay-")), "replay.svg");
    writeFileSync(file, svg);
    console.log(`  chart: ${file}`);
  });
});
