/**
 * The HTTPS server the kube-aggregator calls: TLS 1.2+, client certificates requested
 * (verified by the {@link Authenticator}), authentication, authorization, then
 * {@link MetricsApi} in the user's turn ({@link FairDispatch}). `/healthz`, `/livez`,
 * `/readyz` are open. The serving certificate and the accepted client CAs can be swapped
 * while running (new connections use them; open ones finish). `shutdown()` fails `/readyz` first, waits for the load balancer to
 * notice, then stops accepting and lets in-flight requests finish.
 *
 * This folder depends on the provider interface (`src/metrics/provider.ts`), selectors
 * and errors only.
 *
 * (A little over 350 lines: the request pipeline — limits, authentication, authorization,
 * fair dispatch, routing, the answer — in the order a request meets it; each stage's logic
 * is in its own module beside this one.)
 */
import { GovernorError } from "../errors.js";
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { createSecureContext, type SecureContext } from "node:tls";
import type { Logger } from "pino";
import { ANONYMOUS, AuthenticationError, type Authenticator, TooManyTokenReviewsError } from "./authn.js";
import type { Authorizer } from "./authz.js";
import type { ApiServerMetrics } from "./instrumentation.js";
import { errorResponse, type MetricsApi, RouteKinds, type RouteKind, routeKind } from "./metrics-api.js";
import { ClientGoneError, RequestDeadline, untilCancelled } from "../util/deadline.js";
import { FairDispatch, type FairDispatchOptions } from "./fair-dispatch.js";
import { requestInfo } from "./request-info.js";
import { JsonText, statusBody } from "./wire.js";

/** Options of {@link MetricsApiServer}. */
export interface MetricsApiServerOptions {
  api: MetricsApi;
  authenticator: Authenticator & { acceptedCAs(): string[] };
  authorizer: Authorizer;
  logger: Logger;
  metrics: ApiServerMetrics;
  /** PEM serving certificate (chain) and key. */
  tls: { cert: string; key: string };
  /** @default "0.0.0.0" */
  host?: string;
  /** 0 picks a free port. @default 6443 */
  port?: number;
  /** How long /readyz fails before the listener closes on shutdown. @default 5000 */
  shutdownDelayMs?: number;
  /** How long in-flight requests may take to finish on shutdown. @default 30000 */
  drainTimeoutMs?: number;
  /** Extra readiness check: a reason not to be ready, or undefined. */
  notReadyReason?: () => string | undefined;
  /** Warnings shown in the /readyz body without failing it (e.g. an APIService conflict). */
  readinessWarnings?: () => string[];
  /**
   * Requests served at once; more get 429 with `Retry-After` (health checks excepted), as
   * kube-apiserver's `--max-requests-inflight` does. @default 400
   */
  maxInFlight?: number;
  /**
   * How long a request may wait (for a first sample, a review, discovery) before it is
   * answered 504 Timeout; a client that goes away stops the wait at once. @default 30000
   */
  requestDeadlineMs?: number;
  /** How requests are shared out among users (fair-dispatch.ts). */
  fairness?: FairDispatchOptions;
}

const HEALTH_PATHS = new Set(["/healthz", "/livez", "/readyz"]);

/** See the module comment. */
export class MetricsApiServer {
  private readonly server: Server;
  private context: SecureContext;
  private tls: { cert: string; key: string };
  private shuttingDown = false;
  private inFlight = 0;
  private drained?: () => void;
  private readonly fair: FairDispatch;

  constructor(private readonly opts: MetricsApiServerOptions) {
    this.fair = new FairDispatch(opts.fairness);
    this.tls = opts.tls;
    this.context = this.buildContext();
    this.server = createServer(
      {
        minVersion: "TLSv1.2",
        requestCert: true,
        rejectUnauthorized: false, // verified per request: which CA matters, not just "some CA"
        SNICallback: (_name, cb) => cb(null, this.context),
        ...this.contextOptions(),
        keepAliveTimeout: 65_000,
        headersTimeout: 30_000,
        requestTimeout: 60_000,
      },
      (req, res) => void this.onRequest(req, res),
    );
    this.server.on("tlsClientError", (err) =>
      opts.logger.debug({ err: err.message }, "TLS handshake failed"),
    );
  }

  /** Starts listening; resolves with the bound address (a port in use is a config error). */
  async listen(): Promise<AddressInfo> {
    const port = this.opts.port ?? 6443;
    const host = this.opts.host ?? "0.0.0.0";
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "EADDRINUSE" || err.code === "EADDRNOTAVAIL" || err.code === "EACCES"
            ? new GovernorError(
                "GOV_ERR_CONFIG",
                `cannot serve the metrics API on ${host}:${port} (${err.code}): choose another --secure-port or --bind-address`,
                { cause: err },
              )
            : err,
        );
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /** The serving certificate (PEM) new connections get. */
  get servingCertificate(): string {
    return this.tls.cert;
  }

