/**
 * One informer per watched collection, shared by everything in the process that reads it
 * (controller-runtime's shared cache): a controller that starts late — a leader-elected
 * one, after a failover — subscribes to a cache that is already warm instead of listing
 * again, and the apiserver sees one watch per collection however many readers there are.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { KubeApi } from "./client.js";
import type { InformerHandlers, InformerOptions, ResilientInformer } from "./informer.js";

/** Callbacks a subscriber is given (errors are logged once, by the cache). */
export type SubscriberHandlers<T extends KubernetesObject> = Pick<
  InformerHandlers<T>,
  "add" | "update" | "delete"
>;

/** A shared informer: read its cache, or subscribe to its changes. Stopped by its {@link InformerCache} only. */
export interface SharedInformer<T extends KubernetesObject> extends Omit<ResilientInformer<T>, "stop"> {
  /**
   * Calls `handlers` for every change from now on, after an `add` for each object already
   * cached. Returns the function that unsubscribes.
   */
  subscribe(handlers: SubscriberHandlers<T>): () => void;
}

interface Entry {
  informer: ResilientInformer<KubernetesObject>;
  shared: SharedInformer<KubernetesObject>;
  options: string;
}

/** See the module comment. */
export class InformerCache {
  private readonly entries = new Map<string, Entry>();
  private stopped = false;

  constructor(
    private readonly client: KubeApi,
    private readonly log: Logger,
  ) {}

  /**
   * The shared informer over the collection `path`, started on first use. Every user of
   * one path must ask with the same options (a different selector is a different cache:
   * give it its own path).
   */
  informer<T extends KubernetesObject>(path: string, opts: InformerOptions = {}): SharedInformer<T> {
    if (this.stopped) throw new Error("the informer cache is stopped");
    const options = JSON.stringify(Object.entries({ ...opts, backoff: undefined }).sort());
    const known = this.entries.get(path);
    if (known) {
      if (known.options !== options)
        throw new Error(`informer ${path} is shared with other options (${known.options}, not ${options})`);
      return known.shared as unknown as SharedInformer<T>;
    }
    const subscribers = new Set<SubscriberHandlers<T>>();
    // To those subscribed when the change came; one that throws does not keep it from the others.
    const each = (event: keyof SubscriberHandlers<T>) => (obj: T) => {
      for (const s of [...subscribers])
        try {
          s[event]?.(obj);
        } catch (err) {
          this.log.error({ path, event, err: String(err) }, "an informer subscriber failed");
        }
    };
    const informer = this.client.informer<T>(
      path,
      {
        add: each("add"),
        update: each("update"),
        delete: each("delete"),
        error: (err, retryIn) =>
          this.log.warn({ path, err: String(err), retryIn }, "watch failed; restarting"),
      },
      opts,
    );
    const shared: SharedInformer<T> = {
      list: (namespace) => informer.list(namespace),
      get: (name, namespace) => informer.get(name, namespace),
      synced: informer.synced,
      subscribe(handlers) {
        const own = { ...handlers };
        subscribers.add(own);
        for (const obj of informer.list()) own.add?.(obj);
        return () => subscribers.delete(own);
      },
    };
    this.entries.set(path, {
      informer,
      shared,
      options,
    });
    return shared;
  }

  /** Stops every informer; no handler is called afterwards. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.entries.values()].map((e) => e.informer.stop()));
    this.entries.clear();
  }
}
