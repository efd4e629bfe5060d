import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { expect } from "chai";
import { ROOT, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { buildOnce } from "../support/in-cluster.js";
import { governorMetricsUsed } from "../support/monitoring.js";
import { freePort } from "../support/ports.js";

function httpGet(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    })
      .on("error", reject)
      .end();
  });
}

describe("governor run (integration)", function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let child: ChildProcess;
  let output = "";

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed")
      console.error(`--- governor output ---\n${output.slice(-4000)}`);
    child?.kill("SIGKILL");
  });

  it("runs as npx governor from a checkout once it is built (the package's bin, with its run bit)", () => {
    buildOnce();
    const r = spawnSync("npx", ["--no-install", "governor", "--version"], { cwd: ROOT, encoding: "utf8" });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.match(/^\d+\.\d+\.\d+$/);
  });

  it("refuses a --source-max-response-bytes it cannot honour, naming the flag, before it connects anywhere", () => {
    for (const [value, problem] of [
      ["1Gi", "must be between 1Ki and 256Mi"],
      ["10MB", "must be a whole number of bytes, optionally with Ki, Mi or Gi"],
    ]) {
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", "src/main.ts", "run", "--source-max-response-bytes", value!],
        { cwd: ROOT, encoding: "utf8", timeout: 30_000 },
      );
      expect(r.status, r.stderr).to.equal(1);
      expect(r.stderr).to.contain(`--source-max-response-bytes: ${problem}`);
    }
  });

  it("refuses a --prometheus-tenant-header that would carry credentials or frame the request", () => {
    for (const value of ["Authorization", "Host", "Transfer-Encoding", "X Scope"]) {
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", "src/main.ts", "run", "--prometheus-tenant-header", value],
        { cwd: ROOT, encoding: "utf8", timeout: 30_000 },
      );
      expect(r.status, r.stderr).to.equal(1);
      expect(r.stderr).to.match(
        /--prometheus-tenant-header: must (not be Host, Authorization|be a header name)/,
      );
    }
  });

  /** `governor run FLAG VALUE` exits 1 before starting, naming the flag and the problem. */
  const refusesFlag = (flag: string, value: string, problem: string) => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "src/main.ts", "run", flag, value], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(r.status, r.stderr).to.equal(1);
    expect(r.stderr).to.contain(`${flag}: `);
    expect(r.stderr, `${flag} ${value}`).to.contain(problem);
  };

  it("refuses a backend budget that is not a rate or names no backend, naming the flag", () => {
    for (const [flag, value, problem] of [
      ["--source-backend-qps", "-1", "must be a number of queries per second"],
      ["--source-backend-qps", "", "must be a number of queries per second"],
      ["--source-backend-qps", "0.001", "must be 0 (no budget) or from 0.01 to 100000"],
      ["--source-backend-qps-overrides", "prometheus.monitoring=50", "must be origin=qps"],
      ["--source-backend-qps-overrides", "http://prometheus.monitoring:9090", "must be origin=qps"],
      ["--source-backend-qps-overrides", "http://prometheus.monitoring:9090=", "must be origin=qps"],
    ] as const)
      refusesFlag(flag, value, problem);
  });

  it("refuses HPA controller settings for recommendations out of the controller's range, naming the flag", () => {
    for (const [flag, value, problem] of [
      ["--horizontal-pod-autoscaler-sync-period", "0s", "must be between 1s and 3600s"],
      ["--horizontal-pod-autoscaler-sync-period", "15", "must be a duration such as 15s or 5m0s"],
      ["--horizontal-pod-autoscaler-tolerance", "-0.1", "must be from 0 to 10"],
      ["--horizontal-pod-autoscaler-downscale-stabilization", "25h", "must be between 0s and 86400s"],
    ] as const)
      refusesFlag(flag, value, problem);
  });

  it("serves health and Prometheus metrics, then on SIGTERM fails /readyz first and exits cleanly", async () => {
    const [apiPort, metricsPort] = [await freePort(), await freePort()];
    child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "src/main.ts",
        "run",
        "--kubeconfig",
        cluster.kubeconfigPath,
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        String(apiPort),
        "--metrics-bind-address",
        "127.0.0.1",
        "--metrics-port",
        String(metricsPort),
        "--registration",
        "none",
        "--no-leader-elect",
        "--shutdown-delay",
        "2",
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const api = `https://127.0.0.1:${apiPort}`;
    await eventually(async () => expect((await insecureGet(`${api}/readyz`)).status).to.equal(200), {
      timeoutMs: 30_000,
      what: "readyz",
    });
    expect((await insecureGet(`${api}/livez`)).status).to.equal(200);

    const metrics = await httpGet(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(metrics.status).to.equal(200);
    expect(metrics.text).to.contain("governor_apiserver_requests_total");
    expect(metrics.text).to.contain("governor_process_resident_memory_bytes");
    for (const controller of ["metricmapping", "scalableworkload"]) {
      expect(metrics.text).to.match(
        new RegExp(`^governor_workqueue_depth\\{controller="${controller}"\\} \\d+$`, "m"),
      );
      expect(metrics.text).to.match(
        new RegExp(`^governor_reconcile_errors_total\\{controller="${controller}"\\} \\d+$`, "m"),
      );
    }
    // Every metric config/prometheus's alerts and dashboard use is one Governor exports.
    const exported = new Set([...metrics.text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
    for (const name of governorMetricsUsed()) expect(exported, `${name} is exported`).to.include(name);

    const discovery = await insecureGet(`${api}/apis/custom.metrics.k8s.io/v1beta2`);
    expect(discovery.status, "anonymous discovery is refused (no credentials: 401)").to.equal(401);

    child.kill("SIGTERM");
    await eventually(async () => expect((await insecureGet(`${api}/readyz`)).status).to.equal(503), {
      timeoutMs: 1500,
      intervalMs: 50,
      what: "readyz failing during shutdown",
    });
    expect(await exited).to.equal(0);
    expect(output).to.contain("shutting down");
  });

  it("logs JSON lines a log pipeline keeps whole: ISO 8601 times and each key once", () => {
    const lines = output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .slice(0, 50);
    expect(lines.length).to.be.greaterThan(2);
    for (const line of lines) {
      const entry = JSON.parse(line) as { time?: unknown };
      expect(entry.time, line).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      // JSON.parse keeps the last of duplicate keys; count them in the text.
      const keys = [...line.matchAll(/[{,]"([a-zA-Z_]+)":/g)].map((m) => m[1]);
      for (const key of ["component", "controller", "level", "time", "msg"])
        expect(keys.filter((k) => k === key).length, `${key} in ${line}`).to.be.at.most(1);
    }
  });
});

function insecureGet(url: string) {
  return import("node:https").then(
    ({ request: req }) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        req(url, { rejectUnauthorized: false, agent: false }, (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        })
          .on("error", reject)
          .end();
      }),
  );
}
