import { expect } from "chai";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { createCA, issueCertificate } from "../src/certs/certs.js";
import { type LoadGen, loadgenBinary, startCoreProbes, startLoadGen } from "./loadgen.js";

describe("bench load generator (Go)", function () {
  this.timeout(120_000); // the first build of bench/loadgen
  let server: Server;
  let base: string;
  let load: LoadGen;
  let client: { cert: string; key: string };
  const seen: { path: string; header?: string; clientCert: boolean }[] = [];

  before(async () => {
    const ca = await createCA("loadgen-test");
    const leaf = await issueCertificate(ca, {
      commonName: "localhost",
      ipAddresses: ["127.0.0.1"],
      usage: "server",
    });
    client = await issueCertificate(ca, { commonName: "bench", usage: "client" });
    server = createServer({ ...leaf, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const clientCert = Boolean((req.socket as TLSSocket).getPeerCertificate()?.subject);
      seen.push({ path: req.url!, header: req.headers["x-remote-user"] as string | undefined, clientCert });
      res.writeHead(req.url === "/fail" ? 503 : 200, { "content-type": "application/json" });
      res.end(JSON.stringify({ kind: "MetricValueList", items: [] }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    load = startLoadGen(loadgenBinary());
  });

  after(async () => {
    await load.stop();
    await new Promise((r) => server.close(r));
  });

  it("keeps every connection busy for the time asked and reports sub-millisecond percentiles", async () => {
    seen.length = 0;
    const r = await load.run({
      url: `${base}/apis/x?labelSelector=app%3Dweb`,
      connections: 4,
      seconds: 1,
      tls: client,
      headers: { "X-Remote-User": "system:admin" },
    });
    expect(r.answers).to.be.greaterThan(50);
    expect(r.rps).to.equal(r.answers); // one second
    expect(seen.length).to.be.at.least(r.answers);
    expect(seen.every((s) => s.path === "/apis/x?labelSelector=app%3Dweb")).to.equal(true);
    expect(seen.every((s) => s.header === "system:admin" && s.clientCert)).to.equal(true);
    expect(r.p50).to.be.greaterThan(0).and.at.most(r.p90);
    expect(r.p90).to.be.at.most(r.p99);
    expect(r.p50 % 1).to.not.equal(0); // not whole milliseconds
  });

  it("fails a load whose answers are not 2xx, saying how many", async () => {
    let err: Error | undefined;
    await load
      .run({ url: `${base}/fail`, connections: 2, seconds: 0.3, tls: client })
      .catch((e: Error) => (err = e));
    expect(err?.message).to.match(/[1-9]\d* non-2xx answers/);
  });

  it("fails a load to a port nobody listens on with connection errors, not a hang", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    let err: Error | undefined;
    await load
      .run({ url: `https://127.0.0.1:${port}/`, connections: 1, seconds: 0.3, tls: client })
      .catch((e: Error) => (err = e));
    expect(err?.message).to.match(/0 non-2xx answers, [1-9]\d* errors/);
  });

  it("refuses a plain-http url and a line break smuggled into a header", async () => {
    const errors: string[] = [];
    for (const r of [
      { url: "http://127.0.0.1:1/", connections: 1, seconds: 1, tls: client },
      { url: `${base}/`, connections: 1, seconds: 1, tls: client, headers: { "X-A": "b\r\nX-Injected: 1" } },
    ])
      await load.run(r).catch((e: Error) => errors.push(e.message));
    expect(errors).to.have.length(2);
    expect(errors[0]).to.match(/must be https/);
    expect(errors[1]).to.match(/line break/);
  });

  it("probes each core's speed as a positive rate", async () => {
    const probes = startCoreProbes(["0"], loadgenBinary());
    try {
      const [speed] = await probes.speeds();
      expect(speed).to.be.greaterThan(0);
    } finally {
      await probes.stop();
    }
  });
});
