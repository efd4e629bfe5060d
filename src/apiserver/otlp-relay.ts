/**
 * Pushes shared between Governor's replicas. An exporter keeps its connection, so each
 * pusher's points reach one replica behind the Service, while the aggregator asks any
 * replica for the value: every replica must hold every push. A replica that kept a push
 * sends its body, as it came, to each other Ready replica (`POST /v1/metrics` on the peer's
 * OTLP port, the namespace in {@link RELAY_NAMESPACE_HEADER}) over mutual TLS with
 * Governor's own serving certificate: each end checks the other's certificate against
 * Governor's CA bundle for the Service's name. Only Governor issues such a certificate
 * (each of its CAs signs one and loses its key), and only Governor's pods hold its key
 * (ADR 0029).
 *
 * Relays are sent in the background (the pusher's answer does not wait): to a peer at most
 * {@link MAX_IN_FLIGHT_PER_NAMESPACE} of one namespace and {@link MAX_IN_FLIGHT_PER_PEER} in
 * all at once, holding at most {@link MAX_HELD_BYTES} of bodies; more are dropped, counted,
 * and said on the namespace's mappings. Each has {@link RELAY_DEADLINE_MS} to be answered. A
 * relayed push is never relayed again.
 */
import { X509Certificate } from "node:crypto";
import { Agent, request } from "node:https";
import type { Logger } from "pino";
import type { KeyPair } from "../certs/certs.js";
import { boundedText } from "../util/bounded-text.js";

/** The header that carries the namespace a relayed push was received for. */
export const RELAY_NAMESPACE_HEADER = "x-governor-relay-namespace";
const MAX_IN_FLIGHT_PER_PEER = 64;
const MAX_IN_FLIGHT_PER_NAMESPACE = 4;
const MAX_HELD_BYTES = 64 << 20;
const RELAY_DEADLINE_MS = 5000;
/** Client certificates whose check is remembered. */
const CHECKED_KEPT = 16;

/** Another replica of this Governor. */
export interface OtlpPeer {
  name: string;
  ip: string;
  /** Its OTLP port. */
  port: number;
}

/** What happened to one relay: sent (the peer answered 200), failed, or dropped (too many in flight, no CA yet). */
export type RelayOutcome = "sent" | "failed" | "dropped";

/** Options of {@link OtlpRelay}. */
export interface OtlpRelayOptions {
  /** The other Ready replicas now. */
  peers: () => OtlpPeer[];
  /** The name the serving certificate is for (the Service's DNS name). */
  serverName: string;
  /** This replica's serving certificate now, presented to peers. */
  certificate: () => KeyPair | undefined;
  /** Governor's CA bundle now, which peers' certificates are checked against. */
  ca: () => string | undefined;
  logger: Logger;
  outcome?: (outcome: RelayOutcome) => void;
  /** A push of `namespace` not shared with a peer, and why (said on the namespace's mappings). */
  unshared?: (namespace: string, reason: string) => void;
}

/** See the module comment. */
export class OtlpRelay {
  private agent?: { key: string; agent: Agent };
  /** Relays in flight, by peer and by peer and namespace. */
  private readonly inFlight = new Map<string, number>();
  private heldBytes = 0;
  /** Client certificates checked against the CA bundle `checkedFor`, by fingerprint. */
  private readonly checked = new Map<string, boolean>();
  private checkedFor?: string;
  private warnedNoCa = false;

  constructor(private readonly opts: OtlpRelayOptions) {}

