/**
 * An in-memory stand-in for the apiserver's object store behind the {@link KubeApi}
 * interface, for unit tests of code that reads and writes objects (registration,
 * reconcilers' writes). It keeps what the apiserver guarantees and such code relies on:
 * create answers 409 when the object exists; replace with a `resourceVersion` answers 409
 * when the object changed since (optimistic concurrency); a missing object is a 404
 * {@link KubeApiError}; every write bumps `resourceVersion`. Merge patch follows RFC 7386;
 * server-side apply is modelled as create-or-merge (no field ownership). Tests can make
 * the next matching call fail, and read back every call made.
 */
import { type ApplyOptions, KubeApiError, type KubeApi, type KubeObject } from "../k8s/client.js";

/** One call made to the fake. */
export interface FakeCall {
  method: "get" | "create" | "replace" | "mergePatch" | "apply" | "delete";
  path: string;
}

const REASONS: Record<number, string> = { 404: "NotFound", 409: "Conflict", 500: "InternalError" };

/** See the module comment. */
export class FakeKube implements KubeApi {
  private readonly objects = new Map<string, KubeObject>();
  private version = 0;
  private uids = 0;
  readonly calls: FakeCall[] = [];
  private readonly faults: { method?: FakeCall["method"]; path?: string; status: number }[] = [];

  /** The stored object at `path` (a copy), or undefined. */
  peek<T = KubeObject>(path: string): T | undefined {
    const o = this.objects.get(path);
    return o && (structuredClone(o) as T);
  }

  /** Stores `obj` at `path` as if someone else had written it (bumps its resourceVersion). */
  seed(path: string, obj: KubeObject): void {
    this.objects.set(path, this.stamp(path, structuredClone(obj), this.objects.get(path)));
  }

  /** Paths of the stored objects under `prefix`. */
  paths(prefix = ""): string[] {
    return [...this.objects.keys()].filter((p) => p.startsWith(prefix)).sort();
  }

  /** Makes the next call matching `method` and `path` (either may be left out) fail with `status`. */
  failNext(status: number, match: { method?: FakeCall["method"]; path?: string } = {}): void {
    this.faults.push({ ...match, status });
  }

  async get<T = KubeObject>(path: string): Promise<T> {
    this.record("get", path);
    const o = this.objects.get(path);
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
    const current = this.objects.get(path);
    if (!current) throw notFound(path);
    const obj = structuredClone(body) as KubeObject;
    const expected = obj.metadata?.resourceVersion;
    if (expected !== undefined && expected !== current.metadata?.resourceVersion)
      throw conflict(path, expected, current);
    return this.store(path, obj) as T;
  }

  async mergePatch<T = KubeObject>(path: string, body: unknown): Promise<T> {
    this.record("mergePatch", path);
    const current = this.objects.get(path);
    if (!current) throw notFound(path);
    const patch = body as KubeObject;
    const expected = patch.metadata?.resourceVersion;
    if (expected !== undefined && expected !== current.metadata?.resourceVersion)
      throw conflict(path, expected, current);
    return this.store(path, mergePatch(current, patch) as KubeObject) as T;
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
    return this.objects.delete(path);
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

  private store(path: string, obj: KubeObject): KubeObject {
    const stored = this.stamp(path, obj, this.objects.get(path));
    this.objects.set(path, stored);
    return structuredClone(stored);
  }

  private stamp(path: string, obj: KubeObject, current: KubeObject | undefined): KubeObject {
    const name = path.slice(path.lastIndexOf("/") + 1);
    const namespace = /\/namespaces\/([^/]+)\//.exec(path)?.[1];
    obj.metadata = {
      ...obj.metadata,
      name,
      ...(namespace ? { namespace } : {}),
      uid: current?.metadata?.uid ?? `uid-${++this.uids}`,
      creationTimestamp: current?.metadata?.creationTimestamp ?? new Date().toISOString(),
      resourceVersion: String(++this.version),
    };
    return obj;
  }
}

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
