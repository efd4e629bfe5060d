import { expect } from "chai";
import {
  FormulaSource,
  FormulaSpec,
  MAX_EXPRESSION_LENGTH,
  MAX_SAMPLE_COST,
  compileFormula,
} from "./formula.js";
import type { MappingReader, ServedMapping } from "./kind.js";
import { type MetricSource, type SampleValue, SourceConfigError } from "./source.js";

const NOW = Date.parse("2026-12-07T12:00:00Z");

/** A served mapping with a value taken `ageMs` ago (none: no value yet). */
function served(
  value: SampleValue | undefined,
  opts: { ageMs?: number; staleAfterMs?: number; error?: string; source?: Partial<MetricSource> } = {},
): ServedMapping & { reads: number } {
  const m = {
    reads: 0,
    staleAfterMs: opts.staleAfterMs ?? 120_000,
    sampler: {
      state: { last: value && { value, atMs: NOW - (opts.ageMs ?? 1000) }, error: opts.error },
      source:
        opts.source instanceof FormulaSource
          ? opts.source
          : { needsObjects: false, sample: async () => value!, ...opts.source },
      markRead: () => m.reads++,
    },
  };
  return m;
}
const scalar = (value: number): SampleValue => ({ kind: "scalar", value });
const objects = (values: Record<string, number>): SampleValue => ({
  kind: "objects",
  values: new Map(Object.entries(values)),
});

/** The mappings of namespace `shop`: a name → a served mapping, or why it is not served. */
class Mappings implements MappingReader {
  constructor(readonly byName: Record<string, ServedMapping | string>) {}
  read(namespace: string, name: string): ServedMapping | string {
    if (namespace !== "shop") return "does not exist";
    return this.byName[name] ?? "does not exist";
  }
}

const formula = (spec: unknown, mappings: MappingReader, name = "combined") =>
  new FormulaSource(FormulaSpec.parse(spec), "shop", mappings, name, () => NOW);
const sample = (f: FormulaSource) => f.sample({ signal: new AbortController().signal });

