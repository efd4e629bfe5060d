/**
 * MetricsUpstreams (ADR 0024): every replica turns the cached objects into upstreams and
 * their routes (router.ts) — an Upstream per object and group, kept while its spec is the
 * same, so its connection pool and last discovery survive unrelated edits — and reads
 * CAs from Secrets; the leader writes each object's status (health, metrics listed, last
 * error, latency). A spec Governor cannot use is said in status (`Available=False`,
 * `InvalidSpec`) and routes nothing.
 */
import { X509Certificate } from "node:crypto";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { type Condition, specProblems } from "../api/common.js";
import {
  METRICS_UPSTREAMS_PATH,
  MetricsUpstreamKind,
  type MetricsUpstreamObject,
  type MetricsUpstreamSpec,
  type MetricsUpstreamStatus,
} from "../api/metrics-upstream.js";
import { CUSTOM_GROUP, EXTERNAL_GROUP, GROUP_VERSIONS } from "../apiserver/wire.js";
import { splitPem } from "../certs/certs.js";
import { findCondition, setCondition } from "../controller/conditions.js";
import type { DeclaredUpstream } from "../controller/api-services.js";
import type { UpstreamRef } from "../controller/registration.js";
import { readMetricsApiServices, trustIn } from "../controller/takeover.js";
import type { ClientIdentity, KubeApi } from "../k8s/client.js";
import { KubeApiError } from "../k8s/client.js";
import type { SharedInformer } from "../k8s/informer-cache.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { boundedText } from "../util/bounded-text.js";
import type { Runnable } from "../util/runnable.js";
import type { RoutedUpstream, UpstreamRouter } from "./router.js";
import { type ForwardedApi, Upstream, type UpstreamOptions } from "./upstream.js";

/** The most MetricsUpstreams used; past it the rest are said to be ignored. */
export const MAX_UPSTREAMS = 64;
/** The largest CA read from a Secret or a caBundle. */
const MAX_CA_BYTES = 64 << 10;

/** Options of {@link MetricsUpstreams}. */
export interface MetricsUpstreamsOptions {
  client: Pick<KubeApi, "getOrUndefined" | "mergePatch">;
  informer: SharedInformer<MetricsUpstreamObject & KubernetesObject>;
  /** The Namespace cache, made on first need (a route with a namespace selector). */
  namespaces: () => SharedInformer<KubernetesObject>;
  /** Per API Governor serves, the router its upstreams go into. */
  routers: Partial<Record<ForwardedApi, UpstreamRouter>>;
  identity: () => Promise<ClientIdentity>;
  logger: Logger;
  registry?: Registry;
  /** Called when upstreams or what they list changed (which mappings shadow one may have). */
  onChange?: () => void;
  /** How often the leader writes status, and every replica re-reads Secret CAs. @default 10000 */
  resyncMs?: number;
  /** Governor's own Service: an upstream naming it would forward to itself (refused). */
  self?: UpstreamRef;
  /** How long start waits for the first list of MetricsUpstreams. @default 10000 */
  syncWaitMs?: number;
  /** Passed to each Upstream (tests: a short discovery interval). */
  upstream?: Pick<UpstreamOptions, "discoveryIntervalMs" | "timeoutMs">;
}

/** One MetricsUpstream as this replica runs it. */
interface Running {
  name: string;
  generation?: number;
  /** What its connections depend on (Service, CA, groups, the limit): a change makes new Upstreams. */
  fingerprint: string;
  /** The whole spec: a change of the route alone keeps the Upstreams. */
  specText: string;
  spec?: MetricsUpstreamSpec;
  /** Its Service and groups as far as they read, for registration even when the spec is invalid. */
  declared?: { ref: UpstreamRef; apis: ForwardedApi[] };
  /** Why the spec cannot be used, if it cannot. */
  invalid?: string;
  /** Why its CA Secret could not be read last time, if it could not. */
  caProblem?: string;
  /** Whether a CA was read from its Secret. */
  caKnown?: boolean;
  /** One per group Governor serves. */
  upstreams: Map<ForwardedApi, Upstream>;
  routes: RoutedUpstream[];
}

