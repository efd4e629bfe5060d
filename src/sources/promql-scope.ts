/**
 * Tenancy for PromQL, the way prom-label-proxy does it: the query a MetricMapping's
 * author wrote is parsed with the Prometheus project's own grammar
 * (`@prometheus-io/lezer-promql`) and every vector selector in it (bare, inside a range
 * or subquery, a function argument, an aggregation or a binary expression, with
 * `offset`/`@`) is made to carry `<label>="<namespace>"`. The matcher is spliced into the
 * author's text, which is otherwise kept byte for byte (strings and comments are never
 * touched). A selector that names another namespace is refused; regex and negative
 * matchers on the label are kept, and the equality matcher is added beside them (PromQL
 * ANDs the matchers of a selector).
 *
 * Every query is hostile: its length is bounded before parsing, a linear pre-scan bounds
 * the shapes that make the parser's work grow faster than the text (deep nesting, long
 * `^` chains, long runs of signs), the parser runs without error recovery, and the syntax
 * tree is walked with lezer's iterative cursor, never by recursion.
 */
import { parser as promqlParser } from "@prometheus-io/lezer-promql";
import { SourceConfigError } from "./source.js";

/** The longest query scoped, in UTF-8 bytes (16 KiB); a longer one is refused unparsed. */
export const MAX_QUERY_BYTES = 16 * 1024;

/** The deepest nesting of `(`, `[` and `{` a query may have. */
export const MAX_QUERY_NESTING = 64;

/** The most `^` operators a query may have (each one nests the parse of what follows). */
export const MAX_QUERY_POWERS = 64;

/** The longest run of `+`/`-` signs in a row (`- - -x`; each unary sign nests too). */
export const MAX_QUERY_SIGN_RUN = 64;

/** The longest quotation of the query (or of a value in it) put into an error message. */
const MAX_QUOTED_CHARS = 64;

/** Without error recovery: the first token that does not fit ends the parse (fast, and no guessing). */
const parser = promqlParser.configure({ strict: true });

type SyntaxTree = ReturnType<typeof parser.parse>;

/** What {@link scopeQuery} binds a query to. */
export interface ScopeOptions {
  /** The namespace every selector is bound to (the mapping's own). Must not be empty. */
  namespace: string;
  /** The series label that holds the namespace, e.g. `namespace`. A plain PromQL label name. */
  label: string;
  /**
   * The longest query scoped, in UTF-8 bytes: a rendered template with many objects' names
   * in one string literal can be longer than anything an author writes. @default MAX_QUERY_BYTES
   */
  maxBytes?: number;
}

/**
 * How queries are bound to the mapping's namespace: by the label that names it in the
 * series (`namespace`, as Kubernetes service discovery labels them), or not at all
 * (`null`, for single-tenant clusters: `--allow-unscoped-prometheus-queries`).
 */
export interface QueryScope {
  namespaceLabel: string | null;
  /**
   * The header a `prometheus` source sends its tenant in (Cortex, Mimir, Loki, Thanos
   * receive). @default "X-Scope-OrgID"
   */
  tenantHeader?: string;
  /**
   * Whether every mapping's tenant is its namespace (`--prometheus-tenant-from-namespace`):
   * the header is always sent, and a spec may only name its own namespace as tenant.
   */
  tenantFromNamespace?: boolean;
}

/** The tenant header of multi-tenant Prometheus-compatible servers. */
export const DEFAULT_TENANT_HEADER = "X-Scope-OrgID";

/**
 * A query that cannot be scoped: not valid PromQL, beyond the bounds, or selecting
 * another namespace. The message is short, on one line, and quotes at most 64
 * characters of the query; it is meant for the mapping's `InvalidSource` condition.
 */
export class QueryScopeError extends SourceConfigError {
  constructor(message: string) {
    super(message);
    this.name = "QueryScopeError";
  }
}

