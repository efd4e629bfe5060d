/**
 * The local control plane for integration and e2e suites. `useCluster()` starts it once
 * per test run (building the binaries on a fresh machine) through `hack/cluster.sh up`,
 * and hands out a client; the root hooks in `mocha-hooks.ts` print the components' log
 * tails when a test fails and stop the control plane at the end if this run started it.
 */
import { execFile, spawn, spawnSync } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeClient } from "../../src/k8s/client.js";
import { STAND_IN_NAMESPACE_ANNOTATIONS } from "../../tools/devcluster/stand-in-kubelet.js";
import { destinationPolicy } from "../../src/sources/destination-policy.js";
import { eventually } from "./eventually.js";

/**
 * The local control plane has no pod network: pods, Prometheus and test endpoints listen
 * on loopback, which Governor's sources refuse by default. Tests opt in, as an admin of
 * such a cluster would (`--source-allow-cidrs=127.0.0.0/8`).
 */
export const LOOPBACK_SOURCES = destinationPolicy({ allow: ["127.0.0.0/8"] });

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLUSTER_SH = `${ROOT}hack/cluster.sh`;

/** A running control plane. */
export interface TestCluster {
  kubeconfigPath: string;
  /** The control plane's state directory (pki/, logs/ …). */
  dir: string;
  client: KubeClient;
}

let starting: Promise<TestCluster> | undefined;
/** Whether this test run brought the control plane up (and so should take it down). */
export const state = { startedByUs: false, used: false };

function run(
  cmd: string,
  args: string[],
  opts: { stderr?: "inherit" | "pipe"; env?: NodeJS.ProcessEnv } = {},
) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", opts.stderr ?? "pipe"],
      env: opts.env ?? process.env,
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Starts the control plane if needed (idempotent) and returns a client for it. */
export function useCluster(): Promise<TestCluster> {
  state.used = true;
  starting ??= (async () => {
    const status = await run("bash", [CLUSTER_SH, "status"]);
    if (status.code !== 0) state.startedByUs = true;
    // The first run on a fresh machine builds Kubernetes: let its progress show.
    const up = await run("bash", [CLUSTER_SH, "up"], { stderr: "inherit" });
    if (up.code !== 0) throw new Error(`hack/cluster.sh up failed (exit ${up.code})`);
    const match = /export KUBECONFIG=(\S+)/.exec(up.stdout);
    if (!match?.[1]) throw new Error(`hack/cluster.sh up printed no KUBECONFIG: ${up.stdout}`);
    // kubectl of the same release as the control plane, for every kubectl a test runs.
    const bin = /export PATH=([^:\s]+):/.exec(up.stdout)?.[1];
    if (bin && !process.env.PATH?.startsWith(`${bin}:`))
      process.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
    const kc = new KubeConfig();
    kc.loadFromFile(match[1]);
    return { kubeconfigPath: match[1], dir: dirname(match[1]), client: new KubeClient(kc) };
  })();
  return starting;
}

/** Stops the control plane if this run started it and GOVERNOR_KEEP_CLUSTER is not set. */
export async function stopClusterIfOurs(): Promise<void> {
  if (!state.startedByUs || process.env.GOVERNOR_KEEP_CLUSTER) return;
  await run("bash", [CLUSTER_SH, "down"]);
}

/** The tail of every component's log, for a failed test's output. */
export async function clusterLogTails(lines = 25): Promise<string> {
  const out = await run("bash", [CLUSTER_SH, "logs"], {
    env: { ...process.env, LINES_PER_LOG: String(lines) },
  });
  return out.stdout;
}

/** Runs kubectl against the test cluster; rejects with its stderr on a non-zero exit. */
export async function kubectl(cluster: TestCluster, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "kubectl",
      args,
      { env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath }, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`kubectl ${args.join(" ")}: ${stderr || err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/**
 * Creates a namespace with a unique name; returns it and a function that deletes it. Its
 * pods go to the stand-in kubelet's Node (imaginary, loopback IPs) unless `podNetwork` is
 * set: then they are scheduled onto the node agent's Nodes and really run.
 */
export async function freshNamespace(
  cluster: TestCluster,
  prefix: string,
  opts: { podNetwork?: boolean } = {},
) {
  const name = `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  await cluster.client.create("/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name, ...(opts.podNetwork ? {} : { annotations: STAND_IN_NAMESPACE_ANNOTATIONS }) },
  });
  return {
    name,
    delete: () => cluster.client.delete(`/api/v1/namespaces/${name}`),
    /** Deletes it and waits until it is gone (its objects with it), e.g. before the
     * metrics APIs go away: a namespace being deleted needs their discovery. */
    deleteAndWait: async () => {
      await cluster.client.delete(`/api/v1/namespaces/${name}`);
      await eventually(
        async () => {
          if (await cluster.client.getOrUndefined(`/api/v1/namespaces/${name}`))
            throw new Error("still there");
        },
        { timeoutMs: 60_000, intervalMs: 250, what: `namespace ${name} deleted` },
      );
    },
  };
}

/** `kubectl apply -n namespace -f -` of a YAML text; throws with kubectl's stderr. */
export function applyYaml(cluster: TestCluster, namespace: string, yaml: string): void {
  const r = spawnSync("kubectl", ["apply", "-n", namespace, "-f", "-"], {
    input: yaml,
    env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`kubectl apply: ${r.stderr}`);
}

/** Applies Governor's CRDs and waits until they are served. */
export async function installCrds(cluster: TestCluster): Promise<void> {
  await kubectl(cluster, "apply", "-k", `${ROOT}crds`);
  await kubectl(
    cluster,
    "wait",
    "--for=condition=Established",
    "crd/metricmappings.governor.dev",
    "crd/scalableworkloads.governor.dev",
  );
}
