/**
 * `governor uninstall`: remove what Governor registered at run time — the APIServices
 * first (so cluster discovery never points at a missing Service), then its Service and
 * serving Secret. A running Governor would register them again within seconds, so this
 * refuses while one holds the leader Lease, or (`stopDeployment`, for the Helm chart's
 * pre-delete hook) stops the Deployment first and waits until its pods are gone.
 */
import { pino } from "pino";
import { currentLeaseHolder } from "../controller/leader-election.js";
import { Registration } from "../controller/registration.js";
import { GovernorError } from "../errors.js";
import type { KubeClient } from "../k8s/client.js";
import { LabelSelector } from "../selectors/label-selector.js";

/** Options of {@link uninstall}. */
export interface UninstallOptions {
  namespace: string;
  serviceName: string;
  leaseName: string;
  /** Remove even while a Governor holds the Lease. */
  force: boolean;
  /** Delete this Deployment of Governor first, and wait until its pods are gone. */
  stopDeployment?: string;
  /** How long to wait for the pods. @default 180000 */
  stopTimeoutMs?: number;
  /** Progress lines (stderr in the CLI). */
  progress?: (line: string) => void;
}

/** Removes Governor's run-time registration; returns what it did, a line each (`removed service/governor`, `gave back …`). */
export async function uninstall(client: KubeClient, opts: UninstallOptions): Promise<string[]> {
  const stopped = opts.stopDeployment ? await stopDeployment(client, opts) : false;
  const holder = await currentLeaseHolder(client, opts.namespace, opts.leaseName);
  // Pods that were killed rather than stopped leave their Lease held until it expires; once
  // the pods are gone, nobody renews it.
  if (holder && !opts.force && !stopped) {
    throw new GovernorError(
      "GOV_ERR_CONFIG",
      `a Governor is still running in ${opts.namespace} (${holder} holds Lease ${opts.leaseName}): it would register its APIServices again. Stop it first (kubectl -n ${opts.namespace} delete deployment governor, or stop the process), then run uninstall again; --force removes anyway`,
    );
  }
  const registration = new Registration({
    client,
    logger: pino({ level: "warn" }),
    mode: "cluster",
    namespace: opts.namespace,
    serviceName: opts.serviceName,
    port: 443,
    // Every API Governor may have registered, the history too if it kept samples.
    apis: ["custom", "external", "history"],
    onServingCertificate: () => {},
  });
  return registration.uninstall();
}

/** Deletes the Deployment and waits until none of its pods is left; false if there was none. */
async function stopDeployment(client: KubeClient, opts: UninstallOptions): Promise<boolean> {
  const name = opts.stopDeployment!;
  const path = `/apis/apps/v1/namespaces/${opts.namespace}/deployments/${name}`;
  const deployment = await client.getOrUndefined<{
    spec?: { selector?: { matchLabels?: Record<string, string> } };
  }>(path);
  if (!deployment) return false;
  const selector = LabelSelector.fromObject(deployment.spec?.selector).toString();
  if (!selector) throw new GovernorError("GOV_ERR_CONFIG", `Deployment ${name} has no pod selector`);
  await client.delete(path, { propagationPolicy: "Background" });
  opts.progress?.(`deleted deployment/${name}; waiting for its pods to stop`);
  const deadline = Date.now() + (opts.stopTimeoutMs ?? 180_000);
  for (;;) {
    const pods = await client.get<{ items: unknown[] }>(`/api/v1/namespaces/${opts.namespace}/pods`, {
      labelSelector: selector,
    });
    if (pods.items.length === 0) return true;
    if (Date.now() > deadline)
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        `${pods.items.length} pod(s) of Deployment ${name} still exist after ${Math.round((opts.stopTimeoutMs ?? 180_000) / 1000)} s; nothing was removed`,
      );
    await new Promise((r) => setTimeout(r, 1000));
  }
}