  /** Serves a new certificate to new connections, without a restart. */
  setServingCertificate(cert: string, key: string): void {
    const previous = this.tls;
    this.tls = { cert, key };
    try {
      this.refreshContext();
    } catch (err) {
      this.tls = previous;
      throw err;
    }
  }

  /** Re-reads the accepted client CAs from the authenticator (call after its config changed). */
  refreshClientCAs(): void {
    this.refreshContext();
  }

  /** See the module comment. Resolves when in-flight requests have finished (or timed out). */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.opts.logger.info("shutting down: /readyz now fails");
    await new Promise((r) => setTimeout(r, this.opts.shutdownDelayMs ?? 5000));
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const drained =
      this.inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.drained = resolve));
    const timeout = new Promise<void>((resolve) =>
      setTimeout(resolve, this.opts.drainTimeoutMs ?? 30_000).unref(),
    );
    await Promise.race([drained, timeout]);
    this.server.closeAllConnections();
    await closed;
    this.opts.logger.info("metrics API stopped");
  }

  private contextOptions() {
    const cas = this.opts.authenticator.acceptedCAs();
    return { cert: this.tls.cert, key: this.tls.key, ...(cas.length > 0 ? { ca: cas } : {}) };
  }

  private buildContext(): SecureContext {
    return createSecureContext({ minVersion: "TLSv1.2", ...this.contextOptions() });
  }

  private refreshContext(): void {
    const context = this.buildContext();
    this.context = context;
    this.server.setSecureContext({ minVersion: "TLSv1.2", ...this.contextOptions() });
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    this.inFlight++;
    // The apiserver's Audit-ID (a UUID) ties our log to its audit log; anything else a
    // caller sends (8 KB of junk) is not worth logging or echoing: a fresh id instead.
    const supplied = headerValue(req.headers["audit-id"]);
    const requestId = supplied && AUDIT_ID.test(supplied) ? supplied : randomUUID();
    let kind: RouteKind = RouteKinds.Unknown;
    let status = 500;
    let user = "";
    const deadline = new RequestDeadline(res, this.opts.requestDeadlineMs ?? 30_000);
    try {
      // The raw path, as routing and authorization both read it (no URL normalisation that
      // one of them could see differently).
      const target = splitTarget(req.url ?? "/");
      kind = routeKind(target.pathname);
      if (HEALTH_PATHS.has(target.pathname)) {
        kind = RouteKinds.Health;
        status = this.health(target.pathname, res);
        return;
      }
      if (this.inFlight > (this.opts.maxInFlight ?? 400)) {
        status = tooManyRequests(res, requestId, "too many requests at once, please try again later");
        return;
      }
      // Authentication and authorization answer synchronously when nothing remote is
      // needed: no promise on the hot path.
      let identity;
      try {
        const pending = this.opts.authenticator.authenticate(req);
        identity = pending instanceof Promise ? await untilCancelled(pending, deadline) : pending;
      } catch (err) {
        if (err instanceof AuthenticationError) {
          status = 401;
          send(res, 401, statusBody(401, "Unauthorized", "Unauthorized"), requestId);
          this.opts.logger.info(
            { requestId, reason: err.message, path: target.pathname },
            "authentication failed",
          );
          return;
        }
        // New bearer tokens beyond the TokenReview budget: not reviewed, asked to retry.
        if (err instanceof TooManyTokenReviewsError) {
          status = tooManyRequests(res, requestId, err.message);
          return;
        }
        throw err;
      }
      user = identity.name;
      // Unauthenticated requests are answered 401 at once, never reviewed: nobody legitimate
      // calls the metrics APIs without credentials (the aggregator and the HPA always present
      // them), and every unique anonymous path would otherwise cost the apiserver a review.
      if (identity === ANONYMOUS) {
        status = 401;
        send(res, 401, statusBody(401, "Unauthorized", "Unauthorized: no credentials"), requestId);
        return;
      }
      const info = requestInfo(req.method ?? "GET", target.pathname, target.searchParams);
      const pending = this.opts.authorizer.authorize(identity, info);
      const decision = pending instanceof Promise ? await untilCancelled(pending, deadline) : pending;
      if (!decision.allowed) {
        status = 403;
        send(res, 403, forbidden(identity.name, info), requestId);
        return;
      }
      const answered = this.fair.submit(
        user,
        () => this.answer(req, res, target, requestId, deadline),
        deadline,
      );
      if (!answered) {
        status = tooManyRequests(
          res,
          requestId,
          `too many requests of ${user} waiting, please try again later`,
        );
        return;
      }
      ({ kind, status } = await answered);
    } catch (err) {
      if (err instanceof ClientGoneError) {
        status = 499; // nginx's "client closed request": nobody is left to answer
        res.destroy();
        return;
      }
      const answer = errorResponse(err, kind);
      status = answer.status;
      this.opts.logger.error({ requestId, err }, "request failed");
      if (!res.headersSent)
        send(res, answer.status, status === 500 ? internalError(requestId) : answer.body, requestId);
      else res.destroy();
    } finally {
      deadline.dispose();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.opts.metrics.observeRequest(kind, status, seconds);
      if (status >= 500 || this.opts.logger.isLevelEnabled("debug")) {
        const line = {
          requestId,
          method: req.method,
          path: req.url,
          status,
          kind,
          user,
          ms: Math.round(seconds * 1e4) / 10,
        };
        if (status >= 500) this.opts.logger.warn(line, "request");
        else this.opts.logger.debug(line, "request");
      }
      if (--this.inFlight === 0) this.drained?.();
    }
  }

  /** Answers an authorized request (in its user's turn: see fair-dispatch.ts). */
  private async answer(
    req: IncomingMessage,
    res: ServerResponse,
    target: ReturnType<typeof splitTarget>,
    requestId: string,
    deadline: RequestDeadline,
  ): Promise<{ kind: RouteKind; status: number }> {
    const answer = await this.opts.api.handle(
      req.method ?? "GET",
      target,
      req.headers.accept,
      req.headers["if-none-match"],
      deadline,
    );
    if (answer.status === 500 && !answer.forwarded) {
      this.opts.logger.error({ requestId, err: answer.cause }, "request failed");
      send(res, 500, internalError(requestId), requestId);
    } else send(res, answer.status, answer.body, requestId, req.method === "HEAD", answer);
    return { kind: answer.kind, status: answer.status };
  }

  private health(path: string, res: ServerResponse): number {
    let reason: string | undefined;
    if (path === "/readyz") reason = this.shuttingDown ? "shutting down" : this.opts.notReadyReason?.();
    const status = reason ? 503 : 200;
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
    const warnings = path === "/readyz" ? (this.opts.readinessWarnings?.() ?? []) : [];
    res.end((reason ? `not ready: ${reason}\n` : "ok\n") + warnings.map((w) => `warning: ${w}\n`).join(""));
    return status;
  }
}

