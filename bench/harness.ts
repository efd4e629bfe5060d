/**
 * What every benchmark of `npm run bench` shares: the local control plane, the TLS
 * material (one bench CA; the front-proxy client certificate the aggregator uses), a
 * Governor process, a bare node:https server as the platform's limit, the load generator
 * and core probes (bench/loadgen.ts), and the rows of the table. Each figure is printed next to a baseline measured in the same run.
 */
import { STAND_IN_NAMESPACE_ANNOTATIONS } from "../tools/devcluster/stand-in-kubelet.js";
import { stopProcess } from "../test/support/peer-process.js";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cpus, tmpdir } from "node:os";
import { parseAllDocuments } from "yaml";
import { KubeConfig } from "@kubernetes/client-node";
import { createCA, issueCertificate } from "../src/certs/certs.js";
import { KubeClient } from "../src/k8s/client.js";
import { type HttpsGetOptions, httpsGet } from "../test/support/https-get.js";
import { freePort } from "../test/support/ports.js";
import { type CoreProbes, type LoadGen, type LoadResult, startCoreProbes, startLoadGen } from "./loadgen.js";
import {
  DISTURBED_CORES,
  MAX_REDOS,
  SLOWED,
  coreSpeeds,
  coresOf,
  outsideCores,
  settle,
  snapshot,
} from "./disturbance.js";
import { loadBound, pairedRatios, showSpread, spread } from "./stats.js";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The namespace every benchmark object lives in (deleted before and after). */
export const NS = "governor-bench";
/** The Services the aggregator dials for Governor and for the Go sample-apiserver. */
export const SERVICES = { governor: "governor-bench", wardle: "wardle-bench" } as const;

