import { connect } from "node:tls";
import { X509Certificate } from "node:crypto";
import { expect } from "chai";
import { pino } from "pino";
import { startOperator, type RunningOperator } from "../../src/app/operator.js";
import { splitPem } from "../../src/certs/certs.js";
import { Registration } from "../../src/controller/registration.js";
import { httpsGet } from "../support/https-get.js";
import { freshNamespace, useCluster, type TestCluster, LOOPBACK_SOURCES } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { freePort } from "../support/ports.js";

const SVC = "governor-reg";
const log = pino({ level: process.env.GOVERNOR_TEST_LOG ?? "silent" });

/** The certificate a TLS server presents. */
function servedCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, rejectUnauthorized: false, servername: "localhost" }, () => {
      const raw = s.getPeerCertificate().raw;
      s.end();
      resolve(new X509Certificate(raw));
    });
    s.on("error", reject);
  });
}

describe("self-registration: certificate Secret, Service, APIServices (integration)", function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  let operator: RunningOperator | undefined;
  const registration = ({
    leader = false,
    ...extra
  }: Partial<ConstructorParameters<typeof Registration>[0]> & { leader?: boolean } = {}) => {
    const r = new Registration({
      client: cluster.client,
      logger: log,
      mode: "local",
      namespace: ns.name,
      serviceName: SVC,
      port: 1,
      apis: ["custom", "external"],
      onServingCertificate: () => {},
      ...extra,
    });
    if (leader) void r.leaderPart.start();
    return r;
  };
  const apiService = (name: string) =>
    cluster.client.get<{
      spec: { service: { namespace: string; name: string }; caBundle: string };
      status?: { conditions?: { type: string; status: string }[] };
    }>(`/apis/apiregistration.k8s.io/v1/apiservices/${name}`);

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "registration");
  });

  after(async () => {
    await operator?.stop();
    await operator?.registration?.uninstall();
    await cluster.client.delete(
      "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
    );
    await ns?.delete();
  });

  it("ends with one CA when several replicas start at once, and keeps it across restarts", async () => {
    const pairs = await Promise.all([registration().init(), registration().init(), registration().init()]);
    expect(new Set(pairs.map((p) => p.cert)).size, "one serving certificate").to.equal(1);
    const restarted = registration();
    const again = await restarted.init();
    expect(again.cert).to.equal(pairs[0].cert);
    const leaf = new X509Certificate(again.cert);
    expect(leaf.subjectAltName).to.contain(`DNS:${SVC}.${ns.name}.svc`);
    expect(leaf.subjectAltName).to.contain(`DNS:${SVC}.${ns.name}.svc.cluster.local`);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).to.equal("prime256v1");
  });

  it("does not overwrite a serving Secret that another writer changed after it was read (optimistic concurrency)", async () => {
    const name = "governor-occ";
    const path = `/api/v1/namespaces/${ns.name}/secrets/${name}-serving-cert`;
    let interfered = false;
    // A client whose first replace of the Secret is overtaken by another writer.
    const client = new Proxy(cluster.client, {
      get(target, prop, receiver) {
        if (prop === "replace")
          return async (p: string, body: unknown) => {
            if (p === path && !interfered) {
              interfered = true;
              await target.mergePatch(path, {
                metadata: { annotations: { "example.com/touched-by": "someone" } },
              });
            }
            return target.replace(p, body);
          };
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const r = registration({
      client,
      serviceName: name,
      mode: "none",
      leader: true,
      caPropagationMs: 0,
    });
    const first = await r.init();
    r.requestRotation();
    const err = await r.syncNow().then(
      () => undefined,
      (e: { statusCode?: number }) => e,
    );
    expect(err?.statusCode, "the stale write is refused").to.equal(409);
    const secret = await cluster.client.get<{
      metadata: { annotations?: Record<string, string> };
      data: Record<string, string>;
    }>(path);
    expect(secret.metadata.annotations?.["example.com/touched-by"]).to.equal("someone");
    expect(Buffer.from(secret.data["tls.crt"]!, "base64").toString()).to.equal(first.cert);
    // The next syncs read the Secret again and rotate on top of what is there now.
    r.requestRotation();
    await r.syncNow();
    await r.syncNow();
    const rotated = await cluster.client.get<{ data: Record<string, string> }>(path);
    expect(Buffer.from(rotated.data["tls.crt"]!, "base64").toString()).to.not.equal(first.cert);
  });

  it("registers the APIServices with the generated CA, and the aggregator marks them Available", async () => {
    const port = await freePort();
    operator = await startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
      client: cluster.client,
      logger: log,
      namespace: ns.name,
      registration: { mode: "local", serviceName: SVC, port, caPropagationMs: 3000, resyncMs: 1000 },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: false,
      shutdownDelayMs: 0,
    });
    await eventually(
      async () => {
        for (const name of [
          "v1beta2.custom.metrics.k8s.io",
          "v1beta1.custom.metrics.k8s.io",
          "v1beta1.external.metrics.k8s.io",
        ]) {
          const a = await apiService(name);
          expect(a.spec.service).to.include({ namespace: ns.name, name: SVC });
          expect(Buffer.from(a.spec.caBundle, "base64").toString()).to.equal(
            operator!.registration!.caBundle,
          );
          expect(a.status?.conditions?.find((c) => c.type === "Available")?.status, name).to.equal("True");
        }
        // Available=True precedes the aggregator's proxy picking the APIService up by a moment.
        await cluster.client.get("/apis/custom.metrics.k8s.io/v1beta2");
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "APIServices Available" },
    );
  });

  it("rotates the CA and the serving certificate under a polling client with zero failed requests", async () => {
    const port = operator!.api.address.port;
    const before = await servedCertificate(port);
    let ok = 0;
    const failures: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        try {
          await cluster.client.get(`/apis/custom.metrics.k8s.io/v1beta2`);
          ok++;
        } catch (err) {
          failures.push(`${new Date().toISOString()} ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    try {
      operator!.registration!.requestRotation();
      await eventually(
        async () => {
          const served = await servedCertificate(port);
          expect(served.fingerprint256).to.not.equal(before.fingerprint256);
          const newCA = new X509Certificate(splitPem(operator!.registration!.caBundle)[0]!);
          expect(
            served.checkIssued(newCA) && served.verify(newCA.publicKey),
            "served leaf signed by the new CA",
          ).to.equal(true);
        },
        { timeoutMs: 30_000, intervalMs: 250, what: "new CA and leaf served" },
      );
      await new Promise((r) => setTimeout(r, 2000)); // keep polling on the new certificate
    } finally {
      polling = false;
      await poller;
    }
    console.log(`      ${ok} requests through the aggregator during the rotation, ${failures.length} failed`);
    expect(failures, failures.join("\n")).to.deep.equal([]);
    expect(ok).to.be.greaterThan(20);
    const bundle = splitPem(
      Buffer.from((await apiService("v1beta2.custom.metrics.k8s.io")).spec.caBundle, "base64").toString(),
    );
    expect(bundle.length, "old and new CA both trusted during the transition").to.equal(2);
  });

  it("keeps no CA key in the Secret: each CA signs one certificate, and an older Secret's key is dropped", async () => {
    const name = "governor-nokey";
    const path = `/api/v1/namespaces/${ns.name}/secrets/${name}-serving-cert`;
    const r = registration({ serviceName: name, mode: "none", leader: true, caPropagationMs: 0 });
    const first = await r.init();
    type Secret = { data: Record<string, string> };
    const keys = async () => Object.keys((await cluster.client.get<Secret>(path)).data).sort();
    expect(await keys()).to.deep.equal(["ca.crt", "tls.crt", "tls.key"]);

    // As a Secret written by an earlier version looks: with the CA's private key.
    await cluster.client.mergePatch(path, {
      data: { "ca.key": Buffer.from("old CA key").toString("base64") },
    });
    await r.syncNow();
    expect(await keys(), "the leader drops the CA key").to.deep.equal(["ca.crt", "tls.crt", "tls.key"]);
    const pem = (s: Secret, k: string) => Buffer.from(s.data[k]!, "base64").toString();
    expect(pem(await cluster.client.get<Secret>(path), "tls.crt"), "the served certificate is kept").to.equal(
      first.cert,
    );

    r.requestRotation();
    await r.syncNow(); // a new CA joins the bundle; its certificate waits beside the served one
    const pending = await cluster.client.get<Secret>(path);
    expect(Object.keys(pending.data).sort()).to.deep.equal([
      "ca.crt",
      "next-tls.crt",
      "next-tls.key",
      "tls.crt",
      "tls.key",
    ]);
    expect(splitPem(pem(pending, "ca.crt"))).to.have.length(2);
    await r.syncNow(); // propagated (0 ms here): the new certificate is served
    const rotated = await cluster.client.get<Secret>(path);
    expect(Object.keys(rotated.data).sort()).to.deep.equal(["ca.crt", "tls.crt", "tls.key"]);
    expect(pem(rotated, "tls.crt")).to.equal(pem(pending, "next-tls.crt"));
    const newCA = new X509Certificate(splitPem(pem(rotated, "ca.crt"))[0]!);
    expect(new X509Certificate(pem(rotated, "tls.crt")).checkIssued(newCA)).to.equal(true);
    await r.uninstall();
  });

  it("leaves an APIService that points at another adapter alone, reports it, and takes it over only when told", async () => {
    await operator?.stop();
    await operator?.registration?.uninstall();
    operator = undefined;
    await cluster.client.createOrReplace(
      "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
      {
        apiVersion: "apiregistration.k8s.io/v1",
        kind: "APIService",
        metadata: { name: "v1beta1.external.metrics.k8s.io" },
        spec: {
          group: "external.metrics.k8s.io",
          version: "v1beta1",
          service: { namespace: "keda", name: "keda-operator-metrics-apiserver", port: 443 },
          insecureSkipTLSVerify: true,
          groupPriorityMinimum: 100,
          versionPriority: 100,
        },
      },
    );
    const port = await freePort();
    operator = await startOperator({
      sourcePolicy: LOOPBACK_SOURCES,
      client: cluster.client,
      logger: log,
      namespace: ns.name,
      registration: { mode: "local", serviceName: SVC, port, resyncMs: 1000 },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: false,
      shutdownDelayMs: 0,
    });
    await eventually(async () => {
      expect(operator!.registration!.conflicts.size).to.equal(1);
      expect((await apiService("v1beta2.custom.metrics.k8s.io")).spec.service.name).to.equal(SVC);
    });
    expect((await apiService("v1beta1.external.metrics.k8s.io")).spec.service.name).to.equal(
      "keda-operator-metrics-apiserver",
    );
    const readyz = await httpsGet(`https://127.0.0.1:${port}/readyz`, {
      ca: operator.registration!.caBundle,
      servername: "localhost",
    });
    expect(readyz.status).to.equal(200);
    expect(readyz.text).to.contain(
      "warning: APIService v1beta1.external.metrics.k8s.io points at Service keda/keda-operator-metrics-apiserver",
    );
    await eventually(async () => {
      const events = await cluster.client.get<{ items: { reason: string }[] }>(
        `/api/v1/namespaces/${ns.name}/events`,
      );
      expect(events.items.map((e) => e.reason)).to.include("APIServiceConflict");
    });

    const removed = await operator.registration!.uninstall();
    expect(removed.filter((r) => r.startsWith("removed apiservice/"))).to.deep.equal([
      "removed apiservice/v1beta2.custom.metrics.k8s.io",
      "removed apiservice/v1beta1.custom.metrics.k8s.io",
    ]);
    expect(
      (await apiService("v1beta1.external.metrics.k8s.io")).spec.service.name,
      "uninstall leaves others' APIServices",
    ).to.equal("keda-operator-metrics-apiserver");
    await operator.stop();

    const takeOver = registration({ takeOver: true, leader: true, port });
    await takeOver.init();
    await takeOver.syncNow();
    expect((await apiService("v1beta1.external.metrics.k8s.io")).spec.service.name).to.equal(SVC);
    await takeOver.uninstall();
    operator = undefined;
  });
});