/** Answers 429 with `Retry-After: 1`; returns the status. */
function tooManyRequests(res: ServerResponse, requestId: string, message: string): number {
  res.setHeader("retry-after", "1");
  send(res, 429, statusBody(429, "TooManyRequests", message, { retryAfterSeconds: 1 }), requestId);
  return 429;
}

/** A 500's body: no internal detail, the request id to find it in the log. */
function internalError(requestId: string) {
  return statusBody(
    500,
    "InternalError",
    `internal error (request ${requestId}; the details are in Governor's log)`,
  );
}

function forbidden(user: string, info: ReturnType<typeof requestInfo>) {
  const message = info.isResourceRequest
    ? `${info.resource}${info.subresource ? `/${info.subresource}` : ""}${info.name ? ` "${info.name}"` : ""} is forbidden: User "${user}" cannot ${info.verb} resource "${info.resource}"${info.subresource ? ` (subresource "${info.subresource}")` : ""} in API group "${info.apiGroup}"${info.namespace ? ` in the namespace "${info.namespace}"` : ""}`
    : `forbidden: User "${user}" cannot ${info.verb} path "${info.path}"`;
  return statusBody(403, "Forbidden", message, {
    ...(info.name ? { name: info.name } : {}),
    group: info.apiGroup,
    kind: info.resource,
  });
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  requestId: string,
  headOnly = false,
  meta: { contentType?: string; etag?: string; routedTo?: string } = {},
): void {
  const text = body === undefined ? "" : body instanceof JsonText ? body.bytes : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": meta.contentType ?? "application/json",
    ...(status === 304 ? {} : { "content-length": Buffer.byteLength(text) }),
    "cache-control": "no-cache, private",
    ...(meta.etag ? { etag: meta.etag } : {}),
    ...(meta.routedTo ? { "governor-upstream": meta.routedTo } : {}),
    "audit-id": requestId,
  });
  res.end(headOnly || status === 304 ? undefined : text);
}

const NO_QUERY = new URLSearchParams();

/** A request target split into its path and query, without building a URL. */
function splitTarget(target: string): { pathname: string; searchParams: URLSearchParams } {
  const q = target.indexOf("?");
  if (q < 0) return { pathname: target, searchParams: NO_QUERY };
  return { pathname: target.slice(0, q), searchParams: new URLSearchParams(target.slice(q + 1)) };
}

const AUDIT_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
