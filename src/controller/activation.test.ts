import { expect } from "chai";
import type { Condition } from "../api/common.js";
import type { Sampler } from "../metrics/sampler.js";
import { formatQuantity } from "../api/quantity.js";
import {
  type ActivationInput,
  type ActivationReading,
  decideActivation,
  readActivation,
} from "./activation.js";

const NOW = new Date("2026-12-01T12:00:00Z");
const ago = (s: number) => new Date(NOW.getTime() - s * 1000).toISOString().replace(/\.\d+Z$/, "Z");

function input(over: Partial<ActivationInput>): ActivationInput {
  return {
    now: NOW,
    replicas: 1,
    metric: "queue_depth",
    threshold: 0,
    thresholdText: "0",
    cooldownMs: 60_000,
    cooldownText: "1m",
    reading: { ok: true, value: 0 },
    format: formatQuantity,
    ...over,
  };
}

const condition = (status: Condition["status"], reason: string, message = "earlier"): Condition => ({
  type: "Active",
  status,
  reason,
  message,
  lastTransitionTime: ago(600),
});

describe("scale to zero: the activation rule", () => {
  const cases: {
    name: string;
    given: Partial<ActivationInput>;
    replicas: number | undefined;
    status: string;
    reason: string;
    event?: string;
  }[] = [
    {
      name: "a workload at 0 wakes to 1 when the value rises above the threshold",
      given: { replicas: 0, reading: { ok: true, value: 3 } },
      replicas: 1,
      status: "True",
      reason: "AboveThreshold",
      event: "ScaledFromZero",
    },
    {
      name: "a workload at 0 stays there while the value is at the threshold",
      given: { replicas: 0, reading: { ok: true, value: 0 } },
      replicas: undefined,
      status: "False",
      reason: "ScaledToZero",
    },
    {
      name: "a busy workload is left to the HPA while the value is above the threshold",
      given: { replicas: 4, reading: { ok: true, value: 30 } },
      replicas: undefined,
      status: "True",
      reason: "AboveThreshold",
    },
    {
      name: "a workload whose value just fell starts its cooldown instead of going to 0",
      given: { replicas: 1, reading: { ok: true, value: 0 } },
      replicas: undefined,
      status: "True",
      reason: "CoolingDown",
    },
    {
      name: "a workload still inside its cooldown keeps its replicas",
      given: { replicas: 1, previous: { belowThresholdSince: ago(59) } },
      replicas: undefined,
      status: "True",
      reason: "CoolingDown",
    },
    {
      name: "a workload at or below the threshold for the whole cooldown goes to 0, from any count",
      given: { replicas: 3, previous: { belowThresholdSince: ago(60) } },
      replicas: 0,
      status: "False",
      reason: "ScaledToZero",
      event: "ScaledToZero",
    },
    {
      name: "a threshold above zero: a value at it is not activity",
      given: { replicas: 0, threshold: 5, thresholdText: "5", reading: { ok: true, value: 5 } },
      replicas: undefined,
      status: "False",
      reason: "ScaledToZero",
    },
    {
      name: "a failing metric holds a workload at 1 past its cooldown (never scales to 0 on no value)",
      given: {
        replicas: 1,
        previous: { belowThresholdSince: ago(3600) },
        reading: { ok: false, reason: "ActivationMetricUnavailable", message: "source down" },
      },
      replicas: undefined,
      status: "Unknown",
      reason: "ActivationMetricUnavailable",
      event: "ActivationMetricUnavailable",
    },
    {
      name: "a failing metric holds a workload at 0 (never wakes on no value)",
      given: {
        replicas: 0,
        reading: { ok: false, reason: "ActivationMetricUnavailable", message: "source down" },
      },
      replicas: undefined,
      status: "Unknown",
      reason: "ActivationMetricUnavailable",
      event: "ActivationMetricUnavailable",
    },
    {
      name: "a cooldown start stored in the future (a clock step) counts from now, not from then",
      given: { replicas: 1, previous: { belowThresholdSince: "2099-01-01T00:00:00Z" } },
      replicas: undefined,
      status: "True",
      reason: "CoolingDown",
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const d = decideActivation(input(c.given));
      expect(d.replicas).to.equal(c.replicas);
      expect([d.condition.status, d.condition.reason]).to.deep.equal([c.status, c.reason]);
      expect(d.event?.reason).to.equal(c.event);
    });

  it("the cooldown says when it ends and asks to be re-run then", () => {
    const d = decideActivation(input({ previous: { belowThresholdSince: ago(20) } }));
    expect(d.status.belowThresholdSince).to.equal(ago(20));
    expect(d.recheckInMs).to.equal(40_000);
    expect(d.condition.message).to.contain("scales to 0 at 2026-12-01T12:00:40Z");
  });

  it("the cooldown starts over after the value rises above the threshold or cannot be read", () => {
    const above = decideActivation(
      input({ reading: { ok: true, value: 2 }, previous: { belowThresholdSince: ago(50) } }),
    );
    expect(above.status.belowThresholdSince).to.equal(undefined);
    const lost = decideActivation(
      input({
        reading: { ok: false, reason: "ActivationMetricUnavailable", message: "stale" },
        previous: { belowThresholdSince: ago(50), value: "0" },
      }),
    );
    expect(lost.status).to.deep.equal({ value: "0" });
  });

  it("a new value on the same side of the threshold changes nothing stored (no status write per sample)", () => {
    const first = decideActivation(input({ replicas: 2, reading: { ok: true, value: 7 } }));
    const again = decideActivation(
      input({
        replicas: 2,
        reading: { ok: true, value: 9 },
        previous: first.status,
        previousCondition: { ...condition("True", "AboveThreshold"), message: first.condition.message },
      }),
    );
    expect(again.status).to.deep.equal(first.status);
    expect(again.condition.message).to.equal(first.condition.message);
  });

  it("an outage already reported is not reported again at every sample", () => {
    const d = decideActivation(
      input({
        reading: { ok: false, reason: "ActivationMetricUnavailable", message: "stale: 300s" },
        previousCondition: condition("Unknown", "ActivationMetricUnavailable"),
      }),
    );
    expect(d.event).to.equal(undefined);
  });
});

