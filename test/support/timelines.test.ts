import { expect } from "chai";
import { type Timeline, compareBySync, see } from "./timelines.js";

describe("comparing the HPA's decisions with Governor's, sync by sync", () => {
  const period = { periodMs: 2000, marginMs: 500 };

  it("counts a moment where one side moved a sync before the other as explained", () => {
    const hpa: Timeline = [];
    const gov: Timeline = [];
    see(hpa, 0, 1);
    see(gov, 0, 1);
    see(gov, 3_900, 3); // Governor's sync read the new value first
    see(hpa, 5_100, 3);
    const c = compareBySync(hpa, gov, { fromMs: 0, toMs: 10_000, ...period });
    expect(c.instants).to.equal(6);
    expect(c.same).to.equal(5);
    expect(c.differences).to.have.length(1);
    expect(c.differences[0]).to.include({ atMs: 4000, hpa: 1, governor: 3 });
    expect(c.differences[0]!.explanation).to.equal("a sync apart: the HPA chose 3 too, 1.2 s after Governor");
  });

  it("leaves a difference the other side never showed near that moment unexplained", () => {
    const hpa: Timeline = [];
    const gov: Timeline = [];
    see(hpa, 0, 4);
    see(gov, 0, 4);
    see(gov, 2_000, 5);
    see(gov, 9_000, 4);
    const c = compareBySync(hpa, gov, { fromMs: 0, toMs: 10_000, ...period });
    const unexplained = c.differences.filter((d) => d.explanation === undefined);
    expect(unexplained.map((d) => d.atMs)).to.deep.equal([2000, 4000, 6000, 8000]);
  });

  it("records a value only when it changes", () => {
    const t: Timeline = [];
    for (const [at, v] of [
      [0, 1],
      [1, 1],
      [2, 2],
      [3, undefined],
      [4, 2],
    ] as const)
      see(t, at, v);
    expect(t).to.deep.equal([
      { atMs: 0, value: 1 },
      { atMs: 2, value: 2 },
    ]);
  });
});
