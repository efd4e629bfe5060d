import { expect } from "chai";
import {
  DEFAULT_TOLERANCE,
  MAX_INT32,
  MAX_INT64,
  type PodFacts,
  type Proposal,
  ProposalError,
  type Tolerances,
  externalAverageReplicas,
  externalValueReplicas,
  milli,
  objectAverageReplicas,
  objectValueReplicas,
  podsMetricReplicas,
} from "./proposals.js";

/**
 * The cases of kube-controller-manager 1.37's own tests for custom and external metrics
 * (pkg/controller/podautoscaler/replica_calculator_test.go: TestReplicaCalcPodMetric,
 * …ObjectMetric, …ObjectPerPodMetric, …ExternalMetric, …ExternalPerPodMetric), with their
 * names: the facts carry over. A scenario is as theirs: `currentReplicas` pods (more if
 * `phases` lists more), Running and Ready unless said, the metric's levels for the first pods.
 */
interface Scenario {
  name: string;
  currentReplicas: number;
  levels: bigint[];
  target: bigint;
  readiness?: boolean[];
  phases?: PodFacts["phase"][];
  deleting?: boolean[];
  tolerances?: Tolerances;
  replicas: number;
  usage: bigint;
}

const DEFAULT: Tolerances = { down: DEFAULT_TOLERANCE, up: DEFAULT_TOLERANCE };
const UP_1_PERCENT: Tolerances = { down: DEFAULT_TOLERANCE, up: 0.01 };

function podsOf(s: Scenario): PodFacts[] {
  const count = Math.max(s.currentReplicas, s.phases?.length ?? 0);
  return Array.from({ length: count }, (_, i) => ({
    name: `test-pod-${i}`,
    phase: s.phases?.[i] ?? "Running",
    ready: s.readiness?.[i] ?? true,
    deleting: s.deleting?.[i] ?? false,
  }));
}

const valuesOf = (s: Scenario) => new Map(s.levels.map((v, i) => [`test-pod-${i}`, v] as const));

function table(cases: Scenario[], run: (s: Scenario) => Proposal): void {
  for (const s of cases)
    it(s.name, () => {
      expect(run(s)).to.deep.equal({ replicas: s.replicas, usage: s.usage });
    });
}

