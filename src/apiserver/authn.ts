/**
 * Authentication as an extension apiserver does it (k8s.io/apiserver's delegating
 * authenticator), in this order:
 *
 * 1. A client certificate that chains to `requestheader-client-ca-file` with a CN in
 *    `requestheader-allowed-names` (any CN when the list is empty): the user is taken from
 *    the `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-*` headers (names configurable).
 *    Such a certificate with a CN not allowed is rejected (401).
 * 2. A client certificate that chains to `client-ca-file`: user = CN, groups = O.
 * 3. A bearer token, checked with a TokenReview. Each answer (an acceptance or a rejection)
 *    is cached by the token's hash. Before a token not cached costs a review it meets a
 *    local {@link TokenPrecheck} (a service-account JWT's signature and expiry, in
 *    production), which can only reject, and a token bucket: when more new tokens come than
 *    reviews are allowed per second, the request is answered 429 (a flood of junk tokens
 *    costs the apiserver a bounded number of reviews).
 * 4. Nothing: `system:anonymous` in `system:unauthenticated` (the server answers 401).
 *
 * The request headers are never trusted otherwise. A certificate that chains to neither CA
 * is a 401, as is a token the apiserver or the precheck rejects, or one longer than
 * {@link MAX_BEARER_TOKEN_LENGTH}. Extras (`X-Remote-Extra-*`) are kept in a dictionary
 * without a prototype: a header named `…-__proto__` is an extra like any other.
 */
import { createHash, X509Certificate } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { GovernorError } from "../errors.js";
import { dict } from "../util/dict.js";
import { byteBoundedCache, stringBytes } from "../util/lru.js";
import { LRUCache } from "lru-cache";
import { TokenBucket } from "../util/token-bucket.js";
import { tryDecodeURIComponent } from "../util/uri.js";
import { coalesce } from "../util/in-flight.js";

/** An authenticated (or anonymous) user, as in `user.Info`. */
export interface UserInfo {
  name: string;
  uid?: string;
  groups: string[];
  /** Keyed by names a client chose: a dictionary without a prototype (src/util/dict.ts). */
  extra: Record<string, string[]>;
}

/** The anonymous user. */
export const ANONYMOUS: UserInfo = Object.freeze({
  name: "system:anonymous",
  groups: ["system:unauthenticated"],
  extra: Object.freeze(dict<string[]>()),
});

/**
 * The longest bearer token looked at (16 KiB, Node's default limit for all headers
 * together; a service-account token is 1–2 KiB): a longer one is a 401 before it is hashed,
 * parsed or reviewed.
 */
export const MAX_BEARER_TOKEN_LENGTH = 16 * 1024;

/** Credentials were presented and are not valid (answered 401). */
export class AuthenticationError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_AUTHN", message);
  }
}

/**
 * More bearer tokens not seen before came than TokenReviews are allowed per second: the
 * request was not reviewed (answered 429 with `Retry-After: 1`).
 */
export class TooManyTokenReviewsError extends GovernorError {
  constructor() {
    super("GOV_ERR_AUTHN_THROTTLED", "too many new bearer tokens to review, please try again later");
  }
}

/** Authentication or authorization could not be checked (answered 500; never an allow). */
export class AuthUnavailableError extends GovernorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("GOV_ERR_AUTHZ_UNAVAILABLE", message, options);
  }
}

/** The contents of ConfigMap `kube-system/extension-apiserver-authentication`, parsed. */
export interface AuthenticationConfig {
  /** PEM bundle of `client-ca-file` (empty: no client-certificate users). */
  clientCA: string;
  requestHeader?: {
    /** PEM bundle of `requestheader-client-ca-file`. */
    clientCA: string;
    allowedNames: string[];
    usernameHeaders: string[];
    groupHeaders: string[];
    extraHeaderPrefixes: string[];
  };
}

/** Parses the `extension-apiserver-authentication` ConfigMap's data. */
export function parseAuthenticationConfigMap(data: Record<string, string> | undefined): AuthenticationConfig {
  const d = data ?? {};
  const list = (key: string): string[] => {
    const raw = d[key];
    if (!raw) return [];
    try {
      const parsed: unknown = JSON.parse(raw);
      return Array.isArray(parsed) ? parsed.map(String) : [];
    } catch {
      throw new GovernorError(
        "GOV_ERR_CONFIG",
        `extension-apiserver-authentication: ${key} is not a JSON list`,
      );
    }
  };
  const rhCA = d["requestheader-client-ca-file"];
  return {
    clientCA: d["client-ca-file"] ?? "",
    ...(rhCA
      ? {
          requestHeader: {
            clientCA: rhCA,
            allowedNames: list("requestheader-allowed-names"),
            usernameHeaders: list("requestheader-username-headers"),
            groupHeaders: list("requestheader-group-headers"),
            extraHeaderPrefixes: list("requestheader-extra-headers-prefix"),
          },
        }
      : {}),
  };
}