const API_OF_GROUP: Record<string, ForwardedApi> = {
  [CUSTOM_GROUP]: "custom",
  [EXTERNAL_GROUP]: "external",
};

/** See the module comment. */
export class MetricsUpstreams implements Runnable {
  readonly name = "MetricsUpstreams";
  private readonly running = new Map<string, Running>();
  private unsubscribe?: () => void;
  private timer?: NodeJS.Timeout;
  private rebuildQueued = false;
  private started = false;
  /** Whether the first list of MetricsUpstreams came (until then registration waits on them). */
  private listed = false;
  /** The resync under way (Secret CAs, APIService CAs): one at a time. */
  private resyncing?: Promise<void>;
  /** Status codes seen per upstream, to drop their series when it goes. */
  private readonly codes = new Map<string, Set<string>>();
  private readonly log: Logger;
  private readonly requests?: Counter<"upstream" | "code">;
  private readonly seconds?: Histogram<"upstream">;

  /** The leader's part: writes each MetricsUpstream's status. */
  readonly leaderPart: Runnable;

  constructor(private readonly opts: MetricsUpstreamsOptions) {
    this.log = opts.logger.child({ component: "metricsupstreams" });
    const registers = opts.registry ? [opts.registry] : [];
    if (opts.registry) {
      this.requests = new Counter({
        name: "governor_upstream_requests_total",
        help: "Requests Governor forwarded to an upstream adapter, by MetricsUpstream (or catch-all) and the status it answered (error: not answered).",
        labelNames: ["upstream", "code"],
        registers,
      });
      this.seconds = new Histogram({
        name: "governor_upstream_request_duration_seconds",
        help: "How long a forwarded request took, by upstream.",
        labelNames: ["upstream"],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers,
      });
      const running = this.running;
      new Gauge({
        name: "governor_upstream_metrics",
        help: "Metrics each MetricsUpstream listed in its discovery when last read, by group.",
        labelNames: ["upstream", "api"],
        registers,
        collect() {
          this.reset();
          for (const r of running.values())
            for (const [api, u] of r.upstreams) this.set({ upstream: r.name, api }, u.metricCount);
        },
      });
      new Gauge({
        name: "governor_upstream_discovery_failing",
        help: "1 while an upstream's last discovery read failed.",
        labelNames: ["upstream", "api"],
        registers,
        collect() {
          this.reset();
          for (const r of running.values())
            for (const [api, u] of r.upstreams) this.set({ upstream: r.name, api }, u.lastError ? 1 : 0);
        },
      });
    }
    // A loop per leadership: one that lost it and won it again never runs two.
    let term = 0;
    let timer: NodeJS.Timeout | undefined;
    this.leaderPart = {
      name: "MetricsUpstream status writer",
      needsLeader: true,
      start: () => {
        const mine = ++term;
        const tick = () => {
          if (term !== mine) return;
          void this.writeStatuses().finally(() => {
            if (term === mine) timer = setTimeout(tick, this.opts.resyncMs ?? 10_000);
          });
        };
        tick();
      },
      stop: () => {
        term++;
        clearTimeout(timer);
      },
    };
  }

  /** What a forwarded request to `upstream` did, for /metrics (the catch-all's too). */
  observer(upstream: string): (outcome: number | "error", seconds: number) => void {
    return (outcome, seconds) => {
      const code = String(outcome);
      let seen = this.codes.get(upstream);
      if (!seen) this.codes.set(upstream, (seen = new Set()));
      seen.add(code);
      this.requests?.inc({ upstream, code });
      this.seconds?.observe({ upstream }, seconds);
    };
  }

