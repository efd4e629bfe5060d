/**
 * Forwarding to an upstream metrics adapter (ADR 0011): the metrics API's delegate. Governor
 * holds an APIService and passes every request for a metric it does not serve itself to the
 * adapter that held the APIService before (KEDA's metrics server, prometheus-adapter…),
 * named by its Service.
 *
 * - The caller has been authorized by Governor for exactly this path before a request gets
 *   here (server.ts, as for Governor's own metrics); the upstream is called *as Governor*,
 *   with the credentials of its Kubernetes client, and authorizes Governor in turn.
 * - The upstream is dialled as the aggregator dials a Service: its ClusterIP (or an
 *   ExternalName's host) on the Service port, TLS checked against the upstream's CA for the
 *   name `<service>.<namespace>.svc`, over a keep-alive pool. Without a CA Governor does
 *   not send its credentials at all.
 * - The upstream's metrics are read for discovery in the background (every 30 s) and kept
 *   while it is down, so Governor's own metrics and discovery never wait on it; a forwarded
 *   request to an upstream that is down is a 503 that names the upstream.
 */
import { parseGroupResource } from "../api/group-resource.js";
import type { Logger } from "pino";
import { Agent } from "undici";
import { GovernorError } from "../errors.js";
import type { ClientIdentity, KubeApi } from "../k8s/client.js";
import { type CustomMetricInfo, type ExternalMetricInfo } from "../metrics/provider.js";
import { networkErrorText } from "../sources/http-client.js";
import type { Cancellation } from "../util/deadline.js";
import {
  customId,
  type ApiResponse,
  type DelegatedRequest,
  type MetricsDelegate,
  type RouteKind,
} from "../apiserver/metrics-api.js";
import { JsonText, statusBody } from "../apiserver/wire.js";

/** Which metrics API an upstream answers for. */
export type ForwardedApi = "custom" | "external";

/** The Service an upstream adapter is reached through. */
export interface UpstreamService {
  namespace: string;
  name: string;
  port: number;
}

/** Query parameters the metrics APIs read; only these are passed on. */
const FORWARDED_PARAMS = ["labelSelector", "metricLabelSelector"];

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** `namespace/name:port` → {@link UpstreamService}; anything else is a GOV_ERR_CONFIG. */
export function parseUpstreamService(text: string): UpstreamService {
  const m = /^([^/]+)\/([^:]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !DNS_LABEL.test(m[1]!) || !DNS_LABEL.test(m[2]!) || port < 1 || port > 65535)
    throw new GovernorError(
      "GOV_ERR_CONFIG",
      `"${text.slice(0, 100)}" is not a Service as namespace/name:port (e.g. keda/keda-operator-metrics-apiserver:443)`,
    );
  return { namespace: m[1]!, name: m[2]!, port };
}

/** How the upstream's serving certificate is checked: its CA (PEM), or not at all (never used to send credentials). */
export type UpstreamTrust = { ca: string; from: string } | { insecure: true; from: string };

/** The upstream could not be asked (answered 503 ServiceUnavailable, naming it). */
export class UpstreamUnavailableError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_UPSTREAM_UNAVAILABLE", message);
  }
}

/** Options of {@link Upstream}. */
export interface UpstreamOptions {
  api: ForwardedApi;
  /** `custom.metrics.k8s.io` or `external.metrics.k8s.io`. */
  group: string;
  /** The versions Governor serves for the group (discovery reads each). */
  versions: readonly string[];
  service: UpstreamService;
  /** Reads the upstream's Service. */
  client: Pick<KubeApi, "getOrUndefined">;
  /** Governor's own credentials (see {@link KubeClient.identity}). */
  identity: () => Promise<ClientIdentity>;
  logger: Logger;
  /** The upstream's CA given by flag; else the one registration finds ({@link Upstream.setTrust}). */
  ca?: string;
  /** How long one forwarded request may take. @default 10000 */
  timeoutMs?: number;
  /** The largest answer taken from the upstream. @default 16 MiB */
  maxResponseBytes?: number;
  /** How often the upstream's discovery is read. @default 30000 */
  discoveryIntervalMs?: number;
  /** The most metrics taken from the upstream's discovery. @default 20000 */
  maxDiscoveredMetrics?: number;
  /** Called when the upstream's list of metrics changed. */
  onDiscoveryChange?: () => void;
  /** Its name in messages (default: "the upstream … adapter (Service …)"). */
  description?: string;
  /**
   * The CA comes from its owner ({@link Upstream.useCA}: a MetricsUpstream's Secret), never
   * from an APIService. @default false
   */
  ownCA?: boolean;
  /** Where a user gives the CA, in messages. @default "--forward-{api}-ca-file" */
  caHint?: string;
  /** Called after each forwarded request: the upstream's status code, or "error" when it could not be asked. */
  observe?: (outcome: number | "error", seconds: number) => void;
}

