#!/usr/bin/env node
/**
 * The `governor` command line. The only module that reads argv and the environment or
 * exits the process: it parses flags once into a frozen, validated config and hands it to
 * the code that runs. (Longer than most modules: every command's flags and their
 * validation are here, so that nothing else reads argv.)
 */
import { DEFAULT_LEASE_NAME } from "./controller/leader-election.js";
import { destinationPolicy } from "./sources/destination-policy.js";
import { FORBIDDEN_SOURCE_HEADERS } from "./sources/http.js";
import { DEFAULT_TENANT_HEADER } from "./sources/promql-scope.js";
import { backendOf } from "./sources/kind.js";
import { DEFAULT_BACKEND_QPS, MIN_BACKEND_QPS } from "./metrics/backend-budget.js";
import { MAX_HISTORY_POINTS } from "./metrics/history.js";
import { DEFAULT_OTLP_AUDIENCE, OTLP_HTTP_PORT } from "./apiserver/otlp-receiver.js";
import { boundedText } from "./util/bounded-text.js";
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { pino, type Logger } from "pino";
import { z } from "zod";
import { startOperator } from "./app/operator.js";
import { uninstall } from "./app/uninstall.js";
import { ObjectName, durationMs } from "./api/common.js";
import { DEFAULT_CONTROLLER } from "./autoscaling/sync.js";
import { createCA, issueCertificate } from "./certs/certs.js";
import { GovernorError } from "./errors.js";
import { DEFAULT_HPA_USER, broken, explain, render } from "./explain/explain.js";
import { REPLAY_FROM, ReplayError, renderReplay, replayTarget } from "./explain/replay.js";
import { SimulateError, parseSet, renderSimulation, simulate } from "./explain/simulate.js";
import { KubeClient, loadKubeConfig } from "./k8s/client.js";
import { serviceAccountKubeconfig } from "./k8s/service-account-kubeconfig.js";
import { serviceDnsNames } from "./manifests/api-service.js";
import { parseUpstreamService, type ForwardedApi, type UpstreamService } from "./upstream/upstream.js";

const VERSION = "0.1.0";

/** A namespace's name (a DNS-1123 label). */
const NamespaceName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must be a valid namespace name");

/** A comma-separated list of CIDRs, each checked by building the policy. */
const CidrList = z
  .string()
  .default("")
  .transform((s) =>
    s
      .split(",")
      .map((c) => c.trim())
      .filter((c) => c !== ""),
  )
  .superRefine((list, ctx) => {
    try {
      destinationPolicy({ allow: list });
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
    }
  });

/** A size in bytes: a whole number, optionally with a binary suffix (`512Ki`, `10Mi`, `1Gi`). */
const ByteSize = (min: number, max: number) =>
  z
    .string()
    .regex(
      /^\d{1,12}(Ki|Mi|Gi)?$/,
      "must be a whole number of bytes, optionally with Ki, Mi or Gi (e.g. 10Mi)",
    )
    .transform((s) => {
      const unit = { Ki: 1 << 10, Mi: 1 << 20, Gi: 1 << 30 }[s.slice(-2)] ?? 1;
      return Number.parseInt(s, 10) * unit;
    })
    .refine((n) => n >= min && n <= max, `must be between ${min >> 10}Ki and ${max >> 20}Mi`);

