import { expect } from "chai";
import { byteBoundedCache, stringBytes } from "./lru.js";

describe("byte-bounded caches", () => {
  const cache = () =>
    byteBoundedCache<string, string>({ maxBytes: 100, sizeOf: (k, v) => stringBytes(k) + stringBytes(v) });

  it("keeps what fits, and evicts the least recently used first when a new entry does not", () => {
    const c = cache();
    c.set("a", "x".repeat(19)); // 40 bytes
    c.set("b", "x".repeat(19)); // 80
    expect(c.get("a")).to.have.length(19); // a is now the most recent
    c.set("c", "x".repeat(19)); // 120 > 100: b goes, not a
    expect(c.get("b")).to.equal(undefined);
    expect(c.get("a")).to.have.length(19);
    expect(c.get("c")).to.have.length(19);
    expect(c.calculatedSize).to.equal(80);
  });

  it("holds at most its budget however many unique keys arrive, and keeps the hot one", () => {
    const c = cache();
    c.set("hot", "v");
    for (let i = 0; i < 10_000; i++) {
      c.set(`k${i}`, "v");
      c.get("hot");
      expect(c.calculatedSize).to.be.at.most(100);
    }
    expect(c.get("hot")).to.equal("v");
  });

  it("does not keep an entry larger than the whole budget, and replacing a key frees its old size", () => {
    const c = cache();
    c.set("big", "x".repeat(100));
    expect(c.size).to.equal(0);
    c.set("a", "x".repeat(10));
    c.set("a", "y");
    expect(c.calculatedSize).to.equal(4);
  });
});
