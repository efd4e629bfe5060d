/**
 * Runs the node agent of the local control plane (tools/devcluster/node-agent): started and
 * stopped by `hack/cluster.sh` when it runs as root. Logs JSON lines to stdout.
 *
 *   node --import tsx hack/node-agent.ts --kubeconfig K --state-dir D --ca-file CA \
 *     --apiserver 127.0.0.1:6443 --nodes governor-node-a,governor-node-b [--pod-cidr 10.213.0.0/16]
 */
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { KubeClient, loadKubeConfig } from "../src/k8s/client.js";
import { startNodeAgent } from "../tools/devcluster/node-agent/agent.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const opts = new Command("node-agent")
  .requiredOption("--kubeconfig <path>", "an admin kubeconfig of the local control plane")
  .requiredOption("--state-dir <dir>", "pod directories, container logs, the control socket")
  .requiredOption("--ca-file <path>", "the cluster CA (pods' ca.crt)")
  .requiredOption("--apiserver <host:port>", "where the kubernetes Service's connections go")
  .option("--nodes <names>", "comma-separated Node names", "governor-node-a,governor-node-b")
  .option("--pod-cidr <cidr>", "the pod network (one /24 per Node)", "10.213.0.0/16")
  .option("--version <v>", "the kubelet version Nodes report", "v0.0.0")
  .option("--prefix <p>", "prefix of the network namespaces, veths and bridge made", "gov")
  .parse()
  .opts<{
    kubeconfig: string;
    stateDir: string;
    caFile: string;
    apiserver: string;
    nodes: string;
    podCidr: string;
    version: string;
    prefix: string;
  }>();

const log = (msg: string, fields: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...fields }));

const agent = await startNodeAgent({
  client: new KubeClient(loadKubeConfig(opts.kubeconfig)),
  nodes: opts.nodes.split(",").filter(Boolean),
  podCidr: opts.podCidr,
  stateDir: opts.stateDir,
  caFile: opts.caFile,
  root,
  nodeBinary: process.execPath,
  apiserver: opts.apiserver,
  version: opts.version,
  prefix: opts.prefix,
  log,
});
log("node agent ready", { socket: agent.socket });
let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.once(signal, () => {
    if (stopping) return;
    stopping = true;
    log("stopping", { signal });
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log("stop failed", { err: String(err) });
        process.exit(1);
      },
    );
  });
