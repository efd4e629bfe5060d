/**
 * Request attributes as kube-apiserver derives them (`k8s.io/apiserver/pkg/endpoints/
 * request.RequestInfoFactory`), so the SubjectAccessReview Governor sends for a request is
 * the one kube-apiserver would send for the same path: resource requests under
 * `/apis/{group}/{version}/…` get namespace, resource, name, subresource and verb;
 * everything else is a non-resource request (path + verb).
 */
import { tryDecodeURIComponent } from "../util/uri.js";

/** The authorization attributes of one request. */
export interface RequestInfo {
  isResourceRequest: boolean;
  path: string;
  /** get, list, watch, create, update, patch, delete… (lower-case HTTP verb for non-resource requests). */
  verb: string;
  apiGroup: string;
  apiVersion: string;
  namespace: string;
  resource: string;
  subresource: string;
  name: string;
  /** Path segments after namespace/resource/name/subresource (for exotic paths). */
  rest: string[];
}

const NAMESPACE_SUBRESOURCES = new Set(["status", "finalize"]);

function httpVerb(method: string): string {
  return method.toLowerCase();
}

/** Derives {@link RequestInfo} from a method and a URL path (without query). */
export function requestInfo(
  method: string,
  path: string,
  query: URLSearchParams = new URLSearchParams(),
): RequestInfo {
  const info: RequestInfo = {
    isResourceRequest: false,
    path,
    verb: httpVerb(method),
    apiGroup: "",
    apiVersion: "",
    namespace: "",
    resource: "",
    subresource: "",
    name: "",
    rest: [],
  };
  const parts = path
    .replace(/^\/+|\/+$/g, "")
    .split("/")
    .filter((p) => p !== "")
    .map(safeDecode);
  if (parts[0] !== "apis" && parts[0] !== "api") return info;
  let current = parts.slice(1);
  if (parts[0] === "apis") {
    if (current.length < 3) return info; // /apis, /apis/{group}, /apis/{group}/{version}: discovery
    info.apiGroup = current[0]!;
    info.apiVersion = current[1]!;
    current = current.slice(2);
  } else {
    if (current.length < 2) return info;
    info.apiVersion = current[0]!;
    current = current.slice(1);
  }
  info.isResourceRequest = true;
  if (current[0] === "namespaces" && current.length > 1) {
    info.namespace = current[1]!;
    if (current.length > 2 && !NAMESPACE_SUBRESOURCES.has(current[2]!)) current = current.slice(2);
  }
  info.resource = current[0] ?? "";
  info.name = current[1] ?? "";
  info.subresource = current[2] ?? "";
  info.rest = current.slice(3);
  switch (method.toUpperCase()) {
    case "POST":
      info.verb = "create";
      break;
    case "GET":
    case "HEAD":
      info.verb = info.name ? "get" : query.get("watch") === "true" ? "watch" : "list";
      break;
    case "PUT":
      info.verb = "update";
      break;
    case "PATCH":
      info.verb = "patch";
      break;
    case "DELETE":
      info.verb = info.name ? "delete" : "deletecollection";
      break;
    default:
      info.verb = "";
  }
  return info;
}

function safeDecode(segment: string): string {
  return tryDecodeURIComponent(segment) ?? segment;
}
