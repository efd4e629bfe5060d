/**
 * Informers that keep going. `@kubernetes/client-node`'s informer stops for good after a
 * list or watch error (a dropped connection, an apiserver restart); this wrapper restarts
 * it with capped exponential backoff until {@link ResilientInformer.stop} is called, and
 * relists after a 410 Gone (the library's own behaviour).
 *
 * Cached objects are kept without `metadata.managedFields` and kubectl's
 * last-applied-configuration annotation: nothing here reads them, and they are most of an
 * object's size (10,000 MetricMappings: see bench/).
 */
import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  Watch,
} from "@kubernetes/client-node";
import { Backoff } from "../util/backoff.js";

/** Callbacks for one informer; each is called with the object as the cache now holds it. */
export interface InformerHandlers<T extends KubernetesObject> {
  add?: (obj: T) => void;
  update?: (obj: T) => void;
  delete?: (obj: T) => void;
  /** Called for every list/watch error before the restart is scheduled. */
  error?: (err: unknown, retryInMs: number) => void;
  /** Called after every successful list (the first, and each relist after an error). */
  listed?: () => void;
}

/** What an informer watches beyond its path, and what it keeps. */
export interface InformerOptions {
  labelSelector?: string;
  fieldSelector?: string;
  backoff?: Backoff;
  /**
   * Keep only each object's identity (kind, name, namespace, uid, resourceVersion): for
   * users that count objects or know which exist, never read their contents.
   */
  identityOnly?: boolean;
  /** With {@link identityOnly}: keep `metadata.labels` too (for users that match selectors). */
  keepLabels?: boolean;
}

/** Objects per page of an informer's list (client-go's pager uses the same). */
export const LIST_PAGE_SIZE = 500;

/** One page of a list: at most `limit` objects (no limit: all), from `continue` (a token of the page before). */
export interface ListPage {
  limit?: number;
  continue?: string;
}

/** A started informer over one API path, restarted on errors. */
export interface ResilientInformer<T extends KubernetesObject> {
  /** Objects in the cache, all or in one namespace. */
  list(namespace?: string): readonly T[];
  /** One object from the cache. */
  get(name: string, namespace?: string): T | undefined;
  /** Resolves once the first list has been delivered. */
  synced: Promise<void>;
  /** Stops watching; no callback fires afterwards. */
  stop(): Promise<void>;
}

/**
 * Starts an informer over `path` (e.g. `/api/v1/pods`, `/api/v1/namespaces/x/pods`).
 * `list` must list the same objects the path watches, a page at a time where it can.
 */
export function startInformer<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  list: (page: ListPage) => Promise<KubernetesListObject<T>>,
  handlers: InformerHandlers<T>,
  opts: InformerOptions = {},
): ResilientInformer<T> {
  const strip = opts.identityOnly ? (opts.keepLabels ? identityAndLabels : identity) : slim;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const backoff = opts.backoff ?? new Backoff({ initialMs: 200, maxMs: 30_000 });
  let markSynced: () => void = () => {};
  const synced = new Promise<void>((resolve) => (markSynced = resolve));
  const informer = new ListWatch<T>(
    path,
    new SlimWatch(kc, strip),
    async () => {
      // Page by page, each reduced before the next arrives: 100,000 objects never sit in
      // memory whole as one answer.
      const items: T[] = [];
      let result = await list({ limit: LIST_PAGE_SIZE });
      let token: string | undefined;
      for (;;) {
        for (const item of result.items) items.push(strip(item));
        const next = (result.metadata as { continue?: string } | undefined)?.continue;
        if (!next) break;
        if (stopped) throw new Error(`informer of ${path} stopped while listing`);
        // A list that never ends would fill the heap page by page: a token must move on.
        if (next === token)
          throw new Error(`listing ${path}: the apiserver gave the same continue token twice`);
        token = next;
        try {
          result = await list({ limit: LIST_PAGE_SIZE, continue: next });
        } catch (err) {
          // The token expired (the snapshot was compacted away while paging): as client-go's
          // pager does, list everything at once instead of starting over page by page.
          if ((err as { statusCode?: number }).statusCode !== 410) throw err;
          items.length = 0;
          result = await list({});
          for (const item of result.items) items.push(strip(item));
          break;
        }
      }
      result.items = items;
      backoff.reset();
      handlers.listed?.();
      // The cache is filled right after this returns; let that happen first.
      setImmediate(markSynced);
      return result;
    },
    false,
    opts.labelSelector,
    opts.fieldSelector,
  );
  if (handlers.add) informer.on("add", handlers.add);
  if (handlers.update) informer.on("update", handlers.update);
  if (handlers.delete) informer.on("delete", handlers.delete);
  informer.on("error", (err: unknown) => {
    if (stopped) return;
    const delay = backoff.next();
    handlers.error?.(err, delay);
    timer = setTimeout(() => {
      if (!stopped) informer.start().catch(() => {}); // a failed start reports through "error" again
    }, delay);
  });
  informer.start().catch(() => {});
  return {
    list: (namespace) => informer.list(namespace),
    get: (name, namespace) => informer.get(name, namespace),
    synced,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await informer.stop();
    },
  };
}

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/**
 * Drops what no informer user reads and costs most memory (see the module comment), and
 * shares the strings thousands of objects repeat ({@link shared}). The metadata is made
 * anew rather than deleted from: a `delete` turns an object into a hash table (about 400
 * bytes more for each object cached).
 */