  /**
   * Whether a client's certificate (DER) is a replica's: valid now, for the Service's name,
   * issued by a CA of Governor's bundle.
   */
  isPeer(der: Buffer | undefined): boolean {
    const ca = this.opts.ca();
    if (!der || der.length === 0 || !ca) return false;
    if (this.checkedFor !== ca) {
      this.checked.clear();
      this.checkedFor = ca;
    }
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(der);
    } catch {
      return false;
    }
    const now = Date.now();
    if (now < Date.parse(leaf.validFrom) || now > Date.parse(leaf.validTo)) return false;
    const known = this.checked.get(leaf.fingerprint256);
    if (known !== undefined) return known;
    const ok =
      leaf.checkHost(this.opts.serverName) !== undefined &&
      certificatesIn(ca).some((authority) => leaf.checkIssued(authority) && leaf.verify(authority.publicKey));
    if (this.checked.size >= CHECKED_KEPT) this.checked.delete(this.checked.keys().next().value!);
    this.checked.set(leaf.fingerprint256, ok);
    return ok;
  }

  /** Sends a push `namespace` made to every peer, in the background. */
  send(namespace: string, body: Buffer, headers: { contentType: string; contentEncoding: string }): void {
    const peers = this.opts.peers();
    if (peers.length === 0) return;
    const pair = this.opts.certificate();
    const ca = this.opts.ca();
    if (!pair || !ca) {
      if (!this.warnedNoCa) {
        this.warnedNoCa = true;
        this.opts.logger.warn(
          "OTLP: pushes are not shared with the other replicas: no certificate or CA yet",
        );
      }
      for (const peer of peers) this.drop(namespace, peer, "no serving certificate or CA yet");
      return;
    }
    const agent = this.agentFor(pair, ca);
    for (const peer of peers) {
      const at = `${peer.ip}:${peer.port}`;
      const ours = `${at}\0${namespace}`;
      const n = this.inFlight.get(at) ?? 0;
      const mine = this.inFlight.get(ours) ?? 0;
      if (mine >= MAX_IN_FLIGHT_PER_NAMESPACE || n >= MAX_IN_FLIGHT_PER_PEER) {
        this.drop(namespace, peer, "too many of its pushes are being shared already");
        continue;
      }
      if (this.heldBytes + body.length > MAX_HELD_BYTES) {
        this.drop(namespace, peer, "too many bytes of pushes are being shared already");
        continue;
      }
      this.inFlight.set(at, n + 1);
      this.inFlight.set(ours, mine + 1);
      this.heldBytes += body.length;
      let settled = false;
      const done = (outcome: RelayOutcome, detail?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        for (const key of [at, ours]) {
          const left = (this.inFlight.get(key) ?? 1) - 1;
          if (left > 0) this.inFlight.set(key, left);
          else this.inFlight.delete(key);
        }
        this.heldBytes -= body.length;
        this.opts.outcome?.(outcome);
        if (outcome === "failed") {
          this.opts.logger.debug({ peer: peer.name, detail }, "OTLP: a push was not relayed to a peer");
          this.opts.unshared?.(
            namespace,
            `not shared with replica ${peer.name}: ${boundedText(detail ?? "")}`,
          );
        }
      };
      const req = request(
        {
          host: peer.ip,
          port: peer.port,
          servername: this.opts.serverName,
          method: "POST",
          path: "/v1/metrics",
          agent,
          headers: {
            "content-type": headers.contentType,
            "content-encoding": headers.contentEncoding,
            "content-length": String(body.length),
            [RELAY_NAMESPACE_HEADER]: namespace,
          },
        },
        (res) => {
          res.resume();
          res.on("end", () =>
            done(res.statusCode === 200 ? "sent" : "failed", `it answered ${res.statusCode ?? "?"}`),
          );
          res.on("error", (err) => done("failed", err.message));
        },
      );
      const deadline = setTimeout(
        () => req.destroy(new Error(`no answer within ${RELAY_DEADLINE_MS} ms`)),
        RELAY_DEADLINE_MS,
      );
      req.on("error", (err) => done("failed", err.message));
      req.end(body);
    }
  }

  /** How many relays are in flight now to a peer, or of a namespace to it (for tests). */
  inFlightTo(peer: OtlpPeer, namespace?: string): number {
    const at = `${peer.ip}:${peer.port}`;
    return this.inFlight.get(namespace === undefined ? at : `${at}\0${namespace}`) ?? 0;
  }

  private drop(namespace: string, peer: OtlpPeer, why: string): void {
    this.opts.outcome?.("dropped");
    this.opts.unshared?.(namespace, `not shared with replica ${peer.name}: ${why}`);
  }

  close(): void {
    this.agent?.agent.destroy();
    this.agent = undefined;
  }

  /** A keep-alive agent presenting `pair` and trusting `ca`, made again when either changes. */
  private agentFor(pair: KeyPair, ca: string): Agent {
    const key = `${pair.cert}\0${ca}`;
    if (this.agent?.key === key) return this.agent.agent;
    this.agent?.agent.destroy();
    const agent = new Agent({
      keepAlive: true,
      maxSockets: MAX_IN_FLIGHT_PER_PEER,
      cert: pair.cert,
      key: pair.key,
      ca,
      minVersion: "TLSv1.2",
    });
    this.agent = { key, agent };
    return agent;
  }
}

/** The certificates of a PEM bundle (those that parse). */
function certificatesIn(bundle: string): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const block of bundle.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch {
      // not a certificate: skipped
    }
  }
  return out;
}
