/**
 * Kubernetes label selectors: the string grammar of `k8s.io/apimachinery/pkg/labels`
 * (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, `a>1`, `a<1`, joined
 * by commas), the structured `metav1.LabelSelector` form, matching, and conversion back
 * to `metav1.LabelSelector` (what the metrics API echoes). Keys and values are checked
 * with the same syntax and length rules as the apiserver; any violation is a
 * {@link SelectorParseError} naming the problem, and nothing else is ever thrown.
 *
 * (About 400 lines: one grammar's lexer, parser, validation and matcher, as upstream keeps
 * them in one `selector.go`; the fuzz test in src/apiserver holds them to that promise.)
 */
import { GovernorError } from "../errors.js";
import { dict } from "../util/dict.js";

/** Selector operators, spelled as in `metav1.LabelSelectorRequirement` where one exists. */
export const Operators = {
  Equals: "=",
  DoubleEquals: "==",
  NotEquals: "!=",
  In: "in",
  NotIn: "notin",
  Exists: "exists",
  DoesNotExist: "!",
  GreaterThan: "gt",
  LessThan: "lt",
} as const;
/** One of {@link Operators}. */
export type Operator = (typeof Operators)[keyof typeof Operators];

/** One requirement of a selector; `values` is sorted and de-duplicated. */
export interface Requirement {
  key: string;
  operator: Operator;
  values: string[];
}

/** `metav1.LabelSelector`. */
export interface LabelSelectorObject {
  matchLabels?: Record<string, string> | null;
  matchExpressions?: { key: string; operator: string; values?: string[] | null }[] | null;
}

/** A label selector string or object was malformed. */
export class SelectorParseError extends GovernorError {
  constructor(message: string) {
    super("GOV_ERR_SELECTOR", message);
  }
}

const NAME_RE = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const INTEGER_RE = /^-?[0-9]+$/;

/** Checks a label key (`[prefix/]name`); returns a problem description or undefined. */
export function validateKey(key: string): string | undefined {
  const slash = key.indexOf("/");
  const [prefix, name] = slash === -1 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)];
  if (prefix !== undefined) {
    if (prefix.length === 0) return `invalid label key "${key}": prefix part must be non-empty`;
    if (prefix.length > 253)
      return `invalid label key "${key}": prefix part must be no more than 253 characters`;
    if (!DNS1123_SUBDOMAIN_RE.test(prefix))
      return `invalid label key "${key}": prefix part must be a lowercase RFC 1123 subdomain`;
  }
  if (name.length === 0) return `invalid label key "${key}": name part must be non-empty`;
  if (name.length > 63) return `invalid label key "${key}": name part must be no more than 63 characters`;
  if (!NAME_RE.test(name))
    return `invalid label key "${key}": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`;
  return undefined;
}

/** Checks a label value (may be empty); returns a problem description or undefined. */
export function validateValue(value: string): string | undefined {
  if (value.length > 63) return `invalid label value "${value}": must be no more than 63 characters`;
  if (value.length > 0 && !NAME_RE.test(value))
    return `invalid label value "${value}": must be empty or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`;
  return undefined;
}

/** A parsed, validated selector. The empty selector matches everything. */
export class LabelSelector {
  private constructor(readonly requirements: readonly Requirement[]) {}

  /** The selector that matches every object. */
  static everything(): LabelSelector {
    return new LabelSelector([]);
  }

  /** Parses the string form (a `labelSelector` query parameter). */
  static parse(text: string): LabelSelector {
    return new LabelSelector(parseRequirements(text));
  }

  /** Converts `metav1.LabelSelector`; `null`/undefined matches everything, as in Kubernetes. */
  static fromObject(obj: LabelSelectorObject | null | undefined): LabelSelector {
    const reqs: Requirement[] = [];
    for (const [key, value] of Object.entries(obj?.matchLabels ?? {})) {
      reqs.push(makeRequirement(key, Operators.Equals, [value]));
    }
    for (const expr of obj?.matchExpressions ?? []) {
      const values = expr.values ?? [];
      switch (expr.operator) {
        case "In":
          reqs.push(makeRequirement(expr.key, Operators.In, values));
          break;
        case "NotIn":
          reqs.push(makeRequirement(expr.key, Operators.NotIn, values));
          break;
        case "Exists":
        case "DoesNotExist":
          if (values.length > 0)
            throw new SelectorParseError(`values: must be empty when operator is "${expr.operator}"`);
          reqs.push(
            makeRequirement(
              expr.key,
              expr.operator === "Exists" ? Operators.Exists : Operators.DoesNotExist,
              [],
            ),
          );
          break;
        default:
          throw new SelectorParseError(`"${expr.operator}" is not a valid label selector operator`);
      }
    }
    return new LabelSelector(sortRequirements(reqs));
  }

