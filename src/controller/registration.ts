/**
 * Governor registers itself as the cluster's metrics API: a Secret holding a CA and a
 * serving certificate (ECDSA P-256), the Service the aggregator dials, and the
 * APIServices with that CA as `caBundle`.
 *
 * - **One CA, however many replicas start at once**: the Secret is created with a plain
 *   create; a replica that loses the race (409) adopts the winner's.
 * - **Reused across restarts**; **rotated** by the leader as `src/certs/serving-secret.ts`
 *   decides (no CA key kept; a new CA trusted before its leaf is served), and every
 *   replica hot-swaps the leaf the Secret serves. No request fails across a rotation.
 * - **Never takes over someone else's APIService**: one pointing at another Service (KEDA,
 *   prometheus-adapter…) is left alone and reported (log, Event, `/readyz` detail) unless
 *   `takeOver` is set, or `forward` names that very Service as the upstream Governor passes
 *   the rest of the group to (ADR 0011). What it took over is kept in an annotation on its
 *   own APIService and **given back** by `uninstall()`, or when forwarding is turned off.
 *
 * Modes: `cluster` (ClusterIP Service on the operator's pods), `local` (ExternalName
 * Service → localhost, for a process outside the pod network), `none` (GitOps installs
 * ship these objects themselves).
 *
 * (A little over 350 lines: the loop's order — Secret, Service, APIServices, rotation,
 * uninstall — reads top to bottom here; the certificate steps it takes are pure functions
 * in src/certs/serving-secret.ts and the objects it writes are built in src/manifests.)
 */
import type { Runnable } from "../util/runnable.js";
import type { Logger } from "pino";
import { splitPem, validity, type KeyPair } from "../certs/certs.js";
import {
  type ServingSecret,
  newServingSecret,
  nextRotationStep,
  parseServingSecret,
  servingSecretObject,
  withNewCA,
} from "../certs/serving-secret.js";
import { KubeApiError, type KubeApi, type KubeObject } from "../k8s/client.js";
import {
  API_VERSIONS,
  REPLACED_ANNOTATION,
  buildApiServices,
  buildClusterService,
  buildLocalService,
  serviceDnsNames,
} from "../manifests/api-service.js";
import type { EventRecorder } from "./events.js";

/** What an APIService Governor replaced looked like (the annotation's JSON). */
interface ReplacedApiService {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  spec: ApiServiceSpec;
}

interface ApiServiceSpec {
  service?: { namespace?: string; name?: string; port?: number } | null;
  caBundle?: string;
  insecureSkipTLSVerify?: boolean;
  [field: string]: unknown;
}

interface ApiServiceObject {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: ApiServiceSpec;
}

/** The Service of an upstream adapter, as `forward` names it. */
export interface UpstreamRef {
  namespace: string;
  name: string;
  port: number;
}

/** How the aggregator was told to check an upstream's certificate (its APIService's spec). */
export interface UpstreamApiServiceTrust {
  /** PEM. */
  caBundle?: string;
  insecureSkipTLSVerify: boolean;
}

/** How Governor registers. */
export const RegistrationModes = ["cluster", "local", "none"] as const;
export type RegistrationMode = (typeof RegistrationModes)[number];

/** Options of {@link Registration}. */
export interface RegistrationOptions {
  client: KubeApi;
  logger: Logger;
  events?: EventRecorder;
  mode: RegistrationMode;
  namespace: string;
  serviceName: string;
  /** The Service port (cluster: 443 → targetPort; local: the local HTTPS port). */
  port: number;
  /** cluster mode: the container port the Service targets. @default 6443 */
  targetPort?: number;
  apis: readonly ("custom" | "external")[];
  /** Take over APIServices that point at another Service. @default false */
  takeOver?: boolean;
  /**
   * Per API, the upstream adapter Governor forwards what it does not serve to: an
   * APIService pointing at exactly that Service is taken over (and kept to give back).
   */
  forward?: Partial<Record<"custom" | "external", UpstreamRef>>;
  /**
   * Called on every sync (every replica) with how the upstream's APIService — the live one,
   * or the one kept in the annotation — says to check the upstream's certificate.
   */
  onUpstreamTrust?: (api: "custom" | "external", trust: UpstreamApiServiceTrust | undefined) => void;
  /** Called with the serving certificate whenever it changes. */
  onServingCertificate: (pair: KeyPair) => void;
  /** @default 365 */
  leafDays?: number;
  /** How long a new CA sits in caBundle before a leaf from it is served. @default 15000 */
  caPropagationMs?: number;
  /** How often the loop runs. @default 30000 */
  resyncMs?: number;
}

