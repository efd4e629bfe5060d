/**
 * In front of a Prometheus: answers `429 Retry-After: 1` past `perSecond` queries (a burst
 * of one second's worth), as a rate-limited Mimir or an API gateway would, and passes the
 * rest on. Counts what it passed, by query, and what it refused.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { request } from "undici";
import { TokenBucket } from "../../src/util/token-bucket.js";

export class RateLimitingProxy {
  /** Queries passed on, by their `query` parameter. */
  readonly sent = new Map<string, number>();
  refused = 0;
  private readonly bucket: TokenBucket;
  private readonly server: Server;

  constructor(upstream: string, perSecond: number) {
    this.bucket = new TokenBucket(perSecond, perSecond);
    this.server = createServer((req, res) => {
      if (!this.bucket.take()) {
        this.refused++;
        res.writeHead(429, { "retry-after": "1" }).end("too many requests");
        return;
      }
      const query = new URL(req.url!, "http://proxy").searchParams.get("query") ?? "";
      this.sent.set(query, (this.sent.get(query) ?? 0) + 1);
      request(`${upstream}${req.url}`).then(
        async (r) =>
          res.writeHead(r.statusCode, { "content-type": "application/json" }).end(await r.body.text()),
        () => res.writeHead(502).end(),
      );
    });
  }

  /** Listens on a free loopback port; resolves with its URL. */
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Queries passed on since `before` (a copy of {@link sent}), by query. */
  since(before: ReadonlyMap<string, number>): Map<string, number> {
    return new Map([...this.sent].map(([q, n]) => [q, n - (before.get(q) ?? 0)]));
  }

  /** Queries passed on in all. */
  total(): number {
    let n = 0;
    for (const v of this.sent.values()) n += v;
    return n;
  }

  stop(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