  /** True when no requirement restricts anything. */
  get empty(): boolean {
    return this.requirements.length === 0;
  }

  /** Whether an object with these labels is selected. */
  matches(labels: Readonly<Record<string, string>> | undefined): boolean {
    const l = labels ?? {};
    return this.requirements.every((r) => requirementMatches(r, l));
  }

  /**
   * The `metav1.LabelSelector` form, as `metav1.SetAsLabelSelector`/`ParseToLabelSelector`
   * produce it: `=`/`==` into `matchLabels`, the rest into `matchExpressions`.
   * `gt`/`lt` have no LabelSelector form and become `Exists` plus nothing: callers that
   * echo selectors should prefer {@link toString} for those.
   */
  toObject(): LabelSelectorObject {
    const matchLabels = dict<string>(); // keys come from a request's selector
    const matchExpressions: { key: string; operator: string; values?: string[] }[] = [];
    for (const r of this.requirements) {
      switch (r.operator) {
        case Operators.Equals:
        case Operators.DoubleEquals:
          matchLabels[r.key] = r.values[0] ?? "";
          break;
        case Operators.NotEquals:
        case Operators.NotIn:
          matchExpressions.push({ key: r.key, operator: "NotIn", values: [...r.values] });
          break;
        case Operators.In:
          matchExpressions.push({ key: r.key, operator: "In", values: [...r.values] });
          break;
        case Operators.Exists:
        case Operators.GreaterThan:
        case Operators.LessThan:
          matchExpressions.push({ key: r.key, operator: "Exists" });
          break;
        case Operators.DoesNotExist:
          matchExpressions.push({ key: r.key, operator: "DoesNotExist" });
          break;
      }
    }
    const out: LabelSelectorObject = {};
    if (Object.keys(matchLabels).length > 0) out.matchLabels = matchLabels;
    if (matchExpressions.length > 0) out.matchExpressions = matchExpressions;
    return out;
  }

  /** The canonical string form, as Kubernetes prints it (requirements sorted by key). */
  toString(): string {
    return this.requirements
      .map((r) => {
        switch (r.operator) {
          case Operators.Exists:
            return r.key;
          case Operators.DoesNotExist:
            return `!${r.key}`;
          case Operators.In:
          case Operators.NotIn:
            // A lone empty value prints as "(,)" so that the text parses back.
            return `${r.key} ${r.operator} (${r.values.length === 1 && r.values[0] === "" ? "," : r.values.join(",")})`;
          case Operators.GreaterThan:
            return `${r.key}>${r.values[0]}`;
          case Operators.LessThan:
            return `${r.key}<${r.values[0]}`;
          default:
            return `${r.key}${r.operator}${r.values[0]}`;
        }
      })
      .join(",");
  }
}

function requirementMatches(r: Requirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const value = has ? labels[r.key] : undefined;
  switch (r.operator) {
    case Operators.Equals:
    case Operators.DoubleEquals:
    case Operators.In:
      return value !== undefined && r.values.includes(value);
    case Operators.NotEquals:
    case Operators.NotIn:
      return value === undefined || !r.values.includes(value);
    case Operators.Exists:
      return has;
    case Operators.DoesNotExist:
      return !has;
    case Operators.GreaterThan:
    case Operators.LessThan: {
      if (value === undefined || !INTEGER_RE.test(value)) return false;
      const actual = BigInt(value);
      const bound = BigInt(r.values[0] ?? "0");
      return r.operator === Operators.GreaterThan ? actual > bound : actual < bound;
    }
  }
}

function makeRequirement(key: string, operator: Operator, values: string[]): Requirement {
  const keyProblem = validateKey(key);
  if (keyProblem) throw new SelectorParseError(keyProblem);
  switch (operator) {
    case Operators.In:
    case Operators.NotIn:
      if (values.length === 0)
        throw new SelectorParseError(`for 'in', 'notin' operators, values set can't be empty (key "${key}")`);
      break;
    case Operators.Equals:
    case Operators.DoubleEquals:
    case Operators.NotEquals:
      if (values.length !== 1)
        throw new SelectorParseError(`exact-match compatibility requires one single value (key "${key}")`);
      break;
    case Operators.Exists:
    case Operators.DoesNotExist:
      if (values.length !== 0)
        throw new SelectorParseError(`values set must be empty for exists and does not exist (key "${key}")`);
      break;
    case Operators.GreaterThan:
    case Operators.LessThan:
      if (values.length !== 1 || !INTEGER_RE.test(values[0] ?? ""))
        throw new SelectorParseError(
          `for 'gt', 'lt' operators, exactly one integer value is required (key "${key}")`,
        );
      break;
  }
  if (operator !== Operators.GreaterThan && operator !== Operators.LessThan) {
    for (const v of values) {
      const problem = validateValue(v);
      if (problem) throw new SelectorParseError(problem);
    }
  }
  return { key, operator, values: [...new Set(values)].sort() };
}