/**
 * Returns `query` with `<label>="<namespace>"` added to every vector selector that does
 * not already have exactly that equality matcher; everything else in the text is kept
 * as written. Throws {@link QueryScopeError} when the query is longer than
 * {@link MAX_QUERY_BYTES}, nested beyond the bounds above, not valid PromQL, or has an
 * equality matcher on `label` with any other value. Linear in the query's length.
 */
export function scopeQuery(query: string, opts: ScopeOptions): string {
  checkOptions(opts);
  const bytes = Buffer.byteLength(query, "utf8");
  const max = opts.maxBytes ?? MAX_QUERY_BYTES;
  if (bytes > max) throw new QueryScopeError(`the query is ${bytes} bytes long; at most ${max} are allowed`);
  if (!isWellFormed(query)) throw new QueryScopeError("the query is not well-formed Unicode");
  preScan(query);
  const insertions = bindSelectors(query, parse(query), opts);
  // Splice from the end backwards so that every offset still points into the original text.
  const parts: string[] = [];
  let end = query.length;
  for (let i = insertions.length - 1; i >= 0; i--) {
    const { at, text } = insertions[i]!;
    parts.push(query.slice(at, end), text);
    end = at;
  }
  parts.push(query.slice(0, end));
  return parts.reverse().join("");
}

/** The options come from the operator, not the author: a bad one is a bug, not a bad query. */
function checkOptions(opts: ScopeOptions): void {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(opts.label))
    throw new TypeError(`scopeQuery: ${JSON.stringify(opts.label)} is not a plain PromQL label name`);
  if (opts.namespace === "" || !isWellFormed(opts.namespace))
    throw new TypeError("scopeQuery: the namespace must be a non-empty, well-formed string");
}

/**
 * One pass over the text that refuses what would make the parser's work grow faster than
 * the text: nesting deeper than {@link MAX_QUERY_NESTING}, more than
 * {@link MAX_QUERY_POWERS} `^`, and runs of more than {@link MAX_QUERY_SIGN_RUN} signs.
 * Strings and comments are skipped the way the grammar's tokens skip them.
 */
function preScan(q: string): void {
  let depth = 0;
  let powers = 0;
  let signs = 0;
  for (let i = 0; i < q.length;) {
    const c = q.charCodeAt(i);
    switch (c) {
      case 0x22: // "
      case 0x27: // '
        i = skipQuoted(q, i, c);
        signs = 0;
        continue;
      case 0x60: {
        // `raw`
        const close = q.indexOf("`", i + 1);
        i = close < 0 ? q.length : close + 1;
        signs = 0;
        continue;
      }
      case 0x23: {
        // # comment to the end of the line
        const nl = q.indexOf("\n", i + 1);
        i = nl < 0 ? q.length : nl;
        continue;
      }
      case 0x28: // (
      case 0x5b: // [
      case 0x7b: // {
        if (++depth > MAX_QUERY_NESTING)
          throw new QueryScopeError(
            `the query nests deeper than ${MAX_QUERY_NESTING} levels at offset ${i}: ${around(q, i)}`,
          );
        signs = 0;
        break;
      case 0x29: // )
      case 0x5d: // ]
      case 0x7d: // }
        depth = Math.max(0, depth - 1); // an unpaired closer is the parser's to report
        signs = 0;
        break;
      case 0x5e: // ^
        if (++powers > MAX_QUERY_POWERS)
          throw new QueryScopeError(`the query has more than ${MAX_QUERY_POWERS} "^" operators`);
        signs = 0;
        break;
      case 0x2b: // +
      case 0x2d: // -
        if (++signs > MAX_QUERY_SIGN_RUN)
          throw new QueryScopeError(
            `the query has more than ${MAX_QUERY_SIGN_RUN} signs in a row at offset ${i}: ${around(q, i)}`,
          );
        break;
      case 0x20:
      case 0x09:
      case 0x0a:
      case 0x0d:
        break; // whitespace keeps a run of signs going
      default:
        signs = 0;
    }
    i++;
  }
}

