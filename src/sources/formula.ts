/**
 * `formula`: a value computed from other MetricMappings of the namespace by a CEL
 * expression — `math.greatest(queue / 50.0, rps / 200.0)` over the inputs `queue` and `rps`
 * (KEDA's `scalingModifiers`, as a mapping of its own). CEL is the expression language
 * Kubernetes itself uses; the implementation is @marcbachmann/cel-js (parser, type checker,
 * evaluator; no `eval`).
 *
 * A formula reads its inputs' last good values as this replica serves them (the same
 * values the HPA would be given); it never makes an input sample. An input that has no
 * value, is not served, or whose value is older than its own `staleAfter` fails the
 * sample with a message naming the input, so the formula's own value goes stale as any
 * source's does (never a made-up 0). Inputs that serve one value per object (pods) give
 * one value per object: the objects every such input has, with the scalar inputs the same
 * for each.
 *
 * Cost (ADR 0027): formulas are CEL's arithmetic — numbers, the inputs, arithmetic,
 * comparisons, `&&` `||` `!`, `?:`, `double()`, `int()` and `math.*` of numbers — with no
 * lists, maps, strings, field access or macros, so nothing loops: an evaluation does at
 * most one step per node of the expression. The expression is at most
 * {@link MAX_EXPRESSION_LENGTH} characters at admission, and so at most that many nodes;
 * the build checks the nodes again ({@link MAX_FORMULA_COST}) and the type (a number). At
 * run time a sample evaluates once per object: one over {@link MAX_SAMPLE_COST} steps in
 * all is refused before it starts, one taking more than {@link MAX_SAMPLE_MS} of CPU is
 * stopped, and all formulas together yield the event loop after {@link TURN_MS} in a turn.
 */
import { z } from "zod";
import { Environment, type ASTNode } from "@marcbachmann/cel-js";
import { ObjectName, withRules } from "../api/common.js";
import { boundedText, quote } from "../util/bounded-text.js";
import { currentValue, refuseCycle } from "./inputs.js";
import { type MappingReader, defineSource, required } from "./kind.js";
import { type MetricSource, type SampleValue, SourceConfigError } from "./source.js";

/** The longest expression admitted: an upper bound of its nodes, and so of an evaluation's steps. */
export const MAX_EXPRESSION_LENGTH = 1024;
/** The most nodes an expression may have (each is at most one step of an evaluation). */
export const MAX_FORMULA_COST = MAX_EXPRESSION_LENGTH;
/** The largest CEL int. */
const MAX_INT64 = 2n ** 63n - 1n;
/** Inputs of one formula, at most. */
export const MAX_FORMULA_INPUTS = 8;
/** The most steps one sample may take over all its objects (about 50 ms of CPU). */
export const MAX_SAMPLE_COST = 2_000_000;
/** Steps an evaluation costs besides its nodes (binding the inputs, the call): ~1.5 µs. */
const EVALUATION_STEPS = 64;
/**
 * The most CPU one sample's evaluations may take (the process's CPU while they ran, not
 * wall time, which other work stretches): a backstop for what the static cost misjudges.
 */
const MAX_SAMPLE_MS = 100;
/** The CPU all formulas' evaluations may take in one turn of the event loop before it yields. */
const TURN_MS = 2;
/** Evaluations between two looks at the clock. */
const CLOCK_EVERY = 64;
/** Failed evaluations of one sample, without a success, after which it stops. */
const MAX_OBJECT_ERRORS = 16;

/** The CPU formulas have taken in this turn of the event loop (reset when the turn ends). */
const turn = { spentMs: 0, resetting: false };
/** Counts `ms` against this turn's share. */
function charge(ms: number): void {
  if (!turn.resetting) {
    turn.resetting = true;
    setImmediate(() => {
      turn.spentMs = 0;
      turn.resetting = false;
    });
  }
  turn.spentMs += ms;
}
/** Waits for the next turn of the event loop, where the formulas' share starts anew. */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

/** An input's name: a CEL identifier that is not a reserved word or `math`. */
const INPUT_NAME = /^[a-z_][a-zA-Z0-9_]{0,62}$/;
const RESERVED = new Set(
  "math true false null in as break const continue else for function if import let loop package namespace return var void while".split(
    " ",
  ),
);

