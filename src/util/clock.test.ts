import { expect } from "chai";
import { TimerHeap, type TimerHost } from "./clock.js";

/** A host whose one timer a test fires by moving time on; counts the timers it was asked to set. */
function fakeHost() {
  let t = 0;
  let armed: { at: number; fn: () => void } | undefined;
  let sets = 0;
  let most = 0;
  const host: TimerHost = {
    now: () => t,
    set(ms, fn) {
      sets++;
      if (armed) most = 2; // set while another is armed
      most = Math.max(most, 1);
      armed = { at: t + ms, fn };
      return armed;
    },
    clear(handle) {
      if (armed === handle) armed = undefined;
    },
  };
  return {
    host,
    get sets() {
      return sets;
    },
    get armed() {
      return armed;
    },
    /** The most host timers armed at once. */
    get most() {
      return most;
    },
    /** Moves time to `to`, firing the host timer each time it comes due on the way. */
    advance(to: number) {
      while (armed && armed.at <= to) {
        t = armed.at;
        const { fn } = armed;
        armed = undefined;
        fn();
      }
      t = to;
    },
  };
}

describe("TimerHeap (the system clock's timers)", () => {
  it("runs timers given a slot at the slot's nearest multiple, those in one slot together in one firing", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const ran: [timer: number, at: number][] = [];
    const firings = new Set<number>();
    // Due at 1,020 … 1,190: to 1,000, then two to 1,100 and two to 1,200.
    [1020, 1060, 1149, 1151, 1190].forEach((ms, i) =>
      heap.after(ms, () => (ran.push([i, h.host.now()]), firings.add(h.host.now())), 100),
    );
    heap.after(1000, () => ran.push([9, h.host.now()])); // no slot: at its own moment
    h.advance(5000);
    expect(ran).to.deep.equal([
      [0, 1000],
      [9, 1000],
      [1, 1100],
      [2, 1100],
      [3, 1200],
      [4, 1200],
    ]);
    expect(h.sets, "one host timer a slot").to.equal(3);
  });

  it("never runs a slotted timer before now: one whose nearest multiple has passed runs at once", () => {
    const h = fakeHost();
    h.advance(1049);
    const heap = new TimerHeap(h.host);
    const ran: number[] = [];
    heap.after(0, () => ran.push(h.host.now()), 100); // nearest multiple 1,000 has passed: at once
    heap.after(40, () => ran.push(h.host.now()), 100); // 1,089 → 1,100
    h.advance(2000);
    expect(ran).to.deep.equal([1050, 1100]); // the host's shortest timer is 1 ms
  });

  it("runs 10,000 timers in order of due time, then of scheduling, on one host timer at a time", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const ran: number[] = [];
    const due = Array.from({ length: 10_000 }, (_, i) => (i * 7919) % 5000);
    due.forEach((ms, i) => heap.after(ms, () => ran.push(i)));
    h.advance(10_000);
    const expected = due.map((ms, i) => [ms, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    expect(ran).to.deep.equal(expected.map(([, i]) => i));
    expect(heap.size).to.equal(0);
    expect(h.armed, "nothing left armed").to.equal(undefined);
    expect(h.most).to.equal(1);
    expect(h.sets, "armed for each distinct due time and each new earliest, not per timer").to.be.below(5100);
  });

  it("calls one shared function with each timer's own argument, in order, and none cancelled", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const ran: string[] = [];
    const record = (key: string) => ran.push(key);
    heap.afterWith(30, record, "c");
    heap.afterWith(10, record, "a");
    heap.afterWith(20, record, "b").cancel();
    heap.after(15, () => ran.push("plain"));
    h.advance(100);
    expect(ran).to.deep.equal(["a", "plain", "c"]);
  });

  it("lets go of a timer's argument once it is cancelled or has run, though its entry waits in the heap", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const held = (t: unknown) => (t as { arg: unknown }).arg;
    const cancelled = heap.afterWith(1000, () => {}, { big: "a stopped sampler" });
    const ran = heap.afterWith(10, () => {}, { big: "another" });
    cancelled.cancel();
    expect(held(cancelled)).to.equal(undefined);
    expect(heap.size, "still in the heap until it comes up").to.equal(2);
    h.advance(20);
    expect(held(ran)).to.equal(undefined);
  });

  it("never runs a cancelled timer, and drops cancelled ones once they are most of the heap", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const ran: number[] = [];
    const timers = Array.from({ length: 1000 }, (_, i) => heap.after(100 + i, () => ran.push(i)));
    timers.forEach((timer, i) => i % 10 !== 0 && timer.cancel());
    timers[0]!.cancel(); // twice: counted once
    timers[0]!.cancel();
    expect(heap.size, "compacted").to.be.below(200);
    h.advance(5000);
    expect(ran).to.deep.equal(Array.from({ length: 99 }, (_, i) => (i + 1) * 10));
  });

  it("re-arms for an earlier timer and lets a timer set at 0 ms from a running one wait for the next turn", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    const ran: string[] = [];
    heap.after(1000, () => ran.push("late"));
    heap.after(10, () => ran.push("early"));
    expect(h.armed?.at).to.equal(10);
    let again = 0;
    const loop = () => {
      ran.push("loop");
      if (++again < 3) heap.after(0, loop);
    };
    heap.after(20, loop);
    h.advance(20);
    expect(ran, "one turn runs the loop once").to.deep.equal(["early", "loop"]);
    h.advance(2000);
    expect(ran).to.deep.equal(["early", "loop", "loop", "loop", "late"]);
  });

  it("caps the host timer at Node's longest timeout and still runs a later timer when due", () => {
    const h = fakeHost();
    const heap = new TimerHeap(h.host);
    let ran = false;
    heap.after(3 * 2 ** 31, () => (ran = true));
    expect(h.armed!.at).to.equal(2 ** 31 - 1);
    h.advance(3 * 2 ** 31 - 1);
    expect(ran).to.equal(false);
    h.advance(3 * 2 ** 31);
    expect(ran).to.equal(true);
  });

  it("reports a timer that throws as an uncaught exception and keeps the others running", async () => {
    const heap = new TimerHeap(); // Node's timers
    const ran: string[] = [];
    const uncaught = new Promise<unknown>((resolve) => {
      const listeners = process.listeners("uncaughtException");
      process.removeAllListeners("uncaughtException");
      process.once("uncaughtException", (err) => {
        for (const l of listeners) process.on("uncaughtException", l);
        resolve(err);
      });
    });
    heap.after(5, () => {
      throw new Error("boom");
    });
    heap.after(5, () => ran.push("after"));
    heap.after(30, () => ran.push("later"));
    expect(((await uncaught) as Error).message).to.equal("boom");
    await new Promise((r) => setTimeout(r, 60));
    expect(ran).to.deep.equal(["after", "later"]);
  });
});