interface ServiceObject {
  spec?: { type?: string; clusterIP?: string; externalName?: string; ports?: { port?: number }[] };
}

const ADDRESS_TTL_MS = 30_000;

/** Equal for the same trust, whichever APIService it was read from. */
const trustKey = (t: UpstreamTrust | undefined) =>
  t === undefined ? "" : "ca" in t ? `ca:${t.ca}` : "insecure";

/** See the module comment. */
export class Upstream implements MetricsDelegate {
  readonly description: string;
  private trust?: UpstreamTrust;
  private pool?: { agent: Agent; key: string };
  private address?: { origin: string; at: number };
  private resolving?: Promise<string>;
  private custom: CustomMetricInfo[] = [];
  private external: ExternalMetricInfo[] = [];
  /** The same names as sets, for {@link serves} (asked once per mapping on every resync). */
  private customIds = new Set<string>();
  private externalNames = new Set<string>();
  private mergedCustom?: { own: unknown; theirs: unknown; list: readonly CustomMetricInfo[] };
  private mergedExternal?: { own: unknown; theirs: unknown; list: readonly ExternalMetricInfo[] };
  private discoveredAt = 0;
  private timer?: NodeJS.Timeout;
  private started = false;
  private stopped = false;
  private refreshing?: Promise<void>;
  /** Why the last discovery read failed, if it did (for /readyz warnings and the log). */
  lastError?: string;
  /** How long the last discovery read took, in ms (undefined: none finished yet). */
  lastDiscoveryMs?: number;
  private readonly log: Logger;

  constructor(private readonly opts: UpstreamOptions) {
    const s = opts.service;
    this.description =
      opts.description ??
      `the upstream ${opts.api} metrics adapter (Service ${s.namespace}/${s.name}:${s.port})`;
    this.log = opts.logger.child({ component: "upstream", api: opts.api });
    if (opts.ca) this.trust = { ca: opts.ca, from: "--forward-*-ca-file" };
  }

  /** The TLS server name the upstream's certificate must carry, as the aggregator checks it. */
  get serverName(): string {
    return `${this.opts.service.name}.${this.opts.service.namespace}.svc`;
  }

  /** The CA found in the upstream's APIService (ignored when one was given by flag). */
  setTrust(trust: UpstreamTrust | undefined): void {
    if (this.opts.ca || this.opts.ownCA) return;
    this.trustIs(trust);
  }

  /** The CA its owner read ({@link UpstreamOptions.ownCA}); undefined: not known (requests answer 503). */
  useCA(ca: string | undefined, from: string): void {
    this.trustIs(ca === undefined ? undefined : { ca, from });
  }

  private trustIs(trust: UpstreamTrust | undefined): void {
    if (trustKey(trust) === trustKey(this.trust)) return;
    const first = this.trust === undefined;
    this.trust = trust;
    // The first CA known: read discovery now (after a read that found none), not in 30 s.
    if (first && trust && this.started && !this.stopped)
      void (this.refreshing ?? Promise.resolve()).then(() => this.refresh()).catch(() => {});
  }

