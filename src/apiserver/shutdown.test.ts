import { connect } from "node:tls";
import { expect } from "chai";
import { pino } from "pino";
import { createCA, issueCertificate } from "../certs/certs.js";
import { FakeProvider } from "../../test/support/fake-provider.js";
import type { CustomMetricValue, SelectorMetricRequest } from "../metrics/provider.js";
import { httpsGet } from "../../test/support/https-get.js";
import type { Authenticator } from "./authn.js";
import { PromApiServerMetrics } from "./instrumentation.js";
import { MetricsApi } from "./metrics-api.js";
import { MetricsApiServer } from "./server.js";

/** A provider whose selector queries take `delayMs`; `asked` resolves when the first arrives. */
class SlowProvider extends FakeProvider {
  private arrived!: () => void;
  readonly asked = new Promise<void>((r) => (this.arrived = r));
  constructor(private readonly delayMs: number) {
    super();
  }
  override async getMetricBySelector(req: SelectorMetricRequest): Promise<CustomMetricValue[]> {
    this.arrived();
    await new Promise((r) => setTimeout(r, this.delayMs));
    return super.getMetricBySelector(req).catch(() => []);
  }
}

const masters: Authenticator & { acceptedCAs(): string[] } = {
  authenticate: async () => ({ name: "admin", groups: ["system:masters"], extra: {} }),
  acceptedCAs: () => [],
};

/** A server on a free loopback port that lets everyone in, with its CA. */
async function startServer(provider: FakeProvider, shutdownDelayMs: number) {
  const ca = await createCA("ca");
  const tls = await issueCertificate(ca, { commonName: "x", dnsNames: ["localhost"], usage: "server" });
  const server = new MetricsApiServer({
    api: new MetricsApi(provider),
    authenticator: masters,
    authorizer: { authorize: async () => ({ allowed: true, reason: "" }) },
    logger: pino({ level: "silent" }),
    metrics: new PromApiServerMetrics(undefined, { defaultMetrics: false }),
    tls,
    host: "127.0.0.1",
    port: 0,
    shutdownDelayMs,
  });
  const { port } = await server.listen();
  return { ca, server, port };
}

describe("metrics API server lifecycle", () => {
  it("on shutdown fails /readyz first, finishes in-flight requests, then stops", async () => {
    const provider = new SlowProvider(600);
    const { ca, server, port } = await startServer(provider, 300);
    const get = (path: string) =>
      httpsGet(`https://127.0.0.1:${port}${path}`, { ca: ca.cert, servername: "localhost" });

    const slow = get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/a/pods/*/m");
    await provider.asked; // in flight
    const stopped = server.shutdown();
    expect((await get("/readyz")).status).to.equal(503);
    expect((await get("/livez")).status).to.equal(200);
    expect((await slow).status, "in-flight request finished").to.equal(200);
    await stopped;
    const after = await get("/healthz").catch((e: Error) => e);
    expect(after).to.be.instanceOf(Error);
  });

  it("refuses TLS 1.1 clients", async () => {
    const { ca, server, port } = await startServer(new FakeProvider(), 0);
    try {
      const outcome = await new Promise<string>((resolve) => {
        const socket = connect({
          host: "127.0.0.1",
          port,
          minVersion: "TLSv1",
          maxVersion: "TLSv1.1",
          ca: ca.cert,
          servername: "localhost",
        });
        socket.once("secureConnect", () => {
          socket.destroy();
          resolve("connected");
        });
        socket.once("error", (err) => resolve(`refused: ${err.message}`));
      });
      expect(outcome).to.match(/^refused/);
    } finally {
      await server.shutdown();
    }
  });
});
