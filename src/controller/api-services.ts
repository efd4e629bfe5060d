/**
 * The Service the aggregator dials and the APIServices that point at it, with the serving
 * CA as `caBundle`: kept by the leader (`ensure`), removed by `uninstall`.
 *
 * **Never takes over someone else's APIService**: one pointing at another Service (KEDA,
 * prometheus-adapter…) is left alone and reported (log, Event, `/readyz` detail) unless
 * `takeOver` is set, or `forward` names that very Service as the upstream Governor passes
 * the rest of the group to (ADR 0011); what it replaces is kept and given back
 * (takeover.ts).
 */
import type { Logger } from "pino";
import { type KubeApi, KubeApiError } from "../k8s/client.js";
import {
  API_VERSIONS,
  type GovernorApi,
  REPLACED_ANNOTATION,
  buildApiServices,
  buildClusterService,
  buildLocalService,
} from "../manifests/api-service.js";
import type { EventRecorder } from "./events.js";
import {
  type ApiServiceObject,
  type UpstreamRef,
  apiOf,
  giveBack,
  keepReplaced,
  keptAnnotation,
  pointsAt,
  sharesCA,
} from "./takeover.js";

/** A MetricsUpstream's Service, and whether Governor can use its spec. */
export interface DeclaredUpstream {
  ref: UpstreamRef;
  usable: boolean;
}

/** Options of {@link ApiServices}. */
export interface ApiServicesOptions {
  client: KubeApi;
  logger: Logger;
  events?: EventRecorder;
  /** `cluster`: a ClusterIP Service on the operator's pods; `local`: ExternalName → localhost. */
  mode: "cluster" | "local";
  namespace: string;
  serviceName: string;
  /** The Service port (cluster: 443 → targetPort; local: the local HTTPS port). */
  port: number;
  /** cluster mode: the container port the Service targets. @default 6443 */
  targetPort?: number;
  /** cluster mode: the container port of the OTLP receiver, if it runs (the Service's port 4318). */
  otlpTargetPort?: number;
  apis: readonly GovernorApi[];
  /** Take over APIServices that point at another Service. @default false */
  takeOver?: boolean;
  /** Per API, the catch-all upstream adapter Governor forwards to (`--forward-*`): its APIService is taken over. */
  forward?: Partial<Record<"custom" | "external", UpstreamRef>>;
  /**
   * Per API, the MetricsUpstreams' Services now: an APIService pointing at a usable one is
   * taken over too (one whose spec Governor cannot use is neither taken over nor given back).
   * Undefined until they are known: nothing is taken over or given back for them meanwhile.
   */
  upstreams?: () => Partial<Record<"custom" | "external", readonly DeclaredUpstream[]>> | undefined;
}

const apiServicePath = (name: string) => `/apis/apiregistration.k8s.io/v1/apiservices/${name}`;

/** See the module comment. */
export class ApiServices {
  /** APIServices left alone because another Service owns them, with what was said. */
  readonly conflicts = new Map<string, string>();

  constructor(private readonly opts: ApiServicesOptions) {}

  /**
   * The upstreams of `api` now: the catch-all (`--forward-*`) first, then the
   * MetricsUpstreams' (`known: false` while they are not known yet).
   */
  private upstreamsOf(api: "custom" | "external"): { upstreams: DeclaredUpstream[]; known: boolean } {
    const flag = this.opts.forward?.[api];
    const declared = this.opts.upstreams ? this.opts.upstreams() : {};
    return {
      upstreams: [...(flag ? [{ ref: flag, usable: true }] : []), ...(declared?.[api] ?? [])],
      known: declared !== undefined,
    };
  }

  private get servicePath() {
    return `/api/v1/namespaces/${this.opts.namespace}/services/${this.opts.serviceName}`;
  }

  /** The Service and every APIService as they should be, carrying `caBundle` (base64). */
  async ensure(caBundle: string): Promise<void> {
    await this.ensureService();
    await this.ensureApiServices(caBundle);
    await this.retireUnserved();
  }

  /**
   * Governor's own APIServices of an API it no longer serves (history turned off, `--apis`
   * narrowed) are removed, or given back: left, they would point the aggregator at a group
   * nobody answers, and discovery of that group — namespace deletion with it — would fail.
   */
  private async retireUnserved(): Promise<void> {
    const unserved = (Object.keys(API_VERSIONS) as GovernorApi[]).filter(
      (api) => !this.opts.apis.includes(api),
    );
    for (const a of buildApiServices({
      service: { namespace: this.opts.namespace, name: this.opts.serviceName, port: this.opts.port },
      caBundle: "",
      apis: unserved,
    })) {
      const name = a.metadata.name;
      const path = apiServicePath(name);
      try {
        const existing = await this.opts.client.getOrUndefined<ApiServiceObject>(path);
        if (!existing || !this.isOurs(existing)) continue;
        const given = await giveBack(this.opts.client, this.opts.logger, name, existing);
        if (given || (await this.opts.client.delete(path)))
          this.opts.logger.info(
            { apiService: name },
            "removed the APIService of an API Governor no longer serves",
          );
      } catch (err) {
        // The RBAC of an install older than the history API may not let Governor look.
        if (err instanceof KubeApiError && err.statusCode === 403) continue;
        // Not a reason to stop keeping the APIs it serves.
        this.opts.logger.warn(
          { apiService: name, err: err instanceof Error ? err.message : String(err) },
          "could not check for an APIService of an API Governor no longer serves",
        );
      }
    }
  }