/** Splits a PEM bundle into certificates; invalid blocks are an error. */
export function parseCertBundle(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new GovernorError("GOV_ERR_TLS", "a CA bundle holds an invalid certificate", { cause: err });
    }
  });
}

/** Checks bearer tokens (a TokenReview in production). `undefined`: the token is not valid. */
export interface TokenReviewer {
  review(token: string): Promise<UserInfo | undefined>;
}

/**
 * A cheap local look at a bearer token before it costs a TokenReview (in production the
 * signature and expiry of a service-account JWT: src/apiserver/service-account-token-check.ts).
 * It can only reject: a token it lets through still goes to the {@link TokenReviewer}.
 */
export interface TokenPrecheck {
  /**
   * Why the token cannot be valid (a short fixed text, nothing the token says); the
   * token's subject when its signature verified (its review is then budgeted per subject,
   * apart from the tokens nobody vouches for); undefined when only a TokenReview can tell
   * (also when the check itself cannot be made).
   */
  check(token: string): Promise<string | { subject: string } | undefined>;
}

/** Options of {@link DelegatingAuthenticator}. */
export interface DelegatingAuthenticatorOptions {
  /** How long a review's answer (an acceptance or a rejection) is trusted. @default 10000 */
  tokenCacheTtlMs?: number;
  /** Called with "hit" or "miss" for each token lookup (metrics). */
  onCache?: (result: "hit" | "miss") => void;
  /** Run on each token not cached, before its TokenReview; it can only reject. @default none */
  precheck?: TokenPrecheck;
  /** TokenReviews per second on average, for tokens not cached. @default 20 */
  tokenReviewsPerSecond?: number;
  /** TokenReviews that may be sent at once above the average. @default 50 */
  tokenReviewBurst?: number;
  /** Clock in ms, for cache expiry and the review budget. @default Date.now */
  now?: () => number;
}

/** What a token's review (or precheck) found: the user, or why the token is not valid. */
type TokenOutcome = { user: UserInfo } | { rejected: string };

/** Decides who sent a request. */
export interface Authenticator {
  /**
   * The user; throws (or rejects with) {@link AuthenticationError} (401) or
   * {@link AuthUnavailableError} (500). Synchronous when no remote call is needed (client
   * certificates, the front proxy's headers): the hot path takes no extra promise.
   */
  authenticate(req: IncomingMessage): UserInfo | Promise<UserInfo>;
}

const CLIENT_AUTH_EKU = "1.3.6.1.5.5.7.3.2";
/** The most intermediate certificates read from a client's chain (more are ignored). */
const MAX_INTERMEDIATES = 4;
const ANY_EKU = "2.5.29.37.0";

interface CertIdentity {
  /** Which CA the certificate chains to. */
  anchor: "requestheader" | "client" | "none";
  cn: string;
  organizations: string[];
}

/** See the module comment. Configuration is swapped atomically with {@link setConfig}. */
export class DelegatingAuthenticator implements Authenticator {
  private clientCAs: X509Certificate[] = [];
  private requestHeaderCAs: X509Certificate[] = [];
  private config: AuthenticationConfig = { clientCA: "" };
  private generation = 0;
  private readonly socketCache = new WeakMap<TLSSocket, { generation: number; identity: CertIdentity }>();
  private readonly reviewsInFlight = new Map<string, Promise<TokenOutcome>>();
  /**
   * Accepted tokens by hash: bounded in bytes, least recently used out first. Rejections
   * are kept apart, so that a flood of junk tokens cannot push valid ones out.
   */
  private readonly acceptedTokens = byteBoundedCache<string, { user: UserInfo; expires: number }>({
    maxBytes: 4 << 20,
    sizeOf: (key, v) => stringBytes(key) + 200 + stringBytes(JSON.stringify(v.user)),
  });
  /** Rejected tokens by hash, with why (a fixed text, nothing the token said). */
  private readonly rejectedTokens = byteBoundedCache<string, { reason: string; expires: number }>({
    maxBytes: 2 << 20,
    sizeOf: (key, v) => stringBytes(key) + 100 + stringBytes(v.reason),
  });
  private readonly reviewBudget: TokenBucket;
  /** Review budgets of subjects whose tokens verified locally, the most recent 4,096. */
  private readonly subjectBudgets = new LRUCache<string, TokenBucket>({ max: 4096 });
  private readonly now: () => number;

  /** @param tokens checks bearer tokens; undefined disables token authentication. */
  constructor(
    private readonly tokens: TokenReviewer | undefined,
    private readonly opts: DelegatingAuthenticatorOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.reviewBudget = new TokenBucket(
      opts.tokenReviewsPerSecond ?? 20,
      opts.tokenReviewBurst ?? 50,
      this.now,
    );
  }