describe("the HPA's proposal for one metric, as kube-controller-manager computes it", () => {
  describe("a Pods metric with an averageValue target (TestReplicaCalcPodMetric)", () => {
    table(
      [
        {
          name: "scale up",
          currentReplicas: 3,
          levels: [20000n, 10000n, 30000n],
          target: 15000n,
          replicas: 4,
          usage: 20000n,
        },
        {
          name: "scale up: unready hot-CPU pod scales less (readiness counts for CPU only)",
          currentReplicas: 3,
          readiness: [true, true, false],
          levels: [50000n, 10000n, 30000n],
          target: 15000n,
          replicas: 6,
          usage: 30000n,
        },
        {
          name: "scale up: unready hot-CPU pods avoid scale-down",
          currentReplicas: 3,
          readiness: [false, true, false],
          levels: [50000n, 15000n, 30000n],
          target: 15000n,
          replicas: 7,
          usage: 31666n,
        },
        {
          name: "scale down",
          currentReplicas: 5,
          levels: [12000n, 12000n, 12000n, 12000n, 12000n],
          target: 20000n,
          replicas: 3,
          usage: 12000n,
        },
        {
          name: "within default tolerance",
          currentReplicas: 3,
          levels: [20000n, 21000n, 21000n],
          target: 20000n,
          replicas: 3,
          usage: 20666n,
        },
        {
          name: "outside configurable 1% tolerance",
          tolerances: UP_1_PERCENT,
          currentReplicas: 3,
          levels: [20000n, 21000n, 21000n],
          target: 20000n,
          replicas: 4,
          usage: 20666n,
        },
        {
          name: "no change: missing metrics",
          currentReplicas: 5,
          levels: [20000n, 19000n, 21000n],
          target: 20000n,
          replicas: 5,
          usage: 20000n,
        },
        {
          name: "rolling update with maxSurge: extra pod missing metric",
          currentReplicas: 2,
          phases: ["Running", "Running", "Running"],
          levels: [10000n, 10000n],
          target: 17000n,
          replicas: 2,
          usage: 10000n,
        },
      ],
      (s) => podsMetricReplicas(s.currentReplicas, s.target, valuesOf(s), podsOf(s), s.tolerances ?? DEFAULT),
    );

    it("a scale-up counts pending pods as using nothing, and missing ones too", () => {
      // 3 pods with values (ratio 2), one Pending, one without a value: 2×3 / 5 pods = 1.2 → 6.
      const s: Scenario = {
        name: "",
        currentReplicas: 5,
        phases: ["Running", "Running", "Running", "Pending", "Running"],
        levels: [30000n, 30000n, 30000n],
        target: 15000n,
        replicas: 6,
        usage: 30000n,
      };
      expect(podsMetricReplicas(5, s.target, valuesOf(s), podsOf(s), DEFAULT)).to.deep.equal({
        replicas: 6,
        usage: 30000n,
      });
    });

    it("a scale-down counts pods without a value as at the target, so they slow it", () => {
      // Ratio 0.5 on the 3 with values; the 2 without count as 20000: 70000 / 5 = 14000 → 0.7 × 5 → 4, not 2.
      const s: Scenario = {
        name: "",
        currentReplicas: 5,
        levels: [10000n, 10000n, 10000n],
        target: 20000n,
        replicas: 4,
        usage: 10000n,
      };
      expect(podsMetricReplicas(5, s.target, valuesOf(s), podsOf(s), DEFAULT)).to.deep.equal({
        replicas: 4,
        usage: 10000n,
      });
    });

    it("leaves out deleted and failed pods, and says so when no pod is left with a value", () => {
      const s: Scenario = {
        name: "",
        currentReplicas: 2,
        phases: ["Failed", "Running"],
        deleting: [false, true],
        levels: [1000n, 1000n],
        target: 1000n,
        replicas: 0,
        usage: 0n,
      };
      expect(() => podsMetricReplicas(2, s.target, valuesOf(s), podsOf(s), DEFAULT)).to.throw(
        ProposalError,
        "did not receive metrics for targeted pods",
      );
      expect(() => podsMetricReplicas(2, 1000n, new Map(), [], DEFAULT)).to.throw(
        ProposalError,
        "no pods returned by selector",
      );
    });
  });

  describe("an Object metric with a value target (TestReplicaCalcObjectMetric)", () => {
    table(
      [
        {
          name: "scale up",
          currentReplicas: 3,
          levels: [20000n],
          target: 15000n,
          replicas: 4,
          usage: 20000n,
        },
        {
          name: "scale up: very large metric saturates replicas to MaxInt32",
          currentReplicas: 3,
          levels: [MAX_INT64],
          target: 1n,
          replicas: MAX_INT32,
          usage: MAX_INT64,
        },
        {
          name: "scale up: ignores unready pods",
          currentReplicas: 3,
          readiness: [false, true, false],
          levels: [50000n],
          target: 10000n,
          replicas: 5,
          usage: 50000n,
        },
        {
          name: "scale down",
          currentReplicas: 5,
          levels: [12000n],
          target: 20000n,
          replicas: 3,
          usage: 12000n,
        },
        {
          name: "within default tolerance",
          currentReplicas: 3,
          levels: [20666n],
          target: 20000n,
          replicas: 3,
          usage: 20666n,
        },
        {
          name: "outside configurable 1% tolerance",
          tolerances: UP_1_PERCENT,
          currentReplicas: 3,
          levels: [20666n],
          target: 20000n,
          replicas: 4,
          usage: 20666n,
        },
        {
          name: "from zero replicas: the ratio alone, rounded up, no tolerance",
          currentReplicas: 0,
          levels: [20500n],
          target: 20000n,
          replicas: 2,
          usage: 20500n,
        },
      ],
      (s) =>
        objectValueReplicas(s.currentReplicas, s.target, s.levels[0]!, s.tolerances ?? DEFAULT, podsOf(s)),
    );
  });

  describe("an Object metric with an averageValue target (TestReplicaCalcObjectPerPodMetric)", () => {
    table(
      [
        { name: "scale up", currentReplicas: 3, levels: [20000n], target: 5000n, replicas: 4, usage: 6667n },
        { name: "scale down", currentReplicas: 5, levels: [6000n], target: 2000n, replicas: 3, usage: 1200n },
        {
          name: "within default tolerance",
          currentReplicas: 4,
          levels: [20166n],
          target: 5000n,
          replicas: 4,
          usage: 5042n,
        },
        {
          name: "outside configurable 1% tolerance",
          tolerances: UP_1_PERCENT,
          currentReplicas: 4,
          levels: [20208n],
          target: 5000n,
          replicas: 5,
          usage: 5052n,
        },
      ],
      (s) => objectAverageReplicas(s.currentReplicas, s.target, s.levels[0]!, s.tolerances ?? DEFAULT),
    );
  });

  describe("an External metric with a value target (TestReplicaCalcExternalMetric)", () => {
    table(
      [
        {
          name: "scale down: ignores unready pods (would otherwise scale up)",
          currentReplicas: 3,
          readiness: [false, true, false],
          levels: [8600n],
          target: 4400n,
          replicas: 2,
          usage: 8600n,
        },
        {
          name: "scale down",
          currentReplicas: 5,
          levels: [8600n],
          target: 14334n,
          replicas: 3,
          usage: 8600n,
        },
        {
          name: "within default tolerance",
          currentReplicas: 3,
          levels: [8600n],
          target: 8888n,
          replicas: 3,
          usage: 8600n,
        },
        {
          name: "outside configurable 1% tolerance",
          tolerances: UP_1_PERCENT,
          currentReplicas: 3,
          levels: [8900n],
          target: 8800n,
          replicas: 4,
          usage: 8900n,
        },
        {
          name: "usage overflow caps at MaxInt64",
          currentReplicas: 3,
          levels: [MAX_INT64 / 2n + 1n, MAX_INT64 / 2n + 1n],
          target: MAX_INT64,
          replicas: 3,
          usage: MAX_INT64,
        },
      ],
      (s) => externalValueReplicas(s.currentReplicas, s.target, s.levels, s.tolerances ?? DEFAULT, podsOf(s)),
    );
  });

  describe("an External metric with an averageValue target (TestReplicaCalcExternalPerPodMetric)", () => {
    table(
      [
        {
          name: "replica count overflow saturates to MaxInt32",
          currentReplicas: 1,
          levels: [MAX_INT64],
          target: 1n,
          replicas: MAX_INT32,
          usage: MAX_INT64,
        },
        {
          name: "usage overflow with huge target leaves replicas unchanged",
          currentReplicas: 1,
          levels: [MAX_INT64],
          target: MAX_INT64,
          replicas: 1,
          usage: MAX_INT64,
        },
        { name: "scale up", currentReplicas: 3, levels: [8600n], target: 2150n, replicas: 4, usage: 2867n },
        { name: "scale down", currentReplicas: 5, levels: [8600n], target: 2867n, replicas: 3, usage: 1720n },
        {
          name: "within default tolerance",
          currentReplicas: 3,
          levels: [8600n],
          target: 2900n,
          replicas: 3,
          usage: 2867n,
        },
        {
          name: "outside configurable 1% tolerance",
          tolerances: UP_1_PERCENT,
          currentReplicas: 3,
          levels: [8600n],
          target: 2800n,
          replicas: 4,
          usage: 2867n,
        },
      ],
      (s) => externalAverageReplicas(s.currentReplicas, s.target, s.levels, s.tolerances ?? DEFAULT),
    );
  });

  it("reads a quantity's milli-value exactly as Quantity.MilliValue() does", () => {
    const cases: [string, bigint][] = [
      ["0.1", 100n],
      ["2.5", 2500n],
      ["1500m", 1500n],
      ["0.0001", 1n], // rounded up
      ["1.2345", 1235n],
      ["-1.0005", -1001n], // away from zero
      ["1.0000000001", 1001n], // parsing keeps nine decimals, rounding up
      ["1e-10", 1n],
      ["2k", 2_000_000n],
      ["1Ki", 1_024_000n],
      ["9007199254740993m", 9_007_199_254_740_993n], // past a double's precision
      ["9223372036854775807m", MAX_INT64],
      ["3e2", 300_000n],
    ];
    for (const [text, want] of cases) expect([text, milli(text)]).to.deep.equal([text, want]);
    for (const bad of ["", "fast", "1.5x", "NaN", "1e16", "20E", `${"9".repeat(200)}`])
      expect(() => milli(bad), bad).to.throw(ProposalError);
  });
});