/** One line of the table. */
export interface Row {
  name: string;
  figure: string;
  baseline: string;
  ratio: string;
  /** The raw figures behind the row (per round or per sample), by name, for the JSON results. */
  series?: Record<string, number[]>;
}

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
export const ratio = (figure: number, baseline: number) =>
  baseline > 0 && Number.isFinite(figure) ? fmt(figure / baseline, 2) : "n/a";
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` in flight. */
export async function pool(n: number, concurrency: number, fn: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** The shared state of one `npm run bench`. */
export interface Bench {
  kubeconfig: string;
  env: NodeJS.ProcessEnv;
  client: KubeClient;
  apiserver: string;
  etcd: string;
  /** Directory for files of this run (certificates, bodies). */
  dir: string;
  /** The bench CA (signs the serving certificate of Governor, the bare server, the Go peer). */
  ca: { cert: string; key: string };
  /** Serving certificate + key files, valid for localhost and both Services' DNS names. */
  servingCert: { certFile: string; keyFile: string; pem: string };
  /** The front-proxy client certificate: what kube-apiserver presents to aggregated servers. */
  frontProxy: { cert: string; key: string };
  /** The headers the aggregator would add for an admin. */
  proxyHeaders: Record<string, string>;
  /** The admin's client certificate for requests to kube-apiserver. */
  admin: { cert: string; key: string; ca: string };
  /** The load generator every request row uses. */
  load: LoadGen;
  /** One probe per core, timed before and after every round; `history[i]` holds core i's probes so far. */
  probes: CoreProbes & { history: number[][] };
  rounds: Rounds;
  rows: Row[];
  /**
   * Rounds measured, redone (`slowed` of them for a slow core) and kept disturbed, and rows
   * the machine never settled for (bench/disturbance.ts).
   */
  disturbance: { rounds: number; redone: number; slowed: number; disturbed: number; unsettled: number };
}

/** Starts (or reuses) the control plane and makes a fresh benchmark namespace. */
export async function setUp(rounds: Rounds): Promise<Bench> {
  const up = execFileSync("bash", [join(ROOT, "hack/cluster.sh"), "up"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  const kubeconfig = /export KUBECONFIG=(\S+)/.exec(up)![1]!;
  const env = { ...process.env, KUBECONFIG: kubeconfig };
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const client = new KubeClient(kc);
  execFileSync("kubectl", ["apply", "-k", join(ROOT, "crds")], { env, stdio: "ignore" });
  execFileSync("kubectl", ["wait", "--for=condition=Established", "crd/metricmappings.governor.dev"], {
    env,
    stdio: "ignore",
  });
  // A run that was killed leaves its APIServices behind, pointing into the namespace: the
  // namespace controller cannot finish deleting a namespace while an aggregated API is
  // unavailable (NamespaceDeletionDiscoveryFailure), so they go first.
  const services = await client.get<{
    items: { metadata: { name: string }; spec?: { service?: { namespace?: string } } }[];
  }>("/apis/apiregistration.k8s.io/v1/apiservices");
  for (const a of services.items)
    if (a.spec?.service?.namespace === NS)
      await client.delete(`/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`).catch(() => {});
  // The last run's namespace may still be going (the namespace controller deletes 10,000
  // mappings' Events in one slow call, and retries it after a restart of the cluster).
  if (await client.getOrUndefined(`/api/v1/namespaces/${NS}`))
    console.error(`[bench] deleting namespace ${NS} of an earlier run (up to 10 minutes)`);
  await deleteNamespace(client, 600_000);
  const left = await client.getOrUndefined<{
    status?: { conditions?: { status: string; message: string }[] };
  }>(`/api/v1/namespaces/${NS}`);
  if (left)
    throw new Error(
      `namespace ${NS} of an earlier run is still being deleted after 10 minutes: ${
        left.status?.conditions?.find((c) => c.status === "True")?.message ?? "no condition says why"
      }`,
    );
  // Its pods are objects only: keep them off the node agent's Nodes (they would really run).
  await client.create("/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: NS, annotations: STAND_IN_NAMESPACE_ANNOTATIONS },
  });

  const dir = mkdtempSync(join(tmpdir(), "governor-bench-"));
  const ca = await createCA("governor-bench");
  const serviceNames = Object.values(SERVICES).flatMap((s) => [
    `${s}.${NS}.svc`,
    `${s}.${NS}.svc.cluster.local`,
  ]);
  const leaf = await issueCertificate(ca, {
    commonName: "localhost",
    dnsNames: ["localhost", ...serviceNames],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  const certFile = join(dir, "tls.crt");
  const keyFile = join(dir, "tls.key");
  writeFileSync(certFile, leaf.cert);
  writeFileSync(keyFile, leaf.key);
  const pki = join(kubeconfig, "..", "pki");
  const read = (f: string) => readFileSync(join(pki, f), "utf8");
  return {
    kubeconfig,
    env,
    client,
    apiserver: kc.getCurrentCluster()!.server,
    etcd: `http://127.0.0.1:${process.env.GOVERNOR_ETCD_PORT ?? "23790"}`,
    dir,
    ca,
    servingCert: { certFile, keyFile, pem: leaf.cert },
    frontProxy: { cert: read("front-proxy-client.crt"), key: read("front-proxy-client.key") },
    proxyHeaders: { "X-Remote-User": "system:admin", "X-Remote-Group": "system:masters" },
    admin: { cert: read("admin.crt"), key: read("admin.key"), ca: read("ca.crt") },
    load: startLoadGen(),
    probes: await calibratedProbes(),
    rounds,
    rows: [],
    disturbance: { rounds: 0, redone: 0, slowed: 0, disturbed: 0, unsettled: 0 },
  };
}

/** Core probes with ten probes of each core behind them, so a round's speed has a usual to compare with. */
async function calibratedProbes(): Promise<Bench["probes"]> {
  const probes = startCoreProbes(cpus().map((_, i) => String(i)));
  const history: number[][] = cpus().map(() => []);
  for (let i = 0; i < 10; i++) {
    if (i) await sleep(200);
    (await probes.speeds()).forEach((s, core) => history[core]!.push(s));
  }
  return { ...probes, history };
}

/** The slowest core's speed now relative to its usual (1 = usual), the probes kept in the history. */
async function slowestCore(b: Bench): Promise<number> {
  const now = await b.probes.speeds();
  const relative = coreSpeeds(b.probes.history, now);
  now.forEach((s, core) => b.probes.history[core]!.push(s));
  return Math.min(...relative);
}

export async function deleteNamespace(client: KubeClient, timeoutMs = 120_000): Promise<void> {
  await client.delete(`/api/v1/namespaces/${NS}`).catch(() => {});
  const until = Date.now() + timeoutMs;
  while (Date.now() < until && (await client.getOrUndefined(`/api/v1/namespaces/${NS}`))) await sleep(500);
}

/** GET options for a request straight to a server of this run, as the aggregator would send it. */
export function proxied(b: Bench): HttpsGetOptions {
  return { cert: b.frontProxy.cert, key: b.frontProxy.key, ca: b.ca.cert, headers: b.proxyHeaders };
}

