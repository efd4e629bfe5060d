/**
 * The OTLP receiver as a runnable of the manager (`governor run --otlp-port`): on every
 * replica, with the serving certificate, checking pushers' service-account tokens for its
 * audience (locally against the issuer's keys first, then by TokenReview), counting what it
 * receives in `/metrics`.
 */
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import { DelegatingAuthenticator } from "../apiserver/authn.js";
import { KubeTokenReviewer } from "../apiserver/delegated-auth.js";
import { OTLP_HTTP_PORT, OtlpReceiver } from "../apiserver/otlp-receiver.js";
import { type OtlpPeer, OtlpRelay } from "../apiserver/otlp-relay.js";
import { KubeServiceAccountKeySource } from "../apiserver/service-account-keys.js";
import { ServiceAccountTokenCheck } from "../apiserver/service-account-token-check.js";
import type { KubeClient } from "../k8s/client.js";
import type { PodIndex } from "../k8s/pod-index.js";
import { sharedAnswerDecoder } from "../sources/answer-decoder.js";
import type { OtlpStore } from "../sources/otlp-store.js";
import type { Runnable } from "../util/runnable.js";

/** Options of {@link OtlpService}. */
export interface OtlpServiceOptions {
  client: KubeClient;
  store: OtlpStore;
  logger: Logger;
  registry: Registry;
  /** The serving certificate now (a later one through {@link OtlpService.setServingCertificate}). */
  certificate: () => { cert: string; key: string } | undefined;
  host: string;
  /** @default OTLP_HTTP_PORT */
  port?: number;
  /** The audience pushers' tokens must be for. */
  audience: string;
  maxRequestBytes?: number;
  pointsPerSecond?: number;
  /** How long a token's review is trusted. @default 10000 */
  authCacheTtlMs?: number;
  /**
   * Where the other replicas are found, to share pushes with (otlp-relay.ts): this pod's
   * namespace and name, the pods there, the Service's DNS name and Governor's CA bundle.
   */
  replicas?: {
    namespace: string;
    /** @default the host name (a pod's is its name) */
    podName?: string;
    pods: PodIndex;
    serverName: string;
    ca: () => string | undefined;
  };
}

/** The labels that make a pod a replica of the same Governor as this one. */
const REPLICA_LABELS = [
  "app.kubernetes.io/name",
  "app.kubernetes.io/instance",
  "app.kubernetes.io/component",
];

/** See the module comment. */
export class OtlpService implements Runnable {
  readonly name = "OTLP receiver";
  private receiver?: OtlpReceiver;
  private relay?: OtlpRelay;
  private readonly requests: Counter<"code">;
  private readonly relays: Counter<"outcome">;
  private readonly points: Counter<"outcome">;
  address?: AddressInfo;

  constructor(private readonly opts: OtlpServiceOptions) {
    this.requests = new Counter({
      name: "governor_otlp_requests_total",
      help: "OTLP export requests received, by HTTP status answered.",
      labelNames: ["code"],
      registers: [opts.registry],
    });
    this.points = new Counter({
      name: "governor_otlp_data_points_total",
      help: "OTLP data points received: kept, dropped (no mapping of the namespace reads the metric) or rejected.",
      labelNames: ["outcome"],
      registers: [opts.registry],
    });
    this.relays = new Counter({
      name: "governor_otlp_relays_total",
      help: "Pushes relayed to the other replicas: sent, failed, or dropped (too many in flight to a peer).",
      labelNames: ["outcome"],
      registers: [opts.registry],
    });
  }

  async start(): Promise<void> {
    const opts = this.opts;
    const tls = opts.certificate();
    if (!tls) throw new Error("the OTLP receiver has no serving certificate");
    const precheck = new ServiceAccountTokenCheck(new KubeServiceAccountKeySource(opts.client), {
      logger: opts.logger,
    });
    void precheck.prefetch();
    const authenticator = new DelegatingAuthenticator(new KubeTokenReviewer(opts.client, [opts.audience]), {
      tokenCacheTtlMs: opts.authCacheTtlMs,
      precheck,
    });
    const port = opts.port ?? OTLP_HTTP_PORT;
    const replicas = opts.replicas;
    let unknownSelf = false;
    this.relay = replicas
      ? new OtlpRelay({
          peers: () => {
            const self = replicas.podName ?? hostname();
            const peers = replicaPeers(replicas.pods, replicas.namespace, self, port);
            if (!peers && !unknownSelf) {
              unknownSelf = true;
              opts.logger.warn(
                { pod: self, namespace: replicas.namespace },
                "OTLP: no pod of this name in Governor's namespace: pushes are not shared with other replicas (set POD_NAME from the downward API)",
              );
            }
            return peers ?? [];
          },
          serverName: replicas.serverName,
          certificate: opts.certificate,
          ca: replicas.ca,
          logger: opts.logger,
          outcome: (outcome) => this.relays.inc({ outcome }),
          unshared: (namespace, reason) =>
            opts.store.refused(namespace, undefined, { pushes: 1, points: 0, reason }),
        })
      : undefined;
    this.receiver = new OtlpReceiver({
      store: opts.store,
      authenticator,
      decoder: sharedAnswerDecoder(),
      logger: opts.logger,
      tls,
      host: opts.host,
      port,
      ...(this.relay ? { relay: this.relay } : {}),
      maxRequestBytes: opts.maxRequestBytes,
      pointsPerSecond: opts.pointsPerSecond,
      metrics: {
        request: (status) => this.requests.inc({ code: String(status) }),
        points: (outcome, n) => {
          if (n > 0) this.points.inc({ outcome }, n);
        },
      },
    });
    this.address = await this.receiver.listen();
    opts.logger.info({ port: this.address.port, audience: opts.audience }, "OTLP receiver listening");
  }

  /** Serves `pair` to new connections. */
  setServingCertificate(pair: { cert: string; key: string }): void {
    this.receiver?.setServingCertificate(pair.cert, pair.key);
  }

  async stop(): Promise<void> {
    await this.receiver?.close();
    this.receiver = undefined;
    this.relay?.close();
    this.relay = undefined;
  }
}

/**
 * The other Ready replicas of the Governor that runs as pod `self` of `namespace`: the pods
 * there that carry the same `app.kubernetes.io/name`, `instance` and `component` labels as
 * it has, reached on `port`. Undefined when `self` is no pod there, or one without any of
 * those labels (a process outside a cluster).
 */
export function replicaPeers(
  pods: PodIndex,
  namespace: string,
  self: string,
  port: number,
): OtlpPeer[] | undefined {
  const own = pods.get(namespace, self);
  const same = REPLICA_LABELS.filter((l) => own?.labels[l] !== undefined);
  if (!own || same.length === 0) return undefined;
  return pods
    .list(namespace, (labels) => same.every((l) => labels[l] === own.labels[l]))
    .filter((p) => p.name !== self && p.ready && !p.terminating && p.ip !== undefined)
    .map((p) => ({ name: p.name, ip: p.ip!, port }));
}
