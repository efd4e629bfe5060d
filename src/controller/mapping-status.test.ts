import { expect } from "chai";
import type { MetricMappingStatus } from "../sources/registry.js";
import type { SamplerState } from "../metrics/sampler.js";
import { type StatusInput, computeStatus, statusFingerprint, statusWrite } from "./mapping-status.js";

const NOW = Date.parse("2026-12-01T12:00:00Z");
const spec = {
  metric: "queue_depth",
  subject: { resource: "pods" },
  source: { prometheus: { url: "http://prometheus:9090", query: "sum(x)" } },
} as unknown as NonNullable<StatusInput["spec"]>;
const serving = (
  state: SamplerState,
  over: Partial<NonNullable<StatusInput["active"]>> = {},
): StatusInput => ({
  spec,
  active: {
    metric: "queue_depth",
    subject: { kind: "resource", groupResource: { group: "", resource: "pods" } },
    staleAfterMs: 60_000,
    state,
    ...over,
  },
});
const sampled = (agoMs: number, value = 42): SamplerState => ({
  last: { value: { kind: "scalar", value }, atMs: NOW - agoMs },
  failures: 0,
  attemptedAtMs: NOW - agoMs,
});
const ready = (s: MetricMappingStatus) => s.conditions?.find((c) => c.type === "Ready");
const health = (s: MetricMappingStatus) => s.conditions?.find((c) => c.type === "SourceHealthy");

