/**
 * The whole operator in one process, as `governor run` starts it: a {@link Manager} and
 * the list of what it runs, in order — the metrics API over the MetricMapping-backed
 * provider on every replica, and the writers that need leadership (status, the
 * ScalableWorkload controller, the registration) on the leader only.
 */
import { hostname } from "node:os";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Gauge } from "prom-client";
import { formatQuantity } from "../api/quantity.js";
import type { ControllerConfig } from "../autoscaling/sync.js";
import { MetricsEndpoint, PromApiServerMetrics } from "../apiserver/instrumentation.js";
import { CUSTOM_GROUP, EXTERNAL_GROUP, GROUP_VERSIONS } from "../apiserver/wire.js";
import { CertificateSlot } from "../certs/certificate-slot.js";
import { validity } from "../certs/certs.js";
import { readActivation } from "../controller/activation.js";
import { ControllerMetrics } from "../controller/controller-metrics.js";
import { EventRecorder } from "../controller/events.js";
import { DEFAULT_LEASE_NAME } from "../controller/leader-election.js";
import { METRIC_MAPPINGS_PATH } from "../api/metric-mapping.js";
import type { MetricMappingObject } from "../sources/registry.js";
import { MetricMappingReconciler } from "../controller/metric-mapping-reconciler.js";
import { Registration, type RegistrationMode } from "../controller/registration.js";
import { Recommender } from "../controller/recommender.js";
import { ScalableWorkloadReconciler } from "../controller/scalable-workload-reconciler.js";
import type { KubeClient } from "../k8s/client.js";
import { InformerPodIndex } from "../k8s/pod-index.js";
import { DiscoveryResourceMapper } from "../k8s/resource-mapper.js";
import { MappingProvider } from "../metrics/mapping-provider.js";
import { BackendBudgets } from "../metrics/backend-budget.js";
import { MappingHistories } from "../metrics/history.js";
import { SamplerPool } from "../metrics/sampler-pool.js";
import { KubeSubjectLister } from "../metrics/subject-lister.js";
import type { DestinationPolicy } from "../sources/destination-policy.js";
import type { QueryScope } from "../sources/promql-scope.js";
import { KubeSecretReader } from "../sources/secrets.js";
import { METRICS_UPSTREAMS_PATH, type MetricsUpstreamObject } from "../api/metrics-upstream.js";
import { MetricsUpstreams } from "../upstream/metrics-upstreams.js";
import { UpstreamRouter, shadowedBy } from "../upstream/router.js";
import { type ForwardedApi, Upstream, type UpstreamService } from "../upstream/upstream.js";
import { CertificateFiles } from "./certificate-files.js";
import { Manager } from "./manager.js";
import { MetricsApiService, type RunningMetricsApi } from "./serve-metrics-api.js";
import { OtlpService } from "./serve-otlp.js";
import { OtlpStore } from "../sources/otlp-store.js";

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
  /** The grid samplers start on, in ms (SamplerOptions.slotMs). @default SAMPLE_SLOT_MS */
  sampleSlotMs?: number;
  /** Memory for selector answers kept for reuse, in bytes (MappingProviderOptions). @default 32 MiB */
  answerCacheBytes?: number;
  /** Whether `kubernetes` counts may read beyond a mapping's namespace. @default false */
  clusterWideCounts?: boolean;
  /** How Prometheus queries are bound to the namespace. @default { namespaceLabel: "namespace" } */
  prometheusScope?: QueryScope;
  /** Whether `scrape` reads pods on their node's network. @default false */
  hostNetworkScrape?: boolean;
  /** Queries per second per source backend, and per named backend (origin); 0: none. @default DEFAULT_BACKEND_QPS */
  backendQps?: { qps: number; overrides?: ReadonlyMap<string, number> };
  /**
   * Per API, the upstream adapter every request for a metric Governor does not serve is
   * passed to (ADR 0011), and its CA (PEM) if given; else the CA is read from the
   * APIService Governor takes over from it.
   */
  forward?: Partial<Record<ForwardedApi, { service: UpstreamService; ca?: string }>>;
  /** The HPA controller's flags, for recommendations (ADR 0021). @default its defaults: 15 s, DEFAULT_CONTROLLER */
  hpa?: { syncPeriodMs: number; controller: ControllerConfig };
  /**
   * Samples kept per mapping for `governor replay` and served as `history.governor.dev`
   * (src/metrics/history.ts). @default 0: none kept, the API not registered
   */
  historyPoints?: number;
  /** The most memory all kept samples may hold, in bytes. @default 64 MiB */
  historyMemoryBytes?: number;
  /** Serve `/metrics` (plain HTTP) there; none when absent. */
  metricsEndpoint?: { port: number; host: string };
  /** Receive OTLP pushes for `otlp` sources (src/app/serve-otlp.ts); off when absent. */
  otlp?: {
    port: number;
    host: string;
    audience: string;
    maxRequestBytes?: number;
    pointsPerSecond?: number;
    maxSeriesPerNamespace?: number;
    /** This replica's pod name. @default the host name */
    podName?: string;
  };
  /** The files `tls` was read from: served anew when they change (a mounted Secret rotated). */
  tlsFiles?: { cert: string; key: string };
}

