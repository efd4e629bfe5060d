/**
 * A request's deadline and cancellation, made only when something has to wait: the warm
 * path answers without ever reading `signal`, so it pays for no timer, no controller and
 * no listener. The first read arms a timer for what is left of the deadline and watches
 * the response for a client that goes away.
 */
import type { ServerResponse } from "node:http";
import { GovernorError } from "../errors.js";

/** What a waiting step reads to stop waiting. */
export interface Cancellation {
  /** Aborted with {@link DeadlineExceededError} or {@link ClientGoneError}. Reading it arms it. */
  readonly signal: AbortSignal;
  /**
   * Why to stop now, if the request should — read without arming anything, for a step that
   * only needs to know at its start (a request leaving the fair-dispatch queue).
   */
  reason?(): Error | undefined;
}

/** The request ran out of time (answered as 504 Timeout). */
export class DeadlineExceededError extends GovernorError {
  constructor(ms: number) {
    super("GOV_ERR_REQUEST_TIMEOUT", `the request did not complete within ${ms / 1000}s`);
  }
}

/** The client closed the connection before the answer was ready (nothing is sent). */
export class ClientGoneError extends GovernorError {
  constructor() {
    super("GOV_ERR_CLIENT_GONE", "the client went away before the answer was ready");
  }
}

/** See the module comment. One per request; `dispose()` when the request ends. */
export class RequestDeadline implements Cancellation {
  private controller?: AbortController;
  private timer?: NodeJS.Timeout;
  private readonly startedAt = Date.now();

  constructor(
    private readonly res: ServerResponse,
    private readonly timeoutMs: number,
  ) {}

  get signal(): AbortSignal {
    if (this.controller) return this.controller.signal;
    const c = (this.controller = new AbortController());
    const left = this.timeoutMs - (Date.now() - this.startedAt);
    this.timer = setTimeout(() => c.abort(new DeadlineExceededError(this.timeoutMs)), Math.max(0, left));
    this.timer.unref();
    this.res.once("close", () => {
      if (!this.res.writableFinished) c.abort(new ClientGoneError());
    });
    return c.signal;
  }

  reason(): Error | undefined {
    if (this.controller?.signal.aborted) return this.controller.signal.reason as Error;
    if (Date.now() - this.startedAt >= this.timeoutMs) return new DeadlineExceededError(this.timeoutMs);
    if (this.res.destroyed || this.res.socket?.destroyed) return new ClientGoneError();
    return undefined;
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

/**
 * `p`, or the cancellation's reason as soon as it is aborted. `p` itself goes on (it may
 * be shared: a sample or a review other requests wait for too); this caller stops waiting.
 */
export function untilCancelled<T>(p: Promise<T>, cancel: Cancellation | undefined): Promise<T> {
  if (!cancel) return p;
  const signal = cancel.signal;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: Error) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
