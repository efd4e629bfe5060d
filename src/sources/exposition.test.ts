import { expect } from "chai";
import { ExpositionError, parseExposition, selectSeries } from "./exposition.js";

describe("Prometheus text exposition parser", () => {
  it("reads what prom-client and Go clients write", () => {
    const text = [
      "# HELP http_requests_total Requests.",
      "# TYPE http_requests_total counter",
      'http_requests_total{code="200",path="/a \\"q\\" \\\\ x\\ny"} 1027 1395066363000',
      'http_requests_total{code="500"} 3',
      "process_start_time_seconds 1.7e9",
      "weird_empty{} +Inf",
      'trailing_comma{a="b",} NaN',
      "",
    ].join("\n");
    const samples = parseExposition(text);
    expect(samples).to.have.length(5);
    expect(samples[0]).to.deep.equal({
      name: "http_requests_total",
      labels: { code: "200", path: '/a "q" \\ x\ny' },
      value: 1027,
    });
    expect(samples[2]!.value).to.equal(1.7e9);
    expect(samples[3]!.value).to.equal(Infinity);
    expect(samples[4]!.value).to.be.NaN;
  });

  it("names the line of a malformed sample", () => {
    expect(() => parseExposition("ok 1\nbad{a=1} 2")).to.throw(ExpositionError, /line 2: expected '"'/);
    expect(() => parseExposition("x 12abc")).to.throw(ExpositionError, /invalid value/);
  });

  it("fuzzing: never throws anything but ExpositionError", () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const alphabet = [
      '"',
      "{",
      "}",
      ",",
      "=",
      "\\",
      " ",
      "\n",
      "a",
      "_",
      "1",
      ".",
      "e",
      "-",
      "+",
      "#",
      "N",
      "I",
    ];
    const base = 'http_requests_total{code="200",m="x"} 12.5 1700000000\n# TYPE x counter\nx 1\n';
    for (let i = 0; i < 20_000; i++) {
      const chars = [...base];
      for (let e = 0; e < 1 + Math.floor(rand() * 4); e++) {
        const at = Math.floor(rand() * chars.length);
        if (rand() < 0.5) chars.splice(at, 1);
        else chars.splice(at, 0, alphabet[Math.floor(rand() * alphabet.length)]!);
      }
      try {
        parseExposition(chars.join(""));
      } catch (err) {
        if (!(err instanceof ExpositionError))
          throw new Error(`threw ${String(err)} for ${JSON.stringify(chars.join(""))}`);
      }
    }
  });
});

