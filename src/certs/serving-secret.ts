/**
 * The serving-certificate Secret's contents and its lifecycle, as pure functions (the
 * reads and writes are `src/controller/registration.ts`'s):
 *
 * - **No CA key is kept**: each CA signs exactly one leaf and its key is dropped at once,
 *   so the Secret holds nothing that could mint another certificate the aggregator trusts.
 * - **Rotation** when a third of the leaf's life is left, when the leaf lacks a DNS name
 *   the Service needs, or on demand: a new CA and its leaf are made together; the CA is
 *   *added* to `caBundle` (old and new both trusted) and the leaf waits in the Secret
 *   (`next-tls.crt`/`next-tls.key`) until the aggregator has had time to load the CA; then
 *   it becomes `tls.crt`/`tls.key`. No request fails across a rotation.
 * - Secrets written by versions that kept `ca.key` lose it at the next step.
 */
import { createCA, dnsNamesOf, issueCertificate, splitPem, validity, type KeyPair } from "./certs.js";

/** What the Secret holds. */
export interface ServingSecret {
  caBundle: string;
  cert: string;
  key: string;
  /** The leaf of the newest CA, waiting until that CA has reached every caBundle. */
  next?: KeyPair;
  /** When the newest CA was added to the bundle (ms since the epoch). */
  caAddedAt?: number;
  /** Read from a Secret that still holds a CA key (written before keys were dropped). */
  legacyCaKey?: boolean;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");
const CA_ADDED_AT = "governor.dev/ca-added-at";

/** The Secret object for `d` (type kubernetes.io/tls, so tools that read `tls.crt` work). */
export function servingSecretObject(meta: { namespace: string; name: string }, d: ServingSecret) {
  const annotations: Record<string, string> = d.caAddedAt
    ? { [CA_ADDED_AT]: new Date(d.caAddedAt).toISOString() }
    : {};
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "kubernetes.io/tls",
    metadata: {
      name: meta.name,
      namespace: meta.namespace,
      labels: { "app.kubernetes.io/name": "governor", "app.kubernetes.io/component": "serving-cert" },
      annotations,
    },
    data: {
      "ca.crt": b64(d.caBundle),
      "tls.crt": b64(d.cert),
      "tls.key": b64(d.key),
      ...(d.next ? { "next-tls.crt": b64(d.next.cert), "next-tls.key": b64(d.next.key) } : {}),
    },
  };
}

/** A Secret's contents, or undefined when it lacks the CA bundle, certificate or key. */
export function parseServingSecret(s: {
  data?: Record<string, string>;
  metadata?: { annotations?: Record<string, string> };
}): ServingSecret | undefined {
  if (!s.data) return undefined;
  const d: ServingSecret = {
    caBundle: unb64(s.data["ca.crt"]),
    cert: unb64(s.data["tls.crt"]),
    key: unb64(s.data["tls.key"]),
  };
  const [nextCert, nextKey] = [unb64(s.data["next-tls.crt"]), unb64(s.data["next-tls.key"])];
  if (nextCert && nextKey) d.next = { cert: nextCert, key: nextKey };
  if (s.data["ca.key"]) d.legacyCaKey = true;
  const added = s.metadata?.annotations?.[CA_ADDED_AT];
  if (added) d.caAddedAt = Date.parse(added);
  if (!d.caBundle || !d.cert || !d.key) return undefined;
  return d;
}

/** What a new serving certificate is issued for. */
export interface ServingIdentity {
  /** The Service's name and namespace (the CA's and leaf's names). */
  serviceName: string;
  namespace: string;
  dnsNames: string[];
  ipAddresses?: string[];
  /** @default 365 */
  leafDays?: number;
}

/** A new CA and its one leaf; the CA's key is not kept (see the module comment). */
export async function newServingSecret(id: ServingIdentity): Promise<ServingSecret> {
  const leafDays = id.leafDays ?? 365;
  const ca = await createCA(`${id.serviceName}.${id.namespace} CA`, { validDays: leafDays + 1 });
  const leaf = await issueCertificate(ca, {
    commonName: `${id.serviceName}.${id.namespace}.svc`,
    dnsNames: id.dnsNames,
    ...(id.ipAddresses ? { ipAddresses: id.ipAddresses } : {}),
    usage: "server",
    validDays: leafDays,
  });
  return { caBundle: ca.cert, cert: leaf.cert, key: leaf.key };
}

/** The next step of the lifecycle for what the Secret holds now. */
export type RotationStep =
  /** A new CA waits to reach every caBundle: nothing to write yet. */
  | { step: "wait" }
  /** Serve the waiting leaf (write `secret`). */
  | { step: "promote"; secret: ServingSecret }
  /** Make a new CA and leaf, then write {@link withNewCA}'s result. */
  | { step: "rotate" }
  /** Write `secret`: the same certificates without the old CA key. */
  | { step: "drop-ca-key"; secret: ServingSecret }
  | { step: "none" };

/** Decides the next step (see the module comment); `force` rotates now. */
export function nextRotationStep(
  cur: ServingSecret,
  opts: { now: number; caPropagationMs: number; dnsNames: readonly string[]; force: boolean },
): RotationStep {
  if (cur.next) {
    if (opts.now - (cur.caAddedAt ?? 0) < opts.caPropagationMs) return { step: "wait" };
    return { step: "promote", secret: { caBundle: cur.caBundle, cert: cur.next.cert, key: cur.next.key } };
  }
  const leaf = validity(cur.cert);
  const life = leaf.notAfter.getTime() - leaf.notBefore.getTime();
  const names = dnsNamesOf(cur.cert);
  const namesOk = opts.dnsNames.every((n) => names.includes(n));
  if (opts.force || !namesOk || leaf.notAfter.getTime() - opts.now < life / 3) return { step: "rotate" };
  if (cur.legacyCaKey) return { step: "drop-ca-key", secret: { ...cur, legacyCaKey: false } };
  return { step: "none" };
}

/**
 * `cur` with `fresh`'s CA added to the bundle and its leaf waiting in `next`. Still-valid
 * older CAs stay trusted (the leaf in use is signed by one of them), at most two of them.
 */
export function withNewCA(cur: ServingSecret, fresh: ServingSecret, now: number): ServingSecret {
  const keep = splitPem(cur.caBundle)
    .filter((pem) => validity(pem).notAfter.getTime() > now)
    .slice(0, 2);
  return {
    ...cur,
    caBundle: [...splitPem(fresh.caBundle), ...keep].join(""),
    next: { cert: fresh.cert, key: fresh.key },
    caAddedAt: now,
  };
}