/** A running operator. */
export interface RunningOperator {
  api: RunningMetricsApi;
  registration?: Registration;
  provider: MappingProvider;
  /** The catch-all upstream adapters Governor forwards to (`--forward-*`), per API. */
  upstreams: Partial<Record<ForwardedApi, Upstream>>;
  /** Per served API, what routes a metric no mapping serves to an upstream (ADR 0024). */
  routers: Partial<Record<ForwardedApi, UpstreamRouter>>;
  /** Where `/metrics` listens, if it does. */
  metricsAddress?: { port: number };
  /** Where the OTLP receiver listens, if it does. */
  otlpAddress?: { port: number };
  isLeader(): boolean;
  stop(): Promise<void>;
}

/** See the module comment. Resolves once the metrics API listens. */
export async function startOperator(opts: OperatorOptions): Promise<RunningOperator> {
  const { client, logger: log } = opts;
  const mgr = new Manager({
    client,
    logger: log,
    leaderElection: opts.leaderElect !== false && {
      namespace: opts.namespace,
      name: opts.leaseName ?? DEFAULT_LEASE_NAME,
      identity: `${hostname()}_${process.pid}`,
    },
  });
  const apiMetrics = new PromApiServerMetrics(mgr.registry, { defaultMetrics: false });
  const controllerMetrics = new ControllerMetrics(mgr.registry);
  const events = new EventRecorder(client, "governor", log);
  const mapper = new DiscoveryResourceMapper(client);

  // Pods: every replica, before anything that lists a namespace's pods.
  const pods = new InformerPodIndex(client, log);
  mgr.add({ name: "pod informer", start: () => pods.synced, stop: () => pods.stop() });
  const provider = new MappingProvider(
    new KubeSubjectLister(client, mapper, pods, (msg, fields) => log.warn(fields, msg)),
    formatQuantity,
    Date.now,
    {
      answerCacheBytes: opts.answerCacheBytes,
    },
  );

  // MetricMappings: every replica samples and serves; the leader writes their status.
  const mappingInformer = mgr.cache.informer<MetricMappingObject>(METRIC_MAPPINGS_PATH);
  const upstreams: Partial<Record<ForwardedApi, Upstream>> = {};
  const routers: Partial<Record<ForwardedApi, UpstreamRouter>> = {};
  const samplers = new SamplerPool();
  controllerMetrics.watchSamplers(samplers);
  const budgets = new BackendBudgets(opts.backendQps);
  controllerMetrics.watchBudgets(budgets);
  const history = opts.historyPoints
    ? new MappingHistories(opts.historyPoints, opts.historyMemoryBytes ?? 64 << 20, (maxBytes) =>
        log.warn(
          { maxBytes },
          "kept samples reached --history-memory: rings keep what they have and wrap there (raise it, or lower --history-points)",
        ),
      )
    : undefined;
  const otlpStore = opts.otlp
    ? new OtlpStore({ maxSeriesPerNamespace: opts.otlp.maxSeriesPerNamespace })
    : undefined;
  const mappings = new MetricMappingReconciler({
    ...(otlpStore ? { otlp: otlpStore } : {}),
    samplers,
    budgets,
    history,
    client,
    informer: mappingInformer,
    provider,
    mapper,
    pods,
    events,
    logger: log,
    secrets: new KubeSecretReader(client),
    sourcePolicy: opts.sourcePolicy,
    sourceMaxResponseBytes: opts.sourceMaxResponseBytes,
    sampleSlotMs: opts.sampleSlotMs,
    clusterWideCounts: opts.clusterWideCounts,
    prometheusScope: opts.prometheusScope,
    hostNetworkScrape: opts.hostNetworkScrape,
    observeSample: controllerMetrics.observeSample,
    observeReconcile: controllerMetrics.observeReconcile,
    shadowed: (m) => shadowedBy(m, routers),
  });
  mgr.add({
    name: "MetricMapping controller",
    start: () => controllerMetrics.watchQueue("metricmapping", mappings.start().queue.stats),
    stop: () => mappings.stop(),
  });
  mgr.add(mappings.statusWriter);
  mappingsGauge(mgr, mappingInformer.list);

  // Upstream adapters the metrics Governor does not serve are forwarded to: the catch-all
  // of each API (`--forward-*`, ADR 0011) and the MetricsUpstreams' routes (ADR 0024).
  // Namespaces' labels, for routes with a namespace selector (listed on first need).
  const namespaceCache = () =>
    mgr.cache.informer<KubernetesObject>("/api/v1/namespaces", { identityOnly: true, keepLabels: true });
  const metricsUpstreams = new MetricsUpstreams({
    client,
    informer: mgr.cache.informer<MetricsUpstreamObject & KubernetesObject>(METRICS_UPSTREAMS_PATH),
    namespaces: namespaceCache,
    routers,
    identity: () => client.identity(),
    logger: log,
    registry: mgr.registry,
    self: { namespace: opts.namespace, name: opts.registration.serviceName, port: opts.registration.port },
    // Which mappings shadow an upstream metric may have changed.
    onChange: () => mappings.resyncAll(),
  });
  for (const api of ["custom", "external"] as const) {
    if (!opts.apis[api]) continue;
    const f = opts.forward?.[api];
    const group = api === "custom" ? CUSTOM_GROUP : EXTERNAL_GROUP;
    if (f)
      upstreams[api] = new Upstream({
        api,
        group,
        versions: GROUP_VERSIONS[group] ?? [],
        service: f.service,
        ca: f.ca,
        client,
        identity: () => client.identity(),
        logger: log,
        observe: metricsUpstreams.observer("catch-all"),
        onDiscoveryChange: () => mappings.resyncAll(),
      });
    routers[api] = new UpstreamRouter(api, {
      ...(upstreams[api] ? { catchAll: upstreams[api] } : {}),
      labelsOf: (namespace) => namespaceCache().get(namespace)?.metadata?.labels,
    });
  }

  // The serving certificate and the registration: every replica follows the Secret; the
  // leader rotates it and keeps the Service and APIServices.
  const certificate = new CertificateSlot(opts.tls);
  const apiList = [
    ...(opts.apis.custom ? (["custom"] as const) : []),
    ...(opts.apis.external ? (["external"] as const) : []),
    ...(history ? (["history"] as const) : []),
  ];
  const registration =
    opts.registration.mode === "none"
      ? undefined
      : new Registration({
          client,
          logger: log,
          events,
          mode: opts.registration.mode,
          namespace: opts.namespace,
          serviceName: opts.registration.serviceName,
          port: opts.registration.port,
          targetPort: opts.port,
          ...(opts.otlp ? { otlpTargetPort: opts.otlp.port } : {}),
          apis: apiList,
          takeOver: opts.registration.takeOver,
          forward: {
            ...(upstreams.custom ? { custom: opts.forward!.custom!.service } : {}),
            ...(upstreams.external ? { external: opts.forward!.external!.service } : {}),
          },
          upstreams: () => metricsUpstreams.refs(),
          onUpstreamTrust: (which, trust) =>
            upstreams[which]?.setTrust(
              trust?.caBundle
                ? { ca: trust.caBundle, from: "the APIService's caBundle" }
                : trust?.insecureSkipTLSVerify
                  ? { insecure: true, from: "the APIService's insecureSkipTLSVerify" }
                  : undefined,
            ),
          caPropagationMs: opts.registration.caPropagationMs,
          resyncMs: opts.registration.resyncMs,
          onServingCertificate: (pair) => certificate.set(pair),
        });
  if (registration)
    mgr.add({
      name: "serving certificate",
      start: async () => certificate.set(await registration.init()),
      stop: () => {},
    });
  else if (!opts.tls) throw new Error("a serving certificate is required when registration is none");
  if (opts.tlsFiles) mgr.add(new CertificateFiles(opts.tlsFiles, (pair) => certificate.set(pair), log));

  // The metrics API: every replica, ready once the first list of MetricMappings is loaded.
  const api = new MetricsApiService({
    client,
    provider,
    logger: log,
    tls: certificate.current,
    host: opts.host,
    port: opts.port,
    apis: { ...opts.apis, delegates: routers, ...(history ? { history } : {}) },
    metrics: apiMetrics,
    shutdownDelayMs: opts.shutdownDelayMs,
    authCacheTtlMs: opts.authCacheTtlMs,
    fairDispatch: opts.fairDispatch,
    // An upstream that is down never makes Governor unready: its own metrics still work.
    readinessWarnings: () => [
      ...(registration?.conflicts.values() ?? []),
      ...Object.values(upstreams).flatMap((u) => (u.lastError ? [u.lastError] : [])),
      ...metricsUpstreams.lastErrors(),
    ],
    // A replica that answered before would tell the HPA "no such metric" for the ones still loading.
    notReadyReason: () => {
      const p = mappings.initialProgress();
      if (!p) return "listing MetricMappings";
      return p.done < p.total ? `loading MetricMappings (${p.done} of ${p.total})` : undefined;
    },
  });
  certificate.follow((pair) => api.setServingCertificate(pair));
  certificateExpiryGauge(mgr, () => certificate.current?.cert);

  // Upstreams before the API: stopped after it, so a forwarded request is answered while it drains.
  for (const [which, u] of Object.entries(upstreams))
    mgr.add({ name: `upstream (${which})`, start: () => u.start(), stop: () => u.stop() });
  mgr.add(metricsUpstreams);
  mgr.add(metricsUpstreams.leaderPart);
  mgr.add(api);
  const otlp = opts.otlp
    ? mgr.add(
        new OtlpService({
          client,
          store: otlpStore!,
          logger: log.child({ component: "otlp" }),
          registry: mgr.registry,
          certificate: () => certificate.current,
          host: opts.otlp.host,
          port: opts.otlp.port,
          audience: opts.otlp.audience,
          maxRequestBytes: opts.otlp.maxRequestBytes,
          pointsPerSecond: opts.otlp.pointsPerSecond,
          authCacheTtlMs: opts.authCacheTtlMs,
          // Every replica keeps every push: each relays what it kept to the others.
          ...(registration
            ? {
                replicas: {
                  namespace: opts.namespace,
                  ...(opts.otlp.podName ? { podName: opts.otlp.podName } : {}),
                  pods,
                  serverName: `${opts.registration.serviceName}.${opts.namespace}.svc`,
                  ca: () => registration.caBundle,
                },
              }
            : {}),
        }),
      )
    : undefined;
  if (otlp) certificate.follow((pair) => otlp.setServingCertificate(pair));
  if (otlp && !registration)
    log.warn(
      "OTLP: without self-registration there is no CA to check other replicas by: each replica keeps only the pushes it receives",
    );
  if (registration) {
    mgr.add({
      name: "registration loop",
      start: () => registration.start(),
      stop: () => registration.stop(),
    });
    mgr.add(registration.leaderPart);
  }

  // ScalableWorkloads: the leader only (everything it does is a write).
  const workloadMapping = (namespace: string, name: string) => {
    const mapping = mappings.get(namespace, name);
    return mapping && { spec: mapping.spec, problem: mappings.problem(namespace, name) };
  };
  const workloads = new ScalableWorkloadReconciler({
    client,
    cache: mgr.cache,
    events,
    logger: log,
    observeReconcile: controllerMetrics.observeReconcile,
    watchQueue: (name, stats) => controllerMetrics.watchQueue(name, stats),
    getMapping: workloadMapping,
    readActivation: (namespace, name, objectName) => {
      const mapping = mappings.get(namespace, name);
      const key = `${namespace}/${name}`;
      const served = provider.active(key);
      // A workload at zero replicas has no HPA reading: its activation keeps the sampler at its interval.
      served?.sampler.markRead();
      return readActivation({
        key,
        mapping: mapping && { spec: mapping.spec, problem: mappings.problem(namespace, name) },
        served,
        objectName,
        now: new Date(),
      });
    },
  });
  mappings.subscribe(workloads);
  mgr.add(workloads);
  const recommender = mgr.add(
    new Recommender({
      client,
      cache: mgr.cache,
      events,
      logger: log,
      getMapping: workloadMapping,
      provider,
      pods,
      ...(opts.hpa ? { periodMs: opts.hpa.syncPeriodMs, controller: opts.hpa.controller } : {}),
    }),
  );
  recommendationsGauge(mgr, () => recommender.current());

  const endpoint = opts.metricsEndpoint
    ? mgr.add(new MetricsEndpoint(mgr.registry, opts.metricsEndpoint.port, opts.metricsEndpoint.host))
    : undefined;

  await mgr.start();
  return {
    api,
    registration,
    provider,
    upstreams,
    routers,
    metricsAddress: endpoint?.address,
    otlpAddress: otlp?.address,
    isLeader: () => mgr.isLeader,
    stop: () => mgr.stop(),
  };
}

