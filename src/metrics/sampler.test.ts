import { expect } from "chai";
import type { MetricSource } from "../sources/source.js";
import { Sampler, finiteOnly } from "./sampler.js";

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
      now = sampler.state.attemptedAt!.getTime() + 1000;
      for (let i = 0; i < 100; i++) await sampler.sampleIfDue(now);
      expect(queries).to.equal(1);
      // An interval later, the next reader asks again.
      await sampler.sampleIfDue(now + 15_000);
      expect(queries).to.equal(2);
    } finally {
      await sampler.stop();
    }
  });
});