  /**
   * Starts from the cached objects once the first list came (at most `syncWaitMs`: a
   * cluster without the CRD yet must not keep Governor from starting), so registration's
   * first sync already knows which APIServices are upstreams' to take over.
   */
  async start(): Promise<void> {
    this.started = true;
    const changed = () => this.queueRebuild();
    this.unsubscribe = this.opts.informer.subscribe({ add: changed, update: changed, delete: changed });
    // Known from the first list on, and rebuilt in the same turn: registration never sees
    // them known but not yet built (it would give an upstream's APIService back).
    void this.opts.informer.synced.then(() => {
      if (!this.started) return;
      this.listed = true;
      this.rebuild();
    });
    let timeout: NodeJS.Timeout | undefined;
    const waitMs = this.opts.syncWaitMs ?? 10_000;
    const wait = (p: Promise<unknown>) =>
      Promise.race([p, new Promise<void>((resolve) => (timeout = setTimeout(resolve, waitMs)))]).finally(() =>
        clearTimeout(timeout),
      );
    await wait(this.opts.informer.synced);
    if (!this.started) return;
    this.rebuild();
    // Routes that select namespaces by label read them from a cache: filled before serving.
    if ([...this.running.values()].some((r) => r.spec?.namespaces?.selector))
      await wait(this.opts.namespaces().synced);
    const tick = () => {
      void this.resync().finally(() => {
        if (this.started) this.timer = setTimeout(tick, this.opts.resyncMs ?? 10_000);
      });
    };
    this.timer = setTimeout(tick, this.opts.resyncMs ?? 10_000);
  }

  async stop(): Promise<void> {
    this.started = false;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    const all = [...this.running.values()];
    this.running.clear();
    this.publish();
    await Promise.all(all.flatMap((r) => [...r.upstreams.values()].map((u) => u.stop())));
  }

  /**
   * Per API, the MetricsUpstreams' Services, and whether Governor can use each spec (an
   * APIService pointing at a usable one may be taken over; one whose spec is invalid is
   * neither taken over nor given back); undefined until their first list came.
   */
  refs(): Partial<Record<ForwardedApi, DeclaredUpstream[]>> | undefined {
    if (!this.listed) return undefined;
    const out: Partial<Record<ForwardedApi, DeclaredUpstream[]>> = {};
    for (const r of this.running.values())
      for (const api of r.declared?.apis ?? [])
        (out[api] ??= []).push({ ref: r.declared!.ref, usable: r.upstreams.has(api) });
    return out;
  }

  /** Why upstreams' discovery reads failed (for /readyz warnings): at most `max`. */
  lastErrors(max = 5): string[] {
    const out: string[] = [];
    for (const r of this.running.values())
      for (const u of r.upstreams.values()) if (u.lastError && out.length < max) out.push(u.lastError);
    return out;
  }

  /** Changes come in bursts (a list, an apply of several): rebuild once after them. */
  private queueRebuild(): void {
    if (this.rebuildQueued || !this.started) return;
    this.rebuildQueued = true;
    setImmediate(() => {
      this.rebuildQueued = false;
      if (this.started) this.rebuild();
    });
  }

  /** Brings the running upstreams in line with the cache. */
  private rebuild(): void {
    const objects = [...this.opts.informer.list()]
      .filter((o) => o.metadata?.name)
      .sort((a, b) => (a.metadata!.name! < b.metadata!.name! ? -1 : 1));
    const seen = new Set<string>();
    let changed = false;
    for (const [i, obj] of objects.entries()) {
      const name = obj.metadata!.name!;
      seen.add(name);
      const overLimit = i >= MAX_UPSTREAMS;
      const specText = JSON.stringify(obj.spec ?? null);
      const fingerprint = connectionOf(obj.spec, overLimit);
      const known = this.running.get(name);
      if (known) known.generation = obj.metadata?.generation;
      if (known?.specText === specText) continue;
      changed = true;
      // The route alone changed: the same Upstreams (pools, lists, trust) under new routes.
      const keep = known?.fingerprint === fingerprint ? known.upstreams : undefined;
      const next = this.build(name, obj, fingerprint, overLimit, keep);
      if (known) for (const [api, u] of known.upstreams) if (next.upstreams.get(api) !== u) void u.stop();
      this.running.set(name, next);
    }
    for (const [name, r] of this.running)
      if (!seen.has(name)) {
        this.retire(r);
        this.running.delete(name);
        changed = true;
      }
    if (!changed) return;
    this.publish();
    void this.resync();
    this.opts.onChange?.();
  }

