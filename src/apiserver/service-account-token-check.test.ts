import { expect } from "chai";
import { randomBytes, type JsonWebKey } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import {
  AuthenticationError,
  DelegatingAuthenticator,
  TooManyTokenReviewsError,
  type UserInfo,
} from "./authn.js";
import { KubeApiError } from "../k8s/client.js";
import type { ServiceAccountKeySource, ServiceAccountKeys } from "./service-account-keys.js";
import { ServiceAccountTokenCheck } from "./service-account-token-check.js";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const HPA = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

interface SigningKey {
  kid: string;
  alg: string;
  jwk: JsonWebKey;
  privateKey: CryptoKey;
}

async function signingKey(kid: string, alg: "RS256" | "ES256" = "RS256"): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" }, privateKey };
}

/** The published keys, as the apiserver would serve them; counts the reads. */
class FakeKeySource implements ServiceAccountKeySource {
  reads = 0;
  keys: JsonWebKey[] = [];
  failWith?: Error;
  async read(): Promise<ServiceAccountKeys> {
    this.reads++;
    if (this.failWith) throw this.failWith;
    return { issuer: ISSUER, keys: [...this.keys] };
  }
}

/** A TokenReviewer that counts its reviews and accepts every token it is asked about with `sub` HPA. */
function countingReviewer() {
  const reviewed: string[] = [];
  return {
    reviewed,
    review: async (token: string): Promise<UserInfo | undefined> => {
      reviewed.push(token);
      const payload = token.split(".")[1];
      const sub = payload
        ? (JSON.parse(Buffer.from(payload, "base64url").toString()) as { sub?: string }).sub
        : "";
      return sub === HPA ? { name: HPA, groups: ["system:serviceaccounts"], extra: {} } : undefined;
    },
  };
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

/** A JWT-shaped token that was never signed by anyone: header and payload as given, a random signature. */
function forged(header: object, payload: object): string {
  return `${b64(header)}.${b64(payload)}.${randomBytes(256).toString("base64url")}`;
}

const bearer = (token: string) =>
  ({
    headers: { authorization: `Bearer ${token}` },
    rawHeaders: [],
    socket: {},
  }) as unknown as IncomingMessage;

async function outcome(authn: DelegatingAuthenticator, token: string): Promise<UserInfo | Error> {
  try {
    return await authn.authenticate(bearer(token));
  } catch (err) {
    return err as Error;
  }
}

describe("service-account tokens checked against the issuer's keys before a TokenReview", function () {
  this.timeout(30_000);
  let key: SigningKey, otherKey: SigningKey, ecKey: SigningKey;
  let now: number;
  let source: FakeKeySource;
  let reviewer: ReturnType<typeof countingReviewer>;
  let check: ServiceAccountTokenCheck;
  let authn: DelegatingAuthenticator;
  const logged: { level: string; msg: string }[] = [];
  const seconds = () => Math.floor(now / 1000);

  before(async () => {
    [key, otherKey, ecKey] = await Promise.all([
      signingKey("k1"),
      signingKey("k1"),
      signingKey("e1", "ES256"),
    ]);
  });

  beforeEach(() => {
    now = Date.parse("2030-06-01T12:00:00Z");
    source = new FakeKeySource();
    source.keys = [key.jwk];
    reviewer = countingReviewer();
    logged.length = 0;
    check = new ServiceAccountTokenCheck(source, {
      now: () => now,
      logger: {
        warn: (_: unknown, msg?: string) => void logged.push({ level: "warn", msg: msg ?? "" }),
        info: (_: unknown, msg?: string) => void logged.push({ level: "info", msg: msg ?? "" }),
      },
    });
    authn = new DelegatingAuthenticator(reviewer, { precheck: check, now: () => now });
  });

  /** A token as kube-apiserver issues it (valid for an hour from now unless told otherwise). */
  const sign = (k: SigningKey, claims: { sub?: string; iss?: string; exp?: number; nbf?: number } = {}) =>
    new SignJWT({ "kubernetes.io": { namespace: "kube-system" } })
      .setProtectedHeader({ alg: k.alg, kid: k.kid })
      .setIssuer(claims.iss ?? ISSUER)
      .setSubject(claims.sub ?? HPA)
      .setAudience("https://kubernetes.default.svc.cluster.local")
      .setIssuedAt(seconds())
      .setNotBefore(claims.nbf ?? seconds())
      .setExpirationTime(claims.exp ?? seconds() + 3600)
      .sign(k.privateKey);

  it("refuses 1,000 unique forged tokens with the cluster's issuer without a single TokenReview", async () => {
    const tokens = [
      ...Array.from({ length: 500 }, (_, i) =>
        forged({ alg: "RS256", kid: "k1" }, { iss: ISSUER, sub: `${HPA}-${i}`, exp: seconds() + 3600 }),
      ),
      // signed for real, with a key of the right kid that the apiserver never had
      ...(await Promise.all(Array.from({ length: 500 }, (_, i) => sign(otherKey, { sub: `${HPA}-${i}` })))),
    ];
    const results = await Promise.all(tokens.map((t) => outcome(authn, t)));
    expect(reviewer.reviewed).to.have.length(0);
    expect(results.every((r) => r instanceof AuthenticationError)).to.equal(true);
    expect((results[0] as Error).message).to.match(/signature does not verify/);
    expect(source.reads, "the keys are read once").to.equal(1);
  });

  it("sends a valid token to exactly one TokenReview, then answers it from the cache", async () => {
    const token = await sign(key);
    for (let i = 0; i < 10; i++) expect(await outcome(authn, token)).to.include({ name: HPA });
    expect(reviewer.reviewed).to.deep.equal([token]);
  });

  it("leaves the verdict on a token that verifies to the TokenReview", async () => {
    const token = await sign(key, { sub: "system:serviceaccount:shop:deleted" });
    expect(await outcome(authn, token)).to.be.instanceOf(AuthenticationError);
    expect(reviewer.reviewed).to.deep.equal([token]);
  });

  it("refuses an expired token, or one not valid yet, at once with no review; within the apiserver's 60 s leeway it is reviewed", async () => {
    const expired = await sign(key, { exp: seconds() - 3600 });
    const early = await sign(key, { nbf: seconds() + 3600 });
    const r = await outcome(authn, expired);
    expect(r).to.be.instanceOf(AuthenticationError);
    expect((r as Error).message).to.match(/expired/);
    expect(((await outcome(authn, early)) as Error).message).to.match(/not valid yet/);
    expect(reviewer.reviewed).to.have.length(0);
    const justExpired = await sign(key, { exp: seconds() - 30 });
    expect(await outcome(authn, justExpired)).to.include({ name: HPA });
    expect(reviewer.reviewed).to.deep.equal([justExpired]);
  });

  it("reads the keys again for an unknown kid at most once per 30 s, however many requests", async () => {
    await outcome(authn, await sign(key)); // keys read
    expect(source.reads).to.equal(1);
    now += 31_000;
    const junkKids = Array.from({ length: 1000 }, (_, i) =>
      forged({ alg: "RS256", kid: `junk-${i}` }, { iss: ISSUER, sub: HPA, exp: seconds() + 3600 }),
    );
    const results = await Promise.all(junkKids.map((t) => outcome(authn, t)));
    expect(source.reads, "one more read for all of them").to.equal(2);
    expect(results.every((r) => r instanceof AuthenticationError)).to.equal(true);
    expect(reviewer.reviewed).to.have.length(1); // only the valid token above
    // Five minutes of junk kids, ten a second: one read per 30 s at most.
    for (let s = 0; s < 300; s++) {
      now += 1000;
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          outcome(
            authn,
            forged({ alg: "RS256", kid: `more-${s}-${i}` }, { iss: ISSUER, exp: seconds() + 60 }),
          ),
        ),
      );
    }
    expect(source.reads).to.be.at.most(2 + 10);
    expect(reviewer.reviewed).to.have.length(1);
  });

  it("finds a key rotated in: a token with a kid it has not seen reads the keys again", async () => {
    await outcome(authn, await sign(key));
    const rotated = await signingKey("k2");
    source.keys = [key.jwk, rotated.jwk];
    now += 31_000;
    const token = await sign(rotated);
    expect(await outcome(authn, token)).to.include({ name: HPA });
    expect(source.reads).to.equal(2);
    expect(reviewer.reviewed).to.have.length(2);
  });

  it("refreshes the keys every 10 minutes", async () => {
    await outcome(authn, await sign(key));
    now += 9 * 60_000;
    await outcome(authn, await sign(key, { sub: "a" }));
    expect(source.reads).to.equal(1);
    now += 60_000;
    await outcome(authn, await sign(key, { sub: "b" }));
    await new Promise((r) => setImmediate(r));
    expect(source.reads).to.equal(2);
  });

  it("verifies ECDSA keys too, and refuses a token whose algorithm its key cannot make (none, HMAC, ES256 on RSA)", async () => {
    source.keys = [key.jwk, ecKey.jwk];
    const ec = await sign(ecKey);
    expect(await outcome(authn, ec)).to.include({ name: HPA });
    const payload = { iss: ISSUER, sub: HPA, exp: seconds() + 3600 };
    const hmacWithPublicKey = await new SignJWT(payload)
      .setProtectedHeader({ alg: "HS256", kid: "k1" })
      .sign(Buffer.from(JSON.stringify(key.jwk)));
    const confused = [
      hmacWithPublicKey,
      forged({ alg: "none", kid: "k1" }, payload),
      forged({ alg: "ES256", kid: "k1" }, payload),
      forged({ alg: "RS256", kid: "e1" }, payload),
    ];
    for (const t of confused) {
      const r = await outcome(authn, t);
      expect(r, t.slice(0, 40)).to.be.instanceOf(AuthenticationError);
      expect((r as Error).message).to.match(/algorithm does not fit its key/);
    }
    expect(reviewer.reviewed).to.deep.equal([ec]);
  });

  it("leaves tokens it cannot judge to the TokenReview: opaque, another issuer, no kid, not JSON", async () => {
    const other = await signingKey("k1");
    const tokens = [
      "opaque-token",
      await sign(other, { iss: "https://oidc.example.com" }),
      forged({ alg: "RS256" }, { iss: ISSUER, sub: HPA }),
      `${Buffer.from("{not json").toString("base64url")}.${b64({ iss: ISSUER })}.abc`,
      forged({ alg: "RS256", kid: "k1" }, ["not", "an", "object"]),
    ];
    for (const t of tokens) await outcome(authn, t);
    expect(reviewer.reviewed).to.deep.equal(tokens);
  });

  it("keeps opaque junk to the review budget: 1,000 unique tokens make at most 50 reviews", async () => {
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => outcome(authn, `junk-${i}`)));
    expect(reviewer.reviewed).to.have.length(50);
    expect(results.filter((r) => r instanceof TooManyTokenReviewsError)).to.have.length(950);
  });

  it("falls back to TokenReview alone while the keys cannot be read, logs that once, and retries at most every 30 s", async () => {
    source.failWith = new KubeApiError(403, "Forbidden", "GET /openid/v1/jwks: 403 forbidden");
    const forgedToken = (i: number) =>
      forged({ alg: "RS256", kid: "k1" }, { iss: ISSUER, sub: `${HPA}-${i}`, exp: seconds() + 3600 });
    for (let i = 0; i < 20; i++) {
      expect(await outcome(authn, forgedToken(i))).to.be.instanceOf(AuthenticationError); // the review said no
      now += 1000;
    }
    expect(reviewer.reviewed).to.have.length(20);
    expect(source.reads).to.equal(1);
    expect(logged.filter((l) => l.level === "warn")).to.have.length(1);
    now += 30_000;
    for (let i = 20; i < 40; i++) await outcome(authn, forgedToken(i));
    expect(source.reads).to.equal(2);
    expect(
      logged.filter((l) => l.level === "warn"),
      "still logged once",
    ).to.have.length(1);
    source.failWith = undefined;
    now += 30_000;
    for (let i = 40; i < 60; i++) await outcome(authn, forgedToken(i));
    expect(source.reads).to.equal(3);
    expect(reviewer.reviewed, "refused locally once the keys are read").to.have.length(40);
    expect(logged.map((l) => l.level)).to.deep.equal(["warn", "info"]);
  });

  it("keeps the keys it has when a later read fails", async () => {
    await outcome(authn, await sign(key));
    source.failWith = new Error("connect ECONNREFUSED");
    now += 11 * 60_000;
    await outcome(authn, await sign(key, { sub: "x" }));
    await new Promise((r) => setImmediate(r));
    expect(source.reads).to.equal(2);
    const r = await outcome(authn, forged({ alg: "RS256", kid: "k1" }, { iss: ISSUER, exp: seconds() + 60 }));
    expect((r as Error).message).to.match(/signature does not verify/);
  });

  it("reads the keys ahead of the first token when asked to", async () => {
    await check.prefetch();
    expect(source.reads).to.equal(1);
    expect(await check.check(await sign(key))).to.have.property("subject");
    expect(source.reads).to.equal(1);
  });
});
