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
 *   `takeOver` is set.
 *
 * Modes: `cluster` (ClusterIP Service on the operator's pods), `local` (ExternalName
 * Service → localhost, for a process outside the pod network), `none` (GitOps installs
 * ship these objects themselves).
 *
 * (A little over 350 lines: the loop's order — Secret, Service, APIServices, rotation,
 * uninstall — reads top to bottom here; the certificate steps it takes are pure functions
 * in src/certs/serving-secret.ts and the objects it writes are built in src/manifests.)
 */
import type { Logger } from "pino";
import { validity, type KeyPair } from "../certs/certs.js";
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
  buildApiServices,
  buildClusterService,
  buildLocalService,
  serviceDnsNames,
} from "../manifests/api-service.js";
import type { EventRecorder } from "./events.js";

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
  /** Called with the serving certificate whenever it changes. */
  onServingCertificate: (pair: KeyPair) => void;
  /** Whether this replica may write (the leader). */
  isLeader: () => boolean;
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

  /** Removes the APIServices (first, so discovery never breaks), then the Service and Secret. */
  async uninstall(): Promise<string[]> {
    const removed: string[] = [];
    for (const a of buildApiServices({
      service: { namespace: this.opts.namespace, name: this.opts.serviceName, port: this.opts.port },
      caBundle: "",
      apis: this.opts.apis,
    })) {
      const path = `/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`;
      const existing = await this.opts.client.getOrUndefined<{
        spec?: { service?: { namespace?: string; name?: string } };
      }>(path);
      if (!existing) continue;
      if (
        existing.spec?.service?.namespace !== this.opts.namespace ||
        existing.spec?.service?.name !== this.opts.serviceName
      ) {
        this.log.info(
          { apiService: a.metadata.name },
          "not removing an APIService that points at another Service",
        );
        continue;
      }
      if (await this.opts.client.delete(path)) removed.push(`apiservice/${a.metadata.name}`);
    }
    if (
      await this.opts.client.delete(
        `/api/v1/namespaces/${this.opts.namespace}/services/${this.opts.serviceName}`,
      )
    )
      removed.push(`service/${this.opts.serviceName}`);
    if (await this.opts.client.delete(this.secretPath)) removed.push(`secret/${this.secretName}`);
    return removed;
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
    if (!this.opts.isLeader() || !this.current) return;
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
      const existing = await this.opts.client.getOrUndefined<{
        spec?: { service?: { namespace?: string; name?: string; port?: number } | null; caBundle?: string };
      }>(path);
      const svc = existing?.spec?.service;
      const foreign =
        existing && (!svc || svc.namespace !== this.opts.namespace || svc.name !== this.opts.serviceName);
      if (foreign && !this.opts.takeOver) {
        const owner = svc ? `Service ${svc.namespace}/${svc.name}` : "the local apiserver";
        const message = `APIService ${a.metadata.name} points at ${owner}; Governor leaves it alone (start with --take-over-apiservices to replace it)`;
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
      if (existing && svc?.port === a.spec.service.port && existing.spec?.caBundle === a.spec.caBundle)
        continue;
      // Not server-side apply: the aggregator of Kubernetes ≤ 1.20 panics on it for APIServices.
      await this.opts.client.createOrReplace(path, a);
      this.log.info(
        { apiService: a.metadata.name },
        foreign ? "took over APIService" : "registered APIService",
      );
    }
  }
}
