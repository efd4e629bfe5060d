/**
 * Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
 * does: the holder renews every `retryPeriod`; others take over once the lease has not
 * been renewed for `leaseDuration`; a leader that cannot renew within `renewDeadline`
 * steps down. Writes use the Lease's resourceVersion, so two candidates cannot both win.
 */
import type { Logger } from "pino";
import { KubeApiError, type KubeClient } from "../k8s/client.js";

/** Options of {@link LeaderElector}. */
export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  /** @default 15000 */
  leaseDurationMs?: number;
  /** @default 10000 */
  renewDeadlineMs?: number;
  /** @default 2000 */
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

const microTime = (d: Date) => d.toISOString().replace("Z", "000Z");

/** The default name of Governor's leader Lease. */
export const DEFAULT_LEASE_NAME = "governor-leader";

/**
 * Who holds the Lease `namespace/name` right now: the holder's identity while the lease is
 * unexpired (renewed within its duration), else `undefined` (no Lease, released, or left
 * to expire by a holder that is gone).
 */
export async function currentLeaseHolder(
  client: KubeClient,
  namespace: string,
  name: string,
  now = Date.now(),
): Promise<string | undefined> {
  const lease = await client.getOrUndefined<Lease>(
    `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${name}`,
  );
  const holder = lease?.spec?.holderIdentity;
  const renewed = Date.parse(lease?.spec?.renewTime ?? "");
  if (!holder || Number.isNaN(renewed)) return undefined;
  return renewed + (lease?.spec?.leaseDurationSeconds ?? 15) * 1000 > now ? holder : undefined;
}

/** See the module comment. */
export class LeaderElector {
  private timer?: NodeJS.Timeout;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
    private readonly logger: Logger,
  ) {}

  /** Whether this process holds the lease now. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts trying to acquire and then renewing. */
  start(): void {
    void this.tick();
  }

  /** Stops; releases the lease if held, so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.leading) {
      this.setLeading(false);
      try {
        const lease = await this.client.get<Lease>(this.path());
        if (lease.spec?.holderIdentity === this.opts.identity) {
          await this.client.replace(this.path(), {
            ...lease,
            spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 },
          });
        }
      } catch (err) {
        this.logger.debug({ err }, "could not release the lease");
      }
    }
  }

  private path() {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases/${this.opts.name}`;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      if (!(err instanceof KubeApiError && err.statusCode === 409))
        this.logger.warn({ err }, "leader election");
    }
    if (this.leading && Date.now() - this.lastRenew > (this.opts.renewDeadlineMs ?? 10_000)) {
      this.logger.warn("could not renew the lease in time: stepping down");
      this.setLeading(false);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.opts.retryPeriodMs ?? 2000);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    const durationSeconds = Math.ceil((this.opts.leaseDurationMs ?? 15_000) / 1000);
    const lease = await this.client.getOrUndefined<Lease>(this.path());
    if (!lease) {
      await this.client.create(`/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases`, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.opts.name, namespace: this.opts.namespace },
        spec: {
          holderIdentity: this.opts.identity,
          leaseDurationSeconds: durationSeconds,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: 0,
        },
      });
      this.renewed();
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    const renewedAt = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = renewedAt + (spec.leaseDurationSeconds ?? durationSeconds) * 1000 < now.getTime();
    if (holder && holder !== this.opts.identity && !expired) {
      if (this.leading) this.setLeading(false);
      return;
    }
    const mine = holder === this.opts.identity;
    await this.client.replace(this.path(), {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: lease.metadata,
      spec: {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: mine ? spec.acquireTime : microTime(now),
        renewTime: microTime(now),
        leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
      },
    });
    this.renewed();
  }

  private renewed() {
    this.lastRenew = Date.now();
    if (!this.leading) this.setLeading(true);
  }

  private setLeading(leading: boolean) {
    this.leading = leading;
    this.logger.info(
      { identity: this.opts.identity, lease: this.opts.name },
      leading ? "became leader" : "stopped leading",
    );
    if (leading) this.opts.onStartedLeading();
    else this.opts.onStoppedLeading();
  }
}
