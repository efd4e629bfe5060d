import { expect } from "chai";
import type { IncomingMessage } from "node:http";
import { request } from "node:https";
import { gzipSync } from "node:zlib";
import { pino } from "pino";
import { SdkPusher } from "../../test/support/otlp.js";
import { eventually } from "../../test/support/eventually.js";
import { createCA, issueCertificate, type KeyPair } from "../certs/certs.js";
import { AnswerDecoder } from "../sources/answer-decoder.js";
import { OtlpStore } from "../sources/otlp-store.js";
import { ANONYMOUS, AuthenticationError, type Authenticator, type UserInfo } from "./authn.js";
import { OtlpReceiver } from "./otlp-receiver.js";
import { type OtlpPeer, OtlpRelay } from "./otlp-relay.js";

/** Tokens by who they belong to, as a TokenReview for Governor's audience would say. */
class Tokens implements Authenticator {
  reviews = 0;
  constructor(private readonly users: Record<string, string>) {}
  authenticate(req: IncomingMessage): Promise<UserInfo> {
    const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (!token) return Promise.resolve(ANONYMOUS);
    this.reviews++;
    const name = this.users[token];
    if (!name) return Promise.reject(new AuthenticationError("invalid bearer token"));
    return Promise.resolve({ name, groups: [], extra: {} });
  }
}

