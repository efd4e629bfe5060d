import { expect } from "chai";
import { HistoryRing, MAX_HISTORY_POINTS, MappingHistories } from "./history.js";

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

  it("keeps a sample once however many mappings share its sampler, and none from before the last", () => {
    const ring = new HistoryRing(10);
    ring.record(2000, scalar(1));
    ring.record(2000, scalar(1));
    ring.record(1000, scalar(5));
    ring.record(3000, scalar(Number.NaN));
    expect(ring.points().atMs).to.deep.equal([2000]);
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
    const before = process.memoryUsage().arrayBuffers;
    for (let m = 0; m < 1000; m++) histories.record(`n/m${m}`, 1000, scalar(1));
    // 1,000 rings of 16 points: 320 KB, where their capacity would be 2 GB.
    expect(process.memoryUsage().arrayBuffers - before).to.be.below(4 << 20);
  });

  it("keeps nothing with a capacity of 0, forgets a deleted mapping, and refuses a capacity out of range", () => {
    const none = new MappingHistories(0);
    none.record("n/a", 1000, scalar(1));
    expect(none.get("n/a")).to.equal(undefined);
    const some = new MappingHistories(5);
    some.record("n/a", 1000, scalar(1));
    expect(some.get("n/a")?.length).to.equal(1);
    some.forget("n/a");
    expect(some.get("n/a")).to.equal(undefined);
    expect(() => new MappingHistories(MAX_HISTORY_POINTS + 1)).to.throw(RangeError);
    expect(() => new MappingHistories(1.5)).to.throw(RangeError);
  });
});
