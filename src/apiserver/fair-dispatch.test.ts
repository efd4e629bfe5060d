import { expect } from "chai";
import { FairDispatch } from "./fair-dispatch.js";
import type { Cancellation } from "../util/deadline.js";

/** A dispatcher on a fake clock whose turns run when the test says. */
function rig(opts: { sliceMs?: number; maxQueuedPerUser?: number; costMs?: number } = {}) {
  let clock = 0;
  const turns: (() => void)[] = [];
  const ran: string[] = [];
  const fair = new FairDispatch({
    sliceMs: opts.sliceMs ?? 2,
    maxQueuedPerUser: opts.maxQueuedPerUser,
    now: () => clock,
    defer: (fn) => turns.push(fn),
  });
  const submit = (user: string, id: string, cancel?: Cancellation) =>
    fair.submit(
      user,
      async () => {
        ran.push(id);
        clock += opts.costMs ?? 1; // each answer takes this long on the loop
        return id;
      },
      cancel,
    );
  const turn = async () => {
    turns.shift()?.();
    await new Promise((r) => setImmediate(r)); // let answers settle
  };
  return { fair, submit, turn, ran, turns };
}

describe("fair dispatch across users", () => {
  it("answers a user's first request of a turn at once and queues the rest of that turn", async () => {
    const { submit, turn, ran } = rig();
    void submit("hpa", "h1");
    void submit("hpa", "h2");
    expect(ran).to.deep.equal(["h1"]);
    await turn();
    expect(ran).to.deep.equal(["h1", "h2"]);
  });

  it("lets a quiet user's request through at once however much another user has waiting", async () => {
    const { submit, ran } = rig();
    for (let i = 0; i < 50; i++) void submit("tenant", `t${i}`);
    void submit("hpa", "h1");
    expect(ran).to.deep.equal(["t0", "h1"]);
  });

  it("drains the queues round-robin, one request per user, in slices that go back to I/O", async () => {
    const { submit, turn, ran, turns } = rig({ sliceMs: 3, costMs: 1 });
    for (let i = 0; i < 4; i++) void submit("tenant", `t${i}`);
    for (let i = 0; i < 3; i++) void submit("other", `o${i}`);
    expect(ran).to.deep.equal(["t0", "o0"]);
    await turn();
    expect(ran.slice(2)).to.deep.equal(["t1", "o1", "t2"]); // 3 ms slice of 1-ms answers
    expect(turns, "another turn is scheduled for the rest").to.have.length(1);
    await turn();
    expect(ran.slice(5)).to.deep.equal(["o2", "t3"]);
  });

  it("answers each queued request with its own result, in order for one user", async () => {
    const { submit, turn } = rig();
    const answers = [submit("u", "a")!, submit("u", "b")!, submit("u", "c")!];
    await turn();
    expect(await Promise.all(answers)).to.deep.equal(["a", "b", "c"]);
  });

  it("refuses a user whose queue is full, and only that user", () => {
    const { submit } = rig({ maxQueuedPerUser: 2 });
    void submit("tenant", "t0"); // at once
    void submit("tenant", "t1");
    void submit("tenant", "t2");
    expect(submit("tenant", "t3")).to.equal(undefined);
    expect(submit("hpa", "h1")).to.not.equal(undefined);
  });

  it("drops a request cancelled while it waits, without running it", async () => {
    const { submit, turn, ran, fair } = rig();
    void submit("u", "a");
    const controller = new AbortController();
    const waiting = submit("u", "b", { signal: controller.signal });
    controller.abort(new Error("client gone"));
    let reason: unknown;
    await waiting!.catch((e: unknown) => (reason = e));
    expect((reason as Error).message).to.equal("client gone");
    expect(fair.waiting).to.equal(0);
    await turn();
    expect(ran).to.deep.equal(["a"]);
  });

  it("drops a request whose client left while it waited at its turn, without arming a deadline for it", async () => {
    const { submit, turn, ran } = rig();
    void submit("u", "a");
    const client: { gone?: Error } = {};
    let signalReads = 0;
    const cancel: Cancellation = {
      get signal() {
        signalReads++;
        return new AbortController().signal;
      },
      reason: () => client.gone,
    };
    const waiting = submit("u", "b", cancel);
    void submit("u", "c");
    client.gone = new Error("client gone");
    let reason: unknown;
    const settled = waiting!.catch((e: unknown) => (reason = e));
    await turn();
    await settled;
    expect((reason as Error).message).to.equal("client gone");
    expect(ran).to.deep.equal(["a", "c"]);
    expect(signalReads, "a queued request arms nothing").to.equal(0);
  });

  it("passes a failing answer's error to its caller", async () => {
    const fair = new FairDispatch({ defer: (fn) => setImmediate(fn) });
    let err: unknown;
    await fair.submit("u", () => Promise.reject(new Error("boom")))!.catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal("boom");
  });

  it("when turned off, runs every request as it arrives", () => {
    const ran: string[] = [];
    const fair = new FairDispatch({ enabled: false, defer: () => expect.fail("no turn is scheduled") });
    for (const id of ["t1", "t2", "t3"])
      void fair.submit("tenant", async () => {
        ran.push(id);
      });
    expect(ran).to.deep.equal(["t1", "t2", "t3"]);
  });
});
