import { expect } from "chai";
import { pino } from "pino";
import { FakeClock } from "../../test/support/fake-clock.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { LeaderElector } from "./leader-election.js";

const LEASE = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease";
interface Lease {
  metadata: Record<string, unknown>;
  spec: { holderIdentity?: string; renewTime?: string };
}

/** Candidates on one fake clock (each may see it skewed), and who leads by their own callbacks. */
function candidates(clock: FakeClock, api: FakeKube) {
  const leading = new Set<string>();
  const log: string[] = [];
  const elector = (identity: string, skewMs = 0) =>
    new LeaderElector(
      api,
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
      {
        now: () => clock.now() + skewMs,
        after: (ms, fn) => clock.after(ms, fn),
        afterWith: (ms, fn, arg) => clock.afterWith(ms, fn, arg),
      },
    );
  return { leading, log, elector };
}

/** Replica "a" started alone and leading (300 ms in), with the rig to add others. */
async function aLeads() {
  const clock = new FakeClock();
  const api = new FakeKube(clock);
  const rig = candidates(clock, api);
  const a = rig.elector("a");
  a.start();
  await clock.advance(300);
  return { clock, api, ...rig, a };
}

/** A replica killed with SIGKILL: it neither renews nor releases, and no callback runs. */
function kill(e: LeaderElector, leading: Set<string>, identity: string) {
  e["stopped"] = true;
  e["tickTimer"]?.cancel();
  e["watchdog"]?.cancel();
  leading.delete(identity);
}

describe("LeaderElector", () => {
  it("never has two leaders at any moment while three replicas race for the lease for a minute", async () => {
    const clock = new FakeClock();
    const api = new FakeKube(clock);
    const { leading, elector } = candidates(clock, api);
    const all = ["a", "b", "c"].map((id) => elector(id));
    for (const e of all) e.start();
    let most = 0;
    await clock.walk(60_000, 10, () => (most = Math.max(most, leading.size)));
    expect(most).to.equal(1);
    expect(leading.size).to.equal(1);
    expect(api.peek<Lease>(LEASE)!.spec.holderIdentity).to.equal([...leading][0]);
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
    const lease = api.peek<Lease>(LEASE)!;
    api.seed(LEASE, {
      ...lease,
      spec: { ...lease.spec, renewTime: new Date(clock.now() + 3_600_000).toISOString() },
    });
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
    const lastRenew = Date.parse(String(api.peek<Lease>(LEASE)!.spec.renewTime));
    api.hanging = true;
    while (a.isLeader && clock.now() - lastRenew < 5000) await clock.advance(10);
    // Leadership ends at the renew deadline (600 ms) after the last renew started, while
    // the request is still hanging; the lease (1000 ms) has not expired for anyone else.
    expect(clock.now() - lastRenew).to.be.within(600, 610);
    expect(leading.size).to.equal(0);
    api.hanging = false;
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
