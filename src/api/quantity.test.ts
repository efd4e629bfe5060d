import { expect } from "chai";
import { formatQuantity, parseQuantity } from "./quantity.js";

describe("quantities", () => {
  it("formats values the way the HPA reads them: whole numbers plain, the rest in milli-units", () => {
    expect(formatQuantity(42)).to.equal("42");
    expect(formatQuantity(41.5)).to.equal("41500m");
    expect(formatQuantity(0.0004)).to.equal("0");
    expect(formatQuantity(0.0005)).to.equal("1m");
    expect(formatQuantity(-2.25)).to.equal("-2250m");
    expect(formatQuantity(0)).to.equal("0");
    expect(formatQuantity(1e18)).to.equal("1000000000000000000");
  });

  it("refuses NaN and infinities instead of serving a made-up value", () => {
    expect(() => formatQuantity(Number.NaN)).to.throw(/not a finite number/);
    expect(() => formatQuantity(Infinity)).to.throw(/not a finite number/);
  });

  it("parses every suffix form Kubernetes accepts and rejects the rest", () => {
    expect(parseQuantity("1500m")).to.equal(1.5);
    expect(parseQuantity("2k")).to.equal(2000);
    expect(parseQuantity("1Ki")).to.equal(1024);
    expect(parseQuantity("1e3")).to.equal(1000);
    expect(parseQuantity(".5")).to.equal(0.5);
    expect(parseQuantity("-3")).to.equal(-3);
    for (const bad of ["", "m", "1.2.3", "5 apples", "1KB", "0x10"])
      expect(parseQuantity(bad), bad).to.equal(undefined);
  });
});
