/**
 * Writes MetricMappings' status and Events: a runnable that needs leadership, so only the
 * leader writes, and the manager starts it when this replica becomes the leader (it then
 * asks for every mapping again, to write what the previous leader left). The reconciler,
 * which runs on every replica, offers each status it computes; while stopped, an offer is
 * not written. The write policy (value-only changes spaced and budgeted) is
 * mapping-status.ts's.
 */
import type { Condition } from "../api/common.js";
import { API_VERSION } from "../api/common.js";
import type { MetricMappingObject, MetricMappingStatus } from "../sources/registry.js";
import { KubeApiError, type KubeApi } from "../k8s/client.js";
import { TokenBucket } from "../util/token-bucket.js";
import type { Runnable } from "../util/runnable.js";
import { findCondition } from "./conditions.js";
import { objectKey } from "./controller.js";
import type { EventRecorder } from "./events.js";
import { statusWrite } from "./mapping-status.js";
import type { ReconcileResult } from "./work-queue.js";

/** Options of {@link MappingStatusWriter}. */
export interface MappingStatusWriterOptions {
  client: KubeApi;
  events: EventRecorder;
  /** Minimum time between status writes that only change the value. @default 10000 */
  statusValueIntervalMs?: number;
  /**
   * Status writes that only change the value, per second across all mappings (burst
   * twice that). Condition changes are never held back. With 10,000 mappings whose
   * values move every sample, this keeps the apiserver at 20 writes/s instead of ~700.
   * @default 20
   */
  statusValueWritesPerSecond?: number;
}

/** See the module comment. */
export class MappingStatusWriter implements Runnable {
  readonly name = "MetricMapping status writer";
  readonly needsLeader = true;
  private writing = false;
  /** When each mapping's status was last written (or a value write was last refused for budget). */
  private readonly lastWrite = new Map<string, number>();
  private readonly valueWrites: TokenBucket;

  constructor(
    private readonly opts: MappingStatusWriterOptions,
    /** Asks for every mapping's status again (the reconciler's resync). */
    private readonly resync: () => void,
  ) {
    const perSecond = opts.statusValueWritesPerSecond ?? 20;
    this.valueWrites = new TokenBucket(perSecond, 2 * perSecond);
  }

  start(): void {
    this.writing = true;
    this.resync();
  }

  stop(): void {
    this.writing = false;
  }

  /**
   * When a status that only changes the value could be written for `key`: `0` now, a delay
   * in ms (its last write is too recent), or `undefined` if it would not be written at all
   * (this replica does not write, or the budget is spent for now).
   */
  valueWriteIn(key: string): number | undefined {
    if (!this.writing) return undefined;
    const since = Date.now() - (this.lastWrite.get(key) ?? 0);
    const spacing = this.opts.statusValueIntervalMs ?? 10_000;
    if (since < spacing) return spacing - since;
    return this.valueWrites.has() ? 0 : undefined;
  }

  /** The mapping is gone: forget when it was written. */
  forget(key: string): void {
    this.lastWrite.delete(key);
  }

  /**
   * Writes `status` for `obj` if this replica writes and the policy says so now; announces
   * condition changes as Events. Returns when to look again if the write was held back
   * (`later` otherwise).
   */
  async offer(
    obj: MetricMappingObject,
    status: MetricMappingStatus,
    later: ReconcileResult,
  ): Promise<ReconcileResult> {
    if (!this.writing) return later;
    const key = objectKey(obj);
    const old = obj.status ?? {};
    const now = Date.now();
    const decision = statusWrite(old, status, {
      sinceLastWriteMs: now - (this.lastWrite.get(key) ?? 0),
      valueIntervalMs: this.opts.statusValueIntervalMs ?? 10_000,
      takeBudget: () => this.valueWrites.take(),
    });
    if (!decision.write) {
      // Out of budget: this mapping's next value waits half to all of its spacing (jittered,
      // so mappings refused together do not all come back together).
      const spacing = this.opts.statusValueIntervalMs ?? 10_000;
      if (decision.outOfBudget) this.lastWrite.set(key, now - (Math.random() * spacing) / 2);
      return decision.requeueAfterMs !== undefined ? { requeueAfterMs: decision.requeueAfterMs } : later;
    }

    this.announce(obj, old.conditions, status.conditions ?? []);
    try {
      await this.opts.client.mergePatch(
        `/apis/${API_VERSION}/namespaces/${obj.metadata?.namespace}/metricmappings/${obj.metadata?.name}/status`,
        {
          status: {
            ...status,
            value: status.value ?? null,
            objects: status.objects ?? null,
            lastSampleTime: status.lastSampleTime ?? null,
          },
        },
      );
      this.lastWrite.set(key, Date.now());
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) return {};
      throw err;
    }
    return later;
  }

  private announce(
    obj: MetricMappingObject,
    before: readonly Condition[] | undefined,
    after: readonly Condition[],
  ): void {
    const subject = {
      apiVersion: API_VERSION,
      kind: "MetricMapping",
      namespace: obj.metadata?.namespace ?? "",
      name: obj.metadata?.name ?? "",
      uid: obj.metadata?.uid,
    };
    const shadows = findCondition(after, "ShadowsUpstream");
    if (shadows && !findCondition(before, "ShadowsUpstream"))
      this.opts.events.record(subject, "Warning", shadows.reason, shadows.message);
    for (const type of ["Ready", "SourceHealthy"]) {
      const was = findCondition(before, type);
      const now = findCondition(after, type);
      if (!now || (was?.status === now.status && was?.reason === now.reason)) continue;
      if (now.status === "False") this.opts.events.record(subject, "Warning", now.reason, now.message);
      else if (now.status === "True" && was)
        this.opts.events.record(subject, "Normal", now.reason, now.message);
    }
  }
}
