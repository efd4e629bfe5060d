/**
 * Every error Governor raises on purpose carries a stable `code` (`GOV_ERR_*`), listed
 * here with what it means and, for the errors a metrics request can end in, the HTTP
 * status and `metav1.Status` reason it is answered with. This table is the one source of
 * both: the API's error responder (`errorResponse` in src/apiserver/metrics-api.ts) reads
 * it, and `npm run generate` writes `docs/errors.md` from it.
 */

/** How a request that ends in an error of some code is answered. */
export interface ErrorAnswer {
  status: number;
  /** The `metav1.Status` reason (a `StatusReason` of k8s.io/apimachinery). */
  reason: string;
}

interface ErrorCodeEntry {
  meaning: string;
  /** Absent: a request that ends in it is answered 500 InternalError with no detail. */
  answer?: ErrorAnswer;
}

export const ErrorCodes = {
  GOV_ERR_CONFIG: { meaning: "Invalid configuration (flags, environment or kubeconfig)." },
  GOV_ERR_KUBE_API: { meaning: "The Kubernetes API answered with an error." },
  GOV_ERR_SELECTOR: {
    meaning: "A label selector could not be parsed.",
    answer: { status: 400, reason: "BadRequest" },
  },
  GOV_ERR_METRIC_NOT_FOUND: {
    meaning: "No such metric, or no such object for it.",
    answer: { status: 404, reason: "NotFound" },
  },
  GOV_ERR_METRIC_UNAVAILABLE: {
    meaning: "The metric has no current value and no fallback.",
    answer: { status: 503, reason: "ServiceUnavailable" },
  },
  GOV_ERR_METRIC_BAD_REQUEST: {
    meaning: "The request does not fit the metric.",
    answer: { status: 400, reason: "BadRequest" },
  },
  GOV_ERR_AUTHN: {
    meaning: "The client's credentials were presented but are not valid.",
    answer: { status: 401, reason: "Unauthorized" },
  },
  GOV_ERR_AUTHN_THROTTLED: {
    meaning:
      "More bearer tokens not seen before came than TokenReviews are sent per second (cached tokens, client certificates and the front proxy never wait on this); the request was not reviewed and is answered with `Retry-After: 1`.",
    answer: { status: 429, reason: "TooManyRequests" },
  },
  GOV_ERR_AUTHZ_UNAVAILABLE: {
    meaning: "Authentication or authorization could not be checked with the apiserver (never allowed).",
  },
  GOV_ERR_REQUEST_TIMEOUT: {
    meaning: "A metrics request did not complete within its deadline, e.g. waiting for a first sample.",
    answer: { status: 504, reason: "Timeout" },
  },
  GOV_ERR_CLIENT_GONE: {
    meaning:
      "The client closed the connection before the answer was ready; the request stopped waiting and nothing was sent.",
  },
  GOV_ERR_UPSTREAM_UNAVAILABLE: {
    meaning:
      "A request for a metric Governor does not serve could not be forwarded to the upstream metrics adapter (down, unreachable, no CA to check it, or an answer that is not JSON); the message names the upstream.",
    answer: { status: 503, reason: "ServiceUnavailable" },
  },
  GOV_ERR_TLS: { meaning: "The serving certificate or a CA bundle could not be loaded." },
  GOV_ERR_UNSAFE_PATH: {
    meaning:
      "A name from a custom resource is not a plain object name (`..`, `/`, `%` …); the request was not sent.",
  },
} as const satisfies Record<string, ErrorCodeEntry>;

/** One of the codes in {@link ErrorCodes}. */
export type ErrorCode = keyof typeof ErrorCodes;

/** Base class of Governor's errors: a stable code, a message, and the cause. */
export class GovernorError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * How a request that ended in `err` is answered: its code's status and reason with its
 * message, or undefined (answer 500 InternalError, details for the log only) for every
 * other error.
 */
export function answerFor(err: unknown): (ErrorAnswer & { message: string }) | undefined {
  if (!(err instanceof GovernorError)) return undefined;
  const entry: ErrorCodeEntry = ErrorCodes[err.code];
  return entry.answer && { ...entry.answer, message: err.message };
}