/** `spec.source.formula`. */
export const FormulaSpec = z
  .object({
    expression: z
      .string()
      .min(1)
      .max(MAX_EXPRESSION_LENGTH)
      .meta({
        description: `A CEL expression over the inputs giving a number: arithmetic, comparisons, && || !, ?:, double(), int(), math.greatest/least/abs/ceil/floor/round/trunc/sqrt (at most ${MAX_EXPRESSION_LENGTH} characters). Inputs are doubles: write 2.0, not 2.`,
      }),
    inputs: withRules(
      z.record(
        z
          .string()
          .regex(INPUT_NAME, "must be a CEL identifier: a lower-case letter or _, then letters, digits or _")
          .refine((k) => !RESERVED.has(k), "must not be a CEL reserved word or math"),
        z.object({
          mapping: ObjectName.meta({ description: "A MetricMapping of the same namespace." }),
        }),
      ),
      [
        {
          rule: `self.size() >= 1 && self.size() <= ${MAX_FORMULA_INPUTS}`,
          message: `1 to ${MAX_FORMULA_INPUTS} inputs`,
          check: (self) => {
            const n = Object.keys(self).length;
            return n >= 1 && n <= MAX_FORMULA_INPUTS;
          },
        },
      ],
    ).meta({
      description: `The expression's variables, each the value of a MetricMapping of this namespace (1 to ${MAX_FORMULA_INPUTS}).`,
    }),
  })
  .meta({ description: "A value computed by a CEL expression from other MetricMappings of the namespace." });
type Spec = z.output<typeof FormulaSpec>;

/** `math`: CEL's math extension, as a constant whose methods are its functions. */
class MathNamespace {}

/** The math functions, as cel-go's math extension names them, on doubles. */
const MATH_UNARY: Record<string, (x: number) => number> = {
  abs: Math.abs,
  ceil: Math.ceil,
  floor: Math.floor,
  // CEL rounds half away from zero; JavaScript's Math.round rounds half up.
  round: (x) => Math.sign(x) * Math.round(Math.abs(x)),
  trunc: Math.trunc,
  sqrt: Math.sqrt,
};
const MATH_VARIADIC: Record<string, (...xs: number[]) => number> = { greatest: Math.max, least: Math.min };

/** Functions a formula may call: conversions to numbers, and `math.*`. */
const CALLS = new Set(["double", "int"]);
const MATH_CALLS = new Set([...Object.keys(MATH_UNARY), ...Object.keys(MATH_VARIADIC)]);
/** Node kinds a formula may hold besides literals, names and calls. */
const OPERATORS = new Set([
  "+",
  "-",
  "*",
  "/",
  "%",
  "==",
  "!=",
  "<",
  "<=",
  ">",
  ">=",
  "&&",
  "||",
  "!_",
  "-_",
  "?:",
]);

/** The environment every formula's is cloned from: limits, and `math`. */
const base = (() => {
  const env = new Environment({
    limits: {
      maxAstNodes: MAX_FORMULA_COST,
      maxDepth: 32,
      maxListElements: 0,
      maxMapEntries: 0,
      maxCallArguments: MAX_FORMULA_INPUTS,
    },
  })
    .registerType("math", { ctor: MathNamespace, fields: {} })
    .registerConstant("math", "math", new MathNamespace());
  for (const [name, fn] of Object.entries(MATH_UNARY))
    env.registerFunction(`math.${name}(double): double`, (_: unknown, x: number) => fn(x));
  for (const [name, fn] of Object.entries(MATH_VARIADIC))
    for (let n = 2; n <= MAX_FORMULA_INPUTS; n++)
      env.registerFunction(
        `math.${name}(${Array(n).fill("double").join(", ")}): double`,
        (_: unknown, ...xs: number[]) => fn(...xs),
      );
  return env;
})();

/** The first line of a CEL error (the rest is a drawing of where), cut short. */
function celMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return boundedText(text.split("\n")[0] ?? "", 200);
}

/** A compiled formula: evaluates with its inputs' values; how many steps one evaluation takes at most. */
export interface CompiledFormula {
  evaluate(values: Record<string, number>): number;
  readonly cost: number;
}

/**
 * Parses and checks `expression` over `inputs` (all doubles): only the constructs the
 * module comment lists, a number as its type. Throws {@link SourceConfigError} saying what
 * is wrong.
 */