describe("scale to zero: reading the activation metric", () => {
  const external = {
    spec: { metric: "queue_depth", subject: { external: {} }, source: { static: { value: "1" } } },
  };
  const sampler = (state: Partial<Sampler["state"]>) => ({ state: { failures: 0, ...state } }) as Sampler;
  const served = (state: Partial<Sampler["state"]>, kind: "external" | "resource" = "external") => ({
    sampler: sampler(state),
    staleAfterMs: 120_000,
    subject:
      kind === "external"
        ? { kind: "external" as const, labels: {} }
        : { kind: "resource" as const, groupResource: { group: "", resource: "services" } },
  });
  const read = (over: Partial<Parameters<typeof readActivation>[0]>): ActivationReading =>
    readActivation({ key: "shop/queue", mapping: external, objectName: "worker", now: NOW, ...over });
  const fresh = NOW.getTime() - 5_000;

  it("sums an External metric's series, as the HPA does", () => {
    const values = new Map([
      ["a", 2],
      ["b", 3],
    ]);
    expect(
      read({ served: served({ last: { value: { kind: "objects", values }, atMs: fresh } }) }),
    ).to.deep.equal({
      ok: true,
      value: 5,
    });
  });

  it("reads an Object metric's value for the named object only", () => {
    const values = new Map([["worker", 4]]);
    const objectMapping = {
      spec: { metric: "backlog", subject: { resource: "services" }, source: { static: { value: "1" } } },
    };
    const s = served({ last: { value: { kind: "objects", values }, atMs: fresh } }, "resource");
    expect(read({ mapping: objectMapping, served: s })).to.deep.equal({ ok: true, value: 4 });
    expect(read({ mapping: objectMapping, served: s, objectName: "other" }).ok).to.equal(false);
  });

  const refusals: [string, Partial<Parameters<typeof readActivation>[0]>, string][] = [
    ["a missing mapping", { mapping: undefined }, "MappingNotFound"],
    [
      "a mapping that cannot serve",
      { mapping: { ...external, problem: { reason: "InvalidSource", message: "x" } } },
      "MappingInvalid",
    ],
    [
      "a mapping of pods (nothing to read at 0 replicas)",
      { mapping: { spec: { ...external.spec, subject: { resource: "pods" } } } },
      "InvalidActivation",
    ],
    ["a mapping not served yet", { served: undefined }, "ActivationMetricUnavailable"],
    [
      "a sample that failed, even with a good value before it",
      {
        served: served({
          last: { value: { kind: "scalar", value: 9 }, atMs: fresh },
          error: "connection refused",
        }),
      },
      "ActivationMetricUnavailable",
    ],
    [
      "a value older than staleAfter",
      {
        served: served({
          last: { value: { kind: "scalar", value: 9 }, atMs: NOW.getTime() - 121_000 },
        }),
      },
      "ActivationMetricUnavailable",
    ],
  ];
  for (const [what, over, reason] of refusals)
    it(`gives no value for ${what}`, () => {
      const r = read({
        served: served({ last: { value: { kind: "scalar", value: 9 }, atMs: fresh } }),
        ...over,
      });
      expect(r.ok).to.equal(false);
      expect(r.ok === false && r.reason).to.equal(reason);
    });
});
