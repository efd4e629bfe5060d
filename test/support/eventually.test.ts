import { expect } from "chai";
import { eventually } from "./eventually.js";

describe("eventually()", () => {
  it("returns as soon as the condition holds", async () => {
    let calls = 0;
    const value = await eventually(
      () => {
        calls++;
        if (calls < 3) throw new Error("not yet");
        return "done";
      },
      { intervalMs: 1 },
    );
    expect(value).to.equal("done");
    expect(calls).to.equal(3);
  });

  it("fails with the last error and the time waited when the condition never holds", async () => {
    const err = await eventually(
      () => {
        throw new Error("still 0 replicas");
      },
      { timeoutMs: 30, intervalMs: 5, what: "scale-up" },
    ).catch((e: unknown) => e as Error);
    expect(err).to.be.instanceOf(Error);
    expect(err.message).to.equal("scale-up not met within 30 ms: still 0 replicas");
  });
});