export function compileFormula(expression: string, inputs: readonly string[]): CompiledFormula {
  if (expression.length > MAX_EXPRESSION_LENGTH)
    throw new SourceConfigError(`formula expression is longer than ${MAX_EXPRESSION_LENGTH} characters`);
  const env = base.clone();
  for (const name of inputs) env.registerVariable(name, "double");
  let program: ReturnType<Environment["parse"]>;
  try {
    program = env.parse(expression);
  } catch (err) {
    throw new SourceConfigError(`formula expression: ${celMessage(err)}`);
  }
  const cost = allowedNodes(program.ast, new Set(inputs));
  const checked = program.check();
  if (!checked.valid) throw new SourceConfigError(`formula expression: ${celMessage(checked.error)}`);
  if (checked.type !== "double" && checked.type !== "int")
    throw new SourceConfigError(
      `formula expression gives a ${checked.type}, not a number (write cond ? 1.0 : 0.0 for a bool)`,
    );
  return {
    cost,
    evaluate(values) {
      let out: unknown;
      try {
        out = program(values);
      } catch (err) {
        throw new Error(`formula: ${celMessage(err)}`);
      }
      if (typeof out === "bigint") {
        // cel-js computes ints as big integers; CEL's are 64 bits (int(1e300) is an error in cel-go).
        if (out > MAX_INT64 || out < -MAX_INT64 - 1n) throw new Error("formula: integer overflow");
        return Number(out);
      }
      if (typeof out === "number") return out;
      throw new Error(`formula gave ${typeof out}, not a number`);
    },
  };
}

/** Counts `ast`'s nodes, refusing any a formula may not hold (see the module comment). */
function allowedNodes(ast: ASTNode, inputs: ReadonlySet<string>): number {
  let count = 0;
  const stack: ASTNode[] = [ast];
  while (stack.length) {
    const node = stack.pop()!;
    count++;
    const { op, args } = node as { op: string; args: unknown };
    if (op === "value") {
      if (typeof args !== "number" && typeof args !== "bigint" && typeof args !== "boolean")
        throw refused(`a ${args === null ? "null" : typeof args} literal`, node);
      // CEL's ints are 64 bits and its doubles finite; cel-js reads longer literals as more.
      if ((typeof args === "bigint" && (args > MAX_INT64 || args < -MAX_INT64)) || args === Infinity)
        throw refused("a number literal out of range", node);
    } else if (op === "id") {
      if (!inputs.has(args as string) && args !== "math")
        throw new SourceConfigError(`formula expression: ${quote(String(args))} is not an input`);
    } else if (op === "call") {
      const [name, callArgs] = args as [string, ASTNode[]];
      if (!CALLS.has(name)) throw refused(`the function ${name}()`, node);
      stack.push(...callArgs);
    } else if (op === "rcall") {
      const [name, receiver, callArgs] = args as [string, ASTNode, ASTNode[]];
      const onMath = (receiver as { op: string; args: unknown }).op === "id" && receiver.args === "math";
      if (!onMath || !MATH_CALLS.has(name)) throw refused(`the method .${name}()`, node);
      count++; // math itself
      stack.push(...callArgs);
    } else if (OPERATORS.has(op)) {
      if (Array.isArray(args)) stack.push(...(args as ASTNode[]));
      else stack.push(args as ASTNode);
    } else {
      throw refused(`the operator ${op}`, node);
    }
  }
  return count;
}

function refused(what: string, node: ASTNode): SourceConfigError {
  const at = (node as { pos?: number }).pos;
  return new SourceConfigError(
    `formula expression: ${what}${at === undefined ? "" : ` at character ${at + 1}`} is not allowed in a formula (numbers, inputs, arithmetic, comparisons, logic, ?:, double(), int(), math.*)`,
  );
}

/** See the module comment. */
export class FormulaSource implements MetricSource {
  readonly needsObjects = false;
  /** Each input's variable and the MetricMapping it reads. */
  readonly inputs: readonly (readonly [string, string])[];
  readonly readsMappings: readonly string[];
  private readonly formula: CompiledFormula;

