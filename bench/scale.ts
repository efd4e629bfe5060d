/**
 * "Many mappings": 10,000 MetricMappings (static values, each its own metric) exist
 * before Governor starts; then a fresh Governor process loads them. Figures: the time
 * until discovery lists all of them and until every status says Ready (against the
 * apiserver's own time to create them, measured just before), Governor's RSS once settled
 * (against fresh Governors' RSS with a handful of mappings, three processes), and
 * discovery p99 (against a bare server returning the same bytes), CPU and status writes
 * once steady; then the RSS of a Governor on plain node, without the shipped V8 flags.
 * Its figures are also the 10,000 point of "how cost grows" (growth.ts), which loads other
 * sizes with {@link loadMany} too.
 */
import type { KubernetesListObject } from "@kubernetes/client-node";
import { startInformer } from "../src/k8s/informer.js";
import { httpsGet } from "../test/support/https-get.js";
import {
  type Bench,
  type Child,
  NS,
  comparisonRows,
  cpuSeconds,
  fmt,
  interleave,
  pinned,
  pool,
  proxied,
  ratio,
  sampleRss,
  shippedNodeOptions,
  sleep,
  startBare,
  startGovernor,
} from "./harness.js";
import type { GrowthPoint } from "./plot.js";
import { showSpread, spread } from "./stats.js";

const MAPPINGS = 10_000;
const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

interface Mapping {
  metadata?: { name?: string; generation?: number };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string }[] };
}

