import { expect } from "chai";
import { sameConditions, setCondition } from "./conditions.js";

describe("conditions", () => {
  it("counts conditions read back from the apiserver (keys sorted) as unchanged, so status is not rewritten", () => {
    const written = setCondition(
      undefined,
      { type: "Ready", status: "True", reason: "Serving", message: "serving metric" },
      3,
      new Date("2026-11-22T10:00:00Z"),
    );
    // What a GET returns: the same fields, keys in alphabetical order.
    const readBack = JSON.parse(
      '[{"lastTransitionTime":"2026-11-22T10:00:00Z","message":"serving metric","observedGeneration":3,"reason":"Serving","status":"True","type":"Ready"}]',
    ) as typeof written;
    expect(sameConditions(readBack, written)).to.equal(true);
    const again = setCondition(
      readBack,
      { type: "Ready", status: "True", reason: "Serving", message: "serving metric" },
      3,
    );
    expect(sameConditions(readBack, again), "same status keeps its transition time").to.equal(true);
    const changed = setCondition(
      readBack,
      { type: "Ready", status: "False", reason: "Stale", message: "old" },
      3,
    );
    expect(sameConditions(readBack, changed)).to.equal(false);
    expect(sameConditions(readBack, [])).to.equal(false);
  });

  it("tells a message-only change (written under the write budget) from a transition (written at once)", () => {
    const at = new Date("2026-11-22T10:00:00Z");
    const failing = (message: string) =>
      setCondition(
        undefined,
        { type: "SourceHealthy", status: "False", reason: "SourceError", message },
        1,
        at,
      );
    const a = failing("the last sample failed: connection refused");
    const b = failing("the last sample failed: timed out after 5000 ms");
    expect(sameConditions(a, b)).to.equal(false);
    expect(sameConditions(a, b, { ignoreMessages: true })).to.equal(true);
    const healthy = setCondition(
      a,
      { type: "SourceHealthy", status: "True", reason: "Sampled", message: "ok" },
      1,
    );
    expect(sameConditions(a, healthy, { ignoreMessages: true })).to.equal(false);
  });
});