  private subjectBudget(subject: string): TokenBucket {
    let b = this.subjectBudgets.get(subject);
    if (!b) this.subjectBudgets.set(subject, (b = new TokenBucket(2, 10, this.now)));
    return b;
  }

  /** Installs a new configuration (e.g. after the ConfigMap changed). */
  setConfig(config: AuthenticationConfig): void {
    const clientCAs = parseCertBundle(config.clientCA);
    const requestHeaderCAs = config.requestHeader ? parseCertBundle(config.requestHeader.clientCA) : [];
    this.config = config;
    this.clientCAs = clientCAs;
    this.requestHeaderCAs = requestHeaderCAs;
    this.generation++;
  }

  /** Every CA whose certificates are accepted, as PEM (for the TLS CertificateRequest). */
  acceptedCAs(): string[] {
    return [...this.requestHeaderCAs, ...this.clientCAs].map((c) => c.toString());
  }

  authenticate(req: IncomingMessage): UserInfo | Promise<UserInfo> {
    const identity = this.certificateIdentity(req.socket as TLSSocket);
    if (identity) {
      if (identity.anchor === "requestheader") {
        const rh = this.config.requestHeader!;
        if (rh.allowedNames.length > 0 && !rh.allowedNames.includes(identity.cn)) {
          throw new AuthenticationError(
            `client certificate CN "${identity.cn}" is not in requestheader-allowed-names`,
          );
        }
        const user = fromRequestHeaders(req, rh);
        if (user) return withAuthenticatedGroup(user);
        // No user header: not a proxied request; fall through like Kubernetes' union authenticator.
      } else if (identity.anchor === "client") {
        return {
          name: identity.cn,
          groups: [...identity.organizations, "system:authenticated"],
          extra: dict<string[]>(),
        };
      } else {
        throw new AuthenticationError("client certificate does not chain to a trusted CA");
      }
    }
    const auth = req.headers.authorization;
    if (auth) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
      if (!m?.[1]) throw new AuthenticationError("malformed Authorization header");
      if (!this.tokens) throw new AuthenticationError("bearer tokens are not accepted by this server");
      if (m[1].length > MAX_BEARER_TOKEN_LENGTH) throw new AuthenticationError("bearer token too long");
      return this.reviewCached(m[1]).then(withAuthenticatedGroup);
    }
    return ANONYMOUS;
  }

  /** The token's user; rejects with 401 or 429 (see the module comment). */
  private async reviewCached(token: string): Promise<UserInfo> {
    const key = createHash("sha256").update(token).digest("base64");
    const now = this.now();
    const accepted = this.acceptedTokens.get(key);
    const rejected = accepted ? undefined : this.rejectedTokens.get(key);
    if (accepted && accepted.expires > now) {
      this.opts.onCache?.("hit");
      return accepted.user;
    }
    if (rejected && rejected.expires > now) {
      this.opts.onCache?.("hit");
      throw new AuthenticationError(rejected.reason);
    }
    this.opts.onCache?.("miss");
    // Concurrent misses for the same token share one precheck and one TokenReview.
    const outcome = await coalesce(this.reviewsInFlight, key, () => this.review(token, key, now));
    if ("rejected" in outcome) throw new AuthenticationError(outcome.rejected);
    return outcome.user;
  }

  /** Prechecks, then (within the budget) reviews a token not cached, and caches the outcome. */
  private async review(token: string, key: string, now: number): Promise<TokenOutcome> {
    const expires = now + (this.opts.tokenCacheTtlMs ?? 10_000);
    let reason: string | { subject: string } | undefined;
    try {
      reason = await this.opts.precheck?.check(token);
    } catch {
      reason = undefined; // a check that cannot be made only costs a review
    }
    if (typeof reason !== "string") {
      // A token whose signature verified is the cluster's own: its review spends its
      // subject's budget, not the one junk tokens share, so a flood of junk cannot lock
      // real service accounts out (nor one account's minted tokens another's).
      const budget = reason === undefined ? this.reviewBudget : this.subjectBudget(reason.subject);
      if (!budget.take()) throw new TooManyTokenReviewsError();
      const user = await this.tokens!.review(token);
      if (user) {
        this.rejectedTokens.delete(key);
        this.acceptedTokens.set(key, { user, expires });
        return { user };
      }
      reason = "invalid bearer token";
    } else reason = `invalid bearer token: ${reason}`;
    this.acceptedTokens.delete(key);
    this.rejectedTokens.set(key, { reason, expires });
    return { rejected: reason };
  }

  /** The verified identity of the connection's client certificate, cached per TLS connection. */
  private certificateIdentity(socket: TLSSocket): CertIdentity | undefined {
    if (typeof socket.getPeerCertificate !== "function") return undefined;
    const cached = this.socketCache.get(socket);
    if (cached && cached.generation === this.generation) return cached.identity;
    const peer = socket.getPeerCertificate(true);
    if (!peer || !peer.raw) return undefined;
    const chain: X509Certificate[] = [];
    let cur: typeof peer | undefined = peer;
    const seen = new Set<string>();
    while (cur?.raw && !seen.has(cur.fingerprint256) && chain.length <= MAX_INTERMEDIATES) {
      seen.add(cur.fingerprint256);
      chain.push(new X509Certificate(cur.raw));
      cur = cur.issuerCertificate;
    }
    const [leaf, ...intermediates] = chain;
    const identity: CertIdentity = { anchor: "none", ...subjectOf(leaf!) };
    if (isUsableClientCert(leaf!)) {
      if (chainsTo(leaf!, intermediates, this.requestHeaderCAs)) identity.anchor = "requestheader";
      else if (chainsTo(leaf!, intermediates, this.clientCAs)) identity.anchor = "client";
    }
    this.socketCache.set(socket, { generation: this.generation, identity });
    return identity;
  }
}