describe("the formula source", () => {
  const inputs = { queue: { mapping: "queue-depth" }, rps: { mapping: "requests" } };

  it("serves the expression over its inputs' current values, reading each as an HPA would", async () => {
    const queue = served(scalar(120));
    const rps = served(scalar(900));
    const f = formula(
      { expression: "math.greatest(queue / 50.0, rps / 200.0) + (queue > 100.0 ? 1.0 : 0.0)", inputs },
      new Mappings({ "queue-depth": queue, requests: rps }),
    );
    expect(await sample(f)).to.deep.equal(scalar(4.5 + 1));
    expect([queue.reads, rps.reads], "each input's sampler told it is read").to.deep.equal([1, 1]);
  });

  it("evaluates CEL as Kubernetes does: int arithmetic, conversions and math functions", () => {
    const value = (expression: string, values: Record<string, number> = {}) =>
      compileFormula(expression, Object.keys(values)).evaluate(values);
    expect(value("7 / 2")).to.equal(3);
    expect(value("int(a) % 4", { a: 10.9 })).to.equal(2);
    expect(value("double(7) / 2.0")).to.equal(3.5);
    expect(value("math.round(-2.5) + math.round(2.5)")).to.equal(0);
    expect(value("math.least(a, b, 3.0)", { a: 5, b: 4 })).to.equal(3);
    expect(value("math.ceil(a) + math.floor(a) + math.abs(-a) + math.trunc(-a)", { a: 1.5 })).to.equal(3.5);
    expect(value("math.sqrt(a)", { a: 16 })).to.equal(4);
    expect(() => value("9223372036854775807 + 1"), "int overflow").to.throw(/formula: integer overflow/);
    expect(() => value("int(a) * 1", { a: 1e300 }), "an int beyond 64 bits").to.throw(
      /formula: integer overflow/,
    );
    expect(() => value("(-9223372036854775807 - 1) / -1"), "-2^63 / -1").to.throw(/integer overflow/);
  });

  it("refuses at build what is not a formula of numbers, saying what and where", () => {
    const refusals: [string, RegExp][] = [
      ['"aaaa".matches("(a+)+$")', /the method \.matches\(\) at character 1 is not allowed/],
      ["size(a) > 0", /the function size\(\)/],
      ["[a, a].exists(x, x > 1.0)", /maxListElements/],
      ['{"k": a}["k"]', /maxMapEntries/],
      ["a.b", /Cannot index type 'double'|the operator \./],
      ["has(a.b) ? 1.0 : 0.0", /the function has\(\)/],
      ["b + 1.0", /"b" is not an input/],
      ["a + 1", /no matching overload|no such overload/],
      ["a > 1.0", /gives a bool, not a number/],
      ["a +", /Unexpected token/],
      ["math.max(a, a)", /the method \.max\(\)/],
      ["a in [1.0]", /maxListElements|the operator in/],
      ["uint(a)", /the function uint\(\)/],
      ["1" + "0".repeat(1000) + " + a", /a number literal out of range/],
      ["a + 1e400", /a number literal out of range|Invalid number/],
    ];
    for (const [expression, why] of refusals)
      expect(() => compileFormula(expression, ["a"]), expression)
        .to.throw(SourceConfigError)
        .with.property("message")
        .that.matches(why);
  });

  it("refuses an expression longer than the admission limit, and one deeper than 32", () => {
    expect(() => compileFormula("a+".repeat(MAX_EXPRESSION_LENGTH) + "a", ["a"])).to.throw(
      /longer than 1024/,
    );
    expect(() => compileFormula("(".repeat(40) + "a" + ")".repeat(40), ["a"])).to.throw(/maxDepth/);
    expect(compileFormula("a+".repeat(500) + "a", ["a"]).cost, "one step per node").to.equal(1001);
  });

  it("takes at most a few milliseconds to refuse or compile any 1,024 characters", () => {
    const alphabet = "ab+-*/%()?:<>=!&|.,1.0 math.greatest( int( double( \"'[]{}\\";
    let worst = 0;
    let seed = 7;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let i = 0; i < 2000; i++) {
      const text = Array.from(
        { length: MAX_EXPRESSION_LENGTH },
        () => alphabet[Math.floor(random() * alphabet.length)],
      ).join("");
      const t0 = performance.now();
      try {
        compileFormula(text, ["a", "b"]);
      } catch (err) {
        expect(err, text).to.be.instanceOf(SourceConfigError);
      }
      worst = Math.max(worst, performance.now() - t0);
    }
    expect(worst).to.be.below(50);
  });

  it("fails a sample naming the input when it does not exist, is not served, has no value or is stale", async () => {
    const cases: [ServedMapping | string | undefined, RegExp][] = [
      [undefined, /^input rps: MetricMapping requests does not exist$/],
      [
        "is not served (InvalidSource): bad query",
        /^input rps: MetricMapping requests is not served \(InvalidSource\): bad query$/,
      ],
      [
        served(undefined, { error: "connection refused" }),
        /^input rps: MetricMapping requests has no value yet; its source: connection refused$/,
      ],
      [
        served(scalar(900), { ageMs: 150_000, error: "timed out after 5000 ms" }),
        /^input rps: MetricMapping requests is stale: its value is 150s old, past its staleAfter of 120s; its source: timed out/,
      ],
      [
        served(scalar(900), { source: { perSelector: true } }),
        /^input rps: MetricMapping requests is sampled per HPA label selector/,
      ],
    ];
    for (const [requests, why] of cases) {
      const byName: Record<string, ServedMapping | string> = { "queue-depth": served(scalar(1)) };
      if (requests) byName.requests = requests;
      const f = formula({ expression: "queue + rps", inputs }, new Mappings(byName));
      let failed: Error | undefined;
      await sample(f).catch((err: Error) => (failed = err));
      expect(failed?.message, String(why)).to.match(why);
    }
  });

  it("gives one value per object every per-object input has, scalar inputs the same for each", async () => {
    const f = formula(
      {
        expression: "int(busy) * 100 / int(total) + int(bonus)",
        inputs: {
          busy: { mapping: "busy" },
          total: { mapping: "total" },
          bonus: { mapping: "bonus" },
        },
      },
      new Mappings({
        busy: served(objects({ "web-1": 3, "web-2": 1, "web-3": 5 })),
        total: served(objects({ "web-1": 4, "web-2": 0, "web-4": 9 })),
        bonus: served(scalar(7)),
      }),
    );
    // web-2 divides by zero and is left out; web-3 and web-4 are missing from one input.
    expect(await sample(f)).to.deep.equal(objects({ "web-1": 82 }));
  });

  it("refuses a sample whose objects would cost more than its limit, and shares a large one out over the event loop", async () => {
    const many = (n: number) =>
      objects(Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, i])));
    const heavy = "a+".repeat(200) + "a"; // 401 steps
    const tooMany = Math.ceil(MAX_SAMPLE_COST / 401) + 1;
    const refused = formula(
      { expression: heavy, inputs: { a: { mapping: "m" } } },
      new Mappings({ m: served(many(tooMany)) }),
    );
    await sample(refused).then(
      () => expect.fail("sampled"),
      (err: Error) => expect(err.message).to.match(/more than the 2000000 one sample may take/),
    );
    const large = formula(
      { expression: heavy, inputs: { a: { mapping: "m" } } },
      new Mappings({ m: served(many(4000)) }),
    );
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 0);
    const value = await sample(large);
    clearInterval(ticker);
    expect(value.kind === "objects" && value.values.get("p10")).to.equal(2010);
    expect(ticks, "timers ran while it evaluated").to.be.above(0);
  });

  it("many formulas over many objects at once hold the event loop for milliseconds at a time, and stop early on failing evaluations", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    const many = (n: number, v: number) =>
      objects(Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, i + v])));
    const big = many(20_000, 1);
    const formulas = Array.from({ length: 10 }, () =>
      formula(
        { expression: "a * 2.0 + a", inputs: { a: { mapping: "m" } } },
        new Mappings({ m: served(big) }),
      ),
    );
    // Every evaluation fails (an error costs ~1,000 evaluations): stopped after a few.
    const failing = formula(
      { expression: "int(a) / int(b)", inputs: { a: { mapping: "m" }, b: { mapping: "zero" } } },
      new Mappings({
        m: served(many(20_000, 1)),
        zero: served(objects(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`p${i}`, 0])))),
      }),
    );
    let longest = 0;
    let ticks = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      ticks++;
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 1);
    const t0 = performance.now();
    const results = await Promise.allSettled([...formulas.map(sample), sample(failing)]);
    const took = performance.now() - t0;
    clearInterval(ticker);
    for (const r of results.slice(0, -1)) {
      expect(r.status, String((r as PromiseRejectedResult).reason)).to.equal("fulfilled");
      const v = (r as PromiseFulfilledResult<SampleValue>).value;
      expect(v.kind === "objects" && v.values.get("p9")).to.equal(30);
    }
    const failed = results.at(-1) as PromiseRejectedResult;
    expect((failed.reason as Error).message).to.match(
      /^formula: division by zero \(and for 15 other objects; stopped there\)$/,
    );
    // Before the shared turn budget, the failing formula alone held the loop ~300 ms at a
    // time; now turns are a few ms (the bound leaves room for a busy machine's pauses).
    expect(ticks, "timers ran between the evaluations").to.be.above(20);
    expect(longest, `the longest turn while ${took.toFixed(0)} ms of evaluations ran`).to.be.below(150);
  });

  it("refuses inputs that read the mapping itself, or lead back to it through other formulas", () => {
    expect(() =>
      formula({ expression: "a", inputs: { a: { mapping: "combined" } } }, new Mappings({})),
    ).to.throw(SourceConfigError, "formula inputs read the mapping itself (combined)");
    // combined → first → second → combined, with second served as a formula over combined.
    const mappings = new Mappings({});
    const second = served(scalar(1), {
      source: formula({ expression: "x", inputs: { x: { mapping: "combined" } } }, mappings, "second"),
    });
    mappings.byName.second = second;
    const first = served(scalar(1), {
      source: formula(
        { expression: "y + z", inputs: { y: { mapping: "second" }, z: { mapping: "other" } } },
        mappings,
        "first",
      ),
    });
    mappings.byName.first = first;
    mappings.byName.other = served(scalar(2));
    expect(() => formula({ expression: "a", inputs: { a: { mapping: "first" } } }, mappings)).to.throw(
      SourceConfigError,
      "formula inputs form a cycle: combined → first → second → combined",
    );
    expect(
      () => formula({ expression: "a", inputs: { a: { mapping: "other" } } }, mappings),
      "no cycle",
    ).not.to.throw();
  });

  it("admits 1 to 8 inputs named as CEL variables, never a reserved word", () => {
    const parse = (inputNames: string[]) =>
      FormulaSpec.safeParse({
        expression: "1.0",
        inputs: Object.fromEntries(inputNames.map((n) => [n, { mapping: "m" }])),
      }).success;
    expect(parse(["a"])).to.equal(true);
    expect(parse([])).to.equal(false);
    expect(parse(Array.from({ length: 9 }, (_, i) => `a${i}`))).to.equal(false);
    expect(parse(["Queue"])).to.equal(false);
    expect(parse(["in"])).to.equal(false);
    expect(parse(["math"])).to.equal(false);
    expect(parse(["queue_depth2"])).to.equal(true);
  });
});