const isReady = (m: Mapping) =>
  m.status?.observedGeneration === m.metadata?.generation &&
  (m.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

const IDLE_PROCESSES = 3;

/**
 * The baseline for the RSS rows: Governor's RSS with a handful of mappings, in
 * `IDLE_PROCESSES` fresh processes one after the other, each settled as long as the steady
 * rows settle and then sampled. One process is not enough: an idle Governor's RSS differs
 * by a few MB from one process to the next (where the heap stood at its last GC), and a
 * baseline from one process moved the ratio outside the previous run's range.
 */
async function idleRss(b: Bench): Promise<number[][]> {
  const perProcess: number[][] = [];
  for (let i = 0; i < IDLE_PROCESSES; i++) {
    const governor = await startGovernor(b);
    try {
      await sleep(20_000);
      perProcess.push(await sampleRss(governor.process.pid!, 11, 2000));
    } finally {
      await governor.stop();
    }
  }
  return perProcess;
}

/**
 * The RSS row: steady samples against the idle processes' samples. The ratios are every
 * steady sample over every idle process's median, so their range carries the baseline's
 * process-to-process spread as well as the steady process's own.
 */
function rssRow(name: string, rss: number[], idle: number[][], baseline: string) {
  const ratios = idle.flatMap((p) => rss.map((x) => x / spread(p).median));
  const medians = idle.map((p) => spread(p).median);
  return {
    name,
    figure: showSpread(rss),
    baseline: `${showSpread(idle.flat())} (${baseline}; ${idle.length} processes, medians ${medians.map((m) => fmt(m)).join(", ")})`,
    ratio: showSpread(ratios, 2),
    series: { Governor: rss, baseline: idle.flat(), ratio: ratios },
  };
}

/** The label of the many mappings (they are deleted by it). */
export const MANY = "bench.governor.dev/many";

/** `n` MetricMappings loaded by a fresh Governor: how long it took, and what it serves. */
export interface Loaded {
  governor: Child;
  /** The apiserver's time to create them, 32 in flight. */
  createMs: number;
  /** From Governor's start until discovery lists all of them / all are Ready. */
  servedMs: number;
  readyMs: number;
  /** Governor's discovery document with all of them. */
  discovery: { url: string; body: string };
  /** Status updates of the mappings seen so far. */
  updates(): number;
  /** Stops watching (not Governor). */
  stopWatching(): Promise<void>;
}

/** What Node says when a process runs out of heap. */
const OUT_OF_HEAP = /heap out of memory|Ineffective mark-compacts/i;

/** Governor exited while loading mappings (out of heap, typically): how far it got. */
export class GovernorExited extends Error {
  constructor(
    message: string,
    readonly ready: number,
    readonly afterS: number,
    readonly outOfHeap: boolean,
  ) {
    super(message);
  }
}

/**
 * A Governor restarted over `n` mappings whose statuses its predecessor wrote (a rollout, a
 * crash): starts a fresh one and waits until discovery lists all of them. The ms from start,
 * and the Governor (the caller stops it); {@link GovernorExited} if it dies first.
 */
export async function restartOver(
  b: Bench,
  n: number,
  nodeArgs: string[] = shippedNodeOptions(),
): Promise<{ governor: Child; servedMs: number }> {
  const started = performance.now();
  const governor = await startGovernor(b, nodeArgs).catch((err: unknown) => {
    const text = String(err instanceof Error ? err.message : err);
    if (!OUT_OF_HEAP.test(text)) throw err;
    throw new GovernorExited(text, 0, (performance.now() - started) / 1000, true);
  });
  try {
    const discovery = `https://127.0.0.1:${governor.port}/apis/custom.metrics.k8s.io/v1beta2`;
    for (;;) {
      const r = await httpsGet(discovery, proxied(b));
      const listed = ((r.json as { resources?: { name: string }[] }).resources ?? []).filter((x) =>
        x.name.startsWith("pods/many_"),
      ).length;
      if (listed === n) return { governor, servedMs: performance.now() - started };
      const { exitCode, signalCode } = governor.process;
      if (exitCode !== null || signalCode !== null)
        throw new GovernorExited(
          `Governor exited (${exitCode ?? signalCode}) after a restart over ${n} mappings (${nodeArgs.join(" ")})\n${governor.log().slice(-2000)}`,
          listed,
          (performance.now() - started) / 1000,
          OUT_OF_HEAP.test(governor.log()),
        );
      if (performance.now() - started > 600_000)
        throw new Error(`10 min after a restart: ${listed} of ${n} mappings served\n${governor.log()}`);
      await sleep(250);
    }
  } catch (err) {
    await governor.stop();
    throw err;
  }
}

/**
 * Creates MetricMappings `many-0` … `many-(n-1)` (static values, each its own metric), then
 * starts a fresh Governor and waits until discovery lists them all and every status says
 * Ready. The caller stops the Governor and watch, and deletes the mappings (label {@link MANY}).
 */
export async function loadMany(
  b: Bench,
  n: number,
  nodeArgs: string[] = shippedNodeOptions(),
): Promise<Loaded> {
  const t0 = performance.now();
  await pool(n, 32, (i) =>
    b.client.create(PATH, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: `many-${i}`, labels: { [MANY]: "true" } },
      spec: { metric: `many_${i}`, subject: { resource: "pods" }, source: { static: { value: String(i) } } },
    }),
  );
  const createMs = performance.now() - t0;

  // Watch statuses from here (cheaper than listing 10,000 objects over and over).
  const ready = new Set<string>();
  let updates = 0;
  const track = (m: Mapping) => {
    const name = m.metadata?.name ?? "";
    if (name.startsWith("many-") && isReady(m)) ready.add(name);
  };
  const informer = startInformer<Mapping & { metadata: object }>(
    b.client.kubeConfig,
    PATH,
    (page) => b.client.get<KubernetesListObject<Mapping & { metadata: object }>>(PATH, { ...page }),
    {
      add: track,
      update: (m) => {
        updates++;
        track(m);
      },
    },
  );
  await informer.synced;

  const started = performance.now();
  const governor = await startGovernor(b, nodeArgs).catch((err: unknown) => {
    // Out of heap before it was ready (while listing them): how far it got is nothing Ready.
    const text = String(err instanceof Error ? err.message : err);
    if (!OUT_OF_HEAP.test(text)) throw err;
    throw new GovernorExited(text, ready.size, (performance.now() - started) / 1000, true);
  });
  try {
    const discovery = `https://127.0.0.1:${governor.port}/apis/custom.metrics.k8s.io/v1beta2`;
    let servedMs = NaN;
    let readyMs = NaN;
    let body = "";
    while (Number.isNaN(readyMs)) {
      if (Number.isNaN(servedMs)) {
        const r = await httpsGet(discovery, proxied(b));
        const listed = ((r.json as { resources?: { name: string }[] }).resources ?? []).filter((x) =>
          x.name.startsWith("pods/many_"),
        ).length;
        if (listed === n) {
          servedMs = performance.now() - started;
          body = r.text;
        }
      }
      if (ready.size === n) readyMs = performance.now() - started;
      const { exitCode, signalCode } = governor.process;
      if (exitCode !== null || signalCode !== null)
        throw new GovernorExited(
          `Governor exited (${exitCode ?? signalCode}) with ${ready.size} of ${n} mappings Ready (${nodeArgs.join(" ")})\n${governor.log().slice(-2000)}`,
          ready.size,
          (performance.now() - started) / 1000,
          OUT_OF_HEAP.test(governor.log()),
        );
      if (performance.now() - started > 1_800_000)
        throw new Error(`after 30 min: ${ready.size} of ${n} mappings Ready\n${governor.log()}`);
      await sleep(250);
    }
    return {
      governor,
      createMs,
      servedMs,
      readyMs,
      discovery: { url: discovery, body },
      updates: () => updates,
      stopWatching: () => informer.stop(),
    };
  } catch (err) {
    await informer.stop();
    await governor.stop();
    throw err;
  }
}

