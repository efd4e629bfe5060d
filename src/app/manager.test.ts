import { expect } from "chai";
import { pino } from "pino";
import { FakeClock } from "../../test/support/fake-clock.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import type { Runnable } from "../util/runnable.js";
import { Manager } from "./manager.js";

const quiet = pino({ level: "silent" });

/** Runnables that write what happens to them into `log`. */
function recorder(log: string[]) {
  return (name: string, needsLeader = false): Runnable => ({
    name,
    needsLeader,
    start: async () => {
      await Promise.resolve();
      log.push(`start ${name}`);
    },
    stop: () => void log.push(`stop ${name}`),
  });
}

/** A replica of two on one fake apiserver and clock, electing with a short Lease. */
function replica(api: FakeKube, clock: FakeClock, identity: string, log: string[]) {
  const mgr = new Manager({
    client: api,
    logger: quiet,
    clock: {
      now: () => clock.now(),
      after: (ms, fn) => clock.after(ms, fn),
      afterWith: (ms, fn, arg) => clock.afterWith(ms, fn, arg),
    },
    leaderElection: {
      namespace: "ns",
      name: "lease",
      identity,
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
    },
  });
  const r = recorder(log);
  const holder = () =>
    api.peek<{ spec: { holderIdentity?: string } }>("/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease")
      ?.spec.holderIdentity;
  /** A leader runnable that notes who holds the Lease as it stops. */
  const writer = (name: string): Runnable => ({
    ...r(name, true),
    stop: () => void log.push(`stop ${name} (Lease held by ${holder()})`),
  });
  mgr.add(r(`${identity}.informer`));
  mgr.add(writer(`${identity}.status-writer`));
  mgr.add(r(`${identity}.api`));
  mgr.add(writer(`${identity}.workloads`));
  return mgr;
}