  private build(
    name: string,
    obj: MetricsUpstreamObject,
    fingerprint: string,
    overLimit: boolean,
    keep?: Map<ForwardedApi, Upstream>,
  ): Running {
    const r: Running = {
      name,
      generation: obj.metadata?.generation,
      fingerprint,
      specText: JSON.stringify(obj.spec ?? null),
      declared: declaredOf(obj.spec),
      upstreams: new Map(),
      routes: [],
    };
    if (overLimit) {
      r.invalid = `ignored: Governor uses at most ${MAX_UPSTREAMS} MetricsUpstreams (by name)`;
      return r;
    }
    const parsed = MetricsUpstreamKind.spec.safeParse(obj.spec);
    if (!parsed.success) {
      r.invalid = specProblems(parsed.error);
      return r;
    }
    const spec = parsed.data;
    const self = this.opts.self;
    if (self && spec.service.namespace === self.namespace && spec.service.name === self.name) {
      r.invalid = `service: ${self.namespace}/${self.name} is Governor's own Service: it would forward to itself`;
      return r;
    }
    let ca: string | undefined;
    let namespaces: RoutedUpstream["namespaces"];
    let field = "caBundle";
    try {
      if (spec.caBundle !== undefined) ca = checkedCA(Buffer.from(spec.caBundle, "base64").toString("utf8"));
      field = "namespaces.selector";
      if (spec.namespaces?.names) namespaces = { names: new Set(spec.namespaces.names) };
      else if (spec.namespaces?.selector)
        namespaces = { selector: LabelSelector.fromObject(spec.namespaces.selector) };
    } catch (err) {
      r.invalid = boundedText(`${field}: ${(err as Error).message}`, 300);
      return r;
    }
    r.spec = spec;
    const s = spec.service;
    const label = `MetricsUpstream ${name}`;
    for (const group of spec.groups) {
      const api = API_OF_GROUP[group]!;
      const router = this.opts.routers[api];
      if (!router) continue; // Governor does not serve this API (--apis)
      const kept = keep?.get(api);
      const upstream =
        kept ??
        new Upstream({
          api,
          group,
          versions: GROUP_VERSIONS[group] ?? [],
          service: s,
          ...(ca !== undefined ? { ca } : {}),
          ownCA: spec.caSecretRef !== undefined,
          caHint: `spec.caBundle or spec.caSecretRef of ${label}`,
          description: `${label} (Service ${s.namespace}/${s.name}:${s.port})`,
          client: this.opts.client,
          identity: this.opts.identity,
          logger: this.opts.logger.child({ metricsUpstream: name }),
          observe: this.observer(name),
          onDiscoveryChange: () => this.opts.onChange?.(),
          ...this.opts.upstream,
        });
      r.upstreams.set(api, upstream);
      if (!kept) upstream.start();
      r.routes.push({
        name: label,
        priority: spec.priority,
        ...(spec.metrics ? { metrics: spec.metrics } : {}),
        ...(namespaces ? { namespaces } : {}),
        lists: (id) => upstream.serves(api, id),
        upstream,
      });
    }
    if (namespaces && "selector" in namespaces) this.opts.namespaces(); // warm the Namespace cache
    this.log.info({ metricsUpstream: name, groups: spec.groups }, "serving through MetricsUpstream");
    return r;
  }

  /** Stops a deleted MetricsUpstream's upstreams and drops its series from /metrics. */
  private retire(r: Running): void {
    for (const u of r.upstreams.values()) void u.stop();
    for (const code of this.codes.get(r.name) ?? []) this.requests?.remove({ upstream: r.name, code });
    this.seconds?.remove({ upstream: r.name });
    this.codes.delete(r.name);
  }

  /** Gives each router the routes of its API. */
  private publish(): void {
    for (const [api, router] of Object.entries(this.opts.routers) as [ForwardedApi, UpstreamRouter][])
      router.set(
        [...this.running.values()].flatMap((r) =>
          r.routes.filter((route) => r.upstreams.get(api) === route.upstream),
        ),
      );
  }

  /** Reads the CAs again: from Secrets and from APIServices (one resync at a time). */
  private resync(): Promise<void> {
    this.resyncing ??= this.readCAs()
      .catch((err: unknown) => this.log.warn({ err: String(err) }, "cannot read MetricsUpstreams' CAs"))
      .finally(() => (this.resyncing = undefined));
    return this.resyncing;
  }