/** See the module comment. */
export class Registration {
  private current?: ServingSecret;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Syncs run one at a time (the timer and syncNow() alike), in order. */
  private running: Promise<void> = Promise.resolve();
  /** The Secret's resourceVersion as last read: a write based on it fails if it changed since. */
  private secretVersion?: string;
  private forceRotation = false;
  /** APIServices left alone because another Service owns them. */
  readonly conflicts = new Map<string, string>();
  private readonly log: Logger;
  private leading = false;
  /**
   * The leader's part — rotation, the Service and the APIServices — as a runnable the
   * manager starts when this replica leads (it syncs at once) and stops when it stops.
   */
  readonly leaderPart: Runnable = {
    name: "registration (rotation, Service, APIServices)",
    needsLeader: true,
    start: () => {
      this.leading = true;
      // Before init() there is nothing to write yet: the loop's first sync does it.
      if (this.current)
        this.syncNow().catch((err: unknown) =>
          this.log.warn(
            { err: String(err) },
            "registration sync on becoming leader failed; the periodic resync retries",
          ),
        );
    },
    stop: () => {
      this.leading = false;
    },
  };

  constructor(private readonly opts: RegistrationOptions) {
    this.log = opts.logger.child({ component: "registration" });
  }

  private get secretName() {
    return `${this.opts.serviceName}-serving-cert`;
  }
  private get secretPath() {
    return `/api/v1/namespaces/${this.opts.namespace}/secrets/${this.secretName}`;
  }
  private get dnsNames() {
    return [
      ...serviceDnsNames(this.opts.namespace, this.opts.serviceName),
      ...(this.opts.mode === "local" ? ["localhost"] : []),
    ];
  }

