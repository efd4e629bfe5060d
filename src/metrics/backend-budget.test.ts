import { expect } from "chai";
import { FakeClock } from "../../test/support/fake-clock.js";
import type { Clock } from "../util/clock.js";
import { BackendBudget, BackendBudgets, MAX_LABELLED_BACKENDS, MAX_PAUSE_MS } from "./backend-budget.js";

const never = new AbortController().signal;

/** Asks for `n` turns of `namespace` at once; `into` fills with the namespace and time of each turn, in order. */
function ask(budget: BackendBudget, clock: Clock, namespace: string, n: number, into: [string, number][]) {
  for (let i = 0; i < n; i++)
    void budget.turn(namespace, never).then(() => into.push([namespace, clock.now()]));
}

describe("a backend's query budget", () => {
  it("gives turns at its rate however many attempts ask at once, after a burst of one second's worth", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://prom:9090", 10, clock);
    const turns: [string, number][] = [];
    const t0 = clock.now();
    ask(budget, clock, "team-a", 100, turns);
    await clock.settle();
    expect(turns).to.have.length(10); // the burst
    for (let second = 1; second <= 5; second++) {
      await clock.advance(1000);
      expect(turns.length, `after ${second} s`).to.be.within(10 + 10 * second - 1, 10 + 10 * second);
    }
    await clock.advance(10_000);
    expect(turns).to.have.length(100);
    // Never more than 10 turns in any second after the burst.
    const times = turns.slice(10).map(([, t]) => t - t0);
    for (const [i, t] of times.entries()) {
      const inSecond = times.filter((u) => u > t - 1000 && u <= t).length;
      expect(inSecond, `turn ${i + 10} at ${t} ms`).to.be.at.most(10);
    }
    expect(budget.use("b")).to.include({ granted: 100, waiting: 0 });
  });

  it("takes turns round the namespaces: one with a thousand attempts waiting does not hold back another's", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://prom:9090", 10, clock);
    const turns: [string, number][] = [];
    ask(budget, clock, "big-team", 1000, turns);
    await clock.settle();
    const asked = clock.now();
    ask(budget, clock, "small-team", 3, turns);
    await clock.advance(1000);
    // The small team's three attempts went within the first 6 turns after they asked.
    const small = turns.filter(([ns]) => ns === "small-team").map(([, t]) => t - asked);
    expect(small).to.have.length(3);
    expect(Math.max(...small)).to.be.at.most(600);
    budget.close();
  });

  it("pauses the namespace that got a busy answer as long as the backend asks, halves its rate, and grows it back", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://prom:9090", 20, clock);
    budget.busy("team-a", 5000);
    budget.busy("team-a", 5000); // its other answers in flight say the same: one cut
    expect(budget.rateQps("team-a")).to.equal(10);
    const turns: [string, number][] = [];
    const asked = clock.now();
    ask(budget, clock, "team-a", 1, turns);
    await clock.advance(4999);
    expect(turns).to.have.length(0);
    await clock.advance(2);
    expect(turns).to.have.length(1);
    expect(turns[0]![1] - asked).to.equal(5000);
    // 2 % of the budget a second: back to 20 in 25 s.
    await clock.advance(12_500);
    expect(budget.rateQps("team-a")).to.be.closeTo(15, 0.01);
    await clock.advance(20_000);
    expect(budget.rateQps("team-a")).to.equal(20);
    expect(budget.use("b")).to.include({ busyAnswers: 2, cutNamespaces: 0 });
  });

  it("never lets one namespace's busy answers (its own server on a shared origin) pause or slow another's", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://shared-ingress", 10, clock);
    const turns: [string, number][] = [];
    // The attacker's endpoint answers 429 Retry-After: 60 to every request, every second.
    for (let s = 0; s < 30; s++) {
      ask(budget, clock, "attacker", 1, turns);
      budget.busy("attacker", 3_600_000);
      ask(budget, clock, "victim", 2, turns);
      await clock.advance(1000);
    }
    const victim = turns.filter(([ns]) => ns === "victim");
    expect(victim).to.have.length(60); // every one of its attempts, in the second it asked
    expect(budget.rateQps("victim")).to.equal(10);
    expect(budget.rateQps("attacker")).to.be.below(1);
    expect(budget.use("b").cutNamespaces).to.equal(1);
    budget.close();
  });

  it("pauses at most a minute, whatever the backend's Retry-After says", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://prom:9090", 5, clock);
    budget.busy("team-a", 24 * 3600 * 1000);
    const turns: [string, number][] = [];
    ask(budget, clock, "team-a", 1, turns);
    await clock.advance(MAX_PAUSE_MS + 1);
    expect(turns).to.have.length(1);
  });

  it("keeps a pause within its minute when the clock steps back an hour", async () => {
    const fake = new FakeClock();
    let offset = 0;
    const clock: Clock = {
      now: () => fake.now() + offset,
      after: (ms, fn) => fake.after(ms, fn),
      afterWith: (ms, fn, arg) => fake.afterWith(ms, fn, arg),
    };
    const budget = new BackendBudget("http://prom:9090", 5, clock);
    budget.busy("team-a", 30_000);
    offset = -3_600_000;
    const turns: [string, number][] = [];
    ask(budget, clock, "team-a", 1, turns);
    await fake.advance(MAX_PAUSE_MS + 1);
    expect(turns).to.have.length(1);
    expect(budget.use("b").waitedSeconds).to.be.at.least(0);
  });

  it("sets no timer more often than a minute apart at the smallest budget, after a busy answer", async () => {
    const fake = new FakeClock();
    let timers = 0;
    const clock: Clock = {
      now: () => fake.now(),
      after: (ms, fn) => (timers++, fake.after(ms, fn)),
      afterWith: (ms, fn, arg) => (timers++, fake.afterWith(ms, fn, arg)),
    };
    const budget = new BackendBudget("http://prom:9090", 0.01, clock);
    budget.busy("team-a");
    const turns: [string, number][] = [];
    ask(budget, clock, "team-a", 3, turns);
    await fake.advance(3_600_000);
    expect(timers).to.be.at.most(70);
    budget.close();
  });

  it("drops a stopped sampler's waiting attempt from the queue", async () => {
    const clock = new FakeClock();
    const budget = new BackendBudget("http://prom:9090", 1, clock);
    await budget.turn("team-a", never); // the burst
    const stop = new AbortController();
    const waiting = budget.turn("team-a", stop.signal);
    expect(budget.use("b").waiting).to.equal(1);
    stop.abort();
    expect(await waiting.then(String, (err: Error) => err.message)).to.equal("aborted");
    expect(budget.use("b").waiting).to.equal(0);
    await clock.advance(5000);
    expect(budget.use("b").granted).to.equal(1);
  });
});