  private async readCAs(): Promise<void> {
    await this.readSecretCAs();
    await this.readApiServiceCAs();
  }

  /**
   * Tells each upstream with neither caBundle nor caSecretRef the CA of the APIService it
   * holds or Governor took over from it (three GETs for all of them).
   */
  private async readApiServiceCAs(): Promise<void> {
    const fromApiService = [...this.running.values()].filter(
      (r) => r.spec && !r.spec.caBundle && !r.spec.caSecretRef && r.upstreams.size > 0,
    );
    if (fromApiService.length === 0) return;
    const apiServices = await readMetricsApiServices(this.opts.client);
    for (const r of fromApiService)
      for (const [api, u] of r.upstreams) {
        const trust = trustIn(apiServices, api, r.spec!.service);
        u.setTrust(
          trust?.caBundle
            ? { ca: trust.caBundle, from: "the APIService's caBundle" }
            : trust?.insecureSkipTLSVerify
              ? { insecure: true, from: "the APIService's insecureSkipTLSVerify" }
              : undefined,
        );
      }
  }

  /** Reads each caSecretRef's CA (Secrets rotate; every replica reads its own). */
  private async readSecretCAs(): Promise<void> {
    for (const r of [...this.running.values()]) {
      const ref = r.spec?.caSecretRef;
      if (!ref) continue;
      const from = `Secret ${ref.namespace}/${ref.name} key ${ref.key}`;
      try {
        const secret = await this.opts.client.getOrUndefined<{ data?: Record<string, string> }>(
          `/api/v1/namespaces/${ref.namespace}/secrets/${ref.name}`,
        );
        const data = secret?.data?.[ref.key];
        if (!secret) throw new Error(`${from}: the Secret does not exist`);
        if (typeof data !== "string") throw new Error(`${from}: the Secret has no such key`);
        const ca = checkedCA(Buffer.from(data, "base64").toString("utf8"));
        r.caProblem = undefined;
        r.caKnown = true;
        for (const u of r.upstreams.values()) u.useCA(ca, from);
      } catch (err) {
        // A CA read before stays in use (a Secret read can fail for a moment); status says why.
        r.caProblem =
          (err instanceof KubeApiError && err.statusCode === 403
            ? `${from}: Governor may not read it (grant its ServiceAccount get on that Secret: a Role and RoleBinding in ${ref.namespace})`
            : boundedText(err instanceof Error ? err.message : String(err), 300)) +
          (r.caKnown ? "; the CA read before stays in use" : "");
      }
    }
  }

  /** The status each MetricsUpstream should have now (leader). */
  statusOf(r: Running, old: MetricsUpstreamStatus | undefined): MetricsUpstreamStatus {
    const s = r.spec?.service;
    const ups = [...r.upstreams.values()];
    const errors = [...new Set(ups.flatMap((u) => (u.lastError ? [u.lastError] : [])))];
    const read = ups.filter((u) => u.lastDiscovery > 0);
    const lastRead = Math.max(0, ...read.map((u) => u.lastDiscovery));
    const latency = read.length ? Math.max(...read.map((u) => u.lastDiscoveryMs ?? 0)) : undefined;
    let condition: Pick<Condition, "status" | "reason" | "message">;
    if (r.invalid) condition = { status: "False", reason: "InvalidSpec", message: r.invalid };
    else if (r.caProblem && !r.caKnown)
      condition = { status: "False", reason: "CAUnavailable", message: r.caProblem };
    else if (ups.length === 0)
      condition = {
        status: "False",
        reason: "NotServed",
        message: "Governor serves none of its groups (--apis)",
      };
    else if (errors.length)
      condition = { status: "False", reason: "DiscoveryFailed", message: errors.join("; ") };
    else if (read.length < ups.length)
      condition = { status: "Unknown", reason: "NotReadYet", message: "its discovery has not been read yet" };
    else
      condition = {
        status: "True",
        reason: "Listed",
        message: `it listed ${ups.reduce((n, u) => n + u.metricCount, 0)} metrics${r.caProblem ? `; ${r.caProblem}` : ""}`,
      };
    return {
      observedGeneration: r.generation,
      conditions: setCondition(old?.conditions, { type: "Available", ...condition }, r.generation),
      ...(s ? { service: `${s.namespace}/${s.name}:${s.port}` } : {}),
      ...(ups.length ? { metrics: ups.reduce((n, u) => n + u.metricCount, 0) } : {}),
      ...(latency !== undefined ? { latency: `${Math.round(latency)}ms` } : {}),
      ...(errors.length ? { lastError: boundedText(errors.join("; "), 1024) } : {}),
      ...(lastRead ? { lastDiscoveryTime: new Date(lastRead).toISOString().replace(/\.\d+Z$/, "Z") } : {}),
    };
  }