/** `namespace/name:port` of an upstream adapter's Service (src/upstream/upstream.ts). */
const UpstreamServiceFlag = z.string().transform((text, ctx) => {
  try {
    return parseUpstreamService(text);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});

/** Queries per second: 0 (no budget), or MIN_BACKEND_QPS up to 100,000. */
const Qps = z
  .string()
  .regex(/^\d{1,6}(\.\d{1,6})?$/, "must be a number of queries per second, e.g. 50 or 0.5")
  .transform(Number)
  .refine(
    (n) => n === 0 || (n >= MIN_BACKEND_QPS && n <= 100_000),
    `must be 0 (no budget) or from ${MIN_BACKEND_QPS} to 100000`,
  );

/**
 * `origin=qps,…`: the budgets of named backends, each key the origin sources send to
 * (scheme://host[:port], as a URL's origin; a default port is left out).
 */
const BackendQpsList = z
  .string()
  .default("")
  .transform((text, ctx) => {
    const out = new Map<string, number>();
    const items = text
      .split(",")
      .map((i) => i.trim())
      .filter((i) => i !== "");
    if (items.length > 64) ctx.addIssue({ code: "custom", message: "at most 64 backends" });
    for (const item of items.slice(0, 64)) {
      const at = item.lastIndexOf("=");
      const qps = Qps.safeParse(item.slice(at + 1));
      let origin: string | undefined;
      try {
        origin = backendOf(item.slice(0, at));
      } catch {
        origin = undefined;
      }
      if (at < 0 || !qps.success || !origin || origin === "null")
        ctx.addIssue({
          code: "custom",
          message: `${boundedText(item, 80)}: must be origin=qps, e.g. http://prometheus.monitoring:9090=50`,
        });
      else out.set(origin, qps.data);
    }
    return out;
  });

/** A duration flag as kube-controller-manager takes it (`15s`, `5m0s`), in milliseconds between `min` and `max`. */
const DurationFlag = (min: number, max: number) =>
  z
    .string()
    .regex(/^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/, "must be a duration such as 15s or 5m0s")
    .transform((text) => durationMs(text))
    .refine((ms) => ms >= min && ms <= max, `must be between ${min / 1000}s and ${max / 1000}s`);

const RunConfig = z.strictObject({
  kubeconfig: z.string().optional(),
  namespace: NamespaceName,
  serviceName: z.string().regex(/^[a-z]([-a-z0-9]*[a-z0-9])?$/, "must be a valid Service name"),
  bindAddress: z.string().min(1),
  securePort: z.coerce.number().int().min(0).max(65535).optional(),
  metricsBindAddress: z.string().min(1),
  metricsPort: z.coerce.number().int().min(0).max(65535),
  tlsCertFile: z.string().optional(),
  tlsPrivateKeyFile: z.string().optional(),
  apis: z.enum(["all", "custom", "external"]),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]),
  shutdownDelay: z.coerce.number().int().min(0),
  leaderElect: z.boolean(),
  fairDispatch: z.boolean(),
  registration: z.enum(["cluster", "local", "none"]),
  servicePort: z.coerce.number().int().min(1).max(65535).optional(),
  takeOverApiservices: z.boolean(),
  sourceAllowCidrs: CidrList,
  sourceDenyCidrs: CidrList,
  sourceMaxResponseBytes: ByteSize(1 << 10, 256 << 20),
  answerCacheSize: ByteSize(0, 1 << 30),
  sampleSlot: DurationFlag(0, 1_000),
  historyPoints: z.coerce
    .number()
    .int("must be a whole number")
    .min(0, `must be from 0 to ${MAX_HISTORY_POINTS}`)
    .max(MAX_HISTORY_POINTS, `must be from 0 to ${MAX_HISTORY_POINTS}`),
  historyMemory: ByteSize(1 << 20, 4 * 2 ** 30),
  allowClusterWideCounts: z.boolean(),
  prometheusNamespaceLabel: z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, "must be a Prometheus label name"),
  allowUnscopedPrometheusQueries: z.boolean(),
  prometheusTenantHeader: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, "must be a header name (letters, digits, - and _)")
    .refine(
      (h) =>
        !(FORBIDDEN_SOURCE_HEADERS as readonly string[]).includes(h.toLowerCase()) &&
        h.toLowerCase() !== "authorization",
      "must not be Host, Authorization or a connection-level header",
    ),
  prometheusTenantFromNamespace: z.boolean(),
  allowHostNetworkScrape: z.boolean(),
  sourceBackendQps: Qps,
  sourceBackendQpsOverrides: BackendQpsList,
  horizontalPodAutoscalerSyncPeriod: DurationFlag(1_000, 3_600_000),
  horizontalPodAutoscalerTolerance: z.coerce
    .number()
    .min(0, "must be from 0 to 10")
    .max(10, "must be from 0 to 10"),
  horizontalPodAutoscalerDownscaleStabilization: DurationFlag(0, 24 * 3_600_000),
  forwardCustom: UpstreamServiceFlag.optional(),
  forwardExternal: UpstreamServiceFlag.optional(),
  forwardCustomCaFile: z.string().min(1).optional(),
  forwardExternalCaFile: z.string().min(1).optional(),
  otlpPort: z.coerce.number().int().min(0).max(65535),
  otlpAudience: z.string().min(1).max(253),
  otlpMaxRequestBytes: ByteSize(64 << 10, 64 << 20),
  otlpPointsPerSecond: z.coerce.number().int().min(1).max(10_000_000),
  otlpMaxSeriesPerNamespace: z.coerce.number().int().min(1).max(10_000_000),
});
type RunConfig = z.infer<typeof RunConfig>;

