import { expect } from "chai";
import { pino } from "pino";
import { splitPem, validity, type KeyPair } from "../certs/certs.js";
import type { KubeObject } from "../k8s/client.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { REPLACED_ANNOTATION } from "../manifests/api-service.js";
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
  const make = ({ leader = true, ...over }: Partial<RegistrationOptions> & { leader?: boolean } = {}) => {
    const registration = new Registration({
      client: kube,
      logger: pino({ level: "silent" }),
      mode: "cluster",
      namespace: NS,
      serviceName: "governor",
      port: 443,
      apis: ["custom", "external"],
      onServingCertificate: (pair) => served.push(pair),
      caPropagationMs: 0,
      ...over,
    });
    if (leader) void registration.leaderPart.start();
    return registration;
  };
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
    const reg = make({ leader: false });
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

  it("removes its own APIService of an API it no longer serves (history turned off), never another's", async () => {
    const on = make({ apis: ["custom", "external", "history"] });
    await on.init();
    await on.syncNow();
    expect(kube.peek(`${APISERVICES}/v1alpha1.history.governor.dev`)).to.not.equal(undefined);
    await on.stop();
    const off = make();
    await off.init();
    await off.syncNow();
    expect(kube.peek(`${APISERVICES}/v1alpha1.history.governor.dev`)).to.equal(undefined);
    expect(kube.paths(APISERVICES)).to.have.length(3);
    // Another Service's APIService of a group Governor does not serve is left alone.
    await kube.create(APISERVICES, {
      apiVersion: "apiregistration.k8s.io/v1",
      kind: "APIService",
      metadata: { name: "v1alpha1.history.governor.dev" },
      spec: {
        group: "history.governor.dev",
        version: "v1alpha1",
        service: { namespace: "other", name: "x" },
      },
    });
    await off.syncNow();
    expect(kube.peek(`${APISERVICES}/v1alpha1.history.governor.dev`)).to.not.equal(undefined);
  });

  it("uninstalls its APIServices, Service and Secret, and nobody else's APIService", async () => {
    const reg = make({ apis: ["custom"] });
    await reg.init();
    await reg.syncNow();
    const foreign = `${APISERVICES}/v1beta1.external.metrics.k8s.io`;
    kube.seed(foreign, { spec: { service: { namespace: "keda", name: "keda" } } });
    const removed = await make({ apis: ["custom", "external"] }).uninstall();
    expect(removed.sort()).to.deep.equal([
      "removed apiservice/v1beta1.custom.metrics.k8s.io",
      "removed apiservice/v1beta2.custom.metrics.k8s.io",
      "removed secret/governor-serving-cert",
      "removed service/governor",
    ]);
    expect(kube.paths()).to.deep.equal([foreign]);
  });

  describe("in front of an upstream adapter (--forward-external)", () => {
    const EXTERNAL = `${APISERVICES}/v1beta1.external.metrics.k8s.io`;
    const KEDA_SERVICE = "/api/v1/namespaces/keda/services/keda-operator-metrics-apiserver";
    const KEDA = { namespace: "keda", name: "keda-operator-metrics-apiserver", port: 443 };
    const kedaApiService = () =>
      ({
        apiVersion: "apiregistration.k8s.io/v1",
        kind: "APIService",
        metadata: {
          name: "v1beta1.external.metrics.k8s.io",
          labels: { "app.kubernetes.io/part-of": "keda" },
        },
        spec: {
          group: "external.metrics.k8s.io",
          version: "v1beta1",
          service: KEDA,
          caBundle: Buffer.from("KEDA CA").toString("base64"),
          groupPriorityMinimum: 100,
          versionPriority: 100,
        },
      }) as KubeObject;
    type Kept = KubeObject & {
      spec: ApiService["spec"] & { caBundle?: string };
      metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
    };
    let trust: unknown[];
    const forwarding = (over: Partial<RegistrationOptions> = {}) =>
      make({
        forward: { external: KEDA },
        onUpstreamTrust: (api, t) => trust.push([api, t]),
        ...over,
      });
    beforeEach(() => {
      trust = [];
      kube.seed(EXTERNAL, kedaApiService());
      kube.seed(KEDA_SERVICE, { apiVersion: "v1", kind: "Service", metadata: KEDA });
    });

    it("takes over the APIService of exactly the upstream it names, without --take-over-apiservices, keeping it in an annotation", async () => {
      const reg = forwarding();
      await reg.init();
      await reg.syncNow();
      const held = kube.peek<Kept>(EXTERNAL)!;
      expect(held.spec.service).to.deep.include({ namespace: NS, name: "governor" });
      const kept = JSON.parse(held.metadata.annotations![REPLACED_ANNOTATION]!) as Kept;
      expect(kept.spec.service).to.deep.equal(KEDA);
      expect(kept.labels).to.deep.equal({ "app.kubernetes.io/part-of": "keda" });
      expect(reg.conflicts.size).to.equal(0);
      expect(trust[0], "the upstream's CA, from its APIService").to.deep.equal([
        "external",
        { caBundle: "KEDA CA", insecureSkipTLSVerify: false },
      ]);
      // Later syncs (every replica) still find the upstream's CA: in the annotation.
      trust = [];
      await reg.syncNow();
      expect(trust).to.deep.equal([["external", { caBundle: "KEDA CA", insecureSkipTLSVerify: false }]]);
    });

    it("takes over the APIService of a MetricsUpstream's Service too, and gives it back only once no upstream of that API is left", async () => {
      let upstreams: ReturnType<NonNullable<RegistrationOptions["upstreams"]>> = {
        external: [{ ref: KEDA, usable: true }],
      };
      const reg = make({ upstreams: () => upstreams });
      await reg.init();
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.include({ namespace: NS, name: "governor" });
      // Not known for a moment (a replica starting, a slow apiserver): nothing is given back.
      upstreams = undefined;
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.include({ namespace: NS, name: "governor" });
      // Its spec broken: held as it is, neither given back nor routed to.
      upstreams = { external: [{ ref: KEDA, usable: false }] };
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.include({ namespace: NS, name: "governor" });
      upstreams = {};
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.equal(KEDA);
    });

    it("leaves another adapter's APIService alone, without a conflict, until the MetricsUpstreams are known; never takes over for a spec it cannot use", async () => {
      let upstreams: ReturnType<NonNullable<RegistrationOptions["upstreams"]>> = undefined;
      const reg = make({ upstreams: () => upstreams });
      await reg.init();
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.equal(KEDA);
      expect(reg.conflicts.size).to.equal(0);
      upstreams = { external: [{ ref: KEDA, usable: false }] };
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.equal(KEDA);
      expect([...reg.conflicts.values()][0]).to.match(/leaves it alone/);
    });

    it("leaves an APIService that points at another Service than the named upstream alone", async () => {
      const reg = forwarding({ forward: { external: { ...KEDA, name: "other-adapter" } } });
      await reg.init();
      await reg.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.equal(KEDA);
      expect([...reg.conflicts.values()][0]).to.match(/leaves it alone .*--forward-external/);
    });

    it("keeps the annotation when it rewrites its own APIService (a rotated CA)", async () => {
      const reg = forwarding();
      await reg.init();
      await reg.syncNow();
      const before = kube.peek<Kept>(EXTERNAL)!.metadata.annotations![REPLACED_ANNOTATION];
      reg.requestRotation();
      await reg.syncNow();
      const after = kube.peek<Kept>(EXTERNAL)!;
      expect(unb64(after.spec.caBundle)).to.equal(reg.caBundle);
      expect(after.metadata.annotations![REPLACED_ANNOTATION]).to.equal(before);
    });

    it("uninstall gives the upstream its APIService back as it was", async () => {
      const reg = forwarding();
      await reg.init();
      await reg.syncNow();
      const done = await reg.uninstall();
      expect(done).to.include(
        "gave back apiservice/v1beta1.external.metrics.k8s.io to Service keda/keda-operator-metrics-apiserver",
      );
      const back = kube.peek<Kept>(EXTERNAL)!;
      expect(back.spec).to.deep.equal(kedaApiService().spec);
      expect(back.metadata.labels).to.deep.equal({ "app.kubernetes.io/part-of": "keda" });
      expect(back.metadata.annotations ?? {}).to.not.have.property(REPLACED_ANNOTATION);
    });

    it("uninstall deletes rather than gives back when the upstream's Service is gone (it would break discovery)", async () => {
      const reg = forwarding();
      await reg.init();
      await reg.syncNow();
      await kube.delete(KEDA_SERVICE);
      const done = await reg.uninstall();
      expect(done).to.include("removed apiservice/v1beta1.external.metrics.k8s.io");
      expect(kube.peek(EXTERNAL)).to.equal(undefined);
    });

    it("turning forwarding off gives the APIService back on the next sync", async () => {
      const reg = forwarding();
      await reg.init();
      await reg.syncNow();
      const off = make();
      await off.init();
      await off.syncNow();
      expect(kube.peek<Kept>(EXTERNAL)!.spec.service).to.deep.equal(KEDA);
      expect(off.conflicts.size, "then it is someone else's again").to.equal(0);
      await off.syncNow();
      expect([...off.conflicts.keys()]).to.deep.equal(["v1beta1.external.metrics.k8s.io"]);
    });
  });
});
