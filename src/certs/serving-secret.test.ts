import { expect } from "chai";
import { isSignedBy, splitPem, validity } from "./certs.js";
import {
  type ServingSecret,
  newServingSecret,
  nextRotationStep,
  parseServingSecret,
  servingSecretObject,
  withNewCA,
} from "./serving-secret.js";

const DAY = 86_400_000;
const NAMES = ["governor.gov.svc", "governor.gov.svc.cluster.local"];
const id = { serviceName: "governor", namespace: "gov", dnsNames: NAMES };

describe("serving-certificate Secret", () => {
  let cur: ServingSecret;
  let issuedAt = 0;
  before(async () => {
    cur = await newServingSecret(id);
    issuedAt = validity(cur.cert).notBefore.getTime();
  });
  type Over = Partial<Parameters<typeof nextRotationStep>[1]> & { afterDays?: number };
  const step = (d: ServingSecret, { afterDays = 1, ...over }: Over = {}) =>
    nextRotationStep(d, {
      now: issuedAt + afterDays * DAY,
      caPropagationMs: 15_000,
      dnsNames: NAMES,
      force: false,
      ...over,
    });
  /** Whether `cert` verifies against one of the CAs in `bundle`. */
  const trusted = async (cert: string, bundle: string) =>
    (await Promise.all(splitPem(bundle).map((ca) => isSignedBy(cert, ca)))).some(Boolean);

  it("issues a leaf for the Service's names signed by a CA whose key is not kept", async () => {
    expect(await trusted(cur.cert, cur.caBundle)).to.equal(true);
    expect(JSON.stringify(cur).match(/BEGIN [A-Z ]*PRIVATE KEY/g), "only the leaf's key").to.have.length(1);
    expect(Object.keys(cur).sort()).to.deep.equal(["caBundle", "cert", "key"]);
  });

  const cases: [string, () => ServingSecret, Over, string][] = [
    ["keeps a fresh certificate", () => cur, {}, "none"],
    ["rotates on demand", () => cur, { force: true }, "rotate"],
    ["rotates when a third of the leaf's life is left", () => cur, { afterDays: 250 }, "rotate"],
    ["keeps it with more than a third left", () => cur, { afterDays: 240 }, "none"],
    [
      "rotates when the Service needs a name the leaf lacks",
      () => cur,
      { dnsNames: [...NAMES, "localhost"] },
      "rotate",
    ],
    ["drops a CA key an older version kept", () => ({ ...cur, legacyCaKey: true }), {}, "drop-ca-key"],
  ];
  for (const [what, d, over, expected] of cases)
    it(what, () => expect(step(d(), over).step).to.equal(expected));

  it("serves a new CA's leaf only after the CA has had time to reach every caBundle", async () => {
    const now = issuedAt + DAY;
    const rotated = withNewCA(cur, await newServingSecret(id), now);
    expect(step(rotated, { now: now + 14_000 }).step).to.equal("wait");
    const promoted = step(rotated, { now: now + 15_000 });
    expect(promoted.step).to.equal("promote");
    if (promoted.step !== "promote") return;
    expect(promoted.secret).to.deep.equal({
      caBundle: rotated.caBundle,
      cert: rotated.next!.cert,
      key: rotated.next!.key,
    });
    expect(await isSignedBy(promoted.secret.cert, splitPem(promoted.secret.caBundle)[0]!)).to.equal(true);
  });

  it("trusts the new CA beside the still-valid old one, and stops trusting CAs that expired", async () => {
    const now = issuedAt + DAY;
    // The next CA lives longer than the first, so it is still valid when the first expires.
    const rotated = withNewCA(cur, await newServingSecret({ ...id, leafDays: 730 }), now);
    expect(splitPem(rotated.caBundle)).to.have.length(2);
    expect(await trusted(cur.cert, rotated.caBundle), "the leaf in use still verifies").to.equal(true);
    const later = withNewCA(
      rotated,
      await newServingSecret(id),
      validity(cur.caBundle).notAfter.getTime() + 1,
    );
    expect(splitPem(later.caBundle)).to.have.length(2); // the newest, the previous; the expired one gone
    expect(later.caBundle).to.not.include(splitPem(cur.caBundle)[0]!);
  });

  it("reads back what it writes, including a waiting leaf and when its CA was added", async () => {
    const rotated = withNewCA(cur, await newServingSecret(id), issuedAt + DAY);
    const obj = servingSecretObject({ namespace: "gov", name: "governor-serving-cert" }, rotated);
    expect(obj.type).to.equal("kubernetes.io/tls");
    expect(parseServingSecret(obj)).to.deep.equal(rotated);
  });

  it("reads a Secret with a CA key as one to clean up, and one missing its key as none at all", () => {
    const obj = servingSecretObject({ namespace: "gov", name: "s" }, cur);
    expect(parseServingSecret({ data: { ...obj.data, "ca.key": "eA==" } })?.legacyCaKey).to.equal(true);
    const { "tls.key": _key, ...noKey } = obj.data;
    expect(parseServingSecret({ data: noKey })).to.equal(undefined);
  });
});
