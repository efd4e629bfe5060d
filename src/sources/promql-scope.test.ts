import { parser } from "@prometheus-io/lezer-promql";
import { expect } from "chai";
import { MAX_QUERY_BYTES, QueryScopeError, scopeQuery } from "./promql-scope.js";
import { SourceConfigError } from "./source.js";

const opts = { namespace: "team-a", label: "namespace" };
const scope = (query: string) => scopeQuery(query, opts);

/** What scoping `query` threw (failing the test when it did not throw). */
function scopeError(query: string): Error {
  try {
    scope(query);
  } catch (err) {
    return err as Error;
  }
  expect.fail(`expected ${JSON.stringify(query.slice(0, 80))} to be refused`);
}

/**
 * The text of every VectorSelector in `query` and whether it has `namespace="team-a"`,
 * read from the package's own (error-recovering) parser; throws on any error node.
 */
function selectors(query: string): { text: string; bound: boolean }[] {
  const found: { text: string; bound: boolean }[] = [];
  parser.parse(query).iterate({
    enter(ref) {
      if (ref.type.isError) throw new Error(`error node at ${ref.from} in ${query}`);
      if (ref.name !== "VectorSelector") return true;
      let bound = false;
      const matchers = ref.node.getChild("LabelMatchers");
      for (const m of matchers ? matchers.getChildren("UnquotedLabelMatcher") : []) {
        const name = m.getChild("LabelName");
        const op = m.getChild("MatchOp")?.firstChild;
        const value = m.getChild("StringLiteral");
        if (!name || !op || !value) continue;
        const unquoted = query.slice(value.from + 1, value.to - 1);
        if (
          query.slice(name.from, name.to) === "namespace" &&
          op.name === "EqlSingle" &&
          unquoted === "team-a"
        )
          bound = true;
      }
      found.push({ text: query.slice(ref.from, ref.to), bound });
      return false;
    },
  });
  return found;
}