/** A child process of this run; `stop()` ends it and waits. */
export interface Child {
  process: ChildProcess;
  port: number;
  log: () => string;
  stop(): Promise<void>;
}

/**
 * Every server this run started and has not seen exit: killed when the run ends however it
 * ends (an error, Ctrl-C, a SIGTERM), so no Governor outlives its run and keeps writing to
 * the cluster of the next one.
 */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const cp of running) cp.kill("SIGKILL");
});
for (const [signal, code] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const)
  process.once(signal, () => process.exit(code));

/** Keeps the tail of a child process's output and stops it on demand. */
export function child(cp: ChildProcess, port: number): Child {
  running.add(cp);
  cp.once("exit", () => running.delete(cp));
  let log = "";
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-100_000));
  cp.stdout?.on("data", keep);
  cp.stderr?.on("data", keep);
  return {
    process: cp,
    port,
    log: () => log,
    stop: () => stopProcess(cp),
  };
}

/** Polls `url` until it answers 200 (or `what` fails after `timeoutMs`). */
export async function waitFor200(url: string, opts: HttpsGetOptions, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await httpsGet(url, opts).catch(() => undefined);
    if (r?.status === 200) return r;
    if (Date.now() > deadline) throw new Error(`${what}: no 200 from ${url} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** The V8 flags the shipped Deployment sets (`NODE_OPTIONS` in config/manager/deployment.yaml). */
export function shippedNodeOptions(): string[] {
  for (const doc of parseAllDocuments(readFileSync(join(ROOT, "config/manager/deployment.yaml"), "utf8"))) {
    const d = doc.toJS() as {
      kind?: string;
      spec?: { template?: { spec?: { containers?: { env?: { name: string; value?: string }[] }[] } } };
    };
    if (d.kind !== "Deployment") continue;
    const env = d.spec?.template?.spec?.containers?.[0]?.env ?? [];
    return (env.find((e) => e.name === "NODE_OPTIONS")?.value ?? "").split(/\s+/).filter(Boolean);
  }
  return [];
}

/**
 * `governor run` as its own process, compiled (`dist/`, as the image runs it; `npm run
 * bench` builds first), with the bench's serving certificate and the admin
 * kubeconfig (`--registration none`: the bench registers it like the Go peer). `nodeArgs`
 * go to node: by default the V8 flags of the shipped Deployment (an empty list runs plain
 * node; add e.g. `--cpu-prof` to profile).
 */
export async function startGovernor(
  b: Bench,
  nodeArgs: string[] = shippedNodeOptions(),
  extraArgs: string[] = [],
): Promise<Child & { metricsPort: number }> {
  const port = await freePort();
  const metricsPort = await freePort();
  const cp = spawn(
    process.execPath,
    [
      ...nodeArgs,
      join(ROOT, "dist/main.js"),
      "run",
      "--kubeconfig",
      b.kubeconfig,
      "--registration",
      "none",
      "--no-leader-elect",
      "--tls-cert-file",
      b.servingCert.certFile,
      "--tls-private-key-file",
      b.servingCert.keyFile,
      "--bind-address",
      "127.0.0.1",
      "--secure-port",
      String(port),
      "--metrics-port",
      String(metricsPort),
      "--metrics-bind-address",
      "127.0.0.1",
      // the bench's Prometheus and endpoints listen on loopback
      "--source-allow-cidrs",
      "127.0.0.0/8",
      "--log-level",
      "warn",
      "--shutdown-delay",
      "0",
      ...extraArgs,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  const g = { ...child(cp, port), metricsPort };
  await waitFor200(`https://127.0.0.1:${port}/readyz`, { ca: b.ca.cert }, "Governor ready").catch(
    async (err: unknown) => {
      await g.stop();
      throw new Error(`${(err as Error).message}\n${g.log().slice(-4000)}`);
    },
  );
  return g;
}

/** A bare node:https server answering every request with the bytes of `body` (the platform's limit). */
export async function startBare(b: Bench, body: string): Promise<Child> {
  const bodyFile = join(b.dir, `body-${Date.now()}.json`);
  writeFileSync(bodyFile, body);
  const cp = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "bench/bare-server.ts"),
      b.servingCert.certFile,
      b.servingCert.keyFile,
      bodyFile,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let buf = "";
    cp.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      if (buf.includes("\n")) resolve(Number(buf.split("\n")[0]));
    });
    cp.once("exit", (code) => reject(new Error(`bare server exited with ${code}`)));
  });
  return child(cp, port);
}

