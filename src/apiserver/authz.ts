/**
 * Authorization delegated to kube-apiserver with SubjectAccessReviews, as extension
 * apiservers do: the attributes are the ones kube-apiserver derives for the same request
 * ({@link requestInfo}); members of `system:masters` are allowed without a review (as
 * kube-apiserver's privileged-group authorizer does); decisions are cached for 10 s.
 * A review that cannot be made is an {@link AuthUnavailableError}: never an allow.
 */
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import { coalesce } from "../util/in-flight.js";
import type { UserInfo } from "./authn.js";
import type { RequestInfo } from "./request-info.js";

/** An authorization decision. */
export interface Decision {
  allowed: boolean;
  reason: string;
}

/** The body of a `SubjectAccessReview` spec. */
export interface SubjectAccessReviewSpec {
  user: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
  resourceAttributes?: {
    namespace?: string;
    verb: string;
    group: string;
    version: string;
    resource: string;
    subresource?: string;
    name?: string;
  };
  nonResourceAttributes?: { path: string; verb: string };
}

/** Sends one SubjectAccessReview (the Kubernetes API in production, a fake in tests). */
export interface AccessReviewer {
  review(spec: SubjectAccessReviewSpec): Promise<Decision>;
}

/** Decides whether a user may make a request. */
export interface Authorizer {
  authorize(user: UserInfo, info: RequestInfo): Decision | Promise<Decision>;
}

/** Builds the SubjectAccessReview spec kube-apiserver would send for this request. */
export function accessReviewSpec(user: UserInfo, info: RequestInfo): SubjectAccessReviewSpec {
  const spec: SubjectAccessReviewSpec = {
    user: user.name,
    groups: user.groups,
    ...(user.uid ? { uid: user.uid } : {}),
    ...(Object.keys(user.extra).length > 0 ? { extra: user.extra } : {}),
  };
  if (info.isResourceRequest) {
    spec.resourceAttributes = {
      namespace: info.namespace,
      verb: info.verb,
      group: info.apiGroup,
      version: info.apiVersion,
      resource: info.resource,
      subresource: info.subresource,
      name: info.name,
    };
  } else {
    spec.nonResourceAttributes = { path: info.path, verb: info.verb };
  }
  return spec;
}

/** See the module comment. */
export class DelegatingAuthorizer implements Authorizer {
  /** Decisions by review spec: bounded in bytes, least recently used out first. */
  private readonly cache = byteBoundedCache<string, { decision: Decision; expires: number }>({
    maxBytes: 8 << 20,
    sizeOf: (key, v) => stringBytes(key) + 100 + stringBytes(v.decision.reason),
  });

  private readonly inFlight = new Map<string, Promise<Decision>>();

  /**
   * @param opts.ttlMs how long a decision (allow or deny) is reused. @default 10000
   * @param opts.onCache "hit"/"miss" per lookup, for metrics.
   * @param opts.now the time, in ms (tests move it). @default Date.now
   */
  constructor(
    private readonly reviewer: AccessReviewer,
    private readonly opts: {
      ttlMs?: number;
      onCache?: (result: "hit" | "miss") => void;
      now?: () => number;
    } = {},
  ) {}

  /** Synchronous for system:masters and cached decisions; a promise when a review is needed. */
  authorize(user: UserInfo, info: RequestInfo): Decision | Promise<Decision> {
    if (user.groups.includes("system:masters")) return { allowed: true, reason: "system:masters" };
    const spec = accessReviewSpec(user, info);
    const key = JSON.stringify(spec);
    const now = (this.opts.now ?? Date.now)();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) {
      this.opts.onCache?.("hit");
      return hit.decision;
    }
    this.opts.onCache?.("miss");
    // Concurrent misses for the same review share one SubjectAccessReview.
    return coalesce(this.inFlight, key, () =>
      this.reviewer.review(spec).then((decision) => {
        this.cache.set(key, { decision, expires: now + (this.opts.ttlMs ?? 10_000) });
        return decision;
      }),
    );
  }
}