describe("scopeQuery (every selector bound to the mapping's namespace)", () => {
  describe("adds the namespace matcher to every vector selector", () => {
    const cases: [string, string][] = [
      ["foo", 'foo{namespace="team-a"}'],
      ["foo{}", 'foo{namespace="team-a"}'],
      ['foo{a="b"}', 'foo{a="b",namespace="team-a"}'],
      ['foo{a="b",}', 'foo{a="b",namespace="team-a",}'],
      ['foo{ a="b" , c!~"d" }', 'foo{ a="b" , c!~"d",namespace="team-a" }'],
      ['{__name__="x"}', '{__name__="x",namespace="team-a"}'],
      ['{"foo.bar"}', '{"foo.bar",namespace="team-a"}'],
      ['{"foo.bar", a="b"}', '{"foo.bar", a="b",namespace="team-a"}'],
      ['{"foo.bar", "a.b"="c"}', '{"foo.bar", "a.b"="c",namespace="team-a"}'],
      ["job:http_requests:rate5m", 'job:http_requests:rate5m{namespace="team-a"}'],
      ["rate(x[5m])", 'rate(x{namespace="team-a"}[5m])'],
      ['rate(x{a="b"}[5m])', 'rate(x{a="b",namespace="team-a"}[5m])'],
      ["max_over_time(rate(x[1m])[5m:30s])", 'max_over_time(rate(x{namespace="team-a"}[1m])[5m:30s])'],
      ["x[5m:]", 'x{namespace="team-a"}[5m:]'],
      ["x offset 5m", 'x{namespace="team-a"} offset 5m'],
      ["x offset -5m", 'x{namespace="team-a"} offset -5m'],
      ["rate(x[5m] offset 1h)", 'rate(x{namespace="team-a"}[5m] offset 1h)'],
      ["x @ 1700000000", 'x{namespace="team-a"} @ 1700000000'],
      ["x @ start()", 'x{namespace="team-a"} @ start()'],
      ["rate(x[5m] @ end() offset 1m)", 'rate(x{namespace="team-a"}[5m] @ end() offset 1m)'],
      ["sum(x)", 'sum(x{namespace="team-a"})'],
      ["sum by (pod) (x)", 'sum by (pod) (x{namespace="team-a"})'],
      ["sum(x) without (pod)", 'sum(x{namespace="team-a"}) without (pod)'],
      ["topk(3, x)", 'topk(3, x{namespace="team-a"})'],
      ['count_values("v", x)', 'count_values("v", x{namespace="team-a"})'],
      ["a + b", 'a{namespace="team-a"} + b{namespace="team-a"}'],
      [
        "a / on(pod) group_left(node) b",
        'a{namespace="team-a"} / on(pod) group_left(node) b{namespace="team-a"}',
      ],
      ["a > bool 3", 'a{namespace="team-a"} > bool 3'],
      [
        "a and b or c unless d",
        'a{namespace="team-a"} and b{namespace="team-a"} or c{namespace="team-a"} unless d{namespace="team-a"}',
      ],
      ["-x", '-x{namespace="team-a"}'],
      ["x ^ 2", 'x{namespace="team-a"} ^ 2'],
      ["((x))", '((x{namespace="team-a"}))'],
      ["absent(x)", 'absent(x{namespace="team-a"})'],
      ["vector(1)", "vector(1)"],
      ["time() - 3", "time() - 3"],
      ['"just a string"', '"just a string"'],
      ["sum", 'sum{namespace="team-a"}'],
      ["SUM(x)", 'SUM(x{namespace="team-a"})'],
      ["x OFFSET 5m", 'x{namespace="team-a"} OFFSET 5m'],
      ['foo\n{a="b"}', 'foo\n{a="b",namespace="team-a"}'],
    ];
    for (const [input, expected] of cases)
      it(`${input} → ${expected}`, () => {
        expect(scope(input)).to.equal(expected);
      });

    it("uses the label and namespace it is given", () => {
      expect(scopeQuery("x", { namespace: "shop", label: "kubernetes_namespace" })).to.equal(
        'x{kubernetes_namespace="shop"}',
      );
    });
  });

  describe("keeps an equality matcher that already names the own namespace", () => {
    const kept = [
      'foo{namespace="team-a"}',
      "foo{namespace='team-a'}",
      "foo{namespace=`team-a`}",
      'foo{namespace="te\\x61m-a"}',
      'foo{namespace="te\\u0061m-a"}',
      'foo{namespace="te\\141m-a"}',
      'foo{namespace="team\\x2da"}',
      '{"namespace"="team-a"}',
      "{'namespace'=`team-a`}",
      '{"foo.bar", "namespace"="team-a"}',
      'foo{a="b", namespace="team-a", c="d"}',
      'foo{namespace="team-a", namespace="team-a"}',
      'sum(rate(x{namespace="team-a"}[5m]))',
    ];
    for (const input of kept)
      it(`${input} stays as it is`, () => {
        expect(scope(input)).to.equal(input);
      });

    it("still binds the other selectors of the query", () => {
      expect(scope('a{namespace="team-a"} / b')).to.equal('a{namespace="team-a"} / b{namespace="team-a"}');
    });
  });

  it("refuses info(), which reads target_info series that no selector of the query names", () => {
    expect(() => scope("info(rate(http_requests_total[5m]))")).to.throw(QueryScopeError, /info\(\)/);
    // A metric or label called info is just a name.
    expect(scope("info_total")).to.equal('info_total{namespace="team-a"}');
  });

  describe("refuses an equality matcher on the label with any other value", () => {
    const refused: [string, string][] = [
      ['foo{namespace="team-b"}', "team-b"],
      ["foo{namespace='team-b'}", "team-b"],
      ["foo{namespace=`team-b`}", "team-b"],
      ['foo{namespace="te\\x61m-b"}', "team-b"],
      ['{"namespace"="team-b"}', "team-b"],
      ['{"name\\x73pace"="team-b"}', "team-b"],
      ["{'namespace'='team-b'}", "team-b"],
      ['{"foo.bar", "namespace"="team-b"}', "team-b"],
      ['foo{namespace=""}', ""],
      ['foo{namespace="team-a "}', "team-a "],
      ['foo{namespace="Team-a"}', "Team-a"],
      ['foo{namespace="team-a", namespace="team-b"}', "team-b"],
      ['foo{namespace=~"team-.*", namespace="team-b"}', "team-b"],
      ['sum(rate(payments_total{namespace="team-b"}[5m]))', "team-b"],
      ['a + on(pod) group_left b{namespace="team-b"}', "team-b"],
      ['max_over_time(x{namespace="team-b"}[5m:1m])', "team-b"],
      ['label_replace(x{namespace="team-b"}, "a", "b", "c", "d")', "team-b"],
      ['x{namespace="team-b"} offset 5m', "team-b"],
    ];
    for (const [input, value] of refused)
      it(`${input} is refused`, () => {
        const err = scopeError(input);
        expect(err).to.be.instanceOf(QueryScopeError);
        expect(err.message).to.equal(
          `the query selects namespace ${JSON.stringify(value)}; a mapping in team-a reads only its own namespace`,
        );
      });

    it("quotes at most 64 characters of the value, on one line", () => {
      const long = scopeError(`x{namespace="${"b".repeat(500)}"}`).message;
      expect(long).to.equal(
        `the query selects namespace "${"b".repeat(64)}…"; a mapping in team-a reads only its own namespace`,
      );
      expect(scopeError('x{namespace="a\\nb\\u2028c"}').message).to.contain('namespace "a b c"');
      expect(scopeError("x{namespace=`a\nb`}").message).to.contain('namespace "a b"').and.not.contain("\n");
    });

    it("is a SourceConfigError, so that the mapping shows InvalidSource", () => {
      expect(scopeError('x{namespace="team-b"}')).to.be.instanceOf(SourceConfigError);
    });
  });

  describe("keeps regex and negative matchers on the label and adds the equality matcher", () => {
    const cases: [string, string][] = [
      ['foo{namespace=~"team-.*"}', 'foo{namespace=~"team-.*",namespace="team-a"}'],
      ['foo{namespace!="x"}', 'foo{namespace!="x",namespace="team-a"}'],
      ['foo{namespace!~"kube-.*"}', 'foo{namespace!~"kube-.*",namespace="team-a"}'],
      ['foo{namespace=~"team-a"}', 'foo{namespace=~"team-a",namespace="team-a"}'],
      ['foo{namespace!="team-a"}', 'foo{namespace!="team-a",namespace="team-a"}'],
      ['{"namespace"=~".+"}', '{"namespace"=~".+",namespace="team-a"}'],
      ['foo{Namespace="team-b"}', 'foo{Namespace="team-b",namespace="team-a"}'],
    ];
    for (const [input, expected] of cases)
      it(`${input} → ${expected}`, () => {
        expect(scope(input)).to.equal(expected);
      });
  });

  describe("never touches strings or comments", () => {
    const cases: [string, string][] = [
      [
        'label_replace(x, "dst", "$1", "src", "{foo}")',
        'label_replace(x{namespace="team-a"}, "dst", "$1", "src", "{foo}")',
      ],
      ["label_join(x, 'dst', ',', 'a', 'b')", "label_join(x{namespace=\"team-a\"}, 'dst', ',', 'a', 'b')"],
      ['x{a="b}"}', 'x{a="b}",namespace="team-a"}'],
      ['x{a="namespace=\\"team-b\\""}', 'x{a="namespace=\\"team-b\\"",namespace="team-a"}'],
      ['x{a=`{"}`}', 'x{a=`{"}`,namespace="team-a"}'],
      [
        'x # foo{namespace="team-b"}\n+ y',
        'x{namespace="team-a"} # foo{namespace="team-b"}\n+ y{namespace="team-a"}',
      ],
      ['foo{a="b" # c, d}\n}', 'foo{a="b",namespace="team-a" # c, d}\n}'],
      ["foo{ # nothing yet\n}", 'foo{namespace="team-a" # nothing yet\n}'],
      ["# only x\nx", '# only x\nx{namespace="team-a"}'],
    ];
    for (const [input, expected] of cases)
      it(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
        expect(scope(input)).to.equal(expected);
      });
  });

  describe("refuses what is not valid PromQL, saying where", () => {
    const invalid: [string, number][] = [
      ["", 0],
      ["foo{", 4],
      ["foo bar", 4],
      ["sum(rate(x[5m])", 15],
      ["rate(x[5m]", 10],
      ['foo{a="b', 8],
      ['foo{a="b\n",c="d"}', 9],
      ["foo{a=`b}", 6],
      ['foo{a="\\q"}', 6],
      ["foo{a='\\\"'}", 6],
      ['foo{a="\\\n"}', 6],
      ['foo{a="\\x4"}', 6],
      ['foo{a="\\400"}', 6],
      ['foo{a="\\ud800"}', 6],
      ['foo{a="\\U00110000"}', 6],
      ["x + ", 4],
      ["}", 0],
      ["x{a=~}", 5],
      ['"unterminated', 0],
    ];
    for (const [input, offset] of invalid)
      it(`${JSON.stringify(input)} (offset ${offset})`, () => {
        const err = scopeError(input);
        expect(err).to.be.instanceOf(QueryScopeError);
        expect(err.message).to.match(new RegExp(`^the query is not valid PromQL at offset ${offset}: "`));
      });

    it("quotes at most 64 characters around the offset, on one line", () => {
      const query = `${"a + ".repeat(50)}(\n${"b + ".repeat(50)}`;
      const message = scopeError(query).message;
      const quoted = message.slice(message.indexOf(': "') + 3, -1);
      expect([...quoted.replace(/^…|…$/g, "")].length).to.be.at.most(64);
      expect(message).not.to.contain("\n");
    });

    it("refuses a comment that a carriage return ends for Prometheus (it would hide what follows)", () => {
      const err = scopeError('x # c\r+ y{namespace="team-b"}');
      expect(err).to.be.instanceOf(QueryScopeError);
      expect(err.message).to.equal(
        "the query has a carriage return inside a comment at offset 5; end comments with a line feed",
      );
      expect(scope("x\r\n+ y")).to.equal('x{namespace="team-a"}\r\n+ y{namespace="team-a"}');
    });

    it("refuses text that is not well-formed Unicode", () => {
      expect(scopeError('x{a="\ud800"}').message).to.equal("the query is not well-formed Unicode");
    });
  });

  describe("refuses options that are a caller's bug", () => {
    it("a label that is not a plain label name, or an empty namespace", () => {
      expect(() => scopeQuery("x", { namespace: "team-a", label: 'a"b' })).to.throw(TypeError);
      expect(() => scopeQuery("x", { namespace: "", label: "namespace" })).to.throw(TypeError);
    });

    it("quotes a namespace that needs it", () => {
      expect(scopeQuery("x", { namespace: 'a"b\\c', label: "namespace" })).to.equal(
        'x{namespace="a\\"b\\\\c"}',
      );
      expect(scopeQuery('x{namespace="a\\"b\\\\c"}', { namespace: 'a"b\\c', label: "namespace" })).to.equal(
        'x{namespace="a\\"b\\\\c"}',
      );
    });
  });

  describe("property: every selector of a realistic query ends up bound", () => {
    const realistic = [
      "rate(http_requests_total[5m])",
      'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))',
      "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
      'histogram_quantile(0.9, sum by (le, pod) (rate(x_bucket{job="api"}[1m])))',
      "a / on(pod) group_left b",
      "kube_pod_container_resource_requests / on(namespace, pod) group_left(node) kube_pod_info",
      "max_over_time(rate(x[1m])[5m:30s])",
      "x offset 5m",
      "x @ 1700000000",
      "absent(x)",
      "vector(1)",
      "count(kube_pod_info) > 3",
      'sum by (pod) (rate(http_requests_total{namespace="team-a",pod=~"a|b"}[1m]))',
      'avg(rate(container_cpu_usage_seconds_total{namespace="team-a",pod=~".+"}[2m])) by (pod)',
      "sum(queue_depth) - sum(queue_capacity offset 1h) * 0.5",
      'label_replace(up, "host", "$1", "instance", "(.*):.*")',
      "topk(3, sum by (route) (rate(requests_total[5m])))",
      'predict_linear(node_filesystem_free_bytes{mountpoint="/"}[1h], 4 * 3600) < 0',
      "clamp_min(sum(rate(jobs_processed_total[5m])), 1) and on() vector(1)",
      "sum(rate(x[5m] @ end())) or vector(0)",
      'quantile_over_time(0.95, latency_seconds{quantile="0.5"}[10m]) > bool 0.2',
      "increase(errors_total[1h]) unless increase(ignored_errors_total[1h])",
      '{__name__=~"queue_.*_depth", queue!=""}',
      'sum by (pod) ({"my.dotted.metric", pod=~"web-.*"})',
    ];

    before(() => {
      // The operator runs long: measure the adversarial cases below with the parser's code
      // warm, on realistic queries, one of them as long as allowed.
      const long = realistic.map((q) => `(${q})`).join(" or\n");
      const big = Array.from({ length: Math.floor(MAX_QUERY_BYTES / (long.length + 4)) }, () => `(${long})`);
      for (let i = 0; i < 10; i++) {
        for (const q of realistic) scope(q);
        scope(big.join(" or "));
      }
    });

    for (const query of realistic)
      it(query, () => {
        const out = scope(query);
        const before = selectors(query);
        const after = selectors(out);
        expect(after.length, "selectors in the output").to.equal(before.length);
        for (const s of after) expect(s.bound, `${s.text} in ${out}`).to.equal(true);
        expect(scope(out), "scoping twice").to.equal(out);
      });

    describe("adversarial input: under 100 ms, and either scoped or a QueryScopeError", () => {
      const fill = (unit: string, head = "", tail = "") =>
        head + unit.repeat(Math.floor((MAX_QUERY_BYTES - head.length - tail.length) / unit.length)) + tail;
      const nest = (open: string, inner: string, close: string, depth: number) =>
        open.repeat(depth) + inner + close.repeat(depth);
      const chain = (n: number, op: string) => Array.from({ length: n }, (_, i) => `x${i}`).join(op);

      /**
       * Scopes `query` `runs` times: the fastest run's time (wall clock by `performance.now()`,
       * or this process's CPU time), and what the last run gave.
       */
      function timed(query: string, runs: number, clock: "wall" | "cpu"): { ms: number; outcome: unknown } {
        let ms = Infinity;
        let outcome: unknown;
        for (let i = 0; i < runs; i++) {
          const wall = performance.now();
          const cpu = process.cpuUsage();
          try {
            outcome = scope(query);
          } catch (err) {
            outcome = err;
          }
          const used = process.cpuUsage(cpu);
          ms = Math.min(ms, clock === "wall" ? performance.now() - wall : (used.user + used.system) / 1000);
        }
        return { ms, outcome };
      }

      /** What a case must give: "scoped" (a string), or a QueryScopeError whose message matches. */
      type Expected = "scoped" | RegExp;
      const check = (title: string, query: string, expected: Expected, runs: number, clock: "wall" | "cpu") =>
        it(title, () => {
          const { ms, outcome } = timed(query, runs, clock);
          if (expected === "scoped") expect(outcome).to.be.a("string");
          else {
            expect(outcome).to.be.instanceOf(QueryScopeError);
            expect((outcome as Error).message).to.match(expected);
          }
          expect(ms, `${title} took ${ms.toFixed(1)} ms (${clock})`).to.be.below(100);
        });

      const deep = /^the query nests deeper than 64 levels/;
      const invalid = /^the query is not valid PromQL at offset \d+/;
      // Measured on the first run (after the warm-up above).
      const firstRun: [string, string, Expected][] = [
        ["5,000 nested parentheses around a selector", nest("(", "x", ")", 5000), deep],
        [
          "5,000 nested sum( (longer than 16 KiB)",
          nest("sum(", "x", ")", 5000),
          /^the query is 25001 bytes long/,
        ],
        ["3,000 nested sum( (fits in 16 KiB)", nest("sum(", "x", ")", 3000), deep],
        ["4,000 unclosed sum(", "sum(".repeat(4000), deep],
        // lezer cuts a left-associative chain of several hundred operators (see the report)
        ["2,000 selectors joined by +", chain(2000, "+"), invalid],
        ["300 selectors joined by +", chain(300, " + "), "scoped"],
        ["a 16 KiB string literal", `"${"a".repeat(MAX_QUERY_BYTES - 2)}"`, "scoped"],
        [
          "a 16 KiB string in label_replace",
          fill("a", 'label_replace(x, "dst", "', '", "src", "(.*)")'),
          "scoped",
        ],
        ["16 KiB of {{{{", "{".repeat(MAX_QUERY_BYTES), deep],
        ["16 KiB of }}}}", "}".repeat(MAX_QUERY_BYTES), invalid],
        ["16 KiB of ((((", "(".repeat(MAX_QUERY_BYTES), deep],
        ["16 KiB of signs", fill("-", "", "x"), /^the query has more than 64 signs in a row/],
        ["16 KiB of x^", fill("x^", "", "x"), /^the query has more than 64 "\^" operators/],
        ["16 KiB of sum(x)^", fill("sum(x)^", "", "x"), /^the query has more than 64 "\^" operators/],
        ["16 KiB of unclosed strings", fill("'", "x{a="), invalid],
        ["16 KiB of garbage words", fill("a b "), invalid],
      ];
      for (const [title, query, expected] of firstRun) check(title, query, expected, 1, "wall");

      // The densest shapes the bounds let through: the CPU time of the fastest of 3 runs, so
      // that what is measured is the work, not the JIT compiling a path the warm-up did not
      // take, nor other processes on a busy machine.
      const steady: [string, string, Expected][] = [
        [
          "nesting at the limit, repeated to 16 KiB",
          fill(nest("sum(", "x", ")", 63) + "+", "", "x"),
          "scoped",
        ],
        ["16 KiB of matchers", fill('a="b",', "x{", "}"), "scoped"],
        ["16 KiB of grouping labels", fill("a,", "sum by (", ") (x)"), "scoped"],
        ["16 KiB of function arguments", fill("x,", "label_join(", "x)"), "scoped"],
        ["16 KiB of comments", fill("#{{{(((\n", "x"), "scoped"],
        ["16 KiB of offsets", fill(" offset -1m", "x"), "scoped"],
        ["16 KiB of anchored", fill(" anchored", "x[1m]"), "scoped"],
        ["16 KiB of @", fill("@1", "x"), invalid],
        ["16 KiB of subqueries", fill("[1m:]", "x"), invalid],
        [
          "16 KiB of sum(x) joined by +, under 64 ^",
          `${"x^".repeat(64)}(${fill("sum(x)+", "", "x)").slice(200)}`,
          invalid,
        ],
      ];
      for (const [title, query, expected] of steady) check(title, query, expected, 3, "cpu");
    });
  });

  describe("bounds", () => {
    it(`refuses a query longer than ${MAX_QUERY_BYTES} bytes before parsing it`, () => {
      expect(scope("x".repeat(MAX_QUERY_BYTES))).to.equal(
        `${"x".repeat(MAX_QUERY_BYTES)}{namespace="team-a"}`,
      );
      const err = scopeError("x".repeat(MAX_QUERY_BYTES + 1));
      expect(err).to.be.instanceOf(QueryScopeError);
      expect(err.message).to.equal("the query is 16385 bytes long; at most 16384 are allowed");
    });

    it("counts UTF-8 bytes, not characters", () => {
      const err = scopeError(`x{a="${"é".repeat(MAX_QUERY_BYTES / 2)}"}`);
      expect(err.message).to.match(/^the query is \d+ bytes long/);
    });

    it('refuses more than 64 "^" operators (not counting those in strings), and takes 64', () => {
      expect(scope(`x${"^2".repeat(64)}`)).to.equal(`x{namespace="team-a"}${"^2".repeat(64)}`);
      expect(scopeError(`x${"^2".repeat(65)}`).message).to.equal('the query has more than 64 "^" operators');
      expect(scope(`x{a="${"^".repeat(100)}"}`)).to.contain(',namespace="team-a"}');
    });

    it("refuses a run of more than 64 signs, and takes 64", () => {
      expect(scope(`${"- ".repeat(64)}x`)).to.equal(`${"- ".repeat(64)}x{namespace="team-a"}`);
      expect(scopeError(`${"- ".repeat(65)}x`).message).to.match(
        /^the query has more than 64 signs in a row at offset 128: "/,
      );
      expect(scope(`x${" - x".repeat(100)}`)).to.contain('x{namespace="team-a"}');
    });

    it("refuses nesting deeper than 64 levels, and takes 64", () => {
      expect(scope(`${"(".repeat(63)}x${")".repeat(63)}`)).to.contain('x{namespace="team-a"}');
      expect(scopeError(`${"(".repeat(65)}x${")".repeat(65)}`).message).to.match(
        /^the query nests deeper than 64 levels at offset 64: "…\(+x\)+…"$/,
      );
    });
  });
});