/** Resident set size of a process, in MB. */
export function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU time (user + system) a process has used, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
}

/**
 * Where pinned rows run (ADR 0005): the load generator on one core, the server under
 * test (and its bare baseline) on another, so neither steals the other's core. Undefined
 * on a single-core machine, where nothing is pinned.
 */
export const CORES = cpus().length >= 2 ? { load: "0", server: "1" } : undefined;

/** Restricts every thread of `pid` to `cores` (a taskset list; all cores when undefined). */
export function pin(pid: number, cores?: string): void {
  if (!CORES) return;
  execFileSync("taskset", ["-a", "-p", "-c", cores ?? `0-${cpus().length - 1}`, String(pid)], {
    stdio: "ignore",
  });
}

/** The local control plane's processes (etcd, kube-apiserver, …) from `hack/cluster.sh`'s pid files, or the named ones. */
export function controlPlanePids(b: Bench, names?: string[]): number[] {
  const dir = join(b.kubeconfig, "..", "pids");
  return readdirSync(dir)
    .filter((f) => !names || names.includes(f.replace(/\.pid$/, "")))
    .map((f) => Number(readFileSync(join(dir, f), "utf8").trim()))
    .filter((pid) => pid > 0 && existsSync(`/proc/${pid}`));
}

/**
 * Runs `fn` with `servers` (pids: the server under test and its baseline) alone on the
 * server core, and everything else this run started — the load generator, this process,
 * the control plane, any `others` (e.g. Prometheus) — on the load core; then lets them all
 * use every core again.
 */
export async function pinned<T>(
  b: Bench,
  servers: number[],
  others: number[],
  fn: () => Promise<T>,
): Promise<T> {
  const rest = [b.load.pid, process.pid, ...controlPlanePids(b), ...others];
  for (const pid of rest) pin(pid, CORES?.load);
  for (const pid of servers) pin(pid, CORES?.server);
  try {
    return await fn();
  } finally {
    for (const pid of [...rest, ...servers]) pin(pid);
  }
}

/** One side of an interleaved comparison. */
export interface Contender {
  url: string;
  tls: { cert: string; key: string };
  headers?: Record<string, string>;
  /** The processes that answer this side's requests: their CPU is the work measured, not a disturbance. */
  pids: number[];
  /** Run (untimed) before each of this side's rounds, e.g. to point the aggregator at it. */
  prepare?: () => Promise<void>;
  /**
   * Processes paused (SIGSTOP) while this side is measured: a baseline sharing the server
   * core with Governor measures the platform on a quiet core, not the platform minus
   * Governor's background sampling (ADR 0005).
   */
  quiet?: number[];
  /**
   * Other load started with each of this side's rounds and awaited after it (e.g. another
   * user's flood while the measured requests are a victim's), given the round's seconds.
   * Its process belongs in the comparison's `background`.
   */
  beside?: (seconds: number) => Promise<LoadResult>;
}

/** How many rounds and how long each: the whole run's settings (`--quick` shortens them). */
export interface Rounds {
  rounds: number;
  seconds: number;
  warmupSeconds: number;
}

/** What one interleaved comparison measured: each side per round, and the outside work in each of those rounds. */
export interface Interleaved {
  a: LoadResult[];
  b: LoadResult[];
  /** Outside work (cores) during each kept round, per side. */
  outside: { a: number[]; b: number[] };
  /**
   * CPU (cores) of the side's server and of the load generator during each kept round:
   * a server well below 1 while the load generator is near 1 was limited by the load, not
   * by itself.
   */
  cpu: { a: { server: number[]; load: number[] }; b: { server: number[]; load: number[] } };
  /** The slowest core's speed relative to its usual (1 = usual) during each kept round, per side. */
  speed: { a: number[]; b: number[] };
  /** What each side's `beside` load measured in each kept round (empty without one). */
  beside: { a: LoadResult[]; b: LoadResult[] };
  /** Rounds kept although still disturbed after `MAX_REDOS` more tries. */
  disturbed: number;
  /** When the rounds came from several Governor processes: each one's median ratio (req/s). */
  processes?: number[];
}