interface Answer {
  status: number;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

describe("OTLP receiver: pushes land in the pusher's own namespace, bounded before they cost anything", function () {
  this.timeout(20_000);
  let ca: KeyPair;
  let tls: KeyPair;
  let store: OtlpStore;
  let receiver: OtlpReceiver;
  let decoder: AnswerDecoder;
  let tokens: Tokens;
  let url: string;
  const counted: Record<string, number> = {};
  const statuses: number[] = [];

  before(async () => {
    ca = await createCA("otlp-test-ca");
    tls = await issueCertificate(ca, { commonName: "governor", dnsNames: ["localhost"], usage: "server" });
  });

  const start = async (extra: Partial<ConstructorParameters<typeof OtlpReceiver>[0]> = {}) => {
    store = new OtlpStore();
    decoder = new AnswerDecoder({ inlineBytes: 1024 });
    tokens = new Tokens({
      "team-a-token": "system:serviceaccount:team-a:pusher",
      "team-b-token": "system:serviceaccount:team-b:pusher",
      "person-token": "jane@example.com",
    });
    for (const k of Object.keys(counted)) delete counted[k];
    statuses.length = 0;
    receiver = new OtlpReceiver({
      store,
      authenticator: tokens,
      decoder,
      logger: pino({ level: "silent" }),
      tls,
      host: "127.0.0.1",
      port: 0,
      metrics: {
        request: (status) => statuses.push(status),
        points: (outcome, n) => (counted[outcome] = (counted[outcome] ?? 0) + n),
      },
      ...extra,
    });
    const { port } = await receiver.listen();
    url = `https://localhost:${port}/v1/metrics`;
  };
  afterEach(async () => {
    await receiver.close();
    await decoder.close();
  });

  const post = (
    body: Uint8Array | string,
    headers: Record<string, string>,
    method = "POST",
    path = "/v1/metrics",
  ) =>
    new Promise<Answer>((resolve, reject) => {
      const req = request(
        new URL(path, url),
        {
          method,
          ca: ca.cert,
          agent: false,
          headers: { "content-type": "application/x-protobuf", ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  const pusherOf = (pod: string, depth: number) => {
    const p = new SdkPusher({ "k8s.pod.name": pod, "k8s.namespace.name": "team-b" });
    p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(depth));
    p.meter.createObservableGauge("unread.metric").addCallback((r) => r.observe(1));
    return p;
  };

  for (const encoding of ["protobuf", "json"] as const)
    for (const gzip of [false, true])
      it(`takes the JavaScript SDK exporter's ${encoding}${gzip ? ", gzipped," : ""} push into its token's namespace, whatever the attributes say`, async () => {
        await start();
        store.select("team-a", "queue.depth");
        store.select("team-b", "queue.depth");
        const pusher = pusherOf("web-1", 42);
        const error = await pusher.export({ url, token: "team-a-token", ca: ca.cert, encoding, gzip });
        await pusher.shutdown();
        expect(error).to.equal(undefined);
        expect([...store.series("team-a", "queue.depth")].map((s) => s.current.value)).to.deep.equal([42]);
        expect([...store.series("team-b", "queue.depth")]).to.deep.equal([]);
        expect(counted).to.deep.equal({ kept: 1, dropped: 1, rejected: 0 });
      });

  it("refuses a push without a token before reading its body, and a token that is not a namespace's service account", async () => {
    await start();
    store.select("team-a", "queue.depth");
    const body = await pusherOf("web-1", 1).body("protobuf");
    const none = await post(body, {});
    expect(none.status).to.equal(401);
    expect(tokens.reviews).to.equal(0);
    expect(none.body.toString()).to.contain("push with a service-account token");
    expect((await post(body, { authorization: "Bearer forged" })).status).to.equal(401);
    const person = await post(body, {
      authorization: "Bearer person-token",
      "content-type": "application/json",
    });
    expect(person.status).to.equal(403);
    expect(JSON.parse(person.body.toString())).to.deep.equal({
      code: 7,
      message: "only a namespace's service accounts may push metrics",
    });
    expect(store.seriesCount("team-a")).to.equal(0);
  });

  it("answers what is not an OTLP metrics export with 404, 405, 415 or 400, before a token is reviewed where it can", async () => {
    await start();
    store.select("team-a", "m");
    const auth = { authorization: "Bearer team-a-token" };
    expect((await post("", auth, "GET")).status).to.equal(405);
    expect((await post("", auth, "POST", "/v1/traces")).status).to.equal(404);
    expect((await post("x", { ...auth, "content-type": "text/plain" })).status).to.equal(415);
    expect((await post("x", { ...auth, "content-encoding": "br" })).status).to.equal(415);
    expect(tokens.reviews).to.equal(0);
    const garbage = await post(new Uint8Array([0xff, 0xff, 0xff, 0xff]), auth);
    expect(garbage.status).to.equal(400);
    expect((await post("{not json", { ...auth, "content-type": "application/json" })).status).to.equal(400);
    expect((await post(new Uint8Array([1, 2, 3]), { ...auth, "content-encoding": "gzip" })).status).to.equal(
      400,
    );
  });

  it("refuses a body past the limit, and a small gzip body that would inflate past it, with 413", async () => {
    await start({ maxRequestBytes: 64 * 1024 });
    store.select("team-a", "m");
    const auth = { authorization: "Bearer team-a-token" };
    const big = await post(new Uint8Array(100 * 1024), auth);
    expect(big.status).to.equal(413);
    const bomb = gzipSync(new Uint8Array(50 * 1024 * 1024));
    expect(bomb.byteLength).to.be.below(64 * 1024);
    const inflated = await post(bomb, { ...auth, "content-encoding": "gzip" });
    expect(inflated.status).to.equal(413);
    expect(inflated.body.toString()).to.contain("inflates past 65536 bytes");
  });

  it("answers 429 with Retry-After to a namespace pushing more points than it may, and not to another", async () => {
    await start({ pointsPerSecond: 5 });
    for (const ns of ["team-a", "team-b"]) store.select(ns, "queue.depth");
    const p = new SdkPusher({ "k8s.pod.name": "web-1" });
    for (let i = 0; i < 20; i++)
      p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(i, { i }));
    const body = await p.body("protobuf");
    const first = await post(body, { authorization: "Bearer team-a-token" });
    expect(first.status).to.equal(200); // 20 points: the namespace is now in debt
    const second = await post(body, { authorization: "Bearer team-a-token" });
    expect(second.status).to.equal(429);
    expect(second.headers["retry-after"]).to.equal("1");
    expect((await post(body, { authorization: "Bearer team-b-token" })).status).to.equal(200);
    // Team A's mappings can say why: its refusal is kept, team B has none.
    expect(store.refusals("team-a", "queue.depth")).to.include({
      pushes: 1,
      reason: "namespace team-a pushes more data points per second than it may",
    });
    expect(store.refusals("team-b", "queue.depth")).to.equal(undefined);
  });

  it("says how many points it rejected and why in partial_success, and keeps the rest", async () => {
    await start();
    store.select("team-a", "g");
    const body = JSON.stringify({
      resourceMetrics: [
        {
          scopeMetrics: [
            {
              metrics: [
                {
                  name: "g",
                  gauge: {
                    dataPoints: [
                      { timeUnixNano: "1", asDouble: 1 },
                      {
                        timeUnixNano: "1",
                        asDouble: 2,
                        attributes: [{ key: "a", value: { stringValue: "x".repeat(2000) } }],
                      },
                    ],
                  },
                },
              ],
            },
          ],
        },
      ],
    });
    const answer = await post(body, {
      authorization: "Bearer team-a-token",
      "content-type": "application/json",
    });
    expect(answer.status).to.equal(200);
    expect(JSON.parse(answer.body.toString())).to.deep.equal({
      partialSuccess: {
        rejectedDataPoints: "1",
        errorMessage: "a point of g: attribute a is longer than 1024 characters",
      },
    });
    expect(store.seriesCount("team-a")).to.equal(1);
  });

  /** A push whose headers and first `sent` bytes of `length` are sent, the rest never. */
  const hold = (headers: Record<string, string>, length: number, sent: number) =>
    new Promise<{ answer: Promise<Answer>; abort: () => void }>((resolve) => {
      let req: ReturnType<typeof request>;
      const answer = new Promise<Answer>((done, fail) => {
        req = request(
          url,
          {
            method: "POST",
            ca: ca.cert,
            agent: false,
            headers: {
              "content-type": "application/x-protobuf",
              "content-length": String(length),
              ...headers,
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () =>
              done({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
            );
          },
        );
        req.on("error", fail);
        req.write(new Uint8Array(sent), () => resolve({ answer, abort: () => req.destroy() }));
      });
      answer.catch(() => {});
    });

  it("holds only a few pushes of a namespace and a bounded number of bytes at once, and answers the rest 429", async () => {
    await start({ maxInFlightBytes: 300 * 1024 });
    for (const ns of ["team-a", "team-b"]) store.select(ns, "queue.depth");
    const a = { authorization: "Bearer team-a-token" };
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await hold(a, 1000, 10));
    // Once the four are being read, a fifth waits for nothing: 429.
    const fifth = await eventually(async () => {
      const r = await post(new Uint8Array(10), a);
      expect(r.status).to.equal(429);
      return r;
    });
    expect(fifth.body.toString()).to.contain("has 4 pushes being handled already");
    // Team B's push of 299 KiB, with the 4,000 bytes held, would pass the 300 KiB allowed at once.
    const big = await post(new Uint8Array(299 * 1024), { authorization: "Bearer team-b-token" });
    expect(big.status).to.equal(429);
    expect(big.body.toString()).to.contain("too many pushes are being handled");
    for (const h of held) h.abort();
    await eventually(() => expect(statuses.filter((s) => s === 499)).to.have.length(4));
    expect(statuses).to.not.include(500);
    // Freed: a small push of team B goes through.
    expect(
      (await post(await pusherOf("web-1", 1).body("protobuf"), { authorization: "Bearer team-b-token" }))
        .status,
    ).to.equal(200);
  });

  it("reads and drops a push no mapping of its namespace reads, decoding nothing", async () => {
    await start();
    const answer = await post(new Uint8Array(100 * 1024).fill(0xff), {
      authorization: "Bearer team-a-token",
    });
    expect(answer.status).to.equal(200); // not decoded: the garbage is never looked at
    expect(counted).to.deep.equal({});
  });

  it("decodes a large export in the parse worker with the namespace as its tenant, the event loop free meanwhile", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    await start({ maxRequestBytes: 8 * 1024 * 1024 });
    store.select("team-a", "queue.depth");
    // Ten pods' exports of 2,000 series each (the SDK's own cardinality limit) in one body:
    // concatenated protobuf messages are one message with every resource in it.
    const parts: Uint8Array[] = [];
    for (let pod = 0; pod < 10; pod++) {
      const p = new SdkPusher({ "k8s.pod.name": `web-${pod}` });
      p.meter.createObservableGauge("queue.depth").addCallback((r) => {
        for (let i = 0; i < 1999; i++) r.observe(i, { queue: `queue-${i}`, zone: "zone-a" });
      });
      parts.push(await p.body("protobuf"));
    }
    const body = Buffer.concat(parts);
    expect(body.byteLength).to.be.above(1024 * 1024);
    let ticks = 0;
    let longest = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const t = performance.now();
      longest = Math.max(longest, t - last);
      last = t;
      ticks++;
    }, 1);
    const answer = await post(body, { authorization: "Bearer team-a-token" });
    clearInterval(timer);
    expect(answer.status, answer.body.toString()).to.equal(200);
    expect(store.seriesCount("team-a")).to.equal(10_000); // the namespace's limit
    expect(JSON.stringify(answer.body.toString("latin1"))).to.contain("keeps as many series as it may");
    expect(ticks).to.be.above(10);
    expect(longest).to.be.below(100);
  });
});

describe("OTLP between replicas: every replica keeps every push, and takes relays from Governor's own replicas only", function () {
  this.timeout(20_000);
  let ca: KeyPair;
  let serving: KeyPair;
  const closers: (() => Promise<void> | void)[] = [];
  const silent = pino({ level: "silent" });

  before(async () => {
    ca = await createCA("otlp-test-ca");
    serving = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "server",
    });
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  /** One replica: its receiver, store, what it answered, and where its relay sends. */
  const replica = async (tls = serving) => {
    const store = new OtlpStore();
    store.select("team-a", "queue.depth");
    const decoder = new AnswerDecoder({ inlineBytes: 1024 });
    const statuses: number[] = [];
    const outcomes: string[] = [];
    const peers: OtlpPeer[] = [];
    const relay = new OtlpRelay({
      peers: () => peers,
      serverName: "localhost",
      certificate: () => tls,
      ca: () => ca.cert,
      logger: silent,
      outcome: (o) => outcomes.push(o),
    });
    const receiver = new OtlpReceiver({
      store,
      authenticator: new Tokens({ "team-a-token": "system:serviceaccount:team-a:pusher" }),
      decoder,
      logger: silent,
      tls,
      host: "127.0.0.1",
      port: 0,
      relay,
      metrics: { request: (s) => statuses.push(s), points: () => {} },
    });
    const { port } = await receiver.listen();
    closers.push(
      () => receiver.close(),
      () => decoder.close(),
      () => relay.close(),
    );
    return { store, statuses, outcomes, peers, port, url: `https://localhost:${port}/v1/metrics` };
  };
  const gauge = async (depth: number) => {
    const p = new SdkPusher({ "k8s.pod.name": "web-1" });
    p.meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(depth));
    closers.push(() => p.shutdown());
    return p;
  };
  const depths = (store: OtlpStore) => [...store.series("team-a", "queue.depth")].map((s) => s.current.value);

  it("a push one replica keeps is kept by the other too, which the aggregator may ask instead; a relay is never relayed back", async () => {
    const a = await replica();
    const b = await replica();
    a.peers.push({ name: "b", ip: "127.0.0.1", port: b.port });
    b.peers.push({ name: "a", ip: "127.0.0.1", port: a.port });
    const p = await gauge(42);
    expect(
      await p.export({ url: a.url, token: "team-a-token", ca: ca.cert, encoding: "protobuf", gzip: true }),
    ).to.equal(undefined);
    expect(depths(a.store)).to.deep.equal([42]);
    await eventually(() => expect(depths(b.store)).to.deep.equal([42]), { what: "the relay kept by b" });
    expect(a.outcomes).to.deep.equal(["sent"]);
    expect(b.statuses).to.deep.equal([200]);
    expect(a.statuses, "a got the push and no relay back").to.deep.equal([200]);
    expect(b.outcomes).to.deep.equal([]);
  });

  it("refuses a relay from anyone without Governor's own certificate: a tenant's token, or another certificate of Governor's CA", async () => {
    const b = await replica();
    const body = await (await gauge(7)).body("protobuf");
    const relayTo = (cert?: KeyPair) =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          b.url,
          {
            method: "POST",
            ca: ca.cert,
            agent: false,
            ...(cert ? { cert: cert.cert, key: cert.key } : {}),
            headers: {
              "content-type": "application/x-protobuf",
              authorization: "Bearer team-a-token",
              "x-governor-relay-namespace": "team-a",
            },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode!);
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    expect(await relayTo()).to.equal(403);
    const other = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "client",
    });
    expect(await relayTo(other)).to.equal(403);
    expect(b.store.seriesCount("team-a")).to.equal(0);
    expect(await relayTo(serving)).to.equal(200); // what a replica presents
    expect(depths(b.store)).to.deep.equal([7]);
  });

  it("sends nothing to a peer that cannot prove it is a replica (a certificate not from Governor's CA)", async () => {
    const a = await replica();
    const impostorCa = await createCA("someone-else");
    const impostor = await replica(
      await issueCertificate(impostorCa, {
        commonName: "governor",
        dnsNames: ["localhost"],
        usage: "server",
      }),
    );
    a.peers.push({ name: "impostor", ip: "127.0.0.1", port: impostor.port });
    const p = await gauge(5);
    expect(await p.export({ url: a.url, token: "team-a-token", ca: ca.cert, encoding: "json" })).to.equal(
      undefined,
    );
    await eventually(() => expect(a.outcomes).to.deep.equal(["failed"]), {
      what: "the relay refused by TLS",
    });
    expect(impostor.statuses).to.deep.equal([]);
    expect(impostor.store.seriesCount("team-a")).to.equal(0);
  });
});