describe("backend budgets", () => {
  it("share one budget among the samplers of one backend, give named backends their own figure, and none for 0", () => {
    const clock = new FakeClock();
    const budgets = new BackendBudgets({
      qps: 50,
      overrides: new Map([
        ["https://mimir.example", 400],
        ["http://unlimited:9090", 0],
      ]),
      clock,
    });
    const a = budgets.join("http://prom:9090", "team-a")!;
    const b = budgets.join("http://prom:9090", "team-b")!;
    const mimir = budgets.join("https://mimir.example", "team-a")!;
    expect(budgets.join("http://unlimited:9090", "team-a")).to.equal(undefined);
    expect([a.limitQps, mimir.limitQps]).to.deep.equal([50, 400]);
    a.busy();
    expect([a.rateQps(), b.rateQps()]).to.deep.equal([25, 50]);
    expect(budgets.uses().map((u) => u.label)).to.deep.equal(["http://prom:9090", "https://mimir.example"]);
    a.release();
    a.release(); // twice is once
    expect(budgets.uses()).to.have.length(2);
    b.release();
    expect(budgets.uses().map((u) => u.label)).to.deep.equal(["https://mimir.example"]);
    expect(new BackendBudgets({ qps: 0 }).join("http://prom:9090", "team-a")).to.equal(undefined);
  });

  it("label 32 backends on /metrics and sum the rest as other, whose counters never fall as backends come and go", async () => {
    const budgets = new BackendBudgets({ qps: 50, clock: new FakeClock() });
    const tickets = Array.from({ length: MAX_LABELLED_BACKENDS + 10 }, (_, i) =>
      budgets.join(`http://tenant-${i}.example`, "ns")!,
    );
    for (const t of tickets) await t.turn(never);
    const other = () => budgets.uses().find((u) => u.label === "other")!;
    expect(budgets.uses()).to.have.length(MAX_LABELLED_BACKENDS + 1);
    expect(other().granted).to.equal(10);
    for (const t of tickets.slice(-5)) t.release(); // five of "other" go
    expect(other().granted).to.equal(10);
    tickets[0]!.release(); // a named one goes: a new backend takes its label
    budgets.join("http://newcomer.example", "ns");
    expect(budgets.uses().map((u) => u.label)).to.include("http://newcomer.example");
    expect(other().granted).to.equal(10);
  });
});
