import { expect } from "chai";
import "reflect-metadata"; // before @peculiar/x509 (tsyringe)
import { X509Certificate, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import type { IncomingMessage } from "node:http";
import { createCA, issueCertificate, type KeyPair } from "../certs/certs.js";
import {
  AuthenticationError,
  DelegatingAuthenticator,
  type DelegatingAuthenticatorOptions,
  MAX_BEARER_TOKEN_LENGTH,
  TooManyTokenReviewsError,
  type TokenPrecheck,
  type UserInfo,
} from "./authn.js";
import { accessReviewSpec, DelegatingAuthorizer, type SubjectAccessReviewSpec } from "./authz.js";
import { requestInfo } from "./request-info.js";

/** A request as the server hands it over: raw headers, and a TLS socket presenting `cert`. */
function request(opts: { cert?: KeyPair; headers?: [string, string][]; bearer?: string }): IncomingMessage {
  const raw = (opts.headers ?? []).flat();
  if (opts.bearer !== undefined) raw.push("Authorization", `Bearer ${opts.bearer}`);
  const headers: Record<string, string> = {};
  for (const [k, v] of opts.headers ?? []) headers[k.toLowerCase()] = v;
  if (opts.bearer !== undefined) headers.authorization = `Bearer ${opts.bearer}`;
  const der = opts.cert && new X509Certificate(opts.cert.cert).raw;
  const socket = der
    ? { getPeerCertificate: () => ({ raw: der, fingerprint256: "leaf", issuerCertificate: undefined }) }
    : {};
  return { rawHeaders: raw, headers, socket } as unknown as IncomingMessage;
}

/** A TokenReviewer that counts its reviews; `good-*` tokens are valid. */
function countingReviewer() {
  const reviewed: string[] = [];
  return {
    reviewed,
    review: async (token: string): Promise<UserInfo | undefined> => {
      reviewed.push(token);
      return token.startsWith("good-")
        ? { name: `user-${token}`, groups: ["system:serviceaccounts"], extra: {} }
        : undefined;
    },
  };
}

/** Settles `authenticate`: the user, or the error it threw or rejected with. */
async function outcome(authn: DelegatingAuthenticator, req: IncomingMessage): Promise<UserInfo | Error> {
  try {
    return await authn.authenticate(req);
  } catch (err) {
    return err as Error;
  }
}

describe("DelegatingAuthenticator", () => {
  let proxyCA: KeyPair, clientCA: KeyPair, proxy: KeyPair, alice: KeyPair;

  before(async () => {
    [proxyCA, clientCA] = await Promise.all([createCA("front-proxy-ca"), createCA("client-ca")]);
    [proxy, alice] = await Promise.all([
      issueCertificate(proxyCA, { commonName: "front-proxy-client", usage: "client" }),
      issueCertificate(clientCA, { commonName: "alice", organizations: ["dev"], usage: "client" }),
    ]);
  });

  const configured = (reviewer = countingReviewer(), opts: DelegatingAuthenticatorOptions = {}) => {
    const authn = new DelegatingAuthenticator(reviewer, opts);
    authn.setConfig({
      clientCA: clientCA.cert,
      requestHeader: {
        clientCA: proxyCA.cert,
        allowedNames: ["front-proxy-client"],
        usernameHeaders: ["X-Remote-User"],
        groupHeaders: ["X-Remote-Group"],
        extraHeaderPrefixes: ["X-Remote-Extra-"],
      },
    });
    return { authn, reviewer };
  };

  describe("the front proxy's extra headers", () => {
    const hostile = ["__proto__", "Constructor", "hasOwnProperty", "toString", "valueOf"];

    it("records extras named after Object.prototype's members under their lower-cased names, without throwing", async () => {
      const { authn } = configured();
      const user = await authn.authenticate(
        request({
          cert: proxy,
          headers: [
            ["X-Remote-User", "proxied-hpa"],
            ...hostile.map((h): [string, string] => [`X-Remote-Extra-${h}`, `v-${h}`]),
            ["X-Remote-Extra-__proto__", "second"],
            ["X-Remote-Extra-%5F%5Fproto%5F%5F", "escaped"],
          ],
        }),
      );
      expect(user.name).to.equal("proxied-hpa");
      expect(Object.keys(user.extra).sort()).to.deep.equal(
        ["__proto__", "constructor", "hasownproperty", "tostring", "valueof"].sort(),
      );
      expect(user.extra["__proto__"]).to.deep.equal(["v-__proto__", "second", "escaped"]);
      expect(user.extra["constructor"]).to.deep.equal(["v-Constructor"]);
      expect(user.extra["tostring"]).to.deep.equal(["v-toString"]);
      expect(({} as Record<string, unknown>)["v-__proto__"], "Object.prototype untouched").to.equal(
        undefined,
      );
      expect(Object.prototype).to.not.have.property("0");
    });

    it("keeps those extras in the SubjectAccessReview it sends, as JSON on the wire", async () => {
      const { authn } = configured();
      const user = await authn.authenticate(
        request({
          cert: proxy,
          headers: [
            ["X-Remote-User", "proxied-hpa"],
            ["X-Remote-Extra-__proto__", "p"],
            ["X-Remote-Extra-Constructor", "c"],
            ["X-Remote-Extra-Scopes", "s"],
          ],
        }),
      );
      const info = requestInfo(
        "GET",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/http_requests",
      );
      const wire = JSON.parse(JSON.stringify(accessReviewSpec(user, info))) as SubjectAccessReviewSpec;
      expect(Object.hasOwn(wire.extra!, "__proto__"), "__proto__ kept as a key").to.equal(true);
      expect(wire.extra!["__proto__"]).to.deep.equal(["p"]);
      expect(wire.extra!["constructor"]).to.deep.equal(["c"]);
      expect(wire.extra!["scopes"]).to.deep.equal(["s"]);

      const sent: SubjectAccessReviewSpec[] = [];
      const authz = new DelegatingAuthorizer({
        review: async (spec) => {
          sent.push(JSON.parse(JSON.stringify(spec)) as SubjectAccessReviewSpec);
          return { allowed: true, reason: "" };
        },
      });
      expect((await authz.authorize(user, info)).allowed).to.equal(true);
      expect(Object.keys(sent[0]!.extra!).sort()).to.deep.equal(["__proto__", "constructor", "scopes"]);
    });
  });

  describe("bearer tokens", () => {
    it("caches a rejection by the token's hash: the same junk token is reviewed once per TTL", async () => {
      let now = 0;
      const { authn, reviewer } = configured(countingReviewer(), { now: () => now, tokenCacheTtlMs: 10_000 });
      for (let i = 0; i < 5; i++) {
        const r = await outcome(authn, request({ bearer: "junk" }));
        expect(r).to.be.instanceOf(AuthenticationError);
      }
      expect(reviewer.reviewed).to.have.length(1);
      now += 10_001;
      await outcome(authn, request({ bearer: "junk" }));
      expect(reviewer.reviewed, "reviewed again once the TTL is over").to.have.length(2);
    });

    it("reviews at most the burst of unique junk tokens at once and answers the rest 429", async () => {
      let now = 0;
      const { authn, reviewer } = configured(countingReviewer(), {
        now: () => now,
        tokenReviewBurst: 50,
        tokenReviewsPerSecond: 20,
      });
      const results = await Promise.all(
        Array.from({ length: 1000 }, (_, i) => outcome(authn, request({ bearer: `junk-${i}` }))),
      );
      expect(reviewer.reviewed).to.have.length(50);
      expect(results.filter((r) => r instanceof AuthenticationError)).to.have.length(50);
      expect(results.filter((r) => r instanceof TooManyTokenReviewsError)).to.have.length(950);
      now += 1000; // 20 more reviews a second later
      const later = await Promise.all(
        Array.from({ length: 100 }, (_, i) => outcome(authn, request({ bearer: `later-${i}` }))),
      );
      expect(reviewer.reviewed).to.have.length(70);
      expect(later.filter((r) => r instanceof TooManyTokenReviewsError)).to.have.length(80);
    });

    it("never spends the review budget on cached tokens, client certificates or the front proxy", async () => {
      const now = 0;
      const { authn, reviewer } = configured(countingReviewer(), {
        now: () => now,
        tokenReviewBurst: 2,
        tokenReviewsPerSecond: 1,
      });
      expect(await outcome(authn, request({ bearer: "good-a" }))).to.include({ name: "user-good-a" });
      expect(await outcome(authn, request({ bearer: "junk" }))).to.be.instanceOf(AuthenticationError);
      expect(await outcome(authn, request({ bearer: "junk-2" }))).to.be.instanceOf(TooManyTokenReviewsError);
      for (let i = 0; i < 25; i++) {
        expect(await outcome(authn, request({ bearer: "good-a" }))).to.include({ name: "user-good-a" });
        expect(await outcome(authn, request({ bearer: "junk" }))).to.be.instanceOf(AuthenticationError);
        expect(await outcome(authn, request({ cert: alice }))).to.include({ name: "alice" });
        expect(
          await outcome(authn, request({ cert: proxy, headers: [["X-Remote-User", "hpa"]] })),
        ).to.include({ name: "hpa" });
      }
      expect(reviewer.reviewed).to.deep.equal(["good-a", "junk"]);
    });

    it("keeps valid tokens cached however many junk tokens are rejected", async () => {
      const { authn, reviewer } = configured(countingReviewer(), { tokenReviewBurst: 1e6 });
      await authn.authenticate(request({ bearer: "good-hpa" }));
      for (let i = 0; i < 20_000; i++)
        await outcome(authn, request({ bearer: `junk-${i}-${"x".repeat(40)}` }));
      reviewer.reviewed.length = 0;
      await authn.authenticate(request({ bearer: "good-hpa" }));
      expect(reviewer.reviewed, "still cached").to.deep.equal([]);
    });

    it("answers a token longer than 16 KiB 401 without hashing, prechecking or reviewing it", async () => {
      const checked: string[] = [];
      const precheck: TokenPrecheck = { check: async (t) => (checked.push(t), undefined) };
      const { authn, reviewer } = configured(countingReviewer(), { precheck });
      const long = "a".repeat(MAX_BEARER_TOKEN_LENGTH + 1);
      expect(() => authn.authenticate(request({ bearer: long }))).to.throw(AuthenticationError, /too long/);
      expect(await outcome(authn, request({ bearer: "a".repeat(MAX_BEARER_TOKEN_LENGTH) }))).to.be.instanceOf(
        AuthenticationError,
      );
      expect(checked).to.have.length(1);
      expect(reviewer.reviewed).to.have.length(1);
    });

    it("reviews a token whose signature verified within its subject's budget, however many junk tokens spent theirs", async () => {
      const precheck: TokenPrecheck = {
        check: async (t) =>
          t.startsWith("good-minted-")
            ? { subject: "system:serviceaccount:team-a:minter" }
            : t.startsWith("good-")
              ? { subject: "system:serviceaccount:kube-system:hpa" }
              : undefined,
      };
      const { authn, reviewer } = configured(countingReviewer(), {
        precheck,
        tokenReviewBurst: 5,
        tokenReviewsPerSecond: 1,
      });
      for (let i = 0; i < 20; i++) await outcome(authn, request({ bearer: `junk-${i}` }));
      expect(await outcome(authn, request({ bearer: "junk-x" }))).to.be.instanceOf(TooManyTokenReviewsError);
      // The cluster's own token is still reviewed (and its subject's budget is its own).
      expect(await outcome(authn, request({ bearer: "good-hpa" }))).to.deep.include({
        name: "user-good-hpa",
      });
      // One subject minting tokens spends its own budget only.
      const minted = [];
      for (let i = 0; i < 20; i++) minted.push(await outcome(authn, request({ bearer: `good-minted-${i}` })));
      expect(minted.filter((r) => r instanceof TooManyTokenReviewsError).length).to.be.above(0);
      // …and not the HPA's.
      expect(await outcome(authn, request({ bearer: "good-hpa-2" }))).to.deep.include({
        name: "user-good-hpa-2",
      });
      expect(reviewer.reviewed.filter((t) => t.startsWith("junk-"))).to.have.length(5);
    });

    it("answers what the precheck rejects 401 without a review or the budget, and caches it", async () => {
      const checked: string[] = [];
      const precheck: TokenPrecheck = {
        check: async (t) => {
          checked.push(t);
          return t.startsWith("forged") ? "its signature does not verify" : undefined;
        },
      };
      const { authn, reviewer } = configured(countingReviewer(), { precheck, tokenReviewBurst: 1 });
      for (let i = 0; i < 100; i++) {
        const r = await outcome(authn, request({ bearer: `forged-${i}` }));
        expect(r).to.be.instanceOf(AuthenticationError);
        expect((r as Error).message).to.equal("invalid bearer token: its signature does not verify");
      }
      await outcome(authn, request({ bearer: "forged-0" }));
      expect(checked, "the rejection is cached").to.have.length(100);
      expect(reviewer.reviewed).to.deep.equal([]);
      expect(await outcome(authn, request({ bearer: "good-1" })), "the budget is untouched").to.include({
        name: "user-good-1",
      });
    });

    it("reviews a token the precheck cannot judge, or whose precheck fails, and never allows one the review rejects", async () => {
      const precheck: TokenPrecheck = {
        check: async (t) => {
          if (t.includes("boom")) throw new Error("check broke");
          return undefined;
        },
      };
      const { authn, reviewer } = configured(countingReviewer(), { precheck });
      expect(await outcome(authn, request({ bearer: "good-x" }))).to.include({ name: "user-good-x" });
      expect(await outcome(authn, request({ bearer: "boom" }))).to.be.instanceOf(AuthenticationError);
      expect(await outcome(authn, request({ bearer: "good-boom" }))).to.include({ name: "user-good-boom" });
      expect(reviewer.reviewed).to.deep.equal(["good-x", "boom", "good-boom"]);
    });
  });
});

describe("client certificate chains", () => {
  const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keys = () => webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  const der = (pem: string) => new X509Certificate(pem).raw;
  /** A CA certificate for `subject` with `publicKey`, signed by `signer` as `issuer`. */
  const ca = async (
    subject: string,
    issuer: string,
    publicKey: webcrypto.CryptoKey,
    signingKey: webcrypto.CryptoKey,
    serial: string,
  ) =>
    (
      await x509.X509CertificateGenerator.create({
        serialNumber: serial,
        subject,
        issuer,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 86_400_000),
        publicKey,
        signingKey,
        signingAlgorithm: ALG,
        extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
      })
    ).toString("pem");
  /** A request whose TLS socket presents `chain` (leaf first), as Node hands it over. */
  const presenting = (chain: string[]): IncomingMessage => {
    let link: object | undefined;
    for (let i = chain.length - 1; i >= 0; i--)
      link = { raw: der(chain[i]!), fingerprint256: `f${i}`, issuerCertificate: link };
    return {
      rawHeaders: [],
      headers: {},
      socket: { getPeerCertificate: () => link },
    } as unknown as IncomingMessage;
  };

  it("accepts a client certificate through an intermediate, in the order the client sent them", async () => {
    const root = await keys();
    const inter = await keys();
    const rootPem = await ca("CN=root", "CN=root", root.publicKey, root.privateKey, "01");
    const interPem = await ca("CN=inter", "CN=root", inter.publicKey, root.privateKey, "02");
    const leaf = await issueCertificate(
      {
        cert: interPem,
        key: x509.PemConverter.encode(
          await webcrypto.subtle.exportKey("pkcs8", inter.privateKey),
          "PRIVATE KEY",
        ),
      },
      { commonName: "alice", organizations: ["team-a"], usage: "client" },
    );
    const authn = new DelegatingAuthenticator(undefined);
    authn.setConfig({ clientCA: rootPem });
    expect(authn.authenticate(presenting([leaf.cert, interPem]))).to.deep.include({ name: "alice" });
  });

  it("answers a chain of self-issued certificates sharing one key at once, without trying their orderings", async () => {
    // Nine CA certificates that each issue all the others: a search over orderings tried
    // them depth after depth (1.7 s with five, 37 s with seven, on the event loop).
    const shared = await keys();
    const evil = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        ca("CN=evil", "CN=evil", shared.publicKey, shared.privateKey, `1${i}`),
      ),
    );
    const leaf = await issueCertificate(
      {
        cert: evil[0]!,
        key: x509.PemConverter.encode(
          await webcrypto.subtle.exportKey("pkcs8", shared.privateKey),
          "PRIVATE KEY",
        ),
      },
      { commonName: "mallory", usage: "client" },
    );
    const authn = new DelegatingAuthenticator(undefined);
    authn.setConfig({ clientCA: (await createCA("the real root")).cert });
    const t = performance.now();
    expect(() => authn.authenticate(presenting([leaf.cert, ...evil]))).to.throw(
      AuthenticationError,
      /does not chain/,
    );
    expect(performance.now() - t, "ms to refuse it").to.be.below(100);
  });
});