describe("MetricMapping status", () => {
  const cases: [string, StatusInput, string, string | undefined][] = [
    ["waiting for the first sample", serving({ failures: 0 }), "Unknown/Sampling", "Unknown/Sampling"],
    ["serving a fresh value", serving(sampled(5_000)), "True/Serving", "True/Sampled"],
    [
      "no value after a failed first sample",
      serving({ failures: 1, error: "connection refused", attemptedAtMs: NOW }),
      "False/NoValue",
      "False/SourceError",
    ],
    [
      "stale with the source failing and no fallback",
      serving({ ...sampled(120_000), error: "timeout", failures: 9, attemptedAtMs: NOW }),
      "False/Stale",
      "False/SourceError",
    ],
    [
      "stale but serving its fallback",
      serving(sampled(120_000), { fallback: { value: 1, text: "1" } }),
      "True/ServingFallback",
      "True/Sampled",
    ],
    [
      "an invalid spec, with no SourceHealthy",
      { ready: { status: "False", reason: "InvalidSpec", message: "spec.metric: Required" } },
      "False/InvalidSpec",
      undefined,
    ],
  ];
  for (const [what, input, wantReady, wantHealth] of cases)
    it(`reads ${wantReady} for a mapping ${what}`, () => {
      const { status } = computeStatus({}, 3, input, NOW);
      const r = ready(status)!;
      expect(`${r.status}/${r.reason}`).to.equal(wantReady);
      const h = health(status);
      expect(h && `${h.status}/${h.reason}`).to.equal(wantHealth);
      expect(status.observedGeneration).to.equal(3);
      expect(r.observedGeneration).to.equal(3);
    });

  it("drops a SourceHealthy condition left from when the mapping served", () => {
    const { status: before } = computeStatus({}, 1, serving(sampled(1000)), NOW);
    const { status } = computeStatus(
      before,
      2,
      { ready: { status: "False", reason: "Conflict", message: "m" } },
      NOW,
    );
    expect(status.conditions!.map((c) => c.type)).to.deep.equal(["Ready"]);
  });

  it("says when the upstream adapter serves the same metric, and stops saying it when that ends", () => {
    const message = "the upstream custom metrics adapter (Service m/a:443) also serves pods/queue_depth";
    const { status: shadowing } = computeStatus({}, 1, { ...serving(sampled(1000)), shadows: message }, NOW);
    expect(shadowing.conditions?.find((c) => c.type === "ShadowsUpstream")).to.include({
      status: "True",
      reason: "UpstreamServesSameMetric",
      message,
    });
    const { status } = computeStatus(shadowing, 1, serving(sampled(1000)), NOW);
    expect(status.conditions!.map((c) => c.type).sort()).to.deep.equal(["Ready", "SourceHealthy"]);
  });

  it("shows what the source says beside its value as a condition (a forecast's fit), and drops it when it stops saying it", () => {
    const note = {
      type: "Forecast",
      status: "True",
      reason: "Forecasting",
      message: "linear over 60 buckets",
    } as const;
    const noted: SamplerState = {
      ...sampled(1000),
      last: { value: { kind: "scalar", value: 42, note }, atMs: NOW - 1000 },
    };
    const { status: forecasting } = computeStatus({}, 1, serving(noted), NOW);
    expect(forecasting.conditions?.find((c) => c.type === "Forecast")).to.include(note);
    const warming = { ...note, status: "False", reason: "TooLittleHistory" } as const;
    expect(statusFingerprint(noted).health, "a new reason is a transition").not.to.equal(
      statusFingerprint({
        ...noted,
        last: { ...noted.last!, value: { kind: "scalar", value: 42, note: warming } },
      }).health,
    );
    const stale = computeStatus(
      forecasting,
      1,
      serving({ ...noted, last: { ...noted.last!, atMs: NOW - 120_000 } }),
      NOW,
    );
    expect(
      stale.status.conditions?.find((c) => c.type === "Forecast"),
      "the forecast of a stale value",
    ).to.include({
      status: "Unknown",
      reason: "NotCurrent",
    });
    const { status } = computeStatus(forecasting, 1, serving(sampled(1000)), NOW);
    expect(status.conditions!.map((c) => c.type).sort()).to.deep.equal(["Ready", "SourceHealthy"]);
    const { status: refused } = computeStatus(
      forecasting,
      1,
      { spec, ready: { status: "False", reason: "InvalidSource", message: "x" } },
      NOW,
    );
    expect(refused.conditions!.map((c) => c.type)).to.deep.equal(["Ready"]);
  });

  it("says the backend's budget stretches its interval and by how much, and stops saying it when that ends", () => {
    const throttle = {
      backend: "http://prometheus:9090",
      waitedMs: 14_600,
      limitQps: 100,
      rateQps: 100,
      busy: false,
    };
    const input = {
      ...serving({ ...sampled(1000), throttled: throttle }),
      spec: { ...spec, interval: "15s" },
    };
    const { status: throttled } = computeStatus({}, 1, input, NOW);
    expect(throttled.conditions?.find((c) => c.type === "Throttled")).to.include({
      status: "True",
      reason: "BackendBudget",
      message:
        "the mappings querying http://prometheus:9090 need more than its budget of 100 queries/s: the last sample waited 15 s for its turn, so this mapping samples about every 30 s instead of every 15 s",
    });
    expect(ready(throttled)).to.include({ status: "True", reason: "Serving" });
    const busy = computeStatus(
      {},
      1,
      {
        ...input,
        active: {
          ...input.active!,
          state: { ...sampled(1000), throttled: { ...throttle, busy: true, rateQps: 12.5 } },
        },
      },
      NOW,
    ).status;
    expect(busy.conditions?.find((c) => c.type === "Throttled")?.message).to.match(
      /^http:\/\/prometheus:9090 answered that it is busy \(429, or 503 with Retry-After\), so this namespace sends it at most 13 of its 100 queries\/s for now: /,
    );
    const { status } = computeStatus(throttled, 1, serving(sampled(1000)), NOW);
    expect(status.conditions!.map((c) => c.type).sort()).to.deep.equal(["Ready", "SourceHealthy"]);
    expect(statusFingerprint({ ...sampled(1000), throttled: throttle }).health).to.not.equal(
      statusFingerprint(sampled(1000)).health,
    );
  });

  it("shows a scalar value, an average over objects, and when it was sampled", () => {
    expect(computeStatus({}, 1, serving(sampled(1500, 0.25)), NOW).status).to.include({
      value: "250m",
      lastSampleTime: "2026-12-01T11:59:58Z",
    });
    const perObject: SamplerState = {
      last: {
        value: {
          kind: "objects",
          values: new Map([
            ["a", 1],
            ["b", 3],
          ]),
        },
        atMs: NOW,
      },
      failures: 0,
      attemptedAtMs: NOW,
    };
    expect(computeStatus({}, 1, serving(perObject), NOW).status).to.include({ value: "avg 2", objects: 2 });
  });

  it("looks again just after the value would go stale, and not sooner than a second", () => {
    expect(computeStatus({}, 1, serving(sampled(20_000)), NOW).requeueAfterMs).to.equal(40_100);
    expect(computeStatus({}, 1, serving(sampled(59_990)), NOW).requeueAfterMs).to.equal(1000);
    expect(computeStatus({}, 1, serving(sampled(61_000)), NOW).requeueAfterMs).to.equal(undefined);
  });

  it("keeps a condition's lastTransitionTime while its status holds", () => {
    const { status: first } = computeStatus({}, 1, serving(sampled(1000)), NOW);
    const anHourLater: SamplerState = {
      ...sampled(0, 7),
      last: { value: { kind: "scalar", value: 7 }, atMs: NOW + 3_599_000 },
    };
    const { status: later } = computeStatus(first, 1, serving(anHourLater), NOW + 3_600_000);
    expect(ready(later)!.lastTransitionTime).to.equal(ready(first)!.lastTransitionTime);
  });

  describe("write policy", () => {
    const base = computeStatus({}, 1, serving(sampled(1000)), NOW).status;
    const valueMoved = computeStatus(base, 1, serving(sampled(1000, 43)), NOW).status;
    const failing = computeStatus(
      base,
      1,
      serving({ ...sampled(1000), error: "timeout", failures: 1, attemptedAtMs: NOW }),
      NOW,
    ).status;
    const budget = (ok: boolean) => () => ok;
    const cases: [
      string,
      MetricMappingStatus,
      MetricMappingStatus,
      number,
      boolean,
      ReturnType<typeof statusWrite>,
    ][] = [
      ["writes a transition at once, even right after a write", base, failing, 0, false, { write: true }],
      [
        "writes a new generation at once",
        base,
        { ...base, observedGeneration: 2 },
        0,
        false,
        { write: true },
      ],
      ["writes nothing when nothing changed", base, base, 60_000, true, { write: false }],
      [
        "holds a value change until 10 s after the last write",
        base,
        valueMoved,
        4_000,
        true,
        { write: false, requeueAfterMs: 6_000 },
      ],
      ["writes a value change after 10 s within the budget", base, valueMoved, 10_000, true, { write: true }],
      [
        "skips a value change out of budget, with no storm of requeues",
        base,
        valueMoved,
        60_000,
        false,
        { write: false, outOfBudget: true },
      ],
    ];
    for (const [what, old, next, since, ok, want] of cases)
      it(what, () =>
        expect(
          statusWrite(old, next, {
            sinceLastWriteMs: since,
            valueIntervalMs: 10_000,
            takeBudget: budget(ok),
          }),
        ).to.deep.equal(want),
      );
  });

  it("fingerprints only what the status shows: a new sample of the same value is no change", () => {
    expect(statusFingerprint(sampled(1000))).to.deep.equal(statusFingerprint(sampled(5000)));
    expect(statusFingerprint(sampled(1000, 1)).value).to.not.equal(statusFingerprint(sampled(1000, 2)).value);
    expect(statusFingerprint({ ...sampled(1000), error: "x" }).health).to.not.equal(
      statusFingerprint(sampled(1000)).health,
    );
  });
});
