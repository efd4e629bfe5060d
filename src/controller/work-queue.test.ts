import { expect } from "chai";
import { FakeClock } from "../../test/support/fake-clock.js";
import { WorkQueue, runWorkers } from "./work-queue.js";

describe("WorkQueue", () => {
  it("holds a key once however often it is added", async () => {
    const q = new WorkQueue();
    q.add("a");
    q.add("b");
    q.add("a");
    expect(q.length).to.equal(2);
    expect(await q.get()).to.equal("a");
    expect(await q.get()).to.equal("b");
  });

  it("never hands a key to two workers at once, and re-runs it if it changed meanwhile", async () => {
    const q = new WorkQueue();
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    q.add("k");
    const workers = runWorkers(
      q,
      4,
      async () => {
        running++;
        runs++;
        maxRunning = Math.max(maxRunning, running);
        if (runs === 1) q.add("k"); // an update arrives mid-reconcile
        await new Promise((r) => setTimeout(r, 20));
        running--;
      },
      () => {},
    );
    // Until the second run is done and nothing waits or runs: a third would be queued by then.
    while (!(runs === 2 && running === 0 && q.idle)) await new Promise((r) => setTimeout(r, 5));
    q.shutDown();
    await workers;
    expect(maxRunning).to.equal(1);
    expect(runs).to.equal(2);
  });

  it("lets the event loop take turns while thousands of reconciles need no I/O (a restart over mappings already right)", async () => {
    const q = new WorkQueue();
    for (let i = 0; i < 20_000; i++) q.add(`k${i}`);
    let done = 0;
    let spinUntil = 0;
    const doneAtTurns: number[] = [];
    // A timer-phase callback stands for a request, a probe or /metrics waiting for its turn.
    const turns = setInterval(() => doneAtTurns.push(done), 0);
    const workers = runWorkers(
      q,
      2,
      async () => {
        spinUntil = performance.now() + 0.05; // 50 µs of CPU, no await on I/O
        while (performance.now() < spinUntil);
        if (++done === 20_000) q.shutDown();
      },
      () => {},
    );
    await workers;
    clearInterval(turns);
    // 20,000 × 50 µs is a second of work: without turns nothing else runs until it is all done.
    expect(doneAtTurns.filter((d) => d > 0 && d < 20_000).length).to.be.greaterThan(10);
  });

  it("retries a failing key after delays that double up to the cap, then forgets the failures after a success", async () => {
    const clock = new FakeClock();
    // The jitter at its top: each delay is its whole ceiling (10, 20, 40 … capped at 100).
    const q = new WorkQueue({ initialBackoffMs: 10, maxBackoffMs: 100, clock, random: () => 0.9999 });
    const start = clock.now();
    const ranAt: number[] = [];
    const delays: number[] = [];
    q.add("k");
    const workers = runWorkers(
      q,
      1,
      async () => {
        ranAt.push(clock.now() - start);
        if (ranAt.length < 6) throw new Error("apiserver unavailable");
      },
      (_k, _e, retryIn) => delays.push(retryIn),
    );
    await clock.advance(10_000);
    q.shutDown();
    await workers;
    expect(delays).to.deep.equal([10, 20, 40, 80, 100]);
    expect(ranAt).to.deep.equal([0, 10, 30, 70, 150, 250]);
    expect(q.failing("k")).to.equal(false);
    expect(q.addRateLimited("k"), "a success starts over at the first delay").to.equal(10);
  });

  it("never retries sooner than half a delay's ceiling, however the jitter falls", async () => {
    for (const r of [0, 0.5, 0.9999]) {
      const q = new WorkQueue({
        initialBackoffMs: 100,
        maxBackoffMs: 800,
        clock: new FakeClock(),
        random: () => r,
      });
      const delays = Array.from({ length: 6 }, () => q.addRateLimited("k"));
      const ceilings = [100, 200, 400, 800, 800, 800];
      delays.forEach((d, i) =>
        expect(d, `retry ${i + 1} at jitter ${r}`).to.be.within(ceilings[i]! / 2, ceilings[i]!),
      );
      q.shutDown();
    }
  });

  it("says a key is failing from its first failure until its next success", async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ initialBackoffMs: 5, maxBackoffMs: 50, clock });
    let runs = 0;
    q.add("k");
    const seen: boolean[] = [];
    const workers = runWorkers(
      q,
      1,
      async () => {
        seen.push(q.failing("k"));
        if (++runs < 2) throw new Error("conflict");
      },
      () => undefined,
    );
    await clock.advance(100);
    q.shutDown();
    await workers;
    expect(seen).to.deep.equal([false, true]);
    expect(q.failing("k")).to.equal(false);
  });

  it("keeps the earliest of several delayed adds, and adds the key once", async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    q.addAfter("k", 500);
    q.addAfter("k", 10);
    q.addAfter("k", 300);
    await clock.advance(9);
    expect(q.length).to.equal(0);
    await clock.advance(1);
    expect(q.length).to.equal(1);
    await clock.advance(1000);
    expect(q.length).to.equal(1);
    expect(clock.waiting).to.equal(0);
    expect(await q.get()).to.equal("k");
    q.shutDown();
  });
});
