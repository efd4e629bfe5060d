/**
 * A parser for the Prometheus text exposition format (version 0.0.4), the part a scrape
 * source needs: sample lines `name{label="value",…} value [timestamp]`, with `# HELP` /
 * `# TYPE` and other comments skipped. Escapes in label values (`\\`, `\"`, `\n`) are
 * honoured; `NaN`, `+Inf`, `-Inf` parse. A malformed line is an {@link ExpositionError}
 * naming the line; nothing else is thrown (fuzzed in the tests).
 */

/** One sample. */
export interface ExpositionSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The exposition text could not be parsed. */
export class ExpositionError extends Error {}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parses a whole exposition body. */
export function parseExposition(text: string): ExpositionSample[] {
  const out: ExpositionSample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    try {
      out.push(parseLine(line));
    } catch (err) {
      throw new ExpositionError(
        `line ${i + 1}: ${(err as Error).message}: ${JSON.stringify(line.slice(0, 120))}`,
      );
    }
  }
  return out;
}

function parseLine(line: string): ExpositionSample {
  const name = NAME_RE.exec(line)?.[0];
  if (!name) throw new Error("expected a metric name");
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    rest = rest.slice(1);
    for (;;) {
      rest = rest.trimStart();
      if (rest.startsWith("}")) {
        rest = rest.slice(1);
        break;
      }
      const label = LABEL_RE.exec(rest)?.[0];
      if (!label) throw new Error("expected a label name");
      rest = rest.slice(label.length).trimStart();
      if (!rest.startsWith("=")) throw new Error(`expected '=' after label ${label}`);
      rest = rest.slice(1).trimStart();
      if (!rest.startsWith('"')) throw new Error(`expected '"' to open the value of label ${label}`);
      let value = "";
      let i = 1;
      for (;;) {
        const c = rest[i];
        if (c === undefined) throw new Error(`unterminated value of label ${label}`);
        if (c === '"') break;
        if (c === "\\") {
          const n = rest[i + 1];
          if (n === "n") value += "\n";
          else if (n === "\\" || n === '"') value += n;
          else throw new Error(`invalid escape in the value of label ${label}`);
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      labels[label] = value;
      rest = rest.slice(i + 1).trimStart();
      if (rest.startsWith(",")) rest = rest.slice(1);
      else if (!rest.startsWith("}")) throw new Error("expected ',' or '}' after a label");
    }
  }
  const fields = rest.trim().split(/\s+/);
  if (fields.length < 1 || fields.length > 2 || fields[0] === "")
    throw new Error("expected a value (and an optional timestamp)");
  const value = parseNumber(fields[0]!);
  if (value === undefined) throw new Error(`invalid value ${JSON.stringify(fields[0])}`);
  if (fields[1] !== undefined && !/^-?[0-9]+$/.test(fields[1])) throw new Error("invalid timestamp");
  return { name, labels, value };
}

function parseNumber(text: string): number | undefined {
  if (text === "NaN") return NaN;
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) return undefined;
  return Number(text);
}
