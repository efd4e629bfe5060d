/**
 * A real Prometheus 3 server for tests (built by hack/prometheus.sh): scrapes the given static targets every
 * second (or `scrapeInterval`), on a free loopback port, with its own temporary data directory. `stop()` kills
 * it; `start()` again brings it back on the same port and data.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { ROOT } from "./cluster.js";
import { eventually } from "./eventually.js";
import { freePort } from "./ports.js";

/** One scrape target with the labels Prometheus attaches to its series. */
export interface Target {
  address: string;
  labels: Record<string, string>;
}

export class TestPrometheus {
  private child?: ChildProcess;
  private readonly dir = mkdtempSync(join(tmpdir(), "governor-prom-"));
  log = "";
  port = 0;

  constructor(
    private readonly targets: Target[],
    private readonly scrapeInterval = "1s",
  ) {}

  /** The running Prometheus process's id (undefined when stopped). */
  get pid(): number | undefined {
    return this.child?.exitCode === null ? this.child.pid : undefined;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const binary = execFileSync("bash", [join(ROOT, "hack/prometheus.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    }).trim();
    this.port ||= await freePort();
    writeFileSync(
      join(this.dir, "prometheus.yml"),
      stringify({
        global: { scrape_interval: this.scrapeInterval, evaluation_interval: this.scrapeInterval },
        scrape_configs: [
          {
            job_name: "pods",
            static_configs: this.targets.map((t) => ({ targets: [t.address], labels: t.labels })),
          },
        ],
      }),
    );
    this.child = spawn(
      binary,
      [
        `--config.file=${join(this.dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(this.dir, "data")}`,
        `--web.listen-address=127.0.0.1:${this.port}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child.stdout!.on("data", (d: Buffer) => (this.log += d.toString()));
    this.child.stderr!.on("data", (d: Buffer) => (this.log += d.toString()));
    await eventually(
      async () => {
        const res = await fetch(`${this.url}/-/ready`);
        if (!res.ok) throw new Error(`prometheus not ready: ${res.status}`);
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "prometheus ready" },
    );
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
}

/**
 * A loopback HTTP target serving `body()` as exposition text, and a Prometheus scraping it
 * with `labels` on its series; `stop()` stops both.
 */
export async function scrapedSeries(
  body: () => string,
  labels: Record<string, string>,
  scrapeInterval?: string,
): Promise<{ prometheus: TestPrometheus; stop: () => Promise<void> }> {
  const target = createServer((_req, res) =>
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(body()),
  );
  await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
  const prometheus = new TestPrometheus(
    [{ address: `127.0.0.1:${(target.address() as { port: number }).port}`, labels }],
    scrapeInterval,
  );
  const stop = async () => {
    await prometheus.stop();
    target.close();
  };
  try {
    await prometheus.start();
  } catch (err) {
    await stop();
    throw err;
  }
  return { prometheus, stop };
}
