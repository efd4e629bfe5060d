/**
 * Governor registers itself as the cluster's metrics API. Three parts, one loop:
 * the serving certificate in a Secret (serving-certificate.ts: one CA however many
 * replicas start, rotated by the leader, hot-swapped by every replica), the Service and
 * APIServices (api-services.ts: never someone else's, unless told), and what was taken
 * over and is given back (takeover.ts, ADR 0011). Every replica follows the Secret on each
 * sync; the leader's part — rotation, the Service and the APIServices — is a runnable the
 * manager starts on leadership.
 *
 * Modes: `cluster` (ClusterIP Service on the operator's pods), `local` (ExternalName
 * Service → localhost, for a process outside the pod network), `none` (GitOps installs
 * ship these objects themselves).
 */
import type { Logger } from "pino";
import type { KeyPair } from "../certs/certs.js";
import { serviceDnsNames } from "../manifests/api-service.js";
import type { Runnable } from "../util/runnable.js";
import { ApiServices, type ApiServicesOptions } from "./api-services.js";
import { ServingCertificate } from "./serving-certificate.js";
import { type UpstreamApiServiceTrust, upstreamTrust } from "./takeover.js";

export type { UpstreamApiServiceTrust, UpstreamRef } from "./takeover.js";

/** How Governor registers. */
export const RegistrationModes = ["cluster", "local", "none"] as const;
export type RegistrationMode = (typeof RegistrationModes)[number];

/** Options of {@link Registration}. */
export interface RegistrationOptions extends Omit<ApiServicesOptions, "mode"> {
  mode: RegistrationMode;
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
  private readonly certificate: ServingCertificate;
  private readonly apiServices: ApiServices;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Syncs run one at a time (the timer and syncNow() alike), in order. */
  private running: Promise<void> = Promise.resolve();
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
      if (this.certificate.loaded)
        this.syncNow().catch((err: unknown) =>
          this.log.warn(
            { err: String(err) },
            "registration sync on becoming leader failed; the periodic resync retries",
          ),
        );
    },
    // A sync already writing finishes before the manager releases the Lease.
    stop: async () => {
      this.leading = false;
      await this.running;
    },
  };

  constructor(private readonly opts: RegistrationOptions) {
    this.log = opts.logger.child({ component: "registration" });
    const { client, namespace, serviceName, mode } = opts;
    this.certificate = new ServingCertificate({
      client,
      logger: this.log,
      namespace,
      serviceName,
      dnsNames: [...serviceDnsNames(namespace, serviceName), ...(mode === "local" ? ["localhost"] : [])],
      ...(mode === "local" ? { ipAddresses: ["127.0.0.1"] } : {}),
      onServingCertificate: opts.onServingCertificate,
      leafDays: opts.leafDays,
      caPropagationMs: opts.caPropagationMs,
    });
    // With mode "none" the Service and APIServices are shipped by the install, but
    // uninstall still removes what an earlier mode registered.
    this.apiServices = new ApiServices({
      ...opts,
      logger: this.log,
      mode: mode === "local" ? "local" : "cluster",
    });
  }

  /** APIServices left alone because another Service owns them, with what was said. */
  get conflicts(): ReadonlyMap<string, string> {
    return this.apiServices.conflicts;
  }

  /**
   * Loads (or creates) the Secret and returns the serving certificate to start with.
   * Every replica calls this; exactly one CA results.
   */
  init(): Promise<KeyPair> {
    return this.certificate.init();
  }

  /** The CA bundle the APIServices should carry now. */
  get caBundle(): string {
    return this.certificate.caBundle;
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
    this.certificate.requestRotation();
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
    const done = await this.apiServices.uninstall();
    if (await this.certificate.delete()) done.push(`removed secret/${this.certificate.secretName}`);
    return done;
  }

  private async sync(): Promise<void> {
    await this.certificate.follow();
    for (const api of ["custom", "external"] as const) {
      const upstream = this.opts.forward?.[api];
      if (upstream && this.opts.apis.includes(api))
        this.opts.onUpstreamTrust?.(api, await upstreamTrust(this.opts.client, api, upstream));
    }
    if (!this.leading || !this.certificate.loaded) return;
    await this.certificate.rotateIfDue();
    if (this.opts.mode === "none") return;
    await this.apiServices.ensure(this.certificate.caBundle);
  }
}