  /** Writes the status of every MetricsUpstream whose status says something new (leader). */
  private async writeStatuses(): Promise<void> {
    for (const r of [...this.running.values()]) {
      const obj = this.opts.informer.get(r.name);
      if (!obj) continue;
      const next = this.statusOf(r, obj.status);
      if (!worthWriting(obj.status, next)) continue;
      try {
        await this.opts.client.mergePatch(`${METRICS_UPSTREAMS_PATH}/${r.name}/status`, {
          // A merge patch keeps what it does not name: every field this status lacks is removed.
          status: {
            ...next,
            service: next.service ?? null,
            metrics: next.metrics ?? null,
            latency: next.latency ?? null,
            lastError: next.lastError ?? null,
            lastDiscoveryTime: next.lastDiscoveryTime ?? null,
          },
        });
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 404))
          this.log.warn({ metricsUpstream: r.name, err: String(err) }, "cannot write MetricsUpstream status");
      }
    }
  }
}

/** Rewrite a status when what it says changed, or its discovery time is 5 minutes behind. */
function worthWriting(old: MetricsUpstreamStatus | undefined, next: MetricsUpstreamStatus): boolean {
  if (!old) return true;
  const a = findCondition(old.conditions, "Available");
  const b = findCondition(next.conditions, "Available");
  if (a?.status !== b?.status || a?.reason !== b?.reason || a?.message !== b?.message) return true;
  if (old.observedGeneration !== next.observedGeneration) return true;
  if (old.service !== next.service || old.metrics !== next.metrics || old.lastError !== next.lastError)
    return true;
  const at = (t: string | undefined) => (t ? Date.parse(t) : 0);
  return at(next.lastDiscoveryTime) - at(old.lastDiscoveryTime) >= 5 * 60_000;
}

/** PEM text with at least one certificate, each one that parses; else throws saying why. */
function checkedCA(pem: string): string {
  if (pem.length > MAX_CA_BYTES) throw new Error(`the CA is larger than ${MAX_CA_BYTES >> 10} KiB`);
  const certs = splitPem(pem);
  if (certs.length === 0) throw new Error("no PEM certificate in it");
  for (const c of certs)
    try {
      new X509Certificate(c);
    } catch {
      throw new Error("a certificate in it does not parse");
    }
  return pem;
}

/** What an upstream's connections depend on: its Service, CA fields and groups, and whether it is over the limit. */
function connectionOf(spec: unknown, overLimit: boolean): string {
  const s = (spec ?? {}) as Record<string, unknown>;
  return JSON.stringify([s.service, s.groups, s.caBundle, s.caSecretRef, overLimit]);
}

/** The Service and APIs a spec names, as far as they read (an invalid spec's too), or undefined. */
function declaredOf(spec: unknown): Running["declared"] {
  const s = (spec ?? {}) as { service?: Record<string, unknown>; groups?: unknown };
  const svc = s.service;
  if (!svc || typeof svc.namespace !== "string" || typeof svc.name !== "string") return undefined;
  const apis = (Array.isArray(s.groups) ? s.groups : []).flatMap((g) =>
    typeof g === "string" && API_OF_GROUP[g] ? [API_OF_GROUP[g]] : [],
  );
  const port = typeof svc.port === "number" ? svc.port : 443;
  return { ref: { namespace: svc.namespace, name: svc.name, port }, apis };
}
