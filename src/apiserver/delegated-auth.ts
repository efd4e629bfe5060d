/**
 * The Kubernetes side of delegated authentication and authorization: TokenReviews,
 * SubjectAccessReviews, and following ConfigMap `kube-system/extension-apiserver-authentication`.
 * Needs the `system:auth-delegator` ClusterRole and the
 * `extension-apiserver-authentication-reader` Role in kube-system.
 */
import {
  AuthUnavailableError,
  type AuthenticationConfig,
  type TokenReviewer,
  type UserInfo,
} from "./authn.js";
import { parseAuthenticationConfigMap } from "./authn.js";
import type { AccessReviewer, Decision, SubjectAccessReviewSpec } from "./authz.js";
import type { KubernetesObject } from "@kubernetes/client-node";
import { dict } from "../util/dict.js";
import type { KubeClient } from "../k8s/client.js";
import { startInformer, type ResilientInformer } from "../k8s/informer.js";

/**
 * How long a TokenReview or SubjectAccessReview may take (k8s.io/apiserver's delegating
 * authenticator and authorizer use the same): a slow apiserver makes a request fail (500,
 * never allowed), not hang.
 */
const REVIEW_TIMEOUT_MS = 10_000;

/**
 * TokenReview through the apiserver; with `audiences`, only tokens issued for one of them
 * (a projected service-account token for Governor, not one for the apiserver) are valid.
 */
export class KubeTokenReviewer implements TokenReviewer {
  constructor(
    private readonly client: KubeClient,
    private readonly audiences?: readonly string[],
  ) {}

  async review(token: string): Promise<UserInfo | undefined> {
    let res: {
      status?: {
        authenticated?: boolean;
        audiences?: string[];
        user?: { username?: string; uid?: string; groups?: string[]; extra?: unknown };
      };
    };
    try {
      res = await this.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, ...(this.audiences ? { audiences: this.audiences } : {}) },
        },
        timeoutMs: REVIEW_TIMEOUT_MS,
      });
    } catch (err) {
      throw new AuthUnavailableError(`TokenReview failed: ${(err as Error).message}`, { cause: err });
    }
    const u = res.status?.user;
    if (!res.status?.authenticated || !u?.username) return undefined;
    // The apiserver answers with the audiences the token is for among those asked.
    if (this.audiences && !res.status.audiences?.some((a) => this.audiences!.includes(a))) return undefined;
    return { name: u.username, uid: u.uid, groups: u.groups ?? [], extra: extraOf(u.extra) };
  }
}

/**
 * A TokenReview's `user.extra` as a dictionary without a prototype (its keys come from
 * the token's authenticator, e.g. an OIDC claim), string lists only.
 */
function extraOf(extra: unknown): Record<string, string[]> {
  const out = dict<string[]>();
  if (!extra || typeof extra !== "object") return out;
  for (const [k, v] of Object.entries(extra))
    if (Array.isArray(v)) out[k] = v.filter((x): x is string => typeof x === "string");
  return out;
}

/** SubjectAccessReview through the apiserver. */
export class KubeAccessReviewer implements AccessReviewer {
  constructor(private readonly client: KubeClient) {}

  async review(spec: SubjectAccessReviewSpec): Promise<Decision> {
    try {
      const res = await this.client.request<{
        status?: { allowed?: boolean; denied?: boolean; reason?: string; evaluationError?: string };
      }>("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        body: { apiVersion: "authorization.k8s.io/v1", kind: "SubjectAccessReview", spec },
        timeoutMs: REVIEW_TIMEOUT_MS,
      });
      return {
        allowed: res.status?.allowed === true,
        reason: res.status?.reason ?? res.status?.evaluationError ?? "",
      };
    } catch (err) {
      throw new AuthUnavailableError(`SubjectAccessReview failed: ${(err as Error).message}`, { cause: err });
    }
  }
}

interface ConfigMap extends KubernetesObject {
  data?: Record<string, string>;
}

const CONFIGMAP_NS = "kube-system";
const CONFIGMAP_NAME = "extension-apiserver-authentication";

/**
 * Watches `kube-system/extension-apiserver-authentication` and calls `onChange` with the
 * parsed config whenever its data changes (some distributions rotate the CAs daily).
 * Resolves once the first version has been delivered.
 */
export async function followAuthenticationConfig(
  client: KubeClient,
  onChange: (config: AuthenticationConfig) => void,
  onError: (err: unknown) => void,
): Promise<ResilientInformer<ConfigMap>> {
  let last = "";
  const apply = (cm: ConfigMap) => {
    const data = cm.data;
    const key = JSON.stringify(data ?? {});
    if (key === last) return;
    try {
      const config = parseAuthenticationConfigMap(data);
      last = key;
      onChange(config);
    } catch (err) {
      onError(err);
    }
  };
  const path = `/api/v1/namespaces/${CONFIGMAP_NS}/configmaps`;
  const fieldSelector = `metadata.name=${CONFIGMAP_NAME}`;
  const informer = startInformer<ConfigMap>(
    client.kubeConfig,
    path,
    () => client.get(path, { fieldSelector }),
    { add: apply, update: apply, error: onError },
    { fieldSelector },
  );
  await informer.synced;
  return informer;
}
