import { expect } from "chai";
import { pino } from "pino";
import { splitPem, validity, type KeyPair } from "../certs/certs.js";
import type { KubeObject } from "../k8s/client.js";
import { FakeKube } from "../testing/fake-kube.js";
import { Registration, type RegistrationOptions } from "./registration.js";

const NS = "governor-system";
const SECRET = `/api/v1/namespaces/${NS}/secrets/governor-serving-cert`;
const SERVICE = `/api/v1/namespaces/${NS}/services/governor`;
const APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices";
type ApiService = KubeObject & { spec: { caBundle: string; service: { namespace: string; name: string } } };
const unb64 = (s: string) => Buffer.from(s, "base64").toString();

describe("registration on an in-memory apiserver", () => {
  let kube: FakeKube;
  let served: KeyPair[];
  const make = (over: Partial<RegistrationOptions> = {}) =>
    new Registration({
      client: kube,
      logger: pino({ level: "silent" }),
      mode: "cluster",
      namespace: NS,
      serviceName: "governor",
      port: 443,
      apis: ["custom", "external"],
      onServingCertificate: (pair) => served.push(pair),
      isLeader: () => true,
      caPropagationMs: 0,
      ...over,
    });
  beforeEach(() => {
    kube = new FakeKube();
    served = [];
  });

  it("gives two replicas that start at once one CA between them", async () => {
    const [a, b] = await Promise.all([make().init(), make().init()]);
    expect(a.cert).to.equal(b.cert);
    expect(kube.paths(`/api/v1/namespaces/${NS}/secrets/`)).to.deep.equal([SECRET]);
    const secret = kube.peek<{ data: Record<string, string> }>(SECRET)!;
    expect(Object.keys(secret.data).sort(), "no CA key kept").to.deep.equal(["ca.crt", "tls.crt", "tls.key"]);
  });

  it("as leader, registers the Service and every APIService with its CA as caBundle", async () => {
    const reg = make();
    await reg.init();
    await reg.syncNow();
    const names = kube.paths(APISERVICES).map((p) => p.slice(APISERVICES.length + 1));
    expect(names).to.deep.equal([
      "v1beta1.custom.metrics.k8s.io",
      "v1beta1.external.metrics.k8s.io",
      "v1beta2.custom.metrics.k8s.io",
    ]);
    for (const p of kube.paths(APISERVICES))
      expect(unb64(kube.peek<ApiService>(p)!.spec.caBundle)).to.equal(reg.caBundle);
    const service = kube.peek<{ spec: { type: string; ports: { port: number; targetPort: number }[] } }>(
      SERVICE,
    )!;
    expect(service.spec.type).to.equal("ClusterIP");
    expect(service.spec.ports[0]).to.include({ port: 443, targetPort: 6443 });
  });

  it("as follower, only reads", async () => {
    const reg = make({ isLeader: () => false });
    await make().init(); // the leader's Secret
    const before = kube.calls.length;
    await reg.init();
    await reg.syncNow();
    expect(kube.calls.slice(before).every((c) => c.method === "get")).to.equal(true);
    expect(kube.paths(APISERVICES)).to.deep.equal([]);
  });

  it("leaves another adapter's APIService alone and says so; takes it over only when told to", async () => {
    const foreign = `${APISERVICES}/v1beta1.external.metrics.k8s.io`;
    kube.seed(foreign, {
      spec: { service: { namespace: "keda", name: "keda-operator-metrics-apiserver" }, caBundle: "a2VkYQ==" },
    });
    const polite = make();
    await polite.init();
    await polite.syncNow();
    expect(kube.peek<ApiService>(foreign)!.spec.service.name).to.equal("keda-operator-metrics-apiserver");
    expect(polite.conflicts.get("v1beta1.external.metrics.k8s.io")).to.match(
      /points at Service keda\/keda-operator-metrics-apiserver/,
    );
    const bold = make({ takeOver: true });
    await bold.init();
    await bold.syncNow();
    expect(kube.peek<ApiService>(foreign)!.spec.service).to.deep.include({ namespace: NS, name: "governor" });
  });

  it("rotates by trusting a new CA first and serving its certificate on the next sync", async () => {
    const reg = make();
    const first = await reg.init();
    await reg.syncNow();
    reg.requestRotation();
    await reg.syncNow();
    expect(splitPem(reg.caBundle), "old and new CA trusted").to.have.length(2);
    expect(served, "still serving the old certificate").to.deep.equal([]);
    for (const p of kube.paths(APISERVICES))
      expect(splitPem(unb64(kube.peek<ApiService>(p)!.spec.caBundle))).to.have.length(2);
    await reg.syncNow();
    expect(served).to.have.length(1);
    expect(served[0]!.cert).to.not.equal(first.cert);
    expect(validity(served[0]!.cert).notAfter.getTime()).to.be.greaterThan(Date.now());
    const secret = kube.peek<{ data: Record<string, string> }>(SECRET)!;
    expect(unb64(secret.data["tls.crt"]!)).to.equal(served[0]!.cert);
    expect(secret.data["next-tls.crt"]).to.equal(undefined);
  });

  it("never overwrites a Secret another writer changed since it was read: it reads again next time", async () => {
    const reg = make();
    await reg.init();
    reg.requestRotation();
    // Someone else writes the Secret just after the sync has read it.
    const get = kube.get.bind(kube);
    let armed = true;
    kube.get = async <T>(path: string) => {
      const read = await get<KubeObject>(path);
      if (armed && path === SECRET) {
        armed = false;
        kube.seed(SECRET, {
          ...read,
          metadata: { ...read.metadata, annotations: { "someone.example/was": "here" } },
        });
      }
      return read as T;
    };
    let err: unknown;
    await reg.syncNow().catch((e: unknown) => (err = e));
    expect((err as { statusCode?: number }).statusCode).to.equal(409);
    expect(kube.peek<KubeObject>(SECRET)!.metadata!.annotations).to.deep.equal({
      "someone.example/was": "here",
    });
    await reg.syncNow(); // reads the other writer's version, then rotates on it
    expect(kube.peek<{ data: Record<string, string> }>(SECRET)!.data["next-tls.crt"]).to.be.a("string");
  });

  it("uninstalls its APIServices, Service and Secret, and nobody else's APIService", async () => {
    const reg = make({ apis: ["custom"] });
    await reg.init();
    await reg.syncNow();
    const foreign = `${APISERVICES}/v1beta1.external.metrics.k8s.io`;
    kube.seed(foreign, { spec: { service: { namespace: "keda", name: "keda" } } });
    const removed = await make({ apis: ["custom", "external"] }).uninstall();
    expect(removed.sort()).to.deep.equal([
      "apiservice/v1beta1.custom.metrics.k8s.io",
      "apiservice/v1beta2.custom.metrics.k8s.io",
      "secret/governor-serving-cert",
      "service/governor",
    ]);
    expect(kube.paths()).to.deep.equal([foreign]);
  });
});
