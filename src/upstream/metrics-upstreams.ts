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
import type { UpstreamApiServiceTrust, UpstreamRef } from "../controller/registration.js";
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
  /** How long start waits for the first list of MetricsUpstreams. @default 10000 */
  syncWaitMs?: number;
  /** Passed to each Upstream (tests: a short discovery interval). */
  upstream?: Pick<UpstreamOptions, "discoveryIntervalMs" | "timeoutMs">;
}

/** One MetricsUpstream as this replica runs it. */
interface Running {
  name: string;
  generation?: number;
  fingerprint: string;
  spec?: MetricsUpstreamSpec;
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
    const leader = {
      timer: undefined as NodeJS.Timeout | undefined,
      writing: false,
    };
    this.leaderPart = {
      name: "MetricsUpstream status writer",
      needsLeader: true,
      start: () => {
        leader.writing = true;
        const tick = () => {
          if (!leader.writing) return;
          void this.writeStatuses().finally(() => {
            if (leader.writing) leader.timer = setTimeout(tick, this.opts.resyncMs ?? 10_000);
          });
        };
        tick();
      },
      stop: () => {
        leader.writing = false;
        clearTimeout(leader.timer);
      },
    };
  }

  /** What a forwarded request to `upstream` did, for /metrics (the catch-all's too). */
  observer(upstream: string): (outcome: number | "error", seconds: number) => void {
    return (outcome, seconds) => {
      this.requests?.inc({ upstream, code: String(outcome) });
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
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      this.opts.informer.synced,
      new Promise<void>((resolve) => (timeout = setTimeout(resolve, this.opts.syncWaitMs ?? 10_000))),
    ]);
    clearTimeout(timeout);
    if (this.started) this.rebuild();
    const tick = () => {
      void this.readSecretCAs().finally(() => {
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
   * Per API, the Services of upstreams whose CA is the caBundle of the APIService Governor
   * took over from them (neither caBundle nor caSecretRef set): their APIServices may be
   * taken over, and registration tells each its trust ({@link trustFromApiService}).
   */
  refs(): Partial<Record<ForwardedApi, UpstreamRef[]>> {
    const out: Partial<Record<ForwardedApi, UpstreamRef[]>> = {};
    for (const r of this.running.values()) {
      if (!r.spec) continue;
      for (const api of r.upstreams.keys()) (out[api] ??= []).push(r.spec.service);
    }
    return out;
  }

  /** How the APIService of `ref`'s Service says to check it (from registration's sync). */
  trustFromApiService(api: ForwardedApi, ref: UpstreamRef, trust: UpstreamApiServiceTrust | undefined): void {
    for (const r of this.running.values()) {
      const s = r.spec?.service;
      if (
        !s ||
        s.namespace !== ref.namespace ||
        s.name !== ref.name ||
        r.spec?.caBundle ||
        r.spec?.caSecretRef
      )
        continue;
      r.upstreams
        .get(api)
        ?.setTrust(
          trust?.caBundle
            ? { ca: trust.caBundle, from: "the APIService's caBundle" }
            : trust?.insecureSkipTLSVerify
              ? { insecure: true, from: "the APIService's insecureSkipTLSVerify" }
              : undefined,
        );
    }
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
      const fingerprint = JSON.stringify(obj.spec ?? null);
      const known = this.running.get(name);
      if (known?.fingerprint === fingerprint) {
        known.generation = obj.metadata?.generation;
        continue;
      }
      if (known) this.retire(known);
      this.running.set(name, this.build(name, obj, fingerprint, i >= MAX_UPSTREAMS));
      changed = true;
    }
    for (const [name, r] of this.running)
      if (!seen.has(name)) {
        this.retire(r);
        this.running.delete(name);
        changed = true;
      }
    if (!changed) return;
    this.publish();
    void this.readSecretCAs();
    this.opts.onChange?.();
  }

  private build(name: string, obj: MetricsUpstreamObject, fingerprint: string, overLimit: boolean): Running {
    const r: Running = {
      name,
      generation: obj.metadata?.generation,
      fingerprint,
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
      const upstream = new Upstream({
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
      r.routes.push({
        name: label,
        priority: spec.priority,
        ...(spec.metrics ? { metrics: spec.metrics } : {}),
        ...(namespaces ? { namespaces } : {}),
        lists: (id) => upstream.serves(api, id),
        upstream,
      });
      upstream.start();
    }
    if (namespaces && "selector" in namespaces) this.opts.namespaces(); // warm the Namespace cache
    this.log.info({ metricsUpstream: name, groups: spec.groups }, "serving through MetricsUpstream");
    return r;
  }

  private retire(r: Running): void {
    for (const u of r.upstreams.values()) void u.stop();
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
    else if (r.caProblem) condition = { status: "False", reason: "CAUnavailable", message: r.caProblem };
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
        message: `it listed ${ups.reduce((n, u) => n + u.metricCount, 0)} metrics`,
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
          status: { ...next, lastError: next.lastError ?? null, latency: next.latency ?? null },
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
