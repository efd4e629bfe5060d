/**
 * Pure builders for Governor's aggregated-API registration: the APIService objects for
 * `custom.metrics.k8s.io` (v1beta2, v1beta1), `external.metrics.k8s.io` (v1beta1) and,
 * when samples are kept, Governor's own `history.governor.dev` (v1alpha1), always with a
 * `caBundle` (never `insecureSkipTLSVerify`), and the Service they point at.
 */

/** The group-versions Governor can register, by which API. */
export const API_VERSIONS = {
  custom: [
    { group: "custom.metrics.k8s.io", version: "v1beta2", versionPriority: 200 },
    { group: "custom.metrics.k8s.io", version: "v1beta1", versionPriority: 100 },
  ],
  external: [{ group: "external.metrics.k8s.io", version: "v1beta1", versionPriority: 100 }],
  history: [{ group: "history.governor.dev", version: "v1alpha1", versionPriority: 100 }],
} as const;

/** An API Governor registers. */
export type GovernorApi = keyof typeof API_VERSIONS;

/** The annotation on Governor's APIService that keeps the one it replaced, to give it back (ADR 0011). */
export const REPLACED_ANNOTATION = "governor.dev/replaced-apiservice";

/** Options of {@link buildApiServices}. */
export interface ApiServiceOptions {
  /** The Service fronting Governor. */
  service: { namespace: string; name: string; port: number };
  /** PEM of the CA that signed the serving certificate. */
  caBundle: string;
  /** Which APIs to register. @default the two metrics APIs */
  apis?: readonly GovernorApi[];
  labels?: Record<string, string>;
}

/** The APIService objects (apiregistration.k8s.io/v1). */
export function buildApiServices(opts: ApiServiceOptions) {
  const apis = opts.apis ?? ["custom", "external"];
  return apis.flatMap((api) =>
    API_VERSIONS[api].map((gv) => ({
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: {
        name: `${gv.version}.${gv.group}`,
        labels: { "app.kubernetes.io/name": "governor", ...opts.labels },
      },
      spec: {
        group: gv.group,
        version: gv.version,
        service: { namespace: opts.service.namespace, name: opts.service.name, port: opts.service.port },
        caBundle: Buffer.from(opts.caBundle).toString("base64"),
        groupPriorityMinimum: 100,
        versionPriority: gv.versionPriority,
      },
    })),
  );
}

/** Kind, name and labels of the Service the APIServices point at, in either mode. */
function serviceHeader(opts: { namespace: string; name: string }) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: opts.namespace,
      name: opts.name,
      labels: { "app.kubernetes.io/name": "governor" },
    },
  };
}

/**
 * The ClusterIP Service the aggregator dials in the `cluster` registration mode: port
 * `port` → the operator pods' `targetPort` (the Deployment's pod labels select them); with
 * `otlpTargetPort`, also OTLP's port 4318 → the pods' OTLP receiver, for pushers.
 */
export function buildClusterService(opts: {
  namespace: string;
  name: string;
  port: number;
  targetPort: number;
  otlpTargetPort?: number;
}) {
  return {
    ...serviceHeader(opts),
    spec: {
      type: "ClusterIP",
      selector: { "app.kubernetes.io/name": "governor", "app.kubernetes.io/component": "operator" },
      ports: [
        { name: "https", port: opts.port, targetPort: opts.targetPort, protocol: "TCP" },
        ...(opts.otlpTargetPort
          ? [{ name: "otlp-http", port: 4318, targetPort: opts.otlpTargetPort, protocol: "TCP" }]
          : []),
      ],
    },
  };
}

/**
 * A Service of type ExternalName → `localhost`, for a Governor process running outside the
 * cluster's pod network (the local control plane, a developer's laptop): the aggregator
 * dials `localhost:<port>` while verifying the certificate for `<name>.<namespace>.svc`.
 */
export function buildLocalService(opts: { namespace: string; name: string; port: number }) {
  return {
    ...serviceHeader(opts),
    spec: {
      type: "ExternalName",
      externalName: "localhost",
      ports: [{ name: "https", port: opts.port, protocol: "TCP" }],
    },
  };
}

/** The DNS names a serving certificate for a Service must carry. */
export function serviceDnsNames(namespace: string, name: string): string[] {
  return [name, `${name}.${namespace}`, `${name}.${namespace}.svc`, `${name}.${namespace}.svc.cluster.local`];
}
