/**
 * A thin Kubernetes REST client: one keep-alive undici pool to the apiserver, raw JSON
 * bodies (nothing dropped, `x-kubernetes-*` keys kept), server-side apply, and errors as
 * {@link KubeApiError} carrying the apiserver's `Status`. Credentials (client certificate,
 * bearer token, in-cluster service-account token, exec plugins) come from
 * `@kubernetes/client-node`'s `KubeConfig`, re-read at most every 30 s so rotated
 * tokens are picked up.
 */
import type { RequestOptions } from "node:https";
import { KubeConfig, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import { Agent, type Dispatcher } from "undici";
import { GovernorError } from "../errors.js";
import { assertPlainPath } from "./paths.js";
import {
  type InformerHandlers,
  type InformerOptions,
  type ResilientInformer,
  startInformer,
} from "./informer.js";

/** The apiserver answered with an error status. */
export class KubeApiError extends GovernorError {
  /**
   * @param statusCode HTTP status code.
   * @param status the `metav1.Status` body when the apiserver sent one.
   */
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
    readonly status?: unknown,
  ) {
    super("GOV_ERR_KUBE_API", message);
  }
}

/** Options of {@link KubeClient.apply}. */
export interface ApplyOptions {
  /** The field manager that owns the applied fields. */
  fieldManager: string;
  /** Take fields over from other managers. @default true */
  force?: boolean;
}

/** Query parameters; undefined values are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

/** A generic Kubernetes object as the REST API returns it. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    creationTimestamp?: string;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

/**
 * The reads and writes a controller makes, as an interface: {@link KubeClient} against a
 * real apiserver, `FakeKube` (test/support/fake-kube.ts) in unit tests.
 */
export type KubeApi = Pick<
  KubeClient,
  | "get"
  | "getOrUndefined"
  | "create"
  | "replace"
  | "mergePatch"
  | "apply"
  | "createOrReplace"
  | "delete"
  | "informer"
  | "request"
>;

/** Loads a KubeConfig: from `path` if given, else in-cluster or `$KUBECONFIG` / `~/.kube/config`. */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new GovernorError("GOV_ERR_CONFIG", "kubeconfig has no current cluster");
  return kc;
}

const CREDENTIAL_TTL_MS = 30_000;

/** A comparable string for a TLS option (PEM string, Buffer, list of either, boolean). */
function credentialKey(x: unknown): string {
  if (x === undefined) return "";
  if (Buffer.isBuffer(x)) return x.toString("base64");
  if (Array.isArray(x)) return x.map(credentialKey).join("|");
  return typeof x === "string" ? x : JSON.stringify(x);
}

/** PEM text of a TLS option (a string, a Buffer, or a list of either). */
function pemText(x: unknown): string {
  if (Buffer.isBuffer(x)) return x.toString("utf8");
  if (Array.isArray(x)) return x.map(pemText).join("\n");
  return String(x);
}

/** See the module comment. */
export class KubeClient {
  readonly server: URL;
  private dispatcher?: Dispatcher;
  private headers: Record<string, string> = {};
  private loadedAt = 0;
  private loading?: Promise<void>;

  /**
   * @param opts.connections the most connections kept to the apiserver at once (a request
   *   waits for one beyond that; @default 32)
   */
  constructor(
    readonly kubeConfig: KubeConfig,
    private readonly opts: { connections?: number } = {},
  ) {
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new GovernorError("GOV_ERR_CONFIG", "kubeconfig has no current cluster");
    this.server = new URL(cluster.server);
  }

  /**
   * An informer over the collection `path` (all namespaces, or one: `/api/v1/namespaces/x/pods`):
   * lists it (with the options' selectors), then watches, restarted on errors.
   */
  informer<T extends KubernetesObject>(
    path: string,
    handlers: InformerHandlers<T>,
    opts: InformerOptions = {},
  ): ResilientInformer<T> {
    const query = { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector };
    return startInformer<T>(
      this.kubeConfig,
      path,
      (page) => this.get<KubernetesListObject<T>>(path, { ...query, ...page }),
      handlers,
      opts,
    );
  }

  /** GET a path; a 404 is a {@link KubeApiError} (see {@link getOrUndefined}). */
  async get<T = KubeObject>(path: string, query?: Query): Promise<T> {
    return this.request<T>("GET", path, { query });
  }

