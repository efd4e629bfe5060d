import { monitorEventLoopDelay } from "node:perf_hooks";
import { expect } from "chai";
import { AnswerDecoder } from "./answer-decoder.js";
import { MAX_JSON_DEPTH, MAX_JSON_VALUES, MAX_SERIES, checkJsonShape } from "./answers.js";

const MiB = 1024 * 1024;
const bytes = (text: string) => Buffer.from(text);

/**
 * Runs `fn` while measuring the event loop's longest stall (ms): what a Lease renewal or a
 * probe arriving meanwhile would have waited.
 */
async function longestStall<T>(
  fn: () => Promise<T>,
): Promise<{ result: PromiseSettledResult<T>; stallMs: number }> {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const [result] = await Promise.allSettled([fn()]);
  h.disable();
  return { result: result, stallMs: h.max / 1e6 };
}

describe("answer decoder: a source's answer can neither stall nor kill Governor", function () {
  this.timeout(60_000);
  let decoder: AnswerDecoder;
  // A generous budget: these tests are about the event loop, which must stay free however
  // long the worker takes on a loaded machine.
  beforeEach(() => (decoder = new AnswerDecoder({ budgetMs: 20_000 })));
  afterEach(() => decoder.close());

  it("refuses 10 MiB of empty objects under $..* with a short reason, the loop never stalled", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    const body = bytes(`[${"{},".repeat((10 * MiB) / 3 - 1)}{}]`);
    const { result, stallMs } = await longestStall(() =>
      decoder.decode(body, { kind: "json-path", path: "$..*" }, { tenant: "a" }),
    );
    expect(result.status).to.equal("rejected");
    const message = ((result as PromiseRejectedResult).reason as Error).message;
    expect(message).to.match(/more than 1,000,000 JSON values/);
    expect(message.length).to.be.below(200);
    expect(stallMs, "longest event-loop stall (ms)").to.be.below(100);
    // The next answer is decoded as ever.
    expect(
      await decoder.decode(bytes('{"x": 3}'), { kind: "json-path", path: "$.x" }, { tenant: "a" }),
    ).to.equal(3);
  });

  it("picks $.x out of 10 MiB of JSON without stalling the loop", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    const body = bytes(`{"pad": "${"a".repeat(10 * MiB)}", "x": 7}`);
    const { result, stallMs } = await longestStall(() =>
      decoder.decode(body, { kind: "json-path", path: "$.x" }, { tenant: "a" }),
    );
    expect(result).to.deep.equal({ status: "fulfilled", value: 7 });
    expect(stallMs, "longest event-loop stall (ms)").to.be.below(100);
  });

  it("selects a series from 10 MiB of exposition lines without stalling the loop", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    const body = bytes("a 1\n".repeat((10 * MiB) / 4));
    const { result, stallMs } = await longestStall(() =>
      decoder.decode(body, { kind: "exposition", series: "a" }, { tenant: "a" }),
    );
    expect(result.status).to.equal("fulfilled");
    expect((result as PromiseFulfilledResult<{ count: number }>).value.count).to.equal((10 * MiB) / 4);
    expect(stallMs, "longest event-loop stall (ms)").to.be.below(100);
  });

  it("stops an answer past its time budget and decodes the next in a new thread", async () => {
    const quick = new AnswerDecoder({ budgetMs: 50 });
    try {
      // Within the JSON bounds (250 levels of 300 numbers each, 75,000 values), but a
      // path whose work grows with the depth times the values, and again.
      let nested = "1";
      for (let d = 0; d < 250; d++) nested = `[${"1,".repeat(300)}${nested}]`;
      const failed = await quick
        .decode(bytes(nested), { kind: "json-path", path: "$..*..*..*" }, { tenant: "a" })
        .then(
          () => undefined,
          (err: Error) => err.message,
        );
      expect(failed).to.match(/took more than 50 ms/);
      expect(
        await quick.decode(bytes('{"x": 1}'), { kind: "json-path", path: "$.x" }, { tenant: "a" }),
      ).to.equal(1);
    } finally {
      await quick.close();
    }
  });

  it("takes waiting answers round-robin by tenant, so one tenant's many answers do not hold another's back", async () => {
    const big = (n: number) => bytes(`{"x": ${n}, "pad": "${"a".repeat(300 * 1024)}"}`);
    const order: string[] = [];
    const track = (tenant: string, n: number) =>
      decoder
        .decode(big(n), { kind: "json-path", path: "$.x" }, { tenant })
        .then((v) => order.push(`${tenant}${v}`));
    await Promise.all([track("a", 1), track("a", 2), track("a", 3), track("b", 1)]);
    expect(order).to.deep.equal(["a1", "b1", "a2", "a3"]);
  });

  it("refuses answers past the bytes that may wait, and decodes small ones on the loop", async () => {
    const small = new AnswerDecoder({ maxQueuedBytes: 1 * MiB, inlineBytes: 1024 });
    try {
      const large = () => bytes(`{"x": 1, "pad": "${"a".repeat(600 * 1024)}"}`);
      const results = await Promise.allSettled([
        small.decode(large(), { kind: "json-path", path: "$.x" }, { tenant: "a" }),
        small.decode(large(), { kind: "json-path", path: "$.x" }, { tenant: "a" }),
        small.decode(large(), { kind: "json-path", path: "$.x" }, { tenant: "a" }),
      ]);
      expect(results.map((r) => r.status)).to.include("rejected");
      const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect((refused.reason as Error).message).to.match(/waiting to be decoded/);
      expect(
        await small.decode(bytes("x 2\n"), { kind: "exposition", series: "x" }, { tenant: "a" }),
      ).to.deep.include({ count: 1, sum: 2 });
    } finally {
      await small.close();
    }
  });

  it("gives up on an answer whose sample was aborted while it waited", async () => {
    const body = () => bytes(`{"x": 1, "pad": "${"a".repeat(600 * 1024)}"}`);
    const abort = new AbortController();
    const first = decoder.decode(body(), { kind: "json-path", path: "$.x" }, { tenant: "a" });
    const second = decoder.decode(
      body(),
      { kind: "json-path", path: "$.x" },
      { tenant: "a", signal: abort.signal },
    );
    abort.abort();
    expect(await first).to.equal(1);
    expect(
      await second.then(
        () => "decoded",
        (err: Error) => err.message,
      ),
    ).to.match(/aborted/);
  });
});

