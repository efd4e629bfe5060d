/**
 * A local check of service-account tokens before they cost a TokenReview, so that a flood
 * of forged tokens costs the apiserver nothing: a bearer token shaped as a JWT (three
 * base64url parts, a JSON header with `alg` and `kid`) whose unverified `iss` is the
 * cluster's service-account issuer has its signature, `exp` and `nbf` verified (with
 * `jose`) against the keys the apiserver publishes ({@link ServiceAccountKeySource}).
 *
 * It only ever rejects: a token that verifies still goes to the TokenReview (the apiserver
 * also checks that the ServiceAccount and the object the token is bound to still exist),
 * and so does every token it cannot judge — not JWT-shaped, another issuer, keys that
 * could not be read. It rejects what kube-apiserver would reject too: a signature that does
 * not verify with the key named by `kid`, an algorithm the key cannot sign with, an
 * expired or not-yet-valid token (with kube-apiserver's 60 s leeway), and a `kid` that is
 * not among keys read in the last 30 s.
 *
 * The keys are read when first needed and again every 10 minutes (in the background; the
 * keys in hand serve meanwhile); an unknown `kid` reads them again at most once per 30 s,
 * so junk `kid`s cannot make Governor hammer the apiserver. When they cannot be read, every
 * token goes to the TokenReview as before (one warning is logged, and one line when they
 * can be read again); keys read earlier are kept.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from "node:crypto";
import { errors as joseErrors, jwtVerify } from "jose";
import type { Logger } from "pino";
import { MAX_BEARER_TOKEN_LENGTH, type TokenPrecheck } from "./authn.js";
import type { ServiceAccountKeys, ServiceAccountKeySource } from "./service-account-keys.js";

/** Options of {@link ServiceAccountTokenCheck}. */
export interface ServiceAccountTokenCheckOptions {
  /** Read the keys again this often. @default 600000 */
  refreshMs?: number;
  /** Read the keys at most this often (for an unknown `kid`, or after a failed read). @default 30000 */
  minReadIntervalMs?: number;
  /** Leeway for `exp` and `nbf`, as kube-apiserver allows. @default 60 */
  clockToleranceSeconds?: number;
  /** Where the one warning goes when the keys cannot be read. */
  logger?: Pick<Logger, "warn" | "info">;
  /** Clock in ms. @default Date.now */
  now?: () => number;
}

/** The keys in hand: by `kid` (a Map: the `kid` to look up is the token's, anything at all). */
interface KeySet {
  issuer: string;
  byKid: Map<string, KeyObject[]>;
  readAt: number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

const ALG_MISFIT = "the service-account token's algorithm does not fit its key";

/**
 * Why jose refused a token, when that is a verdict on the token (a fixed text: nothing the
 * token says); undefined for any other error (the TokenReview decides then).
 */
function rejection(err: unknown): string | undefined {
  if (err instanceof joseErrors.JWTExpired) return "the service-account token has expired";
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return err.claim === "nbf"
      ? "the service-account token is not valid yet"
      : "the service-account token's claims are not valid";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return "its signature does not verify with the service-account issuer's key";
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid)
    return "the service-account token is not a well-formed JWT";
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return ALG_MISFIT;
  return undefined;
}

/** See the module comment. */
export class ServiceAccountTokenCheck implements TokenPrecheck {
  private keys?: KeySet;
  private lastRead = Number.NEGATIVE_INFINITY;
  private reading?: Promise<void>;
  private failing = false;
  private readonly now: () => number;

