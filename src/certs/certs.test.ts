import { X509Certificate } from "node:crypto";
import { expect } from "chai";
import { createCA, dnsNamesOf, isSignedBy, issueCertificate, splitPem } from "./certs.js";

describe("certificates", () => {
  it("issues ECDSA P-256 serving certificates with the Service's DNS names, signed by the CA", async () => {
    const ca = await createCA("governor CA");
    const leaf = await issueCertificate(ca, {
      commonName: "governor.gov.svc",
      dnsNames: ["governor.gov.svc", "governor"],
      usage: "server",
    });
    const x = new X509Certificate(leaf.cert);
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).to.equal("prime256v1");
    expect(x.keyUsage).to.deep.equal(["1.3.6.1.5.5.7.3.1"]);
    expect(dnsNamesOf(leaf.cert)).to.deep.equal(["governor.gov.svc", "governor"]);
    expect(await isSignedBy(leaf.cert, ca.cert)).to.equal(true);
    expect(await isSignedBy(leaf.cert, (await createCA("governor CA")).cert)).to.equal(false);
    expect(new X509Certificate(ca.cert).ca).to.equal(true);
  });

  it("ends PEM with a newline, so concatenated CA bundles stay parseable (Go's PEM decoder needs it)", async () => {
    const [a, b] = [await createCA("a"), await createCA("b")];
    expect(a.cert.endsWith("-----END CERTIFICATE-----\n")).to.equal(true);
    expect(a.key.endsWith("-----END PRIVATE KEY-----\n")).to.equal(true);
    expect(splitPem(a.cert + b.cert)).to.have.length(2);
    expect(a.cert + b.cert).to.not.contain("----------");
  });
});