describe("the shape of an answer's JSON, counted before it is parsed", () => {
  it("counts values and depth outside strings only, and refuses past the bounds", () => {
    expect(() => checkJsonShape('{"a": "[[[,,,{{{", "b": [1, 2, {"c": "\\" ,,"}]}')).not.to.throw();
    expect(() => checkJsonShape(`[${"1,".repeat(MAX_JSON_VALUES)}1]`)).to.throw(
      /more than 1,000,000 JSON values/,
    );
    expect(() =>
      checkJsonShape(`${"[".repeat(MAX_JSON_DEPTH + 1)}${"]".repeat(MAX_JSON_DEPTH + 1)}`),
    ).to.throw(/nests deeper than 256 levels/);
    // A legitimate Prometheus answer of as many series as a mapping may use passes.
    const series = `{"metric":{"pod":"web-1","namespace":"shop"},"value":[1700000000.1,"2.5"]}`;
    expect(() =>
      checkJsonShape(
        `{"status":"success","data":{"resultType":"vector","result":[${Array(MAX_SERIES).fill(series).join(",")}]}}`,
      ),
    ).not.to.throw();
  });
});

describe("answer decoder: many small answers at once", () => {
  it("decodes on the loop only until its budget for the turn is spent, then in the worker", async function () {
    // A stall measured in real time also sees the machine's other work: a real stall repeats
    // on every attempt, a neighbour's rarely twice.
    this.retries(2);
    const decoder = new AnswerDecoder();
    try {
      // 64 answers of 32 KiB arriving in one turn (four scrape mappings of sixteen pods
      // answering at the same moment): about 5 ms each on the loop, 300 ms in a row.
      const body = () => bytes("x 1\n".repeat(8 * 1024));
      const { result, stallMs } = await longestStall(() =>
        Promise.all(
          Array.from({ length: 64 }, () =>
            decoder.decode(body(), { kind: "exposition", series: "x" }, { tenant: "a" }),
          ),
        ),
      );
      expect(result.status).to.equal("fulfilled");
      expect(
        (result as PromiseFulfilledResult<{ count: number }[]>).value.every((s) => s.count === 8192),
      ).to.equal(true);
      expect(stallMs, "longest event-loop stall (ms)").to.be.below(100);
    } finally {
      await decoder.close();
    }
  });
});

describe("answer decoder: one namespace's large answers", () => {
  it("may take a quarter of what waits for the worker, so another namespace's still get in", async () => {
    const decoder = new AnswerDecoder({ maxQueuedBytes: 5 * MiB });
    try {
      const large = (x: number) => bytes(`{"x": ${x}, "pad": "${"a".repeat(600 * 1024)}"}`);
      const decode = (tenant: string, x: number) =>
        decoder.decode(large(x), { kind: "json-path", path: "$.x" }, { tenant }).then(
          (v) => `decoded ${v}`,
          (err: Error) => err.message,
        );
      // All four arrive before the worker is up: a's first two wait (1.2 MiB), its third would
      // take it past its quarter (1.25 MiB); b's gets in.
      const results = await Promise.all([decode("a", 1), decode("a", 2), decode("a", 3), decode("b", 4)]);
      expect(results[0]).to.equal("decoded 1");
      expect(results[1]).to.equal("decoded 2");
      expect(results[2]).to.match(/this namespace's large answers waiting to be decoded reach 1 MiB/);
      expect(results[3]).to.equal("decoded 4");
    } finally {
      await decoder.close();
    }
  });
});