  /**
   * Removes the APIServices (first, so discovery never breaks), then the Service, giving
   * back what was taken over. Returns what it did, one line each.
   */
  async uninstall(): Promise<string[]> {
    const done: string[] = [];
    for (const a of this.wanted("")) {
      const path = apiServicePath(a.metadata.name);
      const existing = await this.opts.client.getOrUndefined<ApiServiceObject>(path).catch((err: unknown) => {
        // The RBAC of an install older than the history API may not let Governor look.
        if (apiOf(a.spec.group) === "history" && err instanceof KubeApiError && err.statusCode === 403)
          return undefined;
        throw err;
      });
      if (!existing) continue;
      if (!this.isOurs(existing)) {
        this.opts.logger.info(
          { apiService: a.metadata.name },
          "not removing an APIService that points at another Service",
        );
        continue;
      }
      const given = await giveBack(this.opts.client, this.opts.logger, a.metadata.name, existing);
      if (given) done.push(given);
      else if (await this.opts.client.delete(path)) done.push(`removed apiservice/${a.metadata.name}`);
    }
    if (await this.opts.client.delete(this.servicePath))
      done.push(`removed service/${this.opts.serviceName}`);
    return done;
  }

  private wanted(caBundle: string) {
    return buildApiServices({
      service: { namespace: this.opts.namespace, name: this.opts.serviceName, port: this.opts.port },
      caBundle,
      apis: this.opts.apis,
    });
  }

  private isOurs(a: ApiServiceObject): boolean {
    const svc = a.spec?.service;
    return svc?.namespace === this.opts.namespace && svc.name === this.opts.serviceName;
  }

  private async ensureService(): Promise<void> {
    const { namespace, serviceName: name, port } = this.opts;
    const body =
      this.opts.mode === "local"
        ? buildLocalService({ namespace, name, port })
        : buildClusterService({
            namespace,
            name,
            port,
            targetPort: this.opts.targetPort ?? 6443,
            otlpTargetPort: this.opts.otlpTargetPort,
          });
    await this.opts.client.apply(this.servicePath, body, { fieldManager: "governor" });
  }

  private async ensureApiServices(caBundle: string): Promise<void> {
    for (const a of this.wanted(caBundle)) {
      const name = a.metadata.name;
      const path = apiServicePath(name);
      const existing = await this.opts.client.getOrUndefined<ApiServiceObject>(path);
      const svc = existing?.spec?.service;
      const foreign = existing !== undefined && !this.isOurs(existing);
      const api = apiOf(a.spec.group);
      const { upstreams, known } = api === "history" ? { upstreams: [], known: true } : this.upstreamsOf(api);
      const toUpstream = foreign && upstreams.some((u) => u.usable && pointsAt(existing.spec, u.ref));
      if (foreign && !this.opts.takeOver && !toUpstream) {
        // It may be a MetricsUpstream's: decide once they are known (their first list).
        if (!known) continue;
        const owner = svc ? `Service ${svc.namespace}/${svc.name}` : "the local apiserver";
        this.conflict(
          name,
          owner,
          `APIService ${name} points at ${owner}; Governor leaves it alone (start with --take-over-apiservices to replace it${api === "history" ? "" : `, or name that Service in a MetricsUpstream or --forward-${api}`})`,
        );
        continue;
      }
      this.conflicts.delete(name);
      // Ours, and it replaced another that is not forwarded to any more: give that one back.
      if (
        !foreign &&
        existing &&
        known &&
        upstreams.length === 0 &&
        !this.opts.takeOver &&
        (await giveBack(this.opts.client, this.opts.logger, name, existing))
      )
        continue;
      // What this APIService replaced, kept to give back: the one there now when taking over,
      // else what Governor's own already keeps.
      const kept = foreign ? keepReplaced(existing) : keptAnnotation(existing);
      const body = kept
        ? { ...a, metadata: { ...a.metadata, annotations: { [REPLACED_ANNOTATION]: kept } } }
        : a;
      if (
        existing &&
        !foreign &&
        svc?.port === a.spec.service.port &&
        existing.spec?.caBundle === a.spec.caBundle
      )
        continue;
      if (
        existing &&
        !foreign &&
        existing.spec?.caBundle &&
        !sharesCA(existing.spec.caBundle, a.spec.caBundle)
      )
        this.overwritten(name);
      // Not server-side apply: the aggregator of Kubernetes ≤ 1.20 panics on it for APIServices.
      await this.opts.client.createOrReplace(path, body);
      this.opts.logger.info(
        { apiService: name, ...(toUpstream ? { forwardingTo: `${svc?.namespace}/${svc?.name}` } : {}) },
        foreign ? "took over APIService" : "registered APIService",
      );
    }
  }

  /** Says once (log, Event) that `name` belongs to another Service and is left alone. */
  private conflict(name: string, owner: string, message: string): void {
    if (this.conflicts.get(name) !== message) {
      this.opts.logger.warn({ apiService: name, owner }, message);
      this.warn("APIServiceConflict", message);
    }
    this.conflicts.set(name, message);
  }

  /**
   * Another controller wrote a CA of its own into Governor's APIService (KEDA's operator
   * does with `--enable-cert-rotation=true`): Governor writes its own back, and says who to
   * stop, since the two would otherwise take turns and the aggregator lose Governor between.
   */
  private overwritten(name: string): void {
    const message = `the caBundle of APIService ${name} was replaced by one Governor did not write (another controller injects its CA there, e.g. KEDA's operator with --enable-cert-rotation=true): Governor writes its own back; stop the other writer (docs/install.md: Beside KEDA / prometheus-adapter)`;
    this.opts.logger.warn({ apiService: name }, message);
    this.warn("APIServiceCABundleOverwritten", message);
  }

  private warn(reason: string, message: string): void {
    this.opts.events?.record(
      { apiVersion: "v1", kind: "Service", namespace: this.opts.namespace, name: this.opts.serviceName },
      "Warning",
      reason,
      message,
    );
  }
}
