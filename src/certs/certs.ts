/**
 * Certificates with `@peculiar/x509` on Node's WebCrypto: a self-signed CA and leaf
 * certificates it issues (serving or client), all ECDSA P-256 with SHA-256, as PEM.
 */
import "reflect-metadata"; // required by @peculiar/x509 (tsyringe)
import { webcrypto, randomBytes } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** A certificate with its private key, both PEM. */
export interface KeyPair {
  cert: string;
  key: string;
}

async function keyPair() {
  return webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
}

async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return pem(x509.PemConverter.encode(der, "PRIVATE KEY"));
}

async function importKey(pem: string): Promise<webcrypto.CryptoKey> {
  return webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decode(pem)[0]!, ALG, true, ["sign"]);
}

function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f; // positive
  return b.toString("hex");
}

/**
 * A self-signed CA.
 * @param opts.validDays @default 3650
 * @param opts.notBefore @default now minus 5 minutes (clock skew)
 */
export async function createCA(
  commonName: string,
  opts: { validDays?: number; notBefore?: Date } = {},
): Promise<KeyPair> {
  const keys = await keyPair();
  const notBefore = opts.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${escapeDn(commonName)}`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + (opts.validDays ?? 3650) * 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: pem(cert.toString("pem")), key: await keyPem(keys.privateKey) };
}

/** PEM text always ends with a newline, so bundles can be concatenated safely. */
function pem(text: string): string {
  return text.endsWith("\n") ? text : `${text}\n`;
}

/** What a leaf certificate is for. */
export interface LeafOptions {
  commonName: string;
  /** Subject O= entries (Kubernetes reads them as groups). */
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  usage: "server" | "client";
  /** @default 365 */
  validDays?: number;
  notBefore?: Date;
}

/** Issues a leaf certificate signed by `ca`. */
export async function issueCertificate(ca: KeyPair, opts: LeafOptions): Promise<KeyPair> {
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await importKey(ca.key);
  const keys = await keyPair();
  const notBefore = opts.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const names = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const subject = [
    ...(opts.organizations ?? []).map((o) => `O=${escapeDn(o)}`),
    `CN=${escapeDn(opts.commonName)}`,
  ].join(", ");
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: caCert.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + (opts.validDays ?? 365) * 86_400_000),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([
        opts.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
    ],
  });
  return { cert: pem(cert.toString("pem")), key: await keyPem(keys.privateKey) };
}

function escapeDn(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, "\\$1");
}

/** Validity window of a PEM certificate (the first in a bundle). */
export function validity(pem: string): { notBefore: Date; notAfter: Date } {
  const c = new x509.X509Certificate(pem);
  return { notBefore: c.notBefore, notAfter: c.notAfter };
}

/** Whether `leafPem` is signed by the CA `caPem`. */
export async function isSignedBy(leafPem: string, caPem: string): Promise<boolean> {
  try {
    const leaf = new x509.X509Certificate(leafPem);
    const ca = new x509.X509Certificate(caPem);
    return leaf.issuer === ca.subject && (await leaf.verify({ publicKey: ca, signatureOnly: true }));
  } catch {
    return false;
  }
}

/** DNS names in a certificate's subjectAltName. */
export function dnsNamesOf(pem: string): string[] {
  const c = new x509.X509Certificate(pem);
  const san = c.getExtension(x509.SubjectAlternativeNameExtension);
  return san ? san.names.items.filter((n) => n.type === "dns").map((n) => n.value) : [];
}

/** Splits a PEM bundle into its certificates. */
export function splitPem(bundle: string): string[] {
  return (
    bundle
      .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)
      ?.map((s) => s.trim() + "\n") ?? []
  );
}
