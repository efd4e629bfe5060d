/**
 * Every error Governor raises on purpose carries a stable `code` (`GOV_ERR_*`), listed
 * here with what it means; `docs/errors.md` is kept in step by a test.
 */
export const ErrorCodes = {
  GOV_ERR_CONFIG: "Invalid configuration (flags, environment or kubeconfig).",
  GOV_ERR_KUBE_API: "The Kubernetes API answered with an error.",
  GOV_ERR_CLUSTER: "The local control plane could not be started or reached.",
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