  /** Reads discovery now and then every interval. */
  start(): void {
    this.started = true;
    const tick = () => {
      if (this.stopped) return;
      void this.refresh()
        // readDiscovery keeps its own errors; anything else is logged, and never ends the loop.
        .catch((err: unknown) =>
          this.log.error({ err: String(err) }, "reading the upstream's discovery failed"),
        )
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.opts.discoveryIntervalMs ?? 30_000);
        });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.refreshing;
    await this.pool?.agent.close();
  }

  /** How many metrics it listed when last read. */
  get metricCount(): number {
    return this.custom.length + this.external.length;
  }

  /** The upstream's custom metrics as last read (the same array until they change). */
  listCustomMetrics(): readonly CustomMetricInfo[] {
    return this.custom;
  }

  /** The upstream's external metrics as last read. */
  listExternalMetrics(): readonly ExternalMetricInfo[] {
    return this.external;
  }

  mergeCustom(own: readonly CustomMetricInfo[]): readonly CustomMetricInfo[] {
    const theirs = this.custom;
    const hit = this.mergedCustom;
    if (hit?.own === own && hit.theirs === theirs) return hit.list;
    const ids = new Set(own.map(customId));
    const list = [...own, ...theirs.filter((m) => !ids.has(customId(m)))];
    this.mergedCustom = { own, theirs, list };
    return list;
  }

  mergeExternal(own: readonly ExternalMetricInfo[]): readonly ExternalMetricInfo[] {
    const theirs = this.external;
    const hit = this.mergedExternal;
    if (hit?.own === own && hit.theirs === theirs) return hit.list;
    const names = new Set(own.map((m) => m.metric));
    const list = [...own, ...theirs.filter((m) => !names.has(m.metric))];
    this.mergedExternal = { own, theirs, list };
    return list;
  }

  /**
   * Passes a request on: the same path, segment for segment, as Governor authorized it (a
   * segment that would read differently once decoded again — `/`, `.`, `..` — is refused,
   * not forwarded), and only the query parameters the metrics APIs define.
   */
  serve(req: DelegatedRequest): Promise<ApiResponse> {
    if (req.rest.some((s) => s.includes("/") || s === "." || s === ".."))
      return Promise.resolve({
        status: 400,
        body: statusBody(400, "BadRequest", "a path segment holds '/' or is '.' or '..'"),
        kind: req.kind,
      });
    const params = new URLSearchParams();
    for (const p of FORWARDED_PARAMS) {
      const v = req.query.get(p);
      if (v !== null) params.set(p, v);
    }
    const search = params.toString();
    const segments = req.rest.map((s) => encodeURIComponent(s)).join("/");
    return this.forward(
      `/apis/${req.group}/${req.version}/${segments}${search ? `?${search}` : ""}`,
      req.kind,
      req.cancel,
    );
  }

  /** Whether the upstream listed this metric (`pods/rps` for custom, the name for external) when last read. */
  serves(api: ForwardedApi, name: string): boolean {
    return (api === "custom" ? this.customIds : this.externalNames).has(name);
  }

  /** When discovery was last read successfully (ms since the epoch; 0: never). */
  get lastDiscovery(): number {
    return this.discoveredAt;
  }

  /**
   * Asks the upstream for `path` (checked and encoded by {@link serve}) and hands its
   * answer back as it is: status and JSON body. Throws {@link UpstreamUnavailableError}
   * when it cannot be asked or does not answer in time, or the request's cancellation.
   */
  private async forward(path: string, kind: RouteKind, cancel?: Cancellation): Promise<ApiResponse> {
    const started = performance.now();
    let r;
    try {
      r = await this.get(path, cancel);
    } catch (err) {
      this.opts.observe?.("error", (performance.now() - started) / 1000);
      throw err;
    }
    this.opts.observe?.(r.status, (performance.now() - started) / 1000);
    if (!/^application\/json\b/i.test(r.contentType))
      throw new UpstreamUnavailableError(
        `${this.description} answered ${r.status} with ${JSON.stringify(r.contentType.slice(0, 60))}, not JSON`,
      );
    return { status: r.status, body: new JsonText(r.text), kind, forwarded: true };
  }

  private async get(
    path: string,
    cancel?: Cancellation,
  ): Promise<{ status: number; text: string; contentType: string }> {
    if (this.stopped)
      throw new UpstreamUnavailableError(`${this.description} was replaced or removed: ask again`);
    const trust = this.trust;
    if (!trust)
      throw new UpstreamUnavailableError(
        this.opts.ownCA
          ? `${this.description}: its CA could not be read (see its status)`
          : `${this.description}: its CA is not known yet (Governor reads it from the APIService it takes over, or from ${this.opts.caHint ?? `--forward-${this.opts.api}-ca-file`})`,
      );
    if ("insecure" in trust)
      throw new UpstreamUnavailableError(
        `${this.description}: its APIService had insecureSkipTLSVerify and no caBundle, and Governor does not send its credentials over an unchecked connection; give the upstream's CA with ${this.opts.caHint ?? `--forward-${this.opts.api}-ca-file`}`,
      );
    const [origin, identity] = await Promise.all([this.resolve(), this.opts.identity()]);
    const gone = cancel?.reason?.();
    if (gone) throw gone;
    const agent = this.agent(trust.ca, identity);
    const timeoutMs = this.opts.timeoutMs ?? 10_000;
    let res;
    try {
      res = await agent.request({
        origin,
        path,
        method: "GET",
        headers: { ...identity.headers, accept: "application/json" },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      this.address = undefined; // resolve again: the Service may have changed
      throw new UpstreamUnavailableError(`${this.description} is unavailable: ${networkErrorText(err)}`);
    }
    const limit = this.opts.maxResponseBytes ?? 16 << 20;
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > limit) {
          res.body.destroy();
          throw new UpstreamUnavailableError(
            `${this.description} answered more than ${limit >> 20} MiB; not passed on`,
          );
        }
        chunks.push(chunk);
      }
    } catch (err) {
      if (err instanceof UpstreamUnavailableError) throw err;
      throw new UpstreamUnavailableError(`${this.description} is unavailable: ${networkErrorText(err)}`);
    }
    const contentType = String(res.headers["content-type"] ?? "");
    return { status: res.statusCode, text: Buffer.concat(chunks).toString("utf8"), contentType };
  }

  /** `https://host:port` of the Service, as the aggregator would dial it (cached 30 s). */
  private resolve(): Promise<string> {
    if (this.address && Date.now() - this.address.at < ADDRESS_TTL_MS)
      return Promise.resolve(this.address.origin);
    this.resolving ??= this.lookUp().finally(() => (this.resolving = undefined));
    return this.resolving;
  }

  private async lookUp(): Promise<string> {
    const { namespace, name, port } = this.opts.service;
    let svc: ServiceObject | undefined;
    try {
      svc = await this.opts.client.getOrUndefined<ServiceObject>(
        `/api/v1/namespaces/${namespace}/services/${name}`,
      );
    } catch (err) {
      throw new UpstreamUnavailableError(
        `${this.description}: its Service could not be read (${err instanceof Error ? err.message : String(err)})`,
      );
    }
    if (!svc) throw new UpstreamUnavailableError(`${this.description}: the Service does not exist`);
    let host: string | undefined;
    if (svc.spec?.type === "ExternalName") host = svc.spec.externalName;
    else if (svc.spec?.clusterIP && svc.spec.clusterIP !== "None") {
      host = svc.spec.clusterIP;
      if (!svc.spec.ports?.some((p) => p.port === port))
        throw new UpstreamUnavailableError(`${this.description}: the Service has no port ${port}`);
    }
    if (!host)
      throw new UpstreamUnavailableError(
        `${this.description}: the Service has no address to dial (a headless Service cannot front an APIService either)`,
      );
    const origin = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
    this.address = { origin, at: Date.now() };
    return origin;
  }

  /** The keep-alive pool for this CA and client certificate (a new one when either changes). */
  private agent(ca: string, identity: ClientIdentity): Agent {
    const key = `${ca}\u0000${identity.cert ?? ""}\u0000${identity.key ?? ""}`;
    if (this.pool?.key === key) return this.pool.agent;
    const old = this.pool?.agent;
    const agent = new Agent({
      keepAliveTimeout: 30_000,
      connections: 64,
      connect: {
        ca,
        servername: this.serverName,
        ...(identity.cert && identity.key ? { cert: identity.cert, key: identity.key } : {}),
      },
    });
    this.pool = { agent, key };
    void old?.close().catch(() => {});
    return agent;
  }

  /** Reads the upstream's discovery; on failure keeps what it had (one read at a time). */
  refresh(): Promise<void> {
    this.refreshing ??= this.readDiscovery().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async readDiscovery(): Promise<void> {
    const custom = new Map<string, CustomMetricInfo>();
    const external = new Set<string>();
    const cap = this.opts.maxDiscoveredMetrics ?? 20_000;
    const started = performance.now();
    let answered = false;
    let error: string | undefined;
    for (const version of this.opts.versions) {
      let list: { resources?: { name?: unknown; namespaced?: unknown }[] };
      try {
        const r = await this.get(`/apis/${this.opts.group}/${version}`);
        if (r.status === 404) continue; // the upstream does not serve this version
        if (r.status !== 200) throw new UpstreamUnavailableError(`${this.description} answered ${r.status}`);
        const parsed = JSON.parse(r.text) as unknown;
        // `null`, a number, a list: an answer that is not an APIResourceList lists nothing.
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
          throw new UpstreamUnavailableError(
            `${this.description} answered discovery with something not an APIResourceList`,
          );
        list = parsed;
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
        continue;
      }
      answered = true;
      for (const res of Array.isArray(list.resources) ? list.resources : []) {
        if (typeof res?.name !== "string" || res.name.length > 512) continue;
        if (this.opts.api === "external") {
          if (external.size < cap) external.add(res.name);
          continue;
        }
        const slash = res.name.indexOf("/");
        if (slash <= 0 || slash === res.name.length - 1 || custom.size >= cap) continue;
        const groupResource = parseGroupResource(res.name.slice(0, slash));
        const metric = res.name.slice(slash + 1);
        custom.set(res.name, { groupResource, metric, namespaced: res.namespaced !== false });
      }
    }
    if (error !== this.lastError) {
      if (error)
        this.log.warn({ err: error }, "cannot read the upstream's discovery; keeping what it said last");
      else if (this.lastError) this.log.info("reading the upstream's discovery again");
    }
    this.lastError = error;
    if (!answered) return;
    this.lastDiscoveryMs = performance.now() - started;
    this.discoveredAt = Date.now();
    const same = (a: Set<string>, b: Iterable<string>, size: number) =>
      a.size === size && [...b].every((k) => a.has(k));
    if (same(this.customIds, custom.keys(), custom.size) && same(this.externalNames, external, external.size))
      return;
    this.custom = [...custom.values()];
    this.external = [...external].map((metric) => ({ metric }));
    this.customIds = new Set(custom.keys());
    this.externalNames = external;
    this.log.info(
      { custom: this.custom.length, external: this.external.length },
      "the upstream's metrics changed",
    );
    this.opts.onDiscoveryChange?.();
  }
}