export function slim<T extends KubernetesObject>(obj: T): T {
  const meta = obj.metadata;
  if (meta) {
    const { managedFields: _fields, annotations, ...rest } = meta;
    const kept: typeof meta = rest;
    if (annotations) {
      const { [LAST_APPLIED]: _applied, ...others } = annotations;
      kept.annotations = others;
    }
    if (kept.namespace !== undefined) kept.namespace = shared(kept.namespace);
    const stamped = kept as { creationTimestamp?: string }; // a string in JSON, whatever the type says
    if (stamped.creationTimestamp !== undefined)
      stamped.creationTimestamp = shared(stamped.creationTimestamp);
    obj.metadata = kept;
  }
  if (obj.apiVersion !== undefined) obj.apiVersion = shared(obj.apiVersion);
  if (obj.kind !== undefined) obj.kind = shared(obj.kind);
  const conditions = (obj as { status?: { conditions?: unknown } }).status?.conditions;
  if (Array.isArray(conditions))
    for (const c of conditions as Record<string, unknown>[]) {
      if (!c || typeof c !== "object") continue;
      for (const field of ["type", "status", "reason", "message", "lastTransitionTime"])
        if (typeof c[field] === "string") c[field] = shared(c[field]);
    }
  return obj;
}

/** Strings {@link shared} keeps in each of its two generations, and the longest it shares. */
const SHARED_GENERATION = 4096;
const SHARED_MAX_LENGTH = 64;
let sharedYoung = new Map<string, string>();
let sharedOld = new Map<string, string>();

/**
 * One copy of a short string many cached objects repeat (an apiVersion, a condition's
 * reason, a timestamp of a bulk apply): JSON parsing makes a new copy for each object. Two
 * generations of at most {@link SHARED_GENERATION} strings: when the young one is full it
 * becomes the old one and the old one is dropped, so strings that keep coming back stay
 * and one-off strings (a unique message, a timestamp) pass through.
 */
export function shared<S extends string | undefined>(text: S): S {
  if (text === undefined || text.length > SHARED_MAX_LENGTH) return text;
  const known = sharedYoung.get(text) ?? sharedOld.get(text) ?? text;
  if (!sharedYoung.has(known)) {
    if (sharedYoung.size >= SHARED_GENERATION) {
      sharedOld = sharedYoung;
      sharedYoung = new Map();
    }
    sharedYoung.set(known, known);
  }
  return known as S;
}

/** An object reduced to what says which object it is (see `identityOnly`). */
export function identity<T extends KubernetesObject>(obj: T): T {
  const m = obj.metadata ?? {};
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion },
  } as T;
}

/** {@link identity} and the object's labels. */
export function identityAndLabels<T extends KubernetesObject>(obj: T): T {
  const kept = identity(obj);
  if (obj.metadata?.labels) kept.metadata!.labels = obj.metadata.labels;
  return kept;
}

/** A Watch whose events carry slimmed objects. */
class SlimWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly strip: <T extends KubernetesObject>(obj: T) => T,
  ) {
    super(kc);
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(
      path,
      queryParams,
      (phase, obj: KubernetesObject | undefined, watchObj) =>
        // An ERROR event carries a Status (its `code` 410 means: relist), not an object.
        callback(
          phase,
          obj && typeof obj === "object" && phase !== "ERROR" ? this.strip(obj) : obj,
          watchObj,
        ),
      done,
    );
  }
}
