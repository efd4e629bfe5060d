import { expect } from "chai";
import { HISTORY_POINT_BYTES, HistoryRing, MAX_HISTORY_POINTS, MappingHistories } from "./history.js";

const scalar = (value: number) => ({ kind: "scalar" as const, value });
const objects = (...values: number[]) => ({
  kind: "objects" as const,
  values: new Map(values.map((v, i) => [`pod-${i}`, v])),
});

describe("Governor's kept samples of a mapping (history for replay)", () => {
  it("keeps the last `capacity` samples, oldest first, the oldest overwritten", () => {
    const ring = new HistoryRing(40);
    for (let i = 1; i <= 100; i++) ring.record(i * 1000, scalar(i));
    const p = ring.points();
    expect(ring.length).to.equal(40);
    expect(p.atMs).to.deep.equal(Array.from({ length: 40 }, (_, i) => (61 + i) * 1000));
    expect(p.sum).to.deep.equal(Array.from({ length: 40 }, (_, i) => 61 + i));
    expect(p.count.every((c) => c === 1)).to.equal(true);
  });

  it("keeps a sample of several objects as their sum and count (a pods metric's average comes back)", () => {
    const ring = new HistoryRing(10);
    ring.record(1000, objects(10, 20, 30));
    ring.record(2000, objects());
    expect(ring.points()).to.deep.equal({ atMs: [1000, 2000], sum: [60, 0], count: [3, 0] });
  });

  it("keeps a sample once however many mappings share its sampler, and starts anew when the clock goes back", () => {
    const ring = new HistoryRing(10);
    ring.record(2000, scalar(1));
    ring.record(2000, scalar(1));
    ring.record(3000, scalar(Number.NaN));
    expect(ring.points().atMs).to.deep.equal([2000]);
    ring.record(1000, scalar(5));
    expect(ring.points()).to.deep.equal({ atMs: [1000], sum: [5], count: [1] });
  });

  it("answers the samples since a moment", () => {
    const ring = new HistoryRing(100);
    for (let i = 0; i < 50; i++) ring.record(i * 1000, scalar(i));
    expect(ring.points(45_000).sum).to.deep.equal([45, 46, 47, 48, 49]);
  });

  it("answers page by page, each page saying where the next starts", () => {
    const ring = new HistoryRing(100);
    for (let i = 0; i < 12; i++) ring.record(i * 1000, scalar(i));
    const first = ring.page(2000, 5);
    expect(first.points.sum).to.deep.equal([2, 3, 4, 5, 6]);
    expect(first.nextMs).to.equal(7000);
    const last = ring.page(first.nextMs!, 5);
    expect(last.points.sum).to.deep.equal([7, 8, 9, 10, 11]);
    expect(last.nextMs).to.equal(undefined);
  });

  it("holds memory as samples come, not the whole capacity at once", () => {
    const histories = new MappingHistories(MAX_HISTORY_POINTS);
    const samplers = Array.from({ length: 1000 }, () => new FakeSampler());
    for (const sampler of samplers) histories.ringOf(sampler).record(1000, scalar(1));
    // 1,000 rings of 16 points, where their capacity would be 2 GB.
    expect(histories.usedBytes).to.equal(1000 * 16 * HISTORY_POINT_BYTES);
  });

  it("never holds more than its memory budget: a ring past it keeps what it has and wraps there", () => {
    let full = 0;
    const histories = new MappingHistories(1000, 100 * HISTORY_POINT_BYTES, () => full++);
    const a = histories.ringOf(new FakeSampler());
    const b = histories.ringOf(new FakeSampler());
    for (let i = 1; i <= 200; i++) {
      a.record(i, scalar(i));
      b.record(i, scalar(i));
    }
    expect(histories.usedBytes).to.be.at.most(100 * HISTORY_POINT_BYTES);
    expect(a.length + b.length).to.be.at.most(100);
    expect(a.points().sum.at(-1)).to.equal(200); // still the latest, in a smaller ring
    expect(full).to.equal(1);
  });

  it("shares one ring among the mappings of one sampler, and gives its memory back when the sampler stops", async () => {
    const histories = new MappingHistories(50);
    const sampler = new FakeSampler();
    const ring = histories.ringOf(sampler);
    expect(histories.ringOf(sampler)).to.equal(ring);
    histories.attach("n/a", ring);
    histories.attach("n/b", ring);
    ring.record(1000, scalar(1));
    expect(histories.get("n/b")).to.equal(ring);
    histories.detach("n/a", ring);
    expect(histories.get("n/a")).to.equal(undefined);
    // An edit's new ring is attached before the old is let go: the old one does not detach it.
    const edited = histories.ringOf(new FakeSampler());
    histories.attach("n/b", edited);
    histories.detach("n/b", ring);
    expect(histories.get("n/b")).to.equal(edited);
    await sampler.stop();
    expect(histories.usedBytes).to.equal(0);
    expect(ring.length).to.equal(0);
  });

  it("keeps nothing with 0 points, and refuses a number of points out of range", () => {
    const none = new MappingHistories(0);
    const ring = none.ringOf(new FakeSampler());
    ring.record(1000, scalar(1));
    expect(ring.length).to.equal(0);
    expect(() => new MappingHistories(MAX_HISTORY_POINTS + 1)).to.throw(RangeError);
    expect(() => new MappingHistories(1.5)).to.throw(RangeError);
  });
});

/** What a ring needs of a sampler: to be told when it stops. */
class FakeSampler {
  private readonly stops: (() => void)[] = [];
  onStop(fn: () => void): void {
    this.stops.push(fn);
  }
  async stop(): Promise<void> {
    for (const fn of this.stops) fn();
  }
}