export async function scaleRows(b: Bench, n = MAPPINGS): Promise<GrowthPoint> {
  // Before the many mappings exist: the namespace holds the warm mapping and the earlier rows' few.
  const idle = await idleRss(b);
  const loaded = await loadMany(b, n);
  const { governor, createMs, servedMs, readyMs } = loaded;
  const updates = () => loaded.updates();
  const { url: discovery, body } = loaded.discovery;
  let point: GrowthPoint;
  try {
    // Steady state: nothing changes, so nothing should be written; CPU is sampling alone.
    await sleep(10_000);
    const [cpu0, updates0, t0] = [cpuSeconds(governor.process.pid!), updates(), performance.now()];
    const rss = await sampleRss(governor.process.pid!, 31, 2000); // over the 60 s of the CPU window
    const window = (performance.now() - t0) / 1000;
    const steadyCpu = ((cpuSeconds(governor.process.pid!) - cpu0) / window) * 100;
    const steadyWrites = (updates() - updates0) / window;
    const bare = await startBare(b, body);
    try {
      const tls = { tls: b.frontProxy, headers: b.proxyHeaders };
      const m = await pinned(b, [governor.process.pid!, bare.process.pid!], [], () =>
        interleave(
          b,
          { url: discovery, ...tls, pids: [governor.process.pid!] },
          {
            url: `https://127.0.0.1:${bare.port}/`,
            ...tls,
            pids: [bare.process.pid!],
            quiet: [governor.process.pid!],
          },
          1,
        ),
      );
      b.rows.push(
        {
          name: `${n} MetricMappings: loaded → all listed in discovery / all Ready, s`,
          figure: `${fmt(servedMs / 1000)} / ${fmt(readyMs / 1000)}`,
          baseline: `${fmt(createMs / 1000)} (apiserver: create them, 32 in flight)`,
          ratio: `${ratio(servedMs, createMs)} / ${ratio(readyMs, createMs)}`,
          series: {
            "Governor listed": [servedMs / 1000],
            "Governor Ready": [readyMs / 1000],
            baseline: [createMs / 1000],
          },
        },
        {
          name: `${n} MetricMappings, steady (values unchanged): Governor CPU % of a core / status writes per s`,
          figure: `${fmt(steadyCpu)} / ${fmt(steadyWrites)}`,
          baseline: `0 writes/s needed; ${fmt(n / 15, 0)} samples/s (15 s interval)`,
          ratio: "n/a",
          series: { "Governor CPU": [steadyCpu], "Governor writes": [steadyWrites] },
        },
        rssRow(
          `${n} MetricMappings, steady: Governor RSS (shipped NODE_OPTIONS), MB, 31 samples over 60 s`,
          rss,
          idle,
          "same flags, a handful of mappings",
        ),
        ...comparisonRows(
          `${n} MetricMappings: discovery (${Math.round(body.length / 1024)} KiB), 1 conn`,
          m,
          "bare node:https, same bytes",
        ),
      );
      point = {
        mappings: n,
        rssMB: spread(rss).median,
        cpuPercent: steadyCpu,
        readyS: readyMs / 1000,
        servedS: servedMs / 1000,
        discoveryP99Ms: spread(m.a.map((r) => r.p99)).median,
      };
    } finally {
      await bare.stop();
    }
  } finally {
    await loaded.stopWatching();
    await governor.stop();
  }

  // The same 10,000 on plain node (no NODE_OPTIONS), measured the same way.
  const plain = await startGovernor(b, []);
  try {
    const discovery = `https://127.0.0.1:${plain.port}/apis/custom.metrics.k8s.io/v1beta2`;
    for (let listed = 0; listed < n; await sleep(250)) {
      const r = await httpsGet(discovery, proxied(b));
      listed = ((r.json as { resources?: unknown[] }).resources ?? []).length;
    }
    await sleep(20_000);
    const rss = await sampleRss(plain.process.pid!, 31, 2000);
    b.rows.push(
      rssRow(
        `${n} MetricMappings, steady: Governor RSS on plain node (no NODE_OPTIONS), MB, 31 samples over 60 s`,
        rss,
        idle,
        "shipped flags, a handful of mappings",
      ),
    );
  } finally {
    await plain.stop();
  }
  return point;
}