/** Where a `"…"` or `'…'` token that starts at `i` ends, as the grammar reads it. */
function skipQuoted(q: string, i: number, quote: number): number {
  for (i++; i < q.length;) {
    const c = q.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === quote) return i + 1;
    else if (c === 0x0a) return i;
    else i++;
  }
  return q.length;
}

/** Parses (no error recovery), turning the parser's failures into {@link QueryScopeError}. */
function parse(query: string): SyntaxTree {
  try {
    return parser.parse(query);
  } catch (err) {
    if (err instanceof SyntaxError) {
      // lezer's strict mode says "No parse at <offset>".
      const m = /^No parse at (\d+)$/.exec(err.message);
      throw notPromQL(query, m ? Number(m[1]) : 0);
    }
    if (err instanceof RangeError) throw new QueryScopeError("the query is too complex to check");
    throw err;
  }
}

interface Insertion {
  at: number;
  text: string;
}

/** The vector selector being walked. */
interface SelectorState {
  /** Where its metric name ends (-1: written without one). */
  identifierEnd: number;
  /** Where its `{` is (-1: written without braces). */
  braceFrom: number;
  /** Where its last matcher (or quoted metric name) inside the braces ends (-1: none). */
  lastEntryEnd: number;
  /** Whether it already has `<label>="<namespace>"`. */
  own: boolean;
}

/** The label matcher being walked. */
interface MatcherState {
  /** The label name's text, or its string literal's span for a quoted name. */
  name: string | { from: number; to: number } | null;
  /** Whether the next string literal is the (quoted) label name. */
  nameNext: boolean;
  op: string;
  value: { from: number; to: number } | null;
}

/**
 * One walk over the tree (lezer's iterative cursor: no recursion, linear) that collects,
 * in text order, the insertion each vector selector needs. It refuses, with a
 * {@link QueryScopeError}, an equality matcher on the label with another value, and
 * what the grammar reads differently from Prometheus' own lexer, so that no text the
 * grammar takes for a string or a comment can be a selector to Prometheus:
 * - an error node (the parser may still place one where it had to cut a too-deep stack);
 * - a string literal Prometheus would not accept (the grammar's token lets a string end
 *   unterminated and takes any escape);
 * - a comment with a carriage return in it (Prometheus ends a comment there, the grammar
 *   only at a line feed: `x # \r+ y` would hide `+ y`).
 */
