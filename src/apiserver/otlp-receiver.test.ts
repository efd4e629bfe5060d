import { expect } from "chai";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createServer, request } from "node:https";
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
  const replica = async (
    tls = serving,
    bundle = () => ca.cert,
    extra: Partial<ConstructorParameters<typeof OtlpReceiver>[0]> = {},
  ) => {
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
      ca: bundle,
      logger: silent,
      outcome: (o) => outcomes.push(o),
      // As serve-otlp.ts has it: said on the namespace's mappings.
      unshared: (ns, reason) => store.refused(ns, undefined, { pushes: 1, points: 0, reason }),
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
      ...extra,
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

  it("refuses a relay from anyone without a certificate of Governor's CA for its Service: a tenant's token, a certificate for another name or of another CA", async () => {
    const b = await replica();
    const body = await (await gauge(7)).body("protobuf");
    const relayTo = (cert?: KeyPair, namespace = "team-a") =>
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
              "x-governor-relay-namespace": namespace,
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
    const forAnotherName = await issueCertificate(ca, {
      commonName: "governor",
      dnsNames: ["someone.example"],
      usage: "server",
    });
    expect(await relayTo(forAnotherName)).to.equal(403);
    const ofAnotherCa = await issueCertificate(await createCA("someone-else"), {
      commonName: "governor",
      dnsNames: ["localhost"],
      usage: "server",
    });
    expect(await relayTo(ofAnotherCa)).to.equal(403);
    expect(b.store.seriesCount("team-a")).to.equal(0);
    expect(await relayTo(serving, "team-a, team-b")).to.equal(400); // a header given twice
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
  it("keeps sharing across a CA rotation: a replica already serving the new CA's certificate is taken by one still on the old", async () => {
    const next = await createCA("otlp-test-ca-next");
    const bundle = () => `${ca.cert}${next.cert}`;
    const rotated = await replica(
      await issueCertificate(next, { commonName: "governor", dnsNames: ["localhost"], usage: "server" }),
      bundle,
    );
    const old = await replica(serving, bundle);
    rotated.peers.push({ name: "old", ip: "127.0.0.1", port: old.port });
    old.peers.push({ name: "rotated", ip: "127.0.0.1", port: rotated.port });
    const p = await gauge(3);
    for (const [from, to] of [
      [rotated, old],
      [old, rotated],
    ] as const) {
      expect(
        await p.export({ url: from.url, token: "team-a-token", ca: bundle(), encoding: "protobuf" }),
      ).to.equal(undefined);
      await eventually(() => expect(depths(to.store)).to.deep.equal([3]), { what: "the relay across CAs" });
    }
  });

  it("shares a namespace's pushes only a few at a time, so one namespace flooding a slow peer does not crowd another's out", async () => {
    // A peer that takes the connection and never answers: every relay to it stays in flight.
    const held: ServerResponse[] = [];
    const slow = createServer({ cert: serving.cert, key: serving.key }, (req, res) => {
      req.resume();
      held.push(res);
    });
    await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
    closers.push(
      () => new Promise<void>((resolve) => slow.close(() => resolve())),
      () => slow.closeAllConnections(),
      () => held.forEach((r) => r.destroy()),
    );
    const outcomes: string[] = [];
    const unshared: string[] = [];
    const peer = {
      name: "slow",
      ip: "127.0.0.1",
      port: (slow.address() as AddressInfo).port,
    };
    const relay = new OtlpRelay({
      peers: () => [peer],
      serverName: "localhost",
      certificate: () => serving,
      ca: () => ca.cert,
      logger: silent,
      outcome: (o) => outcomes.push(o),
      unshared: (ns, reason) => unshared.push(`${ns}: ${reason}`),
    });
    closers.push(() => relay.close());
    const body = Buffer.from("x");
    const headers = { contentType: "application/x-protobuf", contentEncoding: "identity" };
    for (let i = 0; i < 20; i++) relay.send("flood", body, headers);
    relay.send("quiet", body, headers);
    expect(relay.inFlightTo(peer, "flood")).to.equal(4);
    expect(relay.inFlightTo(peer, "quiet")).to.equal(1);
    expect(outcomes).to.deep.equal(Array(16).fill("dropped"));
    expect(new Set(unshared)).to.deep.equal(
      new Set(["flood: not shared with replica slow: too many of its pushes are being shared already"]),
    );
  });
  it("a relayed push is not charged to the namespace's rate again, but meets the receiver's other bounds; a refusal is said on both replicas' mappings", async () => {
    const a = await replica(serving, () => ca.cert, { pointsPerSecond: 1_000 });
    const b = await replica(serving, () => ca.cert, { pointsPerSecond: 1 });
    a.peers.push({ name: "b", ip: "127.0.0.1", port: b.port });
    const p = await gauge(1);
    for (let i = 0; i < 5; i++)
      expect(
        await p.export({ url: a.url, token: "team-a-token", ca: ca.cert, encoding: "protobuf" }),
      ).to.equal(undefined);
    await eventually(() => expect(b.statuses).to.deep.equal([200, 200, 200, 200, 200]), {
      what: "five relays taken within b's own rate of 1 point a second",
    });
    const full = await replica(serving, () => ca.cert, { maxInFlightBytes: 1 });
    a.peers.splice(0, 1, { name: "full", ip: "127.0.0.1", port: full.port });
    expect(await p.export({ url: a.url, token: "team-a-token", ca: ca.cert, encoding: "protobuf" })).to.equal(
      undefined,
    );
    await eventually(() => expect(a.outcomes.at(-1)).to.equal("failed"), { what: "the relay refused" });
    expect(full.store.refusals("team-a", "queue.depth")?.reason).to.equal(
      "a push shared by another replica: too many pushes are being handled; try again",
    );
    expect(a.store.refusals("team-a", "queue.depth")?.reason).to.equal(
      "not shared with replica full: it answered 429",
    );
  });
});
