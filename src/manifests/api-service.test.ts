import { expect } from "chai";
import { readFileSync } from "node:fs";
import { buildApiServices, buildLocalService, serviceDnsNames } from "./api-service.js";

describe("APIService builders", () => {
  it("registers all three group-versions with a caBundle, and never skips TLS verification", () => {
    const objs = buildApiServices({
      service: { namespace: "gov", name: "governor", port: 443 },
      caBundle: "PEM",
    });
    expect(objs.map((o) => o.metadata.name)).to.deep.equal([
      "v1beta2.custom.metrics.k8s.io",
      "v1beta1.custom.metrics.k8s.io",
      "v1beta1.external.metrics.k8s.io",
    ]);
    for (const o of objs) {
      expect(o.spec.caBundle).to.equal(Buffer.from("PEM").toString("base64"));
      expect(o.spec).to.not.have.property("insecureSkipTLSVerify");
      expect(o.spec.service).to.deep.equal({ namespace: "gov", name: "governor", port: 443 });
    }
  });

  it("can register custom metrics only, to sit beside KEDA", () => {
    const objs = buildApiServices({
      service: { namespace: "gov", name: "g", port: 1 },
      caBundle: "x",
      apis: ["custom"],
    });
    expect(objs.every((o) => o.spec.group === "custom.metrics.k8s.io")).to.equal(true);
  });

  it("registers Governor's history group when samples are kept, and the RBAC may update it by name", () => {
    const objs = buildApiServices({
      service: { namespace: "gov", name: "g", port: 443 },
      caBundle: "x",
      apis: ["custom", "external", "history"],
    });
    const history = objs.find((o) => o.spec.group === "history.governor.dev");
    expect(history?.metadata.name).to.equal("v1alpha1.history.governor.dev");
    expect(history?.spec.version).to.equal("v1alpha1");
    const role = readFileSync(new URL("../../config/rbac/cluster-role.yaml", import.meta.url), "utf8");
    for (const o of objs) expect(role).to.contain(`"${o.metadata.name}"`);
  });

  it("points a local Service at localhost and names every DNS form of the Service", () => {
    expect(buildLocalService({ namespace: "gov", name: "g", port: 8443 }).spec).to.deep.equal({
      type: "ExternalName",
      externalName: "localhost",
      ports: [{ name: "https", port: 8443, protocol: "TCP" }],
    });
    expect(serviceDnsNames("gov", "g")).to.deep.equal(["g", "g.gov", "g.gov.svc", "g.gov.svc.cluster.local"]);
  });
});
