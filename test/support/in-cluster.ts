/**
 * Helpers for the in-cluster suite: Governor installed with `kubectl apply -k
 * config/default` and run by the node agent (tools/devcluster/node-agent) as real pods on
 * the pod network. A steady load of metric requests through the aggregator, a sampler of
 * which replicas act as leader, and the agent's "lose a Node" control.
 */
import { spawnSync } from "node:child_process";
import { request } from "node:http";
import { join } from "node:path";
import { KubeClient } from "../../src/k8s/client.js";
import { ROOT, type TestCluster } from "./cluster.js";

/** The node agent's Nodes (hack/cluster.sh). */
export const AGENT_NODES = ["governor-node-a", "governor-node-b"] as const;

let built = false;
/** `npm run build` once per test run: the node agent's `governor` image runs `dist/main.js`. */
export function buildOnce(): void {
  if (built) return;
  const r = spawnSync("npm", ["run", "build"], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`npm run build failed:\n${r.stdout}${r.stderr}`);
  built = true;
}

/** Throws a clear error unless the node agent's Nodes are registered and Ready. */
export async function requireNodeAgent(cluster: TestCluster): Promise<void> {
  for (const name of AGENT_NODES) {
    const node = await cluster.client.getOrUndefined<{
      status?: { conditions?: { type: string; status: string }[] };
    }>(`/api/v1/nodes/${name}`);
    const ready = node?.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    if (!ready)
      throw new Error(
        `Node ${name} is ${node ? "not Ready" : "missing"}: the in-cluster suite needs hack/cluster.sh's node agent, which runs only as root (see docs/development.md: Pods on the local control plane)`,
      );
  }
}

/**
 * Asks the node agent to `lose` a Node (its pods die at once and are cut off; it goes
 * NotReady) or to let it `rejoin` (as after a reboot).
 */
export function nodeControl(cluster: TestCluster, node: string, action: "lose" | "rejoin"): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: join(cluster.dir, "node-agent/agent.sock"),
        path: `/nodes/${node}/${action}`,
        method: "POST",
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(body))));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** What a {@link MetricLoad} saw. */
export interface LoadReport {
  sent: number;
  failed: number;
  /** Failures by reason (status code or error). */
  reasons: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** When each failed request was sent (epoch ms). */
  failedSentAt: number[];
}

/**
 * A steady `ratePerSecond` of GETs of `path` through the apiserver (and so the aggregator),
 * each a failure unless answered within 10 s of being sent; a non-2xx answer or an error is a failure. They are sent as the
 * cluster's admin, or with `client`'s credentials (e.g. the HPA controller's ServiceAccount).
 */
export class MetricLoad {
  private timer?: NodeJS.Timeout;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly latencies: number[] = [];
  private readonly reasons: Record<string, number> = {};
  private readonly failedSentAt: number[] = [];
  private sent = 0;
  private failed = 0;

  constructor(
    private readonly cluster: TestCluster,
    private readonly path: string,
    private readonly ratePerSecond = 50,
    client?: Pick<TestCluster["client"], "request">,
  ) {
    // As many connections as requests can be in flight (the HPA controller's client speaks
    // HTTP/2, so one hung request never holds up the next): a request never waits for one.
    this.own = client
      ? undefined
      : new KubeClient(cluster.client.kubeConfig, { connections: ratePerSecond * 10 + 1 });
    this.client = client ?? this.own!;
  }

  private readonly own?: KubeClient;
  private readonly client: Pick<TestCluster["client"], "request">;

  start(): void {
    const every = 1000 / this.ratePerSecond;
    const started = Date.now();
    const tick = () => {
      const due = Math.floor((Date.now() - started) / every) + 1;
      while (this.sent < due) this.fire();
      this.timer = setTimeout(tick, every);
    };
    tick();
  }

  private fire(): void {
    this.sent++;
    const t0 = performance.now();
    const sentAt = Date.now();
    // 10 s from when it was sent, not from when the client's pool had a connection for it: a
    // request queued behind hung ones is as late for its caller as a hung one.
    let deadline: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      deadline = setTimeout(() => reject(new Error("timeout: no answer within 10 s of being sent")), 10_000);
    });
    const p = Promise.race([this.client.request("GET", this.path, { timeoutMs: 11_000 }), late])
      .then(
        () => {
          this.latencies.push(performance.now() - t0);
        },
        (err: unknown) => {
          this.failed++;
          this.failedSentAt.push(sentAt);
          const code = (err as { statusCode?: number }).statusCode;
          const reason = code ? `HTTP ${code}` : ((err as Error).message ?? String(err)).slice(0, 80);
          this.reasons[reason] = (this.reasons[reason] ?? 0) + 1;
        },
      )
      .finally(() => {
        clearTimeout(deadline);
        this.inFlight.delete(p);
      });
    this.inFlight.add(p);
  }

  /** Stops sending, waits for what is in flight, and reports. */
  async stop(): Promise<LoadReport> {
    clearTimeout(this.timer);
    await Promise.all([...this.inFlight]);
    await this.own?.close();
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q: number) =>
      Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
    return {
      sent: this.sent,
      failed: this.failed,
      reasons: this.reasons,
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      maxMs: Math.round(sorted[sorted.length - 1] ?? 0),
      failedSentAt: this.failedSentAt,
    };
  }
}

/** One replica's view, read from its own `/metrics` (`governor_leader`). */
async function leaderGauge(podIP: string, port: number): Promise<number | undefined> {
  try {
    const res = await fetch(`http://${podIP}:${port}/metrics`, { signal: AbortSignal.timeout(500) });
    const m = /^governor_leader (\d+)/m.exec(await res.text());
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined; // not answering: not acting
  }
}

/**
 * Every `everyMs`, asks each Governor pod whether it acts as leader. Records the largest
 * number of simultaneous leaders and when a pod other than `excluded` first led.
 */
export class LeaderSampler {
  private timer?: NodeJS.Timeout;
  samples = 0;
  maxLeaders = 0;
  /** Local time at which a replica other than the excluded one first said it leads. */
  newLeaderAt?: number;
  /** Which pod that was. */
  newLeader?: string;

  constructor(
    private readonly cluster: TestCluster,
    private readonly namespace: string,
    private readonly excluded: string,
    private readonly everyMs = 100,
    private readonly metricsPort = 8080,
  ) {}

  start(): void {
    const tick = async () => {
      const pods = await this.cluster.client.get<{
        items: { metadata: { name: string }; status?: { podIP?: string } }[];
      }>(`/api/v1/namespaces/${this.namespace}/pods`, { labelSelector: "app.kubernetes.io/name=governor" });
      const views = await Promise.all(
        pods.items
          .filter((p) => p.status?.podIP)
          .map(async (p) => ({
            name: p.metadata.name,
            gauge: await leaderGauge(p.status!.podIP!, this.metricsPort),
          })),
      );
      const leaders = views.filter((v) => v.gauge === 1);
      this.samples++;
      this.maxLeaders = Math.max(this.maxLeaders, leaders.length);
      const other = leaders.find((v) => v.name !== this.excluded);
      if (other && this.newLeaderAt === undefined) {
        this.newLeaderAt = Date.now();
        this.newLeader = other.name;
      }
    };
    const loop = () => {
      const t0 = Date.now();
      void tick()
        .catch(() => undefined)
        .finally(() => {
          if (this.timer !== undefined)
            this.timer = setTimeout(loop, Math.max(0, this.everyMs - (Date.now() - t0)));
        });
    };
    this.timer = setTimeout(loop, 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
