/**
 * Governor as users run it, for e2e tests: the manifests of `config/local` applied with
 * kubectl, and `governor run --registration=local` started as its own process with the
 * credentials of the `governor-system/governor` ServiceAccount — so the shipped RBAC is
 * what it runs with.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ROOT, kubectl, type TestCluster } from "./cluster.js";
import { eventually } from "./eventually.js";
import { freePort } from "./ports.js";

const execFileP = promisify(execFile);

export class GovernorProcess {
  private child?: ChildProcess;
  log = "";
  port = 0;
  /** The plain-HTTP port of Governor's own /metrics. */
  metricsPort = 0;

  /**
   * @param opts.sourceAllowCidrs `--source-allow-cidrs` (the local control plane's pods and
   * test endpoints listen on loopback). @default ["127.0.0.0/8"]; `[]` keeps the default policy.
   * @param opts.extraArgs more `governor run` flags.
   * @param opts.takeOver `--take-over-apiservices` (earlier suites' leftovers). @default true
   */
  constructor(
    private readonly cluster: TestCluster,
    private readonly opts: { sourceAllowCidrs?: string[]; extraArgs?: string[]; takeOver?: boolean } = {},
  ) {}

  /** Applies config/local, then starts `governor run` and waits until the aggregator serves it. */
  async start(): Promise<void> {
    await kubectl(this.cluster, "apply", "-k", join(ROOT, "config/local"));
    await kubectl(
      this.cluster,
      "wait",
      "--for=condition=Established",
      "crd/metricmappings.governor.dev",
      "crd/scalableworkloads.governor.dev",
    );
    const kubeconfig = await this.serviceAccountKubeconfig();
    this.port = await freePort();
    this.child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(ROOT, "src/main.ts"),
        "run",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        "governor-system",
        "--registration",
        "local",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        String(this.port),
        "--metrics-bind-address",
        "127.0.0.1",
        "--metrics-port",
        String((this.metricsPort = await freePort())),
        "--shutdown-delay",
        "0",
        ...(this.opts.takeOver === false ? [] : ["--take-over-apiservices"]),
        ...(this.opts.sourceAllowCidrs ?? ["127.0.0.0/8"]).flatMap((c) => ["--source-allow-cidrs", c]),
        ...(this.opts.extraArgs ?? []),
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    const keep = (d: Buffer) => (this.log = (this.log + d.toString()).slice(-200_000));
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    await eventually(() => this.cluster.client.get("/apis/custom.metrics.k8s.io/v1beta2"), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: "Governor served through the aggregator",
    });
  }

  /** The process id, while it runs. */
  get pid(): number | undefined {
    return this.child?.exitCode === null ? this.child.pid : undefined;
  }

  /** The last lines of Governor's log. */
  tail(lines = 40): string {
    return this.log.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /** SIGTERM, then removes what it registered (as `governor uninstall` would). */
  async stop(): Promise<void> {
    await this.terminate();
    await this.uninstall();
  }

  /** SIGTERM, and wait for the process to exit (it releases its Lease on the way out). */
  async terminate(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  }

  /** `governor uninstall` with the admin kubeconfig: its exit code and output. */
  uninstall(): Promise<{ code: number | null; output: string }> {
    const r = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(ROOT, "src/main.ts"),
        "uninstall",
        "--kubeconfig",
        this.cluster.kubeconfigPath,
        "--namespace",
        "governor-system",
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    r.stdout.on("data", (d: Buffer) => (output += d.toString()));
    r.stderr.on("data", (d: Buffer) => (output += d.toString()));
    return new Promise((resolve) => r.once("exit", (code) => resolve({ code, output })));
  }

  /** docs/install.md's `governor kubeconfig` (Run Governor outside the cluster), run from the checkout with the admin kubeconfig. */
  private async serviceAccountKubeconfig(): Promise<string> {
    // The ServiceAccount may take a moment to exist after the manifests are applied.
    const text = await eventually(
      async () =>
        (
          await execFileP(
            process.execPath,
            [
              "--import",
              "tsx",
              join(ROOT, "src/main.ts"),
              "kubeconfig",
              "--kubeconfig",
              this.cluster.kubeconfigPath,
            ],
            { cwd: ROOT },
          )
        ).stdout,
      { timeoutMs: 30_000, what: "a kubeconfig for the governor ServiceAccount" },
    );
    const file = join(mkdtempSync(join(tmpdir(), "governor-sa-")), "kubeconfig");
    writeFileSync(file, text);
    return file;
  }
}