function bindSelectors(query: string, tree: SyntaxTree, opts: ScopeOptions): Insertion[] {
  const matcher = `${opts.label}=${JSON.stringify(opts.namespace)}`;
  const insertions: Insertion[] = [];
  let sel: SelectorState | null = null;
  let m: MatcherState | null = null;
  tree.iterate({
    enter(n) {
      if (n.type.isError) throw notPromQL(query, n.from);
      switch (n.name) {
        case "LineComment": {
          const cr = query.slice(n.from, n.to).indexOf("\r");
          if (cr >= 0)
            throw new QueryScopeError(
              `the query has a carriage return inside a comment at offset ${n.from + cr}; end comments with a line feed`,
            );
          break;
        }
        case "StringLiteral":
          if (!unquote(query.slice(n.from, n.to))) throw notPromQL(query, n.from);
          if (m && m.nameNext) {
            m.name = { from: n.from, to: n.to };
            m.nameNext = false;
          } else if (m) m.value = { from: n.from, to: n.to };
          break;
        case "FunctionIdentifier":
          // info() reads `target_info` series that no selector of the query names.
          if (query.slice(n.from, n.to) === "info")
            throw new QueryScopeError(
              `the query calls info() at offset ${n.from}, which reads series no selector names; join target_info explicitly instead`,
            );
          break;
        case "VectorSelector":
          sel = { identifierEnd: -1, braceFrom: -1, lastEntryEnd: -1, own: false };
          break;
        case "Identifier": // only ever a selector's metric name
          if (sel) sel.identifierEnd = n.to;
          break;
        case "LabelMatchers":
          if (sel) sel.braceFrom = n.from;
          break;
        case "UnquotedLabelMatcher":
        case "QuotedLabelMatcher":
          m = { name: null, nameNext: false, op: "", value: null };
          break;
        case "LabelName": // also in `by (…)`, `on (…)`: only a matcher's counts
          if (m) m.name = query.slice(n.from, n.to);
          break;
        case "QuotedLabelName": // a label name inside a matcher, else the metric name (`{"a.b"}`)
          if (m) m.nameNext = true;
          break;
        case "EqlSingle":
        case "Neq": // also the `!=` comparison between vectors: only a matcher's counts
        case "EqlRegex":
        case "NeqRegex":
          if (m) m.op = n.name;
      }
      return true;
    },
    leave(n) {
      switch (n.name) {
        case "UnquotedLabelMatcher":
        case "QuotedLabelMatcher":
          if (sel) {
            sel.lastEntryEnd = n.to;
            if (m && isOwnEquality(query, m, opts)) sel.own = true;
          }
          m = null;
          break;
        case "QuotedLabelName":
          if (sel && !m) sel.lastEntryEnd = n.to;
          break;
        case "VectorSelector":
          if (sel && !sel.own) insertions.push(insertionFor(sel, matcher, n.from));
          sel = null;
      }
    },
  });
  return insertions;
}

/** Where `<label>="<namespace>"` goes in a selector, and with what separator. */
function insertionFor(sel: SelectorState, matcher: string, from: number): Insertion {
  if (sel.braceFrom < 0) {
    if (sel.identifierEnd < 0) throw new Error(`scopeQuery: a selector without name or braces at ${from}`);
    return { at: sel.identifierEnd, text: `{${matcher}}` };
  }
  // After the last entry rather than before `}`: right whatever trailing comma or comment follows.
  return sel.lastEntryEnd < 0
    ? { at: sel.braceFrom + 1, text: matcher }
    : { at: sel.lastEntryEnd, text: `,${matcher}` };
}

/**
 * Whether a label matcher is `<label>="<namespace>"` (in any quoting). Throws when it is an
 * equality matcher on the label with another value; false for everything else.
 */
function isOwnEquality(query: string, m: MatcherState, opts: ScopeOptions): boolean {
  if (m.op !== "EqlSingle" || !m.value || m.name === null) return false;
  if (typeof m.name === "string") {
    if (m.name !== opts.label) return false;
  } else {
    const name: number[] = [];
    if (!unquote(query.slice(m.name.from, m.name.to), name)) return false; // refused by the walk already
    if (!Buffer.from(name).equals(Buffer.from(opts.label, "utf8"))) return false;
  }
  const value: number[] = [];
  if (!unquote(query.slice(m.value.from, m.value.to), value)) return false; // refused by the walk already
  const bytes = Buffer.from(value);
  if (bytes.equals(Buffer.from(opts.namespace, "utf8"))) return true;
  throw new QueryScopeError(
    `the query selects ${opts.label} ${quote(bytes.toString("utf8"))}; a mapping in ${opts.namespace} reads only its own namespace`,
  );
}

function notPromQL(query: string, at: number): QueryScopeError {
  return new QueryScopeError(`the query is not valid PromQL at offset ${at}: ${around(query, at)}`);
}

const SIMPLE_ESCAPES: Readonly<Record<string, number>> = {
  a: 7,
  b: 8,
  f: 12,
  n: 10,
  r: 13,
  t: 9,
  v: 11,
  "\\": 92,
};

