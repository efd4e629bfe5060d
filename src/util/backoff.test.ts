import { expect } from "chai";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("doubles each retry up to the cap, then resets after a success", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    const delays = Array.from({ length: 6 }, () => b.next());
    expect(delays).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).to.equal(100);
  });

  it("never waits less than half the step, so retries cannot stampede at 0 ms", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    expect([b.next(), b.next(), b.next()]).to.deep.equal([50, 100, 200]);
  });
});