  constructor(
    private readonly source: ServiceAccountKeySource,
    private readonly opts: ServiceAccountTokenCheckOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Reads the keys now (at start-up, so the first token does not wait); never rejects. */
  prefetch(): Promise<void> {
    return this.read();
  }

  async check(token: string): Promise<string | { subject: string } | undefined> {
    if (token.length > MAX_BEARER_TOKEN_LENGTH) return "the token is too long";
    const claims = unverifiedClaims(token);
    if (!claims) return undefined;
    let keys = await this.current();
    if (!keys || claims.iss !== keys.issuer) return undefined;
    let candidates = keys.byKid.get(claims.kid);
    if (!candidates) {
      await this.read(); // at most once per minReadIntervalMs, however many tokens ask
      keys = this.keys!;
      candidates = keys.byKid.get(claims.kid);
      if (!candidates) {
        // Keys this fresh would hold a key the apiserver signs with; older ones might not.
        const fresh = this.now() - keys.readAt <= (this.opts.minReadIntervalMs ?? 30_000);
        return fresh ? "no key of the service-account issuer has its key id" : undefined;
      }
    }
    return this.verify(token, claims.alg, candidates, keys.issuer);
  }

  /** The keys in hand (read first if there are none; refreshed in the background when old). */
  private async current(): Promise<KeySet | undefined> {
    if (!this.keys) await this.read();
    else if (this.now() - this.keys.readAt >= (this.opts.refreshMs ?? 600_000)) void this.read();
    return this.keys;
  }

  /**
   * Reads the keys, unless a read started less than `minReadIntervalMs` ago (then resolves at
   * once); a read under way is joined. Never rejects: a failure keeps the keys in hand.
   */
  private read(): Promise<void> {
    if (this.reading) return this.reading;
    const now = this.now();
    if (now - this.lastRead < (this.opts.minReadIntervalMs ?? 30_000)) return Promise.resolve();
    this.lastRead = now;
    let pending: Promise<ServiceAccountKeys>;
    try {
      pending = this.source.read();
    } catch (err) {
      pending = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    this.reading = pending
      .then(
        ({ issuer, keys }) => {
          this.keys = { issuer, byKid: keysByKid(keys), readAt: this.now() };
          if (this.failing)
            this.opts.logger?.info({ issuer }, "read the service-account issuer's keys again");
          this.failing = false;
        },
        (err: unknown) => {
          if (!this.failing)
            this.opts.logger?.warn(
              { err: err instanceof Error ? err.message : String(err) },
              "cannot read the service-account issuer's keys: every bearer token is checked by TokenReview alone until they can be read",
            );
          this.failing = true;
        },
      )
      .finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async verify(
    token: string,
    alg: string,
    candidates: KeyObject[],
    issuer: string,
  ): Promise<string | { subject: string } | undefined> {
    let reason: string | undefined;
    for (const key of candidates) {
      if (!fits(alg, key)) {
        reason ??= ALG_MISFIT;
        continue;
      }
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: [alg],
          issuer,
          clockTolerance: this.opts.clockToleranceSeconds ?? 60,
          currentDate: new Date(this.now()),
        });
        // Signed by the issuer and current: the TokenReview decides, within its subject's budget.
        return { subject: typeof payload.sub === "string" ? payload.sub.slice(0, 256) : "" };
      } catch (err) {
        const why = rejection(err);
        if (why === undefined) return undefined; // not a verdict on the token: the review decides
        reason ??= why;
      }
    }
    return reason;
  }
}

/** `kid`, `alg` and `iss` of a JWT-shaped token, unverified; undefined when it is not one. */
function unverifiedClaims(token: string): { kid: string; alg: string; iss: string } | undefined {
  if (!JWT_SHAPE.test(token)) return undefined;
  const [h = "", p = ""] = token.split(".", 2);
  const header = jsonObject(h);
  const payload = header && jsonObject(p);
  const kid = header && own(header, "kid");
  const alg = header && own(header, "alg");
  const iss = payload && own(payload, "iss");
  if (typeof kid !== "string" || typeof alg !== "string" || typeof iss !== "string") return undefined;
  return { kid, alg, iss };
}

/** A base64url part parsed as a JSON object, or undefined. */
function jsonObject(part: string): object | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** An own property (a header without `kid` must not find one on a prototype). */
function own(o: object, key: string): unknown {
  return Object.hasOwn(o, key) ? (o as Record<string, unknown>)[key] : undefined;
}

/** The published keys that can verify signatures, by `kid`; keys that do not import are skipped. */
function keysByKid(jwks: readonly JsonWebKey[]): Map<string, KeyObject[]> {
  const byKid = new Map<string, KeyObject[]>();
  for (const jwk of jwks) {
    const kid = jwk["kid"];
    if (typeof kid !== "string" || (jwk["use"] !== undefined && jwk["use"] !== "sig")) continue;
    let key: KeyObject;
    try {
      key = createPublicKey({ key: jwk, format: "jwk" });
    } catch {
      continue;
    }
    const list = byKid.get(kid);
    if (list) list.push(key);
    else byKid.set(kid, [key]);
  }
  return byKid;
}

/** Whether a key can make signatures of `alg` (RSA or ECDSA, as kube-apiserver's keys are). */
function fits(alg: string, key: KeyObject): boolean {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  switch (alg) {
    case "RS256":
    case "RS384":
    case "RS512":
    case "PS256":
    case "PS384":
    case "PS512":
      return type === "rsa";
    case "ES256":
      return type === "ec" && curve === "prime256v1";
    case "ES384":
      return type === "ec" && curve === "secp384r1";
    case "ES512":
      return type === "ec" && curve === "secp521r1";
    case "EdDSA":
    case "Ed25519":
      return type === "ed25519";
    default:
      return false; // "none", HMAC and anything else: never a service-account signature
  }
}
