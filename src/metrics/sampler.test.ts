import { expect } from "chai";
import { finiteOnly } from "./sampler.js";

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
});
