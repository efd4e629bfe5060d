/**
 * prometheus-adapter, built from its Go module (`hack/peers.sh`), as a local process: the
 * real upstream adapter of the forwarding e2e test and the bench's peer. It serves with
 * the given certificate, reads the cluster with the given kubeconfig and authenticates
 * and authorizes its callers through the cluster (delegated, as in a real install).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { eventually } from "./eventually.js";
import { httpsGet } from "./https-get.js";
import { freePort } from "../util/ports.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Options of {@link startPrometheusAdapter}. */
export interface PrometheusAdapterOptions {
  /** Where its config file goes. */
  dir: string;
  kubeconfig: string;
  /** Serving certificate and key files, and the CA (PEM) that signed them (to probe /healthz). */
  tls: { certFile: string; keyFile: string; ca: string };
  prometheusUrl: string;
  /** Its rules (prometheus-adapter's config file format). */
  config: string;
  /** @default a free port */
  port?: number;
  /** More flags, e.g. `--client-qps=1000`. */
  args?: string[];
}

/** A running prometheus-adapter. */
export interface PrometheusAdapterProcess {
  process: ChildProcess;
  port: number;
  /** e.g. `v0.12.0`. */
  version: string;
  log: () => string;
  /** SIGTERM, and wait for it to exit. */
  stop(): Promise<void>;
}

/** Builds (once, cached) and starts prometheus-adapter; resolves once /healthz answers. */
export async function startPrometheusAdapter(
  opts: PrometheusAdapterOptions,
): Promise<PrometheusAdapterProcess> {
  const bin = execFileSync("bash", [join(ROOT, "hack/peers.sh"), "prometheus-adapter"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  const version = /prometheus-adapter-(v[\d.]+)/.exec(bin)?.[1] ?? "?";
  const config = join(opts.dir, "prometheus-adapter.yaml");
  writeFileSync(config, opts.config);
  const port = opts.port ?? (await freePort());
  const cp = spawn(
    bin,
    [
      `--secure-port=${port}`,
      "--bind-address=127.0.0.1",
      `--tls-cert-file=${opts.tls.certFile}`,
      `--tls-private-key-file=${opts.tls.keyFile}`,
      `--lister-kubeconfig=${opts.kubeconfig}`,
      `--authentication-kubeconfig=${opts.kubeconfig}`,
      `--authorization-kubeconfig=${opts.kubeconfig}`,
      `--prometheus-url=${opts.prometheusUrl}`,
      `--config=${config}`,
      "--metrics-relist-interval=10s",
      ...(opts.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-100_000));
  cp.stdout.on("data", keep);
  cp.stderr.on("data", keep);
  const adapter: PrometheusAdapterProcess = {
    process: cp,
    port,
    version,
    log: () => log,
    stop: () => stopProcess(cp),
  };
  try {
    await eventually(
      async () => {
        if (cp.exitCode !== null) throw new Error(`exited with ${cp.exitCode}`);
        const r = await httpsGet(`https://127.0.0.1:${port}/healthz`, { ca: opts.tls.ca });
        if (r.status !== 200) throw new Error(`/healthz: ${r.status}`);
      },
      { timeoutMs: 60_000, intervalMs: 100, what: "prometheus-adapter healthy" },
    );
  } catch (err) {
    await adapter.stop();
    throw new Error(`${(err as Error).message}\n${log.slice(-3000)}`);
  }
  return adapter;
}

/** SIGTERM (after SIGCONT, in case a measurement left it paused), and wait for it to exit. */
export async function stopProcess(cp: ChildProcess): Promise<void> {
  if (cp.exitCode !== null || cp.signalCode !== null) return;
  const exited = new Promise((r) => cp.once("exit", r));
  cp.kill("SIGCONT");
  cp.kill("SIGTERM");
  await exited;
}