/** `governor_metricmappings`: MetricMappings by their Ready condition, as the leader last wrote it. */
function mappingsGauge(mgr: Manager, list: () => readonly MetricMappingObject[]): void {
  new Gauge({
    name: "governor_metricmappings",
    help: "MetricMappings by their Ready condition (status and reason) as the leader last wrote it.",
    labelNames: ["ready", "reason"],
    registers: [mgr.registry],
    collect() {
      this.reset();
      for (const m of list()) {
        const ready = m.status?.conditions?.find((c) => c.type === "Ready");
        this.inc({ ready: ready?.status ?? "Unknown", reason: ready?.reason ?? "" });
      }
    },
  });
}

/** `governor_recommended_replicas`: each ScalableWorkload's recommendation, on the leader. */
function recommendationsGauge(
  mgr: Manager,
  current: () => Iterable<{ namespace: string; name: string; replicas: number }>,
): void {
  new Gauge({
    name: "governor_recommended_replicas",
    help: "The replicas the HPA's algorithm recommends for a ScalableWorkload with spec.autoscaling (status.recommendation), on the leader.",
    labelNames: ["namespace", "name"],
    registers: [mgr.registry],
    collect() {
      this.reset();
      for (const r of current()) this.set({ namespace: r.namespace, name: r.name }, r.replicas);
    },
  });
}

/** `governor_serving_certificate_expiry_timestamp_seconds` of the certificate served now. */
function certificateExpiryGauge(mgr: Manager, served: () => string | undefined): void {
  new Gauge({
    name: "governor_serving_certificate_expiry_timestamp_seconds",
    help: "When the serving certificate this replica serves expires (Unix seconds).",
    registers: [mgr.registry],
    collect() {
      const pem = served();
      if (pem) this.set(validity(pem).notAfter.getTime() / 1000);
    },
  });
}
