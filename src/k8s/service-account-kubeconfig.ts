/**
 * A kubeconfig for a ServiceAccount, for `governor kubeconfig`: running Governor outside
 * the cluster with exactly the RBAC its Deployment would have. The token is a bound one
 * from the TokenRequest API (what `kubectl create token` asks for; no token Secrets exist
 * for ServiceAccounts since Kubernetes 1.24); the cluster (server and CA) is the current
 * context's.
 */
import { readFileSync } from "node:fs";
import { stringify } from "yaml";
import { GovernorError } from "../errors.js";
import { KubeApiError, type KubeClient } from "./client.js";

/** Options of {@link serviceAccountKubeconfig}. */
export interface ServiceAccountKubeconfigOptions {
  namespace: string;
  serviceAccount: string;
  /** Token lifetime; the apiserver may shorten it (`--service-account-max-token-expiration`). */
  expirationSeconds: number;
}

/** The kubeconfig text (YAML). */
export async function serviceAccountKubeconfig(
  client: KubeClient,
  opts: ServiceAccountKubeconfigOptions,
): Promise<string> {
  const cluster = client.kubeConfig.getCurrentCluster();
  if (!cluster) throw new GovernorError("GOV_ERR_CONFIG", "kubeconfig has no current cluster");
  let review: { status?: { token?: string } };
  try {
    review = await client.create(
      `/api/v1/namespaces/${opts.namespace}/serviceaccounts/${opts.serviceAccount}/token`,
      {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: { expirationSeconds: opts.expirationSeconds },
      },
    );
  } catch (err) {
    if (err instanceof KubeApiError && err.statusCode === 404)
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        `ServiceAccount ${opts.namespace}/${opts.serviceAccount} not found: apply config/local (or config/default) first`,
      );
    throw err;
  }
  const token = review.status?.token;
  if (!token) throw new Error("the TokenRequest returned no token");
  const caData =
    cluster.caData ?? (cluster.caFile ? readFileSync(cluster.caFile).toString("base64") : undefined);
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "cluster",
        cluster: {
          server: cluster.server,
          ...(caData ? { "certificate-authority-data": caData } : {}),
          ...(cluster.skipTLSVerify ? { "insecure-skip-tls-verify": true } : {}),
        },
      },
    ],
    users: [{ name: opts.serviceAccount, user: { token } }],
    contexts: [
      {
        name: opts.serviceAccount,
        context: { cluster: "cluster", user: opts.serviceAccount, namespace: opts.namespace },
      },
    ],
    "current-context": opts.serviceAccount,
  });
}
