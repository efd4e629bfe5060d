import { expect } from "chai";
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
    await new Promise((r) => setTimeout(r, 100));
    q.shutDown();
    await workers;
    expect(maxRunning).to.equal(1);
    expect(runs).to.equal(2);
  });

  it("retries a failing key with growing delays, then forgets the failures after a success", async () => {
    const q = new WorkQueue({ initialBackoffMs: 10, maxBackoffMs: 1000 });
    const at: number[] = [];
    const delays: number[] = [];
    q.add("k");
    const workers = runWorkers(
      q,
      1,
      async () => {
        at.push(Date.now());
        if (at.length < 4) throw new Error("apiserver unavailable");
      },
      (_k, _e, retryIn) => delays.push(retryIn),
    );
    await new Promise((r) => setTimeout(r, 300));
    q.shutDown();
    await workers;
    expect(at).to.have.length(4);
    expect(delays).to.have.length(3);
    expect(delays[1]!).to.be.greaterThan(delays[0]! - 1);
    expect(delays[2]!).to.be.greaterThan(delays[1]! - 1);
    expect(q.addRateLimited("k")).to.be.at.most(10);
  });

  it("says a key is failing from its first failure until its next success", async () => {
    const q = new WorkQueue({ initialBackoffMs: 5, maxBackoffMs: 50 });
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
    await new Promise((r) => setTimeout(r, 100));
    q.shutDown();
    await workers;
    expect(seen).to.deep.equal([false, true]);
    expect(q.failing("k")).to.equal(false);
  });

  it("keeps the earliest of several delayed adds", async () => {
    const q = new WorkQueue();
    q.addAfter("k", 500);
    q.addAfter("k", 10);
    q.addAfter("k", 300);
    const started = Date.now();
    expect(await q.get()).to.equal("k");
    expect(Date.now() - started).to.be.below(200);
    q.shutDown();
  });
});
