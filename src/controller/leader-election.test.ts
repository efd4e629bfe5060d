import { expect } from "chai";
import { pino } from "pino";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import { FakeClock } from "../testing/fake-clock.js";
import { LeaderElector } from "./leader-election.js";

/** An in-memory Lease endpoint with optimistic concurrency and a switch that makes requests hang until their timeout. */
class FakeLeaseApi {
  lease?: { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  rv = 0;
  hang = false;

  constructor(private readonly clock: FakeClock) {}

  client(): KubeClient {
    const request = async (
      method: string,
      _path: string,
      opts: { body?: unknown; timeoutMs?: number } = {},
    ) => {
      if (this.hang)
        await new Promise((_, reject) =>
          this.clock.after(opts.timeoutMs ?? 30_000, () => reject(new Error("timed out"))),
        );
      const body = opts.body as
        { metadata: Record<string, unknown>; spec: Record<string, unknown> } | undefined;
      if (method === "GET") {
        if (!this.lease) throw new KubeApiError(404, "NotFound", "not found");
        return structuredClone(this.lease);
      }
      if (method === "POST" && this.lease) throw new KubeApiError(409, "AlreadyExists", "exists");
      if (method === "PUT" && body!.metadata.resourceVersion !== String(this.rv))
        throw new KubeApiError(409, "Conflict", "conflict");
      this.lease = { metadata: { ...body!.metadata, resourceVersion: String(++this.rv) }, spec: body!.spec };
      return structuredClone(this.lease);
    };
    return {
      request,
      get: (path: string) => request("GET", path),
      replace: (path: string, body: unknown) => request("PUT", path, { body }),
    } as unknown as KubeClient;
  }
}

/** Candidates on one fake clock (each may see it skewed), and who leads by their own callbacks. */
function candidates(clock: FakeClock, api: FakeLeaseApi) {
  const leading = new Set<string>();
  const log: string[] = [];
  const elector = (identity: string, skewMs = 0) =>
    new LeaderElector(
      api.client(),
      {
        namespace: "ns",
        name: "lease",
        identity,
        leaseDurationMs: 1000,
        renewDeadlineMs: 600,
        retryPeriodMs: 100,
        onStartedLeading: () => (leading.add(identity), log.push(`${identity}+`)),
        onStoppedLeading: () => (leading.delete(identity), log.push(`${identity}-`)),
      },
      pino({ level: "silent" }),
      { now: () => clock.now() + skewMs, after: (ms, fn) => clock.after(ms, fn) },
    );
  return { leading, log, elector };
}

/** Replica "a" started alone and leading (300 ms in), with the rig to add others. */
async function aLeads() {
  const clock = new FakeClock();
  const api = new FakeLeaseApi(clock);
  const rig = candidates(clock, api);
  const a = rig.elector("a");
  a.start();
  await clock.advance(300);
  return { clock, api, ...rig, a };
}

/** A replica killed with SIGKILL: it neither renews nor releases, and no callback runs. */
function kill(e: LeaderElector, leading: Set<string>, identity: string) {
  e["stopped"] = true;
  e["cancelTick"]?.();
  e["cancelWatchdog"]?.();
  leading.delete(identity);
}

describe("LeaderElector", () => {
  it("never has two leaders at any moment while three replicas race for the lease for a minute", async () => {
    const clock = new FakeClock();
    const api = new FakeLeaseApi(clock);
    const { leading, elector } = candidates(clock, api);
    const all = ["a", "b", "c"].map((id) => elector(id));
    for (const e of all) e.start();
    let most = 0;
    await clock.walk(60_000, 10, () => (most = Math.max(most, leading.size)));
    expect(most).to.equal(1);
    expect(leading.size).to.equal(1);
    expect(api.lease!.spec.holderIdentity).to.equal([...leading][0]);
    for (const e of all) await e.stop();
  });

  it("a follower whose clock is an hour ahead does not take over a lease its holder keeps renewing", async () => {
    const { clock, log, leading, elector, a } = await aLeads();
    const b = elector("b", 3_600_000);
    b.start();
    await clock.walk(30_000, 10, () => expect(leading.size).to.be.at.most(1));
    expect(log).to.deep.equal(["a+"]);
    await a.stop();
    await b.stop();
  });

  it("a follower takes over once the record has not changed for the lease duration on its own clock", async () => {
    const { clock, api, leading, elector, a } = await aLeads();
    // The holder disappears without releasing (a kill -9), its renewTime an hour in the future.
    kill(a, leading, "a");
    api.lease!.spec.renewTime = new Date(clock.now() + 3_600_000).toISOString();
    const started = clock.now();
    const b = elector("b");
    b.start();
    while (!b.isLeader && clock.now() - started < 3000) await clock.advance(10);
    // It saw the record at once, then waits out the lease (1 s) by its own clock, to the next retry.
    expect(clock.now() - started).to.be.within(1000, 1100);
    expect(b.isLeader).to.equal(true);
    await b.stop();
  });

  it("a leader whose renew hangs stops leading at the renew deadline, before the lease can expire elsewhere", async () => {
    const { clock, api, leading, a } = await aLeads();
    expect(a.isLeader).to.equal(true);
    const lastRenew = Date.parse(String(api.lease!.spec.renewTime));
    api.hang = true;
    while (a.isLeader && clock.now() - lastRenew < 5000) await clock.advance(10);
    // Leadership ends at the renew deadline (600 ms) after the last renew started, while
    // the request is still hanging; the lease (1000 ms) has not expired for anyone else.
    expect(clock.now() - lastRenew).to.be.within(600, 610);
    expect(leading.size).to.equal(0);
    api.hang = false;
    await a.stop();
  });

  it("a replica that stops releases the lease, and another leads within one retry period", async () => {
    const { clock, leading, elector, a } = await aLeads();
    const b = elector("b");
    b.start();
    await clock.advance(300);
    await a.stop();
    const stopped = clock.now();
    while (!b.isLeader && clock.now() - stopped < 5000) await clock.advance(10);
    expect(clock.now() - stopped).to.be.at.most(110);
    expect([...leading]).to.deep.equal(["b"]);
    await b.stop();
  });
});
