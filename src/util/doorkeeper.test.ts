import { expect } from "chai";
import { Doorkeeper } from "./doorkeeper.js";

describe("doorkeeper (a cache takes a caller-chosen key only on its second sighting)", () => {
  it("says a key was seen from its second sighting on", () => {
    const d = new Doorkeeper(64);
    expect(d.seenBefore("shop/rps\u0000web-1")).to.equal(false);
    expect(d.seenBefore("shop/rps\u0000web-1")).to.equal(true);
    expect(d.seenBefore("shop/rps\u0000web-1")).to.equal(true);
    expect(d.seenBefore("shop/rps\u0000web-2")).to.equal(false);
  });

  it("takes none of 100,000 unique keys for seen, and forgets old first sightings", () => {
    const d = new Doorkeeper(8192);
    let seen = 0;
    for (let i = 0; i < 100_000; i++) if (d.seenBefore(`flood/svc\u0000svc-${i}`)) seen++;
    expect(seen, "unique keys taken for seen (hash collisions)").to.be.below(3);
    // The first 90,000 were pushed out by the ones after them (8,192 slots).
    let remembered = 0;
    for (let i = 0; i < 1000; i++) if (d.seenBefore(`flood/svc\u0000svc-${i}`)) remembered++;
    expect(remembered).to.be.below(10);
  });

  it("refuses a table size that is not a power of two", () => {
    expect(() => new Doorkeeper(1000)).to.throw(/power of two/);
  });
});
