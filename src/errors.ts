/**
 * Every error Governor raises on purpose carries a stable `code` (`GOV_ERR_*`), listed
 * here with what it means; `docs/errors.md` is kept in step by a test.
 */
export const ErrorCodes = {
  GOV_ERR_CONFIG: "Invalid configuration (flags, environment or kubeconfig).",
  GOV_ERR_KUBE_API: "The Kubernetes API answered with an error.",
  GOV_ERR_CLUSTER: "The local control plane could not be started or reached.",
  GOV_ERR_SELECTOR: "A label selector could not be parsed (answered as 400 BadRequest).",
  GOV_ERR_METRIC_NOT_FOUND: "No such metric, or no such object for it (answered as 404 NotFound).",
  GOV_ERR_METRIC_UNAVAILABLE:
    "The metric has no current value and no fallback (answered as 503 ServiceUnavailable).",
  GOV_ERR_METRIC_BAD_REQUEST: "The request does not fit the metric (answered as 400 BadRequest).",
  GOV_ERR_AUTHN: "The client's credentials were presented but are not valid (answered as 401 Unauthorized).",
  GOV_ERR_AUTHZ_UNAVAILABLE:
    "Authentication or authorization could not be checked with the apiserver (answered as 500, never allowed).",
  GOV_ERR_REQUEST_TIMEOUT:
    "A metrics request did not complete within its deadline, e.g. waiting for a first sample (answered as 504 Timeout).",
  GOV_ERR_CLIENT_GONE:
    "The client closed the connection before the answer was ready; the request stopped waiting and nothing was sent.",
  GOV_ERR_TLS: "The serving certificate or a CA bundle could not be loaded.",
  GOV_ERR_UNSAFE_PATH:
    "A name from a custom resource is not a plain object name (`..`, `/`, `%` …); the request was not sent.",
} as const;

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