describe("Manager", () => {
  it("starts runnables in the order added and stops them in reverse; without an election it leads at once, after the others", async () => {
    const log: string[] = [];
    const r = recorder(log);
    const mgr = new Manager({ client: new FakeKube(), logger: quiet, leaderElection: false });
    mgr.add(r("informer"));
    mgr.add(r("status-writer", true));
    mgr.add(r("api"));
    mgr.add(r("workloads", true));
    await mgr.start();
    expect(mgr.isLeader).to.equal(true);
    await mgr.stop();
    expect(log).to.deep.equal([
      "start informer",
      "start api",
      "start status-writer",
      "start workloads",
      "stop workloads",
      "stop status-writer",
      "stop api",
      "stop informer",
    ]);
  });

  it("runs what needs leadership on the leader only; when the leader stops, it stops those before releasing the Lease, and the other replica starts them", async () => {
    const clock = new FakeClock();
    const api = new FakeKube(clock);
    const log: string[] = [];
    const a = replica(api, clock, "a", log);
    await a.start();
    await clock.advance(300);
    const b = replica(api, clock, "b", log);
    await b.start();
    await clock.advance(2000);
    expect([a.isLeader, b.isLeader]).to.deep.equal([true, false]);
    expect(log).to.deep.equal([
      "start a.informer",
      "start a.api",
      "start a.status-writer",
      "start a.workloads",
      "start b.informer",
      "start b.api",
    ]);
    log.length = 0;

    const stopping = a.stop();
    await clock.advance(0);
    await stopping;
    expect(log).to.deep.equal([
      "stop a.workloads (Lease held by a)",
      "stop a.status-writer (Lease held by a)",
      "stop a.api",
      "stop a.informer",
    ]);
    log.length = 0;
    await clock.advance(300); // the released Lease is taken at b's next retry
    expect(b.isLeader).to.equal(true);
    expect(log).to.deep.equal(["start b.status-writer", "start b.workloads"]);
    await b.stop();
  });

  it("starts a leader runnable whose start failed again, backing off, until it starts; stopping ends the tries", async () => {
    const clock = new FakeClock();
    const log: string[] = [];
    const r = recorder(log);
    let failures = 2;
    const mgr = new Manager({
      client: new FakeKube(),
      logger: quiet,
      leaderElection: false,
      clock: {
        now: () => clock.now(),
        after: (ms, fn) => clock.after(ms, fn),
        afterWith: (ms, fn, arg) => clock.afterWith(ms, fn, arg),
      },
    });
    mgr.add({
      ...r("registration", true),
      start: async () => {
        if (failures-- > 0) throw new Error("the apiserver said 503");
        log.push("start registration");
      },
    });
    mgr.add(r("status-writer", true));
    await mgr.start();
    expect(log).to.deep.equal(["stop registration", "start status-writer"]);
    await clock.advance(1000); // the first try again: between 0.5 and 1 s later; it fails
    expect(log).to.deep.equal(["stop registration", "start status-writer", "stop registration"]);
    await clock.advance(2000); // the second: 1 to 2 s after that
    expect(log.at(-1)).to.equal("start registration");
    await clock.advance(120_000);
    await mgr.stop();
    expect(log).to.deep.equal([
      "stop registration", // the first failed start, undone
      "start status-writer",
      "stop registration", // the second
      "start registration",
      "stop registration",
      "stop status-writer",
    ]);

    failures = Infinity;
    const again = new Manager({
      client: new FakeKube(),
      logger: quiet,
      leaderElection: false,
      clock: {
        now: () => clock.now(),
        after: (ms, fn) => clock.after(ms, fn),
        afterWith: (ms, fn, arg) => clock.afterWith(ms, fn, arg),
      },
    });
    let tries = 0;
    again.add({ ...r("never", true), start: () => Promise.reject(new Error(`try ${++tries}`)) });
    await again.start();
    await clock.advance(60_000);
    const before = tries;
    expect(before).to.be.within(6, 8); // the first, then 1, 2, 4, 8, 16, 30, 30 s apart, each between half and all of that
    await again.stop();
    await clock.advance(600_000);
    expect(tries).to.equal(before);
  });

  it("keeps one registry with the process metrics and whether this replica leads", async () => {
    const mgr = new Manager({ client: new FakeKube(), logger: quiet, leaderElection: false });
    await mgr.start();
    const text = await mgr.registry.metrics();
    expect(text).to.match(/^governor_leader 1$/m);
    expect(text).to.match(/^governor_process_cpu_seconds_total /m);
    await mgr.stop();
  });

  it("when leadership ends, tells every leader runnable to stop at once: none keeps writing while another drains", async () => {
    const log: string[] = [];
    let drained!: () => void;
    const mgr = new Manager({ client: new FakeKube(), logger: quiet, leaderElection: false });
    mgr.add(recorder(log)("status-writer", true));
    mgr.add({
      name: "workloads",
      needsLeader: true,
      start: () => void log.push("start workloads"),
      // In-flight reconciles finish first.
      stop: () =>
        new Promise<void>((resolve) => (drained = resolve)).then(() => void log.push("stop workloads")),
    });
    await mgr.start();
    log.length = 0;
    const stopping = mgr.stop();
    await new Promise((r) => setImmediate(r));
    expect(mgr.isLeader).to.equal(false);
    expect(log).to.deep.equal(["stop status-writer"]);
    drained();
    await stopping;
    expect(log).to.deep.equal(["stop status-writer", "stop workloads"]);
  });

  it("does not start what needs leadership when leadership ends before the change to leading is done", async () => {
    const log: string[] = [];
    const mgr = new Manager({ client: new FakeKube(), logger: quiet, leaderElection: false });
    mgr.add(recorder(log)("status-writer", true));
    const transition = (lead: boolean) =>
      (mgr as unknown as { transition(l: boolean): void }).transition(lead);
    transition(true);
    transition(false);
    await (mgr as unknown as { transitions: Promise<void> }).transitions;
    expect(mgr.isLeader).to.equal(false);
    expect(log).to.deep.equal([]);
  });
});
