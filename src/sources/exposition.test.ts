import { expect } from "chai";
import { ExpositionError, parseExposition } from "./exposition.js";

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