/**
 * Every authenticated user is in `system:authenticated`, as k8s.io/apiserver's
 * AuthenticatedGroupAdder makes it (the aggregator, for one, sends no groups for
 * `system:aggregator`, whose `/openapi/v2` access comes from that group).
 */
function withAuthenticatedGroup(user: UserInfo): UserInfo {
  if (user.groups.includes("system:authenticated")) return user;
  return { ...user, groups: [...user.groups, "system:authenticated"] };
}

function isUsableClientCert(cert: X509Certificate): boolean {
  const now = Date.now();
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) return false;
  const eku = cert.keyUsage; // Node reports extended key usages here
  return !eku || eku.length === 0 || eku.includes(CLIENT_AUTH_EKU) || eku.includes(ANY_EKU);
}

/**
 * Whether `cert` chains to one of `roots` through `intermediates` taken in the order the
 * client sent them (each issued by the next), as TLS requires them to be sent. One pass:
 * at most (roots + 1) signature checks per certificate — a client choosing the
 * intermediates cannot make Governor try their orderings (a search over them took 1.7 s
 * for five self-issued certificates sharing one key, before any authentication).
 */
function chainsTo(
  cert: X509Certificate,
  intermediates: X509Certificate[],
  roots: X509Certificate[],
): boolean {
  const now = Date.now();
  let current = cert;
  for (let i = 0; ; i++) {
    for (const root of roots) if (current.checkIssued(root) && current.verify(root.publicKey)) return true;
    const next = intermediates[i];
    if (!next || !next.ca || !current.checkIssued(next) || !current.verify(next.publicKey)) return false;
    if (Date.parse(next.validFrom) > now || Date.parse(next.validTo) < now) return false;
    current = next;
  }
}

function subjectOf(cert: X509Certificate): { cn: string; organizations: string[] } {
  let cn = "";
  const organizations: string[] = [];
  for (const line of cert.subject.split("\n")) {
    const eq = line.indexOf("=");
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === "CN") cn = value;
    if (key === "O") organizations.push(value);
  }
  return { cn, organizations };
}

function fromRequestHeaders(
  req: IncomingMessage,
  rh: NonNullable<AuthenticationConfig["requestHeader"]>,
): UserInfo | undefined {
  // One pass over the raw headers (no header objects built): values of the configured
  // headers, in the order they came, each header name matched case-insensitively.
  const wanted = new Map<string, string[]>();
  // Keyed by what follows the prefix: any name a client sends, `__proto__` included.
  const extra = dict<string[]>();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const header = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (
      rh.usernameHeaders.some((h) => h.toLowerCase() === header) ||
      rh.groupHeaders.some((h) => h.toLowerCase() === header)
    ) {
      const list = wanted.get(header);
      if (list) list.push(value);
      else wanted.set(header, [value]);
    }
    for (const prefix of rh.extraHeaderPrefixes) {
      const p = prefix.toLowerCase();
      if (header.length > p.length && header.startsWith(p)) {
        const key = (tryDecodeURIComponent(header.slice(p.length)) ?? header.slice(p.length)).toLowerCase();
        (extra[key] ??= []).push(value);
      }
    }
  }
  let name = "";
  for (const h of rh.usernameHeaders) {
    const v = wanted.get(h.toLowerCase())?.find((x) => x.length > 0);
    if (v) {
      name = v;
      break;
    }
  }
  if (!name) return undefined;
  const groups = rh.groupHeaders.flatMap((h) => wanted.get(h.toLowerCase()) ?? []);
  return { name, groups, extra };
}
