/**
 * A container's environment, built as the kubelet builds it: `PATH`, `HOSTNAME`, the
 * `KUBERNETES_SERVICE_*` variables, then `envFrom` (ConfigMaps and Secrets, with their
 * prefix), then `env` in order (values with `$(VAR)` references to earlier ones,
 * downward-API `fieldRef`s, ConfigMap and Secret keys). A missing key or object that is
 * not optional fails the container's start, as it does on a kubelet.
 */
import type { KubeClient } from "../../../src/k8s/client.js";
import type { ContainerSpec, Pod } from "./pod-spec.js";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** What the environment needs from the agent. */
export interface EnvContext {
  client: KubeClient;
  /** `KUBERNETES_SERVICE_HOST` / `_PORT`: the `kubernetes` Service's ClusterIP and port. */
  kubernetesService: { host: string; port: number };
  nodeName: string;
  hostIP: string;
}

export async function containerEnvironment(
  ctx: EnvContext,
  pod: Pod,
  podIP: string | undefined,
  c: ContainerSpec,
): Promise<Record<string, string>> {
  const { kubernetesService: svc } = ctx;
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOSTNAME: pod.metadata.name,
    KUBERNETES_SERVICE_HOST: svc.host,
    KUBERNETES_SERVICE_PORT: String(svc.port),
    KUBERNETES_SERVICE_PORT_HTTPS: String(svc.port),
    KUBERNETES_PORT: `tcp://${svc.host}:${svc.port}`,
    KUBERNETES_PORT_443_TCP: `tcp://${svc.host}:${svc.port}`,
    KUBERNETES_PORT_443_TCP_PROTO: "tcp",
    KUBERNETES_PORT_443_TCP_PORT: String(svc.port),
    KUBERNETES_PORT_443_TCP_ADDR: svc.host,
  };
  /** The keys of the ConfigMap (`configMap` set) or Secret `ref` names, in the pod's namespace. */
  const keysOf = (configMap: boolean, ref: { name: string; optional?: boolean }) =>
    keys(ctx.client, configMap ? "configmaps" : "secrets", pod.metadata.namespace, ref.name, ref.optional);
  for (const from of c.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref) continue;
    const data = await keysOf(Boolean(from.configMapRef), ref);
    for (const [k, v] of Object.entries(data)) env[`${from.prefix ?? ""}${k}`] = v;
  }
  for (const e of c.env ?? []) {
    const from = e.valueFrom;
    if (!from) env[e.name] = expand(e.value ?? "", env);
    else if (from.fieldRef) env[e.name] = field(ctx, pod, podIP, from.fieldRef.fieldPath);
    else if (from.configMapKeyRef || from.secretKeyRef) {
      const ref = (from.configMapKeyRef ?? from.secretKeyRef)!;
      const data = await keysOf(Boolean(from.configMapKeyRef), ref);
      if (data[ref.key] !== undefined) env[e.name] = data[ref.key]!;
      else if (!ref.optional) throw new Error(`couldn't find key ${ref.key} in ${ref.name}`);
    } else throw new Error(`env ${e.name}: resourceFieldRef is not supported by the governor node agent`);
  }
  return env;
}

async function keys(
  client: KubeClient,
  kind: "configmaps" | "secrets",
  ns: string,
  name: string,
  optional?: boolean,
): Promise<Record<string, string>> {
  const obj = await client.getOrUndefined<{ data?: Record<string, string> }>(
    `/api/v1/namespaces/${ns}/${kind}/${name}`,
  );
  if (!obj) {
    if (optional) return {};
    throw new Error(`${kind === "secrets" ? "secret" : "configmap"} "${name}" not found`);
  }
  const data = obj.data ?? {};
  return kind === "secrets"
    ? Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]))
    : data;
}

function field(ctx: EnvContext, pod: Pod, podIP: string | undefined, path: string): string {
  const m = pod.metadata;
  const sub = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(path);
  if (sub) return (sub[1] === "labels" ? m.labels : m.annotations)?.[sub[2]!] ?? "";
  const fields: Record<string, string | undefined> = {
    "metadata.name": m.name,
    "metadata.namespace": m.namespace,
    "metadata.uid": m.uid,
    "spec.nodeName": ctx.nodeName,
    "spec.serviceAccountName": pod.spec.serviceAccountName ?? "default",
    "status.hostIP": ctx.hostIP,
    "status.hostIPs": ctx.hostIP,
    "status.podIP": podIP,
    "status.podIPs": podIP,
  };
  if (!(path in fields)) throw new Error(`fieldRef ${path} is not supported`);
  return fields[path] ?? "";
}

/** Expands `$(NAME)` references to earlier variables, as the kubelet does; `$$(X)` escapes. */
export function expand(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (all, name: string | undefined) =>
    name === undefined ? "$" : (env[name] ?? all),
  );
}
