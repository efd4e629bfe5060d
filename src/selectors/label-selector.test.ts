import { expect } from "chai";
import { LabelSelector, SelectorParseError } from "./label-selector.js";

const pod = { app: "web", tier: "frontend", "governor.dev/shard": "3", release: "" };

describe("LabelSelector", () => {
  describe("selects the objects Kubernetes would select", () => {
    const cases: [string, boolean][] = [
      ["", true],
      ["app=web", true],
      ["app==web", true],
      ["app = web , tier = frontend", true],
      ["app=api", false],
      ["app!=api", true],
      ["missing!=x", true],
      ["app in (api,web)", true],
      ["app in (api)", false],
      ["app notin (api,db)", true],
      ["missing notin (a)", true],
      ["app notin (web)", false],
      ["app", true],
      ["missing", false],
      ["!missing", true],
      ["!app", false],
      ["governor.dev/shard>2", true],
      ["governor.dev/shard<3", false],
      ["app>2", false],
      ["release=", true],
      ["release in (,x)", true],
      ["app=web,!missing,tier in (frontend)", true],
      ["app=web,tier=backend", false],
    ];
    for (const [text, expected] of cases) {
      it(`"${text}" ${expected ? "selects" : "does not select"} the pod`, () => {
        expect(LabelSelector.parse(text).matches(pod)).to.equal(expected);
      });
    }
  });

  describe("rejects malformed selectors with a message naming the problem", () => {
    const cases: [string, RegExp][] = [
      ["app in ()", /values set can't be empty/],
      ["app in (a", /expected ',' or '\)'/],
      ["app in a", /expected '\(' after 'in'/],
      ["=web", /found '=' at position 0, expected a label key/],
      ["app=web,", /found end of string .* expected a label key/],
      ["app=web x", /expected ','/],
      ["-app=web", /name part must consist of alphanumeric/],
      ["Bad_Prefix.com/app=x", /prefix part must be a lowercase RFC 1123 subdomain/],
      [`${"a".repeat(64)}=x`, /name part must be no more than 63 characters/],
      [`app=${"v".repeat(64)}`, /must be no more than 63 characters/],
      ["app=we b", /expected ','/],
      ["app=-web", /must be empty or consist of alphanumeric/],
      ["app>x", /exactly one integer value/],
      ["!app=web", /after '!key'/],
      ["app(", /expected one of/],
    ];
    for (const [text, message] of cases) {
      it(`"${text.length > 40 ? text.slice(0, 40) + "…" : text}" → ${message.source}`, () => {
        expect(() => LabelSelector.parse(text))
          .to.throw(SelectorParseError)
          .with.property("message")
          .that.matches(message);
      });
    }
  });

  it("prints the canonical form Kubernetes prints, sorted by key", () => {
    expect(LabelSelector.parse("tier in (b,a), app=web, !x, y").toString()).to.equal(
      "app=web,tier in (a,b),!x,y",
    );
  });

  it("converts to and from metav1.LabelSelector", () => {
    const sel = LabelSelector.parse("app=web,tier in (a,b),env notin (prod),x,!y");
    expect(sel.toObject()).to.deep.equal({
      matchLabels: { app: "web" },
      matchExpressions: [
        { key: "env", operator: "NotIn", values: ["prod"] },
        { key: "tier", operator: "In", values: ["a", "b"] },
        { key: "x", operator: "Exists" },
        { key: "y", operator: "DoesNotExist" },
      ],
    });
    const back = LabelSelector.fromObject(sel.toObject());
    expect(back.toString()).to.equal("app=web,env notin (prod),tier in (a,b),x,!y");
    expect(LabelSelector.fromObject(null).matches({ any: "thing" })).to.equal(true);
    expect(() => LabelSelector.fromObject({ matchExpressions: [{ key: "a", operator: "Near" }] })).to.throw(
      SelectorParseError,
      /"Near" is not a valid label selector operator/,
    );
  });

  describe("fuzzing: never throws anything but SelectorParseError, and what parses round-trips", () => {
    // A small deterministic PRNG so a failure reproduces.
    let seed = 0x9e3779b9;
    const rand = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 2 ** 32;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const alphabet = [
      "a",
      "b",
      "Z",
      "0",
      "-",
      "_",
      ".",
      "/",
      "=",
      "!",
      ",",
      "(",
      ")",
      " ",
      "<",
      ">",
      "in",
      "notin",
      "é",
      "\t",
      "\u0000",
    ];
    const seeds = ["app=web", "a in (x,y),!b", "x.io/k notin (1,2), c==d", "k>3,j<4,m!=n", "a", "p/q=r"];

    const check = (input: string) => {
      let parsed: LabelSelector | undefined;
      try {
        parsed = LabelSelector.parse(input);
      } catch (err) {
        if (!(err instanceof SelectorParseError))
          throw new Error(`parse(${JSON.stringify(input)}) threw ${String(err)}`);
        return;
      }
      const again = LabelSelector.parse(parsed.toString());
      expect(again.toString(), JSON.stringify(input)).to.equal(parsed.toString());
      parsed.matches({ a: "x", app: "web" });
    };

    it("survives 20,000 random strings", () => {
      for (let i = 0; i < 20_000; i++) {
        const n = Math.floor(rand() * 12);
        check(Array.from({ length: n }, () => pick(alphabet)).join(""));
      }
    });

    it("parses 5,000 generated valid selectors, each selecting the labels built to match it and not one that breaks it", () => {
      const name = () => {
        const n = 1 + Math.floor(rand() * 8);
        const inner = Array.from({ length: n }, () => pick(["a", "b", "z", "0", "9", "-", "_", "."]));
        return `${pick(["a", "k", "x"])}${inner.join("")}${pick(["a", "0"])}`;
      };
      let terms = 0;
      for (let i = 0; i < 5_000; i++) {
        const parts: string[] = [];
        const matching: Record<string, string> = {};
        // Per term, the one label change that breaks it (undefined: the label taken away).
        const breaking: [string, string | undefined][] = [];
        const count = 1 + Math.floor(rand() * 5);
        for (let t = 0; t < count; t++) {
          // A key of its own per term, so the labels built for each never clash.
          const key = `${rand() < 0.3 ? "x.io/" : ""}${name()}${t}`;
          const v = name();
          const form = Math.floor(rand() * 8);
          const sp = rand() < 0.3 ? " " : "";
          const [text, ok, bad] = (
            [
              [`${key}${sp}=${sp}${v}`, v, `${v}x`],
              [`${key}==${v}`, v, `${v}x`],
              [`${key}!=${v}`, `${v}x`, v],
              [`${key} in (${v},${v}y)`, `${v}y`, `${v}z`],
              [`${key} notin (${v})`, `${v}z`, v],
              [`${key}`, v, undefined],
              [`!${key}`, undefined, v],
              [`${key}>${t + 3}`, String(t + 4), String(t + 3)],
            ] as const
          )[form]!;
          parts.push(text);
          if (ok !== undefined) matching[key] = ok;
          breaking.push([key, bad]);
          terms++;
        }
        const input = parts.join(",");
        const parsed = LabelSelector.parse(input);
        expect(LabelSelector.parse(parsed.toString()).toString(), input).to.equal(parsed.toString());
        expect(parsed.matches(matching), input).to.equal(true);
        for (const [key, bad] of breaking) {
          const labels = { ...matching };
          if (bad === undefined) delete labels[key];
          else labels[key] = bad;
          expect(parsed.matches(labels), `${input}: ${key}`).to.equal(false);
        }
      }
      expect(terms).to.be.above(10_000);
    });

    it("parses or refuses the largest hostile selectors at once (no backtracking, no quadratic scan)", () => {
      const hostile = [
        `a in (${"x,".repeat(8_000)}x)`,
        `${"a=b,".repeat(3_000)}a=b`,
        `a in (${"(".repeat(16_000)}`,
        "!".repeat(16_384),
        `${"a".repeat(63)}=${"b".repeat(16_000)}`,
        `${"x.".repeat(120)}io/${"k".repeat(63)} notin (${"v,".repeat(5_000)})`,
      ];
      for (const text of hostile) {
        const started = performance.now();
        try {
          LabelSelector.parse(text);
        } catch (err) {
          if (!(err instanceof SelectorParseError)) throw err;
        }
        // Linear work at the 16 KiB limit is about a millisecond; a quadratic scan, seconds.
        expect(performance.now() - started, text.slice(0, 40)).to.be.below(250);
      }
    });

    it("survives 20,000 mutations of valid selectors", () => {
      for (let i = 0; i < 20_000; i++) {
        const chars = [...pick(seeds)];
        const edits = 1 + Math.floor(rand() * 3);
        for (let e = 0; e < edits; e++) {
          const at = Math.floor(rand() * (chars.length + 1));
          const op = rand();
          if (op < 0.4) chars.splice(at, 1);
          else if (op < 0.8) chars.splice(at, 0, pick(alphabet));
          else chars.splice(at, 1, pick(alphabet));
        }
        check(chars.join(""));
      }
    });
  });
});