/**
 * One comparison measured over several Governor processes (each an `Interleaved` of its
 * own rounds), as one: every round kept, and each process's median ratio noted. Two
 * Governor processes can differ by more than the rounds inside one do (ADR 0005).
 */
export function combine(parts: Interleaved[]): Interleaved {
  const cat = <T>(f: (m: Interleaved) => T[]) => parts.flatMap(f);
  return {
    a: cat((m) => m.a),
    b: cat((m) => m.b),
    outside: { a: cat((m) => m.outside.a), b: cat((m) => m.outside.b) },
    cpu: {
      a: { server: cat((m) => m.cpu.a.server), load: cat((m) => m.cpu.a.load) },
      b: { server: cat((m) => m.cpu.b.server), load: cat((m) => m.cpu.b.load) },
    },
    speed: { a: cat((m) => m.speed.a), b: cat((m) => m.speed.b) },
    beside: { a: cat((m) => m.beside.a), b: cat((m) => m.beside.b) },
    disturbed: parts.reduce((n, m) => n + m.disturbed, 0),
    processes: parts.map(
      (m) =>
        spread(
          pairedRatios(
            m.a.map((x) => x.rps),
            m.b.map((x) => x.rps),
          ),
        ).median,
    ),
  };
}

/**
 * Measures `a` and `b` in turns — a discarded warm-up of each, then `rounds` rounds (the
 * run's setting unless given),
 * A B, B A, A B … (alternating who goes first, so a drift in the machine lands on both)
 * — and returns each side's result per round. First the machine settles; a round with
 * more than `DISTURBED_CORES` of work outside the row (anything but the load generator,
 * this process, the side's `pids` and `background`), or with a core probed below
 * `SLOWED` of its usual speed just before or after it, is measured again, at most
 * `MAX_REDOS` times (bench/disturbance.ts). Redone and still-disturbed rounds are
 * counted on `b.disturbance`.
 */
export async function interleave(
  b: Bench,
  a: Contender,
  base: Contender,
  connections: number,
  background: number[] = [],
  rounds = b.rounds.rounds,
): Promise<Interleaved> {
  const { seconds, warmupSeconds } = b.rounds;
  const expected = (c: Contender) => [b.load.pid, process.pid, ...c.pids, ...background];
  type Round = {
    result: LoadResult;
    outside: number;
    server: number;
    load: number;
    speed: number;
    beside?: LoadResult;
  };
  const run = async (c: Contender, s: number): Promise<Round> => {
    const { quiet = [], pids: _pids, prepare, beside, ...target } = c;
    await prepare?.();
    const speedBefore = await slowestCore(b);
    for (const pid of quiet) process.kill(pid, "SIGSTOP");
    const before = snapshot(expected(c));
    let round: Omit<Round, "speed">;
    try {
      const alongside = beside?.(s);
      const result = await b.load.run({ ...target, connections, seconds: s });
      const besideResult = await alongside;
      const after = snapshot(expected(c));
      round = {
        result,
        ...(besideResult ? { beside: besideResult } : {}),
        outside: outsideCores(before, after),
        server: coresOf(before, after, c.pids),
        load: coresOf(before, after, [b.load.pid]),
      };
    } finally {
      for (const pid of quiet) process.kill(pid, "SIGCONT");
    }
    return { ...round, speed: Math.min(speedBefore, await slowestCore(b)) };
  };
  const disturbed = (r: Round) => r.outside > DISTURBED_CORES || r.speed < SLOWED;
  const settled = await settle([...new Set([...expected(a), ...base.pids])]);
  if (!settled.settled) b.disturbance.unsettled++;
  await run(a, warmupSeconds);
  await run(base, warmupSeconds);
  const out: Interleaved = {
    a: [],
    b: [],
    outside: { a: [], b: [] },
    cpu: { a: { server: [], load: [] }, b: { server: [], load: [] } },
    speed: { a: [], b: [] },
    beside: { a: [], b: [] },
    disturbed: 0,
  };
  for (let i = 0; i < rounds; i++) {
    for (const side of i % 2 === 0 ? (["a", "b"] as const) : (["b", "a"] as const)) {
      let round = await run(side === "a" ? a : base, seconds);
      for (let redo = 0; disturbed(round) && redo < MAX_REDOS; redo++) {
        b.disturbance.redone++;
        if (round.speed < SLOWED) b.disturbance.slowed++;
        round = await run(side === "a" ? a : base, seconds);
      }
      if (disturbed(round)) out.disturbed++;
      out[side].push(round.result);
      out.outside[side].push(round.outside);
      out.cpu[side].server.push(round.server);
      out.cpu[side].load.push(round.load);
      out.speed[side].push(round.speed);
      if (round.beside) out.beside[side].push(round.beside);
    }
  }
  b.disturbance.rounds += 2 * rounds;
  b.disturbance.disturbed += out.disturbed;
  return out;
}

