/**
 * A controller: a shared informer feeding `namespace/name` keys into a {@link WorkQueue},
 * and workers running a level-based reconcile for each key. Reconcilers read the
 * informer's cache and converge; they never see the event type.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { SharedInformer } from "../k8s/informer-cache.js";
import { type ReconcileResult, WorkQueue, runWorkers } from "./work-queue.js";

/** `namespace/name` (or `name` for cluster-scoped objects). */
export function objectKey(obj: KubernetesObject): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name ?? ""}` : (obj.metadata?.name ?? "");
}

/** Splits an {@link objectKey}. */
export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf("/");
  return i === -1 ? { namespace: "", name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/** Options of {@link startController}. */
export interface ControllerOptions<T extends KubernetesObject> {
  name: string;
  /** The objects reconciled (from the manager's informer cache). */
  informer: SharedInformer<T>;
  reconcile: (key: string) => Promise<ReconcileResult | void>;
  logger: Logger;
  /** @default 4 */
  concurrency?: number;
  /** Sees every reconcile's duration and whether it failed (for /metrics). */
  observeReconcile?: (controller: string, seconds: number, failed: boolean) => void;
  /**
   * Whether an update of an object is news for its reconcile (controller-runtime's
   * predicates): e.g. not the echo of a status the controller wrote itself. @default every update is
   */
  isNews?: (obj: T) => boolean;
}

/** A running controller. */
export interface Controller<T extends KubernetesObject> {
  informer: SharedInformer<T>;
  queue: WorkQueue;
  /** Resolves after the first list has been queued. */
  synced: Promise<void>;
  /**
   * How many objects of the first list have been reconciled at least once (successfully
   * or not), of how many; `undefined` before the first list arrives.
   */
  initialProgress(): { done: number; total: number } | undefined;
  /** Stops the workers and its subscription (the shared informer goes on). */
  stop(): Promise<void>;
}

/** See the module comment. */
export function startController<T extends KubernetesObject>(opts: ControllerOptions<T>): Controller<T> {
  const queue = new WorkQueue();
  const log = opts.logger.child({ controller: opts.name });
  const enqueue = (obj: T) => queue.add(objectKey(obj));
  const informer = opts.informer;
  const isNews = opts.isNews;
  const unsubscribe = informer.subscribe({
    add: enqueue,
    update: isNews ? (obj) => isNews(obj) && enqueue(obj) : enqueue,
    delete: enqueue,
  });
  // Keys attempted before the first list is in, then the first list's keys not yet attempted.
  const attempted = new Set<string>();
  let initial: { pending: Set<string>; total: number } | undefined;
  void informer.synced.then(() => {
    const keys = informer.list().map(objectKey);
    initial = { pending: new Set(keys.filter((k) => !attempted.has(k))), total: keys.length };
    attempted.clear();
  });
  const reconcile = async (key: string) => {
    const start = performance.now();
    let failed = true;
    try {
      const result = await opts.reconcile(key);
      failed = false;
      return result;
    } finally {
      opts.observeReconcile?.(opts.name, (performance.now() - start) / 1000, failed);
      if (initial) initial.pending.delete(key);
      else attempted.add(key);
    }
  };
  const workers = runWorkers(queue, opts.concurrency ?? 4, reconcile, (key, err, retryIn) =>
    log.warn(
      { key, err: err instanceof Error ? err.message : String(err), retryIn },
      "reconcile failed; will retry",
    ),
  );
  return {
    informer,
    queue,
    synced: informer.synced,
    initialProgress: () => initial && { done: initial.total - initial.pending.size, total: initial.total },
    async stop() {
      unsubscribe();
      queue.shutDown();
      await workers;
    },
  };
}
