import { expect } from "chai";
import { heapFor } from "./heap.js";

describe("the bench's growth sizes", () => {
  const shipped = ["--max-old-space-size=384", "--max-semi-space-size=4"];

  it("runs up to 10,000 mappings with the shipped flags", () => {
    expect(heapFor(1000, shipped)).to.deep.equal(shipped);
    expect(heapFor(10_000, shipped)).to.deep.equal(shipped);
  });

  it("raises only the heap cap, in proportion, above 10,000 mappings", () => {
    expect(heapFor(10_001, shipped)).to.deep.equal(["--max-old-space-size=768", "--max-semi-space-size=4"]);
    expect(heapFor(50_000, shipped)).to.deep.equal(["--max-old-space-size=1920", "--max-semi-space-size=4"]);
  });
});