  /**
   * Loads (or creates) the Secret and returns the serving certificate to start with.
   * Every replica calls this; exactly one CA results.
   */
  async init(): Promise<KeyPair> {
    let data = await this.readSecret();
    if (!data) {
      const fresh = await this.generate();
      try {
        const created = await this.opts.client.create<KubeObject>(
          `/api/v1/namespaces/${this.opts.namespace}/secrets`,
          this.secretBody(fresh),
        );
        this.secretVersion = created.metadata?.resourceVersion;
        this.log.info({ secret: this.secretName }, "created the serving certificate");
        data = fresh;
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 409)) throw err;
        data = await this.readSecret(); // another replica won the race: use its CA
        if (!data) throw err;
      }
    }
    this.current = data;
    return { cert: data.cert, key: data.key };
  }

  /** The CA bundle the APIServices should carry now. */
  get caBundle(): string {
    return this.current?.caBundle ?? "";
  }

  /** Starts the loop: follow the Secret; as leader rotate and keep Service and APIServices. */
  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.serially()
        .catch((err: unknown) =>
          this.log.warn(
            { err: err instanceof Error ? err.message : String(err) },
            "registration sync failed; retrying",
          ),
        )
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.opts.resyncMs ?? 30_000);
        });
    };
    tick();
  }

  /** Runs one sync now (tests, and right after becoming leader). */
  async syncNow(): Promise<void> {
    await this.serially();
  }

  /** Queues one sync after any that runs: never two at once. */
  private serially(): Promise<void> {
    const next = this.running.then(() => this.sync());
    this.running = next.catch(() => undefined);
    return next;
  }

  /** Rotates on the next syncs: a new CA into the bundle, then its leaf served. */
  requestRotation(): void {
    this.forceRotation = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /**
   * Removes the APIServices (first, so discovery never breaks), then the Service and Secret.
   * An APIService Governor took over is given back as it was, if its Service still exists
   * (an APIService pointing at a missing Service would break discovery and namespace
   * deletion). Returns what it did, one line each: `removed apiservice/…`, `gave back …`.
   */
  async uninstall(): Promise<string[]> {
    const done: string[] = [];
    for (const a of buildApiServices({
      service: { namespace: this.opts.namespace, name: this.opts.serviceName, port: this.opts.port },
      caBundle: "",
      apis: this.opts.apis,
    })) {
      const path = `/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`;
      const existing = await this.opts.client.getOrUndefined<ApiServiceObject>(path);
      if (!existing) continue;
      if (!this.isOurs(existing)) {
        this.log.info(
          { apiService: a.metadata.name },
          "not removing an APIService that points at another Service",
        );
        continue;
      }
      const given = await this.giveBack(a.metadata.name, existing);
      if (given) done.push(given);
      else if (await this.opts.client.delete(path)) done.push(`removed apiservice/${a.metadata.name}`);
    }
    if (
      await this.opts.client.delete(
        `/api/v1/namespaces/${this.opts.namespace}/services/${this.opts.serviceName}`,
      )
    )
      done.push(`removed service/${this.opts.serviceName}`);
    if (await this.opts.client.delete(this.secretPath)) done.push(`removed secret/${this.secretName}`);
    return done;
  }

  /**
   * Puts back the APIService Governor's replaced, if it kept one and that one's Service
   * still exists; returns the line saying so, or undefined (nothing given back).
   */
  private async giveBack(name: string, ours: ApiServiceObject): Promise<string | undefined> {
    const kept = replacedOf(ours);
    const svc = kept?.spec.service;
    if (!kept || !svc?.namespace || !svc.name) return undefined;
    const exists = await this.opts.client.getOrUndefined(
      `/api/v1/namespaces/${svc.namespace}/services/${svc.name}`,
    );
    if (!exists) {
      this.log.warn(
        { apiService: name, service: `${svc.namespace}/${svc.name}` },
        "not giving back the APIService Governor replaced: its Service no longer exists",
      );
      return undefined;
    }
    const [group, version] = [name.slice(name.indexOf(".") + 1), name.slice(0, name.indexOf("."))];
    await this.opts.client.createOrReplace(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`, {
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: {
        name,
        ...(kept.labels ? { labels: kept.labels } : {}),
        ...(kept.annotations ? { annotations: kept.annotations } : {}),
      },
      spec: { group, version, ...kept.spec },
    });
    this.log.info({ apiService: name, service: `${svc.namespace}/${svc.name}` }, "gave back APIService");
    return `gave back apiservice/${name} to Service ${svc.namespace}/${svc.name}`;
  }

  /**
   * Another controller wrote a CA of its own into Governor's APIService (KEDA's operator
   * does with `--enable-cert-rotation=true`): Governor writes its own back, and says who to
   * stop, since the two would otherwise take turns and the aggregator lose Governor between.
   */
  private overwritten(name: string): void {
    const message = `the caBundle of APIService ${name} was replaced by one Governor did not write (another controller injects its CA there, e.g. KEDA's operator with --enable-cert-rotation=true): Governor writes its own back; stop the other writer (docs/install.md: Beside KEDA / prometheus-adapter)`;
    this.log.warn({ apiService: name }, message);
    this.opts.events?.record(
      { apiVersion: "v1", kind: "Service", namespace: this.opts.namespace, name: this.opts.serviceName },
      "Warning",
      "APIServiceCABundleOverwritten",
      message,
    );
  }

  private isOurs(a: ApiServiceObject): boolean {
    const svc = a.spec?.service;
    return svc?.namespace === this.opts.namespace && svc.name === this.opts.serviceName;
  }

  /**
   * Tells `onUpstreamTrust` how each forwarded API's upstream is to be checked: from the
   * live APIService while it still points at the upstream, else from the one Governor kept.
   */
  private async reportUpstreamTrust(): Promise<void> {
    for (const api of ["custom", "external"] as const) {
      const upstream = this.opts.forward?.[api];
      if (!upstream || !this.opts.apis.includes(api)) continue;
      let trust: UpstreamApiServiceTrust | undefined;
      for (const gv of API_VERSIONS[api]) {
        const a = await this.opts.client.getOrUndefined<ApiServiceObject>(
          `/apis/apiregistration.k8s.io/v1/apiservices/${gv.version}.${gv.group}`,
        );
        const spec = a && (pointsAt(a.spec, upstream) ? a.spec : replacedOf(a)?.spec);
        if (spec && pointsAt(spec, upstream)) {
          trust = {
            caBundle: spec.caBundle ? Buffer.from(spec.caBundle, "base64").toString("utf8") : undefined,
            insecureSkipTLSVerify: spec.insecureSkipTLSVerify === true,
          };
          break;
        }
      }
      this.opts.onUpstreamTrust?.(api, trust);
    }
  }

  private async sync(): Promise<void> {
    const data = await this.readSecret();
    if (data) {
      // Always what the Secret says now (a pending leaf, a CA key to drop), not only on a change.
      const servedChanged = !this.current || data.cert !== this.current.cert;
      this.current = data;
      if (servedChanged) {
        this.opts.onServingCertificate({ cert: data.cert, key: data.key });
        this.log.info({ notAfter: validity(data.cert).notAfter }, "serving a new certificate");
      }
    }
    if (this.opts.forward) await this.reportUpstreamTrust();
    if (!this.leading || !this.current) return;
    await this.rotateIfDue();
    if (this.opts.mode === "none") return;
    await this.ensureService();
    await this.ensureApiServices();
  }

  private async rotateIfDue(): Promise<void> {
    const cur = this.current!;
    const now = Date.now();
    const next = nextRotationStep(cur, {
      now,
      caPropagationMs: this.opts.caPropagationMs ?? 15_000,
      dnsNames: this.dnsNames,
      force: this.forceRotation,
    });
    switch (next.step) {
      case "promote":
        await this.writeSecret(next.secret);
        this.opts.onServingCertificate({ cert: next.secret.cert, key: next.secret.key });
        this.log.info({ notAfter: validity(next.secret.cert).notAfter }, "serving the new CA's certificate");
        return;
      case "rotate":
        await this.writeSecret(withNewCA(cur, await this.generate(), now));
        this.forceRotation = false; // only once written: a lost write (409) rotates next time
        this.log.info(
          "rotating: a new CA added to caBundle; its certificate is served once the aggregator has it",
        );
        return;
      case "drop-ca-key":
        await this.writeSecret(next.secret);
        this.log.info("dropped the CA key an older version kept in the Secret");
        return;
      case "wait": // the new CA is not in every caBundle yet
      case "none":
        return;
    }
  }

  private generate(): Promise<ServingSecret> {
    return newServingSecret({
      serviceName: this.opts.serviceName,
      namespace: this.opts.namespace,
      dnsNames: this.dnsNames,
      ...(this.opts.mode === "local" ? { ipAddresses: ["127.0.0.1"] } : {}),
      leafDays: this.opts.leafDays,
    });
  }

  private secretBody(d: ServingSecret) {
    return servingSecretObject({ namespace: this.opts.namespace, name: this.secretName }, d);
  }

  private async readSecret(): Promise<ServingSecret | undefined> {
    const s = await this.opts.client.getOrUndefined<KubeObject & { data?: Record<string, string> }>(
      this.secretPath,
    );
    if (!s?.data) return undefined;
    this.secretVersion = s.metadata?.resourceVersion;
    return parseServingSecret(s);
  }

  /**
   * Replaces the Secret, on condition that it is still the version this decision was read
   * from: if another writer (a second leader in a split, a person) changed it meanwhile, the
   * apiserver answers 409 and the next sync reads again and decides again.
   */
  private async writeSecret(d: ServingSecret): Promise<void> {
    const body = this.secretBody(d);
    const written = await this.opts.client.replace<KubeObject>(this.secretPath, {
      ...body,
      metadata: { ...body.metadata, resourceVersion: this.secretVersion },
    });
    this.secretVersion = written.metadata?.resourceVersion;
    this.current = d;
  }

  private async ensureService(): Promise<void> {
    const body =
      this.opts.mode === "local"
        ? buildLocalService({
            namespace: this.opts.namespace,
            name: this.opts.serviceName,
            port: this.opts.port,
          })
        : buildClusterService({
            namespace: this.opts.namespace,
            name: this.opts.serviceName,
            port: this.opts.port,
            targetPort: this.opts.targetPort ?? 6443,
          });
    await this.opts.client.apply(
      `/api/v1/namespaces/${this.opts.namespace}/services/${this.opts.serviceName}`,
      body,
      { fieldManager: "governor" },
    );
  }

  private async ensureApiServices(): Promise<void> {
    const wanted = buildApiServices({
      service: { namespace: this.opts.namespace, name: this.opts.serviceName, port: this.opts.port },
      caBundle: this.caBundle,
      apis: this.opts.apis,
    });
    for (const a of wanted) {
      const path = `/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`;
      const existing = await this.opts.client.getOrUndefined<ApiServiceObject>(path);
      const svc = existing?.spec?.service;
      const foreign = existing !== undefined && !this.isOurs(existing);
      const upstream = this.opts.forward?.[apiOf(a.spec.group)];
      const toUpstream = foreign && upstream !== undefined && pointsAt(existing.spec, upstream);
      if (foreign && !this.opts.takeOver && !toUpstream) {
        const owner = svc ? `Service ${svc.namespace}/${svc.name}` : "the local apiserver";
        const message = `APIService ${a.metadata.name} points at ${owner}; Governor leaves it alone (start with --take-over-apiservices to replace it${upstream ? `, or name that Service in --forward-${apiOf(a.spec.group)}` : ""})`;
        if (this.conflicts.get(a.metadata.name) !== message) {
          this.log.warn({ apiService: a.metadata.name, owner }, message);
          this.opts.events?.record(
            {
              apiVersion: "v1",
              kind: "Service",
              namespace: this.opts.namespace,
              name: this.opts.serviceName,
            },
            "Warning",
            "APIServiceConflict",
            message,
          );
        }
        this.conflicts.set(a.metadata.name, message);
        continue;
      }
      this.conflicts.delete(a.metadata.name);
      // Ours, and it replaced another that is not forwarded to any more: give that one back.
      if (
        !foreign &&
        existing &&
        !upstream &&
        !this.opts.takeOver &&
        (await this.giveBack(a.metadata.name, existing))
      )
        continue;
      // What this APIService replaced, kept to give back: the one there now when taking over,
      // else what Governor's own already keeps.
      const kept = foreign
        ? JSON.stringify({
            ...(existing.metadata?.labels ? { labels: existing.metadata.labels } : {}),
            ...(existing.metadata?.annotations ? { annotations: existing.metadata.annotations } : {}),
            spec: withoutGroupVersion(existing.spec ?? {}),
          } satisfies ReplacedApiService)
        : existing?.metadata?.annotations?.[REPLACED_ANNOTATION];
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
        this.overwritten(a.metadata.name);
      // Not server-side apply: the aggregator of Kubernetes ≤ 1.20 panics on it for APIServices.
      await this.opts.client.createOrReplace(path, body);
      this.log.info(
        {
          apiService: a.metadata.name,
          ...(toUpstream ? { forwardingTo: `${svc?.namespace}/${svc?.name}` } : {}),
        },
        foreign ? "took over APIService" : "registered APIService",
      );
    }
  }
}

/** Which of Governor's APIs a group is. */
function apiOf(group: string): "custom" | "external" {
  return group === API_VERSIONS.external[0].group ? "external" : "custom";
}

/** Whether an APIService's spec points at `upstream`'s Service. */
function pointsAt(spec: ApiServiceSpec | undefined, upstream: UpstreamRef): boolean {
  const svc = spec?.service;
  return svc?.namespace === upstream.namespace && svc.name === upstream.name;
}

/** The APIService kept in Governor's annotation, if there is one and it parses. */
function replacedOf(a: ApiServiceObject): ReplacedApiService | undefined {
  const text = a.metadata?.annotations?.[REPLACED_ANNOTATION];
  if (!text) return undefined;
  try {
    const kept = JSON.parse(text) as ReplacedApiService;
    return typeof kept?.spec === "object" && kept.spec !== null ? kept : undefined;
  } catch {
    return undefined;
  }
}

/** Whether two base64 caBundles have a certificate in common (Governor's own bundle mid-rotation has two). */
function sharesCA(a: string, b: string): boolean {
  const theirs = new Set(splitPem(Buffer.from(a, "base64").toString("utf8")).map((c) => c.trim()));
  return splitPem(Buffer.from(b, "base64").toString("utf8")).some((c) => theirs.has(c.trim()));
}

/** A spec without group and version (the APIService's name says them). */
function withoutGroupVersion(spec: ApiServiceSpec): ApiServiceSpec {
  const { group: _group, version: _version, ...rest } = spec;
  return rest;
}