/**
 * Whether Prometheus accepts a string literal, and (into `bytes`, when given) the bytes it
 * stands for. Refused: unterminated, a line feed in a quoted string, or an escape that
 * Prometheus' lexer and Go's `strconv.UnquoteChar` do not take (`\'` inside "…", `\"`
 * inside '…', octal above 255, surrogates, …). Backtick strings are raw.
 */
function unquote(raw: string, bytes?: number[]): boolean {
  const quote = raw[0];
  if (raw.length < 2 || raw[raw.length - 1] !== quote) return false;
  const body = raw.slice(1, -1);
  if (quote === "`") {
    if (body.includes("`")) return false;
    if (bytes) for (const b of Buffer.from(body, "utf8")) bytes.push(b);
    return true;
  }
  if (quote !== '"' && quote !== "'") return false;
  let literalFrom = 0;
  const flush = (to: number) => {
    if (bytes && to > literalFrom)
      for (const b of Buffer.from(body.slice(literalFrom, to), "utf8")) bytes.push(b);
  };
  const push = (b: number) => bytes?.push(b);
  for (let i = 0; i < body.length;) {
    const ch = body[i]!;
    if (ch === "\n" || ch === quote) return false;
    if (ch !== "\\") {
      i++;
      continue;
    }
    flush(i);
    const e = body[i + 1];
    if (e === undefined) return false;
    let next = i + 2;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) push(simple);
    else if (e === quote) push(quote.charCodeAt(0));
    else if (e >= "0" && e <= "7") {
      const v = digits(body, i + 1, 3, 8);
      if (v === null || v > 255) return false;
      push(v);
      next = i + 4;
    } else if (e === "x" || e === "u" || e === "U") {
      const n = e === "x" ? 2 : e === "u" ? 4 : 8;
      const v = digits(body, i + 2, n, 16);
      if (v === null) return false;
      if (e === "x") push(v);
      else if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) return false;
      else if (bytes) for (const b of Buffer.from(String.fromCodePoint(v), "utf8")) bytes.push(b);
      next = i + 2 + n;
    } else return false;
    i = next;
    literalFrom = next;
  }
  flush(body.length);
  return true;
}

/** The value of exactly `n` digits of `base` at `from`, or null. */
function digits(s: string, from: number, n: number, base: 8 | 16): number | null {
  if (from + n > s.length) return null;
  let v = 0;
  for (let i = from; i < from + n; i++) {
    const d = parseInt(s[i]!, base);
    if (Number.isNaN(d)) return null;
    v = v * base + d;
  }
  return v;
}

/** Whether `s` has no unpaired surrogate. */
function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const next = s.charCodeAt(i + 1);
    if (c > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) return false;
    i++;
  }
  return true;
}

/** At most {@link MAX_QUOTED_CHARS} characters of the query around `at`, quoted, on one line. */
function around(query: string, at: number): string {
  const from = Math.max(0, Math.min(at - MAX_QUOTED_CHARS / 2, query.length - MAX_QUOTED_CHARS));
  const to = Math.min(query.length, from + MAX_QUOTED_CHARS);
  return quoted(query.slice(from, to), from > 0, to < query.length);
}

/** `text` quoted, on one line, cut to {@link MAX_QUOTED_CHARS} characters. */
function quote(text: string): string {
  return quoted(text.slice(0, MAX_QUOTED_CHARS), false, text.length > MAX_QUOTED_CHARS);
}

/**
 * A piece of outside text in double quotes, `…` marking where it was cut, with control
 * characters, line separators and bidirectional overrides turned into spaces and a
 * surrogate half left at a cut dropped.
 */
function quoted(piece: string, cutBefore: boolean, cutAfter: boolean): string {
  let s = piece;
  if (cutBefore && /^[\udc00-\udfff]/.test(s)) s = s.slice(1);
  if (cutAfter && /[\ud800-\udbff]$/.test(s)) s = s.slice(0, -1);
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  s = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, " ");
  return JSON.stringify(`${cutBefore ? "…" : ""}${s}${cutAfter ? "…" : ""}`);
}
