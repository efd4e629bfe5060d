/**
 * The demo (`npm run demo`): the whole product on a local control plane, in one command. It brings
 * the control plane up (building it on the first run), installs the CRDs, starts Governor
 * as its own process exactly as users run it (`governor run --registration=local`), deploys
 * a sample app (pods played by prom-client servers on loopback IPs) as a ScalableWorkload
 * whose HPA scales on the pods' request rate, drives load up and down, and prints a live
 * table while the real HPA scales it. Then it cleans up. Resolves to true when it saw the
 * HPA scale up and back down.
 *
 * `--in-cluster` shows the production install instead: `kubectl apply -k config/default`
 * (two replicas run as real pods by the control plane's node agent, which needs root), and
 * a sample app whose pods are real processes on the pod network.
 *
 * (A little over 350 lines: a script, read top to bottom as the steps it prints.)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { STAND_IN_NAMESPACE_ANNOTATIONS, startStandInKubelet } from "../devcluster/stand-in-kubelet.js";
import { KubeClient } from "../../src/k8s/client.js";
import { InformerPodIndex } from "../../src/k8s/pod-index.js";
import { NODE_AGENT_LABEL } from "../devcluster/node-agent/agent.js";
import { freePort } from "../../test/support/ports.js";
import { FakeApp } from "./fake-app.js";
import { PodLoad } from "./pod-load.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const NS = "governor-demo";
const LOCAL_SYSTEM_NS = "governor-demo-system";
/** config/default's namespace. */
const CLUSTER_SYSTEM_NS = "governor-system";
const SAMPLE_APP_PORT = 8080;
const TARGET_PER_POD = 10;

/** How to start another `governor` process (the demo runs `governor run` as a child). */
export interface DemoOptions {
  /** argv prefix that runs the governor CLI, e.g. [node, --import, tsx, src/main.ts]. */
  governorCommand: string[];
  /** Where to print. */
  out: (line: string) => void;
  /** The environment for child processes (kubectl, the control plane scripts). */
  env: NodeJS.ProcessEnv;
  /** Load phases: [seconds, total requests/s]. @default warm-up, surge, calm */
  phases?: [number, number][];
  /** Install with `kubectl apply -k config/default` onto the node agent's Nodes. @default false */
  inCluster?: boolean;
}

function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; onStderr?: (line: string) => void } = {},
) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      for (const line of d.toString().split("\n")) if (line.trim()) opts.onStderr?.(line);
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(opts.input ?? "");
  });
}

/**
 * Deletes `namespace` and waits until it is gone. A pod still Terminating after its grace
 * period is deleted with grace period 0, as the pod garbage collector does for a pod on a
 * Node nobody runs; after 2 minutes it gives up and says so.
 */
