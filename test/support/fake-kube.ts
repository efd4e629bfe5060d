/**
 * An in-memory stand-in for the apiserver's object store behind the {@link KubeApi}
 * interface, for unit tests of code that reads and writes objects (registration,
 * reconcilers' writes). It keeps what the apiserver guarantees and such code relies on:
 * create answers 409 when the object exists; replace with a `resourceVersion` answers 409
 * when the object changed since (optimistic concurrency); a missing object is a 404
 * {@link KubeApiError}; every write bumps `resourceVersion`, and `generation` when more
 * than metadata and status changed. Merge patch follows RFC 7386; server-side apply is
 * modelled as create-or-merge (no field ownership). A `…/status` path reads and writes only
 * the object's `status`; a merge patch of `…/scale` sets only its `spec.replicas` (with the
 * patch's resourceVersion as a precondition, as the HPA sends it). Informers list then
 * watch as the real ones do: the first list and every later change arrive as
 * add/update/delete callbacks on a later turn of the event loop, in the order the writes
 * were made, with the informer's cache updated just before each (a label selector narrows
 * what it sees). Tests can make the next matching call fail, and read back every call made.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { type ApplyOptions, KubeApiError, type KubeApi, type KubeObject } from "../../src/k8s/client.js";
import { type Clock, systemClock } from "../../src/util/clock.js";
import {
  type InformerHandlers,
  type InformerOptions,
  type ResilientInformer,
  identity,
  identityAndLabels,
} from "../../src/k8s/informer.js";
import { LabelSelector } from "../../src/selectors/label-selector.js";

/** One call made to the fake. */
export interface FakeCall {
  method: "get" | "create" | "replace" | "mergePatch" | "apply" | "delete";
  path: string;
}

const REASONS: Record<number, string> = { 404: "NotFound", 409: "Conflict", 500: "InternalError" };

/** An object or collection path taken apart: `/api/v1` or `/apis/group/version`, namespace, resource, name. */
interface ParsedPath {
  prefix: string;
  namespace?: string;
  resource: string;
  name?: string;
}

function parsePath(path: string): ParsedPath | undefined {
  const m = /^(\/api\/v1|\/apis\/[^/]+\/[^/]+)\/(?:namespaces\/([^/]+)\/)?([^/]+)(?:\/([^/]+))?$/.exec(path);
  return m ? { prefix: m[1]!, namespace: m[2], resource: m[3]!, name: m[4] } : undefined;
}

/** One informer's view: which stored paths it sees, what it holds, whom it tells. */
interface Watcher {
  sees: (path: string, obj: KubeObject) => boolean;
  cache: Map<string, KubernetesObject>;
  handlers: InformerHandlers<KubernetesObject>;
  keep: (obj: KubernetesObject) => KubernetesObject;
  stopped: boolean;
}

/** See the module comment. */
export class FakeKube implements KubeApi {
  private readonly objects = new Map<string, KubeObject>();
  private version = 0;
  private uids = 0;
  readonly calls: FakeCall[] = [];
  private readonly faults: { method?: FakeCall["method"]; path?: string; status: number }[] = [];
  private readonly watchers = new Set<Watcher>();
  /**
   * While true, `request()` waits out its timeout (on the fake's clock) and fails, as
   * against an apiserver that stopped answering.
   */
  hanging = false;

  constructor(private readonly clock: Clock = systemClock) {}

  /** The stored object at `path` (a copy), or undefined. */
  peek<T = KubeObject>(path: string): T | undefined {
    const o = this.objects.get(path);
    return o && (structuredClone(o) as T);
  }

  /**
   * Stores `obj` at `path` as if someone else had written it (bumps its resourceVersion);
   * a `creationTimestamp` it carries is kept (to set up who is older).
   */
  seed(path: string, obj: KubeObject): void {
    this.store(path, structuredClone(obj), obj.metadata?.creationTimestamp);
  }

  /**
   * Replaces the object at `path` with a new one of the same name (a new uid, generation 1),
   * delivered to watchers as an update: what an informer sees when a delete and a create
   * fell between two of its watches.
   */
  recreate(path: string, obj: KubeObject): void {
    const at = objectPath(path);
    const stored = this.stamp(at, structuredClone(obj), undefined);
    this.objects.set(at, stored);
    this.notify(at, stored);
  }

  /** Paths of the stored objects under `prefix`. */
  paths(prefix = ""): string[] {
    return [...this.objects.keys()].filter((p) => p.startsWith(prefix)).sort();
  }

  /** Makes the next call matching `method` and `path` (either may be left out) fail with `status`. */
  failNext(status: number, match: { method?: FakeCall["method"]; path?: string } = {}): void {
    this.faults.push({ ...match, status });
  }

