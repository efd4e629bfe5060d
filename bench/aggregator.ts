/**
 * "Through the aggregator": the warm metric GET via kube-apiserver, against a GET of a
 * comparable small object (a `Flunder`) from the Go `sample-apiserver` — built from the
 * same Kubernetes release's modules as the control plane, on the same `k8s.io/apiserver` authn/authz stack as
 * prometheus-adapter and KEDA — registered the same way (ExternalName Service to
 * localhost, APIService with the bench CA) and loaded in the same run.
 */
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { KubeApiError } from "../src/k8s/client.js";
import { buildApiServices, buildLocalService } from "../src/manifests/api-service.js";
import { WARM_PATH } from "./direct.js";
import {
  type Bench,
  type Child,
  NS,
  ROOT,
  SERVICES,
  child,
  comparisonRows,
  controlPlanePids,
  interleave,
  sleep,
  waitFor200,
} from "./harness.js";

const WARDLE_APISERVICE = "v1alpha1.wardle.example.com";
const GOVERNOR_APISERVICES = [
  "v1beta2.custom.metrics.k8s.io",
  "v1beta1.custom.metrics.k8s.io",
  "v1beta1.external.metrics.k8s.io",
];

/** Points the metrics APIs at `governor` and the wardle API at `wardle`, both on localhost. */
async function register(b: Bench, governor: Child, wardle: Child): Promise<void> {
  for (const [name, port] of [
    [SERVICES.governor, governor.port],
    [SERVICES.wardle, wardle.port],
  ] as const) {
    await b.client.createOrReplace(
      `/api/v1/namespaces/${NS}/services/${name}`,
      buildLocalService({ namespace: NS, name, port }),
    );
  }
  const apiServices = [
    ...buildApiServices({
      service: { namespace: NS, name: SERVICES.governor, port: governor.port },
      caBundle: b.ca.cert,
    }),
    {
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: { name: WARDLE_APISERVICE },
      spec: {
        group: "wardle.example.com",
        version: "v1alpha1",
        service: { namespace: NS, name: SERVICES.wardle, port: wardle.port },
        caBundle: Buffer.from(b.ca.cert).toString("base64"),
        groupPriorityMinimum: 1000,
        versionPriority: 15,
      },
    },
  ];
  // create/replace, as Governor's registration writes APIServices (ADR 0004).
  for (const a of apiServices)
    await b.client.createOrReplace(`/apis/apiregistration.k8s.io/v1/apiservices/${a.metadata.name}`, a);
}

export async function unregister(b: Bench): Promise<void> {
  for (const name of [...GOVERNOR_APISERVICES, WARDLE_APISERVICE])
    await b.client.delete(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`).catch(() => {});
}

/** The Go peer, serving with the bench's certificate and the cluster's own etcd. */
async function startSampleApiserver(b: Bench, port: number): Promise<Child> {
  const bin = execFileSync("bash", [join(ROOT, "hack/k8s-binaries.sh"), "--with-sample-apiserver"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  const cp = spawn(
    join(bin, "sample-apiserver"),
    [
      `--etcd-servers=${b.etcd}`,
      `--etcd-prefix=/registry/governor-bench-wardle`,
      `--secure-port=${port}`,
      "--bind-address=127.0.0.1",
      `--tls-cert-file=${b.servingCert.certFile}`,
      `--tls-private-key-file=${b.servingCert.keyFile}`,
      `--kubeconfig=${b.kubeconfig}`,
      `--authentication-kubeconfig=${b.kubeconfig}`,
      `--authorization-kubeconfig=${b.kubeconfig}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const wardle = child(cp, port);
  await waitFor200(`https://127.0.0.1:${port}/healthz`, { ca: b.ca.cert }, "sample-apiserver healthy").catch(
    (err) => {
      throw new Error(`${(err as Error).message}\n${wardle.log()}`);
    },
  );
  return wardle;
}

export async function aggregatorRows(
  b: Bench,
  governor: Child,
  wardlePort: number,
  connections = [1, 16],
): Promise<void> {
  const wardle = await startSampleApiserver(b, wardlePort);
  try {
    await register(b, governor, wardle);
    const admin = { ca: b.admin.ca, cert: b.admin.cert, key: b.admin.key };
    const governorUrl = `${b.apiserver}${WARM_PATH}`;
    const flunders = `/apis/wardle.example.com/v1alpha1/namespaces/${NS}/flunders`;
    // The aggregator needs a moment after Available to route; retry until both answer.
    for (let i = 0; ; i++) {
      const created = await b.client
        .create(flunders, {
          apiVersion: "wardle.example.com/v1alpha1",
          kind: "Flunder",
          metadata: { name: "bench" },
        })
        .then(() => true)
        .catch((err: unknown) => err instanceof KubeApiError && err.statusCode === 409);
      if (created) break;
      if (i > 300) throw new Error(`the aggregator never routed to sample-apiserver\n${wardle.log()}`);
      await sleep(200);
    }
    const wardleUrl = `${b.apiserver}${flunders}/bench`;
    await waitFor200(governorUrl, admin, "Governor through the aggregator");
    await waitFor200(wardleUrl, admin, "sample-apiserver through the aggregator");
    // Not pinned: kube-apiserver, etcd, the server under test and the load generator all
    // take part in every request; any split of two cores starves one of them (ADR 0005).
    const path = controlPlanePids(b, ["kube-apiserver", "etcd"]);
    for (const c of connections) {
      const m = await interleave(
        b,
        { url: governorUrl, tls: admin, pids: [governor.process.pid!] },
        { url: wardleUrl, tls: admin, pids: [wardle.process.pid!] },
        c,
        path,
      );
      b.rows.push(
        ...comparisonRows(`through the aggregator, ${c} conn`, m, "Go sample-apiserver, GET flunder"),
      );
    }
  } finally {
    await unregister(b);
    await wardle.stop();
  }
}
