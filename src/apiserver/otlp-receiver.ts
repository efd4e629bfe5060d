/**
 * The OTLP/HTTP metrics receiver (`POST /v1/metrics`, protobuf or JSON, gzip or not, as
 * the OTLP specification defines), on its own HTTPS port with Governor's serving
 * certificate. A pusher presents a Kubernetes service-account token whose audience is
 * Governor's (`--otlp-audience`); its points land in that account's namespace only, for
 * the `otlp` sources of that namespace (src/sources/otlp.ts). In order, each cheaper than
 * the next, so a hostile pusher spends little:
 *
 * - method, path, Content-Type, Content-Encoding and Content-Length are checked first;
 * - then the token (a TokenReview for the audience, cached; unauthenticated pushes are
 *   refused before a byte of the body is read);
 * - then the namespace's rate of data points (a pusher in debt is answered 429);
 * - then the body is read up to `maxRequestBytes`, inflated up to the same, and decoded
 *   for the metrics the namespace's mappings read, large bodies in the parse worker with
 *   the namespace as its tenant (src/sources/answer-decoder.ts); the rest is dropped.
 *
 * Failures are answered with a `google.rpc.Status` in the request's encoding; points kept
 * only in part with `partial_success`.
 */
import { createServer, type Server } from "node:https";
import type { TLSSocket } from "node:tls";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzip } from "node:zlib";
import { promisify } from "node:util";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { Logger } from "pino";
import { AuthenticationError, type Authenticator, TooManyTokenReviewsError } from "./authn.js";
import type { AnswerDecoder } from "../sources/answer-decoder.js";
import { type OtlpEncoding, encodeOtlpResponse } from "../sources/otlp-decode.js";
import type { OtlpStore } from "../sources/otlp-store.js";
import { RELAY_NAMESPACE_HEADER } from "./otlp-relay.js";
import { TokenBucket } from "../util/token-bucket.js";
import { boundedText } from "../util/bounded-text.js";
import { GovernorError } from "../errors.js";

const inflate = promisify(gunzip);

/** The audience a pusher's token must be for, unless `--otlp-audience` says otherwise. */
export const DEFAULT_OTLP_AUDIENCE = "governor";
/** The standard OTLP/HTTP port. */
export const OTLP_HTTP_PORT = 4318;

/** Counts for /metrics. */
export interface OtlpReceiverMetrics {
  /** A request answered with `status` (200, 400, 401…). */
  request(status: number): void;
  /** Data points: kept, dropped (no mapping reads their metric), rejected (bounds, bad values). */
  points(outcome: "kept" | "dropped" | "rejected", n: number): void;
}

/** Options of {@link OtlpReceiver}. */
export interface OtlpReceiverOptions {
  store: OtlpStore;
  /** Checks bearer tokens, for the receiver's audience. */
  authenticator: Authenticator;
  decoder: AnswerDecoder;
  logger: Logger;
  tls: { cert: string; key: string };
  host?: string;
  /** @default OTLP_HTTP_PORT */
  port?: number;
  /** The largest body, compressed or inflated, in bytes. @default 4194304 (4 MiB) */
  maxRequestBytes?: number;
  /** Data points one namespace may push per second on average (twice that at once). @default 10000 */
  pointsPerSecond?: number;
  /**
   * The most bytes all pushes being read, inflated and decoded may hold at once (each
   * reserves its Content-Length, or the largest body, and the largest body again when
   * gzipped). @default 67108864 (64 MiB)
   */
  maxInFlightBytes?: number;
  /** The most pushes of one namespace handled at once. @default 4 */
  maxConcurrentPerNamespace?: number;
  metrics?: OtlpReceiverMetrics;
  /** Shares kept pushes with the other replicas, and knows them (src/apiserver/otlp-relay.ts). */
  relay?: {
    isPeer(certificate: Buffer | undefined): boolean;
    send(namespace: string, body: Buffer, headers: { contentType: string; contentEncoding: string }): void;
  };
  /** @default Date.now */
  now?: () => number;
}

/** The pusher went away before its body was read: nobody to answer. */
class ClientGone extends Error {}

/** The decoder's own limits (time, memory, queue), not the body's fault: worth a retry. */
const DECODER_BUSY =
  /took more than|needed more than|waiting to be decoded|parse worker|decoder is closed|aborted while/;

/** A refusal: its HTTP status and what the pusher is told. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Points kept in one turn of the event loop. */
const INGEST_SLICE = 2000;
/** The most connections the receiver holds; more are refused as they come. */
const MAX_CONNECTIONS = 1024;

