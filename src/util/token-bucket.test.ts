import { expect } from "chai";
import { TokenBucket } from "./token-bucket.js";

describe("TokenBucket", () => {
  it("allows a burst, then refills at the given rate, never above the burst", () => {
    let now = 0;
    const bucket = new TokenBucket(20, 5, () => now);
    const takes = (n: number) => Array.from({ length: n }, () => bucket.take()).filter(Boolean).length;
    expect(takes(10), "the burst").to.equal(5);
    now += 100; // 2 tokens at 20/s
    expect(takes(10)).to.equal(2);
    now += 60_000; // capped at the burst
    expect(takes(10)).to.equal(5);
  });
});