/** What a row's ratio cell adds about its rounds: disturbed rounds kept, a side held by the load generator. */
function notes(m: Interleaved): string {
  const out: string[] = [];
  if (m.disturbed) out.push(`${m.disturbed} disturbed round${m.disturbed > 1 ? "s" : ""} kept`);
  if (m.processes)
    out.push(`${m.processes.length} Governor processes: ${m.processes.map((r) => r.toFixed(2)).join(", ")}`);
  for (const [side, label] of [
    ["b", "baseline"],
    ["a", "Governor"],
  ] as const)
    if (loadBound(m.cpu[side].server, m.cpu[side].load))
      out.push(
        `${label} held by the load generator: server at ${spread(m.cpu[side].server).median.toFixed(2)} of a core`,
      );
  return out.length ? ` (${out.join("; ")})` : "";
}

/**
 * The two rows of an interleaved comparison: requests/s and p50 / p99 latency, each side
 * as the median across rounds with its min–max, the ratio as the median of the
 * round-by-round ratios with theirs. The raw figures go with them into the JSON results.
 */
export function comparisonRows(name: string, m: Interleaved, baselineName: string): Row[] {
  const col = (xs: LoadResult[], k: "rps" | "p50" | "p99") => xs.map((x) => x[k]);
  const [rpsA, rpsB, p50A, p50B, p99A, p99B] = [
    col(m.a, "rps"),
    col(m.b, "rps"),
    col(m.a, "p50"),
    col(m.b, "p50"),
    col(m.a, "p99"),
    col(m.b, "p99"),
  ];
  const [rpsRatio, p50Ratio, p99Ratio] = [
    pairedRatios(rpsA, rpsB),
    pairedRatios(p50A, p50B),
    pairedRatios(p99A, p99B),
  ];
  return [
    {
      name: `${name}: req/s`,
      figure: showSpread(rpsA),
      baseline: `${showSpread(rpsB)} (${baselineName})`,
      ratio: `${showSpread(rpsRatio, 2)}${notes(m)}`,
      series: {
        Governor: rpsA,
        baseline: rpsB,
        ratio: rpsRatio,
        "outside cores, Governor": m.outside.a,
        "outside cores, baseline": m.outside.b,
        "server cores, Governor": m.cpu.a.server,
        "server cores, baseline": m.cpu.b.server,
        "load generator cores, Governor": m.cpu.a.load,
        "load generator cores, baseline": m.cpu.b.load,
        "slowest core speed, Governor": m.speed.a,
        "slowest core speed, baseline": m.speed.b,
        ...(m.processes ? { "ratio per Governor process": m.processes } : {}),
      },
    },
    {
      name: `${name}: p50 / p99 ms`,
      figure: `${showSpread(p50A)} / ${showSpread(p99A)}`,
      baseline: `${showSpread(p50B)} / ${showSpread(p99B)}`,
      ratio: `${showSpread(p50Ratio, 2)} / ${showSpread(p99Ratio, 2)}`,
      series: {
        "Governor p50": p50A,
        "Governor p99": p99A,
        "baseline p50": p50B,
        "baseline p99": p99B,
        "ratio p50": p50Ratio,
        "ratio p99": p99Ratio,
      },
    },
  ];
}

/** Samples `pid`'s RSS (MB) `n` times, `everyMs` apart. */
export async function sampleRss(pid: number, n: number, everyMs: number): Promise<number[]> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i) await sleep(everyMs);
    xs.push(rssMB(pid));
  }
  return xs;
}

/** Prometheus's count of instant queries answered so far (`/api/v1/query`, any code). */
export async function prometheusQueries(prometheusUrl: string): Promise<number> {
  const text = await (await fetch(`${prometheusUrl}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(
    /^prometheus_http_requests_total\{[^}]*handler="\/api\/v1\/query"[^}]*\} (\S+)$/gm,
  ))
    n += Number(m[1]);
  return n;
}
