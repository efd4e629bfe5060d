import { expect } from "chai";
import { BackendBusyError, type MetricSource } from "../sources/source.js";
import { BackendBudgets } from "./backend-budget.js";
import { FakeClock } from "../../test/support/fake-clock.js";
import { Sampler, finiteOnly, idleIntervalMs } from "./sampler.js";

describe("samples", () => {
  it("are finite numbers: NaN or ±Inf from a source is an error, never a good sample", () => {
    for (const v of [NaN, Infinity, -Infinity])
      expect(() => finiteOnly({ kind: "scalar", value: v })).to.throw(/not a finite number/);
    expect(finiteOnly({ kind: "scalar", value: 3 })).to.deep.equal({ kind: "scalar", value: 3 });
  });

  it("leave out the objects whose value is not finite, keeping the others", () => {
    const out = finiteOnly({
      kind: "objects",
      values: new Map([
        ["web-1", 2],
        ["web-2", NaN],
        ["web-3", Infinity],
      ]),
    });
    expect(out.kind === "objects" && [...out.values]).to.deep.equal([["web-1", 2]]);
  });

  it("a source that never succeeded is asked at most once per interval, however many readers arrive", async () => {
    let queries = 0;
    const failing: MetricSource = {
      needsObjects: false,
      sample: async () => {
        queries++;
        await new Promise((r) => setTimeout(r, 20));
        throw new Error("connection refused");
      },
    };
    let now = 1_000_000;
    const sampler = new Sampler(failing, { intervalMs: 15_000, request: () => ({ namespace: "n" }) });
    try {
      // 100 readers at once while the first attempt is in flight: one query.
      await Promise.all(Array.from({ length: 100 }, () => sampler.sampleIfDue(now)));
      expect(queries).to.equal(1);
      expect(sampler.state.error).to.equal("connection refused");
      // 100 more, one after the other, within the interval: no new query.
      now = sampler.state.attemptedAtMs! + 1000;
      for (let i = 0; i < 100; i++) await sampler.sampleIfDue(now);
      expect(queries).to.equal(1);
      // An interval later, the next reader asks again.
      await sampler.sampleIfDue(now + 15_000);
      expect(queries).to.equal(2);
    } finally {
      await sampler.stop();
    }
  });

  it("starts scheduled attempts on the sample slot's grid, so samplers due together start together", async () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1), { slots: true });
    const starts: number[][] = [[], [], []];
    const source = (i: number): MetricSource => ({
      needsObjects: false,
      sample: async () => (starts[i]!.push(clock.now() - Date.UTC(2026, 0, 1)), { kind: "scalar", value: 1 }),
    });
    const jitters = [0.1, 0.5, 0.9];
    const samplers = [0, 1, 2].map(
      (i) =>
        new Sampler(source(i), {
          intervalMs: 1000,
          request: () => ({ namespace: "n" }),
          clock,
          random: () => jitters[i]!,
          ...(i === 2 ? { slotMs: 0 } : {}),
        }),
    );
    try {
      for (const s of samplers) s.start();
      await clock.advance(3000);
      // Jittered intervals of 920 and 1,000 ms both land on the 100 ms grid; without a slot, 1,080 ms.
      expect(starts[0]).to.deep.equal([0, 900, 1800, 2700]);
      expect(starts[1]).to.deep.equal([0, 1000, 2000, 3000]);
      expect(starts[2]).to.deep.equal([0, 1080, 2160]);
    } finally {
      for (const s of samplers) await s.stop();
    }
  });

  it("keeps an idle sampler's value younger than staleAfter with the largest slot allowed (held to a tenth of the interval)", async () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1), { slots: true });
    // Attempts that take most of the timeout (unevenly, so their ends fall anywhere in a
    // slot), the longest jitter, and nobody reading.
    let attempts = 0;
    const slow: MetricSource = {
      needsObjects: false,
      sample: () =>
        new Promise((r) => clock.after(attempts++ % 2 ? 999 : 745, () => r({ kind: "scalar", value: 1 }))),
    };
    const sampler = new Sampler(slow, {
      intervalMs: 1000,
      staleAfterMs: 3000,
      request: () => ({ namespace: "n" }),
      clock,
      random: () => 1,
      slotMs: 1000,
    });
    let oldest = 0;
    try {
      sampler.start();
      for (let t = 0; t < 300_000; t += 50) {
        await clock.advance(50);
        const last = sampler.state.last?.atMs;
        if (last !== undefined) oldest = Math.max(oldest, clock.now() - last);
      }
      expect(sampler.idle(), "idle after two minutes unread").to.equal(true);
      expect(oldest).to.be.below(3000);
    } finally {
      await sampler.stop();
    }
  });

  it("a reader waking an idle sampler is not held to the slot's grid", async () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1), { slots: true });
    const starts: number[] = [];
    const source: MetricSource = {
      needsObjects: false,
      sample: async () => (starts.push(clock.now() - Date.UTC(2026, 0, 1)), { kind: "scalar", value: 1 }),
    };
    const sampler = new Sampler(source, {
      intervalMs: 1000,
      staleAfterMs: 120_000,
      request: () => ({ namespace: "n" }),
      clock,
      random: () => 0.5,
    });
    try {
      sampler.start();
      await clock.advance(130_000); // idle: sampling every ~88 s
      const last = starts.at(-1)!;
      await clock.advance(last + 1051 - 130_000 > 0 ? last + 1051 - 130_000 : 51);
      const readAt = clock.now() - Date.UTC(2026, 0, 1);
      sampler.markRead();
      await clock.advance(2000);
      // An attempt at once (the last is more than an interval ago), not at the next multiple of 100 ms.
      expect(starts.filter((t) => t >= readAt)[0]).to.equal(readAt);
    } finally {
      await sampler.stop();
    }
  });

  it("polls its source every interval, ±10 % jitter, and never two queries at once", async () => {
    const clock = new FakeClock();
    const started: number[] = [];
    let inFlight = 0;
    let most = 0;
    const slow: MetricSource = {
      needsObjects: false,
      sample: async () => {
        started.push(clock.now());
        most = Math.max(most, ++inFlight);
        await new Promise((r) => clock.after(300, () => r(undefined)));
        inFlight--;
        return { kind: "scalar", value: 1 };
      },
    };
    for (const [random, gap] of [
      [0, 900 + 300],
      [0.5, 1000 + 300],
      [0.9999, 1100 + 300],
    ] as const) {
      started.length = 0;
      const sampler = new Sampler(slow, {
        intervalMs: 1000,
        request: () => ({ namespace: "n" }),
        clock,
        random: () => random,
      });
      sampler.start();
      await clock.advance(10_000);
      await sampler.stop();
      // The next interval starts when the last query has finished (here 300 ms each).
      const gaps = started.slice(1).map((t, i) => Math.round(t - started[i]!));
      expect(gaps, `jitter ${random}`).to.deep.equal(Array(gaps.length).fill(gap));
      expect(gaps.length).to.equal(Math.floor(10_000 / gap));
    }
    expect(most).to.equal(1);
  });

  describe("on a backend with a query budget", () => {
    it("asks its source nothing more once stopped, whenever the stop lands after a busy answer", async () => {
      for (let hops = 0; hops <= 8; hops++) {
        const clock = new FakeClock();
        const budgets = new BackendBudgets({ qps: 10, clock });
        let calls = 0;
        let rejectFirst!: (e: unknown) => void;
        const source: MetricSource = {
          needsObjects: false,
          backend: "http://prom:9090",
          sample: () => {
            calls++;
            if (calls === 1) return new Promise((_, reject) => (rejectFirst = reject));
            return Promise.resolve({ kind: "scalar", value: 1 });
          },
        };
        const s = new Sampler(source, {
          intervalMs: 10_000,
          request: () => ({ namespace: "team-a" }),
          budget: budgets.join("http://prom:9090", "team-a")!,
          clock,
          random: () => 0.5,
        });
        const sampled = s.sampleNow();
        await clock.settle();
        rejectFirst(new BackendBusyError("busy", 0));
        for (let i = 0; i < hops; i++) await Promise.resolve();
        const callsAtStop = calls;
        await s.stop();
        await clock.advance(5000);
        let settled = false;
        void sampled.then(() => (settled = true));
        await clock.settle();
        expect({ hops, callsAfterStop: calls - callsAtStop, settled }).to.deep.equal({
          hops,
          callsAfterStop: 0,
          settled: true,
        });
      }
    });

    /** `n` samplers of one namespace on one backend of `qps`, each asking a source that answers `answer`. */
    function budgetSetUp(n: number, qps: number, answer: (i: number) => Promise<number>) {
      const clock = new FakeClock();
      const budgets = new BackendBudgets({ qps, clock });
      const samplers = Array.from({ length: n }, (_, i) => {
        const source: MetricSource = {
          needsObjects: false,
          backend: "http://prom:9090",
          sample: async () => ({ kind: "scalar", value: await answer(i) }),
        };
        return new Sampler(source, {
          intervalMs: 10_000,
          request: () => ({ namespace: "team-a" }),
          budget: budgets.join("http://prom:9090", "team-a")!,
          clock,
          random: () => 0.5,
        });
      });
      return { clock, budgets, samplers };
    }

    it("stretches every sampler's interval alike when they need more than the budget, and says by how much", async () => {
      // 100 samplers every 10 s need 10 queries/s; the budget is 5.
      const asked = new Map<number, number>();
      const { clock, samplers } = budgetSetUp(100, 5, async (i) => {
        asked.set(i, (asked.get(i) ?? 0) + 1);
        return 1;
      });
      for (const s of samplers) s.start();
      await clock.advance(120_000);
      await Promise.all(samplers.map((s) => s.stop()));
      // 5/s for 120 s (+ the first second's burst): about 600 queries, spread evenly.
      const counts = [...asked.values()];
      expect(counts.reduce((a, b) => a + b, 0)).to.be.within(595, 611);
      expect(Math.max(...counts) - Math.min(...counts)).to.be.at.most(1);
      const throttled = samplers.map((s) => s.state.throttled);
      expect(throttled.every((t) => t !== undefined)).to.equal(true);
      expect(throttled[0]).to.include({ backend: "http://prom:9090", limitQps: 5, rateQps: 5, busy: false });
      // Each waits about 10 s for its turn: a 20 s period instead of 10 s.
      expect(throttled[0]!.waitedMs).to.be.within(8000, 12_000);
      expect(samplers.every((s) => s.state.error === undefined)).to.equal(true);
    });

    it("waits for another turn when the backend answers busy, instead of failing the sample", async () => {
      let calls = 0;
      const { clock, budgets, samplers } = budgetSetUp(1, 10, async () => {
        if (++calls <= 2)
          throw new BackendBusyError("GET http://prom:9090/api/v1/query: HTTP 429, the server is busy", 2000);
        return 7;
      });
      const [sampler] = samplers as [Sampler];
      sampler.start();
      await clock.advance(3999);
      expect(sampler.state.attemptedAtMs).to.equal(undefined); // paused 2 s after each busy answer
      await clock.advance(2);
      expect(calls).to.equal(3);
      expect(sampler.state).to.deep.include({ error: undefined, failures: 0 });
      expect(sampler.state.last?.value).to.deep.equal({ kind: "scalar", value: 7 });
      expect(sampler.state.throttled).to.include({ busy: true, waitedMs: 4000, limitQps: 10 });
      expect(budgets.uses()[0]).to.include({ busyAnswers: 2 });
      await sampler.stop();
    });

    it("fails the sample after three busy answers in a row, keeping its last good value", async () => {
      let busy = false;
      const { clock, samplers } = budgetSetUp(1, 10, async () => {
        if (busy)
          throw new BackendBusyError("GET http://prom:9090/api/v1/query: HTTP 429, the server is busy");
        return 7;
      });
      const [sampler] = samplers as [Sampler];
      sampler.start();
      await clock.advance(1);
      busy = true;
      await clock.advance(10_000 + 3000);
      expect(sampler.state.error).to.equal("GET http://prom:9090/api/v1/query: HTTP 429, the server is busy");
      expect(sampler.state.last?.value).to.deep.equal({ kind: "scalar", value: 7 });
      await sampler.stop();
    });

    it("is not throttled while the budget is enough", async () => {
      const { clock, samplers } = budgetSetUp(10, 5, async () => 1);
      for (const s of samplers) s.start();
      await clock.advance(60_000);
      await Promise.all(samplers.map((s) => s.stop()));
      expect(samplers.map((s) => s.state.throttled)).to.deep.equal(Array(10).fill(undefined));
    });
  });

  describe("while nobody reads (demand-aware)", () => {
    /** A sampler of a source that answers at once, every 15 s with staleAfter 2 m; the times it asked. */
    function idleSetUp() {
      const clock = new FakeClock();
      const asked: number[] = [];
      const source: MetricSource = {
        needsObjects: false,
        sample: async () => {
          asked.push(clock.now());
          return { kind: "scalar", value: 1 };
        },
      };
      const sampler = new Sampler(source, {
        intervalMs: 15_000,
        staleAfterMs: 120_000,
        request: () => ({ namespace: "n" }),
        clock,
        random: () => 0.5, // no jitter
      });
      const t0 = clock.now();
      const at = (ms: number) => (ms - t0) / 1000;
      return { clock, asked, sampler, seconds: () => asked.map(at), elapsed: () => at(clock.now()) };
    }

    it("samples every interval for 2 minutes after its start, then every 88 s; a value is never older than staleAfter", async () => {
      expect(idleIntervalMs(15_000, 120_000, 10_000)).to.equal(88_000);
      const { clock, sampler, seconds } = idleSetUp();
      sampler.start();
      await clock.advance(600_000);
      await sampler.stop();
      // 0…120 s every 15 s; the sample at 135 s finds it idle (no read since 0 s) and waits 88 s.
      expect(seconds()).to.deep.equal([0, 15, 30, 45, 60, 75, 90, 105, 120, 135, 223, 311, 399, 487, 575]);
      const gaps = seconds()
        .slice(1)
        .map((t, i) => t - seconds()[i]!);
      expect(Math.max(...gaps)).to.be.below(120);
    });

    it("keeps its interval while it is read, and the first read after idling brings the interval back at once", async () => {
      const { clock, sampler, seconds, elapsed } = idleSetUp();
      sampler.start();
      for (let s = 0; s < 300; s += 15) {
        await clock.advance(15_000);
        sampler.markRead(); // an HPA every 15 s
      }
      expect(seconds().length).to.equal(21); // 0 s and every 15 s to 300 s
      await clock.advance(420_000); // no reader since 300 s: idle after 420 s
      expect(seconds().slice(21)).to.deep.equal([315, 330, 345, 360, 375, 390, 405, 420, 435, 523, 611, 699]);
      // A read at 720 s: served the value of 699 s (younger than staleAfter); the last
      // attempt is more than an interval old, so it samples at once, then every 15 s.
      sampler.markRead();
      await clock.advance(30_000);
      expect(seconds().slice(33)).to.deep.equal([720, 735, 750]);
      // Idle again, a read 10 s after a sample: the next comes an interval after that sample.
      await clock.advance(300_000);
      const last = seconds().at(-1)!;
      await clock.advance((last + 10 - elapsed()) * 1000);
      sampler.markRead();
      await clock.advance(15_000);
      expect(seconds().at(-1)).to.equal(last + 15);
      await sampler.stop();
    });

    it("after a failure an idle sampler tries again at its interval, so the last good value does not go stale", async () => {
      const clock = new FakeClock();
      const asked: number[] = [];
      let failing = false;
      const sampler = new Sampler(
        {
          needsObjects: false,
          sample: async () => {
            asked.push(clock.now());
            if (failing) throw new Error("connection refused");
            return { kind: "scalar", value: 1 };
          },
        },
        {
          intervalMs: 15_000,
          staleAfterMs: 120_000,
          request: () => ({ namespace: "n" }),
          clock,
          random: () => 0.5,
        },
      );
      sampler.start();
      await clock.advance(300_000); // idle: every 88 s
      failing = true;
      const n = asked.length;
      await clock.advance(88_000 + 30_000);
      // The failed idle attempt is followed 15 s later by another, not 88 s.
      const after = asked.slice(n - 1).map((t) => (t - asked[n - 1]!) / 1000);
      expect(after.slice(0, 4)).to.deep.equal([0, 88, 103, 118]);
      await sampler.stop();
    });

    it("a sampler without staleAfter (per-selector) never slows down", async () => {
      const clock = new FakeClock();
      let asked = 0;
      const sampler = new Sampler(
        { needsObjects: false, sample: async () => (asked++, { kind: "scalar", value: 1 }) },
        { intervalMs: 15_000, request: () => ({ namespace: "n" }), clock, random: () => 0.5 },
      );
      sampler.start();
      await clock.advance(600_000);
      await sampler.stop();
      expect(asked).to.equal(41);
      expect(sampler.idle()).to.equal(false);
    });
  });

  it("gives up on a source that does not answer within its timeout, and says so", async () => {
    const clock = new FakeClock();
    let aborted = false;
    const hanging: MetricSource = {
      needsObjects: false,
      sample: (req) =>
        new Promise((_, reject) =>
          req.signal.addEventListener("abort", () => {
            aborted = true;
            reject(new Error("aborted"));
          }),
        ),
    };
    const sampler = new Sampler(hanging, {
      intervalMs: 15_000,
      timeoutMs: 2000,
      request: () => ({ namespace: "n" }),
      clock,
    });
    sampler.start();
    await clock.advance(1999);
    expect(sampler.state.failures).to.equal(0);
    await clock.advance(1);
    expect(sampler.state).to.include({ failures: 1, error: "timed out after 2000 ms" });
    expect(aborted, "the source's request is cancelled").to.equal(true);
    await sampler.stop();
  });
});

describe("a source's words", () => {
  it("reach the sampler's state on one line of at most 1 KiB, however long the source's error", async () => {
    const long = `line one\nline two ${"x".repeat(5 * 1024 * 1024)} internal-admin-token=s3cret`;
    const noisy: MetricSource = {
      needsObjects: false,
      sample: () => Promise.reject(new Error(long)),
    };
    const sampler = new Sampler(noisy, { intervalMs: 15_000, request: () => ({ namespace: "n" }) });
    try {
      await sampler.sampleNow();
      const error = sampler.state.error!;
      expect(error.length).to.be.at.most(1024);
      expect(error).to.match(/^line one line two x+… \(\d+ more characters\)$/);
      expect(error).not.to.include("s3cret");
    } finally {
      await sampler.stop();
    }
  });
});
