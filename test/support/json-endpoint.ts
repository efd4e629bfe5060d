import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** A JSON endpoint whose value the test sets, that can go away and come back on the same port. */
export class JsonEndpoint {
  value = 0;
  port = 0;
  private server?: Server;
  async start(): Promise<void> {
    this.server = createServer((_req, res) =>
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ stats: { value: this.value } })),
    );
    await new Promise<void>((r) => this.server!.listen(this.port, "127.0.0.1", () => r()));
    this.port = (this.server.address() as AddressInfo).port;
  }
  stop(): void {
    this.server?.close();
    this.server?.closeAllConnections();
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}/stats`;
  }
}