async function removeNamespace(
  client: KubeClient,
  namespace: string,
  say: (s: string) => void,
): Promise<void> {
  const path = `/api/v1/namespaces/${namespace}`;
  await client.delete(path).catch(() => {});
  const deadline = Date.now() + 120_000;
  while (await client.getOrUndefined(path)) {
    if (Date.now() > deadline) {
      say(
        `namespace ${namespace} is still being deleted; kubectl get all -n ${namespace} shows what is left`,
      );
      return;
    }
    const pods = await client
      .get<{
        items: {
          metadata: { name: string; deletionTimestamp?: string };
          spec?: { terminationGracePeriodSeconds?: number };
        }[];
      }>(`${path}/pods`)
      .catch(() => ({ items: [] }));
    for (const pod of pods.items) {
      const since = Date.parse(pod.metadata.deletionTimestamp ?? "");
      if (Number.isFinite(since) && Date.now() > since + 5_000)
        await client.delete(`${path}/pods/${pod.metadata.name}`, { gracePeriodSeconds: 0 }).catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** See the module comment. */
export async function runDemo(opts: DemoOptions): Promise<boolean> {
  const say = (s: string) => opts.out(`==> ${s}`);
  const wasUp = (await run("bash", [`${ROOT}hack/cluster.sh`, "status"], { env: opts.env })).code === 0;
  say(
    wasUp
      ? "Using the local control plane that is already running"
      : "Starting a local Kubernetes control plane (the first run builds kube-apiserver and kube-controller-manager: about 5 minutes)",
  );
  let lastProgress = 0;
  const up = await run("bash", [`${ROOT}hack/cluster.sh`, "up"], {
    env: opts.env,
    onStderr: (line) => {
      if (line.startsWith("[") || Date.now() - lastProgress > 15_000) {
        lastProgress = Date.now();
        opts.out(`    ${line.slice(0, 150)}`);
      }
    },
  });
  const kubeconfig = /export KUBECONFIG=(\S+)/.exec(up.stdout)?.[1];
  if (up.code !== 0 || !kubeconfig)
    throw new Error(`the control plane did not start:\n${up.stderr.slice(-2000)}`);
  const env = { ...opts.env, KUBECONFIG: kubeconfig };
  const inCluster = opts.inCluster ?? false;
  const SYSTEM_NS = inCluster ? CLUSTER_SYSTEM_NS : LOCAL_SYSTEM_NS;
  const kubectl = async (...args: string[]) => {
    const r = await run("kubectl", args, { env });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const client = new KubeClient(kc);
  const quiet = pino({ level: "silent" });
  let governor: ChildProcess | undefined;
  let governorLog = "";
  const kubelet = inCluster ? undefined : startStandInKubelet(client, { namespace: NS });
  const pods = new InformerPodIndex(client, quiet);
  const appPort = inCluster ? SAMPLE_APP_PORT : await freePort();
  const app = inCluster
    ? new PodLoad(pods, NS, { app: "web" }, appPort)
    : new FakeApp(pods, NS, { app: "web" }, appPort);
  let ok = false;
  try {
    if (inCluster) await requireAgentNodes(client);
    say("Installing Governor's CRDs (kubectl apply -k crds)");
    await kubectl("apply", "-k", `${ROOT}crds`);
    await kubectl(
      "wait",
      "--for=condition=Established",
      "crd/metricmappings.governor.dev",
      "crd/scalableworkloads.governor.dev",
    );
    for (const ns of inCluster ? [NS] : [NS, SYSTEM_NS]) {
      await client.delete(`/api/v1/namespaces/${ns}`);
      for (let i = 0; i < 120 && (await client.getOrUndefined(`/api/v1/namespaces/${ns}`)); i++)
        await new Promise((r) => setTimeout(r, 500));
      await client.create("/api/v1/namespaces", {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: {
          name: ns,
          ...(ns === NS && !inCluster ? { annotations: STAND_IN_NAMESPACE_ANNOTATIONS } : {}),
        },
      });
    }

    if (inCluster) {
      say("Building dist/ (npm run build): the node agent runs the governor image from it");
      const built = await run("npm", ["run", "build"], { env: opts.env });
      if (built.code !== 0) throw new Error(`npm run build failed:\n${built.stdout}${built.stderr}`);
      say(
        "Installing Governor as users do: kubectl apply -k config/default (two replicas, leader election, a PodDisruptionBudget)",
      );
      opts.out(indent(await kubectl("apply", "-k", `${ROOT}config/default`)));
      await waitFor("two Ready Governor replicas", 180_000, async () => {
        await kubectl("rollout", "status", "-n", SYSTEM_NS, "deployment/governor", "--timeout=5s");
      });
      say(`kubectl get pods -n ${SYSTEM_NS} -o wide`);
      opts.out(indent(await kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "wide")));
    } else {
      const port = await freePort();
      say(
        `Starting Governor: governor run --registration=local --secure-port=${port} (it creates its certificate, Service and APIServices)`,
      );
      const [cmd, ...prefix] = opts.governorCommand;
      governor = spawn(
        cmd!,
        [
          ...prefix,
          "run",
          "--kubeconfig",
          kubeconfig,
          "--namespace",
          SYSTEM_NS,
          "--registration",
          "local",
          "--bind-address",
          "127.0.0.1",
          "--secure-port",
          String(port),
          "--metrics-port",
          String(await freePort()),
          "--metrics-bind-address",
          "127.0.0.1",
          "--no-leader-elect",
          "--shutdown-delay",
          "0",
          "--take-over-apiservices",
          "--source-allow-cidrs",
          "127.0.0.0/8",
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      governor.stdout!.on("data", (d: Buffer) => (governorLog = (governorLog + d.toString()).slice(-20_000)));
      governor.stderr!.on("data", (d: Buffer) => (governorLog = (governorLog + d.toString()).slice(-20_000)));
    }
    await waitFor("the custom metrics API to be served through the aggregator", 60_000, async () => {
      await client.get("/apis/custom.metrics.k8s.io/v1beta2");
    });
    say("kubectl get apiservice v1beta2.custom.metrics.k8s.io");
    opts.out(indent(await kubectl("get", "apiservice", "v1beta2.custom.metrics.k8s.io")));

    say(
      "Deploying the sample app: a MetricMapping (requests/s read from each pod's /metrics) and a ScalableWorkload whose HPA targets 10 requests/s per pod",
    );
    const manifests = demoManifests(appPort, inCluster);
    opts.out(indent(manifests));
    const applied = await run("kubectl", ["apply", "-n", NS, "-f", "-"], { env, input: manifests });
    if (applied.code !== 0) throw new Error(applied.stderr);
    await pods.synced;
    app.start();
    await waitFor("the HPA to find its metric", 90_000, async () => {
      const hpa = await client.get<{ status?: { conditions?: { type: string; status: string }[] } }>(
        `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers/web`,
      );
      if (hpa.status?.conditions?.find((c) => c.type === "ScalingActive")?.status !== "True")
        throw new Error("not yet");
    });

    const phases = opts.phases ?? [
      [15, 5],
      [45, 45],
      [30, 5],
    ];
    say(
      "Driving load; the real HPA (kube-controller-manager) scales on Governor's metric. Ctrl-C stops the demo.",
    );
    opts.out(
      `    ${pad("time", 6)}${pad("load req/s", 12)}${pad("req/s per pod", 15)}${pad("target", 8)}${pad("desired", 9)}${pad("current", 9)}pods serving`,
    );
    let max = 0;
    let minAfterPeak = Infinity;
    const started = Date.now();
    for (const [seconds, rate] of phases) {
      app.rate = rate;
      const until = Date.now() + seconds * 1000;
      while (Date.now() < until) {
        const row = await snapshot(client);
        max = Math.max(max, row.desired);
        if (max > 1 && rate === phases[phases.length - 1]![1])
          minAfterPeak = Math.min(minAfterPeak, row.desired);
        opts.out(
          `    ${pad(`${Math.round((Date.now() - started) / 1000)}s`, 6)}${pad(String(rate), 12)}${pad(row.value, 15)}${pad(String(TARGET_PER_POD), 8)}${pad(String(row.desired), 9)}${pad(String(row.current), 9)}${app.size}`,
        );
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
    ok = max >= 3 && minAfterPeak <= 1;
    say(
      ok
        ? `The HPA scaled the ScalableWorkload up to ${max} replicas under load and back to ${minAfterPeak} when it calmed down.`
        : `Scaling was not as expected (peak ${max}, after the peak ${minAfterPeak === Infinity ? "n/a" : minAfterPeak}). Governor's log tail:\n${governorLog.slice(-3000)}`,
    );
    say("kubectl get mm,sw,hpa -n governor-demo");
    opts.out(indent(await kubectl("get", "mm,sw,hpa", "-n", NS)));
    opts.out(
      "    (Values are Kubernetes quantities, as the HPA reads them: 5086m is 5.086 requests/s, the m meaning thousandths.)",
    );
  } finally {
    say("Cleaning up");
    await app.stop();
    // The app's namespace goes while the stand-in kubelet still runs to confirm its pods'
    // deletion (a pod on a Node nobody runs would stay Terminating, and the namespace with it).
    await removeNamespace(client, NS, say);
    await kubelet?.stop();
    await pods.stop();
    if (governor && governor.exitCode === null) {
      governor.kill("SIGTERM");
      await Promise.race([once(governor, "exit"), new Promise((r) => setTimeout(r, 10_000))]);
    }
    if (inCluster) {
      // docs/install.md, Uninstall: the Deployment first (it would register again), then uninstall.
      await run(
        "kubectl",
        [
          "delete",
          "-n",
          SYSTEM_NS,
          "deployment/governor",
          "pdb/governor",
          "--ignore-not-found",
          "--wait=true",
        ],
        { env },
      );
      await waitFor("the Governor pods to stop", 120_000, async () => {
        const left = await client.get<{ items: unknown[] }>(`/api/v1/namespaces/${SYSTEM_NS}/pods`);
        if (left.items.length) throw new Error(`${left.items.length} left`);
      }).catch(() => undefined);
    }
    const [cmd, ...prefix] = opts.governorCommand;
    await run(cmd!, [...prefix, "uninstall", "--kubeconfig", kubeconfig, "--namespace", SYSTEM_NS], {
      env: opts.env,
    });
    if (!inCluster) await removeNamespace(client, SYSTEM_NS, say);
    await client.close();
    if (!wasUp) await run("bash", [`${ROOT}hack/cluster.sh`, "down"], { env: opts.env });
    say(
      wasUp
        ? "Done (the control plane stays up: hack/cluster.sh down stops it)"
        : "Done (control plane stopped)",
    );
  }
  return ok;
}

function demoManifests(appPort: number, inCluster: boolean): string {
  // In-cluster the pods are real processes of the sample-app image; otherwise imaginary pods
  // (the stand-in kubelet's) served by prom-client servers on their loopback IPs.
  const podSpec = inCluster
    ? `{containers: [{name: web, image: governor-sample-app:demo, args: ["--port", "${appPort}"], readinessProbe: {httpGet: {path: /healthz, port: ${appPort}}, periodSeconds: 1}}]}`
    : "{containers: [{name: web, image: example.invalid/web:1}]}";
  return `apiVersion: governor.dev/v1alpha1
kind: MetricMapping
metadata: {name: http-requests}
spec:
  metric: http_requests
  subject: {resource: pods}
  interval: 2s
  staleAfter: 30s
  source: {scrape: {port: ${appPort}, series: http_requests_total, rate: true}}
---
apiVersion: governor.dev/v1alpha1
kind: ScalableWorkload
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: ${podSpec}
  autoscaling:
    minReplicas: 1
    maxReplicas: 6
    metrics: [{mapping: http-requests, target: {averageValue: "${TARGET_PER_POD}"}}]
    behavior:
      scaleDown: {stabilizationWindowSeconds: 0}
`;
}

async function snapshot(client: KubeClient): Promise<{ value: string; desired: number; current: number }> {
  const sw = await client.get<{ spec: { replicas: number }; status?: { replicas?: number } }>(
    `/apis/governor.dev/v1alpha1/namespaces/${NS}/scalableworkloads/web`,
  );
  let value = "-";
  try {
    const list = await client.get<{ items: { value: string }[] }>(
      `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/pods/*/http_requests`,
      { labelSelector: "app=web" },
    );
    const values = list.items.map((i) =>
      i.value.endsWith("m") ? Number(i.value.slice(0, -1)) / 1000 : Number(i.value),
    );
    if (values.length) value = (values.reduce((a, b) => a + b, 0) / values.length).toFixed(1);
  } catch {
    value = "n/a";
  }
  return { value, desired: sw.spec.replicas, current: sw.status?.replicas ?? 0 };
}

/** The in-cluster demo needs the node agent's Nodes (hack/cluster.sh starts it as root). */
async function requireAgentNodes(client: KubeClient): Promise<void> {
  const nodes = await client.get<{ items: { metadata: { labels?: Record<string, string> } }[] }>(
    "/api/v1/nodes",
  );
  if (!nodes.items.some((n) => n.metadata.labels?.[NODE_AGENT_LABEL] === "true"))
    throw new Error(
      "--in-cluster needs the node agent's Nodes, which hack/cluster.sh starts only as root: run the demo as root",
    );
}

async function waitFor(what: string, timeoutMs: number, fn: () => Promise<void>): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      await fn();
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw new Error(`timed out waiting for ${what}: ${last instanceof Error ? last.message : String(last)}`);
}

const pad = (s: string, n: number) => s.padEnd(n);
const indent = (s: string) =>
  s
    .trimEnd()
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
