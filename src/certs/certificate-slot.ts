/**
 * The serving certificate a replica serves now: set by what owns it (the Secret Governor
 * keeps, or mounted files), followed by the server that serves it.
 */
import type { KeyPair } from "./certs.js";

/** See the module comment. */
export class CertificateSlot {
  private pair?: KeyPair;
  private readonly followers = new Set<(pair: KeyPair) => void>();

  constructor(initial?: KeyPair) {
    this.pair = initial;
  }

  /** The pair served now, if there is one yet. */
  get current(): KeyPair | undefined {
    return this.pair;
  }

  /** Serves `pair` from now on. */
  set(pair: KeyPair): void {
    this.pair = pair;
    for (const f of this.followers) f(pair);
  }

  /** Calls `follower` with every pair set from now on; returns the function that stops it. */
  follow(follower: (pair: KeyPair) => void): () => void {
    this.followers.add(follower);
    return () => this.followers.delete(follower);
  }
}
