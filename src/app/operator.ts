/**
 * The whole operator in one process, as `governor run` starts it: the metrics API over
 * the MetricMapping-backed provider (every replica), and the reconcilers whose writes are
 * guarded by leader election (one replica at a time).
 */
import { hostname } from "node:os";
import type { QueryScope } from "../sources/prometheus.js";
import type { Logger } from "pino";
import { Counter, Gauge, Histogram } from "prom-client";
import { PromApiServerMetrics } from "../apiserver/instrumentation.js";
import { EventRecorder } from "../controller/events.js";
import { DEFAULT_LEASE_NAME, LeaderElector } from "../controller/leader-election.js";
import { Registration, type RegistrationMode } from "../controller/registration.js";
import { ControllerMetrics } from "../controller/controller-metrics.js";
import { MetricMappingReconciler } from "../controller/metric-mapping-reconciler.js";
import { ScalableWorkloadReconciler } from "../controller/scalable-workload-reconciler.js";
import type { KubeClient } from "../k8s/client.js";
import { InformerPodIndex } from "../k8s/pod-index.js";
import { DiscoveryResourceMapper } from "../k8s/resource-mapper.js";
import { validity } from "../certs/certs.js";
import { KubeSubjectLister } from "../metrics/subject-lister.js";
import { MappingProvider } from "../metrics/mapping-provider.js";
import { formatQuantity } from "../api/quantity.js";
import { readActivation } from "../controller/activation.js";
import type { DestinationPolicy } from "../sources/destination-policy.js";
import { KubeSecretReader } from "../sources/secrets.js";
import { serveMetricsApi, type RunningMetricsApi } from "./serve-metrics-api.js";
import { type ForwardedApi, Upstream, type UpstreamService, shadowedBy } from "../upstream/upstream.js";
import { CUSTOM_GROUP, EXTERNAL_GROUP, GROUP_VERSIONS } from "../apiserver/wire.js";

/** Options of {@link startOperator}. */
export interface OperatorOptions {
  client: KubeClient;
  logger: Logger;
  namespace: string;
  /** The serving certificate; required when registration is "none", else it comes from the Secret. */
  tls?: { cert: string; key: string };
  registration: {
    mode: RegistrationMode;
    serviceName: string;
    /** Service port: 443 in cluster mode; the local HTTPS port in local mode. */
    port: number;
    takeOver?: boolean;
    caPropagationMs?: number;
    resyncMs?: number;
  };
  host: string;
  port: number;
  apis: { custom: boolean; external: boolean };
  /** Elect a leader with a Lease; false: this process always writes. @default true */
  leaderElect?: boolean;
  /** @default "governor-leader" */
  leaseName?: string;
  shutdownDelayMs?: number;
  authCacheTtlMs?: number;
  /** @default true */
  fairDispatch?: boolean;
  /** Where HTTP sources may connect. @default DEFAULT_DESTINATION_POLICY */
  sourcePolicy?: DestinationPolicy;
  /** The most an HTTP source may read from one answer, in bytes. @default MAX_RESPONSE_BYTES */
  sourceMaxResponseBytes?: number;
  /** Memory for selector answers kept for reuse, in bytes (MappingProviderOptions). @default 32 MiB */
  answerCacheBytes?: number;
  /** Whether `kubernetes` counts may read beyond a mapping's namespace. @default false */
  clusterWideCounts?: boolean;
  /** How Prometheus queries are bound to the namespace. @default { namespaceLabel: "namespace" } */
  prometheusScope?: QueryScope;
  /** Whether `scrape` reads pods on their node's network. @default false */
  hostNetworkScrape?: boolean;
  /**
   * Per API, the upstream adapter every request for a metric Governor does not serve is
   * passed to (ADR 0011), and its CA (PEM) if given; else the CA is read from the
   * APIService Governor takes over from it.
   */
  forward?: Partial<Record<ForwardedApi, { service: UpstreamService; ca?: string }>>;
}

/** A running operator. */
export interface RunningOperator {
  api: RunningMetricsApi;
  registration?: Registration;
  provider: MappingProvider;
  /** The upstream adapters Governor forwards to, per API. */
  upstreams: Partial<Record<ForwardedApi, Upstream>>;
  isLeader(): boolean;
  stop(): Promise<void>;
}

