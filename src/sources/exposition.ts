/**
 * A parser for the Prometheus text exposition format (version 0.0.4), the part a scrape
 * source needs: sample lines `name{label="value",…} value [timestamp]`, with `# HELP` /
 * `# TYPE` and other comments skipped. Escapes in label values (`\\`, `\"`, `\n`) are
 * honoured; `NaN`, `+Inf`, `-Inf` parse. A malformed line is an {@link ExpositionError}
 * naming the line; nothing else is thrown (fuzzed in the tests).
 *
 * The body is a pod's answer, so hostile: every step is linear in the line's length (no
 * pattern that backtracks, no string rebuilt per character), lines are visited one at a
 * time without splitting the whole body, and {@link selectSeries} keeps four numbers
 * however many samples match.
 */
import { quote } from "../util/bounded-text.js";

/** One sample. */
export interface ExpositionSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The exposition text could not be parsed. */
export class ExpositionError extends Error {}

/** The longest value or timestamp field read: a float64 never needs more. */
const MAX_NUMBER_CHARS = 64;

/** Calls `visit` with each sample of a whole exposition body, in order. */
export function forEachSample(text: string, visit: (sample: ExpositionSample) => void): void {
  forEachLine(text, (line, n) => visit(parseAt(line, n)));
}

/** Parses a whole exposition body. */
export function parseExposition(text: string): ExpositionSample[] {
  const out: ExpositionSample[] = [];
  forEachSample(text, (s) => out.push(s));
  return out;
}

/** Count, sum, minimum and maximum of the finite values of the samples a selection matched. */
export interface SeriesSummary {
  count: number;
  sum: number;
  min: number;
  max: number;
}

/**
 * The summary of the finite values of series `name` whose labels include `matchLabels`.
 * Lines of other series are skipped after their name (a malformed line of another series
 * does not fail the selection); a malformed line of `name` is an {@link ExpositionError}.
 */
export function selectSeries(
  text: string,
  name: string,
  matchLabels: Readonly<Record<string, string>> = {},
): SeriesSummary {
  const summary: SeriesSummary = { count: 0, sum: 0, min: Infinity, max: -Infinity };
  const wanted = Object.entries(matchLabels);
  forEachLine(text, (line, n) => {
    if (!line.startsWith(name)) return;
    const after = line.charCodeAt(name.length);
    if (after !== 0x7b /* { */ && after !== 0x20 && after !== 0x09) return;
    const s = parseAt(line, n);
    if (!Number.isFinite(s.value) || !wanted.every(([k, v]) => s.labels[k] === v)) return;
    summary.count++;
    summary.sum += s.value;
    if (s.value < summary.min) summary.min = s.value;
    if (s.value > summary.max) summary.max = s.value;
  });
  return summary;
}

/** Calls `visit` with each trimmed sample line (not blank, not a comment) and its number. */
function forEachLine(text: string, visit: (line: string, lineNumber: number) => void): void {
  let start = 0;
  for (let n = 1; start <= text.length; n++) {
    let end = text.indexOf("\n", start);
    if (end === -1) end = text.length;
    const line = text.slice(start, end).trim();
    start = end + 1;
    if (line !== "" && !line.startsWith("#")) visit(line, n);
  }
}

function parseAt(line: string, n: number): ExpositionSample {
  try {
    return parseLine(line);
  } catch (err) {
    throw new ExpositionError(`line ${n}: ${(err as Error).message}: ${quote(line, 120)}`);
  }
}

function isNameChar(c: number, first: boolean, colon: boolean): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    c === 0x5f || // _
    (colon && c === 0x3a) || // :
    (!first && c >= 0x30 && c <= 0x39) // 0-9
  );
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

function parseLine(line: string): ExpositionSample {
  let i = 0;
  while (i < line.length && isNameChar(line.charCodeAt(i), i === 0, true)) i++;
  if (i === 0) throw new Error("expected a metric name");
  const name = line.slice(0, i);
  const labels: Record<string, string> = Object.create(null) as Record<string, string>;
  if (line[i] === "{") {
    i++;
    for (;;) {
      while (isSpace(line.charCodeAt(i))) i++;
      if (line[i] === "}") {
        i++;
        break;
      }
      const from = i;
      while (i < line.length && isNameChar(line.charCodeAt(i), i === from, false)) i++;
      if (i === from) throw new Error("expected a label name");
      const label = line.slice(from, i);
      while (isSpace(line.charCodeAt(i))) i++;
      if (line[i] !== "=") throw new Error(`expected '=' after label ${quote(label)}`);
      i++;
      while (isSpace(line.charCodeAt(i))) i++;
      if (line[i] !== '"') throw new Error(`expected '"' to open the value of label ${quote(label)}`);
      i++;
      // Find the closing quote, checking escapes on the way; unescape only if there were any.
      const open = i;
      let escaped = false;
      for (;;) {
        const c = line.charCodeAt(i);
        if (Number.isNaN(c)) throw new Error(`unterminated value of label ${quote(label)}`);
        if (c === 0x22 /* " */) break;
        if (c === 0x5c /* \ */) {
          const e = line[i + 1];
          if (e !== "n" && e !== "\\" && e !== '"')
            throw new Error(`invalid escape in the value of label ${quote(label)}`);
          escaped = true;
          i += 2;
          continue;
        }
        i++;
      }
      const raw = line.slice(open, i);
      labels[label] = escaped ? unescape(raw) : raw;
      i++;
      while (isSpace(line.charCodeAt(i))) i++;
      if (line[i] === ",") i++;
      else if (line[i] !== "}") throw new Error("expected ',' or '}' after a label");
    }
  }
  const fields = fieldsOf(line, i);
  if (fields.length < 1 || fields.length > 2) throw new Error("expected a value (and an optional timestamp)");
  const value = parseNumber(fields[0]!);
  if (value === undefined) throw new Error(`invalid value ${quote(fields[0]!)}`);
  if (fields[1] !== undefined && !isTimestamp(fields[1])) throw new Error("invalid timestamp");
  return { name, labels, value };
}

const utf16 = new TextDecoder("utf-16le");

/** A label value with its (already checked) escapes resolved, in one pass over its code units. */
function unescape(raw: string): string {
  const out = new Uint16Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    let c = raw.charCodeAt(i);
    if (c === 0x5c /* \ */) {
      c = raw.charCodeAt(++i);
      if (c === 0x6e /* n */) c = 0x0a;
    }
    out[n++] = c;
  }
  return utf16.decode(out.subarray(0, n));
}

/** The whitespace-separated fields of `line` from `at`; at most three are collected. */
function fieldsOf(line: string, at: number): string[] {
  const fields: string[] = [];
  let i = at;
  while (fields.length < 3) {
    while (isSpace(line.charCodeAt(i))) i++;
    if (i >= line.length) break;
    const from = i;
    while (i < line.length && !isSpace(line.charCodeAt(i))) i++;
    fields.push(line.slice(from, i));
  }
  return fields;
}

function isTimestamp(text: string): boolean {
  return text.length <= MAX_NUMBER_CHARS && /^-?[0-9]+$/.test(text);
}

/**
 * A float as Go's strconv.ParseFloat reads the exposition's values. The pattern has no
 * two quantifiers that can share a digit, so it runs in linear time; the length bound
 * keeps even that short.
 */
export function parseNumber(text: string): number | undefined {
  if (text === "NaN") return NaN;
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text.length > MAX_NUMBER_CHARS) return undefined;
  if (!/^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(text)) return undefined;
  return Number(text);
}