const SERVICE_ACCOUNT = /^system:serviceaccount:([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?):[^:]+$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Namespaces whose push rate is kept (the most recent). */
const MAX_NAMESPACE_BUCKETS = 10_000;

/** See the module comment. */
export class OtlpReceiver {
  private readonly server: Server;
  private readonly maxBytes: number;
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly now: () => number;
  private readonly maxInFlightBytes: number;
  private inFlightBytes = 0;
  /** Pushes being handled, by namespace. */
  private readonly active = new Map<string, number>();

  constructor(private readonly opts: OtlpReceiverOptions) {
    this.maxBytes = opts.maxRequestBytes ?? 4 * 1024 * 1024;
    this.now = opts.now ?? Date.now;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? 64 << 20;
    // Slow or idle connections are bounded in number and time: a handshake in 10 s, the
    // headers in 10 s, the whole request in 30 s, checked every second.
    this.server = createServer(
      {
        minVersion: "TLSv1.2",
        cert: opts.tls.cert,
        key: opts.tls.key,
        handshakeTimeout: 10_000,
        keepAliveTimeout: 65_000,
        headersTimeout: 10_000,
        requestTimeout: 30_000,
        connectionsCheckingInterval: 1_000,
        // A replica relaying a push presents Governor's serving certificate, checked in
        // otlp-relay.ts; pushers present none.
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => void this.onRequest(req, res),
    );
    this.server.maxConnections = MAX_CONNECTIONS;
    this.server.on("tlsClientError", (err) =>
      opts.logger.debug({ err: err.message }, "OTLP: TLS handshake failed"),
    );
  }

  /** Starts listening; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    const port = this.opts.port ?? OTLP_HTTP_PORT;
    const host = this.opts.host ?? "0.0.0.0";
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(
          new GovernorError(
            "GOV_ERR_CONFIG",
            `cannot receive OTLP on ${host}:${port} (${err.code ?? err.message}): choose another --otlp-port`,
            { cause: err },
          ),
        );
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /** Serves a new certificate to new connections. */
  setServingCertificate(cert: string, key: string): void {
    this.server.setSecureContext({ minVersion: "TLSv1.2", cert, key });
  }

  /**
   * Stops accepting connections and closes idle ones; pushes being received get 5 s to
   * finish. Resolves when all are closed.
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const late = setTimeout(() => this.server.closeAllConnections(), 5000);
    await closed;
    clearTimeout(late);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const encoding: OtlpEncoding =
      mediaType(req.headers["content-type"]) === "application/json" ? "json" : "protobuf";
    let status = 200;
    try {
      const result = await this.receive(req, encoding);
      const body = encodeOtlpResponse(encoding, result);
      res.writeHead(200, { "content-type": contentTypeOf(encoding) });
      res.end(body);
    } catch (err) {
      if (err instanceof ClientGone) {
        status = 499;
        return void res.destroy();
      }
      const refusal =
        err instanceof Refusal
          ? err
          : err instanceof TooManyTokenReviewsError
            ? new Refusal(429, err.message, 1)
            : err instanceof AuthenticationError
              ? new Refusal(401, `Unauthorized: ${err.message}`)
              : err instanceof GovernorError
                ? new Refusal(503, boundedText(err.message), 5)
                : undefined;
      if (!refusal) this.opts.logger.error({ err }, "OTLP: request failed");
      status = refusal?.status ?? 500;
      const message = refusal?.message ?? "internal error";
      if (res.headersSent) return void res.destroy();
      const headers: Record<string, string> = { "content-type": contentTypeOf(encoding) };
      if (refusal?.retryAfterSeconds) headers["retry-after"] = String(refusal.retryAfterSeconds);
      // What was not read is not read: a refused pusher's bytes go with the connection.
      const unread = !req.complete;
      if (unread) headers.connection = "close";
      res.writeHead(status, headers);
      res.end(rpcStatus(encoding, status, message), () => {
        if (unread) req.destroy();
      });
    } finally {
      this.opts.metrics?.request(status);
    }
  }

  /** Checks, authenticates, reads and keeps one export; what was rejected, if anything. */
  private async receive(
    req: IncomingMessage,
    encoding: OtlpEncoding,
  ): Promise<{ points: number; message: string } | undefined> {
    if (req.method !== "POST") throw new Refusal(405, "only POST is served");
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== "/v1/metrics") throw new Refusal(404, "only /v1/metrics (OTLP metrics) is served here");
    const type = mediaType(req.headers["content-type"]);
    if (type !== "application/x-protobuf" && type !== "application/json")
      throw new Refusal(415, "Content-Type must be application/x-protobuf or application/json");
    const contentEncoding = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
    if (contentEncoding !== "identity" && contentEncoding !== "gzip")
      throw new Refusal(415, "Content-Encoding must be gzip or none");
    const length = Number(req.headers["content-length"] ?? 0);
    if (length > this.maxBytes) throw new Refusal(413, `the body is larger than ${this.maxBytes} bytes`);

    const relayed = req.headers[RELAY_NAMESPACE_HEADER];
    let namespace: string | undefined;
    if (relayed !== undefined) {
      // Another replica's push: its certificate is its proof, the namespace its word.
      const certificate = (req.socket as TLSSocket).getPeerCertificate?.()?.raw;
      if (!this.opts.relay?.isPeer(certificate))
        throw new Refusal(403, "only Governor's own replicas may relay pushes");
      namespace = typeof relayed === "string" && NAMESPACE.test(relayed) ? relayed : undefined;
      if (!namespace) throw new Refusal(400, "a relayed push names no namespace");
    } else {
      if (!req.headers.authorization)
        throw new Refusal(401, "Unauthorized: push with a service-account token (Authorization: Bearer …)");
      const user = await this.opts.authenticator.authenticate(req);
      namespace = SERVICE_ACCOUNT.exec(user.name)?.[1];
      if (!namespace) throw new Refusal(403, "only a namespace's service accounts may push metrics");
    }
    try {
      return await this.admit(req, namespace, encoding, contentEncoding, length, relayed === undefined);
    } catch (err) {
      // The namespace's mappings say why its pushes were refused (a relayed one's too).
      if (err instanceof Refusal)
        this.opts.store.refused(namespace, undefined, {
          pushes: 1,
          points: 0,
          reason: relayed === undefined ? err.message : `a push shared by another replica: ${err.message}`,
        });
      throw err;
    }
  }

  /**
   * Admits a push of `namespace` within its rate, its share and the bytes in flight, and
   * keeps it. A `direct` push (not relayed) is charged to the namespace's rate and relayed
   * to the other replicas; a relayed one was charged by the replica it reached.
   */
  private async admit(
    req: IncomingMessage,
    namespace: string,
    encoding: OtlpEncoding,
    contentEncoding: string,
    length: number,
    direct: boolean,
  ): Promise<{ points: number; message: string } | undefined> {
    const bucket = direct ? this.bucket(namespace) : undefined;
    if (bucket && !bucket.has())
      throw new Refusal(429, `namespace ${namespace} pushes more data points per second than it may`, 1);
    const metrics = this.opts.store.selected(namespace);
    // No mapping of the namespace reads pushed metrics: nothing to keep, so nothing is
    // buffered, inflated or decoded.
    if (metrics.length === 0) {
      await drain(req);
      return undefined;
    }
    const concurrent = this.active.get(namespace) ?? 0;
    const limit = this.opts.maxConcurrentPerNamespace ?? 4;
    if (concurrent >= limit)
      throw new Refusal(429, `namespace ${namespace} has ${limit} pushes being handled already`, 1);
    const reserved = (length > 0 ? length : this.maxBytes) + (contentEncoding === "gzip" ? this.maxBytes : 0);
    if (this.inFlightBytes + reserved > this.maxInFlightBytes)
      throw new Refusal(429, "too many pushes are being handled; try again", 1);
    this.active.set(namespace, concurrent + 1);
    this.inFlightBytes += reserved;
    try {
      return await this.keep(req, namespace, encoding, contentEncoding, metrics, bucket);
    } finally {
      this.inFlightBytes -= reserved;
      const n = (this.active.get(namespace) ?? 1) - 1;
      if (n > 0) this.active.set(namespace, n);
      else this.active.delete(namespace);
    }
  }

  /** Reads, inflates, decodes and keeps one push of `namespace`. */
  private async keep(
    req: IncomingMessage,
    namespace: string,
    encoding: OtlpEncoding,
    contentEncoding: string,
    metrics: string[],
    /** The namespace's rate, for a direct push (relayed to the other replicas). */
    bucket: TokenBucket | undefined,
  ): Promise<{ points: number; message: string } | undefined> {
    const received = await readBody(req, this.maxBytes);
    let body = received;
    if (contentEncoding === "gzip") {
      try {
        body = await inflate(received, { maxOutputLength: this.maxBytes });
      } catch (err) {
        const tooLarge = (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE";
        throw new Refusal(
          tooLarge ? 413 : 400,
          tooLarge ? `the body inflates past ${this.maxBytes} bytes` : "the body is not valid gzip",
        );
      }
    }
    let batch;
    try {
      batch = await this.opts.decoder.decode(
        body,
        { kind: "otlp", encoding, metrics, keep: this.opts.store.kept(namespace) },
        { tenant: namespace },
      );
    } catch (err) {
      const message = boundedText((err as Error).message);
      throw DECODER_BUSY.test(message) ? new Refusal(503, message, 5) : new Refusal(400, message);
    }
    // Every decoded point counts, kept or not.
    bucket?.spend(batch.key.length + batch.unselected + batch.rejected);
    // The other replicas keep it too: the aggregator may ask any of them (otlp-relay.ts).
    if (bucket && batch.key.length > 0)
      this.opts.relay?.send(namespace, received, {
        contentType: contentTypeOf(encoding),
        contentEncoding,
      });
    // Kept a slice per turn of the event loop: a first push of many new series costs some.
    const kept = { accepted: 0, overLimit: 0 };
    for (let from = 0; from < batch.key.length; from += INGEST_SLICE) {
      if (from > 0) await new Promise(setImmediate);
      const r = this.opts.store.ingest(namespace, batch, from, from + INGEST_SLICE);
      kept.accepted += r.accepted;
      kept.overLimit += r.overLimit;
    }
    this.opts.metrics?.points("kept", kept.accepted);
    this.opts.metrics?.points("dropped", batch.unselected);
    this.opts.metrics?.points("rejected", batch.rejected + kept.overLimit);
    if (batch.rejected > 0)
      this.opts.store.refused(namespace, undefined, {
        pushes: 0,
        points: batch.rejected,
        reason: batch.rejectedReason ?? "malformed points",
      });
    if (batch.rejected === 0 && kept.overLimit === 0) return undefined;
    const reasons = [
      ...(batch.rejectedReason ? [batch.rejectedReason] : []),
      ...(kept.overLimit > 0 ? [`namespace ${namespace} keeps as many series as it may`] : []),
    ];
    return { points: batch.rejected + kept.overLimit, message: boundedText(reasons.join("; ")) };
  }

  private bucket(namespace: string): TokenBucket {
    let b = this.buckets.get(namespace);
    if (b) {
      this.buckets.delete(namespace); // most recent last
    } else {
      const rate = this.opts.pointsPerSecond ?? 10_000;
      b = new TokenBucket(rate, 2 * rate, this.now);
      if (this.buckets.size >= MAX_NAMESPACE_BUCKETS) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(namespace, b);
    return b;
  }
}

function mediaType(header: string | undefined): string {
  return (header ?? "").split(";", 1)[0]!.trim().toLowerCase();
}

function contentTypeOf(encoding: OtlpEncoding): string {
  return encoding === "json" ? "application/json" : "application/x-protobuf";
}

/** Reads the body and drops it. */
function drain(req: IncomingMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    req.on("end", resolve);
    req.on("aborted", () => reject(new ClientGone()));
    req.on("error", () => reject(new ClientGone()));
    req.resume();
  });
}

/** The body, refused past `max` bytes (whatever Content-Length said). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        reject(new Refusal(413, `the body is larger than ${max} bytes`));
        req.pause();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, size)));
    req.on("aborted", () => reject(new ClientGone()));
    req.on("error", () => reject(new ClientGone()));
  });
}

/** HTTP status → google.rpc.Code, as OTLP/HTTP's failures carry it. */
function rpcCode(status: number): number {
  switch (status) {
    case 400:
    case 413:
    case 415:
      return 3; // INVALID_ARGUMENT
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
    case 405:
      return 12; // UNIMPLEMENTED
    case 429:
      return 8; // RESOURCE_EXHAUSTED
    case 503:
      return 14; // UNAVAILABLE
    default:
      return 13; // INTERNAL
  }
}

/** A `google.rpc.Status` (code = 1, message = 2) in the request's encoding. */
function rpcStatus(encoding: OtlpEncoding, status: number, message: string): Uint8Array | string {
  const code = rpcCode(status);
  if (encoding === "json") return JSON.stringify({ code, message });
  return new BinaryWriter()
    .uint32((1 << 3) | 0)
    .int32(code)
    .uint32((2 << 3) | 2)
    .string(message)
    .finish();
}