/** See the module comment. */
export async function startOperator(opts: OperatorOptions): Promise<RunningOperator> {
  const log = opts.logger;
  const metrics = new PromApiServerMetrics();
  const samples = new Counter({
    name: "governor_sampler_samples_total",
    help: "Samples taken by MetricMapping samplers, by outcome.",
    labelNames: ["outcome"],
    registers: [metrics.registry],
  });
  const sampleSeconds = new Histogram({
    name: "governor_sampler_sample_duration_seconds",
    help: "Time a source took to answer one sample.",
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [metrics.registry],
  });
  const pods = new InformerPodIndex(opts.client, log);
  const mapper = new DiscoveryResourceMapper(opts.client);
  const provider = new MappingProvider(
    new KubeSubjectLister(opts.client, mapper, pods),
    formatQuantity,
    Date.now,
    { answerCacheBytes: opts.answerCacheBytes },
  );
  const events = new EventRecorder(opts.client, "governor", log);

  let leading = opts.leaderElect === false;
  new Gauge({
    name: "governor_leader",
    help: "1 while this replica is the leader: the one that writes status, Deployments, HPAs and registrations.",
    registers: [metrics.registry],
    collect() {
      this.set(leading ? 1 : 0);
    },
  });
  const controllerMetrics = new ControllerMetrics(metrics.registry);
  const upstreams: Partial<Record<ForwardedApi, Upstream>> = {};
  for (const api of ["custom", "external"] as const) {
    const f = opts.forward?.[api];
    if (!f || !opts.apis[api]) continue;
    const group = api === "custom" ? CUSTOM_GROUP : EXTERNAL_GROUP;
    upstreams[api] = new Upstream({
      api,
      group,
      versions: GROUP_VERSIONS[group] ?? [],
      service: f.service,
      ca: f.ca,
      client: opts.client,
      identity: () => opts.client.identity(),
      logger: log,
      // Which mappings shadow an upstream metric may have changed.
      onDiscoveryChange: () => reconciler.resyncAll(),
    });
  }
  const reconciler = new MetricMappingReconciler({
    client: opts.client,
    provider,
    mapper,
    pods,
    events,
    logger: log,
    secrets: new KubeSecretReader(opts.client),
    sourcePolicy: opts.sourcePolicy,
    sourceMaxResponseBytes: opts.sourceMaxResponseBytes,
    clusterWideCounts: opts.clusterWideCounts,
    prometheusScope: opts.prometheusScope,
    hostNetworkScrape: opts.hostNetworkScrape,
    isLeader: () => leading,
    observeSample: (outcome, seconds) => {
      samples.inc({ outcome });
      sampleSeconds.observe(seconds);
    },
    observeReconcile: controllerMetrics.observeReconcile,
    // Called only from reconciles, which start after `workloads` exists.
    onMappingChange: (namespace) => workloads.mappingChanged(namespace),
    onSampled: (namespace, name) => workloads.activationSampled(namespace, name),
    shadowed: (m) => shadowedBy(m, upstreams),
  });
  const workloads = new ScalableWorkloadReconciler({
    client: opts.client,
    events,
    logger: log,
    observeReconcile: controllerMetrics.observeReconcile,
    getMapping: (namespace, name) => {
      const mapping = reconciler.get(namespace, name);
      return mapping && { spec: mapping.spec, problem: reconciler.problem(namespace, name) };
    },
    readActivation: (namespace, name, objectName) => {
      const mapping = reconciler.get(namespace, name);
      const key = `${namespace}/${name}`;
      return readActivation({
        key,
        mapping: mapping && { spec: mapping.spec, problem: reconciler.problem(namespace, name) },
        served: provider.active(key),
        objectName,
        now: new Date(),
      });
    },
    isLeader: () => leading,
  });
  const elector =
    opts.leaderElect === false
      ? undefined
      : new LeaderElector(
          opts.client,
          {
            namespace: opts.namespace,
            name: opts.leaseName ?? DEFAULT_LEASE_NAME,
            identity: `${hostname()}_${process.pid}`,
            onStartedLeading: () => {
              leading = true;
              reconciler.resyncAll();
              workloads.resyncAll();
              void registration
                ?.syncNow()
                .catch((err: unknown) =>
                  log.warn(
                    { err: String(err) },
                    "registration sync on becoming leader failed; the periodic resync retries",
                  ),
                );
            },
            onStoppedLeading: () => {
              leading = false;
            },
          },
          log,
        );

  const apiList = [
    ...(opts.apis.custom ? (["custom"] as const) : []),
    ...(opts.apis.external ? (["external"] as const) : []),
  ];
  const live: { api?: RunningMetricsApi } = {};
  const registration =
    opts.registration.mode === "none"
      ? undefined
      : new Registration({
          client: opts.client,
          logger: log,
          events,
          mode: opts.registration.mode,
          namespace: opts.namespace,
          serviceName: opts.registration.serviceName,
          port: opts.registration.port,
          targetPort: opts.port,
          apis: apiList,
          takeOver: opts.registration.takeOver,
          forward: {
            ...(upstreams.custom ? { custom: opts.forward!.custom!.service } : {}),
            ...(upstreams.external ? { external: opts.forward!.external!.service } : {}),
          },
          onUpstreamTrust: (api, trust) =>
            upstreams[api]?.setTrust(
              trust?.caBundle
                ? { ca: trust.caBundle, from: "the APIService's caBundle" }
                : trust?.insecureSkipTLSVerify
                  ? { insecure: true, from: "the APIService's insecureSkipTLSVerify" }
                  : undefined,
            ),
          caPropagationMs: opts.registration.caPropagationMs,
          resyncMs: opts.registration.resyncMs,
          isLeader: () => leading,
          onServingCertificate: (pair) => live.api?.server.setServingCertificate(pair.cert, pair.key),
        });
  const tls = registration ? await registration.init() : opts.tls;
  if (!tls) throw new Error("a serving certificate is required when registration is none");

  await pods.synced;
  const controller = reconciler.start();
  controllerMetrics.watchQueue("metricmapping", controller.queue.stats);
  controllerMetrics.watchQueue("scalableworkload", workloads.start().queue.stats);
  elector?.start();
  const api = await serveMetricsApi({
    client: opts.client,
    provider,
    logger: log,
    tls,
    host: opts.host,
    port: opts.port,
    apis: { ...opts.apis, upstreams },
    metrics,
    shutdownDelayMs: opts.shutdownDelayMs,
    authCacheTtlMs: opts.authCacheTtlMs,
    fairDispatch: opts.fairDispatch,
    // An upstream that is down never makes Governor unready: its own metrics still work.
    readinessWarnings: () => [
      ...(registration?.conflicts.values() ?? []),
      ...Object.values(upstreams).flatMap((u) => (u.lastError ? [u.lastError] : [])),
    ],
    // Ready once every MetricMapping of the first list has been loaded (a replica that
    // answered before would tell the HPA "no such metric" for the ones still loading).
    notReadyReason: () => {
      const p = controller.initialProgress();
      if (!p) return "listing MetricMappings";
      return p.done < p.total ? `loading MetricMappings (${p.done} of ${p.total})` : undefined;
    },
  });
  live.api = api;
  for (const u of Object.values(upstreams)) u.start();
  registration?.start();
  new Gauge({
    name: "governor_serving_certificate_expiry_timestamp_seconds",
    help: "When the serving certificate this replica serves expires (Unix seconds).",
    registers: [metrics.registry],
    collect() {
      const pem = live.api?.server.servingCertificate;
      if (pem) this.set(validity(pem).notAfter.getTime() / 1000);
    },
  });
  new Gauge({
    name: "governor_metricmappings",
    help: "MetricMappings by their Ready condition (status and reason) as the leader last wrote it.",
    labelNames: ["ready", "reason"],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const m of controller.informer.list()) {
        const ready = m.status?.conditions?.find((c) => c.type === "Ready");
        this.inc({ ready: ready?.status ?? "Unknown", reason: ready?.reason ?? "" });
      }
    },
  });
  return {
    api,
    registration,
    provider,
    upstreams,
    isLeader: () => leading,
    async stop() {
      await registration?.stop();
      await api.stop();
      for (const u of Object.values(upstreams)) await u.stop();
      await elector?.stop();
      await workloads.stop();
      await reconciler.stop();
      await pods.stop();
    },
  };
}