function parseConfig<T extends z.ZodType>(schema: T, raw: unknown): Readonly<z.infer<T>> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map(
      (i) => `  --${i.path.join(".").replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${i.message}`,
    );
    throw new GovernorError("GOV_ERR_CONFIG", `invalid configuration:\n${problems.join("\n")}`);
  }
  return Object.freeze(result.data);
}

async function loadServingCert(
  cfg: RunConfig,
  log: Logger,
): Promise<{ cert: string; key: string } | undefined> {
  if (cfg.registration !== "none") {
    if (cfg.tlsCertFile || cfg.tlsPrivateKeyFile) {
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        "--tls-cert-file/--tls-private-key-file need --registration=none (otherwise Governor manages the certificate)",
      );
    }
    return undefined;
  }
  if (cfg.tlsCertFile && cfg.tlsPrivateKeyFile) {
    return { cert: readFileSync(cfg.tlsCertFile, "utf8"), key: readFileSync(cfg.tlsPrivateKeyFile, "utf8") };
  }
  if (cfg.tlsCertFile || cfg.tlsPrivateKeyFile) {
    throw new GovernorError("GOV_ERR_CONFIG", "--tls-cert-file and --tls-private-key-file go together");
  }
  // Like kube-apiserver without --tls-cert-file: a self-signed certificate for this process.
  log.warn(
    "no --tls-cert-file given: serving an in-memory self-signed certificate (aggregator registration needs its CA)",
  );
  const ca = await createCA(`${cfg.serviceName}-selfsigned-ca`, { validDays: 365 });
  return issueCertificate(ca, {
    commonName: `${cfg.serviceName}.${cfg.namespace}.svc`,
    dnsNames: [...serviceDnsNames(cfg.namespace, cfg.serviceName), "localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
}

/** The --forward-* flags: per API, the upstream's Service and its CA (read from the file given). */
function forwardConfig(
  cfg: RunConfig,
): Partial<Record<ForwardedApi, { service: UpstreamService; ca?: string }>> {
  const out: Partial<Record<ForwardedApi, { service: UpstreamService; ca?: string }>> = {};
  for (const [api, service, caFile] of [
    ["custom", cfg.forwardCustom, cfg.forwardCustomCaFile],
    ["external", cfg.forwardExternal, cfg.forwardExternalCaFile],
  ] as const) {
    if (caFile && !service)
      throw new GovernorError("GOV_ERR_CONFIG", `--forward-${api}-ca-file needs --forward-${api}`);
    if (!service) continue;
    if (cfg.apis !== "all" && cfg.apis !== api)
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        `--forward-${api} needs Governor to serve the ${api} metrics API (--apis)`,
      );
    if (cfg.registration === "none" && !caFile)
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        `--forward-${api} with --registration=none needs --forward-${api}-ca-file (the upstream's CA is otherwise read from the APIService Governor takes over)`,
      );
    let ca: string | undefined;
    try {
      ca = caFile ? readFileSync(caFile, "utf8") : undefined;
    } catch (err) {
      throw new GovernorError("GOV_ERR_CONFIG", `--forward-${api}-ca-file: ${(err as Error).message}`);
    }
    out[api] = { service, ...(ca ? { ca } : {}) };
  }
  return out;
}