  async get<T = KubeObject>(path: string, query?: { labelSelector?: string }): Promise<T> {
    this.record("get", path);
    const collection = parsePath(path);
    if (collection && collection.name === undefined) {
      // A list: the stored objects of the collection, narrowed by the label selector.
      const selector = query?.labelSelector ? LabelSelector.parse(query.labelSelector) : undefined;
      const items = [...this.objects]
        .filter(([p, o]) => {
          const at = parsePath(p);
          return (
            at?.name !== undefined &&
            at.prefix === collection.prefix &&
            at.resource === collection.resource &&
            (collection.namespace === undefined || at.namespace === collection.namespace) &&
            (!selector || selector.matches(o.metadata?.labels ?? {}))
          );
        })
        .map(([, o]) => structuredClone(o));
      return { items } as T;
    }
    const o = this.objects.get(objectPath(path));
    if (!o) throw notFound(path);
    return structuredClone(o) as T;
  }

  async getOrUndefined<T = KubeObject>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) return undefined;
      throw err;
    }
  }

  async create<T = KubeObject>(collection: string, body: unknown): Promise<T> {
    const obj = structuredClone(body) as KubeObject;
    const path = `${collection}/${obj.metadata?.name ?? ""}`;
    this.record("create", path);
    if (this.objects.has(path)) throw new KubeApiError(409, "AlreadyExists", `${path} already exists`);
    return this.store(path, obj) as T;
  }

  async replace<T = KubeObject>(path: string, body: unknown): Promise<T> {
    this.record("replace", path);
    const current = this.objects.get(objectPath(path));
    if (!current) throw notFound(path);
    const obj = structuredClone(body) as KubeObject;
    const expected = obj.metadata?.resourceVersion;
    if (expected !== undefined && expected !== current.metadata?.resourceVersion)
      throw conflict(path, expected, current);
    return this.store(path, isStatus(path) ? { ...current, status: obj.status } : obj) as T;
  }

  async mergePatch<T = KubeObject>(path: string, body: unknown): Promise<T> {
    this.record("mergePatch", path);
    const current = this.objects.get(objectPath(path));
    if (!current) throw notFound(path);
    const patch = body as KubeObject;
    const expected = patch.metadata?.resourceVersion;
    if (expected !== undefined && expected !== current.metadata?.resourceVersion)
      throw conflict(path, expected, current);
    const applied = isStatus(path)
      ? { status: patch.status ?? null }
      : isScale(path)
        ? { spec: { replicas: (patch.spec as { replicas?: number } | undefined)?.replicas } }
        : patch;
    return this.store(path, mergePatch(current, applied) as KubeObject) as T;
  }

  async apply<T = KubeObject>(path: string, body: unknown, _opts: ApplyOptions): Promise<T> {
    this.record("apply", path);
    const current = this.objects.get(path);
    const obj = current ? (mergePatch(current, body) as KubeObject) : (structuredClone(body) as KubeObject);
    return this.store(path, obj) as T;
  }

  async createOrReplace<T extends KubeObject = KubeObject>(path: string, body: KubeObject): Promise<T> {
    const current = await this.getOrUndefined(path);
    if (!current) return this.create<T>(path.slice(0, path.lastIndexOf("/")), body);
    return this.replace<T>(path, {
      ...body,
      metadata: { ...body.metadata, resourceVersion: current.metadata?.resourceVersion },
    });
  }

  async delete(path: string): Promise<boolean> {
    this.record("delete", path);
    const gone = this.objects.delete(path);
    if (gone) this.notify(path, undefined);
    return gone;
  }

  /** A request by method, as `KubeClient.request` (GET, POST to a collection, PUT, merge PATCH, DELETE). */
  async request<T>(
    method: string,
    path: string,
    opts: { body?: unknown; timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.hanging)
      await new Promise((_, reject) =>
        this.clock.after(opts.timeoutMs ?? 30_000, () => reject(new Error(`${method} ${path}: timed out`))),
      );
    switch (method) {
      case "GET":
        return this.get<T>(path);
      case "POST":
        return this.create<T>(path, opts.body);
      case "PUT":
        return this.replace<T>(path, opts.body);
      case "PATCH":
        return this.mergePatch<T>(path, opts.body);
      case "DELETE":
        return (await this.delete(path)) as T;
      default:
        throw new Error(`FakeKube: no ${method}`);
    }
  }

  informer<T extends KubernetesObject>(
    path: string,
    handlers: InformerHandlers<T>,
    opts: InformerOptions = {},
  ): ResilientInformer<T> {
    const collection = parsePath(path);
    if (!collection || collection.name !== undefined) throw new Error(`not a collection path: ${path}`);
    const selector = opts.labelSelector ? LabelSelector.parse(opts.labelSelector) : undefined;
    const w: Watcher = {
      sees: (p, obj) => {
        const o = parsePath(p);
        return (
          o?.name !== undefined &&
          o.prefix === collection.prefix &&
          o.resource === collection.resource &&
          (collection.namespace === undefined || o.namespace === collection.namespace) &&
          (!selector || selector.matches(obj.metadata?.labels ?? {}))
        );
      },
      cache: new Map(),
      handlers: handlers as InformerHandlers<KubernetesObject>,
      keep: opts.identityOnly ? (opts.keepLabels ? identityAndLabels : identity) : (o) => o,
      stopped: false,
    };
    this.watchers.add(w);
    // The first list: what is stored now, delivered after the caller has wired itself up.
    const listed = [...this.objects].filter(([p, o]) => w.sees(p, o));
    const synced = new Promise<void>((resolve) =>
      setImmediate(() => {
        if (w.stopped) return resolve();
        for (const [p, o] of listed) this.deliver(w, p, o);
        w.handlers.listed?.();
        resolve();
      }),
    );
    const all = () => [...w.cache.values()] as T[];
    return {
      list: (namespace) =>
        all().filter((o) => namespace === undefined || o.metadata?.namespace === namespace),
      get: (name, namespace) =>
        all().find((o) => o.metadata?.name === name && (o.metadata?.namespace ?? "") === (namespace ?? "")),
      synced,
      stop: async () => {
        w.stopped = true;
        this.watchers.delete(w);
      },
    };
  }

  /** Tells every informer that sees `path` (or saw it) about its new state (`undefined`: deleted), on a later turn. */
  private notify(path: string, obj: KubeObject | undefined): void {
    for (const w of this.watchers) {
      if (!w.cache.has(path) && !(obj && w.sees(path, obj))) continue;
      const copy = obj && structuredClone(obj);
      setImmediate(() => {
        if (!w.stopped) this.deliver(w, path, copy);
      });
    }
  }

  private deliver(w: Watcher, path: string, obj: KubeObject | undefined): void {
    const before = w.cache.get(path);
    if (obj && w.sees(path, obj)) {
      const kept = w.keep(structuredClone(obj) as KubernetesObject);
      w.cache.set(path, kept);
      (before ? w.handlers.update : w.handlers.add)?.(kept);
    } else if (before) {
      w.cache.delete(path);
      w.handlers.delete?.(before);
    }
  }

  private record(method: FakeCall["method"], path: string): void {
    this.calls.push({ method, path });
    const i = this.faults.findIndex(
      (f) => (!f.method || f.method === method) && (!f.path || f.path === path),
    );
    if (i < 0) return;
    const [fault] = this.faults.splice(i, 1);
    throw new KubeApiError(
      fault!.status,
      REASONS[fault!.status] ?? "",
      `${method} ${path}: ${fault!.status} (injected)`,
    );
  }

  private store(path: string, obj: KubeObject, created?: string): KubeObject {
    const at = objectPath(path);
    const stored = this.stamp(at, obj, this.objects.get(at), created);
    this.objects.set(at, stored);
    this.notify(at, stored);
    return structuredClone(stored);
  }

  private stamp(
    path: string,
    obj: KubeObject,
    current: KubeObject | undefined,
    created?: string,
  ): KubeObject {
    const name = path.slice(path.lastIndexOf("/") + 1);
    const namespace = /\/namespaces\/([^/]+)\//.exec(path)?.[1];
    obj.metadata = {
      ...obj.metadata,
      name,
      ...(namespace ? { namespace } : {}),
      uid: current?.metadata?.uid ?? `uid-${++this.uids}`,
      creationTimestamp: current?.metadata?.creationTimestamp ?? created ?? new Date().toISOString(),
      resourceVersion: String(++this.version),
      generation: !current
        ? 1
        : (current.metadata?.generation ?? 1) + (specOf(current) === specOf(obj) ? 0 : 1),
    };
    return obj;
  }
}

/** What `metadata.generation` counts changes of: everything but metadata and status. */
const specOf = ({ metadata: _m, status: _s, ...rest }: KubeObject) => JSON.stringify(rest);
const isStatus = (path: string) => path.endsWith("/status");
const isScale = (path: string) => path.endsWith("/scale");
/** The object a path names: a `…/status` or `…/scale` subresource is its object's. */
const objectPath = (path: string) => path.replace(/\/(status|scale)$/, "");

function notFound(path: string): KubeApiError {
  return new KubeApiError(404, "NotFound", `${path} not found`);
}

function conflict(path: string, expected: string, current: KubeObject): KubeApiError {
  return new KubeApiError(
    409,
    "Conflict",
    `${path}: the object has been modified (resourceVersion ${expected}, now ${current.metadata?.resourceVersion})`,
  );
}

/** RFC 7386: objects merge key by key, `null` removes a key, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const out: Record<string, unknown> =
    typeof target === "object" && target !== null && !Array.isArray(target)
      ? structuredClone(target as Record<string, unknown>)
      : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}
