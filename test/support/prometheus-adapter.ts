/**
 * prometheus-adapter, built from its Go module (`hack/peers.sh`), as a local process: the
 * real upstream adapter of the forwarding e2e test and the bench's peer. It serves with
 * the given certificate, reads the cluster with the given kubeconfig and authenticates
 * and authorizes its callers through the cluster (delegated, as in a real install).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { httpsGet } from "./https-get.js";
import { type PeerProcess, peerBuild, startPeer } from "./peer-process.js";
import { freePort } from "./ports.js";

/** The e2e tests' external rule: the queue gauge `e2e_queue_messages`, per namespace, as `queue_messages`. */
export const QUEUE_EXTERNAL_RULES = `externalRules:
- seriesQuery: 'e2e_queue_messages{namespace!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
  name: {matches: "^e2e_(.*)$", as: "\${1}"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
`;

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
export interface PrometheusAdapterProcess extends PeerProcess {
  port: number;
  /** e.g. `v0.12.0`. */
  version: string;
}

/** Builds (once, cached) and starts prometheus-adapter; resolves once /healthz answers. */
export async function startPrometheusAdapter(
  opts: PrometheusAdapterOptions,
): Promise<PrometheusAdapterProcess> {
  const bin = peerBuild("prometheus-adapter");
  const version = /prometheus-adapter-(v[\d.]+)/.exec(bin)?.[1] ?? "?";
  const config = join(opts.dir, "prometheus-adapter.yaml");
  writeFileSync(config, opts.config);
  const port = opts.port ?? (await freePort());
  const peer = await startPeer({
    bin,
    args: [
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
    what: "prometheus-adapter healthy",
    ready: async () => {
      const r = await httpsGet(`https://127.0.0.1:${port}/healthz`, { ca: opts.tls.ca });
      if (r.status !== 200) throw new Error(`/healthz: ${r.status}`);
    },
  });
  return { ...peer, port, version };
}
