/**
 * Wires the metrics API for a real cluster: delegated authentication that follows
 * `kube-system/extension-apiserver-authentication` (bearer tokens checked by TokenReview,
 * service-account tokens first against the issuer's published keys, so forged ones are
 * refused without a review), SubjectAccessReview authorization,
 * Prometheus metrics, and the HTTPS server over a given provider: a runnable of the
 * manager, listening from its start until its stop. Used by `governor run` and by
 * integration tests, so both run the same assembly.
 */
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { DelegatingAuthenticator } from "../apiserver/authn.js";
import { DelegatingAuthorizer } from "../apiserver/authz.js";
import { PromApiServerMetrics } from "../apiserver/instrumentation.js";
import { MetricsApi, type MetricsApiOptions } from "../apiserver/metrics-api.js";
import { MetricsApiServer } from "../apiserver/server.js";
import type { KubeClient } from "../k8s/client.js";
import {
  KubeAccessReviewer,
  KubeTokenReviewer,
  followAuthenticationConfig,
} from "../apiserver/delegated-auth.js";
import { KubeServiceAccountKeySource } from "../apiserver/service-account-keys.js";
import { ServiceAccountTokenCheck } from "../apiserver/service-account-token-check.js";
import type { MetricsProvider } from "../metrics/provider.js";
import type { Runnable } from "../util/runnable.js";

/** Options of {@link MetricsApiService}. */
export interface ServeMetricsApiOptions {
  client: KubeClient;
  provider: MetricsProvider;
  logger: Logger;
  /** The serving certificate to start with (else {@link MetricsApiService.setServingCertificate} before start). */
  tls?: { cert: string; key: string };
  host: string;
  port: number;
  /** Which groups are served, and the upstream adapters the rest of a group goes to. */
  apis: MetricsApiOptions;
  /** @default a registry of its own */
  metrics?: PromApiServerMetrics;
  /** @default 5000 */
  shutdownDelayMs?: number;
  /** Authorization cache TTL. @default 10000 */
  authCacheTtlMs?: number;
  /** Share requests out fairly among users (src/apiserver/fair-dispatch.ts). @default true */
  fairDispatch?: boolean;
  /** A reason not to be ready yet (e.g. mappings still loading). */
  notReadyReason?: () => string | undefined;
  /** Warnings for the /readyz body. */
  readinessWarnings?: () => string[];
}

/** A running metrics API. */
export interface RunningMetricsApi {
  server: MetricsApiServer;
  address: AddressInfo;
  metrics: PromApiServerMetrics;
  /** Graceful stop: readyz fails, in-flight requests finish, watches end. */
  stop(): Promise<void>;
}

/** See the module comment. */
export class MetricsApiService implements Runnable, RunningMetricsApi {
  readonly name = "metrics API";
  readonly metrics: PromApiServerMetrics;
  private tls?: { cert: string; key: string };
  private running?: { server: MetricsApiServer; address: AddressInfo; stopAuthConfig: () => Promise<void> };

  constructor(private readonly opts: ServeMetricsApiOptions) {
    this.metrics = opts.metrics ?? new PromApiServerMetrics();
    this.tls = opts.tls;
  }

  /** The HTTPS server (once started). */
  get server(): MetricsApiServer {
    if (!this.running) throw new Error("the metrics API is not started");
    return this.running.server;
  }

  /** Where it listens (once started). */
  get address(): AddressInfo {
    if (!this.running) throw new Error("the metrics API is not started");
    return this.running.address;
  }

  /** Serves `pair` from now on (or from the start). */
  setServingCertificate(pair: { cert: string; key: string }): void {
    this.tls = pair;
    this.running?.server.setServingCertificate(pair.cert, pair.key);
  }

  /** Resolves once the authentication config is loaded and the port is bound. */
  async start(): Promise<void> {
    const opts = this.opts;
    const metrics = this.metrics;
    const log = opts.logger;
    if (!this.tls) throw new Error("the metrics API has no serving certificate");
    // Forged service-account tokens are refused against the published keys, without a review.
    const serviceAccountTokens = new ServiceAccountTokenCheck(new KubeServiceAccountKeySource(opts.client), {
      logger: log,
    });
    void serviceAccountTokens.prefetch();
    const authenticator = new DelegatingAuthenticator(new KubeTokenReviewer(opts.client), {
      tokenCacheTtlMs: opts.authCacheTtlMs,
      onCache: (r) => metrics.authnCache(r),
      precheck: serviceAccountTokens,
    });
    // The server is built after the first config is loaded; later changes refresh its CAs.
    const authConfig = await followAuthenticationConfig(
      opts.client,
      (config) => {
        authenticator.setConfig(config);
        this.running?.server.refreshClientCAs();
        log.info(
          { requestHeaderAllowedNames: config.requestHeader?.allowedNames, clientCA: config.clientCA !== "" },
          "loaded kube-system/extension-apiserver-authentication",
        );
      },
      (err) => log.warn({ err }, "watching kube-system/extension-apiserver-authentication failed; retrying"),
    );
    const authorizer = new DelegatingAuthorizer(new KubeAccessReviewer(opts.client), {
      ttlMs: opts.authCacheTtlMs,
      onCache: (r) => metrics.authzCache(r),
    });
    const server = new MetricsApiServer({
      api: new MetricsApi(opts.provider, opts.apis),
      authenticator,
      authorizer,
      logger: log,
      metrics,
      tls: this.tls,
      host: opts.host,
      port: opts.port,
      shutdownDelayMs: opts.shutdownDelayMs,
      fairness: { enabled: opts.fairDispatch ?? true },
      notReadyReason: opts.notReadyReason,
      readinessWarnings: opts.readinessWarnings,
    });
    const address = await server.listen();
    this.running = { server, address, stopAuthConfig: () => authConfig.stop() };
    log.info({ address: address.address, port: address.port }, "metrics API listening");
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    await this.running.server.shutdown();
    await this.running.stopAuthConfig();
  }
}

/** Builds and starts a {@link MetricsApiService} (tests that serve a fake provider). */
export async function serveMetricsApi(opts: ServeMetricsApiOptions): Promise<RunningMetricsApi> {
  const api = new MetricsApiService(opts);
  await api.start();
  return api;
}
