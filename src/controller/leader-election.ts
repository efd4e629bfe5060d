/**
 * Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
 * does: the holder renews every `retryPeriod`; others take over once the Lease record has
 * not changed for `leaseDuration` *as measured on their own clock from when they saw it
 * change* (clock skew between replicas does not matter); a leader whose renew has not
 * succeeded within `renewDeadline` of when that renew started steps down at once, even
 * while the request is still in flight (`renewDeadline` < `leaseDuration`, so it has stopped
 * before anyone else can take over). Writes use the Lease's resourceVersion, so two
 * candidates cannot both win.
 */
import type { Logger } from "pino";
import { KubeApiError, type KubeApi } from "../k8s/client.js";
import { type Clock, type Timer, systemClock } from "../util/clock.js";

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
  client: KubeApi,
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
  private tickTimer?: Timer;
  private watchdog?: Timer;
  private leading = false;
  /** Local time at which the last successful renew *started*. */
  private renewStartedAt = 0;
  /** The Lease spec as last read, and the local time it was first seen so. */
  private observed?: { record: string; at: number };
  private stopped = false;

  constructor(
    private readonly client: KubeApi,
    private readonly opts: LeaderElectionOptions,
    private readonly logger: Logger,
    private readonly clock: Clock = systemClock,
  ) {}

  private now(): number {
    return this.clock.now();
  }

  /** Whether this process holds the lease now. */
  get isLeader(): boolean {
    return this.leading;
  }

  private get leaseDurationMs() {
    return this.opts.leaseDurationMs ?? 15_000;
  }

  private get renewDeadlineMs() {
    return this.opts.renewDeadlineMs ?? 10_000;
  }

  /** Starts trying to acquire and then renewing. */
  start(): void {
    void this.tick();
  }

  /** Stops; releases the lease if held, so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.tickTimer?.cancel();
    this.watchdog?.cancel();
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
    if (!this.stopped)
      this.tickTimer = this.clock.after(this.opts.retryPeriodMs ?? 2000, () => void this.tick());
  }

  /**
   * One attempt. Every request is bounded so that a leader's renew cannot outlive its renew
   * deadline; the watchdog ends leadership at that deadline whatever is still in flight.
   */
  private async tryAcquireOrRenew(): Promise<void> {
    const started = this.now();
    // A leader has until its renew deadline; a follower, one renew deadline per attempt.
    const budget = this.leading ? this.renewStartedAt + this.renewDeadlineMs - started : this.renewDeadlineMs;
    const timeoutMs = Math.max(1, budget);
    const durationSeconds = Math.ceil(this.leaseDurationMs / 1000);
    const lease = await this.client
      .request<Lease>("GET", this.path(), { timeoutMs })
      .catch((err: unknown) => {
        if (err instanceof KubeApiError && err.statusCode === 404) return undefined;
        throw err;
      });
    const at = microTime(new Date(started));
    if (!lease) {
      const spec = {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: at,
        renewTime: at,
        leaseTransitions: 0,
      };
      await this.client.request(
        "POST",
        `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases`,
        {
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name: this.opts.name, namespace: this.opts.namespace },
            spec,
          },
          timeoutMs,
        },
      );
      this.observe(spec);
      this.renewed(started);
      return;
    }
    const spec = lease.spec ?? {};
    this.observe(spec);
    const holder = spec.holderIdentity ?? "";
    const mine = holder === this.opts.identity;
    // Expiry as client-go judges it: from when *this* replica saw the record change, by its
    // own clock — never the holder's renewTime against the local clock.
    const duration = (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (holder && !mine && this.observed!.at + duration > this.now()) {
      if (this.leading) this.setLeading(false);
      return;
    }
    const next = {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: durationSeconds,
      acquireTime: mine ? spec.acquireTime : at,
      renewTime: at,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    await this.client.request("PUT", this.path(), {
      body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: lease.metadata, spec: next },
      timeoutMs: Math.max(1, timeoutMs - (this.now() - started)),
    });
    this.observe(next);
    this.renewed(started);
  }

  private observe(spec: NonNullable<Lease["spec"]>) {
    const record = JSON.stringify([
      spec.holderIdentity,
      spec.leaseDurationSeconds,
      spec.acquireTime,
      spec.renewTime,
      spec.leaseTransitions,
    ]);
    if (this.observed?.record !== record) this.observed = { record, at: this.now() };
  }

  /** A renew that started at `started` succeeded: leadership lasts until `started` + renew deadline. */
  private renewed(started: number) {
    if (this.stopped) return;
    // Succeeded, but too late to count: the watchdog already ended leadership; the next
    // attempt (still the holder) starts it again on a fresh renew.
    if (this.now() - started >= this.renewDeadlineMs) return;
    this.renewStartedAt = started;
    this.watchdog?.cancel();
    this.watchdog = this.clock.after(Math.max(0, started + this.renewDeadlineMs - this.now()), () => {
      if (this.leading && this.now() - this.renewStartedAt >= this.renewDeadlineMs) {
        this.logger.warn("could not renew the lease within the renew deadline: stepping down");
        this.setLeading(false);
      }
    });
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
