/**
 * KEDA, built from its Go module (`hack/peers.sh keda`), as local processes: its operator
 * (which runs the scalers and serves their values over gRPC) and its metrics server (the
 * external-metrics adapter the aggregator calls, which asks the operator). The e2e test
 * runs Governor in front of it. As in KEDA's own install, the two talk mutual TLS with
 * certificates of one CA (here given, instead of KEDA's rotation writing them into a
 * Secret and into the APIService); both read the cluster with the given kubeconfig.
 */
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type KeyPair, issueCertificate } from "../../src/certs/certs.js";
import { httpsGet } from "./https-get.js";
import { type PeerProcess, peerBuild, startPeer } from "./peer-process.js";
import { freePort } from "./ports.js";

/** Where KEDA was built: its binaries and its CRDs. */
export interface KedaBuild {
  operator: string;
  adapter: string;
  /** Its CustomResourceDefinitions (YAML files), to apply before the operator starts. */
  crds: string[];
  /** e.g. `v2.21.0`. */
  version: string;
}

/** Builds KEDA once (cached outside the work tree). */
export function kedaBuild(): KedaBuild {
  const dir = peerBuild("keda");
  const crdDir = join(dir, "crds");
  return {
    operator: join(dir, "bin/keda-operator"),
    adapter: join(dir, "bin/keda-adapter"),
    crds: readdirSync(crdDir)
      .filter((f) => f.endsWith(".yaml"))
      .map((f) => join(crdDir, f)),
    version: /keda-(v[\d.]+)/.exec(dir)?.[1] ?? "?",
  };
}

/** Options of {@link startKeda}. */
export interface KedaOptions {
  build: KedaBuild;
  /** Where the certificates go. */
  dir: string;
  kubeconfig: string;
  /** The namespace KEDA "runs in" and watches (its ScaledObjects live there). */
  namespace: string;
  /** Signs the operator's and the metrics server's gRPC certificates. */
  grpcCa: KeyPair;
  /** The metrics server's serving certificate and key files, and the CA (PEM) that signed them. */
  tls: { certFile: string; keyFile: string; ca: string };
  /** The metrics server's port. @default a free port */
  port?: number;
}

/** KEDA's two processes. */
export interface KedaProcesses {
  operator: PeerProcess;
  /** The metrics server (the upstream adapter). */
  adapter: PeerProcess;
  /** The metrics server's port. */
  port: number;
  version: string;
  /** Starts the metrics server again (after {@link KedaProcesses.adapter}'s stop) on the same port. */
  restartAdapter(): Promise<void>;
  log: () => string;
  stop(): Promise<void>;
}

/** Starts KEDA's operator, then its metrics server; resolves once both are healthy. */
export async function startKeda(opts: KedaOptions): Promise<KedaProcesses> {
  const grpcPort = await freePort();
  // Only what KEDA reads, as in its Deployment: nothing of the test's own environment.
  const env = {
    KUBECONFIG: opts.kubeconfig,
    WATCH_NAMESPACE: opts.namespace,
    POD_NAMESPACE: opts.namespace,
    KEDA_CLUSTER_OBJECT_NAMESPACE: opts.namespace,
  };
  // KEDA reads ca.crt, tls.crt and tls.key from its --cert-dir; each side presents tls.crt
  // and trusts ca.crt for the other. The operator is dialled at 127.0.0.1.
  const certDir = async (name: string, usage: "server" | "client") => {
    const dir = join(opts.dir, name);
    mkdirSync(dir, { recursive: true });
    const leaf = await issueCertificate(opts.grpcCa, {
      commonName: `keda-${name}`,
      dnsNames: [`keda-${name}`],
      ipAddresses: ["127.0.0.1"],
      usage,
    });
    writeFileSync(join(dir, "ca.crt"), opts.grpcCa.cert);
    writeFileSync(join(dir, "tls.crt"), leaf.cert);
    writeFileSync(join(dir, "tls.key"), leaf.key);
    return dir;
  };
  const operatorCerts = await certDir("operator", "server");
  const adapterCerts = await certDir("metrics-apiserver", "client");

  const probePort = await freePort();
  const operator = await startPeer({
    bin: opts.build.operator,
    args: [
      `--health-probe-bind-address=127.0.0.1:${probePort}`,
      "--metrics-bind-address=0",
      `--metrics-service-bind-address=127.0.0.1:${grpcPort}`,
      `--cert-dir=${operatorCerts}`,
      "--enable-cert-rotation=false",
      "--zap-log-level=info",
    ],
    env,
    what: "keda-operator ready",
    timeoutMs: 120_000,
    ready: async () => {
      const r = await fetch(`http://127.0.0.1:${probePort}/readyz`);
      if (r.status !== 200) throw new Error(`/readyz: ${r.status}`);
    },
  });

  const port = opts.port ?? (await freePort());
  const adapterMetricsPort = await freePort();
  const startAdapter = () =>
    startPeer({
      bin: opts.build.adapter,
      args: [
        `--secure-port=${port}`,
        "--bind-address=127.0.0.1",
        `--tls-cert-file=${opts.tls.certFile}`,
        `--tls-private-key-file=${opts.tls.keyFile}`,
        `--cert-dir=${adapterCerts}`,
        `--lister-kubeconfig=${opts.kubeconfig}`,
        `--authentication-kubeconfig=${opts.kubeconfig}`,
        `--authorization-kubeconfig=${opts.kubeconfig}`,
        `--metrics-service-address=127.0.0.1:${grpcPort}`,
        `--port=${adapterMetricsPort}`,
      ],
      env,
      what: "keda-adapter healthy",
      timeoutMs: 120_000,
      ready: async () => {
        const r = await httpsGet(`https://127.0.0.1:${port}/healthz`, { ca: opts.tls.ca });
        if (r.status !== 200) throw new Error(`/healthz: ${r.status}`);
      },
    });
  let adapter: PeerProcess;
  try {
    adapter = await startAdapter();
  } catch (err) {
    await operator.stop();
    throw err;
  }
  const keda: KedaProcesses = {
    operator,
    adapter,
    port,
    version: opts.build.version,
    restartAdapter: async () => {
      keda.adapter = await startAdapter();
    },
    log: () =>
      `--- keda-operator ---\n${operator.log().slice(-3000)}\n--- keda-adapter ---\n${keda.adapter.log().slice(-3000)}`,
    stop: async () => {
      await keda.adapter.stop();
      await operator.stop();
    },
  };
  return keda;
}
