/**
 * The cluster's service-account issuer and the public keys its tokens are signed with, as
 * kube-apiserver publishes them (service-account issuer discovery): the issuer from
 * `GET /.well-known/openid-configuration`, the keys from `GET /openid/v1/jwks`, both read
 * through Governor's own Kubernetes client (the discovery document's `jwks_uri` names the
 * issuer's public address, which Governor need not reach). Every ServiceAccount may read
 * them (ClusterRole `system:service-account-issuer-discovery`, bound to
 * `system:serviceaccounts` by default). Used by src/apiserver/service-account-token-check.ts.
 */
import type { JsonWebKey } from "node:crypto";
import { GovernorError } from "../errors.js";
import type { KubeApi } from "../k8s/client.js";

/** The issuer and its published keys (JWKs, not checked yet). */
export interface ServiceAccountKeys {
  issuer: string;
  keys: JsonWebKey[];
}

/** Reads {@link ServiceAccountKeys}; rejects when they cannot be read (403, 404, network…). */
export interface ServiceAccountKeySource {
  read(): Promise<ServiceAccountKeys>;
}

/** How long each of the two reads may take. */
const READ_TIMEOUT_MS = 5_000;

/** More keys than any cluster publishes (a rotation keeps two or three). */
const MAX_KEYS = 64;

/** {@link ServiceAccountKeySource} through the apiserver. */
export class KubeServiceAccountKeySource implements ServiceAccountKeySource {
  constructor(private readonly client: Pick<KubeApi, "request">) {}

  async read(): Promise<ServiceAccountKeys> {
    const discovery = await this.client.request<{ issuer?: unknown } | undefined>(
      "GET",
      "/.well-known/openid-configuration",
      { timeoutMs: READ_TIMEOUT_MS },
    );
    const issuer = discovery?.issuer;
    if (typeof issuer !== "string" || issuer === "")
      throw new GovernorError(
        "GOV_ERR_KUBE_API",
        "the service-account issuer discovery document names no issuer",
      );
    const jwks = await this.client.request<{ keys?: unknown } | undefined>("GET", "/openid/v1/jwks", {
      timeoutMs: READ_TIMEOUT_MS,
      accept: "application/jwk-set+json, application/json",
    });
    if (!Array.isArray(jwks?.keys))
      throw new GovernorError("GOV_ERR_KUBE_API", "the service-account issuer's key set holds no keys list");
    const keys = jwks.keys
      .filter((k): k is JsonWebKey => typeof k === "object" && k !== null && !Array.isArray(k))
      .slice(0, MAX_KEYS);
    return { issuer, keys };
  }
}
