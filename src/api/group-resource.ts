/**
 * A Kubernetes resource and its API group, as the metrics APIs name them in paths and
 * discovery (`pods`, `deployments.apps`).
 */
import { DNS_SUBDOMAIN_PATTERN } from "./common.js";

/** `pods`, `services`, `deployments.apps`, `scalableworkloads.governor.dev`, `namespaces`, `nodes`… */
export const GROUP_RESOURCE_PATTERN = DNS_SUBDOMAIN_PATTERN;

/** A resource and its API group (`""` for the core group), e.g. `{group: "apps", resource: "deployments"}`. */
export interface GroupResource {
  group: string;
  resource: string;
}

/** `pods`, `deployments.apps`: the form the metrics API uses in paths and discovery. */
export function formatGroupResource(gr: GroupResource): string {
  return gr.group ? `${gr.resource}.${gr.group}` : gr.resource;
}

/** Inverse of {@link formatGroupResource}: the first dot separates resource from group. */
export function parseGroupResource(text: string): GroupResource {
  const dot = text.indexOf(".");
  return dot === -1
    ? { group: "", resource: text }
    : { group: text.slice(dot + 1), resource: text.slice(0, dot) };
}
