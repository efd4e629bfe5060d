import { expect } from "chai";
import {
  busyTicks,
  coreSpeeds,
  coresOf,
  type CpuSnapshot,
  outsideCores,
  processTicks,
} from "./disturbance.js";

describe("bench disturbance", () => {
  it("counts a machine's busy ticks, interrupts and steal included, idle and iowait not", () => {
    // user nice system idle iowait irq softirq steal guest guest_nice
    expect(busyTicks("cpu  100 5 50 9000 300 2 3 1 0 0")).to.equal(161);
  });

  it("reads a process's user and system ticks even when its name holds spaces and parentheses", () => {
    const rest = "S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 4 0 100";
    expect(processTicks(`42 (node) ${rest}`)).to.equal(290);
    expect(processTicks(`42 (a (b) c) ${rest}`)).to.equal(290);
  });

  it("calls outside work what the machine did beyond the row's own processes", () => {
    const before: CpuSnapshot = { atMs: 0, busy: 1000, pids: { 10: 500, 11: 200 } };
    // 2 s: the machine used 300 ticks, the load generator 150, the server 100 → 50 ticks outside
    const after: CpuSnapshot = { atMs: 2000, busy: 1300, pids: { 10: 650, 11: 300 } };
    expect(outsideCores(before, after)).to.be.closeTo(0.25, 1e-9);
  });

  it("counts a process that exited during the round as outside work", () => {
    const before: CpuSnapshot = { atMs: 0, busy: 0, pids: { 10: 0, 11: 0 } };
    const after: CpuSnapshot = { atMs: 1000, busy: 100, pids: { 10: 60 } };
    expect(outsideCores(before, after)).to.be.closeTo(0.4, 1e-9);
  });

  it("tells how much of a core a round's server used", () => {
    const before: CpuSnapshot = { atMs: 0, busy: 0, pids: { 10: 100, 11: 0 } };
    const after: CpuSnapshot = { atMs: 4000, busy: 500, pids: { 10: 400, 11: 100 } };
    expect(coresOf(before, after, [10])).to.be.closeTo(0.75, 1e-9);
    expect(coresOf(before, after, [10, 11])).to.be.closeTo(1, 1e-9);
    expect(coresOf(before, after, [12])).to.equal(0);
  });

  it("never reports negative outside work when the counters disagree by a tick", () => {
    const before: CpuSnapshot = { atMs: 0, busy: 0, pids: { 10: 0 } };
    const after: CpuSnapshot = { atMs: 1000, busy: 99, pids: { 10: 100 } };
    expect(outsideCores(before, after)).to.equal(0);
  });

  it("reads a core probed at half its usual speed as 0.5, against the 90th percentile of its probes", () => {
    const history = [
      [600, 700, 690, 680, 710, 695, 705, 650, 500, 700],
      [650, 660, 670, 655, 640, 665, 675, 660, 650, 670],
    ];
    const [core0, core1] = coreSpeeds(history, [352.5, 670]);
    expect(core0).to.be.closeTo(0.5, 1e-9); // usual: 705 (9th of 10)
    expect(core1).to.be.closeTo(1, 1e-9); // usual: 670
  });

  it("takes a core with no probes yet as running at its usual speed", () => {
    expect(coreSpeeds([], [123])).to.deep.equal([1]);
  });
});