  /**
   * @param name the mapping's own name, to refuse a cycle through it
   * @param now the clock input ages are measured on (a test's). @default Date.now
   */
  constructor(
    spec: Spec,
    private readonly namespace: string,
    private readonly mappings: MappingReader,
    name?: string,
    private readonly now: () => number = Date.now,
  ) {
    this.inputs = Object.entries(spec.inputs).map(([v, i]) => [v, i.mapping] as const);
    this.readsMappings = [...new Set(this.inputs.map(([, m]) => m))];
    this.formula = compileFormula(
      spec.expression,
      this.inputs.map(([v]) => v),
    );
    if (name !== undefined) refuseCycle(mappings, namespace, name, this.readsMappings, "formula");
  }

  async sample(req: { signal?: AbortSignal }): Promise<SampleValue> {
    const now = this.now();
    const scalars: Record<string, number> = {};
    const perObject: [string, ReadonlyMap<string, number>][] = [];
    for (const [v, m] of this.inputs) {
      const value = this.read(v, m, now);
      if (value.kind === "scalar") scalars[v] = value.value;
      else perObject.push([v, value.values]);
    }
    if (!perObject.length) return { kind: "scalar", value: this.formula.evaluate(scalars) };
    return { kind: "objects", values: await this.perObject(scalars, perObject, req.signal) };
  }

  /** Input `v`'s current value, the MetricMapping `m`'s; throws naming it when there is none. */
  private read(v: string, m: string, now: number): SampleValue {
    return currentValue(this.mappings, this.namespace, m, `input ${v}: MetricMapping ${m}`, now).value;
  }

  /**
   * One value per object every per-object input has, the scalar inputs the same for each;
   * an object whose evaluation fails (an integer division by zero) is left out, as a
   * source leaves out an object it has no value for.
   */
  private async perObject(
    scalars: Record<string, number>,
    inputs: [string, ReadonlyMap<string, number>][],
    signal?: AbortSignal,
  ): Promise<Map<string, number>> {
    inputs.sort((a, b) => a[1].size - b[1].size);
    const [, smallest] = inputs[0]!;
    const steps = smallest.size * (this.formula.cost + EVALUATION_STEPS);
    if (steps > MAX_SAMPLE_COST)
      throw new Error(
        `formula over ${smallest.size} objects would take ${steps} steps, more than the ${MAX_SAMPLE_COST} one sample may take`,
      );
    const out = new Map<string, number>();
    const values = { ...scalars };
    let firstError: Error | undefined;
    let errors = 0;
    let cpuMs = 0;
    let done = 0;
    let since = performance.now();
    let cpuSince = process.cpuUsage();
    for (const name of smallest.keys()) {
      // Every few evaluations: the time they took, shared with the other formulas' of this
      // turn of the event loop; past the turn's share, the others go first.
      if (++done % CLOCK_EVERY === 0) {
        const now = performance.now();
        const cpu = process.cpuUsage(cpuSince);
        cpuMs += (cpu.user + cpu.system) / 1000;
        charge(now - since);
        since = now;
        cpuSince = process.cpuUsage();
        if (cpuMs > MAX_SAMPLE_MS)
          throw new Error(
            `formula over ${smallest.size} objects took more than ${MAX_SAMPLE_MS} ms of CPU; it was stopped after ${done}`,
          );
        if (turn.spentMs > TURN_MS) {
          await nextTurn();
          if (signal?.aborted) throw new Error("aborted");
          since = performance.now();
          cpuSince = process.cpuUsage();
        }
      }
      let all = true;
      for (const [v, byObject] of inputs) {
        const x = byObject.get(name);
        if (x === undefined) {
          all = false;
          break;
        }
        values[v] = x;
      }
      if (!all) continue;
      try {
        out.set(name, this.formula.evaluate(values));
      } catch (err) {
        // An error costs a thousand times an evaluation (its message draws the expression):
        // a few say what is wrong.
        firstError ??= err as Error;
        if (++errors >= MAX_OBJECT_ERRORS && !out.size)
          throw new Error(`${firstError.message} (and for ${errors - 1} other objects; stopped there)`);
      }
    }
    charge(performance.now() - since);
    if (!out.size && firstError) throw firstError;
    return out;
  }
}

/** The `formula` source kind. */
export const formulaSource = defineSource({
  kind: "formula",
  schema: FormulaSpec,
  build: (spec, ctx) =>
    new FormulaSource(
      spec,
      ctx.namespace,
      required(ctx.mappings, "formula", "the mappings it reads"),
      ctx.name,
    ),
});