describe("Prometheus text exposition parser on generated valid bodies", () => {
  it("reads back every sample of 2,000 generated bodies: names, escaped labels, every number form", () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    // Metric names may hold ':', label names may not.
    const ident = (first: string, more = ["a", "z", "_", "0", "9", ":"]) =>
      first + Array.from({ length: Math.floor(rand() * 10) }, () => pick(more)).join("");
    const numbers: [string, number][] = [
      ["0", 0],
      ["-3", -3],
      ["12.5", 12.5],
      ["1e3", 1000],
      ["-2.5E-3", -0.0025],
      [".5", 0.5],
      ["+Inf", Infinity],
      ["-Inf", -Infinity],
      ["NaN", NaN],
      ["1700000000123", 1700000000123],
    ];
    let samples = 0;
    for (let i = 0; i < 2_000; i++) {
      const lines: string[] = [];
      const want: { name: string; labels: Record<string, string>; value: number }[] = [];
      for (let l = 0; l < 1 + Math.floor(rand() * 6); l++) {
        const name = ident(pick(["a", "h", "_", ":"]));
        if (rand() < 0.3) lines.push(pick([`# HELP ${name} Some help.`, `# TYPE ${name} gauge`, "", "#"]));
        const labels: Record<string, string> = {};
        const written: string[] = [];
        for (let k = 0; k < Math.floor(rand() * 4); k++) {
          const key = `${ident(pick(["l", "_"]), ["a", "z", "_", "0", "9"])}${k}`;
          const value = Array.from({ length: Math.floor(rand() * 8) }, () =>
            pick(["a", " ", '"', "\\", "\n", "é", "{", "}", ",", "="]),
          ).join("");
          labels[key] = value;
          written.push(`${key}="${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
        }
        const [text, value] = pick(numbers);
        const braces =
          written.length > 0 || rand() < 0.2
            ? `{${written.join(",")}${rand() < 0.2 && written.length ? "," : ""}}`
            : "";
        const stamp = rand() < 0.3 ? ` ${Math.floor(rand() * 2e12)}` : "";
        lines.push(`${name}${braces} ${text}${stamp}`);
        want.push({ name, labels, value });
      }
      const body = lines.join(pick(["\n", "\n", "\r\n"])) + (rand() < 0.5 ? "\n" : "");
      const got = parseExposition(body);
      expect(
        got.map((x) => ({ ...x, value: Number.isNaN(x.value) ? "NaN" : x.value })),
        body,
      ).to.deep.equal(want.map((x) => ({ ...x, value: Number.isNaN(x.value) ? "NaN" : x.value })));
      samples += got.length;
    }
    expect(samples).to.be.above(5_000);
  });
});

describe("Prometheus text exposition parser against a hostile pod", () => {
  /**
   * Milliseconds the fastest of three selections of a series in `text` takes (what a
   * scrape does with a pod's answer; the parser's own errors allowed). The fastest, not
   * the slowest: the parser's cost, without what the garbage collector or the machine's
   * other work adds to one round.
   */
  function parseMs(text: string, series = "http_requests_total"): number {
    let best = Infinity;
    for (let round = 0; round < 3; round++) {
      const t = performance.now();
      try {
        selectSeries(text, series);
      } catch (err) {
        if (!(err instanceof ExpositionError)) throw err;
      }
      best = Math.min(best, performance.now() - t);
    }
    return best;
  }

  const KiB = 1024;
  /** Inputs of about `n` bytes built to make a backtracking or quadratic parser slow. */
  const adversaries: Record<string, (n: number) => string> = {
    "a value of digits ending in a letter": (n) => `http_requests_total ${"1".repeat(n)}x`,
    "a value of digits with a dot": (n) => `http_requests_total ${"1".repeat(n / 2)}.${"1".repeat(n / 2)}e`,
    "a timestamp of digits ending in a letter": (n) => `http_requests_total 1 ${"1".repeat(n)}x`,
    "a label value of escapes": (n) => `http_requests_total{a="${"\\\\".repeat(n / 2)}"} 1`,
    "an unterminated label value": (n) => `http_requests_total{a="${"x".repeat(n)}`,
    "many labels": (n) => `http_requests_total{${'a="b",'.repeat(n / 6)}} 1`,
    "a long name": (n) => `${"a".repeat(n)} 1`,
    "whitespace before the value": (n) => `http_requests_total${" ".repeat(n)}1`,
    "many short lines of the series": (n) => "http_requests_total 1\n".repeat(n / 22),
    "many short lines of other series": (n) => "a 1\n".repeat(n / 4),
    "braces only": (n) => "{".repeat(n),
  };

  for (const [what, make] of Object.entries(adversaries)) {
    it(`parses ${what} in linear time, inside the event loop's budget`, () => {
      // Even at 256 KiB, eight times what is parsed on the event loop (larger answers go
      // to the parse worker), it stays inside the loop's budget of 100 ms. A backtracking
      // or quadratic parser takes minutes on these; a linear one takes milliseconds.
      const inline = parseMs(make(256 * KiB));
      expect(inline, `${what}: ${inline.toFixed(1)} ms for 256 KiB`).to.be.below(100);
      const large = parseMs(make(1024 * KiB));
      expect(large, `${what}: ${large.toFixed(1)} ms for 1 MiB`).to.be.below(1000);
    });
  }

  it("keeps four numbers however many samples match", () => {
    const body = 'http_requests_total{code="200"} 2\n'.repeat(10_000) + 'http_requests_total{code="500"} 7\n';
    expect(selectSeries(body, "http_requests_total", { code: "200" })).to.deep.equal({
      count: 10_000,
      sum: 20_000,
      min: 2,
      max: 2,
    });
    expect(selectSeries(body, "http_requests_total", { code: "500" }).sum).to.equal(7);
  });

  it("quotes at most a short part of a bad value in its error", () => {
    expect(() => parseExposition(`x ${"1".repeat(100_000)}x`))
      .to.throw(ExpositionError)
      .with.property("message")
      .that.has.length.below(400);
  });
});
