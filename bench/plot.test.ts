import { expect } from "chai";
import { growthSvg } from "./plot.js";

describe("the bench's growth chart", () => {
  const points = [
    { mappings: 1000, rssMB: 140, cpuPercent: 2, readyS: 4, discoveryP99Ms: 1.5 },
    { mappings: 10_000, rssMB: 280, cpuPercent: 16, readyS: 39, discoveryP99Ms: 6.5 },
    { mappings: 50_000, rssMB: 900, cpuPercent: 80, readyS: 210, discoveryP99Ms: 30 },
  ];

  it("draws one panel per measure with every size's value labelled, sizes on a log axis", () => {
    const svg = growthSvg(points, "How cost grows <run>");
    expect(svg).to.match(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg.match(/<path /g)).to.have.length(4);
    expect(svg.match(/<circle /g)).to.have.length(12);
    for (const label of ["140", "280", "900", "16.0", "39.0", "210", "6.50", "30.0", "1k", "10k", "50k"])
      expect(svg).to.contain(`>${label}</text>`);
    expect(svg).to.contain("How cost grows &lt;run&gt;");
    // 10,000 sits at the middle of 1,000…100,000's log span: here 1 of log10(50) ≈ 1.70 of the axis.
    const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].slice(0, 3).map((m) => Number(m[1]));
    const frac = (xs[1]! - xs[0]!) / (xs[2]! - xs[0]!);
    expect(frac).to.be.closeTo(1 / Math.log10(50), 0.01);
  });

  it("leaves out a size that has no figure instead of drawing it at zero", () => {
    const svg = growthSvg([points[0]!, { ...points[1]!, discoveryP99Ms: NaN }, points[2]!], "missing one");
    expect(svg.match(/<circle /g)).to.have.length(11);
    expect(svg).to.not.contain("NaN");
  });
});
