/**
 * Pushes shared between Governor's replicas. An exporter keeps its connection, so each
 * pusher's points reach one replica behind the Service, while the aggregator asks any
 * replica for the value: every replica must hold every push. A replica that kept a push
 * sends its body, as it came, to each other Ready replica (`POST /v1/metrics` on the peer's
 * OTLP port, the namespace in {@link RELAY_NAMESPACE_HEADER}) over mutual TLS with
 * Governor's own serving certificate: the peer is checked against Governor's CA for the
 * Service's name, and the peer takes a relay only from a client presenting a certificate
 * it serves itself, whose key only Governor's pods hold (ADR 0029).
 *
 * Relays are sent in the background (the pusher's answer does not wait), at most
 * {@link MAX_IN_FLIGHT_PER_PEER} to a peer at once (more are dropped and counted), each
 * within {@link RELAY_TIMEOUT_MS}; a relayed push is never relayed again.
 */
import { X509Certificate } from "node:crypto";
import { Agent, request } from "node:https";
import type { Logger } from "pino";
import type { KeyPair } from "../certs/certs.js";

/** The header that carries the namespace a relayed push was received for. */
export const RELAY_NAMESPACE_HEADER = "x-governor-relay-namespace";
const MAX_IN_FLIGHT_PER_PEER = 8;
const RELAY_TIMEOUT_MS = 5000;

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
}

/** See the module comment. */
export class OtlpRelay {
  private agent?: { key: string; agent: Agent };
  private readonly inFlight = new Map<string, number>();
  /** Fingerprints of the serving certificates this replica has served: the current one and the one before. */
  private readonly served: string[] = [];
  private warnedNoCa = false;
  private lastCert?: string;

  constructor(private readonly opts: OtlpRelayOptions) {}

  /** Whether `fingerprint256` (of a client's certificate) is one this replica serves: a peer's. */
  isPeer(fingerprint256: string | undefined): boolean {
    this.notice(this.opts.certificate());
    return fingerprint256 !== undefined && this.served.includes(fingerprint256);
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
          "OTLP: pushes are not shared with the other replicas: no CA to check them by (run with self-registration)",
        );
      }
      for (const _ of peers) this.opts.outcome?.("dropped");
      return;
    }
    this.notice(pair);
    const agent = this.agentFor(pair, ca);
    for (const peer of peers) {
      const at = `${peer.ip}:${peer.port}`;
      const n = this.inFlight.get(at) ?? 0;
      if (n >= MAX_IN_FLIGHT_PER_PEER) {
        this.opts.outcome?.("dropped");
        continue;
      }
      this.inFlight.set(at, n + 1);
      let settled = false;
      const done = (outcome: RelayOutcome, detail?: string) => {
        if (settled) return;
        settled = true;
        const left = (this.inFlight.get(at) ?? 1) - 1;
        if (left > 0) this.inFlight.set(at, left);
        else this.inFlight.delete(at);
        this.opts.outcome?.(outcome);
        if (outcome === "failed")
          this.opts.logger.debug({ peer: peer.name, detail }, "OTLP: a push was not relayed to a peer");
      };
      const req = request(
        {
          host: peer.ip,
          port: peer.port,
          servername: this.opts.serverName,
          method: "POST",
          path: "/v1/metrics",
          agent,
          timeout: RELAY_TIMEOUT_MS,
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
            done(res.statusCode === 200 ? "sent" : "failed", `answered ${res.statusCode ?? "?"}`),
          );
          res.on("error", (err) => done("failed", err.message));
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${RELAY_TIMEOUT_MS} ms`)));
      req.on("error", (err) => done("failed", err.message));
      req.end(body);
    }
  }

  close(): void {
    this.agent?.agent.destroy();
    this.agent = undefined;
  }

  private notice(pair: KeyPair | undefined): void {
    if (!pair || pair.cert === this.lastCert) return;
    this.lastCert = pair.cert;
    const fingerprint = new X509Certificate(pair.cert).fingerprint256;
    if (this.served[this.served.length - 1] === fingerprint) return;
    this.served.push(fingerprint);
    if (this.served.length > 2) this.served.shift();
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