async function run(cfg: RunConfig): Promise<void> {
  // ISO 8601 times (what people grep for); `component` is set once, by each part's child logger.
  const log = pino({ level: cfg.logLevel, timestamp: pino.stdTimeFunctions.isoTime });
  const forward = forwardConfig(cfg); // a bad flag is reported before anything connects
  const client = new KubeClient(loadKubeConfig(cfg.kubeconfig));
  // Run beside a local apiserver (which has 6443), Governor takes the next usual port.
  const securePort = cfg.securePort ?? (cfg.registration === "local" ? 8443 : 6443);
  const tls = await loadServingCert(cfg, log);
  const operator = await startOperator({
    client,
    namespace: cfg.namespace,
    leaderElect: cfg.leaderElect,
    fairDispatch: cfg.fairDispatch,
    registration: {
      mode: cfg.registration,
      serviceName: cfg.serviceName,
      port: cfg.servicePort ?? (cfg.registration === "local" ? securePort : 443),
      takeOver: cfg.takeOverApiservices,
    },
    logger: log,
    tls,
    host: cfg.bindAddress,
    port: securePort,
    apis: { custom: cfg.apis !== "external", external: cfg.apis !== "custom" },
    shutdownDelayMs: cfg.shutdownDelay * 1000,
    sourcePolicy: destinationPolicy({ allow: cfg.sourceAllowCidrs, deny: cfg.sourceDenyCidrs }),
    sourceMaxResponseBytes: cfg.sourceMaxResponseBytes,
    answerCacheBytes: cfg.answerCacheSize,
    sampleSlotMs: cfg.sampleSlot,
    historyPoints: cfg.historyPoints,
    historyMemoryBytes: cfg.historyMemory,
    clusterWideCounts: cfg.allowClusterWideCounts,
    hostNetworkScrape: cfg.allowHostNetworkScrape,
    backendQps: { qps: cfg.sourceBackendQps, overrides: cfg.sourceBackendQpsOverrides },
    prometheusScope: {
      namespaceLabel: cfg.allowUnscopedPrometheusQueries ? null : cfg.prometheusNamespaceLabel,
      tenantHeader: cfg.prometheusTenantHeader,
      tenantFromNamespace: cfg.prometheusTenantFromNamespace,
    },
    forward,
    hpa: {
      syncPeriodMs: cfg.horizontalPodAutoscalerSyncPeriod,
      controller: {
        ...DEFAULT_CONTROLLER,
        tolerance: cfg.horizontalPodAutoscalerTolerance,
        downscaleStabilizationSeconds: cfg.horizontalPodAutoscalerDownscaleStabilization / 1000,
      },
    },
    metricsEndpoint: { port: cfg.metricsPort, host: cfg.metricsBindAddress },
    ...(cfg.otlpPort > 0
      ? {
          otlp: {
            port: cfg.otlpPort,
            host: cfg.bindAddress,
            audience: cfg.otlpAudience,
            maxRequestBytes: cfg.otlpMaxRequestBytes,
            pointsPerSecond: cfg.otlpPointsPerSecond,
            maxSeriesPerNamespace: cfg.otlpMaxSeriesPerNamespace,
            // This replica's pod (the downward API's POD_NAME), to find the others by.
            ...(process.env.POD_NAME ? { podName: process.env.POD_NAME } : {}),
          },
        }
      : {}),
    ...(cfg.tlsCertFile && cfg.tlsPrivateKeyFile
      ? { tlsFiles: { cert: cfg.tlsCertFile, key: cfg.tlsPrivateKeyFile } }
      : {}),
  });
  log.info({ port: operator.metricsAddress?.port }, "serving /metrics");

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    void (async () => {
      await operator.stop();
      await client.close();
      process.exit(0);
    })();
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

function program(): Command {
  const cmd = new Command("governor")
    .description("Lets the Horizontal Pod Autoscaler scale on any metric.")
    .version(VERSION)
    .showHelpAfterError();
  cmd
    .command("run")
    .description(
      "Run the operator: serve custom.metrics.k8s.io and external.metrics.k8s.io to the kube-aggregator.",
    )
    .option(
      "--kubeconfig <path>",
      "kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)",
    )
    .addOption(
      new Option("--namespace <ns>", "namespace Governor runs in")
        .env("POD_NAMESPACE")
        .default("governor-system"),
    )
    .option(
      "--service-name <name>",
      "name of the Service in front of Governor (certificate DNS names)",
      "governor",
    )
    .option("--bind-address <addr>", "address of the HTTPS metrics API", "0.0.0.0")
    .option(
      "--secure-port <port>",
      "port of the HTTPS metrics API (default: 6443; with --registration=local 8443, as a local apiserver has 6443)",
    )
    .option("--metrics-bind-address <addr>", "address of the Prometheus /metrics endpoint", "0.0.0.0")
    .option("--metrics-port <port>", "port of the Prometheus /metrics endpoint (plain HTTP)", "8080")
    .option("--tls-cert-file <path>", "serving certificate (PEM); reloaded when it changes")
    .option("--tls-private-key-file <path>", "serving certificate's private key (PEM)")
    .addOption(
      new Option("--apis <which>", "which metrics APIs to serve")
        .choices(["all", "custom", "external"])
        .default("all"),
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .choices(["fatal", "error", "warn", "info", "debug", "trace"])
        .default("info"),
    )
    .option("--shutdown-delay <seconds>", "seconds /readyz fails before the server stops on SIGTERM", "5")
    .option("--no-leader-elect", "write status without electing a leader (only when a single replica runs)")
    .option(
      "--no-fair-dispatch",
      "answer requests in arrival order instead of sharing the event loop out fairly among users (ADR 0010)",
    )
    .addOption(
      new Option(
        "--registration <mode>",
        "cluster: manage Secret, ClusterIP Service and APIServices; local: same with an ExternalName Service to localhost; none: ship them yourself",
      )
        .choices(["cluster", "local", "none"])
        .default("cluster"),
    )
    .option(
      "--service-port <port>",
      "port of the Service the APIServices point at (default: 443; local: --secure-port)",
    )
    .option(
      "--source-allow-cidrs <cidrs>",
      "comma-separated CIDRs sources may reach although refused by default (loopback, link-local/metadata, unspecified, multicast), e.g. 127.0.0.0/8 on a laptop",
    )
    .option(
      "--source-deny-cidrs <cidrs>",
      "comma-separated CIDRs sources may never reach (e.g. the node network); wins over --source-allow-cidrs",
    )
    .option(
      "--source-max-response-bytes <size>",
      "the most a source may answer (Prometheus, HTTP, one scraped pod), 1Ki to 256Mi; a larger answer is a source error, never buffered whole. Up to 16 pods are scraped at once per mapping: keep 16 × this well inside the memory limit",
      "10Mi",
    )
    .option(
      "--sample-slot <duration>",
      "samplers start on a grid of this much time (0s to 1s; at most a tenth of a mapping's interval), so those due within one slot share a turn of the event loop: less CPU per sample, each at most half a slot off its interval. 0s starts each at its own moment",
      "100ms",
    )
    .option(
      "--answer-cache-size <size>",
      "memory for selector answers kept for reuse while their sample and pods are unchanged (0 to 1Gi; 0 builds every answer anew)",
      "32Mi",
    )
    .option(
      "--history-points <n>",
      `samples kept per MetricMapping for governor replay, served as history.governor.dev (0 to ${MAX_HISTORY_POINTS}; 0 keeps none and registers no history API). 20 bytes a point: 2880 keep 12 h of a 15 s interval, 56 KiB a mapping`,
      "0",
    )
    .option(
      "--history-memory <size>",
      "the most memory all kept samples may hold (1Mi to 4Gi); past it each mapping keeps what it has and wraps there. Count it in the memory limit",
      "64Mi",
    )
    .option(
      "--source-backend-qps <qps>",
      "queries per second sources may send one backend (a Prometheus, an HTTP endpoint: its scheme, host and port), shared by every mapping that queries it; past it samples wait their turn, round the namespaces, and intervals stretch (0: no budget)",
      String(DEFAULT_BACKEND_QPS),
    )
    .option(
      "--source-backend-qps-overrides <list>",
      "budgets of named backends, comma-separated origin=qps (e.g. http://prometheus.monitoring:9090=50,https://mimir.example=400)",
    )
    .option(
      "--allow-cluster-wide-counts",
      "let kubernetes-count sources read all namespaces or cluster-scoped resources (with Governor's rights, which it then needs)",
      false,
    )
    .option(
      "--prometheus-namespace-label <label>",
      "the series label that names a namespace: every selector of a mapping's Prometheus query is bound to the mapping's namespace by it",
      "namespace",
    )
    .option(
      "--allow-unscoped-prometheus-queries",
      "send mappings' Prometheus queries as written, not bound to their namespace (single-tenant clusters only: any mapping can then read any namespace's series)",
      false,
    )
    .option(
      "--prometheus-tenant-header <name>",
      "the header a prometheus source's tenant is sent in (Cortex, Mimir, Loki; THANOS-TENANT for Thanos receive)",
      DEFAULT_TENANT_HEADER,
    )
    .option(
      "--prometheus-tenant-from-namespace",
      "make every prometheus query's tenant its mapping's namespace (a multi-tenant Cortex, Mimir or Thanos with one tenant per namespace): a mapping cannot name another tenant",
      false,
    )
    .option(
      "--allow-host-network-scrape",
      "let scrape sources read pods that use their node's network (the port a mapping names is then any of the node's)",
      false,
    )
    .option(
      "--otlp-port <port>",
      `port of the OTLP/HTTP metrics receiver (HTTPS with the serving certificate; ${OTLP_HTTP_PORT} is OTLP's own), for otlp sources; 0: off`,
      "0",
    )
    .option(
      "--otlp-audience <name>",
      "the audience pushers' service-account tokens must be issued for (a projected token's audience)",
      DEFAULT_OTLP_AUDIENCE,
    )
    .option(
      "--otlp-max-request-bytes <size>",
      "the largest OTLP export, compressed or inflated (64Ki to 64Mi); larger ones are answered 413",
      "4Mi",
    )
    .option(
      "--otlp-points-per-second <n>",
      "data points one namespace may push per second on average (twice that at once); past it pushes are answered 429",
      "10000",
    )
    .option(
      "--otlp-max-series-per-namespace <n>",
      "the most OTLP series one namespace keeps (of the metrics its mappings read); points of new series past it are rejected",
      "10000",
    )
    .option(
      "--horizontal-pod-autoscaler-sync-period <duration>",
      "how often a ScalableWorkload's status.recommendation is made: set it as kube-controller-manager's flag of the same name is",
      "15s",
    )
    .option(
      "--horizontal-pod-autoscaler-tolerance <ratio>",
      "the tolerance recommendations use where an HPA's behavior sets none: as kube-controller-manager's flag of the same name",
      "0.1",
    )
    .option(
      "--horizontal-pod-autoscaler-downscale-stabilization <duration>",
      "the scale-down window recommendations use where an HPA's behavior sets none: as kube-controller-manager's flag of the same name",
      "5m0s",
    )
    .option(
      "--take-over-apiservices",
      "replace APIServices that point at another Service (e.g. a previous adapter)",
      false,
    )
    .option(
      "--forward-custom <namespace/name:port>",
      "pass every custom-metrics request Governor does not serve to this Service's adapter (e.g. prometheus-adapter); its APIService is taken over and given back on uninstall (ADR 0011)",
    )
    .option(
      "--forward-external <namespace/name:port>",
      "pass every external-metrics request Governor does not serve to this Service's adapter (e.g. keda/keda-operator-metrics-apiserver:443); its APIService is taken over and given back on uninstall",
    )
    .option(
      "--forward-custom-ca-file <path>",
      "CA (PEM) of the --forward-custom adapter's serving certificate (default: the caBundle of the APIService taken over)",
    )
    .option(
      "--forward-external-ca-file <path>",
      "CA (PEM) of the --forward-external adapter's serving certificate (default: the caBundle of the APIService taken over)",
    )
    .action(async (opts: Record<string, unknown>) => {
      await run(parseConfig(RunConfig, opts));
    });
  cmd
    .command("uninstall")
    .description(
      "Remove what Governor registered at run time: the APIServices first (so cluster discovery never breaks), then its Service and certificate Secret.",
    )
    .option("--kubeconfig <path>", "kubeconfig to use")
    .addOption(
      new Option("--namespace <ns>", "namespace Governor runs in")
        .env("POD_NAMESPACE")
        .default("governor-system"),
    )
    .option("--service-name <name>", "name of Governor's Service", "governor")
    .option("--lease-name <name>", "name of Governor's leader Lease", DEFAULT_LEASE_NAME)
    .option("--force", "remove even while a Governor is running (it will register again)", false)
    .option(
      "--stop-deployment <name>",
      "first delete this Deployment of Governor (in --namespace) and wait until its pods are gone; for the Helm chart's pre-delete hook",
    )
    .action(async (opts: Record<string, unknown>) => {
      const cfg = parseConfig(
        z.strictObject({
          kubeconfig: z.string().optional(),
          namespace: z.string().min(1),
          serviceName: z.string().min(1),
          leaseName: z.string().min(1),
          force: z.boolean(),
          stopDeployment: ObjectName.optional(),
        }),
        opts,
      );
      const client = new KubeClient(loadKubeConfig(cfg.kubeconfig));
      try {
        const done = await uninstall(client, { ...cfg, progress: (line) => console.error(line) });
        for (const line of done) console.log(line);
        if (done.length === 0) console.log("nothing to remove");
      } finally {
        await client.close();
      }
    });
  cmd
    .command("kubeconfig")
    .description(
      "Print a kubeconfig for Governor's ServiceAccount (a bound token from the TokenRequest API), to run Governor outside the cluster with the RBAC its Deployment has.",
    )
    .option(
      "--kubeconfig <path>",
      "kubeconfig of someone allowed to create tokens (default: $KUBECONFIG, ~/.kube/config)",
    )
    .addOption(
      new Option("--namespace <ns>", "namespace of the ServiceAccount")
        .env("POD_NAMESPACE")
        .default("governor-system"),
    )
    .option("--service-account <name>", "the ServiceAccount", "governor")
    .option(
      "--duration <duration>",
      "how long the token is valid, 10m to 48h (the apiserver may shorten it)",
      "24h",
    )
    .action(async (opts: Record<string, unknown>) => {
      const cfg = parseConfig(
        z.strictObject({
          kubeconfig: z.string().optional(),
          namespace: NamespaceName,
          serviceAccount: ObjectName,
          duration: z
            .string()
            .regex(/^([0-9]+(s|m|h))+$/, "must be a duration such as 30m or 24h")
            .transform((d) => Math.round(durationMs(d) / 1000))
            .refine((s) => s >= 600 && s <= 48 * 3600, "must be between 10m and 48h"),
        }),
        opts,
      );
      const client = new KubeClient(loadKubeConfig(cfg.kubeconfig));
      try {
        process.stdout.write(
          await serviceAccountKubeconfig(client, {
            namespace: cfg.namespace,
            serviceAccount: cfg.serviceAccount,
            expirationSeconds: cfg.duration,
          }),
        );
      } finally {
        await client.close();
      }
    });
  cmd
    .command("explain")
    .description(
      "Follow the chain an HPA uses for each of its metrics (APIService, discovery, MetricMapping, value, RBAC, scale target) and print each link ✓/✗ with the fix. Exits 1 if a link is broken.",
    )
    .argument("<target>", "hpa/NAME, mm/NAME or sw/NAME")
    .option(
      "-n, --namespace <ns>",
      "the target's namespace (default: the kubeconfig context's, else default)",
    )
    .option("--kubeconfig <path>", "kubeconfig to use")
    .option("--governor-namespace <ns>", "namespace of Governor's Service", "governor-system")
    .option("--service-name <name>", "Governor's Service", "governor")
    .option("--hpa-user <user>", "the identity the HPA controller reads metrics as", DEFAULT_HPA_USER.name)
    .action(async (target: string, opts: Record<string, unknown>) => {
      const cfg = parseConfig(
        z.strictObject({
          target: z
            .string()
            .regex(
              /^(hpa|horizontalpodautoscaler|mm|metricmapping|sw|scalableworkload)s?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/,
              "must be hpa/NAME, mm/NAME or sw/NAME",
            ),
          namespace: NamespaceName.optional(),
          kubeconfig: z.string().optional(),
          governorNamespace: z.string().min(1),
          serviceName: z.string().min(1),
          hpaUser: z.string().min(1),
        }),
        { ...opts, target },
      );
      const kc = loadKubeConfig(cfg.kubeconfig);
      const [kindText = "", name = ""] = cfg.target.split("/");
      const kind = kindText.startsWith("h") ? "hpa" : kindText.startsWith("m") ? "mm" : "sw";
      const namespace = cfg.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default";
      const sa = /^system:serviceaccount:([^:]+):[^:]+$/.exec(cfg.hpaUser);
      const client = new KubeClient(kc);
      try {
        const sections = await explain(
          client,
          { kind, name, namespace },
          {
            hpaUser: {
              name: cfg.hpaUser,
              groups: sa
                ? ["system:serviceaccounts", `system:serviceaccounts:${sa[1]}`, "system:authenticated"]
                : ["system:authenticated"],
            },
            governorService: { namespace: cfg.governorNamespace, name: cfg.serviceName },
          },
        );
        process.stdout.write(render(sections));
        process.exitCode = broken(sections) ? 1 : 0;
      } finally {
        await client.close();
      }
    });
  cmd
    .command("simulate")
    .description(
      "Print the replicas an HPA's next sync would choose from the values the metrics APIs answer now, metric by metric, computed as kube-controller-manager 1.37 (default flags) computes them — if the controller remembers no recent recommendation or scale change that holds it back. Only reads, as your kubeconfig's user.",
    )
    .argument("<target>", "hpa/NAME or sw/NAME (the HPA Governor writes for a ScalableWorkload)")
    .option(
      "-n, --namespace <ns>",
      "the target's namespace (default: the kubeconfig context's, else default)",
    )
    .option("--kubeconfig <path>", "kubeconfig to use")
    .option(
      "--set <metric=value>",
      "what if this metric's value were this quantity (for a Pods metric: every pod's); repeatable",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("-o, --output <format>", "text or json", "text")
    .action(async (target: string, opts: Record<string, unknown>) => {
      const cfg = parseConfig(
        z.strictObject({
          target: z
            .string()
            .regex(
              /^(hpa|horizontalpodautoscaler|sw|scalableworkload)s?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/,
              "must be hpa/NAME or sw/NAME",
            ),
          namespace: NamespaceName.optional(),
          kubeconfig: z.string().optional(),
          set: z.array(z.string()).max(64).optional(),
          output: z.enum(["text", "json"]),
        }),
        { ...opts, target },
      );
      const kc = loadKubeConfig(cfg.kubeconfig);
      const [kindText = "", name = ""] = cfg.target.split("/");
      const namespace = cfg.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default";
      const client = new KubeClient(kc);
      try {
        const s = await simulate(
          client,
          { kind: kindText.startsWith("h") ? "hpa" : "sw", name, namespace },
          parseSet(cfg.set ?? []),
        );
        process.stdout.write(
          cfg.output === "json"
            ? `${JSON.stringify(s, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2)}\n`
            : renderSimulation(s),
        );
      } catch (err) {
        if (!(err instanceof SimulateError)) throw err;
        console.error(`governor: ${err.message}`);
        process.exitCode = 1;
      } finally {
        await client.close();
      }
    });
  cmd
    .command("replay")
    .description(
      "Replay the HPA's algorithm over a stretch of history: each metric's values from Prometheus (range queries of the MetricMappings' prometheus sources, bound to the namespace as Governor binds them) or, for other sources, from the samples Governor kept (--history-points), and the replicas it would have chosen at each sync, with --set changes. Only reads, as your kubeconfig's user.",
    )
    .argument("<target>", "hpa/NAME or sw/NAME (a ScalableWorkload's spec.autoscaling, in either mode)")
    .option(
      "-n, --namespace <ns>",
      "the target's namespace (default: the kubeconfig context's, else default)",
    )
    .option("--kubeconfig <path>", "kubeconfig to use")
    .option("--since <duration>", "how far back (e.g. 1h, 30m; at most 7 days)", "1h")
    .option(
      "--step <duration>",
      "the sync period replayed (kube-controller-manager's, 15s by default)",
      "15s",
    )
    .option(
      "--set <key=value>",
      "replay with a change: METRIC=TARGET, minReplicas=N, maxReplicas=N, tolerance=Q, scaleUp.stabilizationWindowSeconds=S, scaleDown.stabilizationWindowSeconds=S; repeatable",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      "--prometheus-url <url>",
      "ask this Prometheus (e.g. a port-forward) instead of each mapping's Service through the apiserver's service proxy",
    )
    .option(
      "--prometheus-namespace-label <label>",
      "as Governor's flag: the series label queries are bound by",
      "namespace",
    )
    .addOption(
      new Option(
        "--from <where>",
        "auto: Prometheus for prometheus sources, Governor's kept samples for the others; prometheus: prometheus sources only; history: Governor's kept samples for every metric",
      )
        .choices(REPLAY_FROM)
        .default("auto"),
    )
    .option("-o, --output <format>", "text, json or svg (the chart)", "text")
    .action(async (target: string, opts: Record<string, unknown>) => {
      const cfg = parseConfig(
        z.strictObject({
          target: z
            .string()
            .regex(/^(hpa|sw)\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/, "must be hpa/NAME or sw/NAME"),
          namespace: NamespaceName.optional(),
          kubeconfig: z.string().optional(),
          since: DurationFlag(60_000, 7 * 24 * 3_600_000),
          step: DurationFlag(1_000, 3_600_000),
          set: z
            .array(z.string().regex(/^[A-Za-z0-9_:.-]{1,253}=[^=]{1,64}$/, "must be key=value"))
            .max(64)
            .optional(),
          prometheusUrl: z.url().optional(),
          prometheusNamespaceLabel: z
            .string()
            .regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, "must be a Prometheus label name"),
          output: z.enum(["text", "json", "svg"]),
          from: z.enum(REPLAY_FROM),
        }),
        { ...opts, target },
      );
      const kc = loadKubeConfig(cfg.kubeconfig);
      const namespace = cfg.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default";
      const client = new KubeClient(kc);
      try {
        const r = await replayTarget(client, {
          target: cfg.target,
          namespace,
          sinceMs: cfg.since,
          stepMs: cfg.step,
          set: new Map((cfg.set ?? []).map((kv) => kv.split("=") as [string, string])),
          namespaceLabel: cfg.prometheusNamespaceLabel,
          from: cfg.from,
          ...(cfg.prometheusUrl ? { prometheusUrl: cfg.prometheusUrl } : {}),
        });
        process.stdout.write(
          cfg.output === "svg"
            ? `${r.svg}\n`
            : cfg.output === "json"
              ? `${JSON.stringify({ ...r, svg: undefined }, null, 2)}\n`
              : renderReplay(r),
        );
      } catch (err) {
        if (!(err instanceof ReplayError)) throw err;
        console.error(`governor: ${err.message}`);
        process.exitCode = 1;
      } finally {
        await client.close();
      }
    });
  return cmd;
}

program()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    if (err instanceof GovernorError) console.error(`governor: ${err.message}`);
    else console.error(err);
    process.exit(1);
  });