function sortRequirements(reqs: Requirement[]): Requirement[] {
  return reqs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

// ---- lexer and parser (mirrors k8s.io/apimachinery/pkg/labels/selector.go) ----

type TokenKind =
  "id" | "and" | "open" | "close" | "eq" | "deq" | "neq" | "not" | "gt" | "lt" | "in" | "notin" | "end";
interface Token {
  kind: TokenKind;
  text: string;
  pos: number;
}

const SPECIAL = new Set(["!", "=", ",", "(", ")", "<", ">", " ", "\t", "\n", "\r", "\f", "\v"]);

function lex(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const two = text.slice(i, i + 2);
    if (two === "==" || two === "!=") {
      tokens.push({ kind: two === "==" ? "deq" : "neq", text: two, pos: i });
      i += 2;
      continue;
    }
    const single: Record<string, TokenKind> = {
      ",": "and",
      "(": "open",
      ")": "close",
      "=": "eq",
      "!": "not",
      ">": "gt",
      "<": "lt",
    };
    const kind = single[c];
    if (kind) {
      tokens.push({ kind, text: c, pos: i });
      i++;
      continue;
    }
    const start = i;
    while (i < text.length && !SPECIAL.has(text[i]!) && !/\s/.test(text[i]!)) i++;
    const word = text.slice(start, i);
    tokens.push({ kind: word === "in" ? "in" : word === "notin" ? "notin" : "id", text: word, pos: start });
  }
  tokens.push({ kind: "end", text: "", pos: text.length });
  return tokens;
}

const TOKEN_OPERATORS: Partial<Record<TokenKind, Operator>> = {
  eq: Operators.Equals,
  deq: Operators.DoubleEquals,
  neq: Operators.NotEquals,
  in: Operators.In,
  notin: Operators.NotIn,
  gt: Operators.GreaterThan,
  lt: Operators.LessThan,
};

/** In a value position the keywords are plain words (`a in (in, notin)` is valid). */
function asValue(t: Token): Token {
  return t.kind === "in" || t.kind === "notin" ? { ...t, kind: "id" } : t;
}

function parseRequirements(text: string): Requirement[] {
  if (text.length > 16_384) throw new SelectorParseError("label selector is longer than 16384 characters");
  const tokens = lex(text);
  let p = 0;
  const peek = () => tokens[p]!;
  const take = () => tokens[p++]!;
  const fail = (t: Token, expected: string): never => {
    const found = t.kind === "end" ? "end of string" : `'${t.text}'`;
    throw new SelectorParseError(
      `unable to parse requirement: found ${found} at position ${t.pos}, expected ${expected}`,
    );
  };
  const reqs: Requirement[] = [];
  if (peek().kind === "end") return reqs;
  for (;;) {
    let negated = false;
    if (peek().kind === "not") {
      take();
      negated = true;
    }
    const keyTok = take();
    if (keyTok.kind !== "id") fail(keyTok, "a label key");
    const key = keyTok.text;
    const next = peek();
    if (negated) {
      if (next.kind !== "and" && next.kind !== "end") fail(next, "',' or end of string after '!key'");
      reqs.push(makeRequirement(key, Operators.DoesNotExist, []));
    } else if (next.kind === "and" || next.kind === "end") {
      reqs.push(makeRequirement(key, Operators.Exists, []));
    } else {
      const op = take();
      const operator: Operator | undefined = TOKEN_OPERATORS[op.kind];
      if (!operator) fail(op, "one of '=', '==', '!=', 'in', 'notin', '>', '<'");
      let values: string[];
      if (operator === Operators.In || operator === Operators.NotIn) {
        if (take().kind !== "open") fail(tokens[p - 1]!, "'(' after 'in'/'notin'");
        values = [];
        if (peek().kind === "close") take();
        else {
          for (;;) {
            const v = asValue(take());
            if (v.kind === "id") {
              values.push(v.text);
              const sep = take();
              if (sep.kind === "close") break;
              if (sep.kind !== "and") fail(sep, "',' or ')'");
            } else if (v.kind === "and") {
              values.push(""); // `in (a,,b)` holds the empty value, as in Kubernetes
            } else if (v.kind === "close") {
              values.push("");
              break;
            } else fail(v, "a value, ',' or ')'");
          }
        }
      } else {
        const v = asValue(peek());
        if (v.kind === "id") values = [take().text];
        else if (v.kind === "and" || v.kind === "end") values = [""];
        else values = fail(v, "a value");
      }
      reqs.push(makeRequirement(key, operator!, values));
    }
    const sep = take();
    if (sep.kind === "end") break;
    if (sep.kind !== "and") fail(sep, "','");
  }
  return sortRequirements(reqs);
}