  /** GET a path, or `undefined` when it does not exist. */
  async getOrUndefined<T = KubeObject>(path: string, query?: Query): Promise<T | undefined> {
    try {
      return await this.get<T>(path, query);
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) return undefined;
      throw err;
    }
  }

  /** POST an object to a collection path. */
  async create<T = KubeObject>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.request<T>("POST", path, { body, query });
  }

  /** PUT an object. */
  async replace<T = KubeObject>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.request<T>("PUT", path, { body, query });
  }

  /** JSON merge patch (RFC 7386). */
  async mergePatch<T = KubeObject>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.request<T>("PATCH", path, { body, query, contentType: "application/merge-patch+json" });
  }

  /** Server-side apply of a whole object at its own path. */
  async apply<T = KubeObject>(path: string, body: unknown, opts: ApplyOptions): Promise<T> {
    return this.request<T>("PATCH", path, {
      body,
      query: { fieldManager: opts.fieldManager, force: opts.force ?? true },
      contentType: "application/apply-patch+yaml",
    });
  }

  /**
   * Create, or replace keeping the current resourceVersion: for APIs that do not support
   * server-side apply (kube-aggregator's APIServices before Kubernetes 1.21 panic on it).
   * `path` is the object's own path; the collection is its parent.
   */
  async createOrReplace<T extends KubeObject = KubeObject>(path: string, body: KubeObject): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.getOrUndefined<KubeObject>(path);
      try {
        if (!current) return await this.create<T>(path.slice(0, path.lastIndexOf("/")), body);
        const metadata = { ...body.metadata, resourceVersion: current.metadata?.resourceVersion };
        return await this.replace<T>(path, { ...body, metadata });
      } catch (err) {
        // Lost a race with another writer: read again (bounded).
        if (err instanceof KubeApiError && err.statusCode === 409 && attempt < 5) continue;
        throw err;
      }
    }
  }

  /** DELETE; resolves `false` (quietly) when the object is already gone, else `true`. */
  async delete(
    path: string,
    opts: { gracePeriodSeconds?: number; propagationPolicy?: string } = {},
  ): Promise<boolean> {
    try {
      await this.request("DELETE", path, { body: { kind: "DeleteOptions", apiVersion: "v1", ...opts } });
      return true;
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) return false;
      throw err;
    }
  }

  /** Any request; the body is sent as JSON unless it is a string. */
  async request<T>(
    method: string,
    path: string,
    opts: {
      body?: unknown;
      query?: Query;
      contentType?: string;
      accept?: string;
      timeoutMs?: number;
      /** Given the answer's headers (before its body is read). */
      onHeaders?: (headers: Readonly<Record<string, string | string[] | undefined>>) => void;
    } = {},
  ): Promise<T> {
    // Never let URL normalization turn a path built from CR fields into another object's.
    assertPlainPath(path);
    await this.ensureCredentials();
    const url = new URL(this.server.pathname.replace(/\/$/, "") + path, this.server);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const body =
      opts.body === undefined
        ? undefined
        : typeof opts.body === "string"
          ? opts.body
          : JSON.stringify(opts.body);
    const res = await this.dispatcher!.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method,
      headers: {
        ...this.headers,
        accept: opts.accept ?? "application/json",
        ...(body !== undefined ? { "content-type": opts.contentType ?? "application/json" } : {}),
      },
      body,
      headersTimeout: opts.timeoutMs ?? 30_000,
      bodyTimeout: opts.timeoutMs ?? 30_000,
    });
    opts.onHeaders?.(res.headers);
    const text = await res.body.text();
    if (res.statusCode >= 400) {
      if (res.statusCode === 401) this.loadedAt = 0; // a rotated token: reload before the next call
      let status: { message?: string; reason?: string } | undefined;
      try {
        status = JSON.parse(text) as typeof status;
      } catch {
        status = undefined;
      }
      throw new KubeApiError(
        res.statusCode,
        status?.reason ?? "",
        `${method} ${path}: ${res.statusCode} ${status?.message ?? text.slice(0, 200)}`,
        status,
      );
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /**
   * The credentials this client presents, as they are now (a rotated token is re-read):
   * headers (`authorization`) and a client certificate, for forwarding a request elsewhere
   * as Governor itself (src/upstream/upstream.ts).
   */
  async identity(): Promise<ClientIdentity> {
    await this.ensureCredentials();
    return { headers: this.headers, cert: this.clientCert?.cert, key: this.clientCert?.key };
  }

  /** Closes the connection pool. */
  async close(): Promise<void> {
    await this.dispatcher?.close();
  }

  private async ensureCredentials(): Promise<void> {
    if (this.dispatcher && Date.now() - this.loadedAt < CREDENTIAL_TTL_MS) return;
    this.loading ??= this.loadCredentials().finally(() => (this.loading = undefined));
    await this.loading;
  }

  private async loadCredentials(): Promise<void> {
    const opts: RequestOptions = {};
    await this.kubeConfig.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {}))
      if (v !== undefined) headers[k.toLowerCase()] = String(v);
    if (opts.auth) headers.authorization = `Basic ${Buffer.from(opts.auth).toString("base64")}`;
    this.headers = headers;
    const tls = {
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      rejectUnauthorized: opts.rejectUnauthorized,
    } as const;
    this.clientCert =
      tls.cert !== undefined && tls.key !== undefined
        ? { cert: pemText(tls.cert), key: pemText(tls.key) }
        : undefined;
    const key = JSON.stringify([tls.ca, tls.cert, tls.key, tls.rejectUnauthorized].map(credentialKey));
    if (!this.dispatcher || key !== this.tlsKey) {
      const old = this.dispatcher;
      this.dispatcher = new Agent({
        connect: { ...tls, servername: this.kubeConfig.getCurrentCluster()?.tlsServerName },
        keepAliveTimeout: 30_000,
        connections: this.opts.connections ?? 32,
      });
      this.tlsKey = key;
      void old?.close();
    }
    this.loadedAt = Date.now();
  }

  private tlsKey = "";
  private clientCert?: { cert: string; key: string };
}

/** What a {@link KubeClient} authenticates with: headers, and a client certificate (PEM) if any. */
export interface ClientIdentity {
  headers: Readonly<Record<string, string>>;
  cert?: string;
  key?: string;
}
