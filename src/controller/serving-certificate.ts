/**
 * The serving certificate Governor keeps in a Secret: a CA and a leaf (ECDSA P-256).
 *
 * - **One CA, however many replicas start at once**: the Secret is created with a plain
 *   create; a replica that loses the race (409) adopts the winner's.
 * - **Reused across restarts**; **rotated** by the leader as `src/certs/serving-secret.ts`
 *   decides (no CA key kept; a new CA trusted before its leaf is served), and every
 *   replica hot-swaps the leaf the Secret serves. No request fails across a rotation.
 */
import type { Logger } from "pino";
import { validity, type KeyPair } from "../certs/certs.js";
import {
  type ServingSecret,
  newServingSecret,
  nextRotationStep,
  parseServingSecret,
  servingSecretObject,
  withNewCA,
} from "../certs/serving-secret.js";
import { KubeApiError, type KubeApi, type KubeObject } from "../k8s/client.js";

/** Options of {@link ServingCertificate}. */
export interface ServingCertificateOptions {
  client: KubeApi;
  logger: Logger;
  namespace: string;
  /** The Service the certificate is for; the Secret is `<serviceName>-serving-cert`. */
  serviceName: string;
  /** The names the leaf carries. */
  dnsNames: string[];
  /** IP addresses the leaf carries too (a local process dialled at 127.0.0.1). */
  ipAddresses?: string[];
  /** Called with the serving certificate whenever it changes. */
  onServingCertificate: (pair: KeyPair) => void;
  /** @default 365 */
  leafDays?: number;
  /** How long a new CA sits in caBundle before a leaf from it is served. @default 15000 */
  caPropagationMs?: number;
}

/** See the module comment. */
export class ServingCertificate {
  private current?: ServingSecret;
  /** The Secret's resourceVersion as last read: a write based on it fails if it changed since. */
  private secretVersion?: string;
  private forceRotation = false;

  constructor(private readonly opts: ServingCertificateOptions) {}

  /** The Secret's name. */
  get secretName(): string {
    return `${this.opts.serviceName}-serving-cert`;
  }
  private get secretPath() {
    return `/api/v1/namespaces/${this.opts.namespace}/secrets/${this.secretName}`;
  }

  /** Whether the Secret has been read (or made). */
  get loaded(): boolean {
    return this.current !== undefined;
  }

  /** The CA bundle the APIServices should carry now. */
  get caBundle(): string {
    return this.current?.caBundle ?? "";
  }

  /**
   * Loads (or creates) the Secret and returns the serving certificate to start with.
   * Every replica calls this; exactly one CA results.
   */
  async init(): Promise<KeyPair> {
    let data = await this.read();
    if (!data) {
      const fresh = await this.generate();
      try {
        const created = await this.opts.client.create<KubeObject>(
          `/api/v1/namespaces/${this.opts.namespace}/secrets`,
          this.body(fresh),
        );
        this.secretVersion = created.metadata?.resourceVersion;
        this.opts.logger.info({ secret: this.secretName }, "created the serving certificate");
        data = fresh;
      } catch (err) {
        if (!(err instanceof KubeApiError && err.statusCode === 409)) throw err;
        data = await this.read(); // another replica won the race: use its CA
        if (!data) throw err;
      }
    }
    this.current = data;
    return { cert: data.cert, key: data.key };
  }

  /** Reads the Secret again (every replica): a new leaf there is served from now on. */
  async follow(): Promise<void> {
    const data = await this.read();
    if (!data) return;
    // Always what the Secret says now (a pending leaf, a CA key to drop), not only on a change.
    const servedChanged = !this.current || data.cert !== this.current.cert;
    this.current = data;
    if (servedChanged) {
      this.opts.onServingCertificate({ cert: data.cert, key: data.key });
      this.opts.logger.info({ notAfter: validity(data.cert).notAfter }, "serving a new certificate");
    }
  }

  /** Rotates on the next steps: a new CA into the bundle, then its leaf served. */
  requestRotation(): void {
    this.forceRotation = true;
  }

  /** The leader's step: rotate, promote the new CA's leaf, or nothing, as the Secret calls for. */
  async rotateIfDue(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    const now = Date.now();
    const next = nextRotationStep(cur, {
      now,
      caPropagationMs: this.opts.caPropagationMs ?? 15_000,
      dnsNames: this.opts.dnsNames,
      force: this.forceRotation,
    });
    const log = this.opts.logger;
    switch (next.step) {
      case "promote":
        await this.write(next.secret);
        this.opts.onServingCertificate({ cert: next.secret.cert, key: next.secret.key });
        log.info({ notAfter: validity(next.secret.cert).notAfter }, "serving the new CA's certificate");
        return;
      case "rotate":
        await this.write(withNewCA(cur, await this.generate(), now));
        this.forceRotation = false; // only once written: a lost write (409) rotates next time
        log.info(
          "rotating: a new CA added to caBundle; its certificate is served once the aggregator has it",
        );
        return;
      case "drop-ca-key":
        await this.write(next.secret);
        log.info("dropped the CA key an older version kept in the Secret");
        return;
      case "wait": // the new CA is not in every caBundle yet
      case "none":
        return;
    }
  }

  /** Deletes the Secret; whether there was one. */
  delete(): Promise<boolean> {
    return this.opts.client.delete(this.secretPath);
  }

  private generate(): Promise<ServingSecret> {
    return newServingSecret({
      serviceName: this.opts.serviceName,
      namespace: this.opts.namespace,
      dnsNames: this.opts.dnsNames,
      ...(this.opts.ipAddresses ? { ipAddresses: this.opts.ipAddresses } : {}),
      leafDays: this.opts.leafDays,
    });
  }

  private body(d: ServingSecret) {
    return servingSecretObject({ namespace: this.opts.namespace, name: this.secretName }, d);
  }

  private async read(): Promise<ServingSecret | undefined> {
    const s = await this.opts.client.getOrUndefined<KubeObject & { data?: Record<string, string> }>(
      this.secretPath,
    );
    if (!s?.data) return undefined;
    this.secretVersion = s.metadata?.resourceVersion;
    return parseServingSecret(s);
  }

  /**
   * Replaces the Secret, on condition that it is still the version this decision was read
   * from: if another writer (a second leader in a split, a person) changed it meanwhile, the
   * apiserver answers 409 and the next sync reads again and decides again.
   */
  private async write(d: ServingSecret): Promise<void> {
    const body = this.body(d);
    const written = await this.opts.client.replace<KubeObject>(this.secretPath, {
      ...body,
      metadata: { ...body.metadata, resourceVersion: this.secretVersion },
    });
    this.secretVersion = written.metadata?.resourceVersion;
    this.current = d;
  }
}
